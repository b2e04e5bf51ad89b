//! The `reviewer` role: answers a `review-request` by running a configured check program with the
//! work on stdin, and approves the task only when the check exits 0. It fails closed: a failing,
//! timed-out, killed or unrunnable check, or an empty request, is a rejection (the last one also
//! escalated to the humans). The texts are part of a conformance suite shared with the Python,
//! JavaScript and C ports, so they must not drift.

wit_bindgen::generate!({ world: "agent-exec", path: "../../wit" });

use tinytown::agent::exec;
use tinytown::agent::host;
use tinytown::agent::types::{Kind, Outgoing, Priority, TaskOutcome};
use tinytown_guest::{fill, ConfigError, Table};

/// The reviewer's settings, read from its `config` table by `init`.
struct Config {
    program: String,
    args: Vec<String>,
    notify: Option<String>,
    timeout_ms: Option<u32>,
}

fn parse_config(config: &Table) -> Result<Config, ConfigError> {
    let program = config.required("program", "the check to run for a review")?;
    Ok(Config {
        program: program.to_owned(),
        args: config.words("args"),
        notify: config.get("notify").map(str::to_owned),
        timeout_ms: config.number_of("timeout-ms", "milliseconds")?,
    })
}

/// The outcome of one review: the verdict, its text, and what to escalate, if anything.
struct Review {
    approved: bool,
    text: String,
    escalation: Option<String>,
}

impl Review {
    fn reject(text: impl Into<String>) -> Self {
        Review {
            approved: false,
            text: text.into(),
            escalation: None,
        }
    }
}

/// Runs the check on `body` and judges it. Anything but a clean exit 0 is a rejection.
fn review(cfg: &Config, task_id: &str, body: String) -> Review {
    if body.trim().is_empty() {
        return Review::reject("nothing to review");
    }
    let cmd = exec::Command {
        program: cfg.program.clone(),
        args: fill(&cfg.args, &[("task", task_id)]),
        stdin: Some(body),
        timeout_ms: cfg.timeout_ms,
    };
    match exec::run(&cmd) {
        Ok(out) if out.timed_out => Review::reject("check timed out"),
        Ok(out) => match out.status {
            Some(0) => Review {
                approved: true,
                text: "check passed".to_owned(),
                escalation: None,
            },
            Some(n) => {
                let stderr = out.stderr.trim();
                let detail = if stderr.is_empty() {
                    out.stdout.trim()
                } else {
                    stderr
                };
                if detail.is_empty() {
                    Review::reject(format!("check failed (exit {n})"))
                } else {
                    Review::reject(format!("check failed (exit {n}): {detail}"))
                }
            }
            None => Review::reject("check failed (killed by a signal)"),
        },
        Err(e) => Review {
            approved: false,
            text: format!("check could not run: {e}"),
            escalation: Some(format!(
                "reviewer {} cannot run its check: {e}",
                host::self_name()
            )),
        },
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
    let Review {
        approved,
        text,
        escalation,
    } = review(cfg, &task_id, msg.body);

    let mut actions = Vec::with_capacity(3);
    let notice = cfg.notify.as_ref().map(|to| {
        let word = if approved { "approved" } else { "rejected" };
        Outgoing {
            to: to.clone(),
            kind: Kind::Info,
            body: format!("{word} {task_id}: {text}"),
            priority: Priority::Normal,
            task_id: Some(task_id.clone()),
            correlation_id: Some(msg.id),
        }
    });
    let outcome = TaskOutcome { task_id, text };
    actions.push(if approved {
        Action::Approve(outcome)
    } else {
        Action::Reject(outcome)
    });
    actions.extend(notice.map(Action::Send));
    actions.extend(escalation.map(Action::Escalate));
    actions
}

tinytown_guest::role!(
    /// The role as exported: `init` reads the config, `handle` uses it.
    Reviewer {
        name: "reviewer",
        config: Config = parse_config,
        handle: handle_with,
    }
);

export!(Reviewer);
