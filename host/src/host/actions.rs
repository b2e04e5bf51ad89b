//! Translation between the WIT contract and the town: a stored [`Message`] becomes the guest's
//! `message`, and the guest's `action`s become operations for the Lua applier. The per-handling
//! limits on actions (count and bytes) are checked here, before anything is applied.

use crate::runtime::wit;
use crate::store::applier::Op;
use crate::store::limits::Limits;
use crate::store::model::{Kind, Message, TaskState};

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
pub fn to_ops(actions: &[wit::Action], limits: &Limits) -> Result<Vec<Op>, String> {
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
    let sends = actions
        .iter()
        .filter(|a| !matches!(a, wit::Action::SetState(_) | wit::Action::Log(_)))
        .count();
    if sends > limits.max_sends {
        return Err(format!(
            "sent {sends} messages in one handling; the limit is {} (limits.max_sends)",
            limits.max_sends
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

fn op(a: &wit::Action) -> Op {
    let outcome = |o: &wit::TaskOutcome, approve: bool| Op::Verdict {
        task: o.task_id.clone(),
        approve,
        text: o.text.clone(),
    };
    let transition = |o: &wit::TaskOutcome, to: TaskState| Op::Transition {
        task: o.task_id.clone(),
        to,
        text: Some(o.text.clone()),
    };
    match a {
        wit::Action::Send(o) => Op::Send {
            to: o.to.clone(),
            kind: kind_from_wit(&o.kind),
            // A rejection's reason travels in the body.
            body: match &o.kind {
                wit::Kind::Verdict(wit::Verdict::Reject(r)) if o.body.is_empty() => r.clone(),
                _ => o.body.clone(),
            },
            urgent: matches!(o.priority, wit::Priority::Urgent),
            task: o.task_id.clone(),
            corr: o.correlation_id.clone(),
        },
        wit::Action::Assign(x) => Op::Assign {
            agent: x.agent.clone(),
            task: x.task_id.clone(),
            desc: x.description.clone(),
        },
        wit::Action::RequestReview(r) => Op::RequestReview {
            task: r.task_id.clone(),
            reviewer: r.reviewer.clone(),
            body: r.body.clone(),
        },
        wit::Action::Approve(o) => outcome(o, true),
        wit::Action::Reject(o) => outcome(o, false),
        wit::Action::Complete(o) => transition(o, TaskState::Completed),
        wit::Action::Fail(o) => transition(o, TaskState::Failed),
        wit::Action::Escalate(t) => Op::Escalate { text: t.clone() },
        wit::Action::SetState((k, v)) => Op::SetState {
            key: k.clone(),
            value: v.clone(),
        },
        wit::Action::Log((l, t)) => Op::Log {
            level: level(l).to_string(),
            text: t.clone(),
        },
    }
}
