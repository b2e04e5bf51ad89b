//! Every default limit, in one place. `tinytown.toml` can override the per-agent ones under
//! `[limits]` (town-wide) and `[agents.NAME.limits]`.

use serde::{Deserialize, Serialize};

/// Longest agent name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest message body accepted by `tt send` and by the applier (bytes).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Largest task description (bytes).
pub const MAX_DESCRIPTION_BYTES: usize = 64 << 10;
/// How many entries one mailbox read takes at most.
pub const READ_BATCH: usize = 64;

/// Per-agent limits on one handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock budget of the guest's own computation per call (exec time excluded).
    pub call_timeout_ms: u64,
    /// Linear memory cap of one instance.
    pub memory_mb: u64,
    /// Fuel per call; 0 turns fuel metering off (the epoch deadline still applies).
    pub fuel: u64,
    /// Deliveries before a message is dead-lettered.
    pub max_deliveries: u32,
    /// Most actions one handling may return.
    pub max_actions: usize,
    /// Most bytes of action payload (bodies, descriptions, texts) one handling may return.
    pub max_action_bytes: usize,
    /// Most messages one handling may send (sends, assignments, review requests, verdicts,
    /// escalations): a role cannot flood the town from one message.
    pub max_sends: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout_ms: 2_000,
            memory_mb: 128,
            fuel: 0,
            max_deliveries: 5,
            max_actions: 1_000,
            max_action_bytes: 4 << 20,
            max_sends: 100,
        }
    }
}

/// An agent's overrides of the town-wide limits, field by field (`[agents.NAME.limits]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub call_timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    pub fuel: Option<u64>,
    pub max_deliveries: Option<u32>,
    pub max_actions: Option<usize>,
    pub max_action_bytes: Option<usize>,
    pub max_sends: Option<usize>,
}

impl Limits {
    pub fn with(self, o: &LimitOverrides) -> Limits {
        Limits {
            call_timeout_ms: o.call_timeout_ms.unwrap_or(self.call_timeout_ms),
            memory_mb: o.memory_mb.unwrap_or(self.memory_mb),
            fuel: o.fuel.unwrap_or(self.fuel),
            max_deliveries: o.max_deliveries.unwrap_or(self.max_deliveries),
            max_actions: o.max_actions.unwrap_or(self.max_actions),
            max_action_bytes: o.max_action_bytes.unwrap_or(self.max_action_bytes),
            max_sends: o.max_sends.unwrap_or(self.max_sends),
        }
    }

    /// Checks the values; the error names the table (`[limits]` or `[agents.X.limits]`) and
    /// the field.
    pub fn check(&self, table: &str) -> Result<(), String> {
        let at_least_one = [
            ("call_timeout_ms", self.call_timeout_ms),
            ("memory_mb", self.memory_mb),
            ("max_deliveries", u64::from(self.max_deliveries)),
            ("max_actions", self.max_actions as u64),
            ("max_action_bytes", self.max_action_bytes as u64),
            ("max_sends", self.max_sends as u64),
        ];
        for (field, v) in at_least_one {
            if v == 0 {
                return Err(format!("{table} {field} = 0: it must be at least 1"));
            }
        }
        if self.memory_mb > 65_536 {
            return Err(format!(
                "{table} memory_mb = {}: at most 65536 (64 GiB)",
                self.memory_mb
            ));
        }
        Ok(())
    }
}
