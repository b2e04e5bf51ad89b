//! `tt usage`: what the town's agents spent on model calls (tokens and cost), by agent, task
//! and model, over the days the town keeps (`town::usage`).

use anyhow::Result;
use clap::Args;

use super::print::{print_json, Json};
use crate::store::budget::RETENTION_DAYS;
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

pub async fn run(town: &Town, args: UsageArgs) -> Result<()> {
    let UsageArgs {
        agent,
        task,
        days,
        json,
    } = args;
    let usage = town.usage(days, agent.as_deref(), task.as_deref()).await?;
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
