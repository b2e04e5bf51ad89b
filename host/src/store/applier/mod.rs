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
//! per concern, and the unit loop. It runs behind the key guard of `store::script`: every key
//! it may touch is declared in the call, computed from the ops by [`declare`], so a Redis
//! Cluster moving the town's slot refuses a call whole (and the client retries it on the right
//! master) instead of failing it half-applied.

mod declare;
mod op;
mod together;

use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use op::Op;
pub(crate) use together::Committer;

use declare::{Facts, Needs};

use crate::store::conn::Db;
use crate::store::error;
use crate::store::limits::MAX_MESSAGE_BYTES;
use crate::store::model::{now_ms, Stream, TaskState};
use crate::store::script::{self, OnFull};
use crate::store::streams;

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

static SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| script::new(OnFull::Refuse, &script_text()));

/// How often a call is tried again when what its keys were computed from changed meanwhile
/// (another host created a task, say) before giving up.
const STALE_TRIES: usize = 50;

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

/// The script's answer: a result per unit, or which fact changed before it wrote anything.
#[derive(Deserialize)]
#[serde(untagged)]
enum Reply {
    Applied(Vec<Applied>),
    Stale { stale: String },
}

/// `<ms>-<seq>` or `<ms>`, as XRANGE takes it.
fn stream_id(id: &str) -> bool {
    let mut parts = id.splitn(2, '-');
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    parts.next().is_some_and(digits) && parts.next().is_none_or(digits)
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
        let needs = Needs::of(units);
        let mut changed = String::new();
        for attempt in 0..STALE_TRIES {
            if attempt > 0 {
                // Others are writing the same facts: let them finish.
                tokio::time::sleep(Duration::from_millis(attempt.min(20) as u64)).await;
            }
            let facts = self.facts(&needs).await?;
            let mut keys = declare::keys(&self.keys, units, &facts);
            if let Some(m) = &self.merger {
                declare::merge_queue_keys(&self.keys, units, m, &mut keys);
            }
            let keys: Vec<String> = keys.into_iter().collect();
            let mut conn = self.conn.clone();
            let raw: String = SCRIPT
                .key(keys)
                .arg(self.keys.prefix())
                .arg(now_ms())
                .arg(&json)
                .arg(MAX_MESSAGE_BYTES)
                .arg(&self.rules_json)
                .arg(serde_json::to_string(&facts)?)
                .invoke_async(&mut conn)
                .await
                .map_err(error::from_redis)?;
            match serde_json::from_str::<Reply>(&raw)
                .with_context(|| format!("decoding the applier's reply {raw:?}"))?
            {
                Reply::Applied(r) => return Ok(r),
                Reply::Stale { stale } => changed = stale,
            }
        }
        Err(error::of_kind(
            error::ErrorKind::Conflict,
            format!(
                "{changed} kept changing while this change was being applied \
                 ({STALE_TRIES} tries); nothing was applied"
            ),
            "try again; if it keeps happening, many hosts are creating tasks at once",
        ))
    }

    /// What the key list of a call with `needs` depends on, read now.
    async fn facts(&self, needs: &Needs) -> Result<Facts> {
        let mut facts = Facts::default();
        if needs.nothing() {
            return Ok(facts);
        }
        // Dead letter ids that are not stream ids name no entry; the op refuses them itself.
        let dlq: Vec<&String> = needs.dlq.iter().filter(|id| stream_id(id)).collect();
        let mut p = redis::pipe();
        if needs.creates > 0 {
            p.cmd("GET").arg(self.keys.seq("task"));
        }
        for t in &needs.tasks {
            p.cmd("HGET").arg(self.keys.task(t)).arg("owner");
        }
        if needs.agents {
            p.cmd("SMEMBERS").arg(self.keys.agents());
        }
        for id in &dlq {
            p.cmd("XRANGE").arg(self.keys.dlq()).arg(*id).arg(*id);
        }
        let mut conn = self.conn.clone();
        let v: Vec<redis::Value> = p.query_async(&mut conn).await.map_err(error::from_redis)?;
        let mut v = v.into_iter();
        let mut next = || v.next().unwrap_or(redis::Value::Nil);
        if needs.creates > 0 {
            facts.seq = Some(streams::int(&next()).unwrap_or(0).max(0) as u64);
        }
        for t in &needs.tasks {
            let owner = streams::text(&next()).unwrap_or_default();
            facts.owners.insert(t.clone(), owner);
        }
        if needs.agents {
            let members = next();
            let mut agents: Vec<String> = streams::array(&members)
                .iter()
                .filter_map(streams::text)
                .collect();
            agents.sort();
            facts.agents = Some(agents);
        }
        for id in dlq {
            let entry = streams::entries(&next()).into_iter().next();
            let agent = entry
                .and_then(|e| e.text_map().remove("agent"))
                .unwrap_or_default();
            facts.dlq.insert(id.clone(), agent);
        }
        Ok(facts)
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
        assert!(text.contains(
            "['in-review'] = {['approved'] = true, ['completed'] = true, ['rejected'] = true"
        ));
        assert!(text.contains("['approved'] = {['completed'] = true, ['rejected'] = true"));
        assert!(text.contains("local TERMINAL = {['completed'] = true"));
    }

    #[test]
    fn only_stream_ids_are_read_as_dead_letters() {
        for ok in ["1-0", "1700000000000-12", "5"] {
            assert!(stream_id(ok), "{ok}");
        }
        for bad in ["", "-", "1-", "a-1", "1-0-0", "../x", "1 0"] {
            assert!(!stream_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_stale_reply_is_told_apart_from_results() {
        let stale: Reply = serde_json::from_str(r#"{"stale":"the task counter"}"#).unwrap();
        assert!(matches!(stale, Reply::Stale { stale } if stale == "the task counter"));
        let applied: Reply = serde_json::from_str(r#"[{"s":"ok"}]"#).unwrap();
        assert!(matches!(applied, Reply::Applied(r) if r.len() == 1));
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
