//! A plugin: a component compiled, checked against the contract and linked for an agent's
//! grants, ready to instantiate; and `tt plugin check`'s report on a file.

use std::path::{Path, PathBuf};

use anyhow::Result;
use wasmtime::component::InstancePre;

use super::bindings::{WIT_VERSION, WIT_VERSIONS};
use super::builtin::Source;
use super::capabilities::{self, Grants};
use super::engine::{check_is_component, Linked, Runtime};
use super::instance::State;
use crate::store::error;
use crate::store::model::Digest;
use crate::store::stamp::Stamp;

/// A compiled plugin, ready to instantiate with a given grant set.
#[derive(Clone)]
pub struct Plugin {
    pub digest: Digest,
    pub path: PathBuf,
    pub imports: Vec<String>,
    pre: InstancePre<State>,
    has_init: bool,
}

impl Plugin {
    pub fn has_init(&self) -> bool {
        self.has_init
    }

    pub(super) fn pre(&self) -> &InstancePre<State> {
        &self.pre
    }
}

impl Runtime {
    /// Loads a plugin for an agent with `grants`: compiles, links, and checks its exports.
    /// A file unchanged since it was last loaded for the same capabilities is not read again.
    pub fn load(&self, agent: &str, path: &Path, grants: &Grants) -> Result<Plugin> {
        // Stamped before reading: a change made while it is read gets a stamp of its own.
        let stamp = Stamp::of(path).filter(|s| s.settled);
        if let Some(stamp) = &stamp {
            let known = self
                .digests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(path)
                .filter(|(text, _)| *text == stamp.text)
                .map(|(_, digest)| *digest);
            if let Some(plugin) = known.and_then(|d| self.linked_plugin(d, path, grants)) {
                return Ok(plugin);
            }
        }
        let bytes = std::fs::read(path).map_err(|e| {
            error::fail(
                format!("plugin {} of agent `{agent}`: {e}", path.display()),
                "build the plugins (`bash plugins/build.sh`) or fix the plugin path",
            )
        })?;
        let plugin = self.load_bytes(agent, path, &bytes, grants)?;
        if let Some(stamp) = stamp {
            self.digests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path.to_path_buf(), (stamp.text, plugin.digest));
        }
        Ok(plugin)
    }

    /// The plugin of `digest` when it was linked before for `grants`.
    fn linked_plugin(&self, digest: Digest, path: &Path, grants: &Grants) -> Option<Plugin> {
        self.already_linked(digest, grants).map(|l| Plugin {
            digest,
            path: path.to_path_buf(),
            imports: l.imports,
            pre: l.pre,
            has_init: l.has_init,
        })
    }

    /// Loads a file or a built-in (compiled into the cache on first use, like a file).
    pub fn load_source(&self, agent: &str, source: &Source, grants: &Grants) -> Result<Plugin> {
        match source {
            Source::File(path) => self.load(agent, path, grants),
            Source::Builtin(b) => {
                self.load_bytes(agent, Path::new(&b.reference()), b.bytes, grants)
            }
        }
    }

    /// [`Runtime::load`] of bytes; `path` names them in errors.
    pub fn load_bytes(
        &self,
        agent: &str,
        path: &Path,
        bytes: &[u8],
        grants: &Grants,
    ) -> Result<Plugin> {
        let (digest, component, _) = self.compile(path, bytes)?;
        if let Some(plugin) = self.linked_plugin(digest, path, grants) {
            return Ok(plugin);
        }
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        for name in &imports {
            check_import(agent, path, name, grants)?;
        }
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        if !exports.iter().any(|e| e == "handle") {
            return Err(error::fail(
                format!(
                    "{} does not export `handle`: it is not a tinytown:agent component \
                     (exports: {})",
                    path.display(),
                    if exports.is_empty() {
                        "none".into()
                    } else {
                        exports.join(", ")
                    }
                ),
                "build it against a world of wit/agent.wit (`agent`, `agent-exec`, `agent-llm`)",
            ));
        }
        let linker = self.linker(grants)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            error::fail(
                format!(
                    "{} cannot be linked for agent `{agent}`: {}",
                    path.display(),
                    e.root_cause()
                ),
                format!("it must be built against tinytown:agent@{WIT_VERSION} (wit/agent.wit)"),
            )
        })?;
        let has_init = exports.iter().any(|e| e == "init");
        let linked = Linked {
            imports: imports.clone(),
            pre: pre.clone(),
            has_init,
        };
        self.keep_linked(digest, grants, linked);
        Ok(Plugin {
            digest,
            path: path.to_path_buf(),
            imports,
            pre,
            has_init,
        })
    }
}

/// Checks one import of a component against what this host provides and `grants` allow.
fn check_import(agent: &str, path: &Path, name: &str, grants: &Grants) -> Result<()> {
    if let Some(rest) = name.strip_prefix("tinytown:agent/") {
        let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
        if !WIT_VERSIONS.contains(&version) {
            return Err(error::fail(
                format!(
                    "{} imports tinytown:agent/{iface}@{version}; this host implements \
                     tinytown:agent@{}",
                    path.display(),
                    WIT_VERSIONS.join(" and @")
                ),
                "rebuild the plugin against this repository's wit/agent.wit",
            ));
        }
        if matches!(iface, "types" | "host") {
            return Ok(());
        }
        if iface == "llm" && version == "0.1.0" {
            return Err(error::fail(
                format!(
                    "{} imports tinytown:agent/llm@0.1.0, which never existed",
                    path.display()
                ),
                "rebuild the plugin against this repository's wit/agent.wit",
            ));
        }
        let Some(cap) = capabilities::by_name(iface) else {
            return Err(error::fail(
                format!(
                    "{} imports unknown interface tinytown:agent/{iface}",
                    path.display()
                ),
                "rebuild the plugin against this repository's wit/agent.wit",
            ));
        };
        if grants.has(cap.name()) {
            return Ok(());
        }
        Err(error::fail(
            format!(
                "agent `{agent}`: plugin {} imports the `{iface}` capability, which is not \
                 granted to it",
                path.display()
            ),
            format!("grant it in tinytown.toml: {}", cap.grant_example(agent)),
        ))
    } else if name.starts_with("wasi:") {
        match capabilities::of_import(name) {
            Some(cap) if !grants.has(cap.name()) => Err(error::fail(
                format!(
                    "agent `{agent}`: plugin {} imports `{name}`, the `{}` capability, which is \
                     not granted to it",
                    path.display(),
                    cap.name()
                ),
                format!("grant it in tinytown.toml: {}", cap.grant_example(agent)),
            )),
            _ => Ok(()),
        }
    } else {
        Err(error::fail(
            format!(
                "{} imports `{name}`, which no tinytown host provides",
                path.display()
            ),
            "a role may import only tinytown:agent/* and wasi:* interfaces",
        ))
    }
}

/// What `tt plugin check` says about a file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub path: String,
    pub digest: String,
    pub bytes: usize,
    /// `agent`, `agent-exec`, `agent-llm` or `agent-exec-llm`: the world it fits.
    pub world: String,
    pub wit_version: String,
    /// Capabilities it needs granted (names from the capability registry).
    pub capabilities: Vec<String>,
    pub wasi_imports: Vec<String>,
    pub exports_init: bool,
    /// Where the compiled code was cached, if a town's cache was at hand.
    pub cached_at: Option<String>,
    pub compile_ms: u128,
    /// With `--agent`: how that agent's grants meet what the plugin imports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentFit>,
}

/// What an agent is granted of the capabilities a plugin imports, and what each grant allows
/// (for `exec`, its confinement).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentFit {
    pub name: String,
    /// `capability: what it allows`, for each granted capability the plugin imports.
    pub granted: Vec<String>,
    /// Capabilities the plugin imports that the agent is not granted.
    pub missing: Vec<String>,
}

impl CheckReport {
    /// Fills [`CheckReport::agent`] from `agent`'s grants as a host would resolve them.
    pub fn fit(
        &mut self,
        config: &crate::store::config::Config,
        agent: &str,
    ) -> anyhow::Result<()> {
        if !config.agents.contains_key(agent) {
            return Err(error::fail(
                format!("agent `{agent}` is not declared in tinytown.toml"),
                format!("add an [agents.{agent}] table, or check the name"),
            ));
        }
        super::capabilities::check_config(config)?;
        let grants = super::Grants::for_agent(config, agent)?;
        let described = grants.describe();
        let (mut granted, mut missing) = (Vec::new(), Vec::new());
        for cap in &self.capabilities {
            if grants.has(cap) {
                let prefix = format!("{cap}: ");
                granted.extend(described.iter().filter(|d| d.starts_with(&prefix)).cloned());
            } else {
                missing.push(cap.clone());
            }
        }
        self.agent = Some(AgentFit {
            name: agent.to_string(),
            granted,
            missing,
        });
        Ok(())
    }
}

/// Checks that `path` is a component of our world and precompiles it into `cache_dir`.
pub fn check(
    path: &std::path::Path,
    cache_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<CheckReport> {
    let bytes = std::fs::read(path).map_err(|e| {
        error::fail(
            format!("{}: {e}", path.display()),
            "check the path of the plugin file",
        )
    })?;
    check_bytes(path, &bytes, cache_dir)
}

/// [`check`] of bytes (a built-in's); `path` names them.
pub fn check_bytes(
    path: &std::path::Path,
    bytes: &[u8],
    cache_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<CheckReport> {
    check_is_component(path, bytes)?;
    let runtime = Runtime::new(cache_dir.clone(), false)?;
    let started = std::time::Instant::now();
    // Every capability granted (allowing nothing), so the report can say which ones it needs.
    let plugin = runtime.load_bytes("check", path, bytes, &Grants::probe())?;
    let compile_ms = started.elapsed().as_millis();
    let ours: Vec<&String> = plugin
        .imports
        .iter()
        .filter(|i| i.starts_with("tinytown:agent/"))
        .collect();
    let mut capabilities: Vec<String> = Vec::new();
    for i in &plugin.imports {
        if let Some(c) = capabilities::of_import(i) {
            if !capabilities.iter().any(|n| n == c.name()) {
                capabilities.push(c.name().to_string());
            }
        }
    }
    let wit_version = ours
        .first()
        .and_then(|i| i.split_once('@'))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| WIT_VERSION.to_string());
    let cached_at = cache_dir.map(|d| d.display().to_string());
    Ok(CheckReport {
        path: path.display().to_string(),
        digest: plugin.digest.to_string(),
        bytes: bytes.len(),
        world: world_of(&capabilities),
        wit_version,
        capabilities,
        agent: None,
        wasi_imports: plugin
            .imports
            .iter()
            .filter(|i| i.starts_with("wasi:"))
            .cloned()
            .collect(),
        exports_init: plugin.has_init(),
        cached_at,
        compile_ms,
    })
}

/// The guest world a component with these capabilities fits: `agent`, `agent-exec`,
/// `agent-llm` or `agent-exec-llm` (`http` is WASI's, not a world of ours).
fn world_of(capabilities: &[String]) -> String {
    let mut world = String::from("agent");
    for cap in ["exec", "llm"] {
        if capabilities.iter().any(|c| c == cap) {
            world.push('-');
            world.push_str(cap);
        }
    }
    world
}
