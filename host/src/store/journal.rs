//! The journal: what a handling asked the world and what it was told.
//!
//! For each handled message the host appends one entry to the agent's journal stream: the
//! message as the role saw it, the plugin digest, every import call in order with its request
//! and answer (the runtime's `record::Call`, secrets already redacted by the capability), the
//! actions returned (or the error) and the time spent. That is what an audit reads (`tt journal
//! AGENT`) and what a replay answers a candidate's calls from (`tt replay`): a handling's inputs
//! are the message plus those answers.
//!
//! Bounded: each stream keeps its newest `[retention] journal` entries (`XADD ... MAXLEN`);
//! `journal = 0` turns the journal off. A batch's entries go in one pipelined round trip,
//! just before its units are applied.
//! An entry is written when the handling's unit is applied (just before); a handling retried
//! after a failure writes another entry (the attempt tells them apart).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::conn::Db;
use super::streams;

/// One journal entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// The message handled.
    pub msg: String,
    pub attempt: u32,
    pub task: Option<String>,
    /// The plugin that decided.
    pub digest: String,
    /// The message as the role saw it (a WIT `message`).
    pub message: serde_json::Value,
    /// Each import call: `{interface, function, request, response, us}`.
    pub calls: serde_json::Value,
    /// The actions returned (WIT `action`s), or None when the handling failed.
    pub actions: Option<serde_json::Value>,
    /// `ok: N actions`, or the error.
    pub outcome: String,
    pub ms: f64,
    pub at_ms: u64,
}

impl Db {
    /// Appends `entry` to `agent`'s journal, keeping about `keep` entries.
    pub async fn journal_append(&self, agent: &str, entry: &Entry, keep: u64) -> Result<()> {
        let mut c = self.conn.clone();
        let json = serde_json::to_string(entry)?;
        let _: String = redis::cmd("XADD")
            .arg(self.keys.journal(agent))
            .arg("MAXLEN")
            .arg(keep)
            .arg("*")
            .arg("entry")
            .arg(json)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Appends `entries` to `agent`'s journal in one round trip, keeping about `keep`.
    pub async fn journal_append_all(
        &self,
        agent: &str,
        entries: &[Entry],
        keep: u64,
    ) -> Result<()> {
        let key = self.keys.journal(agent);
        let mut p = redis::pipe();
        for e in entries {
            p.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(keep)
                .arg("*")
                .arg("entry")
                .arg(serde_json::to_string(e)?)
                .ignore();
        }
        // Exact trimming once per batch: `~` alone trims only whole nodes of ~100 entries.
        p.cmd("XTRIM").arg(&key).arg("MAXLEN").arg(keep).ignore();
        let mut c = self.conn.clone();
        let _: () = p.query_async(&mut c).await?;
        Ok(())
    }

    /// The newest `n` entries of `agent`'s journal, oldest first, with their stream ids.
    pub async fn journal_read(&self, agent: &str, n: usize) -> Result<Vec<(String, Entry)>> {
        let mut c = self.conn.clone();
        let v: redis::Value = redis::cmd("XREVRANGE")
            .arg(self.keys.journal(agent))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(n.min(i64::MAX as usize))
            .query_async(&mut c)
            .await?;
        let mut out = Vec::new();
        for e in streams::entries(&v) {
            let fields = e.text_map();
            let Some(json) = fields.get("entry") else {
                continue;
            };
            match serde_json::from_str::<Entry>(json) {
                Ok(entry) => out.push((e.id.clone(), entry)),
                Err(err) => tracing::warn!(agent, id = %e.id, "unreadable journal entry: {err}"),
            }
        }
        out.reverse();
        Ok(out)
    }
}
