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

use git::{commit_in, git_ok, how, output_tail, run_line, Repo};
use tinytown::agent::types::{Kind, LogLevel, TaskOutcome};
use tinytown_guest::{ConfigError, Table};

struct Config {
    repo: Repo,
    timeout_ms: Option<u32>,
}

fn parse_config(config: &Table) -> Result<Config, ConfigError> {
    let mut repo = Repo::from(config)?;
    let own = config.words("check");
    if !own.is_empty() {
        repo.check = own;
    }
    Ok(Config {
        repo,
        timeout_ms: config.number_of("timeout-ms", "milliseconds")?,
    })
}

/// The verdict on task `task` whose review request says `body`: `Ok` approves with the text.
fn review(cfg: &Config, task: &str, body: &str) -> Result<String, String> {
    let wt = cfg.repo.worktree(task);
    let head = git_ok(&wt, &["rev-parse", "HEAD"])
        .map_err(|e| format!("cannot read the worktree {wt} of task {task}: {e}"))?;
    if let Some(want) = commit_in(body) {
        if want != head {
            return Err(format!(
                "the worktree {wt} is at commit {head}, not at commit {want} under review; \
                 request review again at its current commit"
            ));
        }
    }
    let check = cfg.repo.check_line();
    let out = run_line(&wt, &cfg.repo.check, None, cfg.timeout_ms)
        .map_err(|e| format!("could not run the check `{check}`: {e}"))?;
    if out.status == Some(0) {
        Ok(format!("check `{check}` passed at commit {head}"))
    } else {
        Err(format!(
            "check `{check}` failed at commit {head} ({}); fix this:\n{}",
            how(&out),
            output_tail(&out)
        ))
    }
}

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
