//! Agents: their lifecycle states and the stored record.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

super::str_enum! {
    /// An agent's lifecycle. `stopped`, `cold` and `interrupted` agents are not served.
    pub enum AgentState {
        Idle = "idle",
        Working = "working",
        Interrupted = "interrupted",
        /// Finishing its mailbox; goes `cold` when it is empty.
        Closing = "closing",
        Cold = "cold",
        Stopped = "stopped",
    }
}

impl AgentState {
    /// A host serves the agent's mailbox in this state.
    pub fn is_served(self) -> bool {
        !matches!(
            self,
            AgentState::Stopped | AgentState::Cold | AgentState::Interrupted
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub name: String,
    pub role: String,
    pub state: AgentState,
    pub nickname: Option<String>,
    pub plugin: Option<String>,
    pub digest: Option<String>,
    pub swapped_ms: Option<u64>,
    /// What the last swap was judged on (a gated swap's replay summary).
    pub judged: Option<String>,
    /// Why a host refused the last swap and kept the plugin it serves (cleared by the next swap).
    pub refused: Option<String>,
    /// The plugin before the last swap (for `tt swap --rollback`).
    pub previous: Option<String>,
    /// A candidate running beside the live plugin, decisions recorded only.
    pub shadow: Option<String>,
    pub shadow_digest: Option<String>,
    pub created_ms: u64,
}

impl Agent {
    pub fn from_hash(name: &str, h: &HashMap<String, String>) -> Agent {
        let get = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
        Agent {
            name: name.to_string(),
            role: get("role").unwrap_or_default(),
            state: get("state")
                .and_then(|s| AgentState::parse(&s))
                .unwrap_or(AgentState::Idle),
            nickname: get("nickname"),
            plugin: get("plugin"),
            digest: get("digest"),
            swapped_ms: get("swapped").and_then(|v| v.parse().ok()),
            judged: get("judged"),
            refused: get("refused"),
            previous: get("previous"),
            shadow: get("shadow"),
            shadow_digest: get("shadow_digest"),
            created_ms: get("created").and_then(|v| v.parse().ok()).unwrap_or(0),
        }
    }
}
