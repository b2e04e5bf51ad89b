//! `[llm]` in tinytown.toml: the model providers a town may call, the model aliases roles name,
//! and the `[agents.NAME.llm]` grant that gives an agent some aliases and its budgets.
//!
//! This is config only: which provider, URL, key source and price stand behind an alias. The
//! capability (`runtime::capabilities::llm`) resolves it (reads the keys, builds the clients)
//! when a host serves the agent, and `store::budget` enforces the budgets. The grant table is
//! checked here, together with the section, because an alias only means something against
//! `[llm.models]`: a grant naming an alias that does not exist is refused when the file is
//! loaded, by every `tt` command, not when a host first serves the agent.
//!
//! A key is never written in the file: `api_key = "..."` is refused (without echoing it), and a
//! key comes from an environment variable or a file only its owner can read. Neither is read
//! here, so `tt status` works on a machine that does not hold the keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::config::AgentSection;

/// Most retries of one call a provider may be configured with.
pub const MAX_RETRIES: u32 = 10;
/// A provider's whole-request timeout when `timeout_ms` is not set.
pub const TIMEOUT_MS: u64 = 120_000;
/// A provider's connect timeout when `connect_timeout_ms` is not set.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Retries of a call when `retries` is not set.
pub const RETRIES: u32 = 2;
/// A model's answer cap when neither the request nor `[llm.models.X] max_tokens` sets one.
pub const MAX_TOKENS: u32 = 1024;

/// `[llm]`: providers by name, models by alias.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSection {
    pub providers: BTreeMap<String, ProviderConfig>,
    pub models: BTreeMap<String, ModelConfig>,
}

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions (OpenAI, Ollama, llama.cpp's server, vLLM, LM Studio,
    /// OpenRouter): `POST {base_url}/chat/completions`.
    Openai,
    /// Anthropic's Messages API: `POST {base_url}/v1/messages`.
    Anthropic,
}

/// `[llm.providers.NAME]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// `http://` or `https://`; for `openai` it includes the API's path (`.../v1`).
    pub base_url: String,
    /// The environment variable that holds the key (read by the host serving the agent).
    pub api_key_env: Option<String>,
    /// A file (mode 0600, relative to the town) whose first line is the key.
    pub api_key_file: Option<PathBuf>,
    /// Refused: present only so the error can say where a key belongs.
    #[serde(default, skip_serializing)]
    pub api_key: Option<Refused>,
    /// The whole request, connect to last byte, per attempt.
    pub timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    /// Retries after a 429, a 5xx or a failed connection (backoff, honouring Retry-After).
    pub retries: Option<u32>,
}

/// A value that was present in the file and is thrown away unread (a key written in the toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

impl<'de> Deserialize<'de> for Refused {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Refused, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Refused)
    }
}

/// `[llm.models.ALIAS]`: what a role's alias means. Prices are per million tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub provider: String,
    /// The provider's name for the model (`gpt-4o-mini`, `llama3.2`, `claude-sonnet-4-5`).
    pub model: String,
    /// The answer cap when a request does not set one.
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub input_price: f64,
    #[serde(default)]
    pub output_price: f64,
}

/// `[agents.NAME.llm]`: the aliases an agent may name, and its budgets (each optional; absent
/// means unlimited). Costs are in the currency of the prices.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmGrantConfig {
    pub models: Vec<String>,
    /// Per UTC day, over all the agent's calls.
    pub tokens_per_day: Option<u64>,
    pub cost_per_day: Option<f64>,
    /// Per task, over the agent's calls while handling that task.
    pub tokens_per_task: Option<u64>,
    pub cost_per_task: Option<f64>,
}

impl LlmSection {
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty() && self.models.is_empty()
    }

    /// Checks the section; the error names the table and the field and says what to do.
    pub fn check(&self) -> Result<(), String> {
        for (name, p) in &self.providers {
            let t = format!("[llm.providers.{}]", name.escape_debug());
            check_name(&t, name)?;
            p.check(&t)?;
        }
        for (alias, m) in &self.models {
            let t = format!("[llm.models.{}]", alias.escape_debug());
            check_name(&t, alias)?;
            if !self.providers.contains_key(&m.provider) {
                return Err(format!(
                    "{t} provider = {:?}: there is no [llm.providers.{}]; add it, or name one \
                     of: {}",
                    m.provider,
                    m.provider.escape_debug(),
                    list(self.providers.keys())
                ));
            }
            if m.model.trim().is_empty() {
                return Err(format!(
                    "{t} model is empty: give the provider's model name"
                ));
            }
            if m.max_tokens == Some(0) {
                return Err(format!(
                    "{t} max_tokens = 0: use 1 or more, or leave it out"
                ));
            }
            for (field, v) in [
                ("input_price", m.input_price),
                ("output_price", m.output_price),
            ] {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!(
                        "{t} {field} = {v}: a price per million tokens is 0 or more"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks every agent's `[agents.NAME.llm]` against the section.
    pub fn check_grants(&self, agents: &BTreeMap<String, AgentSection>) -> Result<(), String> {
        for (agent, section) in agents {
            let Some(table) = section.grants.get("llm") else {
                continue;
            };
            let t = format!("[agents.{agent}.llm]");
            let g: LlmGrantConfig = table
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| format!("{t} is not valid: {}", e.message()))?;
            self.check_grant(&t, &g)?;
        }
        Ok(())
    }

    /// Checks one grant (`t` names its table in errors).
    pub fn check_grant(&self, t: &str, g: &LlmGrantConfig) -> Result<(), String> {
        if g.models.is_empty() {
            return Err(format!(
                "{t} models = []: list the aliases of [llm.models] the agent may name, or remove \
                 the table"
            ));
        }
        for alias in &g.models {
            if !self.models.contains_key(alias) {
                return Err(format!(
                    "{t} models: there is no [llm.models.{}]; add it, or name one of: {}",
                    alias.escape_debug(),
                    list(self.models.keys())
                ));
            }
        }
        for (field, v) in [
            ("tokens_per_day", g.tokens_per_day),
            ("tokens_per_task", g.tokens_per_task),
        ] {
            if v == Some(0) {
                return Err(format!(
                    "{t} {field} = 0: use 1 or more, or leave it out for no limit"
                ));
            }
        }
        for (field, v) in [
            ("cost_per_day", g.cost_per_day),
            ("cost_per_task", g.cost_per_task),
        ] {
            if let Some(v) = v {
                if !v.is_finite() || v <= 0.0 {
                    return Err(format!(
                        "{t} {field} = {v}: use an amount above 0, or leave it out for no limit"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl ProviderConfig {
    fn check(&self, t: &str) -> Result<(), String> {
        if self.api_key.is_some() {
            return Err(format!(
                "{t} api_key: a key is never written in tinytown.toml; remove it and use \
                 api_key_env = \"VAR\" (an environment variable) or api_key_file = \"path\" (a \
                 file of mode 0600)"
            ));
        }
        if self.api_key_env.is_some() && self.api_key_file.is_some() {
            return Err(format!(
                "{t} has both api_key_env and api_key_file: keep one"
            ));
        }
        if self
            .api_key_env
            .as_deref()
            .is_some_and(|v| v.trim().is_empty())
        {
            return Err(format!(
                "{t} api_key_env is empty: name an environment variable"
            ));
        }
        let url = self.base_url.trim();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(format!(
                "{t} base_url = {:?}: use an http:// or https:// URL, e.g. \
                 \"http://127.0.0.1:11434/v1\" (Ollama) or \"https://api.anthropic.com\"",
                self.base_url
            ));
        }
        for (field, v) in [
            ("timeout_ms", self.timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if v == Some(0) {
                return Err(format!("{t} {field} = 0: use 1 or more milliseconds"));
            }
        }
        if let Some(r) = self.retries.filter(|r| *r > MAX_RETRIES) {
            return Err(format!("{t} retries = {r}: use at most {MAX_RETRIES}"));
        }
        Ok(())
    }
}

/// Provider names and aliases follow agent names: letters, digits, `-` and `_`.
fn check_name(t: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{t}: use 1-64 letters, digits, `-` or `_` for the name"
        ))
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(|s| s.as_str()).collect();
    if v.is_empty() {
        "(none defined)".into()
    } else {
        v.join(", ")
    }
}
