//! One agent's loop: its plugin and shadow (switched between two messages) and its mailbox:
//! our own leftovers first, then stale entries of dead hosts when the supervisor asks, then new
//! mail, urgent before normal. Each batch goes to [`super::handling`].
//!
//! An idle runner costs nothing: it waits for the host's mailbox reader ([`super::mailboxes`])
//! or for a poke from the supervisor (its agent's record changed, its lease changed, a dead
//! host's mail is to be reclaimed), with no timer of its own. Its plugin is loaded when the
//! first mail arrives, and its instance is dropped after `[host] idle_instance_ms` without
//! mail. The lease of an exclusive agent is the supervisor's to renew, for all agents at once
//! (`Db::leases`); the runner serves while it is held.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;

use super::handling::{FencedOut, HandleCtx};
use super::mailboxes::Mailboxes;
use super::slots::Slots;
use super::supervisor::Activity;
use crate::runtime::{Grants, Instance, Lookup, Plugin, Runtime};
use crate::store::applier::{Fence, Op};
use crate::store::keys::GROUP;
use crate::store::limits::Limits;
use crate::store::model::{Agent, AgentState, Stream};
use crate::store::streams::Entry;
use crate::town::Town;

mod read;
mod switch;

/// How often an agent that cannot be served (its plugin does not load) tries again while it
/// has mail.
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
    activity: Arc<Activity>,
    stop: watch::Receiver<bool>,
    mailboxes: Arc<Mailboxes>,
    peers: Arc<super::PeerCache>,
    slots: Arc<Slots>,
    /// This agent's slot among the host's live instances, held while it may have one.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    limits: Limits,
    grants: Grants,
    init_config: Vec<(String, String)>,
    live: Option<Live>,
    /// The recorded plugin being made ready off the serving path ([`switch`]).
    pending: Option<switch::Pending>,
    /// The recorded shadow being made ready.
    pending_shadow: Option<switch::Pending>,
    /// The agent's record as last read: read again when a change of it is heard
    /// ([`Activity::changed`]) or after an error, not on every round.
    record: Option<Arc<Agent>>,
    /// Plugin path and digest recorded for the agent when we last looked.
    wanted: Option<(String, Option<String>)>,
    /// The same for its shadow.
    wanted_shadow: Option<String>,
    /// Read our own pending entries first (left by a previous run of this host).
    recovering: bool,
    /// Serve only while holding the agent's lease (`mode = "exclusive"`).
    exclusive: bool,
    /// Mail read but not handled yet (the plugin would not load): handled first.
    held: Vec<Delivery>,
    /// The last read filled a stream's batch: the next one is tried at once, without waiting
    /// for the reader.
    hot: bool,
    /// Said once that it waits for mail.
    ready: bool,
    /// Drop the instance after this long without mail (`[host] idle_instance_ms`).
    idle_drop: Option<Duration>,
    /// Where the next XAUTOCLAIM of each stream (urgent, inbox) goes on: "0-0" after a full pass.
    claim_cursor: [String; 2],
    load_error: Option<String>,
}

impl Runner {
    /// `consumer` is the host name (the consumer in the mailbox groups).
    pub(super) fn new(
        (town, runtime, lookup): (Arc<Town>, Arc<Runtime>, Arc<dyn Lookup>),
        name: &str,
        consumer: &str,
        (activity, mailboxes, peers, slots): (
            Arc<Activity>,
            Arc<Mailboxes>,
            Arc<super::PeerCache>,
            Arc<Slots>,
        ),
        stop: watch::Receiver<bool>,
    ) -> Result<Runner> {
        let grants = Grants::for_agent(&town.config, name)?;
        let exclusive = town
            .config
            .agents
            .get(name)
            .is_none_or(|a| a.mode == crate::store::config::ServeMode::Exclusive);
        activity.exclusive.store(exclusive, Ordering::Relaxed);
        // The first pass over the pending lists comes right after our own are resumed.
        activity.reclaim.store(true, Ordering::Relaxed);
        let idle = town.config.host.idle_instance_ms;
        Ok(Runner {
            limits: town.config.limits_for(name),
            init_config: town.config.init_config(name),
            grants,
            mailboxes,
            peers,
            slots,
            slot: None,
            town,
            runtime,
            lookup,
            name: name.to_string(),
            consumer: consumer.to_string(),
            activity,
            stop,
            live: None,
            pending: None,
            pending_shadow: None,
            record: None,
            wanted: None,
            wanted_shadow: None,
            recovering: true,
            exclusive,
            held: Vec::new(),
            hot: false,
            ready: false,
            idle_drop: (idle > 0).then(|| Duration::from_millis(idle)),
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
                    self.recovering = true;
                    self.hot = false;
                    self.record = None;
                    tracing::warn!(agent = %self.name, "{}; retrying in {:?}", crate::store::error::one_line(&e), backoff);
                    self.activity.busy.store(false, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Done first: the supervisor renews no lease of a runner that is done.
        self.activity.done.store(true, Ordering::Relaxed);
        self.mailboxes.close(&self.name);
        let held = self.activity.lease.lock().ok().and_then(|mut l| l.take());
        if let Some(holder) = held {
            let _ = self.town.db.release_lease(&self.name, &holder).await;
        }
    }

    /// Drops the plugin and its shadow (stopped or pruned); they load again when served.
    fn unload(&mut self) {
        self.slot = None;
        self.live = None;
        self.pending = None;
        self.pending_shadow = None;
        self.wanted_shadow = None;
    }

    /// Drops the instances (the agent's and its shadow's) and gives their slot back; the next
    /// message makes fresh ones. State lives in Redis: only memory goes.
    fn drop_instance(&mut self) {
        if let Some(live) = self.live.as_mut() {
            live.instance = None;
            if let Some((_, shadow)) = live.shadow.as_mut() {
                *shadow = None;
            }
        }
        self.slot = None;
    }

    fn set_blocked(&mut self, why: Option<String>) {
        self.load_error = why.clone();
        *self
            .activity
            .blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// The lease this host holds on the agent (renewed by the supervisor for all at once).
    fn lease(&self) -> Option<String> {
        self.activity.lease.lock().ok()?.clone()
    }

    /// Waits for a poke from the supervisor, a stop, or `limit`.
    fn park(&self, limit: Option<Duration>) -> impl std::future::Future<Output = ()> + Send {
        park(self.activity.clone(), self.stop.clone(), limit)
    }

    /// One round: check the agent's state, wait for a batch, load the plugin if it is not yet,
    /// handle the batch, apply it.
    async fn step(&mut self) -> Result<()> {
        let Some(agent) = self.record().await? else {
            tracing::info!(agent = %self.name, "pruned: no longer served here");
            self.unload();
            self.activity.done.store(true, Ordering::Relaxed);
            return Ok(());
        };
        if !agent.state.is_served() {
            self.unload();
            self.activity.empty_reads.fetch_add(1, Ordering::Relaxed);
            self.park(None).await;
            return Ok(());
        }
        let wanted = agent.plugin.clone().map(|p| (p, agent.digest.clone()));
        let switched = !self.ready || wanted != self.wanted;
        if switched {
            self.wanted = wanted.clone();
        }
        // No plugin says at once whether the agent is a mailbox people read or cannot be
        // served; a changed plugin is switched to between two messages; a first one waits for
        // the first mail.
        let stuck = !self.held.is_empty() && self.live.is_none();
        match (&wanted, self.live.is_some()) {
            // Made ready in the background: the old plugin serves until the new one can.
            (Some(_), true) if switched => self.start_switch(wanted.clone(), &agent.role),
            _ if (switched && wanted.is_none()) || stuck => {
                self.start_switch(wanted.clone(), &agent.role);
                self.finish_switch().await;
            }
            _ => {}
        }
        if self.live.is_some() {
            // A candidate made ready meanwhile is switched to now (or refused, and said).
            self.finish_switch().await;
            if agent.shadow == self.wanted_shadow {
                self.finish_shadow(false).await;
            }
        }
        let stuck = !self.held.is_empty() && self.live.is_none();
        if wanted.is_none() || stuck {
            self.activity.empty_reads.fetch_add(1, Ordering::Relaxed);
            // A mailbox waits for a change of its record; held mail tries the plugin again.
            self.park(stuck.then_some(READ_BLOCK)).await;
            return Ok(());
        }
        if !self.ready {
            // An agent with mail when the host starts (waiting, or in the hand of a host that
            // stopped) loads its plugin now: one that cannot be served is said at once, not
            // when its mail is next read (a lease later, for mail another host held).
            if self.live.is_none()
                && self.pending.is_none()
                && self.town.mailbox_depth(&self.name).await? != (0, 0)
            {
                self.start_switch(wanted.clone(), &agent.role);
                self.finish_switch().await;
            }
            // What `tests/common/fleet.rs` counts: this host can serve the agent from here on
            // (its plugin loads with the first message).
            tracing::info!(agent = %self.name, "ready: waiting for mail");
            self.ready = true;
        }
        if self.exclusive && self.lease().is_none() {
            // Another host serves this agent; its mail is theirs.
            self.activity.standby.store(true, Ordering::Relaxed);
            self.drop_instance();
            self.hot = false;
            self.activity.empty_reads.fetch_add(1, Ordering::Relaxed);
            self.park(None).await;
            return Ok(());
        }
        self.activity.standby.store(false, Ordering::Relaxed);
        if agent.state == AgentState::Closing && self.held.is_empty() {
            // Closing goes cold once nothing is left, without waiting for mail that may
            // never come.
            if self.town.mailbox_depth(&self.name).await? == (0, 0) {
                let op = Op::AgentState {
                    name: self.name.clone(),
                    state: AgentState::Cold,
                    from: Some(vec![AgentState::Closing]),
                };
                self.town.db.apply_ops(&self.name, vec![op]).await?;
                self.record = None;
                return Ok(());
            }
        }
        if self.exclusive && !self.mailboxes.claim_fresh() {
            // The host was paused past its claim: its leases may have been taken. It reads
            // again once the supervisor has renewed the claim and checked them.
            self.park(Some(READ_BLOCK)).await;
            return Ok(());
        }
        let batch = self.read().await?;
        if batch.is_empty() {
            return Ok(());
        }
        self.activity.busy.store(true, Ordering::Relaxed);
        self.activity.empty_reads.store(0, Ordering::Relaxed);
        // The first plugin loads with the first mail (waited for: nothing serves yet), with a
        // shadow recorded beside it; a candidate made ready while the runner waited takes this
        // batch. A host killed while loading leaves the mail pending, not counted against it:
        // handling has not begun (`handling/attempts.rs` marks a message when it does).
        let first = self.live.is_none();
        if first && self.pending.is_none() {
            self.start_switch(wanted, &agent.role);
        }
        self.finish_switch().await;
        if self.live.is_none() {
            // The plugin does not load: keep the mail in hand (pending for this host), and
            // the slot taken to read it for agents that can be served.
            self.held = batch;
            self.slot = None;
            self.activity.busy.store(false, Ordering::Relaxed);
            return Ok(());
        }
        if agent.shadow != self.wanted_shadow {
            self.wanted_shadow = agent.shadow.clone();
            self.start_shadow(agent.shadow.clone());
        }
        // Nothing handled yet (the plugin loaded with this mail or at start): the shadow is
        // awaited, so it sees the first message too.
        let nothing_handled = self.activity.handled.load(Ordering::Relaxed) == 0;
        self.finish_shadow(first || nothing_handled).await;
        if self.slot.is_none() {
            self.slot = Some(self.slots.take().await);
        }
        let n = batch.len() as u64;
        self.handle_batch(batch).await?;
        self.activity.handled.fetch_add(n, Ordering::Relaxed);
        self.activity.busy.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// The agent's record: the one read before unless a change of it was heard since. The
    /// change is taken before reading, so one written meanwhile is read next time.
    async fn record(&mut self) -> Result<Option<Arc<Agent>>> {
        let changed = self.activity.changed.swap(false, Ordering::Relaxed);
        if changed || self.record.is_none() {
            self.record = self.town.agent(&self.name).await?.map(Arc::new);
        }
        Ok(self.record.clone())
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
            journal_keep: self.activity.journal_keep.load(Ordering::Relaxed),
            fence: self.lease().map(|holder| Fence {
                agent: self.name.clone(),
                holder,
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
                // The agent's lease is the supervisor's to renew; the entries in hand are ours.
                _ = refresh.tick() => {
                    refresh_leases(&self.town, &self.name, &self.consumer, &ids).await;
                }
            }
        };
        self.live = Some(live);
        if result.as_ref().is_err_and(|e| e.is::<FencedOut>()) {
            // The supervisor asks again for the leases its runners lack, and only those.
            self.activity
                .lease
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
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

/// [`Runner::park`]: a future of its own (not borrowing the runner, which is not `Sync`).
async fn park(activity: Arc<Activity>, mut stop: watch::Receiver<bool>, limit: Option<Duration>) {
    let timer = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = activity.wake.notified() => {}
        _ = stop.changed() => {}
        _ = timer => {}
    }
}
