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
//! `journal = 0` turns the journal off. A handling retried after a failure writes another
//! entry (the attempt tells them apart).
//!
//! Cheap enough to be on by default (`tt bench replay` measures it on the host figure):
//! - the host writes a [`Draft`], borrowing the handling's own values and serialised once,
//!   straight to the entry's JSON (no `serde_json::Value` trees built and thrown away);
//! - a batch's entries go in one pipeline sent together with the applier call of its units
//!   (`host/handling.rs`), so Redis takes both in one turn of its event loop and one fsync of
//!   its append-only file, instead of a round trip (and an fsync) of their own before it.

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

/// An entry as the host writes it: the handling's own values, borrowed, serialised once to
/// the JSON that reads back as an [`Entry`] (the same field names).
#[derive(Serialize)]
pub struct Draft<'a, M: Serialize, C: Serialize, A: Serialize> {
    pub msg: &'a str,
    pub attempt: u32,
    pub task: Option<&'a str>,
    pub digest: &'a str,
    pub message: &'a M,
    pub calls: &'a C,
    pub actions: Option<&'a A>,
    pub outcome: &'a str,
    pub ms: f64,
    pub at_ms: u64,
}

impl<M: Serialize, C: Serialize, A: Serialize> Draft<'_, M, C, A> {
    /// The entry's JSON, as [`Db::journal_append_all`] takes it.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string(self)?)
    }
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

    /// Appends `entries` (each an entry's JSON, [`Draft::to_json`]) to `agent`'s journal in
    /// one round trip, keeping about `keep`.
    pub async fn journal_append_all(
        &self,
        agent: &str,
        entries: &[String],
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
                .arg(e)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the host writes reads back whole: replay is exact only if nothing is lost here.
    #[test]
    fn a_draft_reads_back_as_the_entry_it_describes() {
        let message = serde_json::json!({"id": "1-0", "body": "review t1", "attempt": 1});
        let calls = serde_json::json!([{"interface": "host", "function": "now-ms",
            "request": null, "response": 5, "us": 3}]);
        let actions = serde_json::json!([{"Approve": {"task_id": "t1", "text": "ok"}}]);
        let draft = Draft {
            msg: "1-0",
            attempt: 1,
            task: Some("t1"),
            digest: "abc",
            message: &message,
            calls: &calls,
            actions: Some(&actions),
            outcome: "ok: 1 actions",
            ms: 0.25,
            at_ms: 42,
        };
        let entry: Entry = serde_json::from_str(&draft.to_json().unwrap()).unwrap();
        assert_eq!(
            entry,
            Entry {
                msg: "1-0".into(),
                attempt: 1,
                task: Some("t1".into()),
                digest: "abc".into(),
                message,
                calls,
                actions: Some(actions),
                outcome: "ok: 1 actions".into(),
                ms: 0.25,
                at_ms: 42,
            }
        );
    }
}
