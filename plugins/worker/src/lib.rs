//! The `worker` role: turns an assigned task into work by running a configured program (a
//! coding CLI, a script) with the task description on stdin, then asks its reviewer to check the
//! result. When a review rejects the work, it runs the program again with the reviewer's feedback
//! appended, and asks for another review; the reviewer, not the worker, decides what is done.

wit_bindgen::generate!({ world: "agent-exec", path: "../../wit" });

use std::cell::RefCell;

use tinytown::agent::exec;
use tinytown::agent::host;
use tinytown::agent::types::{
    Kind, LogLevel, Outgoing, Priority, ReviewRequest, TaskOutcome, Verdict,
};

/// The worker's settings, read from its `config` table by `init`.
struct Config {
    program: String,
    args: Vec<String>,
    reviewer: String,
    timeout_ms: Option<u32>,
}

thread_local! {
    static CONFIG: RefCell<Option<Config>> = const { RefCell::new(None) };
}

fn fatal(message: impl Into<String>) -> Error {
    Error {
        message: message.into(),
        retryable: false,
    }
}

fn parse_config(config: &[(String, String)]) -> Result<Config, Error> {
    let get = |key: &str| {
        config
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let program = get("program").ok_or_else(|| {
        fatal("worker needs config key `program` (the command to run for a task)")
    })?;
    let reviewer = get("reviewer").ok_or_else(|| {
        fatal("worker needs config key `reviewer` (the agent that reviews its work)")
    })?;
    let args = get("args")
        .map(|a| a.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let timeout_ms = match get("timeout-ms") {
        None => None,
        Some(t) => Some(t.parse::<u32>().map_err(|_| {
            fatal(format!(
                "worker config key `timeout-ms` must be a whole number of milliseconds, got `{t}`"
            ))
        })?),
    };
    Ok(Config {
        program: program.to_owned(),
        args,
        reviewer: reviewer.to_owned(),
        timeout_ms,
    })
}

fn log(level: LogLevel, text: impl Into<String>) -> Action {
    Action::Log((level, text.into()))
}

/// Runs the program for task `task_id` with `stdin`, and turns the outcome into actions:
/// a review request whatever the exit, or fail + escalate when the program could not run.
fn run_and_request_review(cfg: &Config, task_id: &str, attempt: u32, stdin: String) -> Vec<Action> {
    let attempt = attempt.to_string();
    let args = cfg
        .args
        .iter()
        .map(|a| a.replace("{task}", task_id).replace("{attempt}", &attempt))
        .collect();
    let cmd = exec::Command {
        program: cfg.program.clone(),
        args,
        stdin: Some(stdin),
        timeout_ms: cfg.timeout_ms,
    };
    match exec::run(&cmd) {
        Ok(out) => {
            let code = if out.timed_out {
                "timed out".to_owned()
            } else {
                match out.status {
                    Some(n) => n.to_string(),
                    None => "signal".to_owned(),
                }
            };
            vec![Action::RequestReview(ReviewRequest {
                reviewer: cfg.reviewer.clone(),
                task_id: task_id.to_owned(),
                body: format!("exit {code}\n{}", out.stdout),
            })]
        }
        Err(e) => {
            let me = host::self_name();
            let program = &cfg.program;
            vec![
                Action::Fail(TaskOutcome {
                    task_id: task_id.to_owned(),
                    text: format!("worker {me} could not run `{program}`: {e}"),
                }),
                Action::Escalate(format!(
                    "worker {me} could not run `{program}` for task {task_id}: {e}"
                )),
            ]
        }
    }
}

/// `{attempt}` for a task: the number of review rejections so far, plus one.
fn attempt_of(task: Option<&tinytown::agent::types::TaskInfo>) -> u32 {
    task.map_or(0, |t| t.rejections).saturating_add(1)
}

fn handle_with(cfg: &Config, msg: Message) -> Vec<Action> {
    match msg.kind {
        Kind::TaskAssign => {
            let Some(task_id) = msg.task_id else {
                return vec![log(
                    LogLevel::Warn,
                    format!(
                        "task-assign {} from {} has no task id; ignored",
                        msg.id, msg.sender
                    ),
                )];
            };
            let attempt = attempt_of(host::get_task(&task_id).as_ref());
            run_and_request_review(cfg, &task_id, attempt, msg.body)
        }
        Kind::Verdict(verdict) => {
            let Some(task_id) = msg.task_id else {
                return vec![log(
                    LogLevel::Warn,
                    format!(
                        "verdict {} from {} has no task id; ignored",
                        msg.id, msg.sender
                    ),
                )];
            };
            match verdict {
                Verdict::Approve => vec![log(LogLevel::Info, format!("task {task_id} approved"))],
                Verdict::Reject(reason) => {
                    let Some(task) = host::get_task(&task_id) else {
                        return vec![log(
                            LogLevel::Warn,
                            format!(
                                "task {task_id} was rejected by {} but is unknown; ignored",
                                msg.sender
                            ),
                        )];
                    };
                    let attempt = attempt_of(Some(&task));
                    let stdin = format!("{}\n\nReviewer feedback:\n{reason}", task.description);
                    run_and_request_review(cfg, &task_id, attempt, stdin)
                }
            }
        }
        Kind::Query => vec![Action::Send(Outgoing {
            to: msg.sender,
            kind: Kind::Info,
            body: format!("worker {} is here", host::self_name()),
            priority: Priority::Normal,
            task_id: msg.task_id,
            correlation_id: Some(msg.id),
        })],
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
