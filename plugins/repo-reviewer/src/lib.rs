//! The `repo-reviewer` role: reviews a task of a repository town by running the town's check
//! (`[repo] check`) in the task's worktree, at the commit the worker asked to have reviewed.
//!
//! Exit 0 approves (in a repository town the applier then hands the task to the merge queue);
//! anything else rejects with the end of the check's output as the concrete fix. It fails
//! closed: a worktree that is missing or not at the commit under review, a check that cannot
//! start or times out, is a rejection naming what happened.
//!
//! Config: `timeout-ms` (the check's), `check` (overrides `[repo] check`), the `repo-*` keys.

wit_bindgen::generate!({ world: "agent-exec", path: "../../wit" });

#[path = "../../repo-common/git.rs"]
mod git;

mod check;

use check::{parse_config, review, Config};
use tinytown::agent::types::{Kind, LogLevel, TaskOutcome};

fn handle_with(cfg: &Config, msg: Message) -> Vec<Action> {
    let (Kind::ReviewRequest, Some(task)) = (&msg.kind, msg.task_id.clone()) else {
        return Vec::new();
    };
    match review(cfg, &task, &msg.body) {
        Ok(text) => vec![Action::Approve(TaskOutcome {
            task_id: task,
            text,
        })],
        Err(text) => vec![
            Action::Log((LogLevel::Info, format!("task {task} rejected"))),
            Action::Reject(TaskOutcome {
                task_id: task,
                text,
            }),
        ],
    }
}

tinytown_guest::role!(
    /// The role as exported.
    RepoReviewer {
        name: "repo-reviewer",
        config: Config = parse_config,
        handle: handle_with,
    }
);

export!(RepoReviewer);
