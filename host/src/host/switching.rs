//! Switching a runner's plugin and shadow (between two messages), and saying why an agent
//! cannot be served.

use std::sync::atomic::Ordering;

use anyhow::Result;
use redis::AsyncCommands;

use super::{Live, Runner};
use crate::town::Town;

impl Runner {
    pub(super) fn set_blocked(&mut self, why: Option<String>) {
        self.load_error = why.clone();
        *self
            .activity
            .blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Loads the agent's recorded plugin (a file or a built-in, set up by
    /// [`crate::runtime::builtin::prepare`]); on failure keeps the old one (if any) and says
    /// why. An agent that cannot be served is `blocked`, with the reason and its fix.
    pub(super) async fn switch_plugin(
        &mut self,
        wanted: Option<(String, Option<String>)>,
        role: &str,
    ) {
        let Some((path, _digest)) = wanted else {
            // No plugin: a mailbox people read (role `mailbox`), or an agent nothing serves.
            let why = crate::store::builtin::why_unplugged(&self.name, role);
            self.activity
                .unserved
                .store(why.is_none(), Ordering::Relaxed);
            if why.is_some() && self.load_error != why {
                tracing::info!(agent = %self.name, "not served: {}", why.as_deref().unwrap_or(""));
            }
            self.set_blocked(why);
            return;
        };
        let peers = self.peers.get(&self.town).await.unwrap_or_default();
        let config = &self.town.config;
        let loaded = match crate::runtime::builtin::prepare(config, &self.name, &path, &peers) {
            Err(e) => Ok(Err(e)),
            Ok(prepared) => {
                let (runtime, name) = (self.runtime.clone(), self.name.clone());
                tokio::task::spawn_blocking(move || {
                    let plugin = runtime.load_source(&name, &prepared.source, &prepared.grants);
                    plugin.map(|p| (p, prepared))
                })
                .await
            }
        };
        match loaded {
            Ok(Ok((plugin, prepared))) => {
                self.grants = prepared.grants;
                self.init_config = prepared.init_config;
                if self
                    .live
                    .as_ref()
                    .is_some_and(|l| l.plugin.digest == plugin.digest)
                {
                    self.set_blocked(None);
                    return;
                }
                tracing::info!(agent = %self.name, plugin = %path, digest = %plugin.digest.short(), "plugin loaded");
                let shadow = self.live.take().and_then(|l| l.shadow);
                self.live = Some(Live {
                    plugin,
                    instance: None,
                    shadow,
                });
                self.activity.unserved.store(false, Ordering::Relaxed);
                self.set_blocked(None);
            }
            Ok(Err(e)) => {
                let mut msg = crate::store::error::one_line(&e);
                if let Some(hint) = crate::store::error::user_error(&e).and_then(|u| u.hint.clone())
                {
                    msg = format!("{msg} ({hint})");
                }
                if self.load_error.as_deref() != Some(&msg) {
                    tracing::error!(agent = %self.name, "cannot load plugin: {msg}");
                }
                if self.live.is_none() {
                    self.set_blocked(Some(msg));
                } else {
                    self.load_error = Some(msg);
                }
            }
            Err(e) => tracing::error!(agent = %self.name, "plugin loader panicked: {e}"),
        }
    }

    /// Starts or stops running a candidate beside the live plugin.
    pub(super) async fn switch_shadow(&mut self, path: Option<String>) {
        let Some(path) = path else {
            if let Some(live) = self.live.as_mut() {
                live.shadow = None;
            }
            return;
        };
        let source = match crate::runtime::builtin::Source::of(&self.town.config, &path) {
            Ok(s) => s,
            Err(e) => {
                let e = crate::store::error::one_line(&e);
                return tracing::error!(agent = %self.name, "cannot load shadow: {e}");
            }
        };
        let (runtime, grants, name) =
            (self.runtime.clone(), self.grants.clone(), self.name.clone());
        match tokio::task::spawn_blocking(move || runtime.load_source(&name, &source, &grants))
            .await
        {
            Ok(Ok(plugin)) => {
                tracing::info!(agent = %self.name, plugin = %path, digest = %plugin.digest.short(), "shadow loaded");
                if let Some(live) = self.live.as_mut() {
                    live.shadow = Some((plugin, None));
                }
            }
            Ok(Err(e)) => {
                tracing::error!(agent = %self.name, "cannot load shadow: {}", crate::store::error::one_line(&e))
            }
            Err(e) => tracing::error!(agent = %self.name, "shadow loader panicked: {e}"),
        }
    }
}

/// Marks `member` as in hand while the agent's plugin loads, counting a mark left by a
/// previous process that died doing the same (see `HandleCtx::count_failures`).
pub(super) async fn mark_loading(town: &Town, agent: &str, member: &str) -> Result<()> {
    let mut c = town.db.conn.clone();
    let key = town.db.keys.attempts(agent);
    let current: Option<String> = c.hget(&key, "!current").await?;
    if current.as_deref() == Some(member) {
        let _: u64 = c.hincr(&key, format!("{member}!starts"), 1).await?;
    }
    Ok(c.hset::<_, _, _, ()>(&key, "!current", member).await?)
}

/// The plugin loaded: the mark of [`mark_loading`] goes (handling marks it again).
pub(super) async fn loaded(town: &Town, agent: &str, member: &str) {
    let mut c = town.db.conn.clone();
    let key = town.db.keys.attempts(agent);
    if c.hget::<_, _, Option<String>>(&key, "!current")
        .await
        .ok()
        .flatten()
        .as_deref()
        == Some(member)
    {
        let _: Result<(), _> = c.hdel(&key, "!current").await;
    }
}
