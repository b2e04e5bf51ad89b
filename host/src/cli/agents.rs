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
    /// List agents with their state, mailbox and workload.
    List {
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
        AgentsCommand::List { json } => {
            let agents = town.list().await?;
            if json.json {
                return print_json(&agents);
            }
            if agents.is_empty() {
                println!("no agents; `tt spawn NAME --role ROLE` adds one");
            }
            for a in agents {
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

fn report_state(a: Agent) {
    println!("{} is now {}", a.name, a.state);
}
