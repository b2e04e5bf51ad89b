//! The `repo-worker` role: does a task of a repository town in the task's own git worktree.
//!
//! On an assignment it makes the worktree (`<[repo] worktrees>/<task>` on branch `tt/<task>`, from
//! the target branch) unless it exists, runs the configured coding CLI there with the task as
//! its prompt, commits what changed with a message naming the task, and asks its reviewer to
//! review the branch at that commit (with a diff summary). On a rejection (from the reviewer,
//! or from the merger after a conflict or a failing merged check) it first merges the current
//! target into the branch, so a conflict shows up as conflict markers the CLI is asked to
//! resolve, then runs the CLI again with the feedback.
//!
//! A CLI that cannot start, fails or times out, or makes no change, fails the task with the
//! reason; the worktree is kept for inspection. A cancelled task's worktree and branch are
//! removed when the worker hears of it (the applier tells a task's owner when someone else
//! cancels it). Git and the CLI run through `exec.run-in`, so
//! the agent's exec grant must allow both, with its workdir the worktrees directory and the
//! repository's `.git` writable (`repo-common/git.rs` says why).
//!
//! Config: `cli` (a preset, `claude`, `codex`, `aider`, `gemini`, or a command line whose
//! `{prompt}` and `{task}` words are filled in; the prompt is also on stdin), `reviewer`,
//! `timeout-ms` (the CLI's), and the `repo-*` keys from `[repo]`.

wit_bindgen::generate!({ world: "agent-exec", path: "../../wit" });

#[path = "../../repo-common/git.rs"]
mod git;

use git::{git_ok, git_test, how, output_tail, run_line, tail, Repo};
use tinytown::agent::host;
use tinytown::agent::types::{
    Kind, LogLevel, Outgoing, Priority, ReviewRequest, TaskOutcome, Verdict,
};
use tinytown_guest::{fill, ConfigError, Table};

/// How each preset runs its CLI without a terminal; the prompt goes where `{prompt}` is, or on
/// stdin. The sandbox side of each (what it may read and write) is `preset = "<name>"` in the
/// agent's exec table (host/src/runtime/capabilities/exec/presets.rs).
const PRESETS: &[(&str, &[&str])] = &[
    (
        "claude",
        &["claude", "-p", "--permission-mode", "acceptEdits"],
    ),
    ("codex", &["codex", "exec", "--full-auto", "-"]),
    (
        "aider",
        &[
            "aider",
            "--yes-always",
            "--no-auto-commits",
            "--message",
            "{prompt}",
        ],
    ),
    ("gemini", &["gemini", "--yolo", "-p", "{prompt}"]),
];

struct Config {
    cli: Vec<String>,
    reviewer: String,
    timeout_ms: Option<u32>,
    repo: Repo,
}

fn parse_config(config: &Table) -> Result<Config, ConfigError> {
    let cli = config.required(
        "cli",
        "the coding CLI: claude, codex, aider, gemini or a command",
    )?;
    let cli = match PRESETS.iter().find(|(name, _)| *name == cli) {
        Some((_, words)) => words.iter().map(|w| w.to_string()).collect(),
        None => cli.split_whitespace().map(str::to_owned).collect(),
    };
    Ok(Config {
        cli,
        reviewer: config
            .required("reviewer", "the agent that reviews its work")?
            .to_owned(),
        timeout_ms: config.number_of("timeout-ms", "milliseconds")?,
        repo: Repo::from(config)?,
    })
}

fn log(level: LogLevel, text: impl Into<String>) -> Action {
    Action::Log((level, text.into()))
}

fn fail(task: &str, text: String) -> Vec<Action> {
    vec![
        log(LogLevel::Warn, format!("task {task}: {text}")),
        Action::Fail(TaskOutcome {
            task_id: task.to_owned(),
            text,
        }),
    ]
}

/// Makes the task's worktree unless it is there: a new branch from the target, or the
/// branch again when only the worktree was lost.
fn ensure_worktree(repo: &Repo, task: &str) -> Result<String, String> {
    let wt = repo.worktree(task);
    // Its own `.git` file names it; a bare directory would find the main repository instead.
    let own = format!("worktrees/{task}");
    if git_ok(&wt, &["rev-parse", "--git-dir"]).is_ok_and(|d| d.ends_with(&own)) {
        return Ok(wt);
    }
    repo.git_ok(&["worktree", "prune"])?;
    let branch = repo.branch(task);
    // `git worktree add` reads every other worktree's records, and fails on one that another
    // worker's `add` is still writing ("failed to read .../commondir"): git has no lock for
    // that. Such a failure is over as soon as the other `add` is, so try again a few times.
    let mut last = String::new();
    for _ in 0..WORKTREE_ADD_TRIES {
        let exists = repo.git_test(&[
            "rev-parse",
            "-q",
            "--verify",
            &format!("refs/heads/{branch}"),
        ])?;
        let added = if exists {
            repo.git_ok(&["worktree", "add", &wt, &branch])
        } else {
            repo.git_ok(&["worktree", "add", "-b", &branch, &wt, &repo.target])
        };
        match added {
            Ok(_) => return Ok(wt),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// How many times [`ensure_worktree`] runs `git worktree add` before it gives up.
const WORKTREE_ADD_TRIES: usize = 5;

/// Brings the target into the branch after a rejection. Conflicts are left as markers for
/// the CLI; returns the conflicting files. An unfinished merge (a redelivery) is kept.
fn merge_target(repo: &Repo, wt: &str) -> Result<Vec<String>, String> {
    if !git_test(wt, &["rev-parse", "-q", "--verify", "MERGE_HEAD"])? {
        let msg = format!("Merge {} into the task branch", repo.target);
        let out = git::git(wt, &["merge", "--no-edit", "-m", &msg, &repo.target])?;
        if out.status == Some(0) {
            return Ok(Vec::new());
        }
    }
    let files = git_ok(wt, &["diff", "--name-only", "--diff-filter=U"])?;
    Ok(files.lines().map(str::to_owned).collect())
}

fn work(
    cfg: &Config,
    msg: &Message,
    task: &str,
    description: &str,
    feedback: Option<&str>,
) -> Vec<Action> {
    let result = try_work(cfg, task, description, feedback, msg.attempt > 1);
    // Cancelled while the CLI ran: neither a review request nor a failure may follow.
    if let Some(done) = if_cancelled(cfg, task) {
        return done;
    }
    match result {
        Ok(actions) => actions,
        Err(e) => fail(task, e),
    }
}

/// When `task` is cancelled (its owner is told with an `info`; an assignment or a rejection
/// may still have been on its way), removes its worktree and branch and says so: there is
/// nothing more to do for it.
fn if_cancelled(cfg: &Config, task: &str) -> Option<Vec<Action>> {
    if !host::get_task(task).is_some_and(|t| t.state == "cancelled") {
        return None;
    }
    cfg.repo.remove_task(task);
    Some(vec![log(
        LogLevel::Info,
        format!("task {task} is cancelled; removed its worktree and branch"),
    )])
}

fn try_work(
    cfg: &Config,
    task: &str,
    description: &str,
    feedback: Option<&str>,
    redelivered: bool,
) -> Result<Vec<Action>, String> {
    let repo = &cfg.repo;
    let wt = ensure_worktree(repo, task)?;
    let start = git_ok(&wt, &["rev-parse", "HEAD"])?;
    let mut prompt = description.to_owned();
    if let Some(feedback) = feedback {
        prompt.push_str(&format!("\n\nReviewer feedback:\n{feedback}"));
        let conflicts = merge_target(repo, &wt)?;
        if !conflicts.is_empty() {
            prompt.push_str(&format!(
                "\n\nMerging {} into this branch conflicted in: {}. Resolve the conflict \
                 markers in those files, keeping both changes where they agree.",
                repo.target,
                conflicts.join(", ")
            ));
        }
    }
    let words = fill(&cfg.cli, &[("prompt", &prompt), ("task", task)]);
    let out = run_line(&wt, &words, Some(prompt.clone()), cfg.timeout_ms)
        .map_err(|e| format!("could not run `{}`: {e}", cfg.cli.join(" ")))?;
    if out.status != Some(0) {
        return Err(format!(
            "`{}` {} in {wt}:\n{}",
            cfg.cli[0],
            how(&out),
            output_tail(&out)
        ));
    }
    git_ok(&wt, &["add", "-A"])?;
    let staged = !git_test(&wt, &["diff", "--cached", "--quiet"])?;
    let merging = git_test(&wt, &["rev-parse", "-q", "--verify", "MERGE_HEAD"])?;
    if staged || merging {
        let first = description.lines().next().unwrap_or("").trim();
        let msg = format!("{}: {}", repo.branch(task), tail(first, 72));
        git_ok(&wt, &["commit", "--no-verify", "-m", &msg])?;
    }
    let commit = git_ok(&wt, &["rev-parse", "HEAD"])?;
    // A redelivery after a crash may find its own earlier commit, with nothing left to do.
    let ahead = format!("{}..HEAD", repo.target);
    if commit == start && !(redelivered && git_ok(&wt, &["rev-list", "--count", &ahead])? != "0") {
        return Err(format!("`{}` made no change in {wt}", cfg.cli[0]));
    }
    let range = format!("{}...{commit}", repo.target);
    let stat = git_ok(&wt, &["diff", "--stat", &range])?;
    Ok(vec![Action::RequestReview(ReviewRequest {
        reviewer: cfg.reviewer.clone(),
        task_id: task.to_owned(),
        body: format!(
            "branch {}\ncommit {commit}\n\n{}",
            repo.branch(task),
            tail(&stat, 4000)
        ),
    })])
}

fn handle_with(cfg: &Config, msg: Message) -> Vec<Action> {
    let Some(task) = msg.task_id.clone() else {
        return match msg.kind {
            Kind::Query => answer(msg),
            _ => vec![log(
                LogLevel::Warn,
                format!("message {} has no task id; ignored", msg.id),
            )],
        };
    };
    if matches!(msg.kind, Kind::Query) {
        return answer(msg);
    }
    if let Some(done) = if_cancelled(cfg, &task) {
        return done;
    }
    match &msg.kind {
        Kind::TaskAssign => work(cfg, &msg, &task, &msg.body, None),
        Kind::Verdict(Verdict::Reject(reason)) => match host::get_task(&task) {
            Some(t) => work(cfg, &msg, &task, &t.description, Some(reason)),
            None => vec![log(
                LogLevel::Warn,
                format!("rejected task {task} is unknown; ignored"),
            )],
        },
        Kind::Verdict(Verdict::Approve) => {
            vec![log(
                LogLevel::Info,
                format!("task {task} approved by {}", msg.sender),
            )]
        }
        _ => Vec::new(),
    }
}

fn answer(msg: Message) -> Vec<Action> {
    vec![Action::Send(Outgoing {
        to: msg.sender,
        kind: Kind::Info,
        body: format!("repo-worker {} is here", host::self_name()),
        priority: Priority::Normal,
        task_id: msg.task_id,
        correlation_id: Some(msg.id),
    })]
}

tinytown_guest::role!(
    /// The role as exported.
    RepoWorker {
        name: "repo-worker",
        config: Config = parse_config,
        handle: handle_with,
    }
);

export!(RepoWorker);
