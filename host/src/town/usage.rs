//! Model usage: what the town's agents spent on model calls (tokens and cost), by agent, task
//! and model, over the days the town keeps. `tt usage`, `tt status`, `GET /v1/usage` and
//! `/metrics` all read it here; the counters themselves are written by `store::budget`.

use anyhow::Result;
use serde::Serialize;

use super::Town;
use crate::store::budget::{self, Budgets, UsageRow, RETENTION_DAYS};
use crate::store::error;

/// Usage over `days` UTC days. Costs are in the prices' currency; `cost_micro` exactly.
#[derive(Debug, Serialize)]
pub struct Usage {
    pub days: u64,
    pub rows: Vec<UsageLine>,
    pub total: UsageLine,
}

/// One agent's calls to one model while handling one task (`task` empty: no task).
#[derive(Debug, Default, Clone, Serialize)]
pub struct UsageLine {
    pub agent: String,
    pub task: String,
    pub model: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: f64,
    pub cost_micro: u64,
}

impl From<&UsageRow> for UsageLine {
    fn from(r: &UsageRow) -> UsageLine {
        UsageLine {
            agent: r.agent.clone(),
            task: r.task.clone(),
            model: r.model.clone(),
            calls: r.calls,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost: budget::amount(r.cost),
            cost_micro: r.cost,
        }
    }
}

impl Town {
    /// Usage of the last `days` UTC days (1 is today), for `agent` and `task` when given.
    pub async fn usage(&self, days: u64, agent: Option<&str>, task: Option<&str>) -> Result<Usage> {
        if days == 0 || days > RETENTION_DAYS {
            return Err(error::usage(
                format!("usage over {days} days: the town keeps usage for {RETENTION_DAYS} days"),
                format!(
                    "ask for 1 to {RETENTION_DAYS} days (`tt usage --days N`, \
                     `GET /v1/usage?days=N`; 1 is today)"
                ),
            ));
        }
        let rows = Budgets::of(&self.db, self.config.retention.events)
            .usage(days, agent, task)
            .await?;
        let mut total = UsageRow::default();
        for r in &rows {
            total.calls += r.calls;
            total.input_tokens += r.input_tokens;
            total.output_tokens += r.output_tokens;
            total.cost += r.cost;
        }
        Ok(Usage {
            days,
            total: UsageLine::from(&total),
            rows: rows.iter().map(UsageLine::from).collect(),
        })
    }
}
