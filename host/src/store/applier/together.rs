//! Group commit: the handled messages of many agents applied in one script call.
//!
//! Each handling applies its units in a call of its own, and a call costs Redis about 80 µs
//! beyond its units (the script's prologue, decoding, the reply: measured with the same units
//! in calls of 2 and of 200). An agent of a big town handles a message or two at a time, so
//! with 10,000 of them busy that overhead was a third of Redis's work, where a small town's
//! agents take their mail in batches of hundreds and pay it once per batch.
//!
//! [`Db::apply_together`] sends the units to one committer per `Db`, which applies whatever
//! arrived while its previous call was in flight as one call: an idle town's message goes at
//! once, a busy town's go in calls as big as a small town's. Units stay all-or-nothing each
//! (the script's unit loop), so mixing agents changes no outcome. Only units that need no
//! facts read first (handled messages that create no task and move none) and that apply once
//! however often they are sent go together: when a shared call fails, each caller applies its
//! own units again alone, so one agent's failure is never recorded against another's message.

use std::sync::{Arc, OnceLock};

use anyhow::Result;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::declare::Needs;
use super::{Applied, Unit};
use crate::store::conn::Db;

/// The most applier input (units as JSON) one shared call takes.
const CALL_BYTES: usize = 8 << 20;
/// The most units one shared call takes: enough to pay a call's overhead over many.
const CALL_UNITS: usize = 512;
/// Shared calls sent before the first of them is answered. With one, Redis waited while the
/// host read a call's reply and encoded the next; with two, the next call is queued behind the
/// one being run. Callers are never in two calls at once (each waits for its reply), so the
/// order between calls changes nothing.
const IN_FLIGHT: usize = 2;

/// One caller's units waiting for the committer.
struct Commit {
    units: Vec<Unit>,
    bytes: usize,
    /// The results, or the units back when the shared call failed.
    reply: oneshot::Sender<Result<Vec<Applied>, Vec<Unit>>>,
}

/// A `Db`'s committer, started by its first [`Db::apply_together`].
#[derive(Clone, Default)]
pub(crate) struct Committer(Arc<OnceLock<mpsc::UnboundedSender<Commit>>>);

impl Db {
    /// [`Db::apply`] of `units` (`bytes` of JSON), in one call with other agents' units that
    /// are waiting too. Units that need facts read first are applied alone.
    pub async fn apply_together(&self, units: Vec<Unit>, bytes: usize) -> Result<Vec<Applied>> {
        // A shared call that fails part-way keeps the units before the failure, and each
        // caller applies its units again alone: only units that apply once however often they
        // are sent (a handled message's, acknowledged in the same step; a command's with an
        // idempotency key) may go together.
        let once = units.iter().all(|u| u.ack.is_some() || u.idem.is_some());
        if !once || !Needs::of(&units).nothing() || bytes >= CALL_BYTES {
            return self.apply(&units).await;
        }
        let tx = self.committer.0.get_or_init(|| {
            // The committer's own Db has no committer: it ends when the last caller's goes.
            let mut db = self.clone();
            db.committer = Committer::default();
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(commit(db, rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let commit = Commit {
            units,
            bytes,
            reply,
        };
        let units = match tx.send(commit) {
            Ok(()) => match answer.await {
                Ok(Ok(applied)) => return Ok(applied),
                Ok(Err(units)) => units,
                Err(_) => anyhow::bail!("the town's committer stopped (its runtime is ending)"),
            },
            // The committer has ended (its runtime is shutting down): alone, as before it.
            Err(mpsc::error::SendError(c)) => c.units,
        };
        self.apply(&units).await
    }
}

/// Applies what waits, [`IN_FLIGHT`] calls at a time, until every sender is gone.
async fn commit(db: Db, mut rx: mpsc::UnboundedReceiver<Commit>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut next: Option<Commit> = None;
    loop {
        // Taken before gathering: what arrives while every call is in flight waits for the
        // next one, which takes all of it.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match next.take() {
            Some(c) => c,
            None => match rx.recv().await {
                Some(c) => c,
                None => return,
            },
        };
        let (mut bytes, mut count) = (first.bytes, first.units.len());
        let mut batch = vec![first];
        while let Ok(c) = rx.try_recv() {
            if bytes + c.bytes > CALL_BYTES || count + c.units.len() > CALL_UNITS {
                next = Some(c);
                break;
            }
            bytes += c.bytes;
            count += c.units.len();
            batch.push(c);
        }
        let db = db.clone();
        tokio::spawn(async move {
            apply(&db, batch, count).await;
            drop(slot);
        });
    }
}

/// One shared call: each caller gets its results, or its units back when the call failed.
async fn apply(db: &Db, batch: Vec<Commit>, count: usize) {
    let mut units = Vec::with_capacity(count);
    let mut callers = Vec::with_capacity(batch.len());
    for c in batch {
        callers.push((c.units.len(), c.reply));
        units.extend(c.units);
    }
    match db.apply(&units).await {
        Ok(applied) if applied.len() == count => {
            let mut applied = applied.into_iter();
            for (n, reply) in callers {
                let _ = reply.send(Ok(applied.by_ref().take(n).collect()));
            }
        }
        result => {
            if let Err(e) = result {
                tracing::debug!("a shared applier call failed; its callers go alone: {e:#}");
            }
            let mut units = units.into_iter();
            for (n, reply) in callers {
                let _ = reply.send(Err(units.by_ref().take(n).collect()));
            }
        }
    }
}
