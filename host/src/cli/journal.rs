//! `tt journal AGENT`: what the agent's recent handlings asked the world (each capability
//! call's request and answer, secrets redacted) and what they decided.

use anyhow::Result;
use clap::Args;

use super::print::Json;
use crate::town::Town;

#[derive(Args, Debug)]
pub struct JournalArgs {
    pub agent: String,
    /// How many of the newest entries to show.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub count: usize,
    #[command(flatten)]
    pub json: Json,
}

pub async fn run(town: &Town, args: JournalArgs) -> Result<()> {
    town.need_agent(&args.agent).await?;
    let entries = town.db.journal_read(&args.agent, args.count).await?;
    if args.json.json {
        let list: Vec<_> = entries
            .iter()
            .map(|(id, e)| serde_json::json!({ "id": id, "entry": e }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!(
            "no journal entries for {} (a handling is journaled when it calls a capability)",
            args.agent
        );
    }
    for (id, e) in &entries {
        println!(
            "{id}  msg {} attempt {}{}  plugin {}  {:.1} ms  {}",
            e.msg,
            e.attempt,
            e.task
                .as_deref()
                .map(|t| format!(" task {t}"))
                .unwrap_or_default(),
            &e.digest[..e.digest.len().min(12)],
            e.ms,
            e.outcome
        );
        for c in e.calls.as_array().into_iter().flatten() {
            let text = |k: &str| c.get(k).map(|v| v.to_string()).unwrap_or_default();
            let clip = |s: String| {
                if s.chars().count() > 160 {
                    format!("{}…", s.chars().take(160).collect::<String>())
                } else {
                    s
                }
            };
            println!(
                "    {}.{} {} -> {}",
                c.get("interface").and_then(|v| v.as_str()).unwrap_or("?"),
                c.get("function").and_then(|v| v.as_str()).unwrap_or("?"),
                clip(text("request")),
                clip(text("response"))
            );
        }
    }
    Ok(())
}
