//! The applier: the one write path of a town.
//!
//! Every change, whether a CLI command or the actions of a handled message, is a [`Unit`] of
//! typed [`Op`]s applied by one Lua script call: phase 1 checks every op against a view of the
//! town, phase 2 writes only when all passed, so a refused unit changes nothing. A unit that
//! acknowledges a mailbox entry is idempotent (a redelivered message whose effects were applied
//! is only acknowledged) and may be fenced by an exclusive agent's lease. What the script
//! returns for each unit is an [`Applied`] with an [`Outcome`].
//!
//! The script is assembled once from `lua/`: a prelude of shared checks, the task-move table
//! generated from [`TaskState::moves`] (so Rust and Lua cannot disagree on legality), one file
//! per concern, and the unit loop.

mod op;

use std::sync::LazyLock;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use op::Op;

use crate::store::conn::Db;
use crate::store::error;
use crate::store::limits::MAX_MESSAGE_BYTES;
use crate::store::model::{now_ms, Stream, TaskState};

/// The parts of the script, in order (name, text).
pub(crate) const LUA_PARTS: &[(&str, &str)] = &[
    ("prelude", include_str!("lua/prelude.lua")),
    ("agents", include_str!("lua/agents.lua")),
    ("mail", include_str!("lua/mail.lua")),
    ("tasks", include_str!("lua/tasks.lua")),
    ("dlq", include_str!("lua/dlq.lua")),
    ("shadow", include_str!("lua/shadow.lua")),
    ("access", include_str!("lua/access.lua")),
    ("units", include_str!("lua/units.lua")),
];

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(&script_text()));

fn script_text() -> String {
    let mut text = String::new();
    for (name, part) in LUA_PARTS {
        if *name == "prelude" {
            text.push_str(&part.replace("--@MOVES@\n", &moves_lua()));
        } else {
            text.push_str(part);
        }
        text.push('\n');
    }
    text
}

/// `TaskState::moves` as the Lua tables `MOVES` and `TERMINAL`.
fn moves_lua() -> String {
    let mut out = String::from("local MOVES = {\n");
    for from in TaskState::ALL {
        let to: Vec<String> = from
            .moves()
            .iter()
            .map(|t| format!("['{t}'] = true"))
            .collect();
        if !to.is_empty() {
            out.push_str(&format!("  ['{from}'] = {{{}}},\n", to.join(", ")));
        }
    }
    out.push_str("}\nlocal TERMINAL = {");
    let terminal: Vec<String> = TaskState::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| format!("['{s}'] = true"))
        .collect();
    out.push_str(&terminal.join(", "));
    out.push_str("}\n");
    out
}

/// What one command or one handled message does, applied all-or-nothing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Unit {
    pub ops: Vec<Op>,
    /// Who acts: an agent, or `conductor` for the humans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The humans act (the CLI, as `by`): any legal move is theirs to make. Without it, the
    /// applier checks that `by` may make each move (authority, `lua/tasks.lua`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub human: bool,
    /// The plugin that decided it, for the `handled` event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
    /// Refused ops dead-letter the acknowledged message instead of failing the call.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dlq: bool,
    /// Dead-letter the acknowledged message with this reason; the ops are not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The entry was delivered before: clear its retry count and last failure when it is done.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retried: bool,
    /// Idempotency key of a command: a unit sent again with the same key (a retry after a lost
    /// reply) applies once; the repeat gets the first result. Kept ten minutes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idem: Option<String>,
    /// For exclusive agents: apply only if this host still holds the agent's lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fence {
    pub agent: String,
    /// `<host>:<token>` as stored in the lease key.
    pub holder: String,
}

/// Which mailbox entry a unit acknowledges, and its deduplication id.
#[derive(Debug, Clone, Serialize)]
pub struct Ack {
    pub stream: String,
    pub entry: String,
    pub agent: String,
    pub kind: Stream,
    /// Unique per message across both streams: `<kind>/<entry>`.
    pub member: String,
}

/// What happened to a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Applied (and acknowledged, with `ack`).
    Ok,
    /// Already applied once: only acknowledged.
    Dup,
    /// Dead-lettered (with `dead`, or because `dlq` and an op was refused).
    Dlq,
    /// Not applied: another host holds the agent's lease now.
    Fenced,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Applied {
    #[serde(rename = "s")]
    pub outcome: Outcome,
    #[serde(default)]
    ids: String,
    #[serde(default)]
    tasks: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// Messages removed by [`Op::ClearConductor`].
    #[serde(default)]
    pub cleared: Option<u64>,
}

impl Applied {
    /// Ids of the messages the unit sent.
    pub fn message_ids(&self) -> Vec<String> {
        split_ids(&self.ids)
    }
    /// Ids of the tasks the unit created.
    pub fn task_ids(&self) -> Vec<String> {
        split_ids(&self.tasks)
    }
}

fn split_ids(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

impl Db {
    /// Runs the applier on `units`; returns one result per unit.
    pub async fn apply(&self, units: &[Unit]) -> Result<Vec<Applied>> {
        let json = serde_json::to_string(units)?;
        let mut conn = self.conn.clone();
        let raw: String = SCRIPT
            .key(self.keys.events())
            .arg(self.keys.prefix())
            .arg(now_ms())
            .arg(json)
            .arg(MAX_MESSAGE_BYTES)
            .arg(&self.rules_json)
            .invoke_async(&mut conn)
            .await
            .map_err(error::from_redis)?;
        serde_json::from_str(&raw).with_context(|| format!("decoding the applier's reply {raw:?}"))
    }

    /// Applies one unit made of `ops` by agent `by`, with an agent's authority; a refused op
    /// is the error.
    pub async fn apply_ops(&self, by: &str, ops: Vec<Op>) -> Result<Applied> {
        self.apply_one(Unit {
            ops,
            by: Some(by.to_string()),
            ..Default::default()
        })
        .await
    }

    /// Applies one unit made of `ops` by the humans, speaking as `by` (`conductor`, or the
    /// agent a CLI `--from` names): every legal move is allowed, and recorded as theirs. The
    /// unit carries a fresh idempotency key, so a retry of the call applies it once.
    pub async fn apply_human(&self, by: &str, ops: Vec<Op>) -> Result<Applied> {
        self.apply_one(Unit {
            ops,
            by: Some(by.to_string()),
            human: true,
            idem: Some(crate::store::lease::new_instance()),
            ..Default::default()
        })
        .await
    }

    async fn apply_one(&self, unit: Unit) -> Result<Applied> {
        let mut r = self.apply(&[unit]).await?;
        r.pop().context("the applier returned no result")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_has_the_generated_move_table() {
        let text = script_text();
        assert!(!text.contains("--@MOVES@"));
        assert!(text.contains("['in-review'] = {['completed'] = true, ['rejected'] = true"));
        assert!(text.contains("local TERMINAL = {['completed'] = true"));
    }

    #[test]
    fn every_outcome_decodes() {
        for (s, o) in [
            ("ok", Outcome::Ok),
            ("dup", Outcome::Dup),
            ("dlq", Outcome::Dlq),
            ("fenced", Outcome::Fenced),
        ] {
            let a: Applied = serde_json::from_str(&format!("{{\"s\":\"{s}\"}}")).unwrap();
            assert_eq!(a.outcome, o);
        }
    }
}
