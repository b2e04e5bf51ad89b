//! The `llm` capability: roles ask a model through the host, within budgets the host enforces.
//!
//! A role names a model *alias* its agent is granted (`[agents.NAME.llm] models = [...]`);
//! which provider, URL, key and price stand behind it is town config (`[llm]`,
//! `store::llm`) the guest never sees. Each call is reserved against the agent's day and task
//! budgets before it is sent and settled with the real usage after (`store::budget`), and
//! returns a [`CallRecord`] for the handling's journal. The key lives in a [`Secret`] and is
//! scrubbed from everything that leaves here.
//!
//! - [`types`]: the WIT records in Rust.
//! - [`grant`]: the resolved grant ([`LlmGrant`]) and the path of one call.
//! - [`client`]: a provider's HTTP client, timeouts, retries and error mapping;
//!   [`openai`] and [`anthropic`] are the two wire formats, [`wire`] what they share.
//! - [`secret`]: the key's type and where it is read from.
//! - `host`: the WIT `llm` interface on the instance's state (conversions, recording).

pub mod anthropic;
pub mod client;
pub mod grant;
mod host;
pub mod openai;
pub mod secret;
pub mod types;
mod wire;

use std::sync::Arc;

use anyhow::Result;
use wasmtime::component::{HasSelf, Linker};

pub use grant::{CallRecord, LlmGrant, Model};
pub use secret::Secret;
pub use types::*;

use super::{parse_table, Capability, Grant};
use crate::runtime::bindings;
use crate::runtime::instance::State;
use crate::store::config::Config;
use crate::store::llm::LlmGrantConfig;

pub struct Llm;

impl Capability for Llm {
    fn name(&self) -> &'static str {
        "llm"
    }

    fn grant_example(&self, agent: &str) -> String {
        format!("[agents.{agent}.llm] models = [\"alias\"] (an alias of [llm.models])")
    }

    fn check(&self, agent: &str, table: &toml::Value) -> Result<()> {
        // The aliases were checked against [llm.models] when the file was loaded.
        parse_table::<LlmGrantConfig>(agent, self.name(), table).map(drop)
    }

    fn grant(&self, config: &Config, agent: &str, table: &toml::Value) -> Result<Grant> {
        let c: LlmGrantConfig = parse_table(agent, self.name(), table)?;
        Ok(Arc::new(LlmGrant::from_config(config, agent, &c)?))
    }

    fn probe(&self) -> Grant {
        Arc::new(LlmGrant::none("probe"))
    }

    fn describe(&self, grants: &super::Grants) -> Option<String> {
        grants.get::<LlmGrant>().map(|g| g.describe())
    }

    fn add_to_linker(&self, linker: &mut Linker<State>) -> Result<()> {
        // `llm` is new in 0.2.0: there is no 0.1.0 interface to link.
        bindings::tinytown::agent::llm::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
