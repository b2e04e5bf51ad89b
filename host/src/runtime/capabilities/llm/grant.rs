//! The resolved `[agents.NAME.llm]` grant ([`LlmGrant`]) and the path of one call through it:
//! alias, reservation, send, settlement, record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::client::Provider;
use super::secret::read_key;
use super::types::{ChatRequest, ChatResponse, ErrorCode, LlmError, Usage};
use crate::store::budget::{self, Ask, Budgets, Limits, Reservation};
use crate::store::config::Config;
use crate::store::error;
use crate::store::llm::{LlmGrantConfig, MAX_TOKENS};

/// Bytes of request per estimated input token when reserving. Real tokenisers give about four
/// bytes of English per token; the body's JSON syntax pads the estimate further, so the
/// reservation leans high and settlement gives the rest back.
const BYTES_PER_TOKEN: u64 = 4;

/// One alias as the agent may use it.
pub struct Model {
    pub alias: String,
    pub provider: Arc<Provider>,
    /// The provider's model name.
    pub model: String,
    pub max_tokens: u32,
    /// Per million tokens.
    pub input_price: f64,
    pub output_price: f64,
}

impl Model {
    /// Micro-units of `input` and `output` tokens, rounded up.
    pub fn cost(&self, input: u64, output: u64) -> u64 {
        (input as f64 * self.input_price + output as f64 * self.output_price).ceil() as u64
    }
}

/// What `Capability::grant` returns for `[agents.NAME.llm]`: the agent's aliases resolved to
/// providers (keys read, clients built) and its budgets.
pub struct LlmGrant {
    pub agent: String,
    pub models: BTreeMap<String, Model>,
    pub limits: Limits,
}

/// A record of one call, for the journal of the handling it belongs to. It holds no key:
/// everything that came from a provider passed through its scrub.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub agent: String,
    pub task: Option<String>,
    /// The alias the guest named; `provider` and `model` are what it resolved to (empty when
    /// it did not resolve).
    pub alias: String,
    pub provider: String,
    pub model: String,
    /// The guest's request and what it got back (a response or an error), as the WIT has them.
    pub request: Value,
    pub response: Value,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What the call cost, in micro-units of the prices' currency, and in that currency.
    pub cost_micro: u64,
    pub cost: f64,
    /// What was reserved before sending (tokens, micro-units); 0 without budgets.
    pub reserved_tokens: u64,
    pub reserved_cost: u64,
    pub attempts: u32,
    /// The provider's last HTTP status, if it answered.
    pub status: Option<u16>,
    pub ms: u64,
}

impl LlmGrant {
    /// Resolves the grant of `agent`: every alias to its provider, whose key is read now (from
    /// its variable or its 0600 file). Errors name the table and field.
    pub fn from_config(config: &Config, agent: &str, g: &LlmGrantConfig) -> Result<LlmGrant> {
        let t = format!("[agents.{agent}.llm]");
        config.llm.check_grant(&t, g).map_err(|e| {
            error::fail(e, "fix the field named above; see the README's LLM section")
        })?;
        let mut providers: BTreeMap<&str, Arc<Provider>> = BTreeMap::new();
        let mut models = BTreeMap::new();
        for alias in &g.models {
            let m = &config.llm.models[alias];
            let p = &config.llm.providers[&m.provider];
            let provider = match providers.get(m.provider.as_str()) {
                Some(p) => p.clone(),
                None => {
                    let key = read_key(
                        &config.dir,
                        &m.provider,
                        p.api_key_env.as_deref(),
                        p.api_key_file.as_deref(),
                    )?;
                    let made = Arc::new(Provider::new(&m.provider, p, key)?);
                    providers.insert(&m.provider, made.clone());
                    made
                }
            };
            models.insert(
                alias.clone(),
                Model {
                    alias: alias.clone(),
                    provider,
                    model: m.model.clone(),
                    max_tokens: m.max_tokens.unwrap_or(MAX_TOKENS),
                    input_price: m.input_price,
                    output_price: m.output_price,
                },
            );
        }
        Ok(LlmGrant {
            agent: agent.to_string(),
            models,
            limits: Limits {
                tokens_per_day: g.tokens_per_day,
                cost_per_day: g.cost_per_day.map(budget::micro),
                tokens_per_task: g.tokens_per_task,
                cost_per_task: g.cost_per_task.map(budget::micro),
            },
        })
    }

    /// A grant of nothing (for linking a component to see what it imports).
    pub fn none(agent: &str) -> LlmGrant {
        LlmGrant {
            agent: agent.to_string(),
            models: BTreeMap::new(),
            limits: Limits::default(),
        }
    }

    /// The aliases the agent may name.
    pub fn models(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    /// One line for `tt status --deep`: the aliases and the budgets.
    pub fn describe(&self) -> String {
        let mut s = format!("models {}", self.models().join(", "));
        let l = &self.limits;
        let mut b = Vec::new();
        if let Some(n) = l.tokens_per_day {
            b.push(format!("{n} tokens/day"));
        }
        if let Some(n) = l.cost_per_day {
            b.push(format!("{} /day", budget::amount(n)));
        }
        if let Some(n) = l.tokens_per_task {
            b.push(format!("{n} tokens/task"));
        }
        if let Some(n) = l.cost_per_task {
            b.push(format!("{} /task", budget::amount(n)));
        }
        if !b.is_empty() {
            s.push_str(&format!("; budgets {}", b.join(", ")));
        }
        s
    }

    /// Resolves the alias (not granted -> model-not-granted), reserves the worst case
    /// (estimated input tokens + max_tokens, and its cost) against the agent's day and the
    /// task's budgets, sends with retries, settles the real usage (or releases the reservation
    /// on failure). Returns the response and a record of the call for the journal (request and
    /// response as JSON, secrets redacted, provider/model, tokens, cost, ms).
    ///
    /// `budgets` is the town's ([`Budgets::of`]); `None` enforces and records no budget (a
    /// host without a town, tests of the providers). `task` is the task the handled message
    /// belongs to, if any: the task budgets apply only then. A call whose reservation cannot be
    /// checked (Redis away) is not sent: it fails as provider-unavailable, retryable.
    #[allow(clippy::result_large_err)]
    pub async fn chat(
        &self,
        budgets: Option<&Budgets>,
        agent: &str,
        task: Option<&str>,
        req: ChatRequest,
    ) -> Result<(ChatResponse, CallRecord), (LlmError, CallRecord)> {
        let started = Instant::now();
        let mut rec = CallRecord {
            agent: agent.to_string(),
            task: task.map(str::to_string),
            alias: req.model.clone(),
            provider: String::new(),
            model: String::new(),
            request: serde_json::to_value(&req).unwrap_or(Value::Null),
            response: Value::Null,
            input_tokens: 0,
            output_tokens: 0,
            cost_micro: 0,
            cost: 0.0,
            reserved_tokens: 0,
            reserved_cost: 0,
            attempts: 0,
            status: None,
            ms: 0,
        };
        // The record travels with the error too: every call, failed or not, is journaled.
        #[allow(clippy::result_large_err)]
        let fail = |mut rec: CallRecord, e: LlmError, provider: Option<&Provider>| {
            let e = match provider {
                Some(p) => LlmError {
                    message: p.scrub(&e.message),
                    ..e
                },
                None => e,
            };
            rec.response = serde_json::json!({ "error": e });
            rec.ms = started.elapsed().as_millis() as u64;
            Err((e, rec))
        };
        let Some(m) = self.models.get(&req.model) else {
            let e = LlmError::new(
                ErrorCode::ModelNotGranted,
                format!(
                    "model `{}` is not granted to agent `{agent}`; it may name: {}",
                    req.model.escape_debug(),
                    if self.models.is_empty() {
                        "(none)".into()
                    } else {
                        self.models().join(", ")
                    }
                ),
                false,
            );
            return fail(rec, e, None);
        };
        let p = &*m.provider;
        rec.provider = p.name.clone();
        rec.model = m.model.clone();
        let max_tokens = match req.params.max_tokens {
            Some(0) => {
                let e = LlmError::new(
                    ErrorCode::InvalidRequest,
                    "max-tokens is 0: ask for 1 or more, or none for the model's default",
                    false,
                );
                return fail(rec, e, Some(p));
            }
            Some(n) => n,
            None => m.max_tokens,
        };
        let body = match p.body(&m.model, &req, max_tokens) {
            Ok(b) => b,
            Err(e) => return fail(rec, e, Some(p)),
        };
        let estimate = (body.to_string().len() as u64).div_ceil(BYTES_PER_TOKEN);
        let reservation = match budgets {
            None => None,
            Some(b) => {
                let ask = Ask {
                    agent,
                    task,
                    model: &m.alias,
                    tokens: estimate + u64::from(max_tokens),
                    cost: m.cost(estimate, u64::from(max_tokens)),
                    hold_ms: p.worst_case().as_millis() as u64 + 60_000,
                };
                rec.reserved_tokens = ask.tokens;
                rec.reserved_cost = ask.cost;
                match b.reserve(&self.limits, &ask).await {
                    Ok(Ok(r)) => Some(r),
                    Ok(Err(x)) => {
                        // A day budget frees up tomorrow; a task's does not.
                        let e = LlmError::new(
                            ErrorCode::BudgetExhausted,
                            format!(
                                "{} of agent `{agent}` has no room for this call: {}",
                                x.budget, x.detail
                            ),
                            x.budget.ends_with("_day"),
                        );
                        return fail(rec, e, Some(p));
                    }
                    Err(err) => {
                        let e = LlmError::new(
                            ErrorCode::ProviderUnavailable,
                            format!(
                                "the budgets cannot be checked, so the call was not sent: {}",
                                error::one_line(&err)
                            ),
                            true,
                        );
                        return fail(rec, e, Some(p));
                    }
                }
            }
        };
        let sent = p.send(&body, req.response_format.is_some()).await;
        rec.attempts = sent.attempts;
        rec.status = sent.status;
        match sent.result {
            Ok((resp, reported)) => {
                let Usage {
                    input_tokens,
                    output_tokens,
                } = resp.usage;
                let (input, output) = if reported {
                    (u64::from(input_tokens), u64::from(output_tokens))
                } else {
                    // No usage in the answer: count what was reserved.
                    (estimate, u64::from(max_tokens))
                };
                let cost = m.cost(input, output);
                if let (Some(b), Some(r)) = (budgets, &reservation) {
                    settle(b, r, input, output, cost).await;
                }
                rec.input_tokens = input;
                rec.output_tokens = output;
                rec.cost_micro = cost;
                rec.cost = budget::amount(cost);
                rec.response = scrubbed(p, serde_json::to_value(&resp).unwrap_or(Value::Null));
                rec.ms = started.elapsed().as_millis() as u64;
                let resp = ChatResponse {
                    text: p.scrub(&resp.text),
                    ..resp
                };
                Ok((resp, rec))
            }
            Err(e) => {
                if let (Some(b), Some(r)) = (budgets, &reservation) {
                    if let Err(err) = b.release(r).await {
                        tracing::warn!(
                            agent,
                            "llm: releasing a budget hold failed (it expires by itself): {}",
                            error::one_line(&err)
                        );
                    }
                }
                fail(rec, e, Some(p))
            }
        }
    }
}

/// Settles, and says so in the log if Redis refuses: the call was made, its answer stands, and
/// the hold keeps counting until it expires.
async fn settle(b: &Budgets, r: &Reservation, input: u64, output: u64, cost: u64) {
    if let Err(err) = b.settle(r, input, output, cost).await {
        tracing::warn!(agent = %r.agent, "llm: settling a call's usage failed: {}", error::one_line(&err));
    }
}

/// A JSON value with the provider's key removed from every string in it.
fn scrubbed(p: &Provider, v: Value) -> Value {
    match serde_json::from_str(&p.scrub(&v.to_string())) {
        Ok(v) => v,
        Err(_) => Value::Null,
    }
}
