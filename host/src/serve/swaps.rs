//! Swaps and shadows over REST: the same validated steps as `tt swap` and `tt shadow`
//! ([`crate::host::swap`]): a candidate plugin is loaded and checked before anything switches.

use std::path::PathBuf;

use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::api::{ok, Answer};
use super::extract::{Body, Path, Query};
use super::App;
use crate::host::swap;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwapBody {
    /// The candidate component, a file on the server (relative to the town directory).
    pub plugin: String,
    /// Run it beside the live plugin and compare, instead of replacing it.
    #[serde(default)]
    pub shadow: bool,
}

pub async fn swap_plugin(
    State(app): State<App>,
    Path(name): Path<String>,
    Body(b): Body<SwapBody>,
) -> Answer {
    let path = app.town.config.resolve(&PathBuf::from(&b.plugin));
    let digest = swap::swap(&app.town, &name, &path, b.shadow).await?;
    ok(json!({"agent": name, "digest": digest.to_string(), "shadow": b.shadow}))
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
