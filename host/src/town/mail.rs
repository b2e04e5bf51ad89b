//! Mail: sending, reading a mailbox without changing it, and mailbox depths.
//!
//! A mailbox is two streams (urgent, normal) read through the consumer group [`GROUP`]. What
//! follows the group's last-delivered id is waiting; the group's pending list is in hand.

use std::collections::HashMap;

use anyhow::{Context, Result};

use super::{check_len, Inbox, MailItem, Town};
use crate::store::applier::Op;
use crate::store::keys::{CONDUCTOR, GROUP};
use crate::store::limits::MAX_MESSAGE_BYTES;
use crate::store::model::{canonical_name, validate_name, Kind, Message, Stream};
use crate::store::streams::{self, Entry};

impl Town {
    pub async fn send(
        &self,
        to: &str,
        body: &str,
        kind: Kind,
        urgent: bool,
        from: Option<&str>,
    ) -> Result<String> {
        validate_name(to)?;
        if let Some(f) = from {
            validate_name(f)?;
        }
        check_len("message body", body, MAX_MESSAGE_BYTES)?;
        let op = Op::Send {
            to: to.to_string(),
            kind,
            body: body.to_string(),
            urgent,
            task: None,
            corr: None,
        };
        let r = self.db.apply_human(&Self::who(from), vec![op]).await?;
        r.message_ids().pop().context("the applier sent nothing")
    }

    pub async fn inbox(&self, name: &str) -> Result<Inbox> {
        let name = canonical_name(name);
        if name != CONDUCTOR {
            self.need_agent(name).await?;
        }
        let mut waiting = Vec::new();
        let mut delivered = Vec::new();
        for (label, stream) in [
            (Stream::Urgent, self.db.keys.urgent(name)),
            (Stream::Inbox, self.db.keys.inbox(name)),
        ] {
            let (w, d) = self.read_mailbox(&stream, label).await?;
            waiting.extend(w);
            delivered.extend(d);
        }
        Ok(Inbox {
            agent: name.to_string(),
            waiting,
            delivered,
        })
    }

    async fn read_mailbox(
        &self,
        stream: &str,
        label: Stream,
    ) -> Result<(Vec<MailItem>, Vec<MailItem>)> {
        let mut c = self.db.conn.clone();
        let item = |e: Entry| {
            let (message, error) = match Message::decode(&e.fields) {
                Ok(m) => (Some(m), None),
                Err(err) => (None, Some(err.to_string())),
            };
            MailItem {
                entry: e.id,
                stream: label,
                message,
                error,
                consumer: None,
                deliveries: None,
            }
        };
        let group = self.group_info(stream).await?;
        let last = group
            .as_ref()
            .map(last_delivered)
            .unwrap_or_else(|| "0-0".into());
        let waiting = self
            .entries_after(stream, &last)
            .await?
            .into_iter()
            .map(item)
            .collect();
        let mut delivered = Vec::new();
        if group.is_some() {
            let pending: redis::Value = redis::cmd("XPENDING")
                .arg(stream)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(10_000)
                .query_async(&mut c)
                .await
                .unwrap_or(redis::Value::Nil);
            for p in streams::array(&pending) {
                let parts = streams::array(p);
                let Some(id) = parts.first().and_then(streams::text) else {
                    continue;
                };
                let one: redis::Value = redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(&id)
                    .arg(&id)
                    .query_async(&mut c)
                    .await?;
                for e in streams::entries(&one) {
                    let mut it = item(e);
                    it.consumer = parts.get(1).and_then(streams::text);
                    it.deliveries = parts.get(3).and_then(streams::int).map(|d| d as u64);
                    delivered.push(it);
                }
            }
        }
        Ok((waiting, delivered))
    }

    /// Marks read what `shown` (a `conductor` inbox the person saw) holds; what arrived
    /// since stays unread.
    pub async fn clear_conductor_inbox(&self, shown: &Inbox) -> Result<u64> {
        let newest = |stream: Stream| {
            shown
                .waiting
                .iter()
                .filter(|m| m.stream == stream)
                .map(|m| m.entry.clone())
                .max_by_key(|id| streams::id_order(id))
        };
        let r = self
            .as_humans(Op::ClearConductor {
                urgent_upto: newest(Stream::Urgent),
                inbox_upto: newest(Stream::Inbox),
            })
            .await?;
        Ok(r.cleared.unwrap_or(0))
    }

    /// (waiting, delivered-but-unacknowledged) over both of an agent's streams.
    pub async fn mailbox_depth(&self, name: &str) -> Result<(u64, u64)> {
        let (urgent, inbox) = (self.db.keys.urgent(name), self.db.keys.inbox(name));
        let ((w1, p1), (w2, p2)) =
            tokio::try_join!(self.stream_depth(&urgent), self.stream_depth(&inbox))?;
        Ok((w1 + w2, p1 + p2))
    }

    async fn stream_depth(&self, stream: &str) -> Result<(u64, u64)> {
        let mut p = redis::pipe();
        p.ignore_errors();
        p.cmd("XINFO").arg("GROUPS").arg(stream);
        p.xlen(stream);
        let mut c = self.db.conn.clone();
        let replies: Vec<redis::RedisResult<redis::Value>> = p.query_async(&mut c).await?;
        let mut replies = replies.into_iter();
        let groups = replies.next().and_then(Result::ok);
        let len: u64 = replies
            .next()
            .and_then(Result::ok)
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or(0);
        self.resolve_depth(stream, depth_of(groups.as_ref(), len))
            .await
    }

    /// The numbers of a [`Depth`], counting what follows the last delivery when Redis could not.
    pub(super) async fn resolve_depth(&self, stream: &str, d: Depth) -> Result<(u64, u64)> {
        Ok(match d {
            Depth::Known(waiting, pending) => (waiting, pending),
            Depth::CountAfter(last, pending) => (
                self.entries_after(stream, &last).await?.len() as u64,
                pending,
            ),
        })
    }

    /// Our consumer group's `XINFO GROUPS` entry for `stream`; `None` when nobody reads it (no
    /// such stream, or no group).
    async fn group_info(&self, stream: &str) -> Result<Option<HashMap<String, redis::Value>>> {
        let mut c = self.db.conn.clone();
        let Ok(groups) = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async::<redis::Value>(&mut c)
            .await
        else {
            return Ok(None);
        };
        Ok(streams::array(&groups)
            .iter()
            .map(streams::flat_map)
            .find(|m| m.get("name").and_then(streams::text).as_deref() == Some(GROUP)))
    }

    /// The entries of `stream` after id `last` (not yet delivered, when `last` is the group's
    /// last-delivered id).
    async fn entries_after(&self, stream: &str, last: &str) -> Result<Vec<Entry>> {
        let mut c = self.db.conn.clone();
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(format!("({last}"))
            .arg("+")
            .query_async(&mut c)
            .await?;
        Ok(streams::entries(&v))
    }
}

/// One stream's depth as its `XINFO GROUPS` reply (absent when the command failed) and `XLEN`
/// tell it: (waiting, in hand), or, when Redis cannot say the group's lag (after deletions),
/// where to count from.
pub(super) enum Depth {
    Known(u64, u64),
    CountAfter(String, u64),
}

pub(super) fn depth_of(groups: Option<&redis::Value>, len: u64) -> Depth {
    let group = groups.and_then(|g| {
        streams::array(g)
            .iter()
            .map(streams::flat_map)
            .find(|m| m.get("name").and_then(streams::text).as_deref() == Some(GROUP))
    });
    // Nobody reads this stream (the humans' mailbox): all of it waits.
    let Some(group) = group else {
        return Depth::Known(len, 0);
    };
    let pending = group.get("pending").and_then(streams::int).unwrap_or(0) as u64;
    match group.get("lag").and_then(streams::int) {
        Some(lag) => Depth::Known(lag as u64, pending),
        None => Depth::CountAfter(last_delivered(&group), pending),
    }
}

pub(super) fn last_delivered(group: &HashMap<String, redis::Value>) -> String {
    group
        .get("last-delivered-id")
        .and_then(streams::text)
        .unwrap_or_else(|| "0-0".into())
}
