//! Many agents' mailboxes read over a few connections.
//!
//! A connection per agent does not scale: ten thousand agents would hold ten thousand Redis
//! connections (Redis refuses clients past `maxclients`, 10,000 by default) and each would wake
//! every read timeout to find nothing. Instead the agents are spread over a fixed number of
//! shards (`[host] connections` minus the command and event connections), and each shard's
//! reader blocks in one `XREADGROUP ... STREAMS <urgent> <inbox> ... > >` over the streams of
//! every agent of its shard that is waiting for mail. Redis answers on the first arrival, with
//! what every stream of the call holds; each waiting agent with entries gets them (urgent
//! first) and leaves the call until it asks again.
//!
//! Fairness: `COUNT` bounds what one call takes from each stream, and an agent that is
//! handling mail is not in the call at all (its runner reads its next batch itself, without
//! blocking, on the command connection), so a busy agent cannot crowd out the others of its
//! shard. Idleness: an idle town is one blocked call per shard, woken only by mail, by an agent
//! joining the call (`CLIENT UNBLOCK`, so it does not wait for the block to end) or by the
//! block timing out every [`BLOCK`].
//!
//! Entries a reader took for an agent that stopped waiting meanwhile are kept for its next
//! wait (they are pending for this host: nothing is lost either way).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{oneshot, watch, Notify};

use super::runner::Delivery;
use crate::store::conn::Conn;
use crate::store::keys::GROUP;
use crate::store::limits::READ_BATCH;
use crate::store::model::Stream;
use crate::store::streams;
use crate::town::Town;

/// How long one shard's read blocks when nothing wakes it.
const BLOCK: Duration = Duration::from_secs(5);
/// On a cluster `CLIENT UNBLOCK` cannot be aimed at the reader's node, so reads block for less.
const CLUSTER_BLOCK: Duration = Duration::from_millis(250);

type Reply = Result<Vec<Delivery>, String>;

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Shard {
    waiting: Mutex<HashMap<String, Waiter>>,
    /// Entries read for an agent that was no longer waiting: its next wait returns them.
    kept: Mutex<HashMap<String, Vec<Delivery>>>,
    /// Wakes the reader when an agent joins and the reader is not in a call.
    joined: Notify,
    /// The reader's client id while it is in a blocking call (0 when not, or when a joiner
    /// has taken it upon itself to end the call).
    blocked_in: AtomicU64,
    /// Counts the reader's calls: a joiner ending one stops when the next has begun.
    calls: AtomicU64,
}

/// The host's mailbox readers (one per shard).
pub(super) struct Mailboxes {
    shards: Vec<Arc<Shard>>,
    town: Arc<Town>,
    next_id: AtomicU64,
}

/// Removes a wait that ended without an answer (the runner was woken otherwise).
struct Registration<'a> {
    shard: &'a Shard,
    agent: &'a str,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut w = self.shard.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if w.get(self.agent).is_some_and(|x| x.id == self.id) {
            w.remove(self.agent);
        }
    }
}

impl Mailboxes {
    /// Starts `readers` shard readers for consumer `consumer`; they stop with `stop`.
    pub(super) async fn start(
        town: Arc<Town>,
        consumer: &str,
        readers: usize,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<Mailboxes>> {
        let cluster = town.db.is_cluster();
        let block = if cluster { CLUSTER_BLOCK } else { BLOCK };
        let mut shards = Vec::new();
        for _ in 0..readers.max(1) {
            let shard = Arc::new(Shard::default());
            let conn = town.db.dedicated(block).await?;
            let reader = Reader {
                shard: shard.clone(),
                town: town.clone(),
                consumer: consumer.to_string(),
                conn,
                block,
                unblockable: !cluster,
                client: None,
            };
            tokio::spawn(reader.run(stop.clone()));
            shards.push(shard);
        }
        Ok(Arc::new(Mailboxes {
            shards,
            town,
            next_id: AtomicU64::new(1),
        }))
    }

    fn shard(&self, agent: &str) -> &Shard {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        agent.hash(&mut h);
        &self.shards[(h.finish() as usize) % self.shards.len()]
    }

    /// Waits for `agent`'s next new mail (urgent first). Cancel-safe: dropping the future
    /// leaves the call, and entries read meanwhile are kept for the next wait. `Err` when its
    /// mailbox cannot be read (say, the agent was pruned and its streams are gone).
    pub(super) async fn wait(&self, agent: &str) -> Result<Vec<Delivery>> {
        let shard = self.shard(agent);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            // Under the waiting lock, as the reader keeps entries: none can slip in between.
            let mut waiting = shard.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let kept = shard
                .kept
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(agent);
            if let Some(kept) = kept {
                return Ok(kept);
            }
            waiting.insert(agent.to_string(), Waiter { id, tx });
        }
        let _registration = Registration { shard, agent, id };
        shard.joined.notify_one();
        self.unblock(shard).await;
        match rx.await {
            Ok(Ok(batch)) => Ok(batch),
            Ok(Err(e)) => Err(anyhow::anyhow!("{e}")),
            Err(_) => Ok(Vec::new()),
        }
    }
}

impl Mailboxes {
    /// Ends the shard reader's blocking call (if it is in one) so that its next call includes
    /// the agent that just joined. One joiner ends each call (the first to take its client id
    /// from `blocked_in`); the others that join meanwhile are in the next call anyway, so ten
    /// thousand agents joining at once cost one `CLIENT UNBLOCK` per call, not one each.
    /// `CLIENT UNBLOCK` may reach Redis before the call does; then it is sent again while the
    /// reader is still in that call.
    async fn unblock(&self, shard: &Shard) {
        let client = shard.blocked_in.load(Ordering::SeqCst);
        let call = shard.calls.load(Ordering::SeqCst);
        if client == 0
            || shard
                .blocked_in
                .compare_exchange(client, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
        let mut c = self.town.db.conn.clone();
        for _ in 0..100 {
            let done: i64 = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(client)
                .query_async(&mut c)
                .await
                .unwrap_or(1);
            if done == 1 || shard.calls.load(Ordering::SeqCst) != call {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

struct Reader {
    shard: Arc<Shard>,
    town: Arc<Town>,
    consumer: String,
    conn: Conn,
    block: Duration,
    unblockable: bool,
    /// This reader's client id, asked once per connection (`CLIENT UNBLOCK` needs it).
    client: Option<u64>,
}

impl Reader {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            let agents: Vec<String> = {
                let w = self.shard.waiting.lock().unwrap_or_else(|p| p.into_inner());
                w.keys().cloned().collect()
            };
            if agents.is_empty() {
                tokio::select! {
                    _ = self.shard.joined.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let read = tokio::select! {
                r = self.read(&agents) => r,
                _ = stop.changed() => break,
            };
            self.shard.blocked_in.store(0, Ordering::SeqCst);
            if read.is_err() {
                // The connection may have been made again: its id is asked anew.
                self.client = None;
            }
            match read {
                Ok(found) => {
                    backoff = Duration::from_millis(100);
                    self.hand_out(found);
                }
                Err(e) => {
                    let text = crate::store::error::one_line(&e);
                    // A mailbox without its group fails the whole call: tell its agent, whose
                    // runner looks again, and read the others.
                    if let Some(agent) = agents.iter().find(|a| self.names_mailbox(&text, a)) {
                        let waiter = self
                            .shard
                            .waiting
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(agent);
                        if let Some(w) = waiter {
                            let _ = w.tx.send(Err(text));
                        }
                        continue;
                    }
                    tracing::warn!("mailbox read: {text}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn names_mailbox(&self, error: &str, agent: &str) -> bool {
        let k = &self.town.db.keys;
        [k.urgent(agent), k.inbox(agent)]
            .iter()
            .any(|s| error.contains(&format!("'{s}'")))
    }

    /// One blocking read over the mailboxes of `agents`; the entries found, by agent.
    async fn read(&mut self, agents: &[String]) -> Result<HashMap<String, Vec<Delivery>>> {
        if self.unblockable {
            let id = match self.client {
                Some(id) => id,
                None => {
                    let id: u64 = redis::cmd("CLIENT")
                        .arg("ID")
                        .query_async(&mut self.conn)
                        .await?;
                    *self.client.insert(id)
                }
            };
            self.shard.calls.fetch_add(1, Ordering::SeqCst);
            self.shard.blocked_in.store(id, Ordering::SeqCst);
            // An agent that joined before the id was published would wait for the block.
            let late = {
                let asked: std::collections::HashSet<&String> = agents.iter().collect();
                let w = self.shard.waiting.lock().unwrap_or_else(|p| p.into_inner());
                w.keys().any(|a| !asked.contains(a))
            };
            if late {
                return Ok(HashMap::new());
            }
        }
        let k = &self.town.db.keys;
        let mut owner: HashMap<String, (&str, Stream)> = HashMap::new();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS");
        for a in agents {
            for (key, kind) in [(k.urgent(a), Stream::Urgent), (k.inbox(a), Stream::Inbox)] {
                cmd.arg(&key);
                owner.insert(key, (a.as_str(), kind));
            }
        }
        for _ in 0..agents.len() * 2 {
            cmd.arg(">");
        }
        let v: redis::Value = cmd.query_async(&mut self.conn).await?;
        let mut found: HashMap<String, Vec<Delivery>> = HashMap::new();
        for (stream, entries) in streams::read_reply(&v) {
            let Some((agent, kind)) = owner.get(&stream) else {
                continue;
            };
            let out = found.entry(agent.to_string()).or_default();
            out.extend(entries.into_iter().map(|entry| Delivery {
                stream: stream.clone(),
                kind: *kind,
                entry,
                redelivered: false,
            }));
        }
        Ok(found)
    }

    /// Gives each agent what was read for it, urgent first.
    fn hand_out(&self, found: HashMap<String, Vec<Delivery>>) {
        for (agent, mut batch) in found {
            if batch.is_empty() {
                continue;
            }
            batch.sort_by_key(|d| d.kind != Stream::Urgent);
            let mut batch = Some(batch);
            while let Some(b) = batch.take() {
                let mut waiting = self.shard.waiting.lock().unwrap_or_else(|p| p.into_inner());
                let Some(w) = waiting.remove(&agent) else {
                    // Nobody waits: kept for the agent's next wait (under the waiting lock,
                    // which that wait takes to look here).
                    self.shard
                        .kept
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(agent.clone())
                        .or_default()
                        .extend(b);
                    break;
                };
                drop(waiting);
                // A waiter that went away meanwhile: try whoever waits now.
                if let Err(Ok(b)) = w.tx.send(Ok(b)) {
                    batch = Some(b);
                }
            }
        }
    }
}
