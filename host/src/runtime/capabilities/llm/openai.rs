//! The OpenAI chat-completions wire format (`POST {base}/chat/completions`), which OpenAI,
//! Ollama, llama.cpp's server, vLLM, LM Studio and OpenRouter all speak.

use serde_json::{json, Value};

use super::types::{ChatRequest, ChatResponse, FinishReason, Role, ToolCall, Usage};
use super::wire::{json_arg, text_of, u32_at};

pub const PATH: &str = "/chat/completions";

/// The request body. Errors name what the guest sent wrong (a schema that is not JSON).
pub fn body(model: &str, req: &ChatRequest, max_tokens: u32) -> Result<Value, String> {
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        messages.push(match m.role {
            Role::System => json!({"role": "system", "content": m.content}),
            Role::User => json!({"role": "user", "content": m.content}),
            Role::Assistant if m.tool_calls.is_empty() => {
                json!({"role": "assistant", "content": m.content})
            }
            Role::Assistant => {
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect();
                let content = if m.content.is_empty() {
                    Value::Null
                } else {
                    Value::String(m.content.clone())
                };
                json!({"role": "assistant", "content": content, "tool_calls": calls})
            }
            Role::Tool => json!({
                "role": "tool",
                "tool_call_id": m.tool_call_id.clone().unwrap_or_default(),
                "content": m.content,
            }),
        });
    }
    let mut body = json!({"model": model, "messages": messages, "max_tokens": max_tokens});
    if !req.tools.is_empty() {
        let mut tools = Vec::new();
        for t in &req.tools {
            let params = json_arg(&format!("tool `{}` parameters", t.name), &t.parameters)?;
            tools.push(json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": params}}));
        }
        body["tools"] = Value::Array(tools);
    }
    if let Some(schema) = &req.response_format {
        let schema = json_arg("response-format", schema)?;
        body["response_format"] = json!({"type": "json_schema",
            "json_schema": {"name": "response", "schema": schema}});
    }
    if let Some(t) = req.params.temperature {
        body["temperature"] = json!(t);
    }
    if !req.params.stop.is_empty() {
        body["stop"] = json!(req.params.stop);
    }
    Ok(body)
}

/// The answer in a response body; an error says what is missing.
pub fn parse(v: &Value) -> Result<ChatResponse, String> {
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or("the answer has no choices[0]")?;
    let msg = choice.get("message").ok_or("choices[0] has no message")?;
    let text = text_of(msg.get("content"))?;
    let mut tool_calls = Vec::new();
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let f = c.get("function").ok_or("a tool call has no function")?;
            let arguments = match f.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "{}".into(),
            };
            tool_calls.push(ToolCall {
                id: c.get("id").and_then(Value::as_str).unwrap_or("").into(),
                name: f
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("a tool call has no name")?
                    .into(),
                arguments,
            });
        }
    }
    let finish_reason = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ if !tool_calls.is_empty() => FinishReason::ToolCalls,
        _ => FinishReason::Other,
    };
    let usage = v.get("usage");
    Ok(ChatResponse {
        text,
        tool_calls,
        finish_reason,
        model: v.get("model").and_then(Value::as_str).unwrap_or("").into(),
        usage: Usage {
            input_tokens: u32_at(usage, "prompt_tokens"),
            output_tokens: u32_at(usage, "completion_tokens"),
        },
    })
}

/// Whether a body reported usage at all (a local server may not); without it the call is
/// settled at its reservation.
pub fn has_usage(v: &Value) -> bool {
    v.get("usage")
        .is_some_and(|u| u.get("prompt_tokens").is_some())
}
