//! Printing shared by several command groups: the `--json` flag, JSON output, timestamps,
//! event lines and task lines.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::store::model::Task;
use crate::town::Event;

// The `--json` flag every read command has.
#[derive(Args, Debug, Clone, Copy)]
pub struct Json {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A time of day (UTC) from milliseconds since the epoch: `HH:MM:SS.mmm`.
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

/// One event as one line of text.
pub fn format_event(e: &Event) -> String {
    let f = |k: &str| e.fields.get(k).cloned().unwrap_or_default();
    let ts = f("ts").parse().map(format_ms).unwrap_or_default();
    let body = match f("type").as_str() {
        "sent" => format!(
            "{} -> {}  {}{}  {}",
            f("from"),
            f("to"),
            f("kind"),
            if f("task").is_empty() {
                String::new()
            } else {
                format!(" [{}]", f("task"))
            },
            f("body").replace('\n', " ⏎ ")
        ),
        "task" => format!(
            "task {}  {} -> {}  by {}",
            f("task"),
            if f("from").is_empty() {
                "new".into()
            } else {
                f("from")
            },
            f("to"),
            f("by")
        ),
        "agent" => format!("agent {}  {} by {}", f("agent"), f("to"), f("by")),
        "handled" => format!(
            "{} handled {} -> {} actions  (plugin {})",
            f("agent"),
            f("msg"),
            f("actions"),
            &f("digest")[..12.min(f("digest").len())]
        ),
        "dead-letter" => format!("{} DEAD LETTER {}: {}", f("agent"), f("msg"), f("body")),
        "swap" => format!(
            "{} now runs {} ({})",
            f("agent"),
            f("plugin"),
            &f("digest")[..12.min(f("digest").len())]
        ),
        "swap-refused" => format!(
            "{} SWAP REFUSED to {} ({}), keeps {}: {}",
            f("agent"),
            f("plugin"),
            &f("digest")[..12.min(f("digest").len())],
            f("kept"),
            f("body")
        ),
        "log" => format!("{} [{}] {}", f("agent"), f("level"), f("body")),
        "escalated" => format!("{} ESCALATED: {}", f("agent"), f("body")),
        "budget-exhausted" => format!(
            "{} BUDGET {} exhausted (model {}{}): {}",
            f("agent"),
            f("budget"),
            f("model"),
            if f("task").is_empty() {
                String::new()
            } else {
                format!(", task {}", f("task"))
            },
            f("body")
        ),
        "audit" => format!(
            "audit {} {} from {} -> {}",
            f("who"),
            f("body"),
            f("from"),
            f("status")
        ),
        other => format!("{other} {:?}", e.fields),
    };
    format!("{ts}  {body}")
}

/// One task as one line: id, state, owner, the description's first line, tags.
pub fn print_task_line(t: &Task) {
    let tags = if t.tags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", t.tags.join(","))
    };
    println!(
        "{:<6} {:<10} {:<12} {}{}",
        t.id,
        t.state,
        t.owner.as_deref().unwrap_or("-"),
        t.description.lines().next().unwrap_or(""),
        tags
    );
}
