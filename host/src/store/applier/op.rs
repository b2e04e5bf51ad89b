//! The operations of the applier: the one typed contract between Rust and the Lua script.
//!
//! A unit's `ops` are a list of [`Op`]s, serialised as `{"op": "<name>", ...fields}`. The Lua
//! side has one `OPS.<name>` function per variant and reads exactly the fields the variant
//! serialises; `tests::lua_and_rust_agree_on_every_op_and_field` fails the build's tests when
//! either side names an op or a field the other does not. Fields are plain values: validation
//! of names, sizes and legality happens in Lua, in the same atomic step that writes.

use serde::Serialize;

use crate::store::model::{AgentState, Kind, TaskState};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    // ----- agents (agents.lua) -----------------------------------------------------------------
    /// Adds an agent with its two mailbox streams and their consumer group.
    Spawn {
        name: String,
        role: String,
        plugin: Option<String>,
        digest: Option<String>,
        nickname: Option<String>,
    },
    /// Sets a lifecycle state, only from the states in `from` (any when `None`).
    AgentState {
        name: String,
        state: AgentState,
        from: Option<Vec<AgentState>>,
    },
    /// Records which plugin an agent runs (a swap), keeping the previous one for rollback.
    AgentPlugin {
        name: String,
        plugin: String,
        digest: String,
        /// What the swap was judged on (a gated swap's replay summary), kept with the record.
        judged: Option<String>,
    },
    /// A host could not make agent `name`'s recorded plugin (`digest`) serve, and kept the
    /// one it serves (`kept`, `kept_digest`): the record goes back to that one, says why
    /// (`tt status`), and an event tells. Nothing happens when the record has moved on since.
    SwapRefused {
        name: String,
        plugin: String,
        digest: String,
        kept: String,
        kept_digest: String,
        reason: String,
    },
    /// Removes an agent in one of `states`; its unhandled mail goes to the dead letters.
    Prune {
        name: String,
        states: Vec<AgentState>,
    },
    /// Sets (`Some`) or deletes (`None`) a key of the acting agent's own state.
    SetState {
        key: String,
        value: Option<String>,
    },
    /// An entry in the town's history, attributed to the acting agent.
    Log {
        level: String,
        text: String,
    },

    // ----- mail (mail.lua) ---------------------------------------------------------------------
    /// One message from the acting agent into `to`'s normal or urgent stream.
    Send {
        to: String,
        kind: Kind,
        body: String,
        urgent: bool,
        task: Option<String>,
        corr: Option<String>,
    },
    /// An urgent message to the humans' `conductor` mailbox.
    Escalate {
        text: String,
    },
    /// Marks the humans' mailbox read up to (and including) the newest entry they were shown
    /// in each stream; what arrived since stays.
    ClearConductor {
        urgent_upto: Option<String>,
        inbox_upto: Option<String>,
    },

    // ----- tasks (tasks.lua) -------------------------------------------------------------------
    /// Assigns task `task` to `agent`, or (no `task`) creates one from `desc` and assigns it.
    Assign {
        agent: String,
        task: Option<String>,
        desc: String,
    },
    BacklogAdd {
        desc: String,
        tags: String,
    },
    BacklogClaim {
        task: String,
        agent: String,
    },
    BacklogRemove {
        task: String,
    },
    /// Moves a task to `to` (complete, fail, cancel), checked against the legal moves.
    Transition {
        task: String,
        to: TaskState,
        text: Option<String>,
    },
    /// Marks a task running when the acting agent owns it and it is assigned; else nothing.
    MarkRunning {
        task: String,
    },
    /// Moves a task to review and sends the reviewer a `review-request`.
    RequestReview {
        task: String,
        reviewer: String,
        body: String,
    },
    /// Approves (completes) or rejects (back to its owner) a task in review.
    Verdict {
        task: String,
        approve: bool,
        text: String,
    },

    // ----- dead letters (dlq.lua) --------------------------------------------------------------
    DlqRetry {
        entry: String,
    },
    DlqDrop {
        entry: String,
    },

    // ----- shadow mode (shadow.lua) ------------------------------------------------------------
    /// Starts (`plugin` given) or stops shadowing an agent with a candidate plugin.
    Shadow {
        name: String,
        plugin: Option<String>,
        digest: Option<String>,
    },
    /// What a shadow decided beside the live plugin on message `msg`.
    ShadowRecord {
        msg: String,
        agree: bool,
        live: String,
        shadow: String,
        live_digest: String,
        shadow_digest: String,
    },

    // ----- access over HTTP and MCP (access.lua) -----------------------------------------------
    /// Stores an API key: its name, its `scope` (read, write or manage) and only the argon2 `hash` of its secret.
    KeyAdd {
        id: String,
        name: String,
        scope: String,
        hash: String,
    },
    KeyRevoke {
        id: String,
    },
    /// An event recording one write request (allowed or refused) made over HTTP or MCP.
    Audit {
        who: String,
        action: String,
        peer: String,
        status: u16,
    },
}

impl Op {
    /// A normal-priority message of `kind` to `to`, about no task.
    pub fn send(to: impl Into<String>, kind: Kind, body: impl Into<String>) -> Op {
        Op::Send {
            to: to.into(),
            kind,
            body: body.into(),
            urgent: false,
            task: None,
            corr: None,
        }
    }

    /// The op's name on the wire (the Lua function `OPS.<name>`).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Spawn { .. } => "spawn",
            Op::AgentState { .. } => "agent_state",
            Op::AgentPlugin { .. } => "agent_plugin",
            Op::SwapRefused { .. } => "swap_refused",
            Op::Prune { .. } => "prune",
            Op::SetState { .. } => "set_state",
            Op::Log { .. } => "log",
            Op::Send { .. } => "send",
            Op::Escalate { .. } => "escalate",
            Op::ClearConductor { .. } => "clear_conductor",
            Op::Assign { .. } => "assign",
            Op::BacklogAdd { .. } => "backlog_add",
            Op::BacklogClaim { .. } => "backlog_claim",
            Op::BacklogRemove { .. } => "backlog_remove",
            Op::Transition { .. } => "transition",
            Op::MarkRunning { .. } => "mark_running",
            Op::RequestReview { .. } => "request_review",
            Op::Verdict { .. } => "verdict",
            Op::DlqRetry { .. } => "dlq_retry",
            Op::DlqDrop { .. } => "dlq_drop",
            Op::Shadow { .. } => "shadow",
            Op::ShadowRecord { .. } => "shadow_record",
            Op::KeyAdd { .. } => "key_add",
            Op::KeyRevoke { .. } => "key_revoke",
            Op::Audit { .. } => "audit",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// One op of each variant, every optional field filled, so its serialised keys are all the
    /// fields it can carry. `name()` is an exhaustive match: a new variant fails to compile
    /// there, and `every_variant_has_an_example` fails until it is listed here.
    fn examples() -> Vec<Op> {
        let s = |x: &str| x.to_string();
        vec![
            Op::Spawn {
                name: s("a"),
                role: s("worker"),
                plugin: Some(s("p.wasm")),
                digest: Some(s("d")),
                nickname: Some(s("n")),
            },
            Op::AgentState {
                name: s("a"),
                state: AgentState::Cold,
                from: Some(vec![AgentState::Closing]),
            },
            Op::AgentPlugin {
                name: s("a"),
                plugin: s("p"),
                digest: s("d"),
                judged: Some(s("j")),
            },
            Op::SwapRefused {
                name: s("a"),
                plugin: s("p"),
                digest: s("d"),
                kept: s("q"),
                kept_digest: s("e"),
                reason: s("r"),
            },
            Op::Prune {
                name: s("a"),
                states: vec![AgentState::Stopped],
            },
            Op::SetState {
                key: s("k"),
                value: Some(s("v")),
            },
            Op::Log {
                level: s("info"),
                text: s("t"),
            },
            Op::Send {
                to: s("b"),
                kind: Kind::Task,
                body: s("x"),
                urgent: true,
                task: Some(s("t1")),
                corr: Some(s("m1")),
            },
            Op::Escalate { text: s("help") },
            Op::ClearConductor {
                urgent_upto: Some(s("1-0")),
                inbox_upto: Some(s("1-0")),
            },
            Op::Assign {
                agent: s("a"),
                task: Some(s("t1")),
                desc: s("d"),
            },
            Op::BacklogAdd {
                desc: s("d"),
                tags: s("x,y"),
            },
            Op::BacklogClaim {
                task: s("t1"),
                agent: s("a"),
            },
            Op::BacklogRemove { task: s("t1") },
            Op::Transition {
                task: s("t1"),
                to: TaskState::Completed,
                text: Some(s("ok")),
            },
            Op::MarkRunning { task: s("t1") },
            Op::RequestReview {
                task: s("t1"),
                reviewer: s("r"),
                body: s("b"),
            },
            Op::Verdict {
                task: s("t1"),
                approve: true,
                text: s("ok"),
            },
            Op::DlqRetry { entry: s("1-0") },
            Op::DlqDrop { entry: s("1-0") },
            Op::Shadow {
                name: s("a"),
                plugin: Some(s("p")),
                digest: Some(s("d")),
            },
            Op::ShadowRecord {
                msg: s("m1"),
                agree: true,
                live: s("l"),
                shadow: s("s"),
                live_digest: s("d1"),
                shadow_digest: s("d2"),
            },
            Op::KeyAdd {
                id: s("k1"),
                name: s("ci"),
                scope: s("read"),
                hash: s("$argon2id$..."),
            },
            Op::KeyRevoke { id: s("k1") },
            Op::Audit {
                who: s("ci"),
                action: s("POST /v1/mail"),
                peer: s("127.0.0.1:5000"),
                status: 200,
            },
        ]
    }

    /// `OPS.<name>` functions of the Lua sources, each with the `op.<field>`s its body reads.
    fn lua_ops() -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, text) in crate::store::applier::LUA_PARTS {
            let mut current: Option<String> = None;
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("function OPS.") {
                    let name = rest.split('(').next().unwrap_or("").to_string();
                    out.entry(name.clone()).or_default();
                    current = Some(name);
                    continue;
                }
                if line.starts_with("local function") || line.starts_with("function ") {
                    current = None;
                }
                let Some(name) = &current else { continue };
                let mut rest = line;
                while let Some(i) = rest.find("op.") {
                    let before = rest[..i].chars().last();
                    let field: String = rest[i + 3..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    rest = &rest[i + 3..];
                    if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                        continue;
                    }
                    out.get_mut(name).unwrap().insert(field);
                }
            }
        }
        out
    }

    #[test]
    fn every_variant_has_an_example() {
        let names: BTreeSet<&str> = examples().iter().map(Op::name).collect();
        assert_eq!(names.len(), examples().len(), "one example per variant");
        for op in examples() {
            let v = serde_json::to_value(&op).unwrap();
            assert_eq!(v["op"], op.name(), "serde tag and name() agree");
        }
    }

    #[test]
    fn lua_and_rust_agree_on_every_op_and_field() {
        let lua = lua_ops();
        let rust: BTreeMap<String, BTreeSet<String>> = examples()
            .iter()
            .map(|op| {
                let v = serde_json::to_value(op).unwrap();
                let fields = v
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "op")
                    .cloned()
                    .collect();
                (op.name().to_string(), fields)
            })
            .collect();
        let lua_names: BTreeSet<&String> = lua.keys().collect();
        let rust_names: BTreeSet<&String> = rust.keys().collect();
        assert_eq!(
            lua_names, rust_names,
            "ops the Lua accepts vs ops Rust can build"
        );
        for (name, fields) in &rust {
            // `by` and `human` are the unit's, set on every op by the unit loop.
            let read: BTreeSet<String> = lua[name]
                .iter()
                .filter(|f| *f != "by" && *f != "human")
                .cloned()
                .collect();
            assert_eq!(
                &read, fields,
                "fields of `{name}`: read in Lua vs sent by Rust"
            );
        }
    }
}
