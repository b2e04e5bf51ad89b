//! The `relay` role: forwards every message it receives, unchanged, to the agent named by its
//! `next` config key, correlated to the original; without `next` it swallows them. It is the
//! simplest role that produces traffic, used to build pipelines and to test delivery.

wit_bindgen::generate!({ world: "agent", path: "../../wit" });

use std::cell::RefCell;

use tinytown::agent::types::Outgoing;

thread_local! {
    /// The agent to forward to, from config key `next`.
    static NEXT: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct Relay;

impl Guest for Relay {
    fn init(config: Vec<(String, String)>) -> Result<(), Error> {
        let next = config
            .into_iter()
            .rev()
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        NEXT.with(|n| *n.borrow_mut() = next);
        Ok(())
    }

    fn handle(msg: Message) -> Result<Vec<Action>, Error> {
        let Some(to) = NEXT.with(|n| n.borrow().clone()) else {
            return Ok(Vec::new());
        };
        Ok(vec![Action::Send(Outgoing {
            to,
            kind: msg.kind,
            body: msg.body,
            priority: msg.priority,
            task_id: msg.task_id,
            correlation_id: Some(msg.id),
        })])
    }
}

export!(Relay);
