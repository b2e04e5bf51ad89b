//! The read-only questions a guest may ask about the town (the `host` import), as a trait the
//! serving layer implements over Redis (`host::lookup`) and tests implement by hand.

use super::bindings::wit;

/// Read-only questions a guest can ask about the town (the `host` import). An `Err` means the
/// town could not be asked (Redis is away): the handling is then thrown away and retried, never
/// decided on a made-up answer.
pub trait Lookup: Send + Sync {
    fn task(&self, id: &str) -> Result<Option<wit::TaskInfo>, String>;
    fn agent(&self, name: &str) -> Result<Option<wit::AgentInfo>, String>;
    fn agents(&self, role: Option<&str>) -> Result<Vec<wit::AgentInfo>, String>;
    fn backlog(&self) -> Result<Vec<wit::TaskInfo>, String>;
    fn state(&self, agent: &str, key: &str) -> Result<Option<String>, String>;
}

/// A lookup that knows nothing (for `tt plugin check` and tests without a town).
pub struct NoTown;

impl Lookup for NoTown {
    fn task(&self, _: &str) -> Result<Option<wit::TaskInfo>, String> {
        Ok(None)
    }
    fn agent(&self, _: &str) -> Result<Option<wit::AgentInfo>, String> {
        Ok(None)
    }
    fn agents(&self, _: Option<&str>) -> Result<Vec<wit::AgentInfo>, String> {
        Ok(Vec::new())
    }
    fn backlog(&self) -> Result<Vec<wit::TaskInfo>, String> {
        Ok(Vec::new())
    }
    fn state(&self, _: &str, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
}
