//! Anthropic's Messages wire format (`POST {base}/v1/messages`).
//!
//! System messages become the top-level `system`; tool calls and results are `tool_use` and
//! `tool_result` blocks, and consecutive messages of one side are merged (the API wants user and
//! assistant turns to alternate). A JSON response format is done the way Anthropic supports
//! it: a tool named [`RESPOND`] whose input schema is the format, which the model is made to
//! call; its input becomes the answer's text.

use serde_json::{json, Value};

use super::types::{ChatRequest, ChatResponse, FinishReason, Role, ToolCall, Usage};
use super::wire::{json_arg, u32_at};

pub const PATH: &str = "/v1/messages";
pub const VERSION: &str = "2023-06-01";
/// The tool that carries a structured answer.
pub const RESPOND: &str = "respond";

pub fn body(model: &str, req: &ChatRequest, max_tokens: u32) -> Result<Value, String> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let (role, blocks) = match m.role {
            Role::System => {
                system.push(m.content.clone());
                continue;
            }
            Role::User => ("user", vec![json!({"type": "text", "text": m.content})]),
            Role::Assistant => {
                let mut b = Vec::new();
                if !m.content.is_empty() {
                    b.push(json!({"type": "text", "text": m.content}));
                }
                for c in &m.tool_calls {
                    let input =
                        json_arg(&format!("tool call `{}` arguments", c.name), &c.arguments)?;
                    b.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                ("assistant", b)
            }
            Role::Tool => (
                "user",
                vec![json!({"type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content})],
            ),
        };
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = json!({"model": model, "max_tokens": max_tokens, "messages": messages});
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    let mut tools = Vec::new();
    for t in &req.tools {
        let schema = json_arg(&format!("tool `{}` parameters", t.name), &t.parameters)?;
        tools.push(json!({"name": t.name, "description": t.description, "input_schema": schema}));
    }
    if let Some(schema) = &req.response_format {
        let schema = json_arg("response-format", schema)?;
        tools.push(json!({"name": RESPOND,
            "description": "Give your answer by calling this tool; its input is the answer.",
            "input_schema": schema}));
        body["tool_choice"] = if req.tools.is_empty() {
            json!({"type": "tool", "name": RESPOND})
        } else {
            json!({"type": "any"})
        };
    }
    if !tools.is_empty() {
        body["tools"] = Value::Array(tools);
    }
    if let Some(t) = req.params.temperature {
        body["temperature"] = json!(t);
    }
    if !req.params.stop.is_empty() {
        body["stop_sequences"] = json!(req.params.stop);
    }
    Ok(body)
}

/// The answer in a response body. With `structured`, a [`RESPOND`] call is the text.
pub fn parse(v: &Value, structured: bool) -> Result<ChatResponse, String> {
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or("the answer has no content list")?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let mut responded = false;
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("a tool_use block has no name")?;
                let input = b.get("input").cloned().unwrap_or(json!({}));
                if structured && name == RESPOND {
                    text = input.to_string();
                    responded = true;
                    continue;
                }
                tool_calls.push(ToolCall {
                    id: b.get("id").and_then(Value::as_str).unwrap_or("").into(),
                    name: name.into(),
                    arguments: input.to_string(),
                });
            }
            _ => {}
        }
    }
    let finish_reason = match v.get("stop_reason").and_then(Value::as_str) {
        _ if responded && tool_calls.is_empty() => FinishReason::Stop,
        Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    };
    let usage = v.get("usage");
    Ok(ChatResponse {
        text,
        tool_calls,
        finish_reason,
        model: v.get("model").and_then(Value::as_str).unwrap_or("").into(),
        usage: Usage {
            input_tokens: u32_at(usage, "input_tokens"),
            output_tokens: u32_at(usage, "output_tokens"),
        },
    })
}

pub fn has_usage(v: &Value) -> bool {
    v.get("usage")
        .is_some_and(|u| u.get("input_tokens").is_some())
}
