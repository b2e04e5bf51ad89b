//! The gated swap's judgement: before a candidate replaces an agent's policy, replay it on the
//! agent's last handlings and refuse when it differs on more than a given share of them.
//! `tt swap --replay N --max-diff P` and `POST /v1/agents/{name}/swap` both judge here; the
//! summary of a passed judgement is kept with the swap record (its `judged` field).

use anyhow::Result;

use super::replay::{replay, ReplayOptions, Report};
use crate::store::error::{self, ErrorKind};
use crate::town::Town;

/// How a candidate fared on the agent's past.
pub enum Judgement {
    /// Within the allowed share: the summary to keep with the swap.
    Passed(String),
    /// Too many differences: the swap must not happen.
    Refused(Box<Report>),
}

/// Replays `plugin` on `agent`'s newest `last` handlings and judges it against `max_diff`
/// (a share in 0..=1).
pub async fn judge(
    town: &Town,
    agent: &str,
    plugin: &str,
    last: usize,
    max_diff: f64,
) -> Result<Judgement> {
    if !(0.0..=1.0).contains(&max_diff) {
        return Err(error::usage(
            format!("max-diff {max_diff} is not a share"),
            "write a fraction from 0 to 1 (0.05 for 5%)",
        ));
    }
    let opts = ReplayOptions {
        last: last.max(1),
        ..Default::default()
    };
    let report = replay(town, agent, plugin, &opts).await?;
    Ok(if report.diff_share() > max_diff {
        Judgement::Refused(Box::new(report))
    } else {
        Judgement::Passed(report.summary())
    })
}

/// The error a refused swap ends with: what differed, and that nothing changed.
pub fn refusal(agent: &str, report: &Report, max_diff: f64) -> anyhow::Error {
    error::of_kind(
        ErrorKind::Conflict,
        format!(
            "swap refused: {} ({:.1}% differ, more than max-diff {:.1}%); {agent} keeps its \
             plugin",
            report.summary(),
            report.diff_share() * 100.0,
            max_diff * 100.0
        ),
        "look at the differing cases (`tt replay` shows them), or raise the limit (`--max-diff`, \
         `max_diff` over REST)",
    )
}
