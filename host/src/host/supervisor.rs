//! The host's own loop: starts a runner per agent, renews its claim (and with it its leases),
//! takes the leases it lacks and looks for dead hosts ([`super::upkeep`]), keeps the embedded
//! Redis alive, and notices when the town is idle (`--until-idle`). It lists the agents only
//! when their number changes or an event says one was spawned, so an idle town of many agents
//! costs it a few commands a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::watch;

mod name;

pub(super) use name::claim_name;
use name::write_heartbeat;
pub(super) use name::Served;

use super::mailboxes::Mailboxes;
use super::runner::Runner;
use super::upkeep::{Change, Upkeep};
use super::{HostOptions, PeerCache};
use crate::runtime::{Lookup, Runtime};
use crate::store::applier::Op;
use crate::store::config::RedisTarget;
use crate::store::lease::Claim;
use crate::town::Town;

/// What the supervisor knows about a runner.
#[derive(Default)]
pub(super) struct Activity {
    /// True while the runner has a batch in hand or retries waiting.
    pub(super) busy: AtomicBool,
    /// Reads since the last one that returned something.
    pub(super) empty_reads: AtomicU64,
    pub(super) handled: AtomicU64,
    pub(super) done: AtomicBool,
    /// For an exclusive agent: whether this host holds its lease (a standby does not serve it).
    pub(super) standby: AtomicBool,
    /// The agent is a mailbox people read (role `mailbox`): not served, never reported.
    pub(super) unserved: AtomicBool,
    /// Why the agent cannot be served (no plugin, a plugin that does not load, a missing
    /// grant or program), with the fix, while it cannot.
    pub(super) blocked: std::sync::Mutex<Option<String>>,
    /// Wakes the runner when it waits: its record or lease changed, a reclaim is asked.
    pub(super) wake: tokio::sync::Notify,
    /// The agent's record changed (or may have: bells were lost): the runner reads it again.
    pub(super) changed: AtomicBool,
    /// Served under a lease (`mode = "exclusive"`, the default).
    pub(super) exclusive: AtomicBool,
    /// The lease this host holds on the agent (`<host>/<instance>:<token>`), if it does.
    pub(super) lease: std::sync::Mutex<Option<String>>,
    /// Make a pass over the agent's pending lists (XAUTOCLAIM) before reading new mail.
    pub(super) reclaim: AtomicBool,
    /// The agent's share of the town's journal
    /// ([`crate::store::policy::RetentionSection::journal_share`]): its handlings' entries are
    /// written trimmed to it.
    pub(super) journal_keep: AtomicU64,
}

pub(super) type Runners = HashMap<String, (Arc<Activity>, tokio::task::JoinHandle<()>)>;

/// The host's own loop: starts a runner per agent, writes the heartbeat, notices idleness.
pub(super) struct Supervisor {
    pub(super) town: Arc<Town>,
    pub(super) runtime: Arc<Runtime>,
    pub(super) lookup: Arc<dyn Lookup>,
    pub(super) opts: HostOptions,
    /// This process's instance id: its claim of `opts.name` and its leases say it.
    pub(super) instance: String,
    pub(super) stop_tx: watch::Sender<bool>,
    pub(super) stop_rx: watch::Receiver<bool>,
    pub(super) started: u64,
    pub(super) runners: Runners,
    pub(super) last_beat: Option<Instant>,
    pub(super) last_sweep: Option<Instant>,
    /// Whether Redis was near its maxmemory at the last sweep (warned once per crossing).
    pub(super) near_full: bool,
    pub(super) idle_rounds: u32,
    /// The reason last reported for each agent that has mail and cannot be served.
    pub(super) reported: HashMap<String, String>,
    pub(super) mailboxes: Arc<Mailboxes>,
    pub(super) peers: Arc<PeerCache>,
    /// The bound on live instances, shared by the runners.
    pub(super) slots: Arc<super::slots::Slots>,
    /// Changes of agents' records, from the event follower.
    pub(super) changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
    pub(super) upkeep: Upkeep,
    /// The served counts as last written beside the heartbeat.
    pub(super) served: Served,
}

/// The shortest time between two rounds, and how often `--until-idle` looks whether the town
/// is idle.
const ROUND: Duration = Duration::from_millis(50);

/// The round's periodic duties, each with when it last ran: the heartbeat, the lease check and
/// the sweep. One place, so that the round's "is it due" and the wait's "when is it due" agree.
struct Duties {
    beat: (Option<Instant>, Duration),
    leases: (Option<Instant>, Duration),
    sweep: (Option<Instant>, Duration),
}

/// Whether a duty last run at `last`, every `every`, is due.
fn due((last, every): (Option<Instant>, Duration)) -> bool {
    last.is_none_or(|t| t.elapsed() >= every)
}

impl Supervisor {
    /// Waits until the next round is due: the heartbeat, the lease check or the sweep, a change
    /// of an agent's record (its runner is woken at once), or the host's stop. An idle host
    /// wakes once a heartbeat, not every [`ROUND`]; with `--until-idle` it looks every `ROUND`.
    pub(super) async fn wait_for_work(&mut self) {
        if self.opts.until_idle {
            tokio::time::sleep(ROUND).await;
            return;
        }
        let mut stop = self.stop_rx.clone();
        let due = tokio::time::Instant::from_std(self.next_due());
        let change = tokio::select! {
            _ = tokio::time::sleep_until(due) => None,
            Some(change) = self.changes.recv() => Some(change),
            _ = stop.changed() => None,
        };
        if let Some(change) = change {
            self.note_change(change);
        }
    }

    /// The periodic duties as they stand now.
    fn duties(&self) -> Duties {
        let c = &self.town.config;
        Duties {
            beat: (
                self.last_beat,
                Duration::from_millis(c.host.heartbeat_ms.max(50)),
            ),
            leases: (self.upkeep.last_lease, c.host.lease() / 3),
            sweep: (self.last_sweep, Duration::from_millis(c.retention.sweep_ms)),
        }
    }

    /// When the next of the round's periodic duties is due, at least [`ROUND`] from now.
    fn next_due(&self) -> Instant {
        let now = Instant::now();
        let d = self.duties();
        let due = [d.beat, d.leases, d.sweep]
            .into_iter()
            .map(|(last, every)| last.map_or(now, |t| t + every))
            .min()
            .unwrap_or(now);
        due.max(now + ROUND)
    }

    /// Starts a runner for each agent that has none (and that this host serves), then takes
    /// the leases of the new ones at once.
    async fn start_runners(&mut self) -> Result<()> {
        let town = self.town.clone();
        let mut started = false;
        let names = town.agent_names().await?;
        // A new number of agents is a new share of the town's budgets for each.
        self.upkeep.shares = town.config.retention.shares(names.len() as u64);
        let keep = self.upkeep.shares.journal;
        for (a, _) in self.runners.values() {
            a.journal_keep.store(keep, Ordering::Relaxed);
        }
        for name in names {
            let wanted = self.opts.agents.is_empty() || self.opts.agents.contains(&name);
            if self.runners.contains_key(&name) || !wanted {
                continue;
            }
            let activity = Arc::new(Activity::default());
            activity.journal_keep.store(keep, Ordering::Relaxed);
            let runner = Runner::new(
                (town.clone(), self.runtime.clone(), self.lookup.clone()),
                &name,
                &self.opts.name,
                (
                    activity.clone(),
                    self.mailboxes.clone(),
                    self.peers.clone(),
                    self.slots.clone(),
                ),
                self.stop_rx.clone(),
            )?;
            self.runners
                .insert(name, (activity, tokio::spawn(runner.run())));
            started = true;
        }
        if started {
            self.take_leases().await?;
        }
        Ok(())
    }

    /// Trims what this host serves and the town-wide history ([`crate::store::sweep`]), and
    /// warns once (log and event) when Redis nears its maxmemory.
    async fn sweep(&mut self) {
        let served = self.mailboxes_to_sweep();
        let town = &self.town;
        let mut chunks: Vec<&[String]> = served.chunks(500).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            match town.db.sweep(chunk, &town.config.retention).await {
                Ok(s) if s != Default::default() => tracing::debug!(
                    trimmed = s.trimmed,
                    archived = s.archived,
                    hosts_forgotten = s.hosts_forgotten,
                    "retention sweep"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("retention sweep: {}", crate::store::error::one_line(&e)),
            }
        }
        let Ok(memory) = town.db.memory().await else {
            return;
        };
        if memory.near_full() && !self.near_full {
            let text = format!(
                "Redis uses {} MiB of its maxmemory {} MiB: writes are refused when it is full; \
                 lower [retention] or raise maxmemory_mb",
                memory.used >> 20,
                memory.max >> 20
            );
            tracing::warn!("{text}");
            let op = crate::store::applier::Op::Log {
                level: "warn".into(),
                text,
            };
            let _ = town.db.apply_ops(&self.opts.name, vec![op]).await;
        }
        self.near_full = memory.near_full();
    }

    /// One round; true when the host should stop (idle, with --until-idle).
    pub(super) async fn round(&mut self) -> Result<bool> {
        let town = &self.town.clone();
        let beat_due = due(self.duties().beat);
        let lease = town.config.host.lease();
        if beat_due {
            // First: after a pause past the claim, the leases it held are checked before
            // anything else this round (its runners may hold mail fenced out already).
            revive_embedded_redis(town).await;
            let sent = Instant::now();
            let claim = town
                .db
                .renew_host(&self.opts.name, &self.instance, None, lease)
                .await?;
            match claim {
                Claim::Renewed => {}
                Claim::Taken => {
                    // It had lapsed (a pause past the lease): another host may have taken leases.
                    tracing::warn!(host = %self.opts.name, "this host's claim of its name had lapsed; checking its leases");
                    self.upkeep.check_leases = true;
                    self.take_leases().await?;
                }
                Claim::Refused(other) => {
                    return Err(crate::store::error::fail(
                        format!(
                            "another `tt host` (instance {other}) took over the name `{}` while \
                             this one did not renew its claim; this one stops",
                            self.opts.name
                        ),
                        "run one process per host name; a pause longer than [host] lease_ms \
                         lets another take the name",
                    ));
                }
            }
            // Renewed, or taken and every lease checked: exclusive agents' mail is read.
            self.mailboxes.claim_renewed(sent, lease);
        }
        // Runners that ended (their agent pruned) go first, and the agents are listed again
        // after one did: an agent spawned again under the same name gets a new runner, even
        // when its spawn was heard before its old runner had ended.
        let before = self.runners.len();
        self.runners
            .retain(|_, (a, _)| !a.done.load(Ordering::Relaxed));
        let ended = self.runners.len() < before;
        let spawned = self.take_changes();
        if spawned || ended || (beat_due && self.agents_changed().await?) {
            self.start_runners().await?;
        }
        if beat_due {
            self.report_stuck().await?;
        }
        // Read now: starting runners above may have just taken the leases.
        if due(self.duties().leases) {
            self.take_leases().await?;
        }
        if beat_due {
            self.last_beat = Some(Instant::now());
            self.watch_peers().await?;
            write_heartbeat(
                town,
                (&self.opts.name, &self.instance),
                self.started,
                &self.runners,
                self.slots.live(),
                &mut self.served,
            )
            .await;
        }
        if due(self.duties().sweep) {
            self.last_sweep = Some(Instant::now());
            self.sweep().await;
        }
        let town = &self.town;
        if !self.opts.until_idle {
            return Ok(false);
        }
        let quiet = self.runners.values().all(|(a, _)| {
            !a.busy.load(Ordering::Relaxed) && a.empty_reads.load(Ordering::Relaxed) >= 1
        });
        let served = self.runners.iter().filter_map(|(n, (a, _))| {
            (blocked(a).is_none() && !a.unserved.load(Ordering::Relaxed)).then_some(n)
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
            // An agent blocked since the last beat (its plugin fails with its first mail) is
            // reported like the others before the host gives up.
            self.report_stuck().await?;
            let reasons: Vec<String> = stuck.iter().map(|(_, why)| why.clone()).collect();
            let stuck: Vec<String> = stuck.into_iter().map(|(n, _)| n).collect();
            return Err(crate::store::error::fail(
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

impl Supervisor {
    /// Says once, as a town event and a log line, which agents have mail they cannot be
    /// served (and the fix); says again when the reason changes.
    async fn report_stuck(&mut self) -> Result<()> {
        let stuck = stuck_mail(&self.town, &self.runners).await?;
        self.reported
            .retain(|n, _| stuck.iter().any(|(s, _)| s == n));
        for (name, why) in stuck {
            if self.reported.get(&name) == Some(&why) {
                continue;
            }
            tracing::error!(agent = %name, "mail waits for an agent that cannot be served: {why}");
            let op = Op::Log {
                level: "error".into(),
                text: format!("cannot be served, its mail waits: {why}"),
            };
            // The log line above already says it: a refused event must not stop the host.
            if let Err(e) = self.town.db.apply_ops(&name, vec![op]).await {
                let e = crate::store::error::one_line(&e);
                tracing::warn!(agent = %name, "cannot record the event: {e}");
            }
            self.reported.insert(name, why);
        }
        Ok(())
    }
}

impl Activity {
    /// Whether this host serves the agent now: a shared one always, an exclusive one while it
    /// holds the lease, a mailbox people read (kept trimmed by this host's sweep) always.
    pub(super) fn serving(&self) -> bool {
        !self.exclusive.load(Ordering::Relaxed)
            || self.unserved.load(Ordering::Relaxed)
            || self
                .lease
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
    }
}

/// Why the runner's agent cannot be served, if it cannot.
fn blocked(a: &Activity) -> Option<String> {
    a.blocked.lock().ok()?.clone()
}

/// The town's own Redis is ours to keep alive: if it died, start it again (its AOF brings the
/// town back); the connections reconnect by themselves.
pub(super) async fn revive_embedded_redis(town: &Town) {
    let RedisTarget::Embedded { appendfsync: fsync } = town.config.redis.target() else {
        return;
    };
    let embedded = crate::store::embedded::Embedded::new(&town.config);
    let maxmemory = town.config.retention.maxmemory_mb;
    if embedded.is_up() {
        return;
    }
    tracing::warn!("the town's Redis is not answering; starting it again");
    match tokio::task::spawn_blocking(move || embedded.ensure(&fsync, maxmemory)).await {
        Ok(Ok(_)) => tracing::info!("the town's Redis is back"),
        Ok(Err(e)) => tracing::error!(
            "cannot restart the town's Redis: {}",
            crate::store::error::one_line(&e)
        ),
        Err(e) => tracing::error!("cannot restart the town's Redis: {e}"),
    }
}

pub(super) async fn watch_signals(stop: watch::Sender<bool>) {
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

/// Spawns agents declared in tinytown.toml (with a role, and a plugin or a role that has a
/// built-in) that do not exist yet.
pub(super) async fn spawn_declared(town: &Town) -> Result<()> {
    for (name, section) in &town.config.agents {
        let Some(role) = &section.role else {
            continue;
        };
        if section.plugin.is_none() && crate::store::builtin::for_role(role).is_none() {
            continue;
        }
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
        if !agent.state.is_served() {
            continue;
        }
        if town.mailbox_depth(name).await? != (0, 0) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Agents that cannot be served but have mail, in name order, with the reason.
async fn stuck_mail(town: &Town, runners: &Runners) -> Result<Vec<(String, String)>> {
    let mut stuck = Vec::new();
    for (name, (a, _)) in runners {
        if let Some(why) = blocked(a) {
            if town.mailbox_depth(name).await? != (0, 0) {
                stuck.push((name.clone(), why));
            }
        }
    }
    stuck.sort();
    Ok(stuck)
}
