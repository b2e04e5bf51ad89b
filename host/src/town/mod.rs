//! Layer 2, the town's services: everything a person or a host can do to a town.
//!
//! The CLI is a thin shell over [`Town`]; `tt host` uses the same type. Writes go through the
//! applier ([`Db::apply_ops`] with typed [`Op`]s) so each command is one atomic, checked step;
//! reads are plain Redis commands. This layer knows nothing of Wasm: it may depend on `store`
//! only (`tests/layers.rs` checks).
//!
//! One file per concern: [`agents`](self::agents) (spawn, lifecycle, prune), [`mail`] (send,
//! inbox, mailbox depths), [`tasks`] (tasks and the backlog), [`dlq`], [`status`] (status,
//! events, idleness), [`usage`] (model spend), [`init`] (creating a town's files) and [`auth`]
//! (API keys and the audit trail of `tt serve` and `tt mcp`).

mod agents;
pub mod auth;
mod dlq;
pub mod init;
mod mail;
mod status;
mod tasks;
mod usage;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::store::applier::{Applied, Op};
use crate::store::config::Config;
use crate::store::conn::Db;
use crate::store::error;
use crate::store::keys::CONDUCTOR;
use crate::store::model::{canonical_name, Agent, Message, Stream};
use crate::store::streams::{self, Entry};

pub use agents::Lifecycle;
pub use status::{event_mentions, validate_stream_id, Follower};
pub use usage::{Usage, UsageLine};

pub struct Town {
    pub config: Config,
    pub db: Db,
}

/// An agent with its mailbox and workload.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    #[serde(flatten)]
    pub agent: Agent,
    /// Messages not yet delivered to a host.
    pub waiting: u64,
    /// Delivered to a host, not yet acknowledged.
    pub in_flight: u64,
    pub active_tasks: u64,
}

/// One mailbox entry; `message` is absent when the entry is not our schema.
#[derive(Debug, Clone, Serialize)]
pub struct MailItem {
    pub entry: String,
    pub stream: Stream,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For delivered messages: which host holds it and how often it was delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inbox {
    pub agent: String,
    /// Not yet delivered, urgent first.
    pub waiting: Vec<MailItem>,
    /// Delivered to a host and not yet acknowledged.
    pub delivered: Vec<MailItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: String,
    #[serde(flatten)]
    pub fields: HashMap<String, String>,
}

impl From<Entry> for Event {
    fn from(e: Entry) -> Event {
        Event {
            fields: e.text_map(),
            id: e.id,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub town: String,
    pub redis: String,
    pub agents: Vec<AgentView>,
    pub conductor_inbox: u64,
    pub tasks: HashMap<String, u64>,
    pub backlog: u64,
    pub dead_letters: u64,
    pub hosts: Vec<serde_json::Value>,
    /// Redis's memory use and maxmemory.
    pub memory: crate::store::sweep::Memory,
    /// Agents that cannot be served, with why and the fix: what running hosts report, and
    /// agents with mail and no plugin at all.
    pub cannot_serve: std::collections::BTreeMap<String, String>,
    pub recent_events: Vec<Event>,
}

impl Town {
    pub async fn open(dir: &Path) -> Result<Town> {
        let config = Config::load(dir)?;
        Town::connect(config).await
    }

    /// Connects to the Redis of an already loaded config.
    pub async fn connect(config: Config) -> Result<Town> {
        let db = Db::connect(&config).await?;
        Ok(Town { config, db })
    }

    fn who(from: Option<&str>) -> String {
        canonical_name(from.unwrap_or(CONDUCTOR)).to_string()
    }

    /// Up to `count` entries of `stream`, oldest first, or newest first with `newest_first`.
    async fn range(&self, stream: &str, newest_first: bool, count: usize) -> Result<Vec<Entry>> {
        let mut c = self.db.conn.clone();
        let (cmd, from, to) = if newest_first {
            ("XREVRANGE", "+", "-")
        } else {
            ("XRANGE", "-", "+")
        };
        let v: redis::Value = redis::cmd(cmd)
            .arg(stream)
            .arg(from)
            .arg(to)
            .arg("COUNT")
            .arg(count.min(i64::MAX as usize))
            .query_async(&mut c)
            .await?;
        Ok(streams::entries(&v))
    }

    /// Applies `op` as the humans (the CLI and the server).
    async fn as_humans(&self, op: Op) -> Result<Applied> {
        self.db.apply_human(CONDUCTOR, vec![op]).await
    }
}

fn first_task(r: Applied) -> Result<String> {
    r.task_ids()
        .into_iter()
        .next()
        .context("the applier created no task")
}

fn check_len(what: &str, text: &str, max: usize) -> Result<()> {
    if text.len() > max {
        return Err(error::usage(
            format!("{what} is {} bytes; the limit is {max}", text.len()),
            "send a path or a summary instead of the whole content",
        ));
    }
    Ok(())
}
