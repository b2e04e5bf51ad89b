//! The `noop` role: accepts every message and does nothing with it.
//!
//! It is the smallest possible agent, useful as a mailbox that only acknowledges, as a baseline
//! when measuring the host's per-message overhead, and as a template for a new role.

wit_bindgen::generate!({ world: "agent", path: "../../wit" });

struct Noop;

impl Guest for Noop {
    fn init(_config: Vec<(String, String)>) -> Result<(), Error> {
        Ok(())
    }

    fn handle(_msg: Message) -> Result<Vec<Action>, Error> {
        Ok(Vec::new())
    }
}

export!(Noop);
