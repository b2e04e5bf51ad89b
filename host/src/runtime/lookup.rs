//! The read-only questions a guest may ask about the town (the `host` import), as a trait the
//! serving layer implements over Redis (`host::lookup`) and tests implement by hand.
//!
//! The answers are futures: a guest waiting on the town is a suspended task, not a blocked
//! thread.

use futures::future::BoxFuture;

use super::bindings::wit;

/// One answer: `Err` means the town could not be asked.
pub type Answer<'a, T> = BoxFuture<'a, Result<T, String>>;

/// Read-only questions a guest can ask about the town (the `host` import). An `Err` means the
/// town could not be asked (Redis is away): the handling is then thrown away and retried, never
/// decided on a made-up answer.
pub trait Lookup: Send + Sync {
    fn task<'a>(&'a self, id: &'a str) -> Answer<'a, Option<wit::TaskInfo>>;
    fn agent<'a>(&'a self, name: &'a str) -> Answer<'a, Option<wit::AgentInfo>>;
    fn agents<'a>(&'a self, role: Option<&'a str>) -> Answer<'a, Vec<wit::AgentInfo>>;
    fn backlog(&self) -> Answer<'_, Vec<wit::TaskInfo>>;
    fn state<'a>(&'a self, agent: &'a str, key: &'a str) -> Answer<'a, Option<String>>;
    /// The town's model budgets (`llm` calls reserve and settle there); `None`: no town, no
    /// budgets enforced.
    fn budgets(&self) -> Option<crate::store::budget::Budgets> {
        None
    }
}

/// A lookup that knows nothing (for `tt plugin check` and tests without a town).
pub struct NoTown;

fn nothing<'a, T: Default + Send + 'a>() -> Answer<'a, T> {
    Box::pin(std::future::ready(Ok(T::default())))
}

impl Lookup for NoTown {
    fn task<'a>(&'a self, _: &'a str) -> Answer<'a, Option<wit::TaskInfo>> {
        nothing()
    }
    fn agent<'a>(&'a self, _: &'a str) -> Answer<'a, Option<wit::AgentInfo>> {
        nothing()
    }
    fn agents<'a>(&'a self, _: Option<&'a str>) -> Answer<'a, Vec<wit::AgentInfo>> {
        nothing()
    }
    fn backlog(&self) -> Answer<'_, Vec<wit::TaskInfo>> {
        nothing()
    }
    fn state<'a>(&'a self, _: &'a str, _: &'a str) -> Answer<'a, Option<String>> {
        nothing()
    }
}
