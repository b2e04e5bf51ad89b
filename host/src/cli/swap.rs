//! `tt swap` and `tt shadow report|promote|stop`: replacing an agent's plugin while the town
//! runs, directly or after a shadow run.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use super::print::{print_json, Json};
use crate::store::model::validate_name;
use crate::town::Town;

// Flattened into the top-level command: each variant is a `tt` command.
#[derive(Subcommand, Debug)]
pub enum SwapCommand {
    /// Replace an agent's plugin while the town runs (validated first; between two messages).
    Swap {
        agent: String,
        /// The new component (not needed with --rollback).
        #[arg(required_unless_present = "rollback")]
        plugin: Option<PathBuf>,
        /// Run it beside the live plugin instead: decisions recorded, never applied.
        #[arg(long, conflicts_with = "rollback")]
        shadow: bool,
        /// Go back to the plugin before the last swap.
        #[arg(long)]
        rollback: bool,
        /// Gate the swap: first replay the candidate on the agent's last N handlings...
        #[arg(long, value_name = "N", conflicts_with = "rollback")]
        replay: Option<usize>,
        /// ...and refuse when more than this share of them differ: `5%` or `0.05`.
        #[arg(long, value_name = "P", requires = "replay", default_value = "0")]
        max_diff: String,
    },
    /// Compare a shadow plugin's decisions with the live one's.
    Shadow {
        #[command(subcommand)]
        command: ShadowCommand,
    },
}

// `tt shadow ...`
#[derive(Subcommand, Debug)]
pub enum ShadowCommand {
    /// How many decisions agreed, and the ones that differed.
    Report {
        agent: String,
        #[command(flatten)]
        json: Json,
    },
    /// Make the shadow the live plugin.
    Promote { agent: String },
    /// Stop running the shadow.
    Stop { agent: String },
}

pub async fn run(town: &Town, command: SwapCommand) -> Result<()> {
    match command {
        SwapCommand::Swap {
            agent,
            plugin,
            shadow,
            rollback,
            replay,
            max_diff,
        } => {
            validate_name(&agent)?;
            let started = std::time::Instant::now();
            if rollback {
                let (path, digest) = crate::host::swap::rollback(town, &agent).await?;
                println!("{agent} rolled back to {path} ({})", digest.short());
            } else {
                let plugin = plugin.expect("clap requires PLUGIN without --rollback");
                let judged = match replay {
                    Some(n) => Some(gate(town, &agent, &plugin, n, &max_diff).await?),
                    None => None,
                };
                let digest =
                    crate::host::swap::swap_judged(town, &agent, &plugin, shadow, judged.clone())
                        .await?;
                if let Some(j) = judged {
                    println!("judged on: {j}");
                }
                let what = if shadow { "shadows" } else { "now runs" };
                println!(
                    "{agent} {what} {} ({}), validated in {} ms; hosts switch between two messages",
                    plugin.display(),
                    digest.short(),
                    started.elapsed().as_millis()
                );
            }
        }
        SwapCommand::Shadow { command } => shadow(town, command).await?,
    }
    Ok(())
}

async fn shadow(town: &Town, command: ShadowCommand) -> Result<()> {
    match command {
        ShadowCommand::Report { agent, json } => {
            let r = crate::host::swap::report(town, &agent).await?;
            if json.json {
                return print_json(&r);
            }
            println!(
                "{}: shadow {} ({}): {} decisions compared, {} agreed, {} differed",
                r.agent,
                r.shadow.as_deref().unwrap_or("none"),
                r.shadow_digest
                    .as_deref()
                    .map(|d| &d[..12.min(d.len())])
                    .unwrap_or("-"),
                r.compared,
                r.agreed,
                r.differed.len()
            );
            for d in &r.differed {
                println!(
                    "  {}\n    live:   {}\n    shadow: {}",
                    d.msg,
                    d.live.replace('\n', "; "),
                    d.shadow.replace('\n', "; ")
                );
            }
        }
        ShadowCommand::Promote { agent } => {
            let (path, digest) = crate::host::swap::promote(town, &agent).await?;
            println!(
                "{agent} now runs {path} ({}); shadow stopped",
                digest.short()
            );
        }
        ShadowCommand::Stop { agent } => {
            crate::host::swap::stop_shadow(town, &agent).await?;
            println!("{agent}: shadow stopped");
        }
    }
    Ok(())
}

/// A gated swap's replay: the summary to keep with the swap, or a refusal with the report.
async fn gate(
    town: &Town,
    agent: &str,
    plugin: &std::path::Path,
    last: usize,
    max_diff: &str,
) -> Result<String> {
    use crate::host::gate::{judge, refusal, Judgement};
    let max = super::replay::parse_share(max_diff)?;
    match judge(town, agent, &plugin.to_string_lossy(), last, max).await? {
        Judgement::Passed(summary) => Ok(summary),
        Judgement::Refused(report) => {
            super::replay::print_report(&report);
            Err(refusal(agent, &report, max))
        }
    }
}
