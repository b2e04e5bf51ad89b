//! The `reviewer-llm` role: answers a `review-request` by asking a model (through the host's
//! `llm` capability) for a structured verdict on the work against the task's description, and
//! approves only when the model's answer is exactly an approving verdict.
//!
//! It fails closed. The answer must be JSON of the shape `{"verdict": "approve"|"reject",
//! "reason": string}` (the request's response format says so) with a finish reason of `stop`;
//! anything else, a model error of any kind (not granted, budget exhausted, rate limited,
//! unavailable, refused), an empty request or a task the town does not know is a rejection
//! with the reason, and what a human must fix (the budget, the grant, the config) is also
//! escalated. Nothing but an explicit approval from the model approves.
//!
//! Config: `model` (required: the alias of `[agents.NAME.llm] models`), `max-tokens`
//! (optional: the answer's cap), `notify` (optional: an agent told of each verdict),
//! `instructions` (optional: added to the system prompt).

wit_bindgen::generate!({ world: "agent-llm", path: "../../wit" });

#[path = "../../llm-common/verdict.rs"]
mod verdict;

use tinytown::agent::host;
use tinytown::agent::types::{Kind, Outgoing, Priority, TaskOutcome};
use tinytown_guest::{ConfigError, Table};
use verdict::Review;

const SYSTEM: &str = "You review work done for a task. Judge whether the work does what the \
task asks, correctly and completely. Answer only with JSON: {\"verdict\": \"approve\" or \
\"reject\", \"reason\": \"...\"}. When you reject, the reason is the concrete fix the author \
should make. When in doubt, reject.";

struct Config {
    model: String,
    max_tokens: Option<u32>,
    notify: Option<String>,
    instructions: Option<String>,
}

fn parse_config(config: &Table) -> Result<Config, ConfigError> {
    let model = config.required("model", "the model alias it asks for a verdict")?;
    Ok(Config {
        model: model.to_owned(),
        max_tokens: config.number("max-tokens")?,
        notify: config.get("notify").map(str::to_owned),
        instructions: config.get("instructions").map(str::to_owned),
    })
}

fn review(cfg: &Config, task_id: &str, body: &str) -> Review {
    if body.trim().is_empty() {
        return Review::reject("nothing to review");
    }
    let Some(task) = host::get_task(task_id) else {
        return Review::reject_and_escalate(format!("task {task_id} is not known to the town"));
    };
    let mut system = SYSTEM.to_string();
    if let Some(extra) = &cfg.instructions {
        system.push_str("\n\n");
        system.push_str(extra);
    }
    verdict::ask(
        &cfg.model,
        cfg.max_tokens,
        system,
        format!("Task {task_id}:\n{}\n\nThe work submitted:\n{body}", task.description),
    )
}

fn handle_with(cfg: &Config, msg: Message) -> Vec<Action> {
    if !matches!(msg.kind, Kind::ReviewRequest) {
        return Vec::new();
    }
    let Some(task_id) = msg.task_id else {
        return vec![Action::Escalate(format!("review request from {} has no task id", msg.sender))];
    };
    let Review { approved, text, escalation } = review(cfg, &task_id, &msg.body);
    let mut actions = Vec::with_capacity(3);
    let notice = cfg.notify.as_ref().map(|to| Outgoing {
        to: to.clone(),
        kind: Kind::Info,
        body: format!("{} {task_id}: {text}", if approved { "approved" } else { "rejected" }),
        priority: Priority::Normal,
        task_id: Some(task_id.clone()),
        correlation_id: Some(msg.id.clone()),
    });
    let outcome = TaskOutcome { task_id, text };
    actions.push(if approved { Action::Approve(outcome) } else { Action::Reject(outcome) });
    actions.extend(notice.map(Action::Send));
    actions.extend(escalation.map(Action::Escalate));
    actions
}

tinytown_guest::role!(
    /// The role as exported: `init` reads the config, `handle` uses it.
    ReviewerLlm {
        name: "reviewer-llm",
        config: Config = parse_config,
        handle: handle_with,
    }
);

export!(ReviewerLlm);
