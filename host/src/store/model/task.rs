//! Tasks: their states, the legal moves between them, and the stored record.
//!
//! The Lua applier enforces the same move table (`applier/lua/prelude.lua`, `MOVES`); a unit
//! test in `applier` checks that the two agree.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

super::str_enum! {
    /// Where a task is in its life.
    pub enum TaskState {
        Pending = "pending",
        Assigned = "assigned",
        Running = "running",
        InReview = "in-review",
        /// Passed review in a repository town: waiting in the merge queue (`[repo]`).
        Approved = "approved",
        Rejected = "rejected",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl TaskState {
    /// Finished for good: no move leads out of it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// The states this one may move to.
    pub fn moves(self) -> &'static [TaskState] {
        use TaskState::*;
        match self {
            Pending => &[Assigned, Cancelled],
            Assigned => &[Running, InReview, Completed, Failed, Cancelled],
            Running => &[InReview, Completed, Failed, Cancelled],
            InReview => &[Approved, Completed, Rejected, Failed, Cancelled],
            Approved => &[Completed, Rejected, Failed, Cancelled],
            Rejected => &[Assigned, Failed, Cancelled],
            Completed | Failed | Cancelled => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub description: String,
    pub state: TaskState,
    pub owner: Option<String>,
    pub reviewer: Option<String>,
    pub result: Option<String>,
    pub rejections: u32,
    pub tags: Vec<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl Task {
    pub fn from_hash(id: &str, h: &HashMap<String, String>) -> Task {
        let get = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
        let num = |k: &str| h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Task {
            id: id.to_string(),
            description: get("desc").unwrap_or_default(),
            state: get("state")
                .and_then(|s| TaskState::parse(&s))
                .unwrap_or(TaskState::Pending),
            owner: get("owner"),
            reviewer: get("reviewer"),
            result: get("result"),
            rejections: num("rejections") as u32,
            tags: get("tags")
                .map(|t| t.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            created_ms: num("created"),
            updated_ms: num("updated"),
        }
    }
}
