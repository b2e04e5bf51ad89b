//! `tt assign`, `tt tasks` and `tt task show|complete|fail|cancel`: tasks with an owner.

use anyhow::Result;
use clap::Subcommand;

use super::print::{print_json, print_task_line, Json};
use crate::store::model::TaskState;
use crate::town::Town;

// Flattened into the top-level command: each variant is a `tt` command.
#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// Create a task and assign it, in one step.
    Assign {
        agent: String,
        description: String,
        #[arg(long)]
        from: Option<String>,
    },
    /// List tasks.
    Tasks {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Show or change one task.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
}

// `tt task ...`
#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    Show {
        id: String,
        #[command(flatten)]
        json: Json,
    },
    Complete {
        id: String,
        #[arg(long)]
        result: String,
    },
    Fail {
        id: String,
        #[arg(long)]
        error: String,
    },
    Cancel {
        id: String,
    },
}

pub async fn run(town: &Town, command: TasksCommand) -> Result<()> {
    match command {
        TasksCommand::Assign {
            agent,
            description,
            from,
        } => {
            let id = town.assign(&agent, &description, from.as_deref()).await?;
            println!("assigned {id} to {agent}");
        }
        TasksCommand::Tasks { state, agent, json } => {
            let tasks = town.tasks(state.as_deref(), agent.as_deref()).await?;
            if json.json {
                return print_json(&tasks);
            }
            if tasks.is_empty() {
                println!("no tasks");
            }
            for t in tasks {
                print_task_line(&t);
            }
        }
        TasksCommand::Task { command } => task(town, command).await?,
    }
    Ok(())
}

async fn task(town: &Town, command: TaskCommand) -> Result<()> {
    let t = match command {
        TaskCommand::Show { id, json } => {
            let t = town.need_task(&id).await?;
            if json.json {
                return print_json(&t);
            }
            println!("{} [{}] {}", t.id, t.state, t.description);
            println!("  owner: {}", t.owner.as_deref().unwrap_or("-"));
            println!("  reviewer: {}", t.reviewer.as_deref().unwrap_or("-"));
            println!("  rejections: {}", t.rejections);
            if !t.tags.is_empty() {
                println!("  tags: {}", t.tags.join(", "));
            }
            if let Some(r) = &t.result {
                println!("  result: {r}");
            }
            return Ok(());
        }
        TaskCommand::Complete { id, result } => {
            town.transition(&id, TaskState::Completed, Some(&result))
                .await?
        }
        TaskCommand::Fail { id, error } => {
            town.transition(&id, TaskState::Failed, Some(&error))
                .await?
        }
        TaskCommand::Cancel { id } => town.transition(&id, TaskState::Cancelled, None).await?,
    };
    println!("{} is now {}", t.id, t.state);
    Ok(())
}
