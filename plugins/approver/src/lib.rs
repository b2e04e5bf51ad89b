//! The `approver` role: a lenient reviewer that approves every review request without running
//! a check, naming the task's description.
//!
//! It exists to be compared with the real reviewer: `tt replay AGENT --plugin approver.wasm`
//! on a reviewer's journal shows exactly the rejections it would have turned into approvals,
//! and the question it asks that the reviewer never did (`get-task`). Not for a real town.

wit_bindgen::generate!({ world: "agent", path: "../../wit" });

use tinytown::agent::host::get_task;
use tinytown::agent::types::{Kind, TaskOutcome};

struct Approver;

impl Guest for Approver {
    fn init(_config: Vec<(String, String)>) -> Result<(), Error> {
        Ok(())
    }

    fn handle(msg: Message) -> Result<Vec<Action>, Error> {
        let (Kind::ReviewRequest, Some(task)) = (&msg.kind, &msg.task_id) else {
            return Ok(Vec::new());
        };
        let about = get_task(task).map(|t| t.description).unwrap_or_default();
        Ok(vec![Action::Approve(TaskOutcome {
            task_id: task.clone(),
            text: format!("approved without a check: {about}"),
        })])
    }
}

export!(Approver);
