//! Layer 4, the host (`tt host`): serves a town's agents. It may depend on `store`, `town` and
//! `runtime`, not on `cli` (`tests/layers.rs` checks).
//!
//! One tokio task per agent (a runner) gets the agent's urgent and normal mail through the
//! consumer group, hands each batch to the agent's Wasm instance in a task of its own, and
//! applies every message's actions together with its acknowledgement in one Lua call
//! (idempotent by message id). Agents run concurrently, so a slow or failing one never holds up
//! another. The mailboxes of all agents are waited on over one connection, woken by the bell
//! each message rings ([`mailboxes`]), and what the host does for every agent (leases,
//! reclaims, noticing changes) is done for all at once ([`upkeep`]): an idle agent costs a
//! parked task, not a connection or a timer.
//!
//! Nothing is lost: a message leaves the pending list only in the same atomic step that applies
//! its effects. A retryable error or a trap is retried with backoff on a fresh instance; after
//! `max_deliveries` attempts, or on a permanent error, the message moves to the dead-letter
//! stream with the reason. Messages left pending by a host that died are reclaimed after the
//! lease (XAUTOCLAIM), and a handling that takes long keeps its lease fresh.
//!
//! - [`supervisor`]: the host's own loop (a runner per agent, heartbeats, Redis revival, idle).
//! - [`runner`]: one agent's loop: plugin and shadow, reading the mailbox.
//! - [`mailboxes`]: every agent's mailbox waited on over one connection, woken by the bell.
//! - [`upkeep`]: leases renewed together, reclaim passes after a host dies, record changes.
//! - [`handling`]: one batch as a task: call the role, journal it, turn actions into a unit.
//! - [`actions`]: the WIT contract <-> the town's messages and applier ops.
//! - [`lookup`]: the role's read-only questions, answered from Redis.
//! - [`replay`]: a candidate policy run on an agent's journal (`tt replay`, gated swaps).
//! - [`gate`]: the gated swap's judgement on that replay, for the CLI and the server alike.
//! - [`swap`]: validating a candidate and switching an agent's policy (swap, rollback, shadow).

mod actions;
pub mod gate;
mod handling;
pub mod lookup;
mod mailboxes;
pub mod replay;
mod runner;
mod slots;
pub use slots::fit as fit_instances;
mod supervisor;
pub mod swap;
mod upkeep;

pub use actions::describe;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;

use crate::runtime::{Lookup, Runtime};
use crate::store::model::now_ms;
use crate::town::Town;
use lookup::TownLookup;
use supervisor::{revive_embedded_redis, spawn_declared, watch_signals, Supervisor};

#[derive(Debug, Clone)]
pub struct HostOptions {
    /// This host's consumer name; stable across restarts so it finds its own pending messages.
    /// One process at a time may serve under a name (`supervisor::claim_name`).
    pub name: String,
    /// Exit once every served mailbox is empty and nothing is in flight.
    pub until_idle: bool,
    /// Serve only these agents (all when empty).
    pub agents: Vec<String>,
}

pub fn default_host_name() -> String {
    let mut buf = [0u8; 256];
    let n = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let raw = if n == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "host".into()
    };
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The agents the built-in roles talk to by default (see [`crate::runtime::builtin`]).
pub async fn builtin_peers(town: &Town) -> Result<crate::runtime::builtin::Peers> {
    let mut found = town.agents_of_roles(&["reviewer", "conductor"]).await?;
    Ok(crate::runtime::builtin::Peers {
        conductors: found.pop().unwrap_or_default(),
        reviewers: found.pop().unwrap_or_default(),
    })
}

/// [`builtin_peers`] for a host's runners: asked at most once a second, however many agents
/// load their plugin at once (each load needs them; a big town has thousands).
#[derive(Default)]
pub(crate) struct PeerCache(
    tokio::sync::Mutex<Option<(std::time::Instant, crate::runtime::builtin::Peers)>>,
);

impl PeerCache {
    pub(crate) async fn get(&self, town: &Town) -> Result<crate::runtime::builtin::Peers> {
        let mut cached = self.0.lock().await;
        if let Some((at, peers)) = cached.as_ref() {
            if at.elapsed() < Duration::from_secs(1) {
                return Ok(peers.clone());
            }
        }
        let peers = builtin_peers(town).await?;
        *cached = Some((std::time::Instant::now(), peers.clone()));
        Ok(peers)
    }
}

/// Runs until SIGINT/SIGTERM (or until idle, with `until_idle`).
pub async fn run(town: Arc<Town>, opts: HostOptions) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(watch_signals(stop_tx.clone()));
    run_until(town, opts, stop_tx, stop_rx).await
}

/// Runs until `stop` turns true (or until idle, with `until_idle`).
pub async fn run_until(
    town: Arc<Town>,
    opts: HostOptions,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
) -> Result<()> {
    let fuel = town.config.limits.fuel > 0
        || town
            .config
            .agents
            .keys()
            .any(|a| town.config.limits_for(a).fuel > 0);
    let runtime = Arc::new(Runtime::new(
        Some(town.config.state_dir().join("cache")),
        fuel,
    )?);
    let instance = crate::store::lease::new_instance();
    let claimed = std::time::Instant::now();
    supervisor::claim_name(&town, &opts.name, &instance).await?;
    spawn_declared(&town).await?;
    let lookup: Arc<dyn Lookup> = Arc::new(TownLookup { town: town.clone() });
    // Two connections: one for commands, one waiting on the bell for every agent.
    let (changes_tx, changes) = tokio::sync::mpsc::unbounded_channel();
    let mailboxes =
        mailboxes::Mailboxes::start(town.clone(), &opts.name, changes_tx, stop_rx.clone()).await?;
    mailboxes.claim_renewed(claimed, town.config.host.lease());
    let mut sup = Supervisor {
        town: town.clone(),
        runtime,
        lookup,
        opts,
        instance,
        stop_tx,
        stop_rx,
        started: now_ms(),
        runners: HashMap::new(),
        last_beat: None,
        last_sweep: None,
        near_full: false,
        idle_rounds: 0,
        reported: HashMap::new(),
        mailboxes,
        peers: Default::default(),
        slots: Arc::new(slots::Slots::new(max_instances(&town.config.host))),
        changes,
        upkeep: Default::default(),
        served: Default::default(),
    };
    tracing::info!(host = %sup.opts.name, town = %town.config.town.name, "host started");
    let mut outcome = Ok(());
    let mut backoff = Duration::from_millis(100);
    while !*sup.stop_rx.borrow() {
        match sup.round().await {
            Ok(true) => break,
            Ok(false) => backoff = Duration::from_millis(100),
            // A refusal of ours (mail stuck behind a broken plugin) ends the host.
            Err(e) if crate::store::error::user_error(&e).is_some() => {
                outcome = Err(e);
                break;
            }
            // Redis is away: keep everything, revive it if it is ours, try again.
            Err(e) => {
                tracing::warn!(
                    "{}; retrying in {backoff:?}",
                    crate::store::error::one_line(&e)
                );
                revive_embedded_redis(&town).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        sup.wait_for_work().await;
    }
    let _ = sup.stop_tx.send(true);
    for (_, (_, handle)) in sup.runners.drain() {
        let _ = handle.await;
    }
    let mut c = town.db.conn.clone();
    let _: Result<(), _> = redis::pipe()
        .hdel(town.db.keys.hosts(), &sup.opts.name)
        .del(town.db.keys.served(&sup.opts.name))
        .query_async(&mut c)
        .await;
    let _ = town.db.release_host(&sup.opts.name, &sup.instance).await;
    tracing::info!(host = %sup.opts.name, "host stopped");
    outcome
}

/// `[host] max_instances`, lowered (with a warning naming the fixes) to what this machine's
/// mapping limit holds (see [`slots`]).
fn max_instances(host: &crate::store::config::HostSection) -> usize {
    let fit = slots::fit(host.max_instances);
    if fit.lowered() {
        let (what, fix) = fit.explain();
        tracing::warn!("[host] max_instances = {}: {what}; {fix}", fit.configured);
    }
    fit.max
}
