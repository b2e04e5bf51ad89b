//! The town at a glance, its event history, and waiting until it is idle.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use redis::AsyncCommands;
use serde_json::json;

use super::{Event, Status, Town};
use crate::store::conn::Conn;
use crate::store::error;
use crate::store::keys::CONDUCTOR;
use crate::store::model::{validate_name, TaskState};
use crate::store::streams;

impl Town {
    /// Finished tasks the retention sweep removed, by state.
    async fn archived_counts(&self) -> Result<HashMap<String, u64>> {
        let mut c = self.db.conn.clone();
        Ok(c.hgetall(self.db.keys.archived()).await?)
    }

    /// The town at a glance. Its parts are independent reads, made concurrently on the one
    /// multiplexed connection, so the whole costs about two round trips, not one per part.
    pub async fn status(&self, events: usize) -> Result<Status> {
        let (agents, all_tasks, (backlog, dead_letters, hosts), (w, _), recent_events) = tokio::try_join!(
            self.list(),
            self.tasks(None, None),
            self.counts(),
            self.mailbox_depth(CONDUCTOR),
            self.events(events, None),
        )?;
        let (memory, archived) = tokio::try_join!(self.db.memory(), self.archived_counts())?;
        let mut tasks: HashMap<String, u64> = HashMap::new();
        for t in all_tasks {
            *tasks.entry(t.state.to_string()).or_default() += 1;
        }
        // Finished tasks the retention sweep removed still count.
        for (state, n) in archived {
            *tasks.entry(state).or_default() += n;
        }
        let mut hosts = self.with_served(hosts).await?;
        hosts.sort_by_key(|h| h["name"].as_str().unwrap_or("").to_string());
        let mut cannot_serve = std::collections::BTreeMap::new();
        for h in &hosts {
            for (agent, why) in h["blocked"].as_object().into_iter().flatten() {
                if let Some(why) = why.as_str() {
                    cannot_serve.insert(agent.clone(), why.to_string());
                }
            }
        }
        for a in &agents {
            let mail = a.waiting + a.in_flight > 0;
            if a.agent.plugin.is_none() && mail && a.agent.state.is_served() {
                if let Some(why) =
                    crate::store::builtin::why_unplugged(&a.agent.name, &a.agent.role)
                {
                    cannot_serve.entry(a.agent.name.clone()).or_insert(why);
                }
            }
        }
        Ok(Status {
            cannot_serve,
            town: self.config.town.name.clone(),
            redis: self.config.redis.describe(),
            agents,
            conductor_inbox: w,
            tasks,
            backlog,
            dead_letters,
            hosts,
            memory,
            recent_events,
        })
    }

    /// Backlog size, dead letters and the hosts' heartbeats, in one round trip.
    async fn counts(&self) -> Result<(u64, u64, HashMap<String, String>)> {
        let mut c = self.db.conn.clone();
        let k = &self.db.keys;
        Ok(redis::pipe()
            .zcard(k.backlog())
            .xlen(k.dlq())
            .hgetall(k.hosts())
            .query_async(&mut c)
            .await?)
    }

    /// The hosts' heartbeats, each with the agents it serves and the messages each handled
    /// (`agents`, from [`Keys::served`]), in one round trip.
    ///
    /// [`Keys::served`]: crate::store::keys::Keys::served
    async fn with_served(&self, beats: HashMap<String, String>) -> Result<Vec<serde_json::Value>> {
        if beats.is_empty() {
            return Ok(Vec::new());
        }
        let beats: Vec<(String, String)> = beats.into_iter().collect();
        let mut p = redis::pipe();
        for (name, _) in &beats {
            p.hgetall(self.db.keys.served(name));
        }
        let mut c = self.db.conn.clone();
        let served: Vec<HashMap<String, u64>> = p.query_async(&mut c).await?;
        Ok(beats
            .into_iter()
            .zip(served)
            .filter_map(|((_, beat), agents)| {
                let mut h: serde_json::Value = serde_json::from_str(&beat).ok()?;
                h.as_object_mut()?.insert("agents".into(), json!(agents));
                Some(h)
            })
            .collect())
    }

    /// The hosts whose last heartbeat is younger than `max_age`, by name.
    pub async fn hosts_alive(&self, max_age: Duration) -> Result<Vec<String>> {
        let mut c = self.db.conn.clone();
        let hosts: HashMap<String, String> = c.hgetall(self.db.keys.hosts()).await?;
        let now = crate::store::model::now_ms();
        let mut alive: Vec<String> = hosts
            .into_iter()
            .filter(|(_, beat)| {
                serde_json::from_str::<serde_json::Value>(beat)
                    .ok()
                    .and_then(|b| b["seen_ms"].as_u64())
                    .is_some_and(|seen| now.saturating_sub(seen) <= max_age.as_millis() as u64)
            })
            .map(|(name, _)| name)
            .collect();
        alive.sort();
        Ok(alive)
    }

    /// The last `n` events, oldest first, optionally about one agent.
    pub async fn events(&self, n: usize, agent: Option<&str>) -> Result<Vec<Event>> {
        if let Some(a) = agent {
            validate_name(a)?;
        }
        let scan = if agent.is_some() {
            n.saturating_mul(20).max(1000)
        } else {
            n
        };
        let mut out: Vec<Event> = self
            .range(&self.db.keys.events(), true, scan)
            .await?
            .into_iter()
            .map(Event::from)
            .filter(|e| agent.is_none_or(|a| event_mentions(e, a)))
            .take(n)
            .collect();
        out.reverse();
        Ok(out)
    }

    /// The id of the newest event (`0-0` when there is none), to follow from.
    pub async fn last_event_id(&self) -> Result<String> {
        let newest = self.range(&self.db.keys.events(), true, 1).await?;
        Ok(newest
            .into_iter()
            .next()
            .map(|e| e.id)
            .unwrap_or_else(|| "0-0".into()))
    }

    /// Events after `last` (exclusive), waiting up to `block` for new ones.
    pub async fn events_after(&self, last: &str, block: Duration) -> Result<Vec<Event>> {
        let mut c = self.db.dedicated(block).await?;
        let key = self.db.keys.events();
        let entries = streams::read_after(&mut c, &key, last, None, block).await?;
        Ok(entries.into_iter().map(Event::from).collect())
    }

    /// Follows the event stream from just after `from` (a stream id), or from now when `None`.
    /// The follower keeps one connection of its own for its blocking reads.
    pub async fn follow(&self, from: Option<&str>, block: Duration) -> Result<Follower> {
        let last = match from {
            Some(id) => {
                validate_stream_id(id)?;
                id.to_string()
            }
            None => self.last_event_id().await?,
        };
        Ok(Follower {
            conn: self.db.dedicated(block).await?,
            key: self.db.keys.events(),
            last,
            block,
        })
    }

    /// Waits until every task is finished and no agent has mail waiting or in hand.
    pub async fn wait_idle(&self, timeout: Option<Duration>) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.is_idle().await? {
                return Ok(());
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Err(error::fail(
                    format!(
                        "the town is still busy after {:?}",
                        timeout.unwrap_or_default()
                    ),
                    "`tt status` shows what is in flight; is `tt host` running?",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn is_idle(&self) -> Result<bool> {
        for a in self.list().await? {
            if !a.agent.state.is_served() {
                continue;
            }
            if a.waiting > 0 || a.in_flight > 0 {
                return Ok(false);
            }
        }
        Ok(self
            .tasks(None, None)
            .await?
            .iter()
            .all(|t| t.state.is_terminal() || t.state == TaskState::Pending))
    }
}

/// Reads the town's events as they are appended, with `XREAD BLOCK` (no polling).
pub struct Follower {
    conn: Conn,
    key: String,
    /// The id of the last event returned (or the starting point).
    pub last: String,
    block: Duration,
}

impl Follower {
    /// The next events after [`Follower::last`], waiting up to the block time; empty when none
    /// came.
    pub async fn next(&mut self) -> Result<Vec<Event>> {
        let entries =
            streams::read_after(&mut self.conn, &self.key, &self.last, Some(500), self.block)
                .await?;
        let events: Vec<Event> = entries.into_iter().map(Event::from).collect();
        if let Some(e) = events.last() {
            self.last = e.id.clone();
        }
        Ok(events)
    }
}

/// A stream id as Redis writes them: `<ms>-<seq>` (or just `<ms>`).
pub fn validate_stream_id(id: &str) -> Result<()> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if digits(ms) && digits(seq) {
        return Ok(());
    }
    Err(error::usage(
        format!("{id:?} is not an event id"),
        "event ids look like 1733000000000-0 (the `id` of an event)",
    ))
}

pub fn event_mentions(e: &Event, agent: &str) -> bool {
    ["agent", "from", "to", "by"]
        .iter()
        .any(|k| e.fields.get(*k).map(String::as_str) == Some(agent))
}
