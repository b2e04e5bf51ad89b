//! The WIT `llm` interface (0.2.0), answered on the instance's state: the generated records
//! are converted to [`super::types`], the call goes through the agent's [`LlmGrant`] with the
//! town's budgets, outside the guest's time budget, and is recorded with the handling. In a
//! replay the recorded answer is given back, and a prompt the original never sent calls no
//! model: it is refused (a divergence the replay reports).

use std::time::Instant;

use super::grant::LlmGrant;
use super::types as t;
use crate::runtime::bindings::tinytown::agent::llm as wit;
use crate::runtime::instance::State;
use crate::runtime::record::Call;
use crate::runtime::replay::Answer;

impl wit::Host for State {
    async fn chat(&mut self, req: wit::Request) -> Result<wit::Response, wit::Error> {
        let started = Instant::now();
        let req = request(req);
        match self.replayed("llm", "chat", &req) {
            Some(Answer::Recorded(v)) => return recorded(&v),
            Some(Answer::Refused) | Some(Answer::Live) => {
                return Err(error(t::LlmError::new(
                    t::ErrorCode::ProviderUnavailable,
                    "replay: the original never sent this request, and a replay calls no model",
                    false,
                )))
            }
            None => {}
        }
        let Some(grant) = self.grants.get::<LlmGrant>() else {
            let e = t::LlmError::new(
                t::ErrorCode::ModelNotGranted,
                "llm is not granted to this agent",
                false,
            );
            self.record(Call::new(
                "llm",
                "chat",
                &req,
                serde_json::json!({ "error": &e }),
                started.elapsed(),
            ));
            return Err(error(e));
        };
        let budgets = self.town().budgets();
        let agent = self.agent().to_string();
        let task = self.task().map(str::to_string);
        let r = self
            .outside_guest(grant.chat(budgets.as_ref(), &agent, task.as_deref(), req))
            .await;
        let (r, rec) = match r {
            Ok((resp, rec)) => (Ok(response(resp)), rec),
            Err((e, rec)) => (Err(error(e)), rec),
        };
        // The journal keeps the guest's request and everything the host learnt answering it.
        let mut answer = serde_json::to_value(&rec).unwrap_or_default();
        if let Some(o) = answer.as_object_mut() {
            o.remove("request");
        }
        self.record(Call::new(
            "llm",
            "chat",
            &rec.request,
            answer,
            started.elapsed(),
        ));
        r
    }

    async fn models(&mut self) -> Vec<String> {
        let started = Instant::now();
        if let Some(Answer::Recorded(v)) = self.replayed("llm", "models", &()) {
            return serde_json::from_value(v).unwrap_or_default();
        }
        let models = self
            .grants
            .get::<LlmGrant>()
            .map(|g| g.models())
            .unwrap_or_default();
        self.record(Call::new("llm", "models", (), &models, started.elapsed()));
        models
    }
}

/// The answer a recorded call gave: its `response` (a response, or `{"error": ...}`).
fn recorded(v: &serde_json::Value) -> Result<wit::Response, wit::Error> {
    let r = &v["response"];
    if let Some(e) = r.get("error") {
        return Err(error(
            serde_json::from_value(e.clone()).unwrap_or_else(|e| unreadable(&e)),
        ));
    }
    serde_json::from_value::<t::ChatResponse>(r.clone())
        .map(response)
        .map_err(|e| error(unreadable(&e)))
}

fn unreadable(e: &serde_json::Error) -> t::LlmError {
    t::LlmError::new(
        t::ErrorCode::ProviderUnavailable,
        format!("replay: the recorded answer does not read: {e}"),
        false,
    )
}

fn request(r: wit::Request) -> t::ChatRequest {
    t::ChatRequest {
        model: r.model,
        messages: r
            .messages
            .into_iter()
            .map(|m| t::ChatMessage {
                role: match m.role {
                    wit::Role::System => t::Role::System,
                    wit::Role::User => t::Role::User,
                    wit::Role::Assistant => t::Role::Assistant,
                    wit::Role::Tool => t::Role::Tool,
                },
                content: m.content,
                tool_calls: m.tool_calls.into_iter().map(tool_call).collect(),
                tool_call_id: m.tool_call_id,
            })
            .collect(),
        tools: r
            .tools
            .into_iter()
            .map(|x| t::Tool {
                name: x.name,
                description: x.description,
                parameters: x.parameters,
            })
            .collect(),
        response_format: r.response_format,
        params: t::Params {
            max_tokens: r.params.max_tokens,
            temperature: r.params.temperature,
            stop: r.params.stop,
        },
    }
}

fn tool_call(c: wit::ToolCall) -> t::ToolCall {
    t::ToolCall {
        id: c.id,
        name: c.name,
        arguments: c.arguments,
    }
}

fn response(r: t::ChatResponse) -> wit::Response {
    wit::Response {
        text: r.text,
        tool_calls: r
            .tool_calls
            .into_iter()
            .map(|c| wit::ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect(),
        finish_reason: match r.finish_reason {
            t::FinishReason::Stop => wit::FinishReason::Stop,
            t::FinishReason::Length => wit::FinishReason::Length,
            t::FinishReason::ToolCalls => wit::FinishReason::ToolCalls,
            t::FinishReason::ContentFilter => wit::FinishReason::ContentFilter,
            t::FinishReason::Other => wit::FinishReason::Other,
        },
        model: r.model,
        usage: wit::Usage {
            input_tokens: r.usage.input_tokens,
            output_tokens: r.usage.output_tokens,
        },
    }
}

fn error(e: t::LlmError) -> wit::Error {
    wit::Error {
        code: match e.code {
            t::ErrorCode::ModelNotGranted => wit::ErrorCode::ModelNotGranted,
            t::ErrorCode::BudgetExhausted => wit::ErrorCode::BudgetExhausted,
            t::ErrorCode::RateLimited => wit::ErrorCode::RateLimited,
            t::ErrorCode::ProviderUnavailable => wit::ErrorCode::ProviderUnavailable,
            t::ErrorCode::InvalidRequest => wit::ErrorCode::InvalidRequest,
        },
        message: e.message,
        retryable: e.retryable,
    }
}
