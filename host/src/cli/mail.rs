//! `tt send` and `tt inbox`: messages and mailboxes.

use anyhow::Result;
use clap::Subcommand;

use super::print::{print_json, Json};
use crate::store::error;
use crate::store::model::Kind;
use crate::town::{Inbox, MailItem, Town};

// Flattened into the top-level command: each variant is a `tt` command.
#[derive(Subcommand, Debug)]
pub enum MailCommand {
    /// Send a message.
    Send {
        to: String,
        /// The message; `-` reads it from standard input.
        body: String,
        /// Read before anything else in the mailbox.
        #[arg(long)]
        urgent: bool,
        /// For the record; no answer expected.
        #[arg(long, group = "kind")]
        info: bool,
        /// A question.
        #[arg(long, group = "kind")]
        query: bool,
        /// An acknowledgement.
        #[arg(long, group = "kind")]
        ack: bool,
        /// Send as this agent (default: conductor).
        #[arg(long)]
        from: Option<String>,
    },
    /// Show a mailbox without changing it (default: the humans' conductor mailbox).
    Inbox {
        agent: Option<String>,
        /// Every agent's mailbox.
        #[arg(long)]
        all: bool,
        /// Mark the conductor mailbox read (it is the humans'; no host reads it).
        #[arg(long, conflicts_with = "all")]
        clear: bool,
        #[command(flatten)]
        json: Json,
    },
}

pub async fn run(town: &Town, command: MailCommand) -> Result<()> {
    match command {
        MailCommand::Send {
            to,
            body,
            urgent,
            info,
            query,
            ack,
            from,
        } => {
            let kind = if info {
                Kind::Info
            } else if query {
                Kind::Query
            } else if ack {
                Kind::Ack
            } else {
                Kind::Task
            };
            let body = if body == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                    error::usage(
                        format!("cannot read the body from stdin: {e}"),
                        "pipe UTF-8 text into `tt send TO -`",
                    )
                })?;
                text
            } else {
                body
            };
            let id = town.send(&to, &body, kind, urgent, from.as_deref()).await?;
            println!("sent {id} to {to}{}", if urgent { " (urgent)" } else { "" });
        }
        MailCommand::Inbox {
            agent,
            all,
            clear,
            json,
        } => {
            if clear {
                let who = agent.as_deref().unwrap_or("conductor");
                if !crate::store::model::is_conductor(who) {
                    return Err(error::usage(
                        format!("--clear is for the conductor mailbox, not `{who}`"),
                        "agents' mail is acknowledged by the host that handles it",
                    ));
                }
                // What is shown is what is cleared: mail that arrives meanwhile stays.
                let shown = town.inbox("conductor").await?;
                if json.json {
                    print_json(&shown)?;
                } else {
                    print_inbox(&shown);
                }
                let n = town.clear_conductor_inbox(&shown).await?;
                if !json.json {
                    println!("marked {n} messages read");
                }
                return Ok(());
            }
            let names = if all {
                let mut n = vec!["conductor".to_string()];
                n.extend(town.agent_names().await?);
                n
            } else {
                vec![agent.unwrap_or_else(|| "conductor".into())]
            };
            let mut boxes = Vec::new();
            for n in names {
                boxes.push(town.inbox(&n).await?);
            }
            if json.json {
                return if all {
                    print_json(&boxes)
                } else {
                    print_json(&boxes[0])
                };
            }
            for b in boxes {
                print_inbox(&b);
            }
        }
    }
    Ok(())
}

fn print_inbox(b: &Inbox) {
    println!(
        "{}: {} waiting, {} delivered and not yet acknowledged",
        b.agent,
        b.waiting.len(),
        b.delivered.len()
    );
    for m in &b.waiting {
        println!("  waiting    {}", format_mail(m));
    }
    for m in &b.delivered {
        println!(
            "  in hand    {} (host {}, delivery {})",
            format_mail(m),
            m.consumer.as_deref().unwrap_or("?"),
            m.deliveries.unwrap_or(0)
        );
    }
}

fn format_mail(m: &MailItem) -> String {
    match &m.message {
        Some(msg) => format!(
            "{}{} {} from {}{}: {}",
            if msg.urgent { "URGENT " } else { "" },
            msg.id,
            msg.kind.as_str(),
            msg.from,
            msg.task
                .as_deref()
                .map(|t| format!(" [{t}]"))
                .unwrap_or_default(),
            msg.body.replace('\n', " ⏎ ")
        ),
        None => format!(
            "entry {} ({})",
            m.entry,
            m.error.as_deref().unwrap_or("unreadable")
        ),
    }
}
