//! What a handling asked the world: every import call of one `handle`, with its answer.
//!
//! The instance appends a [`Call`] for each import the guest makes (town lookups, the clock,
//! `exec`, `llm`, `http`), in order. The serving layer keeps them with the handling they belong
//! to, so a decision can be audited and replayed: a handling's inputs are the message plus
//! these answers. Secrets never reach a record: a capability redacts its own request before
//! it records it (an `llm` key is host config the guest never sees; `http` drops credential
//! headers).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One import call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Call {
    /// `host`, `exec`, `llm`, `http`.
    pub interface: String,
    /// The function, as WIT names it (`get-task`, `run-in`, `chat`, `handle`).
    pub function: String,
    pub request: serde_json::Value,
    pub response: serde_json::Value,
    /// Wall time of the call, in microseconds.
    pub us: u64,
}

impl Call {
    pub fn new(
        interface: &str,
        function: &str,
        request: impl Serialize,
        response: impl Serialize,
        took: Duration,
    ) -> Call {
        Call {
            interface: interface.to_string(),
            function: function.to_string(),
            request: serde_json::to_value(request).unwrap_or(serde_json::Value::Null),
            response: serde_json::to_value(response).unwrap_or(serde_json::Value::Null),
            us: took.as_micros().min(u64::MAX as u128) as u64,
        }
    }

    /// A capability call (anything but the read-only `host` interface).
    pub fn acts(&self) -> bool {
        self.interface != "host"
    }
}
