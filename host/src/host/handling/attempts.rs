//! Counting failed deliveries of a message, in the agent's `attempts` hash: how many
//! handlings of it failed (and why, for its dead letter), and which one this process is in,
//! so that a crash in the middle of it counts too.

use std::time::Duration;

use anyhow::Result;
use redis::AsyncCommands;

use super::HandleCtx;
use crate::store::applier::Unit;

impl HandleCtx {
    pub(super) async fn previous_attempts(&self, member: &str) -> Result<u32> {
        let mut c = self.town.db.conn.clone();
        let key = self.town.db.keys.attempts(&self.agent);
        let n = c.hget::<_, _, Option<u32>>(key, member).await?;
        Ok(n.unwrap_or(0))
    }

    pub(super) async fn record_attempt(&self, member: &str, reason: &str) {
        let mut c = self.town.db.conn.clone();
        let key = self.town.db.keys.attempts(&self.agent);
        let why = format!("{member}!why");
        let _: Result<(), _> = redis::pipe()
            .hincr(&key, member, 1)
            .hset(&key, why, reason)
            .query_async::<()>(&mut c)
            .await;
    }

    /// Counts a failed delivery of `unit` and keeps why, for its dead letter should it come to
    /// that. Tried twice: the failure may have cost the connection, which comes back soon.
    pub(super) async fn record_failure(&self, unit: &Unit, reason: &str) {
        let Some(ack) = &unit.ack else { return };
        let key = self.town.db.keys.attempts(&self.agent);
        let (why, starts) = (
            format!("{}!why", ack.member),
            format!("{}!starts", ack.member),
        );
        for pause in [0, 200] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let mut c = self.town.db.conn.clone();
            let done: Result<(), _> = redis::pipe()
                .hset(&key, &why, reason)
                .hincr(&key, &starts, 1)
                .query_async(&mut c)
                .await;
            if done.is_ok() {
                return;
            }
        }
    }

    /// The failed deliveries of `member` so far, counting the one the previous process was in
    /// when it died (the `!current` mark is `member`).
    pub(super) async fn count_failures(&self, member: &str) -> Result<u64> {
        let mut c = self.town.db.conn.clone();
        let key = self.town.db.keys.attempts(&self.agent);
        let field = format!("{member}!starts");
        let member = member.to_string();
        let current: Option<String> = c.hget(&key, "!current").await?;
        if current.as_deref() == Some(member.as_str()) {
            let _: () = c.hdel(&key, "!current").await?;
            Ok(c.hincr::<_, _, _, u64>(&key, &field, 1).await?)
        } else {
            Ok(c.hget::<_, _, Option<u64>>(&key, &field)
                .await?
                .unwrap_or(0))
        }
    }

    pub(super) async fn unmark_current(&self) {
        let mut c = self.town.db.conn.clone();
        let key = self.town.db.keys.attempts(&self.agent);
        let _: Result<(), _> = c.hdel(key, "!current").await;
    }

    /// Marks `member` as the message being handled (redeliveries only; the mark outlives a
    /// crash of this process, and the next delivery counts it as failed).
    pub(super) async fn mark_current(&self, member: &str) -> Result<()> {
        let mut c = self.town.db.conn.clone();
        let key = self.town.db.keys.attempts(&self.agent);
        let member = member.to_string();
        Ok(c.hset::<_, _, _, ()>(key, "!current", member).await?)
    }

    pub(super) async fn last_failure(&self, member: &str) -> Result<Option<String>> {
        let mut c = self.town.db.conn.clone();
        let key = self.town.db.keys.attempts(&self.agent);
        let field = format!("{member}!why");
        Ok(c.hget::<_, _, Option<String>>(key, field).await?)
    }
}
