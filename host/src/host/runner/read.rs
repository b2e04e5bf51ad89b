//! Reading an agent's next batch: mail held from before, our own leftovers (after a restart),
//! a reclaim pass over dead hosts' entries when the supervisor asks, then new mail: at once
//! after a full batch (the agent is busy), else waiting for the host's mailbox reader
//! ([`crate::host::mailboxes`]), where an idle agent also gives its instance up.

use std::sync::atomic::Ordering;

use anyhow::Result;

use super::{Delivery, Runner};
use crate::host::mailboxes;
use crate::store::keys::GROUP;
use crate::store::limits::READ_BATCH;
use crate::store::model::Stream;
use crate::store::streams;

impl Runner {
    /// Reads the next batch: mail held from before, our own leftovers, stale entries of dead
    /// hosts (when the supervisor asks for a pass), then new mail, urgent before normal: at
    /// once after a batch, else waiting for the host's mailbox reader.
    pub(super) async fn read(&mut self) -> Result<Vec<Delivery>> {
        if !self.held.is_empty() {
            return Ok(std::mem::take(&mut self.held));
        }
        let keys = &self.town.db.keys;
        let streams = [
            (keys.urgent(&self.name), Stream::Urgent),
            (keys.inbox(&self.name), Stream::Inbox),
        ];
        let lease = self.town.config.host.lease();
        let mut conn = self.town.db.conn.clone();
        // A pass over the pending lists goes on from its cursor until it has seen them all.
        let mid_pass = self.claim_cursor.iter().any(|c| c != "0-0");
        let reclaim =
            !self.recovering && (mid_pass || self.activity.reclaim.load(Ordering::Relaxed));
        // Mail came while it was not waiting, or while it held no instance slot: read here,
        // where a slot given up cannot leave mail read for it and not handled.
        let rang = !(self.recovering || self.hot) && self.mailboxes.rang(&self.name);
        // Mail is read only with a slot to handle it in (see `crate::host::mailboxes`).
        if (reclaim || rang || self.recovering || self.hot) && !self.take_slot().await {
            return Ok(Vec::new());
        }
        if reclaim {
            if !mid_pass {
                self.activity.reclaim.store(false, Ordering::Relaxed);
            }
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
                    .query_async(&mut conn)
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
        if !(self.recovering || self.hot || rang) {
            return self.wait().await;
        }
        let id = if self.recovering {
            "0"
        } else {
            // What rang meanwhile is read now.
            self.mailboxes.reading(&self.name);
            ">"
        };
        let one = std::slice::from_ref(&self.name);
        let out = mailboxes::read(&self.town, &self.consumer, &mut conn, one, id, READ_BATCH)
            .await?
            .remove(&self.name)
            .unwrap_or_default();
        if self.recovering && !out.is_empty() {
            tracing::info!(agent = %self.name, n = out.len(), "resuming messages left in hand by a previous run");
        }
        self.hot = more_may_wait(&out);
        if self.recovering && out.is_empty() {
            // Caught up: new mail next (after the reclaim pass, if one is asked for).
            self.recovering = false;
        }
        Ok(out)
    }

    /// Waits for the host's mailbox reader to bring new mail; wakes empty on a poke or a stop,
    /// and drops the instance after `idle_drop` without mail.
    async fn wait(&mut self) -> Result<Vec<Delivery>> {
        self.activity.empty_reads.fetch_add(1, Ordering::Relaxed);
        let holds = self.slot.is_some() || self.live.as_ref().is_some_and(|l| l.instance.is_some());
        let limit = self.idle_drop.filter(|_| holds);
        let mut stop = self.stop.clone();
        let (mailboxes, activity, name, slots, exclusive) = (
            self.mailboxes.clone(),
            self.activity.clone(),
            self.name.clone(),
            self.slots.clone(),
            self.exclusive,
        );
        let timer = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        // Another agent needs this one's slot (see `super::slots`).
        let asked = async {
            if holds {
                slots.asked().await
            } else {
                std::future::pending().await
            }
        };
        // Without a slot, mail wakes it with nothing: its next read takes one, then reads.
        let ready = self.slot.is_some();
        let (out, drop_it) = tokio::select! {
            r = mailboxes.wait(&name, exclusive, ready) => (r?, false),
            _ = activity.wake.notified() => (Vec::new(), false),
            _ = stop.changed() => (Vec::new(), false),
            _ = timer => (Vec::new(), true),
            _ = asked => (Vec::new(), true),
        };
        if drop_it {
            tracing::debug!(agent = %self.name, "idle: instance dropped");
            self.drop_instance();
        }
        self.hot = more_may_wait(&out);
        Ok(out)
    }

    /// Takes an instance slot unless the runner holds one (waiting for an idle holder to give
    /// one up, see [`crate::host::slots`]). False when the host stops first. A poke waits for
    /// the slot: a wait for one given up leaves its ask behind, and each ask left over takes
    /// an idle agent's instance.
    async fn take_slot(&mut self) -> bool {
        if self.slot.is_some() {
            return true;
        }
        let (slots, mut stop) = (self.slots.clone(), self.stop.clone());
        let slot = tokio::select! {
            s = slots.take() => s,
            _ = stop.changed() => return false,
        };
        self.slot = Some(slot);
        true
    }
}

/// Whether mail may be left after a read that brought `batch`: it filled a stream's `COUNT`.
/// Mail that came after the read rang the bell, which marks the mailbox for the next wait
/// ([`mailboxes`]): reading again after every batch would cost a read per batch, mostly empty
/// in a town of many agents with a little mail each.
fn more_may_wait(batch: &[Delivery]) -> bool {
    [Stream::Urgent, Stream::Inbox]
        .iter()
        .any(|k| batch.iter().filter(|d| d.kind == *k).count() >= READ_BATCH)
}
