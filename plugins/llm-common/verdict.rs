//! What the reviewers that ask a model share (`reviewer-llm`, `repo-reviewer-llm`): the verdict
//! the model must answer with, the request that asks for it, and how its answer is judged.
//!
//! Included as `#[path = "../../llm-common/verdict.rs"] mod verdict;` rather than being a
//! crate, like `repo-common`: it calls the plugin's own `llm` bindings.
//!
//! It fails closed: only an answer that is exactly `{"verdict": "approve", "reason": ...}`,
//! finished with `stop`, approves; anything else, and every model error, is a rejection.

use crate::tinytown::agent::host;
use crate::tinytown::agent::llm;

/// The shape of an answer: the response format of every request.
pub const VERDICT_SCHEMA: &str = r#"{"type":"object","properties":{"verdict":{"type":"string","enum":["approve","reject"]},"reason":{"type":"string"}},"required":["verdict","reason"],"additionalProperties":false}"#;

/// One review's outcome: approve or not, the text, and what to escalate to the humans.
pub struct Review {
    pub approved: bool,
    pub text: String,
    pub escalation: Option<String>,
}

impl Review {
    pub fn reject(text: impl Into<String>) -> Review {
        Review { approved: false, text: text.into(), escalation: None }
    }
    pub fn reject_and_escalate(text: String) -> Review {
        let escalation = Some(format!("reviewer {}: {text}", host::self_name()));
        Review { approved: false, text, escalation }
    }
}

/// What the model's answer means. Only `{"verdict": "approve", ...}` approves.
pub fn judge(resp: &llm::Response) -> Review {
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

/// Asks model `model` for a verdict: `system` says how to judge, `work` is what to judge.
pub fn ask(model: &str, max_tokens: Option<u32>, system: String, work: String) -> Review {
    let msg = |role, content: String| llm::ChatMessage {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
    };
    let req = llm::Request {
        model: model.to_owned(),
        messages: vec![msg(llm::Role::System, system), msg(llm::Role::User, work)],
        tools: Vec::new(),
        response_format: Some(VERDICT_SCHEMA.to_string()),
        params: llm::Params { max_tokens, temperature: Some(0.0), stop: Vec::new() },
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
