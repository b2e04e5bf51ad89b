//! Swaps, shadows and replays over REST: the same validated steps as `tt swap`, `tt shadow`
//! and `tt replay` ([`crate::host::swap`], [`crate::host::gate`], [`crate::host::replay`]): a
//! candidate plugin is loaded and checked before anything switches.

use std::path::PathBuf;

use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::api::{ok, Answer};
use super::extract::{Body, Path, Query};
use super::problem::Problem;
use super::App;
use crate::host::gate::{self, Judgement};
use crate::host::replay::{self, ReplayOptions};
use crate::host::swap;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwapBody {
    /// The candidate component, a file on the server (relative to the town directory).
    pub plugin: String,
    /// Run it beside the live plugin and compare, instead of replacing it.
    #[serde(default)]
    pub shadow: bool,
    /// Gate the swap: first replay the candidate on the agent's newest N handlings...
    pub replay: Option<usize>,
    /// ...and refuse (409, with the report) when more than this share of them differ (0 to
    /// 1; default 0).
    pub max_diff: Option<f64>,
}

pub async fn swap_plugin(
    State(app): State<App>,
    Path(name): Path<String>,
    Body(b): Body<SwapBody>,
) -> Answer {
    let path = app.town.config.resolve(&PathBuf::from(&b.plugin));
    let judged = match b.replay {
        None => None,
        Some(n) => {
            let max = b.max_diff.unwrap_or(0.0);
            match gate::judge(&app.town, &name, &path.to_string_lossy(), n, max).await? {
                Judgement::Passed(summary) => Some(summary),
                Judgement::Refused(report) => {
                    let mut p = Problem::from(gate::refusal(&name, &report, max));
                    p.report = Some(Box::new(
                        serde_json::to_value(&report).map_err(anyhow::Error::from)?,
                    ));
                    return Err(p);
                }
            }
        }
    };
    let digest = swap::swap_judged(&app.town, &name, &path, b.shadow, judged.clone()).await?;
    ok(json!({"agent": name, "digest": digest.to_string(), "shadow": b.shadow, "judged": judged}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// The candidate: a component file on the server (relative to the town directory) or
    /// `builtin:NAME`.
    pub plugin: String,
    /// The newest N handlings (default: all the journal keeps).
    pub last: Option<usize>,
    /// Only handlings of this task.
    pub task: Option<String>,
    /// Only handlings since this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only handlings whose message the agent's shadow decided otherwise.
    #[serde(default)]
    pub disagreed: bool,
    /// Answer read-only questions the original never asked from the live town. (Programs the
    /// original never ran are never run from here: `tt replay --allow-exec` can.)
    #[serde(default)]
    pub live: bool,
}

/// The candidate run on the agent's journal: which past decisions it would have changed.
/// Nothing of the town is written.
pub async fn replay(
    State(app): State<App>,
    Path(name): Path<String>,
    Body(b): Body<ReplayBody>,
) -> Answer {
    let opts = ReplayOptions {
        last: b.last.unwrap_or(0),
        task: b.task,
        since_ms: b.since_ms,
        disagreed: b.disagreed,
        live: b.live,
        allow_exec: false,
    };
    // A file relative to the town directory, or `builtin:NAME` (`Source::of` tells them apart).
    ok(replay::replay(&app.town, &name, &b.plugin, &opts).await?)
}

pub async fn rollback(State(app): State<App>, Path(name): Path<String>) -> Answer {
    let (plugin, digest) = swap::rollback(&app.town, &name).await?;
    ok(json!({"agent": name, "plugin": plugin, "digest": digest.to_string()}))
}

pub async fn shadow_report(State(app): State<App>, Path(name): Path<String>) -> Answer {
    ok(swap::report(&app.town, &name).await?)
}

pub async fn shadow_promote(State(app): State<App>, Path(name): Path<String>) -> Answer {
    let (plugin, digest) = swap::promote(&app.town, &name).await?;
    ok(json!({"agent": name, "plugin": plugin, "digest": digest.to_string()}))
}

pub async fn shadow_stop(State(app): State<App>, Path(name): Path<String>) -> Answer {
    swap::stop_shadow(&app.town, &name).await?;
    ok(json!({"agent": name, "shadow": null}))
}

#[derive(Deserialize, JsonSchema)]
pub struct HistoryQuery {
    /// How many of the newest events to search (default 1000).
    pub n: Option<usize>,
}

/// Swap and shadow events, oldest first: the history of every policy change.
pub async fn history(State(app): State<App>, Query(q): Query<HistoryQuery>) -> Answer {
    let events = app
        .town
        .events(q.n.unwrap_or(1000).min(100_000), None)
        .await?;
    let swaps: Vec<_> = events
        .into_iter()
        .filter(|e| {
            matches!(
                e.fields.get("type").map(String::as_str),
                Some("swap" | "shadow")
            )
        })
        .collect();
    ok(swaps)
}
