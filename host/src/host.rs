//! `tt host`: serves a town's agents.
//!
//! One tokio task per agent (a [`Runner`]) reads the agent's urgent and normal streams through
//! the consumer group, hands each batch to the agent's long-lived Wasm instance on a blocking
//! thread, and applies every message's actions together with its acknowledgement in one Lua call
//! (idempotent by message id). Agents run concurrently, so a slow or failing one never holds up
//! another.
//!
//! Nothing is lost: a message leaves the pending list only in the same atomic step that applies
//! its effects. A retryable error or a trap is retried with backoff on a fresh instance; after
//! `max_deliveries` attempts, or on a permanent error, the message moves to the dead-letter
//! stream with the reason. Messages left pending by a host that died are reclaimed after the
//! lease (XAUTOCLAIM), and a handling that takes long keeps its lease fresh.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use redis::AsyncCommands;
use serde_json::json;
use tokio::sync::watch;

use crate::actions;
use crate::db::{Ack, Applied, Conn, Fence, Unit};
use crate::keys::GROUP;
use crate::limits::{Limits, READ_BATCH};
use crate::lookup::TownLookup;
use crate::model::{now_ms, Kind, Message};
use crate::runtime::{Failure, Grants, Instance, Lookup, Plugin, Runtime};
use crate::streams::{self, Entry};
use crate::town::Town;

/// How long one mailbox read blocks; also the longest a stop request waits for an idle agent.
const READ_BLOCK: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct HostOptions {
    /// This host's consumer name; stable across restarts so it finds its own pending messages.
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

/// What the supervisor knows about a runner.
#[derive(Default)]
struct Activity {
    /// True while the runner has a batch in hand or retries waiting.
    busy: AtomicBool,
    /// Reads since the last one that returned something.
    empty_reads: AtomicU64,
    handled: AtomicU64,
    done: AtomicBool,
    /// For an exclusive agent: whether this host holds its lease (a standby does not serve it).
    standby: AtomicBool,
    /// The agent has no plugin: its mailbox is read by people, not by this host.
    unserved: AtomicBool,
    /// Why the agent's plugin cannot run, while it cannot.
    blocked: std::sync::Mutex<Option<String>>,
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
    spawn_declared(&town).await?;
    let lookup: Arc<dyn Lookup> = Arc::new(TownLookup {
        town: town.clone(),
        handle: tokio::runtime::Handle::current(),
    });
    let mut sup = Supervisor {
        town: town.clone(),
        runtime,
        lookup,
        opts,
        stop_tx,
        stop_rx,
        started: now_ms(),
        runners: HashMap::new(),
        last_beat: None,
        idle_rounds: 0,
    };
    tracing::info!(host = %sup.opts.name, town = %town.config.town.name, "host started");
    let mut outcome = Ok(());
    let mut backoff = Duration::from_millis(100);
    while !*sup.stop_rx.borrow() {
        match sup.round().await {
            Ok(true) => break,
            Ok(false) => backoff = Duration::from_millis(100),
            // A refusal of ours (mail stuck behind a broken plugin) ends the host.
            Err(e) if crate::error::user_error(&e).is_some() => {
                outcome = Err(e);
                break;
            }
            // Redis is away: keep everything, revive it if it is ours, try again.
            Err(e) => {
                tracing::warn!("{}; retrying in {backoff:?}", crate::error::one_line(&e));
                revive_embedded_redis(&town).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = sup.stop_tx.send(true);
    for (_, (_, handle)) in sup.runners.drain() {
        let _ = handle.await;
    }
    let mut c = town.db.conn.clone();
    let _: Result<(), _> = c.hdel(town.db.keys.hosts(), &sup.opts.name).await;
    tracing::info!(host = %sup.opts.name, "host stopped");
    outcome
}

type Runners = HashMap<String, (Arc<Activity>, tokio::task::JoinHandle<()>)>;

/// The host's own loop: starts a runner per agent, writes the heartbeat, notices idleness.
struct Supervisor {
    town: Arc<Town>,
    runtime: Arc<Runtime>,
    lookup: Arc<dyn Lookup>,
    opts: HostOptions,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    started: u64,
    runners: Runners,
    last_beat: Option<Instant>,
    idle_rounds: u32,
}

impl Supervisor {
    /// One round; true when the host should stop (idle, with --until-idle).
    async fn round(&mut self) -> Result<bool> {
        let town = &self.town;
        for name in town.agent_names().await? {
            let wanted = self.opts.agents.is_empty() || self.opts.agents.contains(&name);
            if self.runners.contains_key(&name) || !wanted {
                continue;
            }
            let activity = Arc::new(Activity::default());
            let runner = Runner::new(
                town.clone(),
                self.runtime.clone(),
                self.lookup.clone(),
                &name,
                &self.opts.name,
                activity.clone(),
                self.stop_rx.clone(),
            )
            .await?;
            self.runners
                .insert(name, (activity, tokio::spawn(runner.run())));
        }
        self.runners
            .retain(|_, (a, _)| !a.done.load(Ordering::Relaxed));
        revive_embedded_redis(town).await;
        let heartbeat = Duration::from_millis(town.config.host.heartbeat_ms.max(50));
        if self.last_beat.is_none_or(|t| t.elapsed() >= heartbeat) {
            self.last_beat = Some(Instant::now());
            write_heartbeat(town, &self.opts.name, self.started, &self.runners).await;
        }
        if !self.opts.until_idle {
            return Ok(false);
        }
        let quiet = self.runners.values().all(|(a, _)| {
            !a.busy.load(Ordering::Relaxed) && a.empty_reads.load(Ordering::Relaxed) >= 1
        });
        let blocked = |a: &Activity| a.blocked.lock().map(|b| b.is_some()).unwrap_or(false);
        let served = self.runners.iter().filter_map(|(n, (a, _))| {
            (!blocked(a) && !a.unserved.load(Ordering::Relaxed)).then_some(n)
        });
        if !(quiet && served_mailboxes_empty(town, served).await?) {
            self.idle_rounds = 0;
            return Ok(false);
        }
        self.idle_rounds += 1;
        if self.idle_rounds < 2 {
            return Ok(false);
        }
        let stuck = stuck_mail(town, &self.runners).await?;
        if !stuck.is_empty() {
            let reasons: Vec<String> = self
                .runners
                .values()
                .filter_map(|(a, _)| a.blocked.lock().ok()?.clone())
                .collect();
            return Err(crate::error::fail(
                format!(
                    "mail is waiting for agents that cannot run: {}",
                    reasons.join("; ")
                ),
                format!(
                    "fix the plugin or its grants; the mail of {} is kept",
                    stuck.join(", ")
                ),
            ));
        }
        Ok(true)
    }
}

/// The town's own Redis is ours to keep alive: if it died, start it again (its AOF brings the
/// town back); the connections reconnect by themselves.
async fn revive_embedded_redis(town: &Town) {
    if town
        .config
        .redis
        .url
        .as_deref()
        .is_some_and(|u| !u.is_empty())
    {
        return;
    }
    let embedded = crate::embedded::Embedded::new(&town.config);
    if embedded.is_up() {
        return;
    }
    let fsync = town
        .config
        .redis
        .appendfsync
        .clone()
        .unwrap_or_else(|| crate::db::DEFAULT_APPENDFSYNC.into());
    tracing::warn!("the town's Redis is not answering; starting it again");
    match tokio::task::spawn_blocking(move || embedded.ensure(&fsync)).await {
        Ok(Ok(_)) => tracing::info!("the town's Redis is back"),
        Ok(Err(e)) => tracing::error!(
            "cannot restart the town's Redis: {}",
            crate::error::one_line(&e)
        ),
        Err(e) => tracing::error!("cannot restart the town's Redis: {e}"),
    }
}

async fn watch_signals(stop: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("stop requested: finishing the messages in hand");
    let _ = stop.send(true);
}

/// Spawns agents declared in tinytown.toml (with role and plugin) that do not exist yet.
async fn spawn_declared(town: &Town) -> Result<()> {
    for (name, section) in &town.config.agents {
        let (Some(role), Some(_)) = (&section.role, &section.plugin) else {
            continue;
        };
        if town.agent(name).await?.is_none() {
            town.spawn(name, role, None, section.nickname.as_deref())
                .await?;
        }
    }
    Ok(())
}

async fn served_mailboxes_empty<'a>(
    town: &Town,
    names: impl Iterator<Item = &'a String>,
) -> Result<bool> {
    for name in names {
        let Some(agent) = town.agent(name).await? else {
            continue;
        };
        if matches!(agent.state.as_str(), "stopped" | "cold" | "interrupted") {
            continue;
        }
        if town.mailbox_depth(name).await? != (0, 0) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Agents that cannot run but have mail.
async fn stuck_mail(town: &Town, runners: &Runners) -> Result<Vec<String>> {
    let mut stuck = Vec::new();
    for (name, (a, _)) in runners {
        let blocked = a.blocked.lock().map(|b| b.is_some()).unwrap_or(false);
        if blocked && town.mailbox_depth(name).await? != (0, 0) {
            stuck.push(name.clone());
        }
    }
    stuck.sort();
    Ok(stuck)
}

async fn write_heartbeat(town: &Town, host: &str, started: u64, runners: &Runners) {
    let agents: BTreeMap<&String, u64> = runners
        .iter()
        .filter(|(_, (a, _))| !a.standby.load(Ordering::Relaxed))
        .map(|(n, (a, _))| (n, a.handled.load(Ordering::Relaxed)))
        .collect();
    let beat = json!({
        "name": host, "pid": std::process::id(), "started_ms": started, "seen_ms": now_ms(),
        "agents": agents,
    });
    let mut c = town.db.conn.clone();
    let _: Result<(), _> = c.hset(town.db.keys.hosts(), host, beat.to_string()).await;
}

/// The live plugin of an agent and its instance, and a shadow candidate if there is one.
struct Live {
    plugin: Plugin,
    instance: Option<Instance>,
    shadow: Option<(Plugin, Option<Instance>)>,
}

/// One message in a batch.
struct Delivery {
    stream: String,
    kind: &'static str,
    entry: Entry,
    /// Came back from a pending list (restart or reclaim), so it may have failed before.
    redelivered: bool,
}

struct Runner {
    town: Arc<Town>,
    runtime: Arc<Runtime>,
    lookup: Arc<dyn Lookup>,
    name: String,
    consumer: String,
    activity: Arc<Activity>,
    stop: watch::Receiver<bool>,
    reads: Conn,
    limits: Limits,
    grants: Grants,
    init_config: Vec<(String, String)>,
    live: Option<Live>,
    /// Plugin path and digest recorded for the agent when we last looked.
    wanted: Option<(String, Option<String>)>,
    /// The same for its shadow.
    wanted_shadow: Option<String>,
    /// Read our own pending entries first (left by a previous run of this host).
    recovering: bool,
    /// Serve only while holding the agent's lease (`mode = "exclusive"`).
    exclusive: bool,
    /// The lease we hold (`<host>:<token>`), and when we last renewed it.
    lease: Option<(String, Instant)>,
    last_claim: Instant,
    load_error: Option<String>,
}

impl Runner {
    async fn new(
        town: Arc<Town>,
        runtime: Arc<Runtime>,
        lookup: Arc<dyn Lookup>,
        name: &str,
        consumer: &str,
        activity: Arc<Activity>,
        stop: watch::Receiver<bool>,
    ) -> Result<Runner> {
        let grants = crate::swap::grants_for(&town.config, name)?;
        let exclusive = town
            .config
            .agents
            .get(name)
            .is_some_and(|a| a.mode == crate::config::ServeMode::Exclusive);
        let reads = town.db.dedicated(READ_BLOCK).await?;
        Ok(Runner {
            limits: town.config.limits_for(name),
            init_config: crate::swap::init_config(&town.config, name),
            grants,
            reads,
            town,
            runtime,
            lookup,
            name: name.to_string(),
            consumer: consumer.to_string(),
            activity,
            stop,
            live: None,
            wanted: None,
            wanted_shadow: None,
            recovering: true,
            exclusive,
            lease: None,
            last_claim: Instant::now(),
            load_error: None,
        })
    }

    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        while !*self.stop.borrow() && !self.activity.done.load(Ordering::Relaxed) {
            match self.step().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    // Redis went away, refused something, or our lease was taken over: keep
                    // the messages (they stay pending), try again, starting with them.
                    self.lease = None;
                    self.recovering = true;
                    tracing::warn!(agent = %self.name, "{}; retrying in {:?}", crate::error::one_line(&e), backoff);
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
        let held = self
            .town
            .db
            .lease(&self.name, &self.consumer, lease)
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
            self.live = None;
            self.activity.done.store(true, Ordering::Relaxed);
            return Ok(());
        };
        if matches!(agent.state.as_str(), "stopped" | "cold" | "interrupted") {
            self.live = None;
            self.activity.empty_reads.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(READ_BLOCK).await;
            return Ok(());
        }
        let wanted = agent.plugin.clone().map(|p| (p, agent.digest.clone()));
        if wanted != self.wanted || self.live.is_none() {
            self.wanted = wanted.clone();
            self.switch_plugin(wanted).await;
        }
        if agent.shadow != self.wanted_shadow && self.live.is_some() {
            self.wanted_shadow = agent.shadow.clone();
            self.switch_shadow(agent.shadow.clone()).await;
        }
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
            if agent.state == "closing" && self.town.mailbox_depth(&self.name).await? == (0, 0) {
                self.town
                    .db
                    .apply_ops(
                        &self.name,
                        vec![
                            json!({"op": "agent_state", "name": self.name, "state": "cold",
                                    "from": ["closing"]}),
                        ],
                    )
                    .await?;
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

    fn set_blocked(&mut self, why: Option<String>) {
        self.load_error = why.clone();
        *self
            .activity
            .blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Loads the agent's recorded plugin; on failure keeps the old one (if any) and says why.
    async fn switch_plugin(&mut self, wanted: Option<(String, Option<String>)>) {
        let Some((path, _digest)) = wanted else {
            // A mailbox-only agent: someone else reads its mail (tt inbox), nothing to serve.
            if self.load_error.is_none() {
                tracing::info!(agent = %self.name, "has no plugin; not served (tt swap {} PLUGIN)", self.name);
                self.load_error = Some("no plugin".into());
            }
            self.activity.unserved.store(true, Ordering::Relaxed);
            return;
        };
        let full = self.town.config.resolve(&PathBuf::from(&path));
        let runtime = self.runtime.clone();
        let grants = self.grants.clone();
        let name = self.name.clone();
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&name, &full, &grants)).await;
        match loaded {
            Ok(Ok(plugin)) => {
                if self
                    .live
                    .as_ref()
                    .is_some_and(|l| l.plugin.digest == plugin.digest)
                {
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
                let mut msg = crate::error::one_line(&e);
                if let Some(hint) = crate::error::user_error(&e).and_then(|u| u.hint.clone()) {
                    msg = format!("{msg} ({hint})");
                }
                if self.load_error.as_deref() != Some(&msg) {
                    tracing::error!(agent = %self.name, "cannot load plugin: {msg}");
                }
                if self.live.is_none() {
                    self.set_blocked(Some(msg));
                }
            }
            Err(e) => tracing::error!(agent = %self.name, "plugin loader panicked: {e}"),
        }
    }

    /// Starts or stops running a candidate beside the live plugin.
    async fn switch_shadow(&mut self, path: Option<String>) {
        let Some(path) = path else {
            if let Some(live) = self.live.as_mut() {
                live.shadow = None;
            }
            return;
        };
        let full = self.town.config.resolve(&PathBuf::from(&path));
        let (runtime, grants, name) =
            (self.runtime.clone(), self.grants.clone(), self.name.clone());
        match tokio::task::spawn_blocking(move || runtime.load(&name, &full, &grants)).await {
            Ok(Ok(plugin)) => {
                tracing::info!(agent = %self.name, plugin = %path, digest = %plugin.digest.short(), "shadow loaded");
                if let Some(live) = self.live.as_mut() {
                    live.shadow = Some((plugin, None));
                }
            }
            Ok(Err(e)) => {
                tracing::error!(agent = %self.name, "cannot load shadow: {}", crate::error::one_line(&e))
            }
            Err(e) => tracing::error!(agent = %self.name, "shadow loader panicked: {e}"),
        }
    }

    /// Reads the next batch: our own leftovers first, then stale entries of dead hosts, then new
    /// mail, urgent before normal.
    async fn read(&mut self) -> Result<Vec<Delivery>> {
        let keys = &self.town.db.keys;
        let streams = [
            (keys.urgent(&self.name), "urgent"),
            (keys.inbox(&self.name), "inbox"),
        ];
        let lease = self.town.config.host.lease();
        if !self.recovering && self.last_claim.elapsed() >= lease / 2 {
            self.last_claim = Instant::now();
            let mut out = Vec::new();
            for (stream, kind) in &streams {
                let v: redis::Value = redis::cmd("XAUTOCLAIM")
                    .arg(stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(lease.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(READ_BATCH)
                    .query_async(&mut self.reads)
                    .await?;
                let (_, entries) = streams::autoclaim_reply(&v);
                out.extend(entries.into_iter().map(|entry| Delivery {
                    stream: stream.clone(),
                    kind,
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
                "urgent"
            } else {
                "inbox"
            };
            out.extend(entries.into_iter().map(|entry| Delivery {
                stream: stream.clone(),
                kind,
                entry,
                redelivered: self.recovering,
            }));
        }
        out.sort_by_key(|d| d.kind != "urgent");
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
            rt: tokio::runtime::Handle::current(),
            fence: self.lease.as_ref().map(|(holder, _)| Fence {
                agent: self.name.clone(),
                holder: holder.clone(),
            }),
        };
        let mut job = tokio::task::spawn_blocking(move || ctx.handle_all(live, batch));
        let lease = self.town.config.host.lease();
        let mut refresh = tokio::time::interval(lease / 3);
        refresh.tick().await;
        let (live, result) = loop {
            tokio::select! {
                done = &mut job => break done?,
                _ = refresh.tick() => {
                    refresh_leases(&self.town, &self.name, &self.consumer, &ids).await;
                    if self.exclusive {
                        if let Ok(None) = self.town.db.lease(&self.name, &self.consumer, lease).await {
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

/// Everything a blocking handling thread needs.
struct HandleCtx {
    town: Arc<Town>,
    runtime: Arc<Runtime>,
    lookup: Arc<dyn Lookup>,
    agent: String,
    limits: Limits,
    grants: Grants,
    init_config: Vec<(String, String)>,
    rt: tokio::runtime::Handle,
    fence: Option<Fence>,
}

impl HandleCtx {
    fn handle_all(&self, mut live: Live, batch: Vec<Delivery>) -> (Live, Result<()>) {
        let mut units = Vec::new();
        for d in batch {
            let (unit, looked) = match self.handle_one(&mut live, d) {
                Ok(done) => done,
                Err(e) => {
                    // The town could not be asked: apply what was decided before, leave the
                    // rest pending for a retry.
                    let _ = self.apply(&mut units);
                    return (live, Err(e));
                }
            };
            units.push(unit);
            // A role that consulted the town must see its previous decision applied first.
            if looked {
                if let Err(e) = self.apply(&mut units) {
                    return (live, Err(e));
                }
            }
        }
        let r = self.apply(&mut units);
        (live, r)
    }

    fn apply(&self, units: &mut Vec<Unit>) -> Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        for unit in units.iter_mut() {
            unit.fence = self.fence.clone();
        }
        let results = self.rt.block_on(self.town.db.apply(units))?;
        for (unit, r) in units.iter().zip(&results) {
            report(&self.agent, unit, r);
        }
        units.clear();
        if results.iter().any(|r| r.s == "fenced") {
            return Err(crate::error::fail(
                format!(
                    "another host took over agent `{}`; its messages stay pending for it",
                    self.agent
                ),
                "expected after a pause longer than [host] lease_ms",
            ));
        }
        Ok(())
    }

    /// Handles one delivery to the end: a unit that applies its actions or dead-letters it.
    /// Also says whether the role looked at the town while deciding. `Err` when the town could
    /// not be asked: nothing is decided and the message stays pending.
    fn handle_one(&self, live: &mut Live, d: Delivery) -> Result<(Unit, bool)> {
        let member = format!("{}/{}", d.kind, d.entry.id);
        let mut unit = Unit {
            by: Some(self.agent.clone()),
            digest: Some(live.plugin.digest.to_string()),
            ack: Some(Ack {
                stream: d.stream.clone(),
                entry: d.entry.id.clone(),
                agent: self.agent.clone(),
                kind: d.kind.to_string(),
                member: member.clone(),
            }),
            dlq: true,
            ..Default::default()
        };
        let msg = match Message::decode(&d.entry.fields) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(agent = %self.agent, entry = %d.entry.id, "{e}");
                unit.dead = Some(e.to_string());
                return Ok((unit, false));
            }
        };
        if msg.body.len() > crate::limits::MAX_MESSAGE_BYTES {
            unit.dead = Some(format!(
                "message body is {} bytes; the limit is {}",
                msg.body.len(),
                crate::limits::MAX_MESSAGE_BYTES
            ));
            return Ok((unit, false));
        }
        let mut attempt = if d.redelivered {
            self.previous_attempts(&member)?
        } else {
            0
        };
        if matches!(msg.kind, Kind::TaskAssign | Kind::Reject) {
            if let Some(task) = &msg.task {
                let op = json!({"op": "mark_running", "task": task});
                if let Err(e) = self
                    .rt
                    .block_on(self.town.db.apply_ops(&self.agent, vec![op]))
                {
                    tracing::warn!(agent = %self.agent, "could not mark {task} running: {e}");
                }
            }
        }
        loop {
            attempt += 1;
            unit.attempts = Some(attempt);
            let failure = match self.call(&live.plugin, &mut live.instance, &msg, attempt) {
                Ok(actions) => match actions::to_ops(&actions, &self.limits) {
                    Ok(mut ops) => {
                        let looked = live.instance.as_ref().is_some_and(|i| i.lookups() > 0);
                        if let Some((plugin, instance)) = live.shadow.as_mut() {
                            ops.push(self.shadow_op(
                                &live.plugin,
                                plugin,
                                instance,
                                &msg,
                                attempt,
                                &actions,
                            )?);
                        }
                        unit.ops = ops;
                        return Ok((unit, looked));
                    }
                    Err(reason) => Failure {
                        reason,
                        retryable: false,
                        trapped: false,
                        transient: false,
                    },
                },
                Err(f) if f.transient => {
                    anyhow::bail!("agent `{}`: {}", self.agent, f.reason)
                }
                Err(f) => f,
            };
            tracing::warn!(
                agent = %self.agent, msg = %msg.id, attempt, limit = self.limits.max_deliveries,
                "{}", failure.reason
            );
            if !failure.retryable {
                unit.dead = Some(format!("permanent error: {}", failure.reason));
                return Ok((unit, false));
            }
            if attempt >= self.limits.max_deliveries {
                unit.dead = Some(format!("failed {attempt} times; last: {}", failure.reason));
                return Ok((unit, false));
            }
            self.record_attempt(&member);
            std::thread::sleep(backoff(attempt));
        }
    }

    /// Calls `plugin`'s instance in `slot`, creating a fresh one when there is none.
    fn call(
        &self,
        plugin: &Plugin,
        slot: &mut Option<Instance>,
        msg: &Message,
        attempt: u32,
    ) -> Result<Vec<crate::runtime::wit::Action>, Failure> {
        if slot.is_none() {
            *slot = Some(self.runtime.instantiate(
                plugin,
                &self.agent,
                &self.limits,
                &self.grants,
                &self.init_config,
                self.lookup.clone(),
            )?);
        }
        let inst = slot.as_mut().expect("just created");
        let r = inst.handle(actions::to_wit(msg, attempt));
        if r.as_ref().is_err_and(|f| f.trapped) {
            *slot = None;
        }
        r
    }

    /// Runs the shadow on the same message; its decision is recorded, never applied.
    fn shadow_op(
        &self,
        live: &Plugin,
        plugin: &Plugin,
        slot: &mut Option<Instance>,
        msg: &Message,
        attempt: u32,
        live_actions: &[crate::runtime::wit::Action],
    ) -> Result<serde_json::Value> {
        let describe = |a: &[crate::runtime::wit::Action]| {
            a.iter()
                .map(actions::describe)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let live_text = describe(live_actions);
        let shadow_text = match self.call(plugin, slot, msg, attempt) {
            Ok(a) => describe(&a),
            Err(f) if f.transient => anyhow::bail!("shadow of `{}`: {}", self.agent, f.reason),
            Err(f) => format!("error: {}", f.reason),
        };
        Ok(json!({
            "op": "shadow_record", "msg": msg.id, "agree": live_text == shadow_text,
            "live": live_text, "shadow": shadow_text,
            "live_digest": live.digest.to_string(), "shadow_digest": plugin.digest.to_string(),
        }))
    }

    fn previous_attempts(&self, member: &str) -> Result<u32> {
        let mut c = self.town.db.conn.clone();
        let key = self.town.db.keys.attempts(&self.agent);
        let n = self
            .rt
            .block_on(async move { c.hget::<_, _, Option<u32>>(key, member).await })?;
        Ok(n.unwrap_or(0))
    }

    fn record_attempt(&self, member: &str) {
        let mut c = self.town.db.conn.clone();
        let key = self.town.db.keys.attempts(&self.agent);
        let _: Result<i64, _> = self
            .rt
            .block_on(async move { c.hincr(key, member, 1).await });
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25u64 << attempt.min(6)).min(2_000))
}

fn report(agent: &str, unit: &Unit, r: &Applied) {
    let member = unit.ack.as_ref().map(|a| a.member.as_str()).unwrap_or("?");
    match r.s.as_str() {
        "dlq" => tracing::warn!(
            agent,
            msg = member,
            "dead-lettered: {}",
            r.reason.as_deref().unwrap_or("?")
        ),
        "dup" => tracing::info!(agent, msg = member, "already applied; acknowledged only"),
        _ => tracing::debug!(agent, msg = member, actions = unit.ops.len(), "applied"),
    }
}
