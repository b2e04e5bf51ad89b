//! The `merger` role: the merge queue of a repository town.
//!
//! A reviewer's approval moves a task to `approved` and sends this agent the verdict, so its
//! mailbox is the queue, in approval order, and an exclusive agent handles one message at a
//! time. For each approved task it merges the approved commit into the current target in a
//! scratch worktree (`<worktrees>/_merge`, detached), runs the check on the merged result, and
//! only then moves the target, with `git update-ref <target> <new> <old>`: a compare-and-swap,
//! so the target only ever moves to a commit whose check passed, from the commit it was merged
//! onto (the main worktree is not touched: keep it detached, `git checkout --detach`). Then
//! it removes the task's worktree and branch and completes the task. A conflict or a
//! failing merged check rejects the task back to its owner with the conflicting files or the
//! failure, and leaves the target alone.
//!
//! Every step is safe to repeat, because a host killed mid-merge redelivers the approval: the
//! scratch worktree is made afresh each time, and an approved commit already on the target (the
//! host died after moving it, before the completion was applied) is only cleaned up and
//! completed. A target moved by someone else between merge and swap is a retryable error: the
//! approval is handled again onto the new target.
//!
//! Config: `timeout-ms` (the check's), the `repo-*` keys from `[repo]`.

wit_bindgen::generate!({ world: "agent-exec", path: "../../wit" });

#[path = "../../repo-common/git.rs"]
mod git;

use git::{commit_in, git, git_ok, how, output_tail, run_line, Repo};
use tinytown::agent::host;
use tinytown::agent::types::{Kind, LogLevel, TaskOutcome, Verdict};
use tinytown_guest::{ConfigError, Table};

struct Config {
    repo: Repo,
    timeout_ms: Option<u32>,
}

fn parse_config(config: &Table) -> Result<Config, ConfigError> {
    Ok(Config {
        repo: Repo::from(config)?,
        timeout_ms: config.number_of("timeout-ms", "milliseconds")?,
    })
}

fn log(level: LogLevel, text: impl Into<String>) -> Action {
    Action::Log((level, text.into()))
}

/// What became of one approved task.
enum Outcome {
    Merged(String),
    Back(String),
}

fn scratch(_repo: &Repo) -> String {
    "_merge".to_owned()
}

/// Removes the scratch worktree, whatever state an earlier attempt left it in.
fn drop_scratch(repo: &Repo) {
    let _ = repo.git(&["worktree", "remove", "--force", &scratch(repo)]);
    let _ = repo.git(&["worktree", "prune"]);
}

fn merge(cfg: &Config, task: &str, approval: &str) -> Result<Outcome, Error> {
    let repo = &cfg.repo;
    let e = |m: String| Error {
        message: m,
        retryable: true,
    };
    let target_ref = format!("refs/heads/{}", repo.target);
    let commit = match commit_in(approval) {
        Some(c) => c,
        None => repo.git_ok(&["rev-parse", &repo.branch(task)]).map_err(e)?,
    };
    let old = repo.git_ok(&["rev-parse", &target_ref]).map_err(e)?;
    if repo
        .git_test(&["merge-base", "--is-ancestor", &commit, &old])
        .map_err(e)?
    {
        repo.remove_task(task);
        return Ok(Outcome::Merged(old));
    }
    drop_scratch(repo);
    let dir = scratch(repo);
    repo.git_ok(&["worktree", "add", "--detach", &dir, &old])
        .map_err(e)?;
    let msg = format!("Merge {} ({task})", repo.branch(task));
    let out = git(&dir, &["merge", "--no-ff", "-m", &msg, &commit]).map_err(e)?;
    if out.status != Some(0) {
        let files = git_ok(&dir, &["diff", "--name-only", "--diff-filter=U"]).unwrap_or_default();
        drop_scratch(repo);
        let files = if files.is_empty() {
            output_tail(&out)
        } else {
            files.replace('\n', ", ")
        };
        return Ok(Outcome::Back(format!(
            "merge conflict with {} at {old} in: {files}; merge {} into your branch and \
             resolve them",
            repo.target, repo.target
        )));
    }
    let merged = git_ok(&dir, &["rev-parse", "HEAD"]).map_err(e)?;
    let check = repo.check_line();
    let out = run_line(&dir, &repo.check, None, cfg.timeout_ms);
    drop_scratch(repo);
    let out = out.map_err(|m| e(format!("could not run the check `{check}`: {m}")))?;
    if out.status != Some(0) {
        return Ok(Outcome::Back(format!(
            "the check `{check}` failed on the merge with {} at {old} ({}); {} is unchanged. \
             Fix this:\n{}",
            repo.target,
            how(&out),
            repo.target,
            output_tail(&out)
        )));
    }
    // The compare-and-swap: refused when the target moved since `old`.
    repo.git_ok(&["update-ref", "-m", &msg, &target_ref, &merged, &old])
        .map_err(e)?;
    warn_if_checked_out(repo);
    repo.remove_task(task);
    Ok(Outcome::Merged(merged))
}

/// The main worktree cannot follow the target (a confined program may not write there, as it
/// holds `.tt/`): when it has the target checked out, say how to keep it out of the way.
fn warn_if_checked_out(repo: &Repo) {
    let head = repo
        .git_ok(&["symbolic-ref", "-q", "HEAD"])
        .unwrap_or_default();
    if head == format!("refs/heads/{}", repo.target) {
        host::log(
            LogLevel::Warn,
            &format!(
                "{} moved, but the repository's main worktree has it checked out and does not \
                 follow: run `git checkout --detach` there before starting the town",
                repo.target
            ),
        );
    }
}

fn handle(cfg: &Config, msg: Message) -> Result<Vec<Action>, Error> {
    let (Kind::Verdict(Verdict::Approve), Some(task)) = (&msg.kind, msg.task_id.clone()) else {
        return Ok(Vec::new());
    };
    let state = host::get_task(&task).map(|t| t.state).unwrap_or_default();
    if state != "approved" {
        return Ok(vec![log(
            LogLevel::Info,
            format!("task {task} is {state:?}, not approved: nothing to merge"),
        )]);
    }
    Ok(match merge(cfg, &task, &msg.body)? {
        Outcome::Merged(at) => vec![Action::Complete(TaskOutcome {
            task_id: task.clone(),
            text: format!(
                "merged {} into {} at {at}",
                cfg.repo.branch(&task),
                cfg.repo.target
            ),
        })],
        Outcome::Back(why) => vec![
            log(
                LogLevel::Info,
                format!("task {task} sent back to its owner"),
            ),
            Action::Reject(TaskOutcome {
                task_id: task,
                text: why,
            }),
        ],
    })
}

struct Merger;

thread_local! {
    static CONFIG: tinytown_guest::Slot<Config> = const { tinytown_guest::Slot::new() };
}

fn config_error(e: ConfigError) -> Error {
    Error {
        message: e.to_string(),
        retryable: false,
    }
}

// Not `tinytown_guest::role!`: the merger's `handle` may fail retryably (a target moved under
// it, git not answering), and the macro's handle cannot.
impl Guest for Merger {
    fn init(config: Vec<(String, String)>) -> Result<(), Error> {
        let cfg = parse_config(&Table::new("merger", &config)).map_err(config_error)?;
        CONFIG.with(|slot| slot.set(cfg));
        Ok(())
    }

    fn handle(msg: Message) -> Result<Vec<Action>, Error> {
        CONFIG.with(|slot| {
            slot.with(|cfg| match cfg {
                Some(cfg) => handle(cfg, msg),
                None => handle(
                    &parse_config(&Table::new("merger", &[])).map_err(config_error)?,
                    msg,
                ),
            })
        })
    }
}

export!(Merger);
