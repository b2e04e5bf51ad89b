//! The `relay` role: forwards every message it receives, unchanged, to the agent named by its
//! `next` config key, correlated to the original; without `next` it swallows them. It is the
//! simplest role that produces traffic, used to build pipelines and to test delivery.

wit_bindgen::generate!({ world: "agent", path: "../../wit" });

use tinytown::agent::types::Outgoing;
use tinytown_guest::{ConfigError, Table};

/// The agent to forward to, from config key `next`; without it, messages are swallowed.
fn parse_config(config: &Table) -> Result<Option<String>, ConfigError> {
    Ok(config.get("next").map(str::to_owned))
}

fn forward(next: &Option<String>, msg: Message) -> Vec<Action> {
    let Some(to) = next else {
        return Vec::new();
    };
    vec![Action::Send(Outgoing {
        to: to.clone(),
        kind: msg.kind,
        body: msg.body,
        priority: msg.priority,
        task_id: msg.task_id,
        correlation_id: Some(msg.id),
    })]
}

tinytown_guest::role!(
    /// The role as exported: `init` reads `next`, `handle` forwards to it.
    Relay {
        name: "relay",
        config: Option<String> = parse_config,
        handle: forward,
    }
);

export!(Relay);
