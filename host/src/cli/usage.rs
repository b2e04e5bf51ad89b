//! `tt usage`: what the town's agents spent on model calls (tokens and cost), by agent, task
//! and model, over the days the town keeps (`store::budget`).

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::print::{print_json, Json};
use crate::store::budget::{self, Budgets, UsageRow, RETENTION_DAYS};
use crate::store::error;
use crate::town::Town;

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Only this agent's calls.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only calls made while handling this task.
    #[arg(long)]
    pub task: Option<String>,
    /// How many UTC days back, today included (the town keeps 40).
    #[arg(long, default_value_t = RETENTION_DAYS)]
    pub days: u64,
    #[command(flatten)]
    pub json: Json,
}

/// What `tt usage --json` prints. Costs are in the prices' currency; `cost_micro` exactly.
#[derive(Debug, Serialize)]
pub struct Usage {
    pub days: u64,
    pub rows: Vec<Row>,
    pub total: Row,
}

#[derive(Debug, Default, Serialize)]
pub struct Row {
    pub agent: String,
    pub task: String,
    pub model: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: f64,
    pub cost_micro: u64,
}

impl From<&UsageRow> for Row {
    fn from(r: &UsageRow) -> Row {
        Row {
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

/// The sum of `rows`, with empty names.
pub fn total(rows: &[UsageRow]) -> Row {
    let mut t = UsageRow::default();
    for r in rows {
        t.calls += r.calls;
        t.input_tokens += r.input_tokens;
        t.output_tokens += r.output_tokens;
        t.cost += r.cost;
    }
    Row::from(&t)
}

pub async fn run(town: &Town, args: UsageArgs) -> Result<()> {
    let UsageArgs {
        agent,
        task,
        days,
        json,
    } = args;
    if days == 0 || days > RETENTION_DAYS {
        return Err(error::usage(
            format!("--days {days}: the town keeps usage for {RETENTION_DAYS} days"),
            format!("use 1 to {RETENTION_DAYS} (1 is today)"),
        ));
    }
    let rows = Budgets::of(&town.db, town.config.retention.events)
        .usage(days, agent.as_deref(), task.as_deref())
        .await?;
    let usage = Usage {
        days,
        total: total(&rows),
        rows: rows.iter().map(Row::from).collect(),
    };
    if json.json {
        return print_json(&usage);
    }
    if usage.rows.is_empty() {
        println!("no model calls in the last {days} days");
        return Ok(());
    }
    println!(
        "{:<16} {:<20} {:<12} {:>6} {:>10} {:>10} {:>12}",
        "AGENT", "TASK", "MODEL", "CALLS", "IN", "OUT", "COST"
    );
    for r in usage.rows.iter().chain(std::iter::once(&usage.total)) {
        let agent = if r.agent.is_empty() && r.model.is_empty() {
            "total"
        } else {
            &r.agent
        };
        let task = if r.task.is_empty() { "-" } else { &r.task };
        println!(
            "{:<16} {:<20} {:<12} {:>6} {:>10} {:>10} {:>12.6}",
            agent, task, r.model, r.calls, r.input_tokens, r.output_tokens, r.cost
        );
    }
    Ok(())
}
