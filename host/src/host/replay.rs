//! `tt replay`: a candidate policy run on the town's past, without touching the town.
//!
//! The agent's journaled handlings (`store::journal`) are fed to the candidate in order, on one
//! instance as a host would (a trap gets a fresh one). Each handling's import calls are answered
//! from its record ([`crate::runtime::replay`]); a call the original never made is reported as a
//! divergence and answered as the options say (never by running a program or sending a
//! request unless `allow_exec`). The candidate's actions are compared with the original's
//! structurally: a verdict that flips is named as such.
//!
//! Nothing is written: the town is read (the journal, and with `live` the answers to new
//! questions), never changed. A gated swap (`tt swap --replay N --max-diff P`) runs this first.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lookup::TownLookup;
use crate::runtime::replay::{Divergence, Script};
use crate::runtime::{wit, Lookup, NoTown, Runtime};
use crate::store::error;
use crate::store::journal::Entry;
use crate::town::Town;

/// Which handlings to replay, and how to answer what the journal cannot.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// The newest N handlings.
    pub last: usize,
    /// Only handlings of this task.
    pub task: Option<String>,
    /// Only handlings since this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only handlings whose message the agent's shadow decided otherwise (`tt shadow report`).
    pub disagreed: bool,
    /// Answer read-only lookups the original never made from the live town.
    pub live: bool,
    /// Run programs the original never ran.
    pub allow_exec: bool,
}

/// One handling whose decision differs.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub msg: String,
    pub task: Option<String>,
    /// The kind of difference: `approve -> reject`, `actions differ`, `error -> actions`, ...
    pub difference: String,
    pub message: Value,
    pub original: Value,
    pub candidate: Value,
    pub divergences: Vec<Divergence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub agent: String,
    pub candidate: String,
    pub candidate_digest: String,
    /// Digests of the plugins that made the original decisions.
    pub original_digests: Vec<String>,
    pub handlings: usize,
    pub same: usize,
    pub different: usize,
    /// Handlings where the candidate asked something the original did not.
    pub diverged: usize,
    /// Differences by kind.
    pub totals: BTreeMap<String, usize>,
    pub cases: Vec<Case>,
}

impl Report {
    /// The share of handlings that differ (0 with none replayed).
    pub fn diff_share(&self) -> f64 {
        if self.handlings == 0 {
            0.0
        } else {
            self.different as f64 / self.handlings as f64
        }
    }

    /// One line: what the replay found.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .totals
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        format!(
            "{} handlings of {} replayed on {}: {} the same, {} different{}{}",
            self.handlings,
            self.agent,
            self.candidate,
            self.same,
            self.different,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            },
            if self.diverged > 0 {
                format!("; {} asked something the original did not", self.diverged)
            } else {
                String::new()
            }
        )
    }
}

/// Replays `plugin` (a path or `builtin:NAME`) on `agent`'s journal.
pub async fn replay(
    town: &Town,
    agent: &str,
    plugin: &str,
    opts: &ReplayOptions,
) -> Result<Report> {
    town.need_agent(agent).await?;
    let peers = super::builtin_peers(town).await?;
    let prepared = crate::runtime::builtin::prepare(&town.config, agent, plugin, &peers)?;
    // The candidate loads (an engine, the compiled code from the cache) while the journal is
    // read: both are fixed costs of every replay. Only the newest N are read when nothing
    // else filters them.
    let load = {
        let cache = town.config.state_dir().join("cache");
        let (agent, source, grants) = (
            agent.to_string(),
            prepared.source.clone(),
            prepared.grants.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let runtime = Arc::new(Runtime::new(Some(cache), false)?);
            let loaded = runtime.load_source(&agent, &source, &grants)?;
            anyhow::Ok((runtime, loaded))
        })
    };
    let disagreed: Option<std::collections::HashSet<String>> = if opts.disagreed {
        let shadow = super::swap::report(town, agent).await?;
        Some(shadow.differed.into_iter().map(|d| d.msg).collect())
    } else {
        None
    };
    let unfiltered =
        opts.task.is_none() && opts.since_ms.is_none() && !opts.disagreed && opts.last > 0;
    let read = town
        .db
        .journal_read(agent, if unfiltered { opts.last } else { usize::MAX });
    let (entries, loaded) = tokio::join!(read, load);
    let (runtime, loaded) = loaded??;
    let mut entries = entries?;
    entries.retain(|(_, e)| {
        opts.task
            .as_ref()
            .is_none_or(|t| e.task.as_ref() == Some(t))
            && opts.since_ms.is_none_or(|s| e.at_ms >= s)
            && disagreed.as_ref().is_none_or(|d| d.contains(&e.msg))
    });
    if opts.last > 0 && entries.len() > opts.last {
        entries.drain(..entries.len() - opts.last);
    }
    let lookup: Arc<dyn Lookup> = if opts.live {
        let town = Town {
            config: town.config.clone(),
            db: town.db.clone(),
        };
        Arc::new(TownLookup {
            town: Arc::new(town),
        })
    } else {
        Arc::new(NoTown)
    };
    let limits = town.config.limits_for(agent);
    let mut report = Report {
        agent: agent.to_string(),
        candidate: plugin.to_string(),
        candidate_digest: loaded.digest.to_string(),
        original_digests: Vec::new(),
        handlings: 0,
        same: 0,
        different: 0,
        diverged: 0,
        totals: BTreeMap::new(),
        cases: Vec::new(),
    };
    let mut instance = None;
    for (_, mut entry) in entries {
        if !report.original_digests.contains(&entry.digest) {
            report.original_digests.push(entry.digest.clone());
        }
        // Read in place: no copy of the message or the calls per handling.
        let msg = wit::Message::deserialize(&entry.message).map_err(|e| {
            error::fail(
                format!("journal entry of {} does not read: {e}", entry.msg),
                "it was written by another version of tt; replay newer handlings (--last)",
            )
        })?;
        let calls = serde_json::from_value(entry.calls.take()).unwrap_or_default();
        if instance
            .as_ref()
            .is_none_or(|i: &crate::runtime::Instance| i.is_dead())
        {
            instance = Some(
                runtime
                    .instantiate(
                        &loaded,
                        agent,
                        &limits,
                        &prepared.grants,
                        &prepared.init_config,
                        lookup.clone(),
                    )
                    .await
                    .map_err(|f| {
                        error::fail(
                            format!("{plugin} cannot serve agent `{agent}`: {}", f.reason),
                            "fix the candidate; nothing was replayed",
                        )
                    })?,
            );
        }
        let inst = instance.as_mut().expect("just made");
        inst.set_replay(Script::new(calls, opts.live, opts.allow_exec));
        let got = inst.handle(msg).await;
        if got.as_ref().is_err_and(|f| f.trapped()) {
            inst.mark_dead();
        }
        let script = inst.take_replay().unwrap_or_default();
        report.handlings += 1;
        if !script.divergences.is_empty() {
            report.diverged += 1;
        }
        let candidate = match &got {
            Ok(a) => serde_json::to_value(a).unwrap_or_default(),
            Err(f) => Value::String(format!("error: {}", f.reason)),
        };
        let failed;
        let original = match &entry.actions {
            Some(a) => a,
            None => {
                failed = Value::String(entry.outcome.clone());
                &failed
            }
        };
        match difference(&entry, original, &candidate, got.is_ok()) {
            None => report.same += 1,
            Some(kind) => {
                let original = original.clone();
                report.different += 1;
                *report.totals.entry(kind.clone()).or_default() += 1;
                report.cases.push(Case {
                    msg: entry.msg.clone(),
                    task: entry.task.clone(),
                    difference: kind,
                    message: entry.message.clone(),
                    original,
                    candidate,
                    divergences: script.divergences,
                });
            }
        }
    }
    Ok(report)
}

/// How the candidate's decision differs from the original's, named; None when the same.
fn difference(entry: &Entry, original: &Value, candidate: &Value, ok: bool) -> Option<String> {
    match (entry.actions.is_some(), ok) {
        (false, false) => return None, // both failed: the same (what failed may differ)
        (false, true) => return Some("error -> actions".into()),
        (true, false) => return Some("actions -> error".into()),
        (true, true) => {}
    }
    if original == candidate {
        return None;
    }
    let verdicts = |v: &Value| -> BTreeMap<String, &'static str> {
        let mut out = BTreeMap::new();
        for a in v.as_array().into_iter().flatten() {
            for (kind, word) in [("Approve", "approve"), ("Reject", "reject")] {
                if let Some(task) = a
                    .get(kind)
                    .and_then(|o| o.get("task_id"))
                    .and_then(Value::as_str)
                {
                    out.insert(task.to_string(), word);
                }
            }
        }
        out
    };
    let (before, after) = (verdicts(original), verdicts(candidate));
    for (task, was) in &before {
        match after.get(task) {
            Some(now) if now != was => return Some(format!("{was} -> {now}")),
            None => return Some(format!("{was} -> no verdict")),
            _ => {}
        }
    }
    if let Some(now) = after
        .keys()
        .find(|t| !before.contains_key(*t))
        .map(|t| after[t])
    {
        return Some(format!("no verdict -> {now}"));
    }
    let kinds = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_object().and_then(|o| o.keys().next().cloned()))
            .collect()
    };
    if kinds(original) != kinds(candidate) {
        Some("different actions".into())
    } else {
        Some("same actions, different content".into())
    }
}
