//! Switching an agent's plugin without pausing its mail.
//!
//! When the runner notices a new plugin recorded on its agent (a swap, a rollback, a promoted
//! shadow), it does not load it in its own loop: a background task loads the component (from
//! the compiled-code cache), and, when another plugin is already serving, instantiates it and
//! calls `init` with the agent's config. Meanwhile the old plugin keeps handling mail. The
//! runner switches between two batches, once the task is done, to the ready instance: the only
//! pause in handling is the switch itself (an assignment), not the milliseconds of loading,
//! instantiating and `init` (a Python component's `init` takes tens of them). `tt bench swap`
//! measures the pause.
//!
//! A candidate that fails to load, instantiate or `init` here (it passed `tt swap`'s
//! validation, but this host's config or limits differ, or its `init` fails now) leaves the old
//! plugin serving and says why; its mail is not dead-lettered for a plugin that never served.
//! The first plugin of an agent (nothing serving yet) is loaded by the runner itself when its
//! first mail arrives (`switching.rs`): there is no old one to keep serving, and an `init`
//! that refuses dead-letters the message with the reason. A candidate made ready while the
//! agent is idle takes the first batch that arrives.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use tokio::task::JoinHandle;

use super::{Live, Runner};
use crate::runtime::builtin::Prepared;
use crate::runtime::{Instance, Lookup, Plugin, Runtime};
use crate::store::limits::Limits;
use crate::store::model::Digest;
use crate::town::Town;

/// A plugin being made ready off the serving path.
pub(super) struct Pending {
    job: JoinHandle<Result<Ready>>,
    /// The path it was started for, for the log.
    path: String,
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Superseded (another swap) or the runner is gone: nothing will switch to it.
        self.job.abort();
    }
}

/// A loaded plugin, with its instance already `init`-ed when another one was serving.
struct Ready {
    plugin: Plugin,
    instance: Option<Instance>,
    prepared: Prepared,
}

/// What the background task needs.
struct Job {
    town: Arc<Town>,
    runtime: Arc<Runtime>,
    lookup: Arc<dyn Lookup>,
    peers: Arc<crate::host::PeerCache>,
    agent: String,
    path: String,
    limits: Limits,
    /// The digest serving now, if any: the same plugin is not instantiated again.
    live: Option<Digest>,
}

impl Job {
    async fn run(self) -> Result<Ready> {
        let peers = self.peers.get(&self.town).await.unwrap_or_default();
        let prepared =
            crate::runtime::builtin::prepare(&self.town.config, &self.agent, &self.path, &peers)?;
        let plugin = {
            let (runtime, name) = (self.runtime.clone(), self.agent.clone());
            let (source, grants) = (prepared.source.clone(), prepared.grants.clone());
            tokio::task::spawn_blocking(move || runtime.load_source(&name, &source, &grants))
                .await??
        };
        if self.live.is_none_or(|d| d == plugin.digest) {
            return Ok(Ready {
                plugin,
                instance: None,
                prepared,
            });
        }
        let instance = self
            .runtime
            .instantiate(
                &plugin,
                &self.agent,
                &self.limits,
                &prepared.grants,
                &prepared.init_config,
                self.lookup.clone(),
            )
            .await
            .map_err(|f| {
                crate::store::error::fail(
                    format!(
                        "{} cannot serve agent `{}` on this host: {}",
                        self.path, self.agent, f.reason
                    ),
                    "the old plugin keeps serving; fix the candidate and swap again",
                )
            })?;
        Ok(Ready {
            plugin,
            instance: Some(instance),
            prepared,
        })
    }
}

impl Runner {
    /// Starts making the recorded plugin at `path` ready beside the one serving (superseding
    /// one still being made ready).
    pub(super) fn start_switch(&mut self, path: String) {
        let job = Job {
            town: self.town.clone(),
            runtime: self.runtime.clone(),
            lookup: self.lookup.clone(),
            peers: self.peers.clone(),
            agent: self.name.clone(),
            path: path.clone(),
            limits: self.limits,
            live: self.live.as_ref().map(|l| l.plugin.digest),
        };
        self.pending = Some(Pending {
            job: tokio::spawn(job.run()),
            path,
        });
    }

    /// Switches to the plugin made ready by [`Runner::start_switch`] once it is ready (waiting
    /// for it only when nothing serves yet). On failure keeps the old plugin (if any) and says
    /// why; an agent that cannot be served is `blocked`, with the reason and its fix.
    pub(super) async fn finish_switch(&mut self) {
        let ready = self
            .pending
            .as_ref()
            .is_some_and(|p| self.live.is_none() || p.job.is_finished());
        if !ready {
            return;
        }
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let path = std::mem::take(&mut pending.path);
        let done = (&mut pending.job).await;
        match done {
            Ok(Ok(Ready {
                plugin,
                instance,
                prepared,
            })) => {
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
                    instance,
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
            Err(e) => tracing::error!(agent = %self.name, "plugin loader failed: {e}"),
        }
    }
}
