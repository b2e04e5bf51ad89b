//! Capabilities: imports that act in the world, each linked only for agents granted it.
//!
//! A capability is one folder here, after wasmtime-wasi's one-module-per-interface and Spin's
//! factors: its grant config (the `[agents.NAME.<capability>]` table), its host implementation
//! and its `add_to_linker`. [`CAPABILITIES`] is the registry and the only place that knows the
//! set: config checking, linking, `tt plugin check`'s list of what a component needs, swap
//! validation and the world a scaffolded plugin is built against all ask it.
//!
//! Adding a capability means: its WIT interface (imported by world `agent-host` too), one folder
//! implementing [`Capability`], and one line in [`CAPABILITIES`]. A capability that blocks runs
//! its wait through `State::outside_guest`, which keeps the time out of the guest's deadline.

pub mod exec;
pub mod http;
pub mod llm;

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use wasmtime::component::Linker;

use super::instance::State;
use crate::store::config::Config;
use crate::store::error;

/// What one capability provides to the host.
pub trait Capability: Sync {
    /// The WIT interface (`tinytown:agent/<name>`) and the config table (`[agents.X.<name>]`).
    fn name(&self) -> &'static str;
    /// The config line that grants it, for hints: `[agents.AGENT.exec] allow = ["program"]`.
    fn grant_example(&self, agent: &str) -> String;
    /// Whether a component's import (`tinytown:agent/exec@0.2.0`, `wasi:http/types@0.2.6`)
    /// is this capability's: such an import needs the grant.
    fn imports(&self, import: &str) -> bool {
        import
            .strip_prefix("tinytown:agent/")
            .and_then(|rest| rest.split('@').next())
            == Some(self.name())
    }
    /// Parses and checks a grant table without acting on it (no files, no programs looked up).
    fn check(&self, agent: &str, table: &toml::Value) -> Result<()>;
    /// Resolves a grant for serving `agent` (programs found, directories made).
    fn grant(&self, config: &Config, agent: &str, table: &toml::Value) -> Result<Grant>;
    /// A grant that allows nothing, for linking a component just to see what it imports.
    fn probe(&self) -> Grant;
    fn add_to_linker(&self, linker: &mut Linker<State>) -> Result<()>;
    /// One line on what the granted capability lets the agent reach, for `tt status --deep`;
    /// `None` when `grants` do not grant it.
    fn describe(&self, _grants: &Grants) -> Option<String> {
        None
    }
}

/// The registry: every capability this host has.
pub static CAPABILITIES: &[&dyn Capability] = &[&exec::Exec, &http::Http, &llm::Llm];

pub fn by_name(name: &str) -> Option<&'static dyn Capability> {
    CAPABILITIES.iter().copied().find(|c| c.name() == name)
}

/// The capability a component's import belongs to, if any.
pub fn of_import(import: &str) -> Option<&'static dyn Capability> {
    CAPABILITIES.iter().copied().find(|c| c.imports(import))
}

/// The names of all capabilities, comma-separated.
pub fn names() -> String {
    CAPABILITIES
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One resolved grant; its capability's host code finds it by type ([`Grants::get`]).
pub type Grant = Arc<dyn Any + Send + Sync>;

/// What an agent's instance may do beyond handling messages: a resolved grant per capability.
#[derive(Clone, Default)]
pub struct Grants {
    by_name: BTreeMap<&'static str, Grant>,
}

impl Grants {
    /// No capability granted.
    pub fn none() -> Grants {
        Grants::default()
    }

    /// Every capability, each allowing nothing (for `tt plugin check`).
    pub fn probe() -> Grants {
        let mut g = Grants::none();
        for c in CAPABILITIES {
            g.by_name.insert(c.name(), c.probe());
        }
        g
    }

    /// The agent's grants from tinytown.toml, resolved. Errors name the table and the field.
    pub fn for_agent(config: &Config, agent: &str) -> Result<Grants> {
        let mut g = Grants::none();
        let Some(section) = config.agents.get(agent) else {
            return Ok(g);
        };
        for (name, table) in &section.grants {
            let cap = known(agent, name)?;
            g.by_name
                .insert(cap.name(), cap.grant(config, agent, table)?);
        }
        Ok(g)
    }

    /// Adds (or replaces) the grant of capability `name`. For hosts and tests that resolve a
    /// grant themselves.
    pub fn with(mut self, name: &'static str, grant: Grant) -> Grants {
        self.by_name.insert(name, grant);
        self
    }

    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The grant of type `T`, if that capability is granted.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.by_name
            .values()
            .find(|g| (***g).type_id() == TypeId::of::<T>())
            .and_then(|g| g.clone().downcast::<T>().ok())
    }

    /// One line per granted capability that can say what it lets the agent reach.
    pub fn describe(&self) -> Vec<String> {
        CAPABILITIES
            .iter()
            .filter_map(|c| Some(format!("{}: {}", c.name(), c.describe(self)?)))
            .collect()
    }

    /// Names of the granted capabilities.
    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }
}

fn known(agent: &str, name: &str) -> Result<&'static dyn Capability> {
    by_name(name).ok_or_else(|| {
        error::fail(
            format!(
                "[agents.{agent}.{}]: there is no capability `{}`",
                name.escape_debug(),
                name.escape_debug()
            ),
            format!(
                "the capabilities are: {}; an agent's other fields are role, plugin, nickname, \
                 config, limits and mode",
                names()
            ),
        )
    })
}

/// Checks every agent's grants in `config` (their tables parse; no capability is unknown),
/// without acting on any. Every `tt` command runs this after loading the config.
pub fn check_config(config: &Config) -> Result<()> {
    for (agent, section) in &config.agents {
        for (name, table) in &section.grants {
            known(agent, name)?.check(agent, table)?;
        }
    }
    Ok(())
}

/// Links the interfaces of the capabilities `grants` allows.
pub(super) fn add_granted_to_linker(linker: &mut Linker<State>, grants: &Grants) -> Result<()> {
    for c in CAPABILITIES {
        if grants.has(c.name()) {
            c.add_to_linker(linker)?;
        }
    }
    Ok(())
}

/// Parses a grant table into its config type; the error names the table and what is wrong.
pub fn parse_table<T: serde::de::DeserializeOwned>(
    agent: &str,
    name: &str,
    table: &toml::Value,
) -> Result<T> {
    table.clone().try_into::<T>().map_err(|e| {
        error::fail(
            format!("[agents.{agent}.{name}] is not valid: {}", e.message()),
            "fix the field named above; the README's configuration section lists them",
        )
    })
}
