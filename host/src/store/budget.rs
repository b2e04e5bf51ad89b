//! Model budgets in Redis: what an agent may spend on model calls per UTC day and per task, and
//! what it did spend, by agent, task and model.
//!
//! A call is *reserved* before it is sent (its worst case: estimated input plus its answer cap,
//! and their cost), then *settled* with the usage the provider reported, or *released* when it
//! failed. Reserve and settle are each one call of `budget.lua`, whose check ("spent + reserved +
//! this reservation <= limit") and write are one atomic step, so any number of hosts sharing a
//! town cannot together overspend: the most a budget can be passed by is one call's report above
//! its own reservation. A refused reservation writes one event (`budget-exhausted`, naming the
//! agent, task, model and budget) and changes nothing else; the town keeps running.
//!
//! A reservation whose host dies mid-call is a *hold* with an expiry, so it stops counting once
//! the call can no longer be in flight. Costs are kept as integers in micro-units of the prices'
//! currency (one millionth), so sums are exact. Every key expires [`RETENTION_DAYS`] after its
//! last write (the README's retention table).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use anyhow::Result;
use serde::Serialize;

use crate::store::conn::{Conn, Db};
use crate::store::error;
use crate::store::keys::Keys;
use crate::store::script::{self, OnFull};

/// How long day, task and usage keys live after their last write.
pub const RETENTION_DAYS: u64 = 40;

/// The script's body; [`script::new`] adds the shebang and the key guard.
pub(crate) const SCRIPT: &str = include_str!("budget.lua");

/// Runs when Redis is full: each op writes a few bytes, and losing a settlement (or refusing
/// every call of the town) because Redis is near `maxmemory` would be worse.
static BUDGET: LazyLock<redis::Script> = LazyLock::new(|| script::new(OnFull::Run, SCRIPT));

/// An agent's limits (from its `[agents.NAME.llm]`); `None` is unlimited. Costs in micro-units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub tokens_per_day: Option<u64>,
    pub cost_per_day: Option<u64>,
    pub tokens_per_task: Option<u64>,
    pub cost_per_task: Option<u64>,
}

/// One call to reserve.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub agent: &'a str,
    pub task: Option<&'a str>,
    /// The alias the agent named.
    pub model: &'a str,
    pub tokens: u64,
    /// Micro-units.
    pub cost: u64,
    /// How long the hold may count before it is presumed dead.
    pub hold_ms: u64,
}

/// A reservation that passed; give it back to [`Budgets::settle`] or [`Budgets::release`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    pub id: String,
    pub agent: String,
    pub task: Option<String>,
    pub model: String,
    /// The UTC day (`YYYY-MM-DD`) it counts against; settled there too.
    pub day: String,
    pub tokens: u64,
    pub cost: u64,
}

/// Why a reservation was refused: the budget (`tokens_per_day`, `cost_per_task`, ...) and what
/// it would have needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exhausted {
    pub budget: String,
    pub detail: String,
}

/// One row of usage: what `agent` spent on `task` (empty: outside any task) with `model`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub agent: String,
    pub task: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Micro-units.
    pub cost: u64,
    pub calls: u64,
}

/// The town's budgets: its connection, key names and event cap.
#[derive(Clone)]
pub struct Budgets {
    conn: Conn,
    keys: Keys,
    events_kept: u64,
}

impl Budgets {
    /// `events_kept` is the town's `[retention] events`, the cap of its event stream.
    pub fn new(conn: Conn, keys: Keys, events_kept: u64) -> Budgets {
        Budgets {
            conn,
            keys,
            events_kept,
        }
    }

    /// The budgets of a connected town.
    pub fn of(db: &Db, events_kept: u64) -> Budgets {
        Budgets::new(db.conn.clone(), db.keys.clone(), events_kept)
    }

    /// Reserves `ask` against the agent's day and the task's budgets. `Ok(Err(_))` is a refusal
    /// (with its event written); `Err` is Redis failing.
    pub async fn reserve(
        &self,
        limits: &Limits,
        ask: &Ask<'_>,
    ) -> Result<std::result::Result<Reservation, Exhausted>> {
        let now = now_ms();
        let r = Reservation {
            id: reservation_id(),
            agent: ask.agent.to_string(),
            task: ask.task.map(str::to_string),
            model: ask.model.to_string(),
            day: utc_day(now),
            tokens: ask.tokens,
            cost: ask.cost,
        };
        let args = serde_json::json!({
            "id": r.id, "agent": r.agent, "task": r.task.clone().unwrap_or_default(),
            "model": r.model, "tokens": r.tokens, "cost": r.cost,
            "expires": now + ask.hold_ms, "limits": limits, "events": self.events_kept,
            "ttl": ttl_secs(),
        });
        let reply: Vec<String> = self.run(&r, "reserve", now, &args).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(Ok(r)),
            Some("refused") => Ok(Err(Exhausted {
                budget: reply.get(1).cloned().unwrap_or_default(),
                detail: reply.get(2).cloned().unwrap_or_default(),
            })),
            _ => anyhow::bail!("budget script: unexpected reply {reply:?}"),
        }
    }

    /// Replaces the hold with what the call really used (`cost` in micro-units) and adds it to
    /// the usage of the reservation's agent, task and model.
    pub async fn settle(&self, r: &Reservation, input: u64, output: u64, cost: u64) -> Result<()> {
        let args = serde_json::json!({
            "id": r.id, "agent": r.agent, "task": r.task.clone().unwrap_or_default(),
            "model": r.model, "input": input, "output": output, "cost": cost, "ttl": ttl_secs(),
        });
        let _: Vec<String> = self.run(r, "settle", now_ms(), &args).await?;
        Ok(())
    }

    /// Drops the hold of a call that was not made or failed.
    pub async fn release(&self, r: &Reservation) -> Result<()> {
        let args = serde_json::json!({ "id": r.id });
        let _: Vec<String> = self.run(r, "release", now_ms(), &args).await?;
        Ok(())
    }

    async fn run(
        &self,
        r: &Reservation,
        op: &str,
        now: u64,
        args: &serde_json::Value,
    ) -> Result<Vec<String>> {
        let mut inv = BUDGET.prepare_invoke();
        inv.key(self.keys.events())
            .key(self.keys.budget_day(&r.agent, &r.day))
            .key(self.keys.usage(&r.day));
        if let Some(t) = &r.task {
            inv.key(self.keys.budget_task(t, &r.agent));
        }
        inv.arg(op).arg(now).arg(args.to_string());
        let mut c = self.conn.clone();
        inv.invoke_async(&mut c).await.map_err(error::from_redis)
    }

    /// Usage rows of the last `days` UTC days (today included), summed over the days, for
    /// `agent` and `task` when given; sorted by agent, task, model.
    pub async fn usage(
        &self,
        days: u64,
        agent: Option<&str>,
        task: Option<&str>,
    ) -> Result<Vec<UsageRow>> {
        let now = now_ms();
        let mut rows: BTreeMap<(String, String, String), UsageRow> = BTreeMap::new();
        for d in 0..days.max(1) {
            let day = utc_day(now.saturating_sub(d * 86_400_000));
            let mut c = self.conn.clone();
            let h: BTreeMap<String, u64> = redis::cmd("HGETALL")
                .arg(self.keys.usage(&day))
                .query_async(&mut c)
                .await
                .map_err(error::from_redis)?;
            for (field, n) in h {
                let Ok([a, t, m, metric]) = serde_json::from_str::<[String; 4]>(&field) else {
                    continue;
                };
                if agent.is_some_and(|x| x != a) || task.is_some_and(|x| x != t) {
                    continue;
                }
                let row = rows
                    .entry((a.clone(), t.clone(), m.clone()))
                    .or_insert(UsageRow {
                        agent: a,
                        task: t,
                        model: m,
                        ..UsageRow::default()
                    });
                match metric.as_str() {
                    "in" => row.input_tokens += n,
                    "out" => row.output_tokens += n,
                    "cost" => row.cost += n,
                    "calls" => row.calls += n,
                    _ => {}
                }
            }
        }
        Ok(rows.into_values().collect())
    }

    /// What an agent has spent today and holds in flight: (tokens, cost), each spent + held.
    pub async fn agent_today(&self, agent: &str) -> Result<(u64, u64)> {
        let mut c = self.conn.clone();
        let h: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.budget_day(agent, &utc_day(now_ms())))
            .query_async(&mut c)
            .await
            .map_err(error::from_redis)?;
        let n = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok((n("tokens"), n("cost")))
    }
}

/// Micro-units of a currency amount (`1.5` -> 1,500,000), rounded up.
pub fn micro(amount: f64) -> u64 {
    (amount * 1e6).ceil().max(0.0) as u64
}

/// The currency amount of micro-units, for printing.
pub fn amount(micro: u64) -> f64 {
    micro as f64 / 1e6
}

fn ttl_secs() -> u64 {
    RETENTION_DAYS * 86_400
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// 128 random bits in hex: a reservation's name in the hold fields.
fn reservation_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b[..8].copy_from_slice(&now_ms().to_le_bytes());
    }
    crate::store::model::hex(&b)
}

/// The UTC day of a time in ms, `YYYY-MM-DD` (Howard Hinnant's civil-from-days).
pub fn utc_day(ms: u64) -> String {
    let z = (ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Today's UTC day.
pub fn today() -> String {
    utc_day(now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(utc_day(1_798_761_599_999), "2026-12-31");
        assert_eq!(utc_day(1_798_761_600_000), "2027-01-01");
    }

    #[test]
    fn the_script_is_guarded_and_names_keys_only_from_keys() {
        let text = script::text(OnFull::Run, SCRIPT);
        assert!(text.starts_with("#!lua"));
        assert!(!SCRIPT.contains("key(") && !SCRIPT.contains("redis.call"));
    }

    #[test]
    fn micro_units_round_up() {
        assert_eq!(micro(1.5), 1_500_000);
        assert_eq!(micro(0.0000001), 1);
        assert_eq!(amount(2_500_000), 2.5);
    }
}
