//! Every Redis key tinytown uses, in one place.
//!
//! A key is `tt:{<town>}:<kind>[:<id>]`. The braces are a Redis Cluster hash tag: every key of a
//! town hashes to one slot, so a multi-key Lua script runs on a single server and on a cluster
//! alike. The applier's Lua builds the same names from the prefix (`key(...)` in
//! `applier/lua/prelude.lua`); keep the two in step. Every key a script touches is also declared
//! in its call's KEYS, computed here in Rust (`applier/declare.rs`), so the cluster can move the
//! town's slot without a script failing half-way (`store::script`).

/// The consumer group every mailbox stream is read through.
pub const GROUP: &str = "tt";

/// The humans' mailbox. `supervisor` is another name for it.
pub const CONDUCTOR: &str = "conductor";
pub const SUPERVISOR: &str = "supervisor";

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(town: &str) -> Self {
        Keys {
            prefix: format!("tt:{{{town}}}:"),
        }
    }

    /// `tt:{town}:`, handed to the Lua scripts so they can name keys themselves (the names
    /// they use must still be among the keys the call declares: `store::script`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        k.push_str(&parts.join(":"));
        k
    }

    /// Set of agent names.
    pub fn agents(&self) -> String {
        self.key(&["agents"])
    }
    /// Hash: role, plugin, digest, nickname, state, created.
    pub fn agent(&self, name: &str) -> String {
        self.key(&["agent", name])
    }
    /// Normal-priority mailbox stream.
    pub fn inbox(&self, name: &str) -> String {
        self.key(&["inbox", name])
    }
    /// Urgent mailbox stream; always read before the normal one.
    pub fn urgent(&self, name: &str) -> String {
        self.key(&["urgent", name])
    }
    /// Hash: the agent's own state, written by `set-state` actions.
    pub fn state(&self, name: &str) -> String {
        self.key(&["state", name])
    }
    /// Set of the unfinished tasks an agent owns.
    pub fn owned(&self, name: &str) -> String {
        self.key(&["owned", name])
    }
    /// Hash: message id -> failed handling attempts so far; `<id>!why` -> the last failure;
    /// `<id>!starts` -> failed deliveries; `!current` -> the redelivered message in hand.
    pub fn attempts(&self, name: &str) -> String {
        self.key(&["attempts", name])
    }
    /// Stream of a shadow plugin's decisions beside the live one's.
    pub fn shadow(&self, name: &str) -> String {
        self.key(&["shadow", name])
    }
    /// Stream of the agent's handlings that called a capability, each with its import calls
    /// and their answers (`store::journal`).
    pub fn journal(&self, name: &str) -> String {
        self.key(&["journal", name])
    }
    /// String `<host>/<instance>:<token>` with a TTL: which host process serves an exclusive
    /// agent.
    pub fn lease(&self, name: &str) -> String {
        self.key(&["lease", name])
    }
    /// String: the instance id of the one `tt host` process serving under host name `name`,
    /// with a TTL renewed by its heartbeat.
    pub fn host_claim(&self, name: &str) -> String {
        self.key(&["host-claim", name])
    }
    /// Counter of an exclusive agent's leases: the fencing token.
    pub fn lease_seq(&self, name: &str) -> String {
        self.key(&["lease-seq", name])
    }
    /// Counter of the ids of `kind` (`task`: t1, t2…; `msg`: m1, m2…).
    pub fn seq(&self, kind: &str) -> String {
        self.key(&["seq", kind])
    }
    /// Hash: task fields.
    pub fn task(&self, id: &str) -> String {
        self.key(&["task", id])
    }
    /// Sorted set of all task ids, scored by creation order.
    pub fn tasks(&self) -> String {
        self.key(&["tasks"])
    }
    /// Sorted set of task ids waiting in the backlog, oldest first.
    pub fn backlog(&self) -> String {
        self.key(&["backlog"])
    }
    /// Capped stream of everything that happened.
    pub fn events(&self) -> String {
        self.key(&["events"])
    }
    /// Capped stream naming the agent of every message put in a mailbox (`a`), written with
    /// the message: hosts wait on it for all their agents at once (`host::mailboxes`).
    pub fn bell(&self) -> String {
        self.key(&["bell"])
    }
    /// Dead-letter stream: messages that could not be handled, with the reason.
    pub fn dlq(&self) -> String {
        self.key(&["dlq"])
    }
    /// Hash of API key id -> JSON {name, scopes, argon2 hash, created} (`tt auth key`).
    pub fn api_keys(&self) -> String {
        self.key(&["apikeys"])
    }
    /// String, ten minutes: the result of the command unit with idempotency key `k`
    /// (`Unit::idem`).
    pub fn idem(&self, k: &str) -> String {
        self.key(&["idem", k])
    }
    /// Sorted set of finished task ids by the time they finished (for the retention sweep).
    pub fn finished(&self) -> String {
        self.key(&["finished"])
    }
    /// Hash: state -> count of finished tasks the retention sweep has removed.
    pub fn archived(&self) -> String {
        self.key(&["archived"])
    }
    /// Hash, 40 days (`store::budget`): an agent's model spend on one UTC day (`tokens`,
    /// `cost` in micro-units) and its holds (`h:<reservation>` -> `tokens cost expires-ms`).
    pub fn budget_day(&self, agent: &str, day: &str) -> String {
        self.key(&["budget-day", agent, day])
    }
    /// Hash, 40 days after its last call: an agent's spend and holds on one task.
    pub fn budget_task(&self, task: &str, agent: &str) -> String {
        self.key(&["budget-task", task, agent])
    }
    /// Hash, 40 days: one UTC day's usage; field `["agent","task","model","metric"]` (JSON)
    /// -> count, metric one of `in`, `out`, `cost`, `calls`.
    pub fn usage(&self, day: &str) -> String {
        self.key(&["usage", day])
    }
    /// Hash of host name -> JSON heartbeat: what the host is, when it was last seen, how many
    /// agents it serves. Its size does not grow with the agents.
    pub fn hosts(&self) -> String {
        self.key(&["hosts"])
    }
    /// Hash of agent name -> messages handled, for the agents host `name` serves. Kept beside
    /// the heartbeat, not in it, so that a beat writes only the counts that changed.
    pub fn served(&self, name: &str) -> String {
        self.key(&["served", name])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new("demo");
        assert_eq!(k.inbox("alice"), "tt:{demo}:inbox:alice");
        assert_eq!(k.task("t1"), "tt:{demo}:task:t1");
        for key in [k.agents(), k.events(), k.dlq(), k.urgent("bob")] {
            assert!(key.starts_with("tt:{demo}:"), "{key}");
        }
    }
}
