//! `tt replay AGENT --plugin FILE`: which of the agent's past decisions a candidate policy
//! would have changed, without touching the town.

use anyhow::Result;
use clap::Args;

use super::print::Json;
use crate::host::replay::{replay, ReplayOptions, Report};
use crate::store::error;
use crate::town::Town;

#[derive(Args, Debug)]
pub struct ReplayArgs {
    pub agent: String,
    /// The candidate: a component file or `builtin:NAME`.
    #[arg(long)]
    pub plugin: String,
    /// Replay the newest N handlings (default: all the journal keeps).
    #[arg(long, default_value_t = 0)]
    pub last: usize,
    /// Only handlings since TIME: milliseconds since the epoch, or an age such as 30m, 2h, 1d.
    #[arg(long)]
    pub since: Option<String>,
    /// Only handlings of this task.
    #[arg(long)]
    pub task: Option<String>,
    /// Only handlings whose message the agent's shadow decided otherwise (`tt shadow report`):
    /// replays the shadow's disagreements, with each call and the candidate's decision.
    #[arg(long)]
    pub disagreed: bool,
    /// Answer read-only questions the original never asked from the live town (otherwise
    /// they get an empty answer).
    #[arg(long)]
    pub live: bool,
    /// Run programs the original never ran (otherwise such an exec fails).
    #[arg(long)]
    pub allow_exec: bool,
    /// Exit 1 when more than this share of handlings differ: `5%` or `0.05`.
    #[arg(long)]
    pub max_diff: Option<String>,
    #[command(flatten)]
    pub json: Json,
}

/// `5%`, `0.05` or `5` (percent when above 1) as a share in 0..=1.
pub fn parse_share(text: &str) -> Result<f64> {
    let bad = || {
        error::fail(
            format!("--max-diff `{text}` is not a share"),
            "write a percentage (5%) or a fraction (0.05)",
        )
    };
    let t = text.trim();
    let v: f64 = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => {
            let v: f64 = t.parse().map_err(|_| bad())?;
            if v > 1.0 {
                v / 100.0
            } else {
                v
            }
        }
    };
    if !(0.0..=1.0).contains(&v) || v.is_nan() {
        return Err(bad());
    }
    Ok(v)
}

/// `--since`: ms since the epoch, or an age (`30s`, `30m`, `2h`, `1d`) before now.
fn parse_since(text: &str) -> Result<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let (n, unit) = text.split_at(text.len().saturating_sub(1));
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match n.parse::<u64>() {
        Ok(n) if secs > 0 => Ok(crate::store::model::now_ms().saturating_sub(n * secs * 1000)),
        _ => Err(error::fail(
            format!("--since `{text}` is not a time"),
            "write milliseconds since the epoch or an age such as 30m, 2h, 1d",
        )),
    }
}

pub async fn run(town: &Town, args: ReplayArgs) -> Result<()> {
    let max = args.max_diff.as_deref().map(parse_share).transpose()?;
    let opts = ReplayOptions {
        last: args.last,
        task: args.task.clone(),
        since_ms: args.since.as_deref().map(parse_since).transpose()?,
        disagreed: args.disagreed,
        live: args.live,
        allow_exec: args.allow_exec,
    };
    let report = replay(town, &args.agent, &args.plugin, &opts).await?;
    if args.json.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if let Some(max) = max {
        if report.diff_share() > max {
            return Err(error::fail(
                format!(
                    "{} of {} handlings differ ({:.1}%), more than --max-diff {:.1}%",
                    report.different,
                    report.handlings,
                    report.diff_share() * 100.0,
                    max * 100.0
                ),
                "look at the cases above; replay with --json for every detail",
            ));
        }
    }
    Ok(())
}

pub fn print_report(r: &Report) {
    println!("{}", r.summary());
    for c in &r.cases {
        println!(
            "  {}{}: {}",
            c.msg,
            c.task
                .as_deref()
                .map(|t| format!(" (task {t})"))
                .unwrap_or_default(),
            c.difference
        );
        println!("    original:  {}", clip(&c.original.to_string()));
        println!("    candidate: {}", clip(&c.candidate.to_string()));
        for d in &c.divergences {
            println!(
                "    asked what the original did not: {}.{} {} ({})",
                d.interface,
                d.function,
                clip(&d.request.to_string()),
                d.answered
            );
        }
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_read_as_percent_or_fraction() {
        assert_eq!(parse_share("5%").unwrap(), 0.05);
        assert_eq!(parse_share("0.05").unwrap(), 0.05);
        assert_eq!(parse_share("10").unwrap(), 0.1);
        assert_eq!(parse_share("0").unwrap(), 0.0);
        for bad in ["x", "150%", "-1", "200"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
        assert!(parse_since("2h").unwrap() < crate::store::model::now_ms());
        assert!(parse_since("soon").is_err());
    }
}
