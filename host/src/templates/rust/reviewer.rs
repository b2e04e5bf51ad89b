//! {{name}}: a tinytown `reviewer` role.
//!
//! On a `review-request` it runs the configured check `program` with the work on stdin and
//! approves the task only when the check exits 0. It fails closed: a failing, timed-out, killed
//! or unrunnable check, or an empty request, is a rejection; a check that cannot run and a
//! request without a task id are also escalated to the humans. It never approves by default.
//!
//! config: program (required), args (whitespace-separated), timeout-ms (a whole number,
//!         passed to exec).
//!
//! A role never acts itself: `handle` *returns* actions, and the host applies them atomically
//! together with the acknowledgement of the message. `exec` is the one import that acts.

wit_bindgen::generate!({ world: "agent-exec", path: "wit" });

use std::cell::RefCell;

use tinytown::agent::exec;
use tinytown::agent::host;
use tinytown::agent::types::{Kind, TaskOutcome};

/// The settings from the agent's `config` table, read once by `init`.
struct Config {
    program: String,
    args: Vec<String>,
    timeout_ms: Option<u32>,
}

thread_local! {
    static CONFIG: RefCell<Option<Config>> = const { RefCell::new(None) };
}

/// A permanent error: the host does not retry it.
fn fatal(message: impl Into<String>) -> Error {
    Error {
        message: message.into(),
        retryable: false,
    }
}

fn parse_config(config: &[(String, String)]) -> Result<Config, Error> {
    // The last value of a key wins; a blank value counts as absent.
    let get = |key: &str| {
        config
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let program = get("program")
        .ok_or_else(|| fatal("reviewer needs config key `program` (the check to run)"))?;
    let timeout_ms = match get("timeout-ms") {
        None => None,
        Some(t) => Some(t.parse::<u32>().map_err(|_| {
            fatal(format!("config key `timeout-ms` must be a whole number, got `{t}`"))
        })?),
    };
    Ok(Config {
        program: program.to_owned(),
        args: get("args")
            .map(|a| a.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        timeout_ms,
    })
}

/// Runs the check on `body`: (approved, text, what to escalate). Only a clean exit 0 approves.
fn review(cfg: &Config, body: String) -> (bool, String, Option<String>) {
    if body.trim().is_empty() {
        return (false, "nothing to review".to_owned(), None);
    }
    let cmd = exec::Command {
        program: cfg.program.clone(),
        args: cfg.args.clone(),
        stdin: Some(body),
        timeout_ms: cfg.timeout_ms,
    };
    match exec::run(&cmd) {
        Ok(out) if out.timed_out => (false, "check timed out".to_owned(), None),
        Ok(out) => match out.status {
            Some(0) => (true, "check passed".to_owned(), None),
            Some(n) => {
                // The check's own words, stderr first, become the feedback for the worker.
                let detail = match out.stderr.trim() {
                    "" => out.stdout.trim(),
                    stderr => stderr,
                };
                let text = if detail.is_empty() {
                    format!("check failed (exit {n})")
                } else {
                    format!("check failed (exit {n}): {detail}")
                };
                (false, text, None)
            }
            None => (false, "check failed (killed by a signal)".to_owned(), None),
        },
        Err(e) => (
            false,
            format!("check could not run: {e}"),
            Some(format!("reviewer {} cannot run its check: {e}", host::self_name())),
        ),
    }
}

fn handle_with(cfg: &Config, msg: Message) -> Vec<Action> {
    if !matches!(msg.kind, Kind::ReviewRequest) {
        return Vec::new();
    }
    let Some(task_id) = msg.task_id else {
        return vec![Action::Escalate(format!(
            "review request from {} has no task id",
            msg.sender
        ))];
    };
    let (approved, text, escalation) = review(cfg, msg.body);
    let outcome = TaskOutcome { task_id, text };
    let mut actions = vec![if approved {
        Action::Approve(outcome)
    } else {
        Action::Reject(outcome)
    }];
    actions.extend(escalation.map(Action::Escalate));
    actions
}

struct Reviewer;

impl Guest for Reviewer {
    fn init(config: Vec<(String, String)>) -> Result<(), Error> {
        let cfg = parse_config(&config)?;
        CONFIG.with(|c| *c.borrow_mut() = Some(cfg));
        Ok(())
    }

    fn handle(msg: Message) -> Result<Vec<Action>, Error> {
        CONFIG.with(|c| match c.borrow().as_ref() {
            Some(cfg) => Ok(handle_with(cfg, msg)),
            // A host that skipped `init` gets the error `init` would have given.
            None => parse_config(&[]).map(|cfg| handle_with(&cfg, msg)),
        })
    }
}

export!(Reviewer);
