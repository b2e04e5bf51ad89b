//! `tt backlog add|list|claim|remove`: tasks waiting for an owner.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::print::{print_json, print_task_line, Json};
use crate::town::Town;

#[derive(Args, Debug)]
pub struct BacklogArgs {
    #[command(subcommand)]
    pub command: BacklogCommand,
}

#[derive(Subcommand, Debug)]
pub enum BacklogCommand {
    Add {
        description: String,
        /// Comma-separated tags.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    List {
        #[command(flatten)]
        json: Json,
    },
    /// Give a backlog task to an agent (exactly one of several claims wins).
    Claim {
        task: String,
        agent: String,
    },
    Remove {
        task: String,
    },
}

pub async fn run(town: &Town, args: BacklogArgs) -> Result<()> {
    match args.command {
        BacklogCommand::Add { description, tags } => {
            let id = town.backlog_add(&description, &tags).await?;
            println!("added {id} to the backlog");
        }
        BacklogCommand::List { json } => {
            let tasks = town.backlog().await?;
            if json.json {
                return print_json(&tasks);
            }
            if tasks.is_empty() {
                println!("backlog is empty");
            }
            for t in tasks {
                print_task_line(&t);
            }
        }
        BacklogCommand::Claim { task, agent } => {
            let t = town.backlog_claim(&task, &agent).await?;
            println!("{} claimed by {}", t.id, t.owner.unwrap_or_default());
        }
        BacklogCommand::Remove { task } => {
            let t = town.backlog_remove(&task).await?;
            println!("{} removed from the backlog ({})", t.id, t.state);
        }
    }
    Ok(())
}
