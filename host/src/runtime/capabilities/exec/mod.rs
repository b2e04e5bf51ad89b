//! The `exec` capability: run an allow-listed program for an agent.
//!
//! Only agents whose `[agents.NAME.exec]` table grants it get this import linked. The program
//! named by the guest is resolved (a bare name through PATH, a path relative to the town) and
//! canonicalised, so symlinks and `..` cannot smuggle in anything outside the allow-list
//! ([`run`]); `run-in` (0.2.0) names a directory inside the work area, resolved the same way.
//! Waiting on a program holds no thread (a pidfd and tokio pipes), other agents keep running,
//! and the time spent is not charged against the guest's call deadline ([`host`]).
//!
//! Every program runs confined unless its grant says `sandbox = "off"` ([`sandbox`]): Landlock
//! and a seccomp filter, applied in the child before exec ([`spawn`]) and inherited by everything it
//! starts, keep it to its work directory, the system's programs and libraries, the paths its
//! grant lists and the network its grant allows.
//!
//! - [`grant`]: the config table and its resolved form.
//! - [`sandbox`]: the resolved confinement of a grant; [`presets`] for coding CLIs.
//! - [`ruleset`]: the Landlock ruleset; [`seccomp`]: the socket filter; [`confine`]: the
//!   child's step that applies them and the limits.
//! - [`spawn`]: starting one program without copying the host; [`run`]: resolving,
//!   waiting for and capping it.
//! - [`host`]: the WIT `exec` interface on the instance's state.

mod confine;
mod grant;
mod host;
pub mod presets;
mod ruleset;
mod run;
mod sandbox;
mod seccomp;
mod spawn;

use std::sync::Arc;

use anyhow::Result;
use wasmtime::component::{HasSelf, Linker};

pub use grant::{ConfinedExec, ExecConfig, ExecGrant, OUTPUT_BYTES, TIMEOUT_MS};
pub use ruleset::kernel_abi;
pub use run::resolve;
pub use sandbox::{ChildLimits, Confinement, Network, NetworkConfig, Sandbox, DEFAULT_ABI};

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
        let c: ExecConfig = parse_table(agent, self.name(), table)?;
        Sandbox::check(agent, &c)
    }

    fn grant(&self, config: &Config, agent: &str, table: &toml::Value) -> Result<Grant> {
        let c: ExecConfig = parse_table(agent, self.name(), table)?;
        Ok(Arc::new(ConfinedExec::from_config(config, agent, &c)?))
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

    fn describe(&self, grants: &super::Grants) -> Option<String> {
        describe(grants)
    }

    fn add_to_linker(&self, linker: &mut Linker<State>) -> Result<()> {
        let wrap = |e: wasmtime::Error| anyhow::anyhow!("{e}");
        bindings::tinytown::agent::exec::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
            .map_err(wrap)?;
        bindings::v0_1::tinytown::agent::exec::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
            .map_err(wrap)
    }
}

/// How the programs of an agent with these grants are confined (one line), for `tt plugin
/// check`, `tt doctor` and `tt status --deep`; `None` when exec is not granted.
pub fn describe(grants: &super::Grants) -> Option<String> {
    if let Some(g) = grants.get::<ConfinedExec>() {
        return Some(g.describe());
    }
    grants
        .get::<ExecGrant>()
        .map(|g| Sandbox::default_for(&g).describe())
}
