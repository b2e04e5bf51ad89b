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

use tinytown::agent::host;
use tinytown::agent::llm;
use tinytown::agent::types::{Kind, Outgoing, Priority, TaskOutcome};
use tinytown_guest::{ConfigError, Table};

/// The shape of an answer: the response format of every request.
const VERDICT_SCHEMA: &str = r#"{"type":"object","properties":{"verdict":{"type":"string","enum":["approve","reject"]},"reason":{"type":"string"}},"required":["verdict","reason"],"additionalProperties":false}"#;

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

/// One review's outcome: approve or not, the text, and what to escalate.
struct Review {
    approved: bool,
    text: String,
    escalation: Option<String>,
}

impl Review {
    fn reject(text: impl Into<String>) -> Review {
        Review { approved: false, text: text.into(), escalation: None }
    }
    fn reject_and_escalate(text: String) -> Review {
        let escalation = Some(format!("reviewer {}: {text}", host::self_name()));
        Review { approved: false, text, escalation }
    }
}

/// What the model's answer means. Only `{"verdict": "approve", ...}` approves.
fn judge(resp: &llm::Response) -> Review {
    if !matches!(resp.finish_reason, llm::FinishReason::Stop) || !resp.tool_calls.is_empty() {
        return Review::reject(format!(
            "the model's answer is not a verdict (it stopped with {:?})",
            resp.finish_reason
        ));
    }
    let v: serde_json::Value = match serde_json::from_str(resp.text.trim()) {
        Ok(v) => v,
        Err(e) => return Review::reject(format!("the model's answer is not a verdict (not JSON: {e})")),
    };
    let reason = v.get("reason").and_then(|r| r.as_str()).map(str::trim).unwrap_or("");
    match v.get("verdict").and_then(|r| r.as_str()) {
        Some("approve") => Review {
            approved: true,
            text: if reason.is_empty() { "approved by the model".into() } else { reason.into() },
            escalation: None,
        },
        Some("reject") if !reason.is_empty() => Review::reject(reason),
        Some("reject") => Review::reject("rejected by the model, without a reason"),
        _ => Review::reject("the model's answer is not a verdict (no verdict approve or reject)"),
    }
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
    let msg = |role, content: String| llm::ChatMessage {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
    };
    let req = llm::Request {
        model: cfg.model.clone(),
        messages: vec![
            msg(llm::Role::System, system),
            msg(
                llm::Role::User,
                format!("Task {task_id}:\n{}\n\nThe work submitted:\n{body}", task.description),
            ),
        ],
        tools: Vec::new(),
        response_format: Some(VERDICT_SCHEMA.to_string()),
        params: llm::Params { max_tokens: cfg.max_tokens, temperature: Some(0.0), stop: Vec::new() },
    };
    match llm::chat(&req) {
        Ok(resp) => judge(&resp),
        Err(e) => {
            let text = format!("the review could not be done ({:?}): {}", e.code, e.message);
            match e.code {
                // A transient failure: the owner can ask again later.
                llm::ErrorCode::RateLimited | llm::ErrorCode::ProviderUnavailable => Review::reject(text),
                // Budgets, grants and requests are for a human to fix.
                _ => Review::reject_and_escalate(text),
            }
        }
    }
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
