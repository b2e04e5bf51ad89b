//! Changing an agent's policy while the town runs: swap, rollback, shadow.
//!
//! A candidate is validated here first, with the agent's own grants: it must compile, link,
//! instantiate and pass `init` with the agent's config. Only then is it recorded on the agent;
//! running hosts pick it up between two messages (a message in flight finishes on the old
//! version), and every handling's event names the digest that decided it. The compiled code
//! lands in the town's cache, so hosts load it in milliseconds.
//!
//! Shadow mode runs a candidate beside the live plugin on the same messages: its actions are
//! recorded, never applied, and `tt shadow report` compares the two.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use crate::runtime::builtin::Peers;
use crate::runtime::{NoTown, Plugin, Runtime};
use crate::store::applier::Op;
use crate::store::config::Config;
use crate::store::error;
use crate::store::keys::CONDUCTOR;
use crate::store::model::Digest;
use crate::store::streams;
use crate::town::Town;

/// Loads, links and instantiates `plugin` (a path or `builtin:NAME`) as `agent` would run it,
/// with the grants and config a host would give it, `init` included.
pub fn validate(town: &Config, agent: &str, plugin: &str, peers: &Peers) -> Result<Plugin> {
    let runtime = Runtime::new(Some(town.state_dir().join("cache")), false)?;
    let prepared = crate::runtime::builtin::prepare(town, agent, plugin, peers)?;
    let grants = &prepared.grants;
    let loaded = runtime.load_source(agent, &prepared.source, grants)?;
    let limits = town.limits_for(agent);
    runtime
        .instantiate_blocking(
            &loaded,
            agent,
            &limits,
            grants,
            &prepared.init_config,
            Arc::new(NoTown),
        )
        .map_err(|f| {
            error::fail(
                format!("{plugin} cannot serve agent `{agent}`: {}", f.reason),
                "the old plugin keeps serving; fix the candidate and swap again",
            )
        })?;
    Ok(loaded)
}

/// What a recorded plugin names, for [`swap`]: a built-in as it is, a file resolved against
/// the town.
fn recorded_path(town: &Town, plugin: &str) -> PathBuf {
    match crate::store::builtin::referenced(plugin) {
        Some(_) => PathBuf::from(plugin),
        None => town.config.resolve(Path::new(plugin)),
    }
}

/// The path as the town records it: relative to the town directory when inside it.
fn recorded(town: &Town, path: &Path) -> Result<(PathBuf, String)> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let full = full.canonicalize().map_err(|e| {
        error::fail(
            format!("plugin {}: {e}", path.display()),
            "check the path of the plugin file",
        )
    })?;
    let shown = match town
        .config
        .dir
        .canonicalize()
        .ok()
        .and_then(|d| full.strip_prefix(d).ok().map(Path::to_path_buf))
    {
        Some(rel) => rel.display().to_string(),
        None => full.display().to_string(),
    };
    Ok((full, shown))
}

/// Validates `path`, then makes it `agent`'s live plugin (or its shadow).
pub async fn swap(town: &Town, agent: &str, path: &Path, shadow: bool) -> Result<Digest> {
    swap_judged(town, agent, path, shadow, None).await
}

/// [`swap`], recording what the swap was judged on (a gated swap's replay summary) with it.
pub async fn swap_judged(
    town: &Town,
    agent: &str,
    path: &Path,
    shadow: bool,
    judged: Option<String>,
) -> Result<Digest> {
    town.need_agent(agent).await?;
    let text = path.to_string_lossy().into_owned();
    // A built-in is recorded by its name, a file by its path.
    let (full, shown) = match crate::store::builtin::referenced(&text) {
        Some(_) => (text.clone(), text),
        None => {
            let (full, shown) = recorded(town, path)?;
            (full.display().to_string(), shown)
        }
    };
    let peers = super::builtin_peers(town).await?;
    let plugin = {
        let (config, a) = (town.config.clone(), agent.to_string());
        tokio::task::spawn_blocking(move || validate(&config, &a, &full, &peers)).await??
    };
    let (name, digest) = (agent.to_string(), plugin.digest.to_string());
    let op = if shadow {
        Op::Shadow {
            name,
            plugin: Some(shown),
            digest: Some(digest),
        }
    } else {
        Op::AgentPlugin {
            name,
            plugin: shown,
            digest,
            judged,
        }
    };
    town.db.apply_human(CONDUCTOR, vec![op]).await?;
    Ok(plugin.digest)
}

/// Swaps back to the plugin the agent ran before its last swap.
pub async fn rollback(town: &Town, agent: &str) -> Result<(String, Digest)> {
    let a = town.need_agent(agent).await?;
    let previous = a.previous.ok_or_else(|| {
        error::fail(
            format!("agent `{agent}` has not been swapped; nothing to roll back to"),
            "tt status --deep shows each agent's plugin",
        )
    })?;
    let digest = swap(town, agent, &recorded_path(town, &previous), false).await?;
    Ok((previous, digest))
}

/// Makes the shadow the live plugin.
pub async fn promote(town: &Town, agent: &str) -> Result<(String, Digest)> {
    let a = town.need_agent(agent).await?;
    let shadow = a.shadow.ok_or_else(|| no_shadow(agent))?;
    let digest = swap(town, agent, &recorded_path(town, &shadow), false).await?;
    stop_shadow_op(town, agent).await?;
    Ok((shadow, digest))
}

pub async fn stop_shadow(town: &Town, agent: &str) -> Result<()> {
    let a = town.need_agent(agent).await?;
    a.shadow.ok_or_else(|| no_shadow(agent))?;
    stop_shadow_op(town, agent).await?;
    Ok(())
}

async fn stop_shadow_op(town: &Town, agent: &str) -> Result<()> {
    let op = Op::Shadow {
        name: agent.to_string(),
        plugin: None,
        digest: None,
    };
    town.db.apply_human(CONDUCTOR, vec![op]).await?;
    Ok(())
}

fn no_shadow(agent: &str) -> anyhow::Error {
    error::of_kind(
        error::ErrorKind::Conflict,
        format!("agent `{agent}` has no shadow plugin"),
        format!("start one: tt swap {agent} PLUGIN --shadow"),
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub msg: String,
    pub live: String,
    pub shadow: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    pub agent: String,
    pub shadow: Option<String>,
    pub shadow_digest: Option<String>,
    pub compared: u64,
    pub agreed: u64,
    pub differed: Vec<Decision>,
}

pub async fn report(town: &Town, agent: &str) -> Result<ShadowReport> {
    let a = town.need_agent(agent).await?;
    let mut c = town.db.conn.clone();
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(town.db.keys.shadow(agent))
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await?;
    let mut r = ShadowReport {
        agent: agent.to_string(),
        shadow: a.shadow,
        shadow_digest: a.shadow_digest,
        compared: 0,
        agreed: 0,
        differed: Vec::new(),
    };
    for e in streams::entries(&v) {
        let f = e.text_map();
        r.compared += 1;
        if f.get("agree").map(String::as_str) == Some("1") {
            r.agreed += 1;
        } else {
            let get = |k: &str| f.get(k).cloned().unwrap_or_default();
            r.differed.push(Decision {
                msg: get("msg"),
                live: get("live"),
                shadow: get("shadow"),
            });
        }
    }
    Ok(r)
}
