//! The retention sweep: keeps a town within the `[retention]` policy
//! ([`crate::store::policy::RetentionSection`]) so that it runs for months in a fixed footprint.
//! One script call (`sweep.lua`) per host per `sweep_ms` and 500 agents, whose cost does not
//! grow with the town's history; the host names only the agents with something to trim
//! (`host::upkeep`):
//!
//! - each served mailbox stream is trimmed (`XTRIM MINID`) below a safe floor: never past the
//!   group's last-delivered id nor its oldest pending entry (Redis 7.0 has no `XACKDEL`), and
//!   keeping the last entries of the agent's share of history for `tt inbox` and audits
//!   (`mailbox_history`, or less in a town so big that `mailbox_history_total` spread over
//!   its agents is less: a busy town of 10,000 agents would otherwise keep ten million
//!   entries, past its `maxmemory`);
//! - shadow records, events and dead letters are capped by count (dead letters also by age);
//! - each swept agent's journal is cut to its share of `journal_total` (the town's budget over
//!   its number of agents): the per-agent cap alone would let a big town's journals outgrow
//!   its `maxmemory`. Hosts write each journal trimmed to that share already; the sweep cuts
//!   the journals written under a larger one, before the town grew;
//! - finished tasks older than `finished_task_secs` are removed, their counts by state kept
//!   (`tt status`);
//! - hosts silent for `dead_host_secs` are dropped from the heartbeat hash, with their served
//!   counts.
//!
//! The script declares every key it touches (`store::script`). Which finished tasks are old
//! enough is only known from what is stored, so the sweep reads that first and names those
//! tasks' keys in the call; the script checks each again before removing it, so a sweep that
//! read a task another host's sweep removed meanwhile simply skips it.

use std::sync::LazyLock;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::json;

use crate::store::conn::Db;
use crate::store::error;
use crate::store::model::now_ms;
use crate::store::policy::RetentionSection;
use crate::store::script::{self, OnFull};

// It frees memory, so it must run when Redis is full.
static SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| script::new(OnFull::Run, include_str!("sweep.lua")));

/// The most finished tasks one sweep removes.
const ARCHIVE_BATCH: usize = 500;

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Swept {
    /// Stream entries trimmed (mailboxes, shadow records, journals, events, dead letters).
    pub trimmed: u64,
    /// Finished tasks removed.
    pub archived: u64,
    pub hosts_forgotten: u64,
}

/// Redis's memory use, from `INFO memory`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    pub used: u64,
    /// `maxmemory`; 0 when Redis has none.
    pub max: u64,
}

impl Memory {
    /// At or past 80% of `maxmemory`: writes will soon be refused.
    pub fn near_full(&self) -> bool {
        self.max > 0 && self.used.saturating_mul(5) >= self.max.saturating_mul(4)
    }
}

impl Db {
    /// Trims the mailboxes of `agents` and the town-wide history to `policy`.
    pub async fn sweep(&self, agents: &[String], policy: &RetentionSection) -> Result<Swept> {
        let now = now_ms();
        let finished_task_ms = policy.finished_task_secs.saturating_mul(1000);
        let mut conn = self.conn.clone();
        // Each agent's shares of the town's budgets, for the town's number of agents now.
        // And the hosts with a heartbeat: a silent one's served counts go with it.
        let (count, hosts): (u64, Vec<String>) = redis::pipe()
            .scard(self.keys.agents())
            .hkeys(self.keys.hosts())
            .query_async(&mut conn)
            .await
            .map_err(error::from_redis)?;
        let shares = policy.shares(count);
        let finished: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.finished())
            .arg("-inf")
            .arg(now.saturating_sub(finished_task_ms))
            .arg("LIMIT")
            .arg(0)
            .arg(ARCHIVE_BATCH)
            .query_async(&mut conn)
            .await
            .map_err(error::from_redis)?;
        let k = &self.keys;
        let mut keys = vec![
            k.events(),
            k.dlq(),
            k.finished(),
            k.tasks(),
            k.archived(),
            k.hosts(),
        ];
        for a in agents {
            keys.extend([k.urgent(a), k.inbox(a), k.shadow(a), k.journal(a)]);
        }
        keys.extend(hosts.iter().map(|h| k.served(h)));
        keys.extend(finished.iter().map(|id| k.task(id)));
        keys.sort();
        keys.dedup();
        let args = json!({
            "agents": agents,
            "finished": finished,
            "hosts": hosts,
            "mailbox_keep": shares.mailbox,
            "journal_keep": shares.journal,
            "events": policy.events,
            "dead_letters": policy.dead_letters,
            "dead_letter_ms": policy.dead_letter_secs.saturating_mul(1000),
            "shadow_records": policy.shadow_records,
            "finished_task_ms": finished_task_ms,
            "dead_host_ms": policy.dead_host_secs.saturating_mul(1000),
        });
        let raw: String = SCRIPT
            .key(keys)
            .arg(self.keys.prefix())
            .arg(now)
            .arg(args.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(error::from_redis)?;
        serde_json::from_str(&raw).with_context(|| format!("decoding the sweep's reply {raw:?}"))
    }

    /// Redis's `used_memory` and `maxmemory`; on a cluster, of the fullest node (the town
    /// lives on one).
    pub async fn memory(&self) -> Result<Memory> {
        let mut conn = self.conn.clone();
        let reply: redis::Value = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .map_err(error::from_redis)?;
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::VerbatimString { text, .. } => Some(text.clone()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        let texts: Vec<String> = match &reply {
            redis::Value::Map(nodes) => nodes.iter().filter_map(|(_, v)| text(v)).collect(),
            v => text(v).into_iter().collect(),
        };
        let parse = |info: &str| {
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            };
            Memory {
                used: field("used_memory"),
                max: field("maxmemory"),
            }
        };
        Ok(texts
            .iter()
            .map(|t| parse(t))
            .max_by_key(|m| m.used)
            .unwrap_or_default())
    }
}
