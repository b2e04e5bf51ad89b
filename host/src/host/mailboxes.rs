//! Every agent's mailbox waited on over one connection, at a cost that does not grow with the
//! number of agents.
//!
//! A connection per agent does not scale: ten thousand agents would hold ten thousand Redis
//! connections (Redis refuses clients past `maxclients`, 10,000 by default). One blocking
//! `XREADGROUP` over many agents' streams does not scale either: Redis registers and
//! unregisters the caller on every stream named, so each wake-up costs in proportion to the
//! agents waiting (about 1.5 ms for 330 agents), and it happens for every message.
//!
//! So the write that puts mail in a mailbox also rings the town's bell: one entry naming the
//! agent in a capped stream (`Keys::bell`, written by the applier in the same script, so the
//! mail is there when its bell is heard; once per script call and agent, however many messages
//! the call gives it, since a wait reads the whole mailbox). The host's one reader blocks on the
//! bell (`XREAD`, a single stream), and for the bells of its agents that are waiting it reads
//! their mailboxes (`XREADGROUP` without blocking, urgent first, `COUNT`-bounded per stream,
//! many agents per call) and hands each its batch. An idle town is one blocked call, woken by
//! mail or by the block timing out every [`BLOCK`].
//!
//! An agent that is not waiting when its bell rings (it is handling mail) is marked, and its
//! next wait reads its mailbox before waiting; so is every agent's first wait. An agent whose
//! last read filled a batch reads its next one itself, without blocking ([`super::runner`]), so
//! a busy agent cannot crowd out the others. Every [`RESYNC`], after a failed read and when
//! bells were trimmed before this host read them, every waiting mailbox is read, so no mail
//! waits for a bell that was lost.
//!
//! The bell also names the agents whose record changed (spawned, stopped, swapped, given a
//! shadow): the reader passes them to the supervisor ([`super::upkeep`]), so a host needs no
//! connection following the town's events, whose every entry it would have to read.
//!
//! Mail is read only for an agent whose runner holds an instance slot (`super::slots`): one
//! waiting without a slot is told its bell rang, takes a slot, and reads its mailbox itself.
//! So the mail in a host's hands is bounded by its slots, whatever the backlogs of its agents
//! ([`Mailbox::ready`]). A resync looks for such an agent's mail with a read of one entry.
//!
//! Entries read for an agent that stopped waiting meanwhile are kept for its next wait (they
//! are pending for this host: nothing is lost either way).
//!
//! An exclusive agent's mail is read only while this host's claim of its name is known to hold
//! ([`Mailboxes::claim_fresh`]): its leases hold exactly as long (`store::lease`). A host that
//! was paused past its claim would otherwise read mail as it wakes, before its supervisor finds
//! the leases taken, and leave that mail pending in its own hands, fenced out, until a reclaim.
//! Mail held back so waits for the supervisor's next renewal, which checks the leases first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{mpsc, oneshot, watch};

mod reader;

use reader::Reader;

use super::runner::Delivery;
use super::upkeep::Change;
use crate::store::conn::Conn;
use crate::store::keys::GROUP;
use crate::store::limits::READ_BATCH;
use crate::store::model::Stream;
use crate::store::streams;
use crate::town::Town;

/// How long one wait on the bell blocks when nothing rings (short: on a cluster a moved slot
/// is only noticed by the next call, and a call on a quiet bell costs next to nothing).
const BLOCK: Duration = Duration::from_secs(1);
/// How often every waiting mailbox is read whatever the bell said.
const RESYNC: Duration = Duration::from_secs(30);
/// Bells taken per read of the bell.
const BELLS_PER_READ: usize = 1000;
/// Agents whose mailboxes one `XREADGROUP` reads.
const AGENTS_PER_READ: usize = 256;

/// Wakes a wait: `None` when there is mail in its mailbox's `kept` (or, for a runner without
/// an instance slot, when its bell rang), else why its mailbox could not be read. The mail
/// itself stays in `kept` until the wait takes it, so a wait that is dropped just after it was
/// woken loses nothing.
type Wake = Option<String>;

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Wake>,
}

/// What the host knows of one of its agents' mailboxes.
struct Mailbox {
    waiter: Option<Waiter>,
    /// Mail may have come while nobody waited: the next wait reads before it waits.
    rang: bool,
    /// Entries read for it and not yet taken by a wait.
    kept: Vec<Delivery>,
    /// Served under a lease (`mode = "exclusive"`), as its last wait said.
    exclusive: bool,
    /// Its runner holds an instance slot, as its last wait said: only then is mail read for it.
    /// Otherwise its wait ends with nothing and `rang` set, and the runner takes a slot before
    /// it reads. Read for every agent woken, 10,000 agents with a backlog of 100 each, queueing
    /// for 1,000 slots with up to 64 messages each in hand, took the host to 488 MiB.
    ready: bool,
}

impl Mailbox {
    /// Not known before: its first wait reads whatever came before the host listened.
    fn new() -> Mailbox {
        Mailbox {
            waiter: None,
            rang: true,
            kept: Vec::new(),
            exclusive: false,
            ready: false,
        }
    }

    /// What was read for it, urgent first (it may come from several reads, each urgent first).
    fn take(&mut self) -> Vec<Delivery> {
        let mut batch = std::mem::take(&mut self.kept);
        batch.sort_by_key(|d| d.kind != Stream::Urgent);
        batch
    }
}

/// The host's mailboxes and their reader.
pub(super) struct Mailboxes {
    town: Arc<Town>,
    consumer: String,
    boxes: Mutex<HashMap<String, Mailbox>>,
    next_id: AtomicU64,
    /// Until when (ms after `epoch`) this host's claim of its name is known to hold.
    claim_until: AtomicU64,
    epoch: Instant,
    /// An exclusive agent's mail was left unread for a stale claim: read it once fresh again.
    held_back: AtomicBool,
}

/// Removes a wait that ended without an answer (the runner was woken otherwise).
struct Registration<'a> {
    mailboxes: &'a Mailboxes,
    agent: &'a str,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut boxes = self.mailboxes.boxes();
        if let Some(b) = boxes.get_mut(self.agent) {
            if b.waiter.as_ref().is_some_and(|w| w.id == self.id) {
                b.waiter = None;
            }
        }
    }
}

impl Mailboxes {
    /// Starts listening on the bell for consumer `consumer` (from its newest entry: what came
    /// before is read by each agent's first wait); the reader stops with `stop`.
    /// Changes of agents' records heard on the bell go to `changes`. Exclusive agents' mail is
    /// read once [`Mailboxes::claim_renewed`] is first called.
    pub(super) async fn start(
        town: Arc<Town>,
        consumer: &str,
        changes: mpsc::UnboundedSender<Change>,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<Mailboxes>> {
        let mut conn = town.db.dedicated(BLOCK).await?;
        let newest: redis::Value = redis::cmd("XREVRANGE")
            .arg(town.db.keys.bell())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let last = streams::entries(&newest)
            .pop()
            .map_or_else(|| "0-0".to_string(), |e| e.id);
        let mailboxes = Arc::new(Mailboxes {
            town,
            consumer: consumer.to_string(),
            boxes: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            claim_until: AtomicU64::new(0),
            epoch: Instant::now(),
            held_back: AtomicBool::new(false),
        });
        let reader = Reader::new(mailboxes.clone(), changes, conn, last);
        tokio::spawn(reader.run(stop));
        Ok(mailboxes)
    }

    fn boxes(&self) -> MutexGuard<'_, HashMap<String, Mailbox>> {
        self.boxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The host's claim of its name (and so every lease it holds) was renewed or taken by a
    /// request sent at `sent`, with time to live `ttl`: it holds until `sent + ttl` at least.
    /// A tenth of that is kept as margin for the delay of a read on its way to Redis.
    pub(super) fn claim_renewed(&self, sent: Instant, ttl: Duration) {
        let until = sent.saturating_duration_since(self.epoch) + ttl - ttl / 10;
        self.claim_until
            .fetch_max(until.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether this host's claim is known to hold now.
    pub(super) fn claim_fresh(&self) -> bool {
        (self.epoch.elapsed().as_millis() as u64) < self.claim_until.load(Ordering::Relaxed)
    }

    /// Waits for `agent`'s next new mail (urgent first). The runner of an `exclusive` agent
    /// waits only while the claim is fresh; the bells heard during the wait are answered only
    /// while it still is ([`Reader`]). Cancel-safe: dropping the future leaves the wait, and
    /// entries read meanwhile are kept for the next wait. `Err` when its mailbox cannot be read
    /// (say, the agent was pruned and its streams are gone). A runner that holds no instance
    /// slot (not `ready`) is woken with nothing when mail comes ([`Mailboxes::rang`] says so).
    pub(super) async fn wait(
        self: &Arc<Self>,
        agent: &str,
        exclusive: bool,
        ready: bool,
    ) -> Result<Vec<Delivery>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let rx = {
            let mut boxes = self.boxes();
            let b = boxes.entry(agent.to_string()).or_insert_with(Mailbox::new);
            b.exclusive = exclusive;
            b.ready = ready;
            if !b.kept.is_empty() {
                return Ok(b.take());
            }
            if b.rang && !ready {
                return Ok(Vec::new());
            }
            // Registered under the lock the reader takes to hear a bell: a bell heard from
            // here on reads for this wait, one heard before marked the mailbox.
            let (tx, rx) = oneshot::channel();
            b.waiter = Some(Waiter { id, tx });
            if std::mem::take(&mut b.rang) {
                // Read in a task of its own, so that entries read are never dropped with a
                // wait that ends meanwhile.
                let (this, agent) = (self.clone(), agent.to_string());
                tokio::spawn(async move {
                    let mut c = this.town.db.conn.clone();
                    let one = [agent];
                    match read(&this.town, &this.consumer, &mut c, &one, ">", READ_BATCH).await {
                        Ok(found) => this.hand_out(found, false),
                        Err(e) => this.fail(&one[0], crate::store::error::one_line(&e)),
                    }
                });
            }
            rx
        };
        let _registration = Registration {
            mailboxes: self,
            agent,
            id,
        };
        match rx.await {
            Ok(Some(e)) => Err(anyhow::anyhow!("{e}")),
            Ok(None) | Err(_) => {
                let mut boxes = self.boxes();
                Ok(boxes.get_mut(agent).map(Mailbox::take).unwrap_or_default())
            }
        }
    }

    /// Puts what was read for each agent in its mailbox's `kept` and wakes its wait; when
    /// `more` may be left, its next wait reads again. (An agent no longer served here leaves
    /// its entries pending, for whoever serves it.)
    fn hand_out(&self, found: HashMap<String, Vec<Delivery>>, more: bool) {
        let mut boxes = self.boxes();
        for (agent, batch) in found {
            let Some(b) = boxes.get_mut(&agent).filter(|_| !batch.is_empty()) else {
                continue;
            };
            b.kept.extend(batch);
            b.rang |= more;
            if let Some(w) = b.waiter.take() {
                let _ = w.tx.send(None);
            }
        }
    }

    /// Tells `agent`'s wait that its mailbox could not be read (or, when it no longer waits,
    /// has its next wait read again).
    fn fail(&self, agent: &str, why: String) {
        let mut boxes = self.boxes();
        let Some(b) = boxes.get_mut(agent) else {
            return;
        };
        match b.waiter.take() {
            Some(w) => {
                let _ = w.tx.send(Some(why));
            }
            None => b.rang = true,
        }
    }

    /// Whether mail may wait in `agent`'s mailbox, not read yet: a bell rang while it was not
    /// waiting (or it never waited), and nothing read for it is kept.
    pub(super) fn rang(&self, agent: &str) -> bool {
        self.boxes()
            .get(agent)
            .is_none_or(|b| b.rang && b.kept.is_empty())
    }

    /// The agent is about to read its mailbox itself: a bell heard before is answered by that.
    pub(super) fn reading(&self, agent: &str) {
        let mut boxes = self.boxes();
        boxes
            .entry(agent.to_string())
            .or_insert_with(Mailbox::new)
            .rang = false;
    }

    /// The agent is no longer served here (its runner ended).
    pub(super) fn close(&self, agent: &str) {
        self.boxes().remove(agent);
    }
}

/// Reads the mailboxes of `agents` without blocking, from `from` (`>`: new mail; `0`: what
/// this host was given before and has not acknowledged, so redelivered), up to `count` entries
/// a stream: what each has, urgent first.
pub(super) async fn read(
    town: &Town,
    consumer: &str,
    conn: &mut Conn,
    agents: &[String],
    from: &str,
    count: usize,
) -> Result<HashMap<String, Vec<Delivery>>> {
    let k = &town.db.keys;
    let mut owner: HashMap<String, (&str, Stream)> = HashMap::new();
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS");
    for a in agents {
        for (key, kind) in [(k.urgent(a), Stream::Urgent), (k.inbox(a), Stream::Inbox)] {
            cmd.arg(&key);
            owner.insert(key, (a.as_str(), kind));
        }
    }
    for _ in 0..agents.len() * 2 {
        cmd.arg(from);
    }
    let v: redis::Value = cmd.query_async(conn).await?;
    let mut found: HashMap<String, Vec<Delivery>> = HashMap::new();
    for (stream, entries) in streams::read_reply(&v) {
        let Some((agent, kind)) = owner.get(&stream) else {
            continue;
        };
        found
            .entry(agent.to_string())
            .or_default()
            .extend(entries.into_iter().map(|entry| Delivery {
                stream: stream.clone(),
                kind: *kind,
                entry,
                redelivered: from != ">",
            }));
    }
    for batch in found.values_mut() {
        batch.sort_by_key(|d| d.kind != Stream::Urgent);
    }
    Ok(found)
}
