//! The review `repo-reviewer` makes, shared with `repo-reviewer-llm` (which includes this file
//! by path and asks a model about the change after it passes): the town's check, run in the
//! task's worktree at the commit under review.

use crate::git::{commit_in, git_ok, how, output_tail, run_line, Repo};
use tinytown_guest::{ConfigError, Table};

pub struct Config {
    pub repo: Repo,
    pub timeout_ms: Option<u32>,
}

pub fn parse_config(config: &Table) -> Result<Config, ConfigError> {
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
pub fn review(cfg: &Config, task: &str, body: &str) -> Result<String, String> {
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
