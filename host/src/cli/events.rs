//! `tt events`: the town's event history, and with `--follow` the events as they happen.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::print::{format_event, Json};
use crate::town::{Event, Town};

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[arg(long)]
    pub follow: bool,
    #[arg(long)]
    pub agent: Option<String>,
    /// How many past events to show.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub count: usize,
    #[command(flatten)]
    pub json: Json,
}

pub async fn run(town: &Town, args: EventsArgs) -> Result<()> {
    let EventsArgs {
        follow,
        agent,
        count,
        json,
    } = args;
    let past = town.events(count, agent.as_deref()).await?;
    let mut last = match past.last() {
        Some(e) => e.id.clone(),
        None => town.last_event_id().await?,
    };
    for e in &past {
        print_event(e, json.json)?;
    }
    if follow {
        loop {
            for e in town.events_after(&last, Duration::from_secs(5)).await? {
                last = e.id.clone();
                if agent
                    .as_deref()
                    .is_none_or(|a| crate::town::event_mentions(&e, a))
                {
                    print_event(&e, json.json)?;
                }
            }
        }
    }
    Ok(())
}

// With --json, one compact JSON object a line, so a follower can be piped.
fn print_event(e: &Event, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(e)?);
    } else {
        println!("{}", format_event(e));
    }
    Ok(())
}
