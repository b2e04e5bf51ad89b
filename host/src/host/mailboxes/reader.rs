//! The host's one reader: blocks on the town's bell, and for the agents whose bells it hears
//! (or, on a resync, for every waiting agent) reads their mailboxes, many per call, and hands
//! each its batch ([`Mailboxes::hand_out`]).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{mpsc, watch};

use super::{read, Mailboxes, AGENTS_PER_READ, BELLS_PER_READ, BLOCK, RESYNC};
use crate::host::upkeep::Change;
use crate::store::conn::Conn;
use crate::store::limits::READ_BATCH;
use crate::store::streams;

pub(super) struct Reader {
    mailboxes: Arc<Mailboxes>,
    changes: mpsc::UnboundedSender<Change>,
    conn: Conn,
    /// The last bell heard.
    last: String,
    resynced: Instant,
}

impl Reader {
    /// A reader for `mailboxes` on its own connection, hearing bells after `last`.
    pub(super) fn new(
        mailboxes: Arc<Mailboxes>,
        changes: mpsc::UnboundedSender<Change>,
        conn: Conn,
        last: String,
    ) -> Reader {
        Reader {
            mailboxes,
            changes,
            conn,
            last,
            resynced: Instant::now(),
        }
    }

    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        let mut resync = false;
        while !*stop.borrow() {
            let heard = tokio::select! {
                r = self.listen() => r,
                _ = stop.changed() => break,
            };
            let rung = match heard {
                Ok((rung, lost)) => {
                    backoff = Duration::from_millis(100);
                    resync |= lost;
                    rung
                }
                Err(e) => {
                    let text = crate::store::error::one_line(&e);
                    tracing::warn!("mailbox bell: {text}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    // A bell rung meanwhile may be lost with the connection's reply.
                    resync = true;
                    continue;
                }
            };
            // Mail held back while the claim was stale is read once it is fresh again.
            let catch_up = self.mailboxes.claim_fresh()
                && self.mailboxes.held_back.swap(false, Ordering::Relaxed);
            let answered = if resync || catch_up || self.resynced.elapsed() >= RESYNC {
                let all: Vec<String> = self.mailboxes.boxes().keys().cloned().collect();
                if resync {
                    // Changes may have been lost too: every agent looks at its record again,
                    // and the supervisor for new agents.
                    for agent in all.iter().cloned().chain([String::new()]) {
                        let spawned = agent.is_empty();
                        let _ = self.changes.send(Change { agent, spawned });
                    }
                }
                self.resynced = Instant::now();
                self.answer(all, true).await
            } else {
                self.answer(rung.into_iter().collect(), false).await
            };
            // A read that failed is made good by reading every mailbox next time.
            resync = !answered;
        }
    }

    /// Waits for bells: the agents with new mail they name (changes of records go to the
    /// supervisor), and whether bells this host had not heard were trimmed away (it fell more
    /// than the bell's length behind).
    async fn listen(&mut self) -> Result<(HashSet<String>, bool)> {
        let bell = self.mailboxes.town.db.keys.bell();
        let entries = streams::read_after(
            &mut self.conn,
            &bell,
            &self.last,
            Some(BELLS_PER_READ),
            BLOCK,
        )
        .await?;
        let mut lost = false;
        if entries.len() >= BELLS_PER_READ {
            // Behind: were bells after the last one heard trimmed before they were read? The
            // applier trims with `MAXLEN ~`, which moves the stream's first entry and leaves
            // `max-deleted-entry-id` (only `XDEL` sets it) alone: the first entry coming after
            // the last bell heard says that bell is gone, and maybe others after it.
            let info: redis::Value = redis::cmd("XINFO")
                .arg("STREAM")
                .arg(&bell)
                .query_async(&mut self.conn)
                .await?;
            let info = streams::flat_map(&info);
            let id = |field: &str| info.get(field).and_then(streams::text);
            let first = id("recorded-first-entry-id").or_else(|| {
                let entry = info.get("first-entry")?;
                streams::text(streams::array(entry).first()?)
            });
            let deleted = id("max-deleted-entry-id").unwrap_or_default();
            lost = id_after(&deleted, &self.last)
                || first.is_some_and(|first| id_after(&first, &self.last));
            if lost {
                tracing::info!(
                    "bells this host had not heard were trimmed (it fell more than the bell's \
                     length behind): reading every mailbox"
                );
            }
        }
        if let Some(e) = entries.last() {
            self.last = e.id.clone();
        }
        let mut rung = HashSet::new();
        for e in &entries {
            let field = |name: &[u8]| {
                e.fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            };
            if let Some(agent) = field(b"a") {
                rung.insert(agent);
            } else if let Some(agent) = field(b"c") {
                let spawned = field(b"spawned").as_deref() == Some("1");
                let _ = self.changes.send(Change { agent, spawned });
            }
        }
        Ok((rung, lost))
    }

    /// Reads the mailboxes of the `agents` (rung, or `all` of them) that wait here holding an
    /// instance slot, tells those that wait without one (or, when they were not rung, looks
    /// for their mail with a read of one entry a stream), and marks the others for their next
    /// wait (and, while the claim is stale, the exclusive ones for when it is fresh again).
    /// False when a read failed.
    async fn answer(&mut self, agents: Vec<String>, all: bool) -> bool {
        let (mut waiting, mut looked) = (Vec::new(), Vec::new());
        let fresh = self.mailboxes.claim_fresh();
        {
            let mut boxes = self.mailboxes.boxes();
            for a in agents {
                if let Some(b) = boxes.get_mut(&a) {
                    if b.waiter.is_some() && (fresh || !b.exclusive) {
                        if b.ready {
                            waiting.push(a);
                        } else if all {
                            // Told only if mail is there: a slot taken for every idle agent
                            // on each resync would drop the instances of those at work.
                            looked.push(a);
                        } else if let Some(w) = b.waiter.take() {
                            // Woken with nothing: it takes a slot, then reads.
                            b.rang = true;
                            let _ = w.tx.send(None);
                        }
                    } else {
                        b.rang = true;
                        if b.waiter.is_some() {
                            self.mailboxes.held_back.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        self.read_all(&waiting, READ_BATCH).await && self.read_all(&looked, 1).await
    }

    /// Reads up to `count` entries of each stream of the `agents` and hands them out (with the
    /// rest, if any, read by each agent's next wait). False when a read failed.
    async fn read_all(&mut self, agents: &[String], count: usize) -> bool {
        for chunk in agents.chunks(AGENTS_PER_READ) {
            let mut chunk = chunk.to_vec();
            while !chunk.is_empty() {
                let m = &self.mailboxes;
                match read(&m.town, &m.consumer, &mut self.conn, &chunk, ">", count).await {
                    Ok(found) => {
                        m.hand_out(found, count < READ_BATCH);
                        break;
                    }
                    Err(e) => {
                        let text = crate::store::error::one_line(&e);
                        // A mailbox without its group fails the whole call: tell its agent,
                        // whose runner looks again, and read the others.
                        let Some(i) = chunk.iter().position(|a| names_mailbox(m, &text, a)) else {
                            tracing::warn!("mailbox read: {text}");
                            return false;
                        };
                        m.fail(&chunk.remove(i), text);
                    }
                }
            }
        }
        true
    }
}

fn names_mailbox(m: &Mailboxes, error: &str, agent: &str) -> bool {
    let k = &m.town.db.keys;
    [k.urgent(agent), k.inbox(agent)]
        .iter()
        .any(|s| error.contains(&format!("'{s}'")))
}

/// Whether stream id `a` comes after `b`.
fn id_after(a: &str, b: &str) -> bool {
    streams::id_order(a) > streams::id_order(b)
}

#[cfg(test)]
mod tests {
    use super::id_after;

    #[test]
    fn stream_ids_compare_by_time_then_sequence() {
        assert!(id_after("1700000000001-0", "1700000000000-9"));
        assert!(id_after("5-10", "5-9"));
        assert!(!id_after("5-9", "5-9"));
        assert!(!id_after("0-0", "5-1"));
        assert!(!id_after("", "5-1"));
    }
}
