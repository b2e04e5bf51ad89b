//! The keys an applier call may touch, computed before the call from its typed ops.
//!
//! The script declares them all in `KEYS` (`store/script.rs` says why: a Redis Cluster then
//! refuses a call whose keys are mid-migration whole, instead of failing it half-way). Most keys
//! follow from the ops alone: the agent an op names, its mailbox, the task it names. A few
//! depend on what is stored, and for those [`Facts`] are read first: the task counter (the ids
//! of tasks the call creates), the owners of the tasks the ops name (a finished task leaves its
//! owner's `owned` set, a verdict goes to its owner), the agents (a new backlog task is
//! announced to every conductor) and the agents of the dead letters retried. The script checks
//! the facts before it writes anything and asks for a new read when one changed
//! (`lua/units.lua`, `stale`).
//!
//! A key declared but not touched costs nothing; a key touched but not declared is refused by
//! the key guard. So where an op's key depends on what an earlier op of the same call does (a
//! task reassigned, then finished), the set covers every agent the call could make its owner.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Op, Unit};
use crate::store::keys::{Keys, CONDUCTOR, SUPERVISOR};
use crate::store::model::TaskState;

/// What the key list of a call depends on beyond its ops, as read just before the call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Facts {
    /// The task counter, when the call creates tasks.
    pub seq: Option<u64>,
    /// Owner of each task the ops name ("" when it has none or does not exist).
    pub owners: BTreeMap<String, String>,
    /// Every agent, when a backlog task is added.
    pub agents: Option<Vec<String>>,
    /// Agent of each dead letter retried ("" when there is no such dead letter).
    pub dlq: BTreeMap<String, String>,
}

/// What must be read before the call to know its keys.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    /// How many tasks the call may create.
    pub creates: u64,
    pub tasks: BTreeSet<String>,
    pub agents: bool,
    pub dlq: BTreeSet<String>,
}

impl Needs {
    pub fn of(units: &[Unit]) -> Needs {
        let mut n = Needs::default();
        for op in units.iter().flat_map(|u| &u.ops) {
            match op {
                Op::Assign { task: None, .. } => n.creates += 1,
                Op::BacklogAdd { .. } => {
                    n.creates += 1;
                    n.agents = true;
                }
                Op::DlqRetry { entry } => {
                    n.dlq.insert(entry.clone());
                }
                _ => {}
            }
            if let Some(t) = task_of(op) {
                n.tasks.insert(t.to_string());
            }
        }
        n
    }

    pub fn nothing(&self) -> bool {
        *self == Needs::default()
    }
}

/// The existing task an op names.
fn task_of(op: &Op) -> Option<&str> {
    match op {
        Op::Assign { task, .. } => task.as_deref(),
        Op::BacklogClaim { task, .. }
        | Op::BacklogRemove { task }
        | Op::Transition { task, .. }
        | Op::MarkRunning { task }
        | Op::RequestReview { task, .. }
        | Op::Verdict { task, .. } => Some(task),
        _ => None,
    }
}

fn canonical(name: &str) -> &str {
    if name == SUPERVISOR {
        CONDUCTOR
    } else {
        name
    }
}

/// Every key the script may touch when it applies `units`, given `facts`.
pub(crate) fn keys(k: &Keys, units: &[Unit], facts: &Facts) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.insert(k.events());
    out.insert(k.bell());
    // Who a task could belong to during this call: its owner now, or anyone an op assigns to.
    let mut owners: BTreeSet<String> = facts
        .owners
        .values()
        .filter(|o| !o.is_empty())
        .cloned()
        .collect();
    for op in units.iter().flat_map(|u| &u.ops) {
        if let Op::Assign { agent, .. } | Op::BacklogClaim { agent, .. } = op {
            owners.insert(canonical(agent).to_string());
        }
    }
    if let Some(seq) = facts.seq {
        out.insert(k.seq("task"));
        out.insert(k.tasks());
        let creates = Needs::of(units).creates;
        for n in seq + 1..=seq + creates {
            out.insert(k.task(&format!("t{n}")));
        }
    }
    for unit in units {
        let by = unit.by.as_deref().unwrap_or(CONDUCTOR);
        if let Some(a) = &unit.ack {
            out.insert(a.stream.clone());
            out.insert(k.attempts(&a.agent));
            out.insert(k.dlq());
        }
        if let Some(f) = &unit.fence {
            out.insert(k.lease(&f.agent));
        }
        if let Some(i) = &unit.idem {
            out.insert(k.idem(i));
        }
        for op in &unit.ops {
            op_keys(k, op, by, &owners, facts, &mut out);
        }
    }
    out
}

/// In a repository town a verdict may also go to the merge queue's agent `merger`.
pub(crate) fn merge_queue_keys(k: &Keys, units: &[Unit], merger: &str, out: &mut BTreeSet<String>) {
    if units
        .iter()
        .flat_map(|u| &u.ops)
        .any(|op| matches!(op, Op::Verdict { .. }))
    {
        out.insert(k.agent(merger));
        out.insert(k.inbox(merger));
        out.insert(k.seq("msg"));
    }
}

/// The keys of one op by agent `by`.
fn op_keys(
    k: &Keys,
    op: &Op,
    by: &str,
    owners: &BTreeSet<String>,
    facts: &Facts,
    out: &mut BTreeSet<String>,
) {
    // Ops look an agent up under its canonical name and some write under the name given.
    let agent = |out: &mut BTreeSet<String>, name: &str| {
        out.insert(k.agent(name));
        out.insert(k.agent(canonical(name)));
    };
    // One message from `from` into `to`'s stream.
    let send = |out: &mut BTreeSet<String>, from: &str, to: &str, urgent: bool| {
        let to = canonical(to);
        out.insert(k.agent(to));
        out.insert(k.agent(canonical(from)));
        out.insert(k.seq("msg"));
        out.insert(if urgent { k.urgent(to) } else { k.inbox(to) });
    };
    // A task's state change: a finished task leaves its owner's set.
    let moved = |out: &mut BTreeSet<String>, task: &str| {
        out.insert(k.task(task));
        out.insert(k.finished());
        for o in owners {
            out.insert(k.owned(o));
        }
    };
    // A new task (`None`) has its key among the counter's (`keys`).
    let hand_to = |out: &mut BTreeSet<String>, task: Option<&str>, who: &str| {
        if let Some(task) = task {
            moved(out, task);
        }
        out.insert(k.owned(canonical(who)));
        out.insert(k.backlog());
        send(out, by, who, false);
    };
    match op {
        Op::Spawn { name, .. } => {
            agent(out, name);
            out.insert(k.agents());
            out.insert(k.inbox(name));
            out.insert(k.urgent(name));
        }
        Op::AgentState { name, .. }
        | Op::AgentPlugin { name, .. }
        | Op::SwapRefused { name, .. } => agent(out, name),
        Op::Prune { name, .. } => {
            let name = canonical(name);
            out.extend([
                k.agent(name),
                k.inbox(name),
                k.urgent(name),
                k.state(name),
                k.owned(name),
                k.attempts(name),
                k.shadow(name),
                k.agents(),
                k.dlq(),
            ]);
        }
        Op::SetState { .. } => {
            out.insert(k.state(by));
        }
        Op::Log { .. } | Op::Audit { .. } => {}
        Op::Send { to, urgent, .. } => send(out, by, to, *urgent),
        Op::Escalate { .. } => send(out, by, CONDUCTOR, true),
        Op::ClearConductor { .. } => {
            out.insert(k.inbox(CONDUCTOR));
            out.insert(k.urgent(CONDUCTOR));
        }
        Op::Assign {
            agent: who, task, ..
        } => {
            agent(out, who);
            agent(out, by);
            hand_to(out, task.as_deref(), who);
        }
        Op::BacklogAdd { .. } => {
            out.insert(k.backlog());
            out.insert(k.agents());
            out.insert(k.seq("msg"));
            agent(out, by);
            for a in facts.agents.iter().flatten() {
                out.insert(k.agent(a));
                out.insert(k.inbox(a));
            }
        }
        Op::BacklogClaim { task, agent: who } => {
            agent(out, who);
            out.insert(k.backlog());
            hand_to(out, Some(task), who);
        }
        Op::BacklogRemove { task } => {
            out.insert(k.backlog());
            moved(out, task);
        }
        Op::Transition { task, to, .. } => {
            agent(out, by);
            out.insert(k.backlog());
            moved(out, task);
            // A cancelled task's owner is told.
            if *to == TaskState::Cancelled {
                for o in owners {
                    send(out, by, o, false);
                }
            }
        }
        Op::MarkRunning { task } => moved(out, task),
        Op::RequestReview { task, reviewer, .. } => {
            moved(out, task);
            send(out, by, reviewer, false);
        }
        Op::Verdict { task, .. } => {
            agent(out, by);
            moved(out, task);
            send(out, by, CONDUCTOR, false);
            for o in owners {
                send(out, by, o, false);
            }
        }
        Op::DlqRetry { entry } => {
            out.insert(k.dlq());
            if let Some(a) = facts.dlq.get(entry).filter(|a| !a.is_empty()) {
                agent(out, a);
                out.insert(k.inbox(a));
                out.insert(k.urgent(a));
            }
        }
        Op::DlqDrop { .. } => {
            out.insert(k.dlq());
        }
        Op::Shadow { name, .. } => {
            agent(out, name);
            out.insert(k.shadow(name));
        }
        Op::ShadowRecord { .. } => {
            out.insert(k.shadow(by));
        }
        Op::KeyAdd { .. } | Op::KeyRevoke { .. } => {
            out.insert(k.api_keys());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::Kind;

    fn unit(ops: Vec<Op>) -> Unit {
        Unit {
            ops,
            by: Some("alice".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_send_declares_the_recipients_stream_and_nothing_is_read_first() {
        let k = Keys::new("t");
        let units = [unit(vec![Op::send("bob", Kind::Info, "hi")])];
        assert!(Needs::of(&units).nothing());
        let keys = keys(&k, &units, &Facts::default());
        for want in [
            k.inbox("bob"),
            k.agent("bob"),
            k.agent("alice"),
            k.seq("msg"),
        ] {
            assert!(keys.contains(&want), "{want} in {keys:?}");
        }
        assert!(!keys.contains(&k.urgent("bob")));
    }

    #[test]
    fn new_tasks_take_their_keys_from_the_counter() {
        let k = Keys::new("t");
        let units = [unit(vec![
            Op::BacklogAdd {
                desc: "d".into(),
                tags: String::new(),
            },
            Op::Assign {
                agent: "bob".into(),
                task: None,
                desc: "d".into(),
            },
        ])];
        let needs = Needs::of(&units);
        assert_eq!((needs.creates, needs.agents), (2, true));
        let facts = Facts {
            seq: Some(7),
            agents: Some(vec!["boss".into()]),
            ..Default::default()
        };
        let keys = keys(&k, &units, &facts);
        for want in [k.task("t8"), k.task("t9"), k.inbox("boss"), k.owned("bob")] {
            assert!(keys.contains(&want), "{want} in {keys:?}");
        }
        assert!(!keys.contains(&k.task("t10")));
    }

    #[test]
    fn a_verdict_reaches_the_owner_read_or_assigned_in_the_same_call() {
        let k = Keys::new("t");
        let units = [unit(vec![
            Op::Assign {
                agent: "carol".into(),
                task: Some("t1".into()),
                desc: String::new(),
            },
            Op::Verdict {
                task: "t1".into(),
                approve: false,
                text: String::new(),
            },
        ])];
        let facts = Facts {
            owners: [("t1".to_string(), "bob".to_string())].into(),
            ..Default::default()
        };
        let keys = keys(&k, &units, &facts);
        for want in [
            k.owned("bob"),
            k.owned("carol"),
            k.inbox("bob"),
            k.inbox("carol"),
        ] {
            assert!(keys.contains(&want), "{want} in {keys:?}");
        }
    }
}
