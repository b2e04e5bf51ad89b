//! One batch of deliveries, handled as one task: each message goes to the role's
//! instance (retried with backoff on a fresh one after a trap), its actions become one unit,
//! and units are applied together with their acknowledgements. A role that consulted the town
//! sees its previous decision applied first. After `max_deliveries` attempts, or on a
//! permanent error, the message is dead-lettered with the reason.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

mod attempts;

use super::actions;
use super::runner::{Delivery, Live};
use crate::runtime::{wit, Failure, FailureKind, Grants, Instance, Lookup, Plugin, Runtime};
use crate::store::applier::{Ack, Applied, Fence, Op, Outcome, Unit};
use crate::store::journal;
use crate::store::limits::{Limits, MAX_MESSAGE_BYTES};
use crate::store::model::{Kind, Message};
use crate::town::Town;

/// The most applier input (units as JSON) one script call takes.
const BATCH_BYTES: usize = 8 << 20;
/// A unit larger than this is dead-lettered instead of applied.
const UNIT_BYTES: usize = 64 << 20;

/// A batch's units were refused for their fence: another host holds the agent's lease now.
#[derive(Debug)]
pub(super) struct FencedOut(String);

impl std::fmt::Display for FencedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "another host took over agent `{}`; its messages stay pending for it (expected \
             after a pause longer than [host] lease_ms)",
            self.0
        )
    }
}

impl std::error::Error for FencedOut {}

/// Everything a handling task needs.
pub(super) struct HandleCtx {
    pub(super) town: Arc<Town>,
    pub(super) runtime: Arc<Runtime>,
    pub(super) lookup: Arc<dyn Lookup>,
    pub(super) agent: String,
    pub(super) limits: Limits,
    pub(super) grants: Grants,
    pub(super) init_config: Vec<(String, String)>,
    pub(super) fence: Option<Fence>,
    /// The agent's journal share: its journal is trimmed to it as entries are written.
    pub(super) journal_keep: u64,
    /// Journal entries (their JSON) of this batch's handlings, written together with the
    /// applier call of their units.
    pub(super) journal: std::sync::Mutex<Vec<String>>,
}

impl HandleCtx {
    pub(super) async fn handle_all(&self, live: Live, batch: Vec<Delivery>) -> (Live, Result<()>) {
        let redelivered = batch.iter().any(|d| d.redelivered);
        let (live, r) = self.handle_batch(live, batch).await;
        if redelivered {
            // The batch ended here, not in a crash: no message of it is to blame.
            self.unmark_current().await;
        }
        (live, r)
    }

    async fn handle_batch(&self, mut live: Live, batch: Vec<Delivery>) -> (Live, Result<()>) {
        let mut units = Vec::new();
        for d in batch {
            let (unit, looked) = match self.handle_one(&mut live, d).await {
                Ok(done) => done,
                Err(e) => {
                    // The town could not be asked: apply what was decided before, leave the
                    // rest pending for a retry.
                    let _ = self.apply(&mut units).await;
                    return (live, Err(e));
                }
            };
            units.push(unit);
            // A role that consulted the town must see its previous decision applied first.
            if looked {
                if let Err(e) = self.apply(&mut units).await {
                    return (live, Err(e));
                }
            }
        }
        let r = self.apply(&mut units).await;
        (live, r)
    }

    /// Applies `units` in calls of at most [`BATCH_BYTES`] of JSON; a unit larger than
    /// [`UNIT_BYTES`] is dead-lettered alone instead. When a call fails, its units are tried
    /// one by one, so a unit Redis refuses does not hold back the others: it stays pending
    /// with its reason recorded, and its deliveries count toward `max_deliveries`.
    async fn apply(&self, units: &mut Vec<Unit>) -> Result<()> {
        let entries = std::mem::take(&mut *self.journal.lock().unwrap_or_else(|p| p.into_inner()));
        let journal = async {
            if entries.is_empty() {
                return;
            }
            if let Err(e) = self
                .town
                .db
                .journal_append_all(&self.agent, &entries, self.journal_keep.max(1))
                .await
            {
                tracing::warn!(agent = %self.agent, "could not journal {} handlings: {e:#}", entries.len());
            }
        };
        // Sent together on the multiplexed connection: one turn of Redis's loop, one fsync.
        let ((), r) = tokio::join!(journal, self.apply_units(units));
        r
    }

    async fn apply_units(&self, units: &mut Vec<Unit>) -> Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        let mut all = std::mem::take(units);
        let mut sizes = Vec::with_capacity(all.len());
        for unit in all.iter_mut() {
            unit.fence = self.fence.clone();
            let size = serde_json::to_vec(unit).map_or(usize::MAX, |v| v.len());
            if size > UNIT_BYTES {
                unit.ops.clear();
                unit.dead = Some(format!(
                    "its actions are {size} bytes of applier input, more than one call takes \
                     ({UNIT_BYTES}); lower limits.max_action_bytes"
                ));
            }
            sizes.push(size.min(UNIT_BYTES));
        }
        let mut applied: Vec<(usize, Applied)> = Vec::new();
        let mut failed = None;
        let mut start = 0;
        while start < all.len() {
            let mut end = start + 1;
            let mut bytes = sizes[start];
            while end < all.len() && bytes + sizes[end] <= BATCH_BYTES {
                bytes += sizes[end];
                end += 1;
            }
            // With other agents' handlings waiting too, in one call (`applier::together`).
            let together = self.town.db.apply_together(all[start..end].to_vec(), bytes);
            match together.await {
                Ok(r) => applied.extend((start..end).zip(r)),
                Err(e) => {
                    // One by one, smallest first: a unit too big for Redis (which may close
                    // the connection on it) is likely the biggest, and goes last.
                    let one_by_one = end - start > 1;
                    let mut order: Vec<usize> = (start..end).collect();
                    order.sort_by_key(|&i| sizes[i]);
                    for i in order {
                        let one = std::slice::from_ref(&all[i]);
                        let r = if one_by_one {
                            // Once more after a pause if it fails: the failure before it may
                            // have cost the connection, which comes back in a moment.
                            match self.town.db.apply(one).await {
                                Ok(r) => Ok(r),
                                Err(_) => {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                    self.town.db.apply(one).await
                                }
                            }
                        } else {
                            Err(anyhow::anyhow!("{e:#}"))
                        };
                        match r {
                            Ok(mut r) => applied.push((i, r.remove(0))),
                            Err(e) => {
                                self.record_failure(&all[i], &format!("applying it failed: {e:#}"))
                                    .await;
                                failed.get_or_insert(e);
                            }
                        }
                    }
                }
            }
            start = end;
        }
        for (i, r) in &applied {
            report(&self.agent, &all[*i], r);
        }
        if applied.iter().any(|(_, r)| r.outcome == Outcome::Fenced) {
            return Err(FencedOut(self.agent.clone()).into());
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Handles one delivery to the end: a unit that applies its actions or dead-letters it.
    /// Also says whether the role looked at the town while deciding. `Err` when the town could
    /// not be asked: nothing is decided and the message stays pending.
    async fn handle_one(&self, live: &mut Live, d: Delivery) -> Result<(Unit, bool)> {
        let member = format!("{}/{}", d.kind, d.entry.id);
        let mut unit = Unit {
            by: Some(self.agent.clone()),
            digest: Some(live.plugin.digest.to_string()),
            ack: Some(Ack {
                stream: d.stream.clone(),
                entry: d.entry.id.clone(),
                agent: self.agent.clone(),
                kind: d.kind,
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
        if msg.body.len() > MAX_MESSAGE_BYTES {
            unit.dead = Some(format!(
                "message body is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                msg.body.len(),
            ));
            return Ok((unit, false));
        }
        unit.retried = d.redelivered;
        if d.redelivered {
            // Failed deliveries are counted where they can be told apart: the handling the
            // host died in (marked before it began), and a unit that could not be applied. A
            // message that only waited in a batch the host lost is not counted.
            let failed = self.count_failures(&member).await?;
            if failed >= u64::from(self.limits.max_deliveries) {
                let why = self.last_failure(&member).await?.unwrap_or_else(|| {
                    "no handling of it finished (the host stopped or crashed while handling it)"
                        .into()
                });
                unit.dead = Some(format!(
                    "{failed} deliveries failed without it being applied (limits.max_deliveries \
                     = {}); last: {why}",
                    self.limits.max_deliveries
                ));
                return Ok((unit, false));
            }
            self.mark_current(&member).await?;
        }
        let mut attempt = if d.redelivered {
            self.previous_attempts(&member).await?
        } else {
            0
        };
        if matches!(msg.kind, Kind::TaskAssign | Kind::Reject) {
            if let Some(task) = &msg.task {
                let op = Op::MarkRunning { task: task.clone() };
                if let Err(e) = self.town.db.apply_ops(&self.agent, vec![op]).await {
                    tracing::warn!(agent = %self.agent, "could not mark {task} running: {e}");
                }
            }
        }
        loop {
            attempt += 1;
            unit.attempts = Some(attempt);
            let failure = match self
                .call(&live.plugin, &mut live.instance, &msg, attempt)
                .await
            {
                Ok(actions) => match actions::to_ops(&actions, &self.limits) {
                    Ok(mut ops) => {
                        let looked = live.instance.as_ref().is_some_and(|i| i.lookups() > 0);
                        if let Some((plugin, instance)) = live.shadow.as_mut() {
                            ops.push(
                                self.shadow_op(
                                    &live.plugin,
                                    plugin,
                                    instance,
                                    &msg,
                                    attempt,
                                    &actions,
                                )
                                .await?,
                            );
                        }
                        unit.ops = ops;
                        return Ok((unit, looked));
                    }
                    Err(reason) => Failure::new(FailureKind::Permanent, reason),
                },
                Err(f) if f.transient() => {
                    anyhow::bail!("agent `{}`: {}", self.agent, f.reason)
                }
                Err(f) => f,
            };
            tracing::warn!(
                agent = %self.agent, msg = %msg.id, attempt, limit = self.limits.max_deliveries,
                "{}", failure.reason
            );
            if !failure.retryable() {
                unit.dead = Some(format!("permanent error: {}", failure.reason));
                return Ok((unit, false));
            }
            if attempt >= self.limits.max_deliveries {
                unit.dead = Some(format!("failed {attempt} times; last: {}", failure.reason));
                return Ok((unit, false));
            }
            self.record_attempt(&member, &failure.reason).await;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Calls `plugin`'s instance in `slot`, creating a fresh one when there is none, and
    /// journals the handling (`store::journal`).
    async fn call(
        &self,
        plugin: &Plugin,
        slot: &mut Option<Instance>,
        msg: &Message,
        attempt: u32,
    ) -> Result<Vec<wit::Action>, Failure> {
        let started = std::time::Instant::now();
        let message = actions::to_wit(msg, attempt);
        let keep = self.town.config.retention.journal;
        let seen = (keep > 0).then(|| message.clone());
        let r = self.call_instance(plugin, slot, message).await;
        if let Some(message) = seen {
            let calls = slot.as_ref().map(|i| i.recorded()).unwrap_or_default();
            let outcome = match &r {
                Ok(a) => format!("ok: {} actions", a.len()),
                Err(f) => format!("error: {}", f.reason),
            };
            let entry = journal::Draft {
                msg: &msg.id,
                attempt,
                task: msg.task.as_deref(),
                digest: &plugin.digest.to_string(),
                message: &message,
                calls: &calls,
                actions: r.as_ref().ok(),
                outcome: &outcome,
                ms: started.elapsed().as_secs_f64() * 1000.0,
                at_ms: crate::store::model::now_ms(),
            };
            match entry.to_json() {
                Ok(json) => self
                    .journal
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(json),
                Err(e) => {
                    tracing::warn!(agent = %self.agent, msg = %msg.id, "could not journal: {e:#}")
                }
            }
        }
        r
    }

    async fn call_instance(
        &self,
        plugin: &Plugin,
        slot: &mut Option<Instance>,
        message: wit::Message,
    ) -> Result<Vec<wit::Action>, Failure> {
        if slot.as_ref().is_none_or(|i| i.is_dead()) {
            *slot = Some(
                self.runtime
                    .instantiate(
                        plugin,
                        &self.agent,
                        &self.limits,
                        &self.grants,
                        &self.init_config,
                        self.lookup.clone(),
                    )
                    .await?,
            );
        }
        let inst = slot.as_mut().expect("just created");
        let r = inst.handle(message).await;
        if r.as_ref().is_err_and(|f| f.trapped()) {
            // Dead: the next call gets a fresh one. Its record stays readable until then.
            inst.mark_dead();
        }
        r
    }

    /// Runs the shadow on the same message; its decision is recorded, never applied.
    async fn shadow_op(
        &self,
        live: &Plugin,
        plugin: &Plugin,
        slot: &mut Option<Instance>,
        msg: &Message,
        attempt: u32,
        live_actions: &[wit::Action],
    ) -> Result<Op> {
        let describe = |a: &[wit::Action]| {
            a.iter()
                .map(actions::describe)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let live_text = describe(live_actions);
        let message = actions::to_wit(msg, attempt);
        let shadow_text = match self.call_instance(plugin, slot, message).await {
            Ok(a) => describe(&a),
            Err(f) if f.transient() => anyhow::bail!("shadow of `{}`: {}", self.agent, f.reason),
            Err(f) => format!("error: {}", f.reason),
        };
        Ok(Op::ShadowRecord {
            msg: msg.id.clone(),
            agree: live_text == shadow_text,
            live: live_text,
            shadow: shadow_text,
            live_digest: live.digest.to_string(),
            shadow_digest: plugin.digest.to_string(),
        })
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25u64 << attempt.min(6)).min(2_000))
}

fn report(agent: &str, unit: &Unit, r: &Applied) {
    let member = unit.ack.as_ref().map(|a| a.member.as_str()).unwrap_or("?");
    match r.outcome {
        Outcome::Dlq => tracing::warn!(
            agent,
            msg = member,
            "dead-lettered: {}",
            r.reason.as_deref().unwrap_or("?")
        ),
        Outcome::Dup => tracing::info!(agent, msg = member, "already applied; acknowledged only"),
        _ => tracing::debug!(agent, msg = member, actions = unit.ops.len(), "applied"),
    }
}
