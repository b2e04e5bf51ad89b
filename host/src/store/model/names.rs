//! Names people type: agents, tasks, and the humans' mailbox. Each has one check here, so a
//! bad name is refused the same way by the CLI, the host and the config file.

use anyhow::Result;

use crate::store::error;
use crate::store::keys::{CONDUCTOR, SUPERVISOR};
use crate::store::limits::MAX_NAME_LEN;

/// Checks an agent name: 1–64 letters, digits, `-` or `_`, not starting with `-`.
/// That leaves no room for path tricks (`../`), control characters or key separators (`:`).
pub fn validate_name(name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || name.starts_with('-') {
        return Err(error::usage(
            format!("invalid agent name {:?}", name.escape_debug().to_string()),
            format!("use 1-{MAX_NAME_LEN} letters, digits, `-` or `_`, not starting with `-`"),
        ));
    }
    Ok(())
}

/// Maps `supervisor` to `conductor`: they are one mailbox.
pub fn canonical_name(name: &str) -> &str {
    if name == SUPERVISOR {
        CONDUCTOR
    } else {
        name
    }
}

pub fn is_conductor(name: &str) -> bool {
    name == CONDUCTOR || name == SUPERVISOR
}

/// Validates a task id as typed by a user (`t12`).
pub fn validate_task_id(id: &str) -> Result<()> {
    let ok = id.len() > 1
        && id.len() <= 24
        && id.starts_with('t')
        && id[1..].chars().all(|c| c.is_ascii_digit());
    if !ok {
        return Err(error::usage(
            format!("invalid task id {:?}", id.escape_debug().to_string()),
            "task ids look like `t12`; `tt tasks` lists them",
        ));
    }
    Ok(())
}
