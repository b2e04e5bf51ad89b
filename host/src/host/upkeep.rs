//! What a host does for all its agents at once, so that its cost does not grow with the
//! agents that sit idle:
//!
//! - **leases**: a lease holds while its holder's host name is claimed (`store::lease`), so
//!   the heartbeat's renewal of the claim renews them all in one command. Every third of a
//!   lease the host asks only for the leases it lacks (agents another host serves, or new
//!   ones), 500 a script call; all of them only when its claim had lapsed (a long pause), when
//!   another host may have taken some;
//! - **reclaim**: a pass over the pending lists (XAUTOCLAIM) is asked of every runner when the
//!   host starts, when it takes an agent's lease from another holder, and when another host's
//!   claim of its name lapses (it died): right away and once more a lease later, which covers
//!   what it took in its last moments. No host dies, no pass;
//! - **changes**: a change of an agent's record (state, plugin, shadow, prune) rings the bell
//!   the mailbox reader waits on ([`super::mailboxes`]); it wakes that agent's runner, and a
//!   spawn makes the supervisor look for new agents. Idle runners do not poll their record.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use redis::AsyncCommands;

use super::supervisor::{Activity, Supervisor};
use crate::store::policy::Shares;

/// A change the mailbox reader heard on the bell (`super::mailboxes`): the agent it names
/// and the kind of change.
pub(super) struct Change {
    pub(super) agent: String,
    /// A new agent (a spawn): the supervisor starts its runner.
    pub(super) spawned: bool,
}

/// What the supervisor keeps for the work it does for all agents.
#[derive(Default)]
pub(super) struct Upkeep {
    pub(super) last_lease: Option<Instant>,
    /// The claim of this host's name lapsed and was taken again: the leases it held are
    /// checked at the next renewal, since another host may have taken some meanwhile.
    pub(super) check_leases: bool,
    /// Other hosts whose claim lapsed, by name: when it was seen and whether the second pass
    /// (a lease later) was asked for.
    pub(super) dead: HashMap<String, (Instant, bool)>,
    /// The number of agents when last counted; a change means spawns or prunes.
    pub(super) agents: Option<u64>,
    /// Messages each agent had handled when its mailboxes were last swept.
    pub(super) swept: HashMap<String, u64>,
    /// Each agent's shares of the town's budgets now (set with the number of agents), and at
    /// the last sweep.
    pub(super) shares: Shares,
    pub(super) swept_shares: Shares,
    /// An agent was spawned since the supervisor last started runners.
    pub(super) spawned: bool,
}

impl Supervisor {
    /// Takes the leases this host's exclusive agents lack (all of them, checking those it
    /// holds, after its claim lapsed), in a few calls; tells each runner whose lease changed,
    /// and asks a reclaim pass of those it took.
    pub(super) async fn take_leases(&mut self) -> Result<()> {
        let all = std::mem::take(&mut self.upkeep.check_leases);
        let mut asked: Vec<(String, Option<String>)> = Vec::new();
        let mut runners: Vec<Arc<Activity>> = Vec::new();
        for (name, (a, _)) in &self.runners {
            // A mailbox people read is never served: it needs no lease.
            let unserved = a.unserved.load(Ordering::Relaxed);
            let lease = lease_of(a);
            if a.exclusive.load(Ordering::Relaxed)
                && !a.done.load(Ordering::Relaxed)
                && !unserved
                && (all || lease.is_none())
            {
                asked.push((name.clone(), lease));
                runners.push(a.clone());
            }
        }
        self.upkeep.last_lease = Some(Instant::now());
        if asked.is_empty() {
            return Ok(());
        }
        let holder = format!("{}/{}", self.opts.name, self.instance);
        let held = match self.town.db.leases(&asked, &holder).await {
            Ok(held) => held,
            Err(e) => {
                self.upkeep.check_leases |= all;
                return Err(e);
            }
        };
        for ((name, before), (a, now)) in asked.iter().zip(runners.iter().zip(held)) {
            if *before == now {
                continue;
            }
            if now.is_some() && before.is_none() {
                tracing::info!(agent = %name, holder = now.as_deref().unwrap_or(""), "took the agent's lease");
                a.reclaim.store(true, Ordering::Relaxed);
            }
            if now.is_none() {
                tracing::warn!(agent = %name, "another host holds the agent's lease");
            }
            *a.lease.lock().unwrap_or_else(|p| p.into_inner()) = now;
            a.wake.notify_one();
        }
        Ok(())
    }

    /// Looks for other hosts whose claim of their name lapsed, and asks every runner for a
    /// reclaim pass when one is found (and once more a lease later). One round trip, for the
    /// names in the heartbeat hash.
    pub(super) async fn watch_peers(&mut self) -> Result<()> {
        let town = &self.town;
        let mut c = town.db.conn.clone();
        let names: Vec<String> = c.hkeys(town.db.keys.hosts()).await?;
        let peers: Vec<&String> = names.iter().filter(|n| **n != self.opts.name).collect();
        if peers.is_empty() {
            self.upkeep.dead.clear();
            return Ok(());
        }
        let mut p = redis::pipe();
        for n in &peers {
            p.exists(town.db.keys.host_claim(n));
        }
        let alive: Vec<bool> = p.query_async(&mut c).await?;
        let lease = town.config.host.lease();
        let mut pass = false;
        let mut dead = HashMap::new();
        for (n, alive) in peers.into_iter().zip(alive) {
            if alive {
                continue;
            }
            let (seen, again) = match self.upkeep.dead.get(n) {
                None => {
                    tracing::info!(host = %n, "another host stopped renewing its claim; reclaiming its mail");
                    pass = true;
                    (Instant::now(), false)
                }
                Some((seen, false)) if seen.elapsed() >= lease => {
                    pass = true;
                    (*seen, true)
                }
                Some(x) => *x,
            };
            dead.insert(n.clone(), (seen, again));
        }
        self.upkeep.dead = dead;
        if pass {
            for (a, _) in self.runners.values() {
                a.reclaim.store(true, Ordering::Relaxed);
                a.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Wakes the runners of agents whose record changed; true when one was spawned (since
    /// the last call, including changes the supervisor heard while it waited).
    pub(super) fn take_changes(&mut self) -> bool {
        while let Ok(change) = self.changes.try_recv() {
            self.note_change(change);
        }
        std::mem::take(&mut self.upkeep.spawned)
    }

    /// Wakes the runner of the agent whose record changed, and notes a spawn.
    pub(super) fn note_change(&mut self, change: Change) {
        self.upkeep.spawned |= change.spawned;
        if let Some((a, _)) = self.runners.get(&change.agent) {
            a.changed.store(true, Ordering::Relaxed);
            a.wake.notify_one();
        }
    }

    /// Whether the number of agents changed since last counted (one `SCARD`).
    pub(super) async fn agents_changed(&mut self) -> Result<bool> {
        let mut c = self.town.db.conn.clone();
        let n: u64 = c.scard(self.town.db.keys.agents()).await?;
        Ok(self.upkeep.agents.replace(n) != Some(n))
    }

    /// The served agents whose mailboxes and journal may have something to trim: those that
    /// handled their share of mailbox history in messages since their last sweep (a mailbox
    /// is cut to its share once it holds twice that, so between sweeps it holds at most three
    /// times its share of applied mail), all of them the first time, and all of them when the
    /// shares changed (the town's number of agents did). A busy town of many agents, each
    /// taking a little mail, is then not swept agent by agent every `sweep_ms`: the journals
    /// are kept to their share as they are written.
    pub(super) fn mailboxes_to_sweep(&mut self) -> Vec<String> {
        let every = self.upkeep.shares.mailbox.max(1);
        let all = self.upkeep.swept_shares != self.upkeep.shares;
        self.upkeep.swept_shares = self.upkeep.shares;
        let mut out = Vec::new();
        for (name, (a, _)) in &self.runners {
            if !a.serving() {
                continue;
            }
            let handled = a.handled.load(Ordering::Relaxed);
            if sweep_due(self.upkeep.swept.get(name).copied(), handled, every, all) {
                self.upkeep.swept.insert(name.clone(), handled);
                out.push(name.clone());
            }
        }
        out
    }
}

/// Whether an agent that has handled `handled` messages, `last` when last swept (never:
/// `None`), is swept now: the first time, when `all` are, or once it handled `every` more.
fn sweep_due(last: Option<u64>, handled: u64, every: u64, all: bool) -> bool {
    match last {
        None => true,
        Some(last) => all || handled.saturating_sub(last) >= every,
    }
}

fn lease_of(a: &Activity) -> Option<String> {
    a.lease.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::sweep_due;

    #[test]
    fn an_agent_is_swept_the_first_time_then_each_time_it_handled_its_history_again() {
        assert!(sweep_due(None, 0, 1_000, false), "the first time");
        assert!(
            !sweep_due(Some(0), 10, 1_000, false),
            "ten messages since: not yet"
        );
        assert!(sweep_due(Some(0), 1_000, 1_000, false));
        assert!(sweep_due(Some(5), 5, 1_000, true), "new shares: everyone");
    }
}
