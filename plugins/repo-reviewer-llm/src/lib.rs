//! The `repo-reviewer-llm` role: `repo-reviewer`'s review (the town's check in the task's
//! worktree, at the commit under review) and, once the check passes, a model's review of the
//! change against the task, through the host's `llm` capability.
//!
//! The check comes first and decides alone when it fails: the model is asked only about a
//! change that passes, so a budget is spent only on work that could be merged. The model sees
//! the task's description and the diff from the target (capped at `max-diff` bytes). It fails
//! closed like `reviewer-llm`: only an explicit approving verdict approves; a model error or a
//! malformed answer rejects, and what a human must fix (budget, grant, config) is escalated.
//!
//! Config: `repo-reviewer`'s (`timeout-ms`, `check`, the `repo-*` keys), `model` (required: the
//! alias of `[agents.NAME.llm] models`), `max-tokens` (optional), `max-diff` (optional,
//! default 20000), `instructions` (optional: added to the system prompt).

wit_bindgen::generate!({ world: "agent-exec-llm", path: "../../wit" });

#[path = "../../repo-common/git.rs"]
mod git;

#[path = "../../repo-reviewer/src/check.rs"]
mod check;

#[path = "../../llm-common/verdict.rs"]
mod verdict;

use git::git_ok;
use tinytown::agent::host;
use tinytown::agent::types::{Kind, LogLevel, TaskOutcome};
use tinytown_guest::{ConfigError, Table};
use verdict::Review;

const SYSTEM: &str = "You review a change to a code repository, made for a task. The \
project's own check already passed on it. Judge whether the change does what the task asks, \
correctly and completely, and nothing the task did not ask for. Answer only with JSON: \
{\"verdict\": \"approve\" or \"reject\", \"reason\": \"...\"}. When you reject, the reason is \
the concrete fix the author should make. When in doubt, reject.";

const DEFAULT_MAX_DIFF: usize = 20_000;

struct Config {
    check: check::Config,
    model: String,
    max_tokens: Option<u32>,
    max_diff: usize,
    instructions: Option<String>,
}

fn parse_config(config: &Table) -> Result<Config, ConfigError> {
    Ok(Config {
        check: check::parse_config(config)?,
        model: config
            .required("model", "the model alias it asks to review each change")?
            .to_owned(),
        max_tokens: config.number("max-tokens")?,
        max_diff: config
            .number_of::<u32>("max-diff", "bytes")?
            .map_or(DEFAULT_MAX_DIFF, |n| n as usize),
        instructions: config.get("instructions").map(str::to_owned),
    })
}

/// The first `max` bytes of `text` (at a character boundary), saying what was left out.
fn head(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[... {} more bytes of the diff left out]", &text[..end], text.len() - end)
}

fn review(cfg: &Config, task: &str, body: &str) -> Review {
    let passed = match check::review(&cfg.check, task, body) {
        Ok(text) => text,
        Err(text) => return Review::reject(text),
    };
    let Some(info) = host::get_task(task) else {
        return Review::reject_and_escalate(format!("task {task} is not known to the town"));
    };
    let repo = &cfg.check.repo;
    let range = format!("{}...HEAD", repo.target);
    let diff = match git_ok(&repo.worktree(task), &["diff", &range]) {
        Ok(d) => d,
        Err(e) => return Review::reject(format!("cannot read the change of task {task}: {e}")),
    };
    let mut system = SYSTEM.to_owned();
    if let Some(extra) = &cfg.instructions {
        system.push_str("\n\n");
        system.push_str(extra);
    }
    let work = format!(
        "Task {task}:\n{}\n\nThe change (git diff {range}):\n{}",
        info.description,
        head(&diff, cfg.max_diff)
    );
    let model = verdict::ask(&cfg.model, cfg.max_tokens, system, work);
    if model.approved {
        Review { text: format!("{passed}; the model approved: {}", model.text), ..model }
    } else {
        Review { text: format!("{passed}, but the model rejected the change: {}", model.text), ..model }
    }
}

fn handle_with(cfg: &Config, msg: Message) -> Vec<Action> {
    let (Kind::ReviewRequest, Some(task)) = (&msg.kind, msg.task_id.clone()) else {
        return Vec::new();
    };
    let Review { approved, text, escalation } = review(cfg, &task, &msg.body);
    let mut actions = Vec::with_capacity(3);
    if approved {
        actions.push(Action::Approve(TaskOutcome { task_id: task, text }));
    } else {
        actions.push(Action::Log((LogLevel::Info, format!("task {task} rejected"))));
        actions.push(Action::Reject(TaskOutcome { task_id: task, text }));
    }
    actions.extend(escalation.map(Action::Escalate));
    actions
}

tinytown_guest::role!(
    /// The role as exported.
    RepoReviewerLlm {
        name: "repo-reviewer-llm",
        config: Config = parse_config,
        handle: handle_with,
    }
);

export!(RepoReviewerLlm);
