//! The `http` capability: the standard `wasi:http/outgoing-handler`, so any language's HTTP
//! client built for WASI works (JavaScript's `fetch`, Rust's `wstd`/`waki`, Python's
//! `urllib` shims), linked only for agents with an `[agents.NAME.http]` grant.
//!
//! Every request goes through [`gate::Gate`]: its origin must match a rule of the grant
//! ([`rules`], which documents the matching), its addresses must pass the SSRF guard
//! ([`guard`]), its timeouts are capped and its response cut at `max_response_bytes`. A
//! redirect is a new request the guest makes, so it is checked again. A denial names the rule
//! to add (in the host's log and the call's record; the guest gets `HttpRequestDenied`).
//!
//! - [`rules`]: the allow-list and its matching; [`guard`]: addresses; [`gate`]: the hook.

pub mod gate;
pub mod guard;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;
use wasmtime::component::Linker;

use super::{parse_table, Capability, Grant, Grants};
use crate::runtime::instance::State;
use crate::store::config::Config;
use crate::store::error;
pub use rules::{Origin, Rule};

/// Default cap on a response body.
pub const RESPONSE_BYTES: u64 = 4 << 20;
/// Default time to the first byte of a response, and between its bytes.
pub const TIMEOUT_MS: u64 = 30_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[agents.NAME.http]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Origins the agent may reach: `https://api.example.com`, `https://*.example.com`,
    /// `http://127.0.0.1:8080`.
    pub allow: Vec<String>,
    pub max_response_bytes: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// The resolved grant.
#[derive(Debug, Clone)]
pub struct HttpGrant {
    pub rules: Vec<Rule>,
    pub max_response_bytes: u64,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl HttpGrant {
    pub fn from_config(agent: &str, c: &HttpConfig) -> Result<HttpGrant> {
        let mut rules = Vec::new();
        for text in &c.allow {
            rules.push(Rule::parse(text).map_err(|why| {
                error::fail(
                    format!("[agents.{agent}.http] allow: {why}"),
                    "write each rule as scheme://host[:port]; the README's http section explains \
                     the wildcard and port rules",
                )
            })?);
        }
        if c.timeout_ms == Some(0) || c.max_response_bytes == Some(0) {
            return Err(error::fail(
                format!("[agents.{agent}.http]: timeout_ms and max_response_bytes must be above 0"),
                "leave them out for the defaults (30000 ms, 4 MiB)",
            ));
        }
        Ok(HttpGrant {
            rules,
            max_response_bytes: c.max_response_bytes.unwrap_or(RESPONSE_BYTES),
            timeout: Duration::from_millis(c.timeout_ms.unwrap_or(TIMEOUT_MS)),
            connect_timeout: CONNECT_TIMEOUT,
        })
    }
}

pub struct Http;

impl Capability for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn grant_example(&self, agent: &str) -> String {
        format!("[agents.{agent}.http] allow = [\"https://api.example.com\"]")
    }

    fn imports(&self, import: &str) -> bool {
        import.starts_with("wasi:http/")
    }

    fn check(&self, agent: &str, table: &toml::Value) -> Result<()> {
        let c: HttpConfig = parse_table(agent, self.name(), table)?;
        HttpGrant::from_config(agent, &c).map(|_| ())
    }

    fn grant(&self, _config: &Config, agent: &str, table: &toml::Value) -> Result<Grant> {
        let c: HttpConfig = parse_table(agent, self.name(), table)?;
        Ok(Arc::new(HttpGrant::from_config(agent, &c)?))
    }

    fn probe(&self) -> Grant {
        Arc::new(HttpGrant {
            rules: vec![],
            max_response_bytes: RESPONSE_BYTES,
            timeout: Duration::from_millis(TIMEOUT_MS),
            connect_timeout: CONNECT_TIMEOUT,
        })
    }

    fn describe(&self, grants: &Grants) -> Option<String> {
        let g = grants.get::<HttpGrant>()?;
        let rules: Vec<&str> = g.rules.iter().map(|r| r.text.as_str()).collect();
        Some(if rules.is_empty() {
            "no origin allowed".into()
        } else {
            format!(
                "{}; responses up to {} KiB, {} ms",
                rules.join(", "),
                g.max_response_bytes >> 10,
                g.timeout.as_millis()
            )
        })
    }

    fn add_to_linker(&self, linker: &mut Linker<State>) -> Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
