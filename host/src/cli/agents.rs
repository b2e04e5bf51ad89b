//! `tt spawn`, `list`, `kill`, `interrupt`, `resume`, `close`, `wait`, `prune`: the agents
//! and their lifecycle.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;

use super::print::{print_json, Json};
use crate::store::model::Agent;
use crate::town::{Lifecycle, Town};

// Flattened into the top-level command: each variant is a `tt` command.
#[derive(Subcommand, Debug)]
pub enum AgentsCommand {
    /// Add an agent.
    Spawn {
        name: String,
        /// Default: the role in its [agents.NAME] section, else `worker`.
        #[arg(long)]
        role: Option<String>,
        /// The role's Wasm component (default: the plugin in its [agents.NAME] section).
        #[arg(long)]
        plugin: Option<PathBuf>,
        #[arg(long)]
        nickname: Option<String>,
    },
    /// List agents with their state, mailbox and workload; a big town's list comes in pages,
    /// after a summary.
    List {
        /// The page to show (from 1); with --json, only that page is printed.
        #[arg(long)]
        page: Option<usize>,
        /// Agents per page.
        #[arg(long, default_value_t = PER_PAGE)]
        per_page: usize,
        #[command(flatten)]
        json: Json,
    },
    /// Stop serving an agent (its mailbox is kept; `tt prune` removes it).
    Kill { name: String },
    /// Pause an agent: its mail waits until `tt resume`.
    Interrupt { name: String },
    /// Resume an interrupted, closed or killed agent.
    Resume { name: String },
    /// Let an agent finish its mailbox, then go cold.
    Close { name: String },
    /// Wait until all tasks are finished and no mail is waiting or in hand.
    Wait {
        /// Give up after this many seconds (exit 1).
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Remove stopped agents; with --all, cold ones too. Unread mail goes to the dead letters.
    Prune {
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(town: &Town, command: AgentsCommand) -> Result<()> {
    match command {
        AgentsCommand::Spawn {
            name,
            role,
            plugin,
            nickname,
        } => {
            let role = role
                .or_else(|| town.config.agents.get(&name).and_then(|a| a.role.clone()))
                .unwrap_or_else(|| "worker".into());
            let a = town
                .spawn(&name, &role, plugin.as_deref(), nickname.as_deref())
                .await?;
            let plugin = a.plugin.as_deref().unwrap_or("no plugin yet");
            println!("spawned {} ({}, {plugin})", a.name, a.role);
        }
        AgentsCommand::List {
            page,
            per_page,
            json,
        } => {
            let agents = town.list().await?;
            let total = agents.len();
            // Without --page, --json prints every agent, as it always did.
            let shown = match (page, json.json) {
                (None, true) => agents,
                _ => page_of(agents, page, per_page)?,
            };
            if json.json {
                return print_json(&shown);
            }
            if total == 0 {
                println!("no agents; `tt spawn NAME --role ROLE` adds one");
            }
            let p = page.unwrap_or(1);
            if total > per_page {
                let first = (p - 1) * per_page + 1;
                println!(
                    "{total} agents; {first}-{} shown (page {p} of {}; `tt list --page {}` \
                     for more, `tt status` for the summary)",
                    first + shown.len() - 1,
                    total.div_ceil(per_page),
                    (p + 1).min(total.div_ceil(per_page)),
                );
            }
            for a in shown {
                println!(
                    "{:<16} {:<10} {:<11} waiting {:<4} in hand {:<3} tasks {}{}",
                    a.agent.name,
                    a.agent.role,
                    a.agent.state,
                    a.waiting,
                    a.in_flight,
                    a.active_tasks,
                    a.agent
                        .nickname
                        .map(|n| format!("  ({n})"))
                        .unwrap_or_default()
                );
            }
        }
        AgentsCommand::Kill { name } => report_state(town.lifecycle(&name, Lifecycle::Kill).await?),
        AgentsCommand::Interrupt { name } => {
            report_state(town.lifecycle(&name, Lifecycle::Interrupt).await?)
        }
        AgentsCommand::Resume { name } => {
            report_state(town.lifecycle(&name, Lifecycle::Resume).await?)
        }
        AgentsCommand::Close { name } => {
            report_state(town.lifecycle(&name, Lifecycle::Close).await?)
        }
        AgentsCommand::Wait { timeout } => {
            town.wait_idle(timeout.map(Duration::from_secs_f64)).await?;
            println!("town is idle");
        }
        AgentsCommand::Prune { all } => {
            let removed = town.prune(all).await?;
            if removed.is_empty() {
                println!("nothing to prune");
            } else {
                println!("pruned {}", removed.join(", "));
            }
        }
    }
    Ok(())
}

/// Agents per page of `tt list`.
pub(crate) const PER_PAGE: usize = 100;

/// Page `page` of `agents` (the first when none is asked); a page past the end is an error.
fn page_of(
    agents: Vec<crate::town::AgentView>,
    page: Option<usize>,
    per_page: usize,
) -> Result<Vec<crate::town::AgentView>> {
    if per_page == 0 || page == Some(0) {
        return Err(crate::store::error::usage(
            "--page and --per-page count from 1",
            "for example `tt list --page 2 --per-page 100`",
        ));
    }
    let total = agents.len();
    let Some(p) = page else {
        return Ok(agents.into_iter().take(per_page).collect());
    };
    if (p - 1) * per_page >= total && total > 0 {
        return Err(crate::store::error::usage(
            format!(
                "page {p} is past the end: {total} agents make {} pages",
                total.div_ceil(per_page)
            ),
            "ask for a lower --page",
        ));
    }
    Ok(agents
        .into_iter()
        .skip((p - 1) * per_page)
        .take(per_page)
        .collect())
}

fn report_state(a: Agent) {
    println!("{} is now {}", a.name, a.state);
}
