//! `tt dlq list|retry|drop`: messages that could not be handled.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::print::{print_json, Json};
use crate::store::error;
use crate::town::Town;

#[derive(Args, Debug)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    List {
        #[arg(short = 'n', long, default_value_t = 100)]
        count: usize,
        #[command(flatten)]
        json: Json,
    },
    /// Put dead letters back into their agents' mailboxes.
    Retry {
        entries: Vec<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters.
    Drop {
        entries: Vec<String>,
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(town: &Town, args: DlqArgs) -> Result<()> {
    let (entries, all, retry) = match args.command {
        DlqCommand::List { count, json } => {
            let letters = town.dead_letters(count).await?;
            if json.json {
                return print_json(&letters);
            }
            if letters.is_empty() {
                println!("no dead letters");
            }
            for l in letters {
                let f = |k: &str| l.fields.get(k).cloned().unwrap_or_default();
                println!(
                    "{}  {} {} (attempts {}): {}",
                    l.id,
                    f("agent"),
                    if f("orig.id").is_empty() {
                        f("entry")
                    } else {
                        f("orig.id")
                    },
                    f("attempts"),
                    f("reason")
                );
            }
            return Ok(());
        }
        DlqCommand::Retry { entries, all } => (entries, all, true),
        DlqCommand::Drop { entries, all } => (entries, all, false),
    };
    let ids = if all {
        town.dead_letters(usize::MAX)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect()
    } else if entries.is_empty() {
        return Err(error::usage(
            "name the dead letters (ids from `tt dlq list`) or pass --all",
            "tt dlq list",
        ));
    } else {
        entries
    };
    let n = town.dlq_act(&ids, retry).await?;
    println!(
        "{} {n} dead letter{}",
        if retry { "retried" } else { "dropped" },
        if n == 1 { "" } else { "s" }
    );
    Ok(())
}
