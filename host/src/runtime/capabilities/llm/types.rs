//! The `llm` interface's records in Rust, mirroring `interface llm` of `wit/agent.wit`
//! (0.2.0) field by field. The WIT glue converts the generated types to and from these, so the
//! providers, the budgets and the tests need no Wasm; they serialise (kebab-case, as in the WIT)
//! into the call's record.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call the model asked for; `tool_call_id` names the call.
    Tool,
}

/// A tool call the model asked for; `arguments` is a JSON object as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message with text only.
    pub fn new(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: vec![],
            tool_call_id: None,
        }
    }
}

/// A tool the model may call; `parameters` is a JSON schema as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub parameters: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Params {
    /// The answer cap, and what the call reserves; `None`: the model's configured default.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    #[serde(default)]
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChatRequest {
    /// A model alias granted to the agent.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub tools: Vec<Tool>,
    /// A JSON schema (as text) the answer must follow; the answer's text is then JSON.
    #[serde(default)]
    pub response_format: Option<String>,
    #[serde(default)]
    pub params: Params,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinishReason {
    Stop,
    /// Cut at max-tokens.
    Length,
    ToolCalls,
    ContentFilter,
    Other,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChatResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The alias is not granted to this agent (or not configured).
    ModelNotGranted,
    /// A budget of the agent or the task has no room for this call's reservation.
    BudgetExhausted,
    /// The provider kept answering 429 after the host's retries.
    RateLimited,
    /// The provider could not be reached, timed out or kept failing.
    ProviderUnavailable,
    /// The request is malformed or the provider refused it (4xx); do not retry as is.
    InvalidRequest,
}

/// What the guest gets when a call fails. `message` never contains a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LlmError {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
}

impl LlmError {
    pub fn new(code: ErrorCode, message: impl Into<String>, retryable: bool) -> LlmError {
        LlmError {
            code,
            message: message.into(),
            retryable,
        }
    }
}

impl std::fmt::Display for LlmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}
