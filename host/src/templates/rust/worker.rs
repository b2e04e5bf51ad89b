//! {{name}}: a tinytown `worker` role.
//!
//! On a `task-assign` it runs the configured `program` with the task text on stdin, then asks
//! the configured `reviewer` to review the program's output. When a review rejects the work, it
//! runs the program again with the reviewer's feedback appended and asks for another review.
//! The reviewer, not the worker, decides when a task is done.
//!
//! config: program (required), reviewer (required), args (whitespace-separated),
//!         timeout-ms (a whole number, passed to exec).
//!
//! A role never acts itself: `handle` *returns* actions, and the host applies them atomically
//! together with the acknowledgement of the message. `exec` is the one import that acts.

wit_bindgen::generate!({ world: "agent-exec", path: "wit" });

use std::cell::RefCell;

use tinytown::agent::exec;
use tinytown::agent::host;
use tinytown::agent::types::{Kind, LogLevel, ReviewRequest, TaskOutcome, Verdict};

/// The settings from the agent's `config` table, read once by `init`.
struct Config {
    program: String,
    args: Vec<String>,
    reviewer: String,
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
        .ok_or_else(|| fatal("worker needs config key `program` (the command to run)"))?;
    let reviewer = get("reviewer")
        .ok_or_else(|| fatal("worker needs config key `reviewer` (the agent that reviews)"))?;
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
        reviewer: reviewer.to_owned(),
        timeout_ms,
    })
}

fn log(level: LogLevel, text: impl Into<String>) -> Action {
    Action::Log((level, text.into()))
}

/// Runs the program with `stdin` and asks for a review of its output, whatever its exit
/// status (the reviewer judges). When the program cannot run at all: fail the task, escalate.
fn run_and_request_review(cfg: &Config, task_id: String, stdin: String) -> Vec<Action> {
    let cmd = exec::Command {
        program: cfg.program.clone(),
        args: cfg.args.clone(),
        stdin: Some(stdin),
        timeout_ms: cfg.timeout_ms,
    };
    match exec::run(&cmd) {
        Ok(out) => {
            let status = match (out.timed_out, out.status) {
                (true, _) => "timed out".to_owned(),
                (false, Some(n)) => n.to_string(),
                (false, None) => "signal".to_owned(),
            };
            vec![Action::RequestReview(ReviewRequest {
                reviewer: cfg.reviewer.clone(),
                task_id,
                body: format!("exit {status}\n{}", out.stdout),
            })]
        }
        Err(e) => {
            let text = format!("worker {} could not run `{}`: {e}", host::self_name(), cfg.program);
            vec![
                Action::Fail(TaskOutcome {
                    task_id: task_id.clone(),
                    text: text.clone(),
                }),
                Action::Escalate(format!("{text} (task {task_id})")),
            ]
        }
    }
}

fn handle_with(cfg: &Config, msg: Message) -> Vec<Action> {
    let Some(task_id) = msg.task_id else {
        return match msg.kind {
            Kind::TaskAssign | Kind::Verdict(_) => {
                vec![log(LogLevel::Warn, format!("message {} has no task id; ignored", msg.id))]
            }
            _ => Vec::new(),
        };
    };
    match msg.kind {
        Kind::TaskAssign => run_and_request_review(cfg, task_id, msg.body),
        Kind::Verdict(Verdict::Approve) => {
            vec![log(LogLevel::Info, format!("task {task_id} approved"))]
        }
        Kind::Verdict(Verdict::Reject(feedback)) => match host::get_task(&task_id) {
            Some(task) => {
                let stdin = format!("{}\n\nReviewer feedback:\n{feedback}", task.description);
                run_and_request_review(cfg, task_id, stdin)
            }
            None => vec![log(LogLevel::Warn, format!("rejected task {task_id} is unknown"))],
        },
        _ => Vec::new(),
    }
}

struct Worker;

impl Guest for Worker {
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

export!(Worker);
