//! The `worker` role: turns an assigned task into work by running a configured program (a
//! coding CLI, a script) with the task description on stdin, then asks its reviewer to check the
//! result. When a review rejects the work, it runs the program again with the reviewer's feedback
//! appended, and asks for another review; the reviewer, not the worker, decides what is done.

wit_bindgen::generate!({ world: "agent-exec", path: "../../wit" });

use tinytown::agent::exec;
use tinytown::agent::host;
use tinytown::agent::types::{
    Kind, LogLevel, Outgoing, Priority, ReviewRequest, TaskOutcome, Verdict,
};
use tinytown_guest::{fill, ConfigError, Table};

/// The worker's settings, read from its `config` table by `init`.
struct Config {
    program: String,
    args: Vec<String>,
    reviewer: String,
    timeout_ms: Option<u32>,
}

fn parse_config(config: &Table) -> Result<Config, ConfigError> {
    let program = config.required("program", "the command to run for a task")?;
    let reviewer = config.required("reviewer", "the agent that reviews its work")?;
    Ok(Config {
        program: program.to_owned(),
        args: config.words("args"),
        reviewer: reviewer.to_owned(),
        timeout_ms: config.number_of("timeout-ms", "milliseconds")?,
    })
}

fn log(level: LogLevel, text: impl Into<String>) -> Action {
    Action::Log((level, text.into()))
}

/// Runs the program for task `task_id` with `stdin`, and turns the outcome into actions:
/// a review request whatever the exit, or fail + escalate when the program could not run.
fn run_and_request_review(cfg: &Config, task_id: &str, attempt: u32, stdin: String) -> Vec<Action> {
    let attempt = attempt.to_string();
    let cmd = exec::Command {
        program: cfg.program.clone(),
        args: fill(&cfg.args, &[("task", task_id), ("attempt", &attempt)]),
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

/// What a `what` message (`task-assign`, `verdict`) that names no task gets: a warning.
fn ignored_without_task_id(what: &str, id: &str, sender: &str) -> Vec<Action> {
    vec![log(
        LogLevel::Warn,
        format!("{what} {id} from {sender} has no task id; ignored"),
    )]
}

fn handle_with(cfg: &Config, msg: Message) -> Vec<Action> {
    match msg.kind {
        Kind::TaskAssign => {
            let Some(task_id) = msg.task_id else {
                return ignored_without_task_id("task-assign", &msg.id, &msg.sender);
            };
            let attempt = attempt_of(host::get_task(&task_id).as_ref());
            run_and_request_review(cfg, &task_id, attempt, msg.body)
        }
        Kind::Verdict(verdict) => {
            let Some(task_id) = msg.task_id else {
                return ignored_without_task_id("verdict", &msg.id, &msg.sender);
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

tinytown_guest::role!(
    /// The role as exported: `init` reads the config, `handle` uses it.
    Worker {
        name: "worker",
        config: Config = parse_config,
        handle: handle_with,
    }
);

export!(Worker);
