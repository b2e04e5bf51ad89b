//! Switching an agent's plugin, or starting its shadow, without pausing its mail.
//!
//! When the runner notices a new plugin recorded on its agent (a swap, a rollback, a promoted
//! shadow) or a new shadow, it does not load it in its own loop: a background job loads the
//! component (from the compiled-code cache), instantiates it and calls `init` with the agent's
//! config. Meanwhile the old plugin keeps handling mail. The runner switches between two
//! batches, once the job is done, to the ready instance: the only pause in handling is the
//! switch itself (an assignment), not the milliseconds of loading, instantiating and `init` (a
//! Python component's `init` takes tens of them). A shadow likewise starts comparing from the
//! first batch after it is ready. `tt bench swap` measures the pause.
//!
//! While a plugin serves, the job runs on a thread of its own, not on one of the runtime's
//! workers: instantiating a component and running its `init` are milliseconds of CPU without an
//! await, which would hold a worker the serving tasks need. (Running it at a lower CPU priority
//! was tried: it made no difference to `tt bench swap`, and with the whole test suite loading
//! the machine a swap test once waited two minutes for a preparation, likely starved.)
//!
//! A candidate that fails to load, instantiate or `init` here (it passed `tt swap`'s
//! validation, but this host's config or limits differ, or its `init` fails now) leaves the old
//! plugin serving: the host records the refusal (`Op::SwapRefused`: the agent's record goes back
//! to the plugin it serves, keeps the reason for `tt status`, and an event says it); its mail is
//! not dead-lettered for a plugin that never served. The first plugin of an agent (nothing
//! serving yet) is loaded when its first mail arrives, awaited, and instantiated on that first
//! message, and a shadow recorded before it is awaited too: there is no old one to keep
//! serving, and an `init` that refuses dead-letters the message with the reason. A candidate
//! made ready while the agent is idle takes the first batch that arrives.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Live, Runner};
use crate::runtime::builtin::{Prepared, Source};
use crate::runtime::{Grants, Instance, Lookup, Plugin, Runtime};
use crate::store::applier::Op;
use crate::store::limits::Limits;
use crate::store::model::Digest;
use crate::town::Town;

/// Plugin loads running at once on the runtime's blocking threads.
static LOADING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// A plugin being made ready off the serving path.
pub(super) struct Pending {
    done: oneshot::Receiver<Result<Ready>>,
    /// The job, when it runs as a task of the runtime; aborted when superseded. A job on a
    /// thread of its own runs to its end (bounded by the `init` deadline), its result dropped.
    task: Option<JoinHandle<()>>,
    /// The path it was started for, for the log.
    path: String,
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Superseded (another swap) or the runner is gone: nothing will switch to it.
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Pending {
    /// Runs `job` off the serving path: on a thread of its own when something serves
    /// (`background`), else as a task of the runtime (nothing else to keep the workers for).
    fn start(mut job: Job, background: bool) -> Pending {
        let (tx, done) = oneshot::channel();
        let path = job.path.clone();
        let handle = tokio::runtime::Handle::current();
        job.own_thread =
            background && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
        let own_thread = job.own_thread;
        let activity = job.activity.clone();
        let work = async move {
            let _ = tx.send(job.run().await);
            // An idle runner switches (or says why it does not) now, not with its next mail.
            activity.wake.notify_one();
        };
        let task = if own_thread {
            // The job's own awaits (Redis, timers) are driven by the runtime's workers.
            let spawned = std::thread::Builder::new()
                .name("tt-prepare".into())
                .spawn(move || handle.block_on(work));
            if let Err(e) = spawned {
                // `done` reports the job gone: the candidate is refused (and said) like one
                // that cannot start here; swapping it again tries again.
                tracing::warn!("cannot start a thread to prepare {path}: {e}");
            }
            None
        } else {
            Some(tokio::spawn(work))
        };
        Pending { done, task, path }
    }

    /// The result of the job in `slot` with the path it was started for: waited for when
    /// `wait`, else only if it is already there. The slot is emptied once the job answers.
    async fn take(slot: &mut Option<Pending>, wait: bool) -> Option<(String, Result<Ready>)> {
        let pending = slot.as_mut()?;
        let r = if wait {
            (&mut pending.done).await.map_err(drop)
        } else {
            match pending.done.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return None,
                r => r.map_err(drop),
            }
        };
        let path = slot.take().map(|mut p| std::mem::take(&mut p.path))?;
        let done = r.unwrap_or_else(|_| Err(anyhow::anyhow!("the job preparing {path} ended")));
        Some((path, done))
    }
}

/// A loaded plugin, with its instance already `init`-ed when another one was serving (or for
/// a shadow).
struct Ready {
    plugin: Plugin,
    instance: Option<Instance>,
    /// How a live plugin is set up for the agent (a shadow takes the live one's).
    prepared: Option<Prepared>,
}

/// What is being made ready.
enum Target {
    /// The agent's plugin; `live` is the digest serving now, if any: the same plugin is not
    /// instantiated again, and with none serving the instance is made on the first message.
    Live { live: Option<Digest> },
    /// A shadow, set up as the live plugin is.
    Shadow {
        grants: Grants,
        init_config: Vec<(String, String)>,
    },
}

/// What the background job needs.
struct Job {
    town: Arc<Town>,
    runtime: Arc<Runtime>,
    lookup: Arc<dyn Lookup>,
    peers: Arc<crate::host::PeerCache>,
    agent: String,
    path: String,
    limits: Limits,
    target: Target,
    /// The runner's: woken when the job is done.
    activity: Arc<crate::host::supervisor::Activity>,
    /// Runs on a thread of its own: loads right here, not on the runtime's blocking pool.
    own_thread: bool,
}

impl Job {
    async fn run(self) -> Result<Ready> {
        let (source, grants, init_config, prepared, live) = match self.target {
            Target::Live { live } => {
                let peers = self.peers.get(&self.town).await.unwrap_or_default();
                let p = crate::runtime::builtin::prepare(
                    &self.town.config,
                    &self.agent,
                    &self.path,
                    &peers,
                )?;
                let (s, g, c) = (p.source.clone(), p.grants.clone(), p.init_config.clone());
                (s, g, c, Some(p), live)
            }
            Target::Shadow {
                grants,
                init_config,
            } => {
                let source = Source::of(&self.town.config, &self.path)?;
                (source, grants, init_config, None, None)
            }
        };
        let plugin = if self.own_thread {
            self.runtime.load_source(&self.agent, &source, &grants)?
        } else {
            // A thousand agents getting their first mail at once would each take a blocking
            // thread (the pool grows to 512); a few loads at a time keep the threads few, and
            // a plugin compiled and linked once loads in a fraction of a millisecond after.
            let _turn = LOADING.acquire().await?;
            let (runtime, name, grants) =
                (self.runtime.clone(), self.agent.clone(), grants.clone());
            tokio::task::spawn_blocking(move || runtime.load_source(&name, &source, &grants))
                .await??
        };
        let first = prepared.is_some() && live.is_none();
        if first || live == Some(plugin.digest) {
            return Ok(Ready {
                plugin,
                instance: None,
                prepared,
            });
        }
        let made = self
            .runtime
            .instantiate(
                &plugin,
                &self.agent,
                &self.limits,
                &grants,
                &init_config,
                self.lookup.clone(),
            )
            .await;
        let instance = match made {
            Ok(i) => Some(i),
            // A shadow that cannot start records that as its decision on each message.
            Err(f) if prepared.is_none() => {
                tracing::warn!(agent = %self.agent, "shadow {} cannot start: {}", self.path, f.reason);
                None
            }
            Err(f) => {
                return Err(crate::store::error::fail(
                    format!(
                        "{} cannot serve agent `{}` on this host: {}",
                        self.path, self.agent, f.reason
                    ),
                    "the old plugin keeps serving; fix the candidate and swap again",
                ))
            }
        };
        Ok(Ready {
            plugin,
            instance,
            prepared,
        })
    }
}

impl Runner {
    fn job(&self, path: &str, target: Target) -> Job {
        Job {
            town: self.town.clone(),
            runtime: self.runtime.clone(),
            lookup: self.lookup.clone(),
            peers: self.peers.clone(),
            agent: self.name.clone(),
            path: path.to_string(),
            limits: self.limits,
            target,
            activity: self.activity.clone(),
            own_thread: false,
        }
    }

    /// Starts making the recorded plugin ready (superseding one still being made ready). No
    /// plugin at all is decided here and now.
    pub(super) fn start_switch(&mut self, wanted: Option<(String, Option<String>)>, role: &str) {
        self.pending = None;
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
        let live = self.live.as_ref().map(|l| l.plugin.digest);
        let job = self.job(&path, Target::Live { live });
        self.pending = Some(Pending::start(job, live.is_some()));
    }

    /// Switches to the plugin made ready by [`Runner::start_switch`] once it is ready (waiting
    /// for it only when nothing serves yet). On failure keeps the old plugin (if any), records
    /// the refusal and says why; an agent that cannot be served is `blocked`, with the reason
    /// and its fix.
    pub(super) async fn finish_switch(&mut self) {
        let wait = self.live.is_none();
        let Some((path, done)) = Pending::take(&mut self.pending, wait).await else {
            return;
        };
        let ready = match done {
            Ok(ready) => ready,
            Err(e) => return self.refuse_switch(&e).await,
        };
        if let Some(prepared) = ready.prepared {
            self.grants = prepared.grants;
            self.init_config = prepared.init_config;
        }
        if self
            .live
            .as_ref()
            .is_some_and(|l| l.plugin.digest == ready.plugin.digest)
        {
            self.set_blocked(None);
            return;
        }
        tracing::info!(agent = %self.name, plugin = %path, digest = %ready.plugin.digest.short(), "plugin loaded");
        let mut old = self.live.take();
        let shadow = old.as_mut().and_then(|l| l.shadow.take());
        self.live = Some(Live {
            path,
            plugin: ready.plugin,
            instance: ready.instance,
            shadow,
        });
        self.activity.unserved.store(false, Ordering::Relaxed);
        self.set_blocked(None);
        // Its memory is returned off the serving path.
        if old.is_some() {
            tokio::task::spawn_blocking(move || drop(old));
        }
    }

    /// The recorded plugin cannot serve here. With nothing serving the agent is blocked;
    /// otherwise the old plugin keeps serving and the record goes back to it, with the reason.
    async fn refuse_switch(&mut self, e: &anyhow::Error) {
        let mut msg = crate::store::error::one_line(e);
        if let Some(hint) = crate::store::error::user_error(e).and_then(|u| u.hint.clone()) {
            msg = format!("{msg} ({hint})");
        }
        if self.load_error.as_deref() != Some(&msg) {
            tracing::error!(agent = %self.name, "cannot load plugin: {msg}");
        }
        let Some(live) = self.live.as_ref() else {
            return self.set_blocked(Some(msg));
        };
        self.load_error = Some(msg.clone());
        let Some((wanted, Some(digest))) = &self.wanted else {
            return;
        };
        let op = Op::SwapRefused {
            name: self.name.clone(),
            plugin: wanted.clone(),
            digest: digest.clone(),
            kept: live.path.clone(),
            kept_digest: live.plugin.digest.to_string(),
            reason: msg,
        };
        if let Err(e) = self.town.db.apply_ops(&self.name, vec![op]).await {
            tracing::warn!(agent = %self.name, "could not record the refused swap: {e:#}");
        }
    }

    /// Starts (`Some`) or stops running a candidate beside the live plugin. A shadow recorded
    /// before the first plugin loaded is waited for by [`Runner::finish_shadow`].
    pub(super) fn start_shadow(&mut self, path: Option<String>) {
        self.pending_shadow = None;
        let Some(path) = path else {
            if let Some(live) = self.live.as_mut() {
                live.shadow = None;
            }
            return;
        };
        let target = Target::Shadow {
            grants: self.grants.clone(),
            init_config: self.init_config.clone(),
        };
        let job = self.job(&path, target);
        self.pending_shadow = Some(Pending::start(job, true));
    }

    /// Puts the shadow made ready by [`Runner::start_shadow`] beside the live plugin once it is
    /// ready (waiting for it when `wait`).
    pub(super) async fn finish_shadow(&mut self, wait: bool) {
        let Some((path, done)) = Pending::take(&mut self.pending_shadow, wait).await else {
            return;
        };
        match done {
            Ok(ready) => {
                tracing::info!(agent = %self.name, plugin = %path, digest = %ready.plugin.digest.short(), "shadow loaded");
                if let Some(live) = self.live.as_mut() {
                    live.shadow = Some((ready.plugin, ready.instance));
                }
            }
            Err(e) => {
                let e = crate::store::error::one_line(&e);
                tracing::error!(agent = %self.name, "cannot load shadow: {e}")
            }
        }
    }
}
