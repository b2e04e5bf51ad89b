//! The `exec` capability: run an allow-listed program for an agent.
//!
//! Only agents whose `[agents.NAME.exec]` table grants it get this import linked. The program
//! named by the guest is resolved (a bare name through PATH, a path relative to the town) and
//! canonicalised, so symlinks and `..` cannot smuggle in anything outside the allow-list
//! ([`run`]). The call blocks the agent's own handling thread only: other agents keep running,
//! and the time spent is not charged against the guest's call deadline ([`host`]).
//!
//! - [`grant`]: the config table and its resolved form.
//! - [`run`]: starting, waiting for and capping one program.
//! - [`host`]: the WIT `exec` interface on the instance's state.

mod grant;
mod host;
mod run;

use std::sync::Arc;

use anyhow::Result;
use wasmtime::component::{HasSelf, Linker};

pub use grant::{ExecConfig, ExecGrant, OUTPUT_BYTES, TIMEOUT_MS};

use super::{parse_table, Capability, Grant};
use crate::runtime::bindings;
use crate::runtime::instance::State;
use crate::store::config::Config;

pub struct Exec;

impl Capability for Exec {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn grant_example(&self, agent: &str) -> String {
        format!("[agents.{agent}.exec] allow = [\"program\"]")
    }

    fn check(&self, agent: &str, table: &toml::Value) -> Result<()> {
        parse_table::<ExecConfig>(agent, self.name(), table).map(drop)
    }

    fn grant(&self, config: &Config, agent: &str, table: &toml::Value) -> Result<Grant> {
        let c: ExecConfig = parse_table(agent, self.name(), table)?;
        Ok(Arc::new(ExecGrant::from_config(config, agent, &c)?))
    }

    fn probe(&self) -> Grant {
        let tmp = std::env::temp_dir();
        Arc::new(ExecGrant {
            allow: vec![],
            env: vec![],
            workdir: tmp.clone(),
            town_dir: tmp,
            timeout: std::time::Duration::from_secs(1),
            output_bytes: 0,
        })
    }

    fn add_to_linker(&self, linker: &mut Linker<State>) -> Result<()> {
        bindings::tinytown::agent::exec::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
