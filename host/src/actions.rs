//! Translation between the WIT contract and the town: a stored [`Message`] becomes the guest's
//! `message`, and the guest's `action`s become operations for the Lua applier. The per-handling
//! limits on actions (count and bytes) are checked here, before anything is applied.

use serde_json::{json, Value};

use crate::limits::Limits;
use crate::model::{Kind, Message};
use crate::runtime::wit;

pub fn to_wit(m: &Message, attempt: u32) -> wit::Message {
    wit::Message {
        id: m.id.clone(),
        sender: m.from.clone(),
        recipient: m.to.clone(),
        kind: kind_to_wit(&m.kind, &m.body),
        body: m.body.clone(),
        priority: if m.urgent {
            wit::Priority::Urgent
        } else {
            wit::Priority::Normal
        },
        task_id: m.task.clone(),
        correlation_id: m.corr.clone(),
        sent_at_ms: m.ts,
        attempt,
    }
}

fn kind_to_wit(k: &Kind, body: &str) -> wit::Kind {
    match k {
        Kind::Task => wit::Kind::Task,
        Kind::Query => wit::Kind::Query,
        Kind::Info => wit::Kind::Info,
        Kind::Ack => wit::Kind::Ack,
        Kind::TaskAssign => wit::Kind::TaskAssign,
        Kind::ReviewRequest => wit::Kind::ReviewRequest,
        Kind::Approve => wit::Kind::Verdict(wit::Verdict::Approve),
        Kind::Reject => wit::Kind::Verdict(wit::Verdict::Reject(body.to_string())),
        Kind::Custom(name) => wit::Kind::Custom(name.clone()),
    }
}

fn kind_from_wit(k: &wit::Kind) -> Kind {
    match k {
        wit::Kind::Task => Kind::Task,
        wit::Kind::Query => Kind::Query,
        wit::Kind::Info => Kind::Info,
        wit::Kind::Ack => Kind::Ack,
        wit::Kind::TaskAssign => Kind::TaskAssign,
        wit::Kind::ReviewRequest => Kind::ReviewRequest,
        wit::Kind::Verdict(wit::Verdict::Approve) => Kind::Approve,
        wit::Kind::Verdict(wit::Verdict::Reject(_)) => Kind::Reject,
        wit::Kind::Custom(name) => Kind::Custom(name.clone()),
    }
}

/// A short, stable text of an action, for shadow-mode comparisons and logs.
pub fn describe(a: &wit::Action) -> String {
    match a {
        wit::Action::Send(o) => format!(
            "send {} to {}: {}",
            kind_from_wit(&o.kind).as_str(),
            o.to,
            o.body
        ),
        wit::Action::Assign(x) => format!(
            "assign {} to {}",
            x.task_id.as_deref().unwrap_or("new task"),
            x.agent
        ),
        wit::Action::RequestReview(r) => {
            format!("request-review {} from {}", r.task_id, r.reviewer)
        }
        wit::Action::Approve(o) => format!("approve {}: {}", o.task_id, o.text),
        wit::Action::Reject(o) => format!("reject {}: {}", o.task_id, o.text),
        wit::Action::Complete(o) => format!("complete {}: {}", o.task_id, o.text),
        wit::Action::Fail(o) => format!("fail {}: {}", o.task_id, o.text),
        wit::Action::Escalate(t) => format!("escalate: {t}"),
        wit::Action::SetState((k, v)) => {
            format!("set-state {k}={}", v.as_deref().unwrap_or("(deleted)"))
        }
        wit::Action::Log((_, t)) => format!("log: {t}"),
    }
}

/// Checks the handling's output against the limits, then turns it into applier operations.
pub fn to_ops(actions: &[wit::Action], limits: &Limits) -> Result<Vec<Value>, String> {
    if actions.len() > limits.max_actions {
        return Err(format!(
            "returned {} actions; the limit is {} (limits.max_actions)",
            actions.len(),
            limits.max_actions
        ));
    }
    let bytes: usize = actions.iter().map(payload_bytes).sum();
    if bytes > limits.max_action_bytes {
        return Err(format!(
            "returned {bytes} bytes of actions; the limit is {} (limits.max_action_bytes)",
            limits.max_action_bytes
        ));
    }
    Ok(actions.iter().map(op).collect())
}

fn payload_bytes(a: &wit::Action) -> usize {
    match a {
        wit::Action::Send(o) => o.body.len() + o.to.len(),
        wit::Action::Assign(x) => x.description.len() + x.agent.len(),
        wit::Action::RequestReview(r) => r.body.len(),
        wit::Action::Approve(o)
        | wit::Action::Reject(o)
        | wit::Action::Complete(o)
        | wit::Action::Fail(o) => o.text.len(),
        wit::Action::Escalate(t) => t.len(),
        wit::Action::SetState((k, v)) => k.len() + v.as_ref().map_or(0, String::len),
        wit::Action::Log((_, t)) => t.len(),
    }
}

fn level(l: &wit::LogLevel) -> &'static str {
    match l {
        wit::LogLevel::Debug => "debug",
        wit::LogLevel::Info => "info",
        wit::LogLevel::Warn => "warn",
        wit::LogLevel::Error => "error",
    }
}

fn op(a: &wit::Action) -> Value {
    match a {
        wit::Action::Send(o) => json!({
            "op": "send", "to": o.to, "kind": kind_from_wit(&o.kind).as_str(),
            "body": match &o.kind { wit::Kind::Verdict(wit::Verdict::Reject(r)) if o.body.is_empty() => r, _ => &o.body },
            "urgent": matches!(o.priority, wit::Priority::Urgent),
            "task": o.task_id, "corr": o.correlation_id,
        }),
        wit::Action::Assign(x) => {
            json!({"op": "assign", "agent": x.agent, "task": x.task_id, "desc": x.description})
        }
        wit::Action::RequestReview(r) => {
            json!({"op": "request_review", "reviewer": r.reviewer, "task": r.task_id, "body": r.body})
        }
        wit::Action::Approve(o) => {
            json!({"op": "verdict", "approve": true, "task": o.task_id, "text": o.text})
        }
        wit::Action::Reject(o) => {
            json!({"op": "verdict", "approve": false, "task": o.task_id, "text": o.text})
        }
        wit::Action::Complete(o) => {
            json!({"op": "transition", "to": "completed", "task": o.task_id, "text": o.text})
        }
        wit::Action::Fail(o) => {
            json!({"op": "transition", "to": "failed", "task": o.task_id, "text": o.text})
        }
        wit::Action::Escalate(t) => json!({"op": "escalate", "text": t}),
        wit::Action::SetState((k, v)) => json!({"op": "set_state", "key": k, "value": v}),
        wit::Action::Log((l, t)) => json!({"op": "log", "level": level(l), "text": t}),
    }
}
