//! One agent's loop: its lease (exclusive agents), its plugin and shadow (switched between two
//! batches, the new plugin made ready beforehand: [`switch`]), and its mailbox: our own leftovers first, then stale entries of dead hosts, then
//! new mail, urgent before normal. Each batch goes to [`super::handling`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::watch;

mod switch;

use super::handling::HandleCtx;
use super::supervisor::Activity;
use crate::runtime::{Grants, Instance, Lookup, Plugin, Runtime};
use crate::store::applier::{Fence, Op};
use crate::store::conn::Conn;
use crate::store::keys::GROUP;
use crate::store::limits::{Limits, READ_BATCH};
use crate::store::model::{AgentState, Stream};
use crate::store::streams::{self, Entry};
use crate::town::Town;

/// How long one mailbox read blocks; also the longest a stop request waits for an idle agent.
pub(super) const READ_BLOCK: Duration = Duration::from_millis(250);

/// The live plugin of an agent and its instance, and a shadow candidate if there is one.
pub(super) struct Live {
    /// The plugin as recorded on the agent (a path or a built-in role's reference).
    pub(super) path: String,
    pub(super) plugin: Plugin,
    pub(super) instance: Option<Instance>,
    pub(super) shadow: Option<(Plugin, Option<Instance>)>,
}

/// One message in a batch.
pub(super) struct Delivery {
    pub(super) stream: String,
    pub(super) kind: Stream,
    pub(super) entry: Entry,
    /// Came back from a pending list (restart or reclaim), so it may have failed before.
    pub(super) redelivered: bool,
}

pub(super) struct Runner {
    town: Arc<Town>,
    runtime: Arc<Runtime>,
    lookup: Arc<dyn Lookup>,
    name: String,
    consumer: String,
    /// `<host>/<instance>`: who this process is in the leases of exclusive agents.
    holder: String,
    activity: Arc<Activity>,
    stop: watch::Receiver<bool>,
    reads: Conn,
    limits: Limits,
    grants: Grants,
    init_config: Vec<(String, String)>,
    live: Option<Live>,
    /// The recorded plugin being made ready off the serving path ([`switch`]).
    pending: Option<switch::Pending>,
    /// The recorded shadow being made ready.
    pending_shadow: Option<switch::Pending>,
    /// Plugin path and digest recorded for the agent when we last looked.
    wanted: Option<(String, Option<String>)>,
    /// The same for its shadow.
    wanted_shadow: Option<String>,
    /// Read our own pending entries first (left by a previous run of this host).
    recovering: bool,
    /// Serve only while holding the agent's lease (`mode = "exclusive"`).
    exclusive: bool,
    /// The lease we hold (`<host>/<instance>:<token>`), and when we last renewed it.
    lease: Option<(String, Instant)>,
    last_claim: Instant,
    /// Where the next XAUTOCLAIM of each stream (urgent, inbox) goes on: "0-0" after a full pass.
    claim_cursor: [String; 2],
    load_error: Option<String>,
}

impl Runner {
    /// `consumer` is the host name (the consumer in the mailbox groups); `holder` is this
    /// process in exclusive agents' leases, `<host>/<instance>`.
    pub(super) async fn new(
        town: Arc<Town>,
        runtime: Arc<Runtime>,
        lookup: Arc<dyn Lookup>,
        name: &str,
        (consumer, holder): (&str, &str),
        activity: Arc<Activity>,
        stop: watch::Receiver<bool>,
    ) -> Result<Runner> {
        let grants = Grants::for_agent(&town.config, name)?;
        let exclusive = town
            .config
            .agents
            .get(name)
            .is_some_and(|a| a.mode == crate::store::config::ServeMode::Exclusive);
        let reads = town.db.dedicated(READ_BLOCK).await?;
        let town_lease = town.config.host.lease();
        Ok(Runner {
            limits: town.config.limits_for(name),
            init_config: town.config.init_config(name),
            grants,
            reads,
            town,
            runtime,
            lookup,
            name: name.to_string(),
            consumer: consumer.to_string(),
            holder: holder.to_string(),
            activity,
            stop,
            live: None,
            pending: None,
            pending_shadow: None,
            wanted: None,
            wanted_shadow: None,
            recovering: true,
            exclusive,
            lease: None,
            // The first pass over the pending lists comes right after our own are resumed.
            last_claim: Instant::now()
                .checked_sub(town_lease)
                .unwrap_or_else(Instant::now),
            claim_cursor: ["0-0".into(), "0-0".into()],
            load_error: None,
        })
    }

    pub(super) async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        while !*self.stop.borrow() && !self.activity.done.load(Ordering::Relaxed) {
            match self.step().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    // Redis went away, refused something, or our lease was taken over: keep
                    // the messages (they stay pending), try again, starting with them.
                    self.lease = None;
                    self.recovering = true;
                    tracing::warn!(agent = %self.name, "{}; retrying in {:?}", crate::store::error::one_line(&e), backoff);
                    self.activity.busy.store(false, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        if let Some((holder, _)) = self.lease.take() {
            let _ = self.town.db.release_lease(&self.name, &holder).await;
        }
        self.activity.done.store(true, Ordering::Relaxed);
    }

    /// For an exclusive agent: true while this host holds its lease (taking or renewing it).
    async fn hold_lease(&mut self) -> Result<bool> {
        if !self.exclusive {
            return Ok(true);
        }
        let lease = self.town.config.host.lease();
        if self
            .lease
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < lease / 3)
        {
            return Ok(true);
        }
        let previous = self.lease.as_ref().map(|(h, _)| h.as_str());
        let held = self
            .town
            .db
            .lease(&self.name, &self.holder, lease, previous)
            .await?;
        if held.is_some() && self.lease.is_none() {
            tracing::info!(agent = %self.name, holder = held.as_deref().unwrap_or(""), "took the agent's lease");
        }
        self.lease = held.map(|h| (h, Instant::now()));
        self.activity
            .standby
            .store(self.lease.is_none(), Ordering::Relaxed);
        Ok(self.lease.is_some())
    }

    /// One round: check the agent's state and plugin, read a batch, handle it, apply it.
    async fn step(&mut self) -> Result<()> {
        let Some(agent) = self.town.agent(&self.name).await? else {
            // Pruned: nothing left to serve.
            self.unload();
            self.activity.done.store(true, Ordering::Relaxed);
            return Ok(());
        };
        if !agent.state.is_served() {
            self.unload();
            self.activity.empty_reads.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(READ_BLOCK).await;
            return Ok(());
        }
        let wanted = agent.plugin.clone().map(|p| (p, agent.digest.clone()));
        if wanted != self.wanted || (self.live.is_none() && self.pending.is_none()) {
            self.wanted = wanted.clone();
            self.start_switch(wanted, &agent.role);
        }
        // Made ready in the background: the old plugin serves until the new one can. With
        // nothing serving yet, both the plugin and a shadow recorded with it are awaited.
        let first = self.live.is_none();
        self.finish_switch().await;
        if agent.shadow != self.wanted_shadow && self.live.is_some() {
            self.wanted_shadow = agent.shadow.clone();
            self.start_shadow(agent.shadow.clone());
        }
        self.finish_shadow(first).await;
        if self.live.is_none() {
            // No usable plugin: the mail waits in the mailbox.
            self.activity.empty_reads.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(READ_BLOCK).await;
            return Ok(());
        }
        if !self.hold_lease().await? {
            // Another host serves this agent; its mail is theirs.
            if let Some(l) = self.live.as_mut() {
                l.instance = None;
            }
            self.activity.empty_reads.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(READ_BLOCK).await;
            return Ok(());
        }
        let batch = self.read().await?;
        if batch.is_empty() {
            self.activity.empty_reads.fetch_add(1, Ordering::Relaxed);
            if agent.state == AgentState::Closing
                && self.town.mailbox_depth(&self.name).await? == (0, 0)
            {
                let op = Op::AgentState {
                    name: self.name.clone(),
                    state: AgentState::Cold,
                    from: Some(vec![AgentState::Closing]),
                };
                self.town.db.apply_ops(&self.name, vec![op]).await?;
            }
            return Ok(());
        }
        self.activity.busy.store(true, Ordering::Relaxed);
        self.activity.empty_reads.store(0, Ordering::Relaxed);
        let n = batch.len() as u64;
        self.handle_batch(batch).await?;
        self.activity.handled.fetch_add(n, Ordering::Relaxed);
        self.activity.busy.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Drops the plugin and its shadow (stopped or pruned); they load again when served.
    fn unload(&mut self) {
        self.live = None;
        self.pending = None;
        self.pending_shadow = None;
        self.wanted_shadow = None;
    }

    fn set_blocked(&mut self, why: Option<String>) {
        self.load_error = why.clone();
        *self
            .activity
            .blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Reads the next batch: our own leftovers first, then stale entries of dead hosts, then new
    /// mail, urgent before normal.
    async fn read(&mut self) -> Result<Vec<Delivery>> {
        let keys = &self.town.db.keys;
        let streams = [
            (keys.urgent(&self.name), Stream::Urgent),
            (keys.inbox(&self.name), Stream::Inbox),
        ];
        let lease = self.town.config.host.lease();
        // A pass over the pending lists goes on from its cursor until it has seen them all.
        let mid_pass = self.claim_cursor.iter().any(|c| c != "0-0");
        if !self.recovering && (mid_pass || self.last_claim.elapsed() >= lease / 2) {
            self.last_claim = Instant::now();
            let mut out = Vec::new();
            for (i, (stream, kind)) in streams.iter().enumerate() {
                let v: redis::Value = redis::cmd("XAUTOCLAIM")
                    .arg(stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(lease.as_millis() as u64)
                    .arg(&self.claim_cursor[i])
                    .arg("COUNT")
                    .arg(READ_BATCH)
                    .query_async(&mut self.reads)
                    .await?;
                let (next, entries) = streams::autoclaim_reply(&v);
                self.claim_cursor[i] = next;
                out.extend(entries.into_iter().map(|entry| Delivery {
                    stream: stream.clone(),
                    kind: *kind,
                    entry,
                    redelivered: true,
                }));
            }
            if !out.is_empty() {
                tracing::info!(agent = %self.name, n = out.len(), "reclaimed messages of a host that stopped answering");
                return Ok(out);
            }
        }
        let id = if self.recovering { "0" } else { ">" };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(READ_BATCH);
        if !self.recovering {
            cmd.arg("BLOCK").arg(READ_BLOCK.as_millis() as u64);
        }
        cmd.arg("STREAMS")
            .arg(&streams[0].0)
            .arg(&streams[1].0)
            .arg(id)
            .arg(id);
        let v: redis::Value = cmd.query_async(&mut self.reads).await?;
        let mut out = Vec::new();
        for (stream, entries) in streams::read_reply(&v) {
            let kind = if stream == streams[0].0 {
                Stream::Urgent
            } else {
                Stream::Inbox
            };
            out.extend(entries.into_iter().map(|entry| Delivery {
                stream: stream.clone(),
                kind,
                entry,
                redelivered: self.recovering,
            }));
        }
        out.sort_by_key(|d| d.kind != Stream::Urgent);
        if self.recovering && out.is_empty() {
            self.recovering = false;
        }
        if self.recovering && !out.is_empty() {
            tracing::info!(agent = %self.name, n = out.len(), "resuming messages left in hand by a previous run");
        }
        Ok(out)
    }

    /// Handles a batch on a blocking thread (keeping the leases fresh meanwhile) and applies it.
    async fn handle_batch(&mut self, batch: Vec<Delivery>) -> Result<()> {
        let Some(live) = self.live.take() else {
            return Ok(());
        };
        let ids: Vec<(String, String)> = batch
            .iter()
            .map(|d| (d.stream.clone(), d.entry.id.clone()))
            .collect();
        let ctx = HandleCtx {
            town: self.town.clone(),
            runtime: self.runtime.clone(),
            lookup: self.lookup.clone(),
            agent: self.name.clone(),
            limits: self.limits,
            grants: self.grants.clone(),
            init_config: self.init_config.clone(),
            journal: Default::default(),
            fence: self.lease.as_ref().map(|(holder, _)| Fence {
                agent: self.name.clone(),
                holder: holder.clone(),
            }),
        };
        // Its own task: the refresh below goes on while the guest waits or computes.
        let mut job = tokio::spawn(async move { ctx.handle_all(live, batch).await });
        let lease = self.town.config.host.lease();
        let mut refresh = tokio::time::interval(lease / 3);
        refresh.tick().await;
        let (live, result) = loop {
            tokio::select! {
                done = &mut job => break done?,
                _ = refresh.tick() => {
                    refresh_leases(&self.town, &self.name, &self.consumer, &ids).await;
                    if self.exclusive {
                        let held = self.lease.as_ref().map(|(h, _)| h.as_str());
                        if let Ok(None) = self.town.db.lease(&self.name, &self.holder, lease, held).await {
                            tracing::warn!(agent = %self.name, "lost the agent's lease while handling");
                        }
                    }
                }
            }
        };
        self.live = Some(live);
        result
    }
}

/// Resets the idle time of entries in hand, so no other host reclaims a healthy handling.
async fn refresh_leases(town: &Town, agent: &str, consumer: &str, ids: &[(String, String)]) {
    let mut c = town.db.conn.clone();
    for (stream, id) in ids {
        let r: Result<redis::Value, _> = redis::cmd("XCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(id)
            .arg("JUSTID")
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            tracing::warn!(agent = %agent, "could not refresh the lease of {id}: {e}");
        }
    }
}
