//! {{name}}: a tinytown `conductor` policy.
//!
//! Whatever message wakes it, it hands backlog tasks (oldest first) to idle workers (agents of
//! role `worker` with no unfinished task, in name order), one task per worker.
//!
//! config: none (it accepts any table).
//!
//! A role never acts itself: `handle` *returns* actions (here: `assign`), and the host applies
//! them atomically together with the acknowledgement of the message. It asks the town questions
//! through the read-only `host` import.

wit_bindgen::generate!({ world: "agent", path: "wit" });

use tinytown::agent::host;
use tinytown::agent::types::{Assignment, LogLevel};

/// Agent states in which a worker can take a task.
const AVAILABLE: [&str; 2] = ["idle", "working"];

struct Conductor;

impl Guest for Conductor {
    fn init(_config: Vec<(String, String)>) -> Result<(), Error> {
        Ok(())
    }

    fn handle(_msg: Message) -> Result<Vec<Action>, Error> {
        let mut workers: Vec<_> = host::list_agents(Some("worker"))
            .into_iter()
            .filter(|w| w.active_tasks == 0 && AVAILABLE.contains(&w.state.as_str()))
            .collect();
        workers.sort_by(|a, b| a.name.cmp(&b.name));
        let mut actions = Vec::new();
        for (worker, task) in workers.into_iter().zip(host::backlog()) {
            let line = format!("assigned {} to {}", task.id, worker.name);
            actions.push(Action::Assign(Assignment {
                agent: worker.name,
                task_id: Some(task.id),
                description: task.description,
            }));
            actions.push(Action::Log((LogLevel::Info, line)));
        }
        Ok(actions)
    }
}

export!(Conductor);
