//! The service layer: everything a person or a host can do to a town.
//!
//! The CLI is a thin shell over [`Town`]; `tt host` uses the same type. Writes go through the
//! Lua applier ([`Db::apply_ops`]) so each command is one atomic, checked step; reads are plain
//! Redis commands.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redis::AsyncCommands;
use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::db::{Applied, Db};
use crate::error;
use crate::keys::{CONDUCTOR, GROUP};
use crate::limits::{MAX_DESCRIPTION_BYTES, MAX_MESSAGE_BYTES};
use crate::model::{
    canonical_name, is_terminal, validate_name, validate_task_id, Agent, Kind, Message, Task,
};
use crate::plugin::Digest;
use crate::streams::{self, Entry};

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
    pub stream: &'static str,
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
    pub recent_events: Vec<Event>,
}

/// Lifecycle commands on an agent.
#[derive(Debug, Clone, Copy)]
pub enum Lifecycle {
    Kill,
    Interrupt,
    Resume,
    Close,
}

impl Town {
    pub async fn open(dir: &Path) -> Result<Town> {
        let config = Config::load(dir)?;
        let db = Db::connect(&config).await?;
        Ok(Town { config, db })
    }

    fn who(from: Option<&str>) -> String {
        canonical_name(from.unwrap_or(CONDUCTOR)).to_string()
    }

    // ----- agents -----------------------------------------------------------------------------

    pub async fn spawn(
        &self,
        name: &str,
        role: &str,
        plugin: Option<&Path>,
        nickname: Option<&str>,
    ) -> Result<Agent> {
        validate_name(name)?;
        validate_name(role).map_err(|_| {
            error::usage(
                format!("invalid role {role:?}"),
                "roles are words like worker, reviewer",
            )
        })?;
        let plugin = match plugin {
            Some(p) => Some(p.to_path_buf()),
            None => self.config.agents.get(name).and_then(|a| a.plugin.clone()),
        };
        let (plugin_str, digest) = match &plugin {
            Some(p) => {
                let path = self.config.resolve(p);
                let bytes = std::fs::read(&path).map_err(|e| {
                    error::fail(
                        format!("plugin {}: {e}", path.display()),
                        "build the plugins (`bash plugins/build.sh`) or check the path",
                    )
                })?;
                (
                    Some(p.display().to_string()),
                    Some(Digest::of(&bytes).to_string()),
                )
            }
            None => (None, None),
        };
        self.db
            .apply_ops(
                CONDUCTOR,
                vec![
                    json!({"op": "spawn", "name": name, "role": role, "plugin": plugin_str,
                            "digest": digest, "nickname": nickname}),
                ],
            )
            .await?;
        self.agent(name)
            .await?
            .context("agent vanished right after spawning")
    }

    pub async fn agent(&self, name: &str) -> Result<Option<Agent>> {
        let mut c = self.db.conn.clone();
        let h: HashMap<String, String> = c.hgetall(self.db.keys.agent(name)).await?;
        Ok((!h.is_empty()).then(|| Agent::from_hash(name, &h)))
    }

    /// The agent, or an error naming it.
    pub async fn need_agent(&self, name: &str) -> Result<Agent> {
        validate_name(name)?;
        self.agent(name).await?.ok_or_else(|| {
            error::fail(
                format!("agent `{name}` not found"),
                "`tt list` shows the agents; `tt spawn NAME --role ROLE` adds one",
            )
        })
    }

    pub async fn agent_names(&self) -> Result<Vec<String>> {
        let mut c = self.db.conn.clone();
        let mut names: Vec<String> = c.smembers(self.db.keys.agents()).await?;
        names.sort();
        Ok(names)
    }

    pub async fn list(&self) -> Result<Vec<AgentView>> {
        let mut out = Vec::new();
        for name in self.agent_names().await? {
            if let Some(agent) = self.agent(&name).await? {
                out.push(self.view(agent).await?);
            }
        }
        Ok(out)
    }

    pub async fn view(&self, agent: Agent) -> Result<AgentView> {
        let (waiting, in_flight) = self.mailbox_depth(&agent.name).await?;
        let mut c = self.db.conn.clone();
        let active_tasks: u64 = c.scard(self.db.keys.owned(&agent.name)).await?;
        Ok(AgentView {
            agent,
            waiting,
            in_flight,
            active_tasks,
        })
    }

    /// (waiting, delivered-but-unacknowledged) over both of an agent's streams.
    pub async fn mailbox_depth(&self, name: &str) -> Result<(u64, u64)> {
        let mut waiting = 0;
        let mut in_flight = 0;
        for stream in [self.db.keys.urgent(name), self.db.keys.inbox(name)] {
            let (w, p) = self.stream_depth(&stream).await?;
            waiting += w;
            in_flight += p;
        }
        Ok((waiting, in_flight))
    }

    async fn stream_depth(&self, stream: &str) -> Result<(u64, u64)> {
        let Some(group) = self.group_info(stream).await? else {
            // Nobody reads this stream (the humans' mailbox): all of it waits.
            let mut c = self.db.conn.clone();
            let len: u64 = c.xlen(stream).await.unwrap_or(0);
            return Ok((len, 0));
        };
        let pending = group.get("pending").and_then(streams::int).unwrap_or(0) as u64;
        let lag = match group.get("lag").and_then(streams::int) {
            Some(l) => l as u64,
            // Redis cannot always say (after deletions): count what follows the last delivery.
            None => self
                .entries_after(stream, &last_delivered(&group))
                .await?
                .len() as u64,
        };
        Ok((lag, pending))
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

    pub async fn lifecycle(&self, name: &str, what: Lifecycle) -> Result<Agent> {
        validate_name(name)?;
        let (state, from): (&str, Option<&[&str]>) = match what {
            Lifecycle::Kill => ("stopped", None),
            Lifecycle::Interrupt => ("interrupted", Some(&["idle", "working", "closing"])),
            Lifecycle::Resume => ("idle", Some(&["interrupted", "cold", "stopped", "closing"])),
            Lifecycle::Close => ("closing", Some(&["idle", "working", "interrupted"])),
        };
        self.db
            .apply_ops(
                CONDUCTOR,
                vec![json!({"op": "agent_state", "name": name, "state": state, "from": from})],
            )
            .await?;
        self.need_agent(name).await
    }

    /// Removes stopped agents (and cold ones with `all`). Returns the names removed.
    pub async fn prune(&self, all: bool) -> Result<Vec<String>> {
        let states: &[&str] = if all {
            &["stopped", "cold"]
        } else {
            &["stopped"]
        };
        let mut removed = Vec::new();
        for agent in self.list().await? {
            if states.contains(&agent.agent.state.as_str()) {
                self.db
                    .apply_ops(
                        CONDUCTOR,
                        vec![json!({"op": "prune", "name": agent.agent.name, "states": states})],
                    )
                    .await?;
                removed.push(agent.agent.name);
            }
        }
        Ok(removed)
    }

    // ----- messages ---------------------------------------------------------------------------

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
        let r = self
            .db
            .apply_ops(
                &Self::who(from),
                vec![
                    json!({"op": "send", "to": to, "body": body, "kind": kind.as_str(),
                            "urgent": urgent}),
                ],
            )
            .await?;
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
            ("urgent", self.db.keys.urgent(name)),
            ("inbox", self.db.keys.inbox(name)),
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
        label: &'static str,
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

    /// Marks everything in the humans' `conductor` mailbox as read.
    pub async fn clear_conductor_inbox(&self) -> Result<u64> {
        let r = self
            .db
            .apply_ops(CONDUCTOR, vec![json!({"op": "clear_conductor"})])
            .await?;
        Ok(r.cleared.unwrap_or(0))
    }

    // ----- tasks ------------------------------------------------------------------------------

    pub async fn assign(&self, agent: &str, desc: &str, from: Option<&str>) -> Result<String> {
        validate_name(agent)?;
        if let Some(f) = from {
            validate_name(f)?;
        }
        check_len("task description", desc, MAX_DESCRIPTION_BYTES)?;
        let r = self
            .db
            .apply_ops(
                &Self::who(from),
                vec![json!({"op": "assign", "agent": agent, "desc": desc})],
            )
            .await?;
        first_task(r)
    }

    pub async fn task(&self, id: &str) -> Result<Option<Task>> {
        validate_task_id(id)?;
        let mut c = self.db.conn.clone();
        let h: HashMap<String, String> = c.hgetall(self.db.keys.task(id)).await?;
        Ok((!h.is_empty()).then(|| Task::from_hash(id, &h)))
    }

    pub async fn need_task(&self, id: &str) -> Result<Task> {
        self.task(id).await?.ok_or_else(|| {
            error::fail(
                format!("task `{id}` not found"),
                "`tt tasks` lists the tasks",
            )
        })
    }

    pub async fn tasks(&self, state: Option<&str>, agent: Option<&str>) -> Result<Vec<Task>> {
        if let Some(a) = agent {
            validate_name(a)?;
        }
        if let Some(s) = state {
            if !crate::model::TASK_STATES.contains(&s) {
                return Err(error::usage(
                    format!("unknown task state {s:?}"),
                    format!("use one of: {}", crate::model::TASK_STATES.join(", ")),
                ));
            }
        }
        let mut c = self.db.conn.clone();
        let ids: Vec<String> = c.zrange(self.db.keys.tasks(), 0, -1).await?;
        let mut out = Vec::new();
        for id in ids {
            let h: HashMap<String, String> = c.hgetall(self.db.keys.task(&id)).await?;
            let t = Task::from_hash(&id, &h);
            if state.is_some_and(|s| s != t.state)
                || agent.is_some_and(|a| t.owner.as_deref() != Some(a))
            {
                continue;
            }
            out.push(t);
        }
        Ok(out)
    }

    /// complete / fail / cancel a task; an illegal move is an error and changes nothing.
    pub async fn transition(&self, id: &str, to: &str, text: Option<&str>) -> Result<Task> {
        validate_task_id(id)?;
        self.db
            .apply_ops(
                CONDUCTOR,
                vec![json!({"op": "transition", "task": id, "to": to, "text": text})],
            )
            .await?;
        self.need_task(id).await
    }

    // ----- backlog ----------------------------------------------------------------------------

    pub async fn backlog_add(&self, desc: &str, tags: &[String]) -> Result<String> {
        check_len("task description", desc, MAX_DESCRIPTION_BYTES)?;
        let r = self
            .db
            .apply_ops(
                CONDUCTOR,
                vec![json!({"op": "backlog_add", "desc": desc, "tags": tags.join(",")})],
            )
            .await?;
        first_task(r)
    }

    pub async fn backlog(&self) -> Result<Vec<Task>> {
        let mut c = self.db.conn.clone();
        let ids: Vec<String> = c.zrange(self.db.keys.backlog(), 0, -1).await?;
        let mut out = Vec::new();
        for id in ids {
            let h: HashMap<String, String> = c.hgetall(self.db.keys.task(&id)).await?;
            out.push(Task::from_hash(&id, &h));
        }
        Ok(out)
    }

    pub async fn backlog_claim(&self, id: &str, agent: &str) -> Result<Task> {
        validate_task_id(id)?;
        validate_name(agent)?;
        self.db
            .apply_ops(
                CONDUCTOR,
                vec![json!({"op": "backlog_claim", "task": id, "agent": agent})],
            )
            .await?;
        self.need_task(id).await
    }

    pub async fn backlog_remove(&self, id: &str) -> Result<Task> {
        validate_task_id(id)?;
        self.db
            .apply_ops(CONDUCTOR, vec![json!({"op": "backlog_remove", "task": id})])
            .await?;
        self.need_task(id).await
    }

    // ----- dead letters -----------------------------------------------------------------------

    pub async fn dead_letters(&self, n: usize) -> Result<Vec<Event>> {
        let mut c = self.db.conn.clone();
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(self.db.keys.dlq())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(n.min(i64::MAX as usize))
            .query_async(&mut c)
            .await?;
        Ok(streams::entries(&v)
            .into_iter()
            .map(|e| Event {
                fields: e.text_map(),
                id: e.id,
            })
            .collect())
    }

    /// Puts dead letters back into their mailboxes (`retry`) or deletes them.
    pub async fn dlq_act(&self, entries: &[String], retry: bool) -> Result<usize> {
        let op = if retry { "dlq_retry" } else { "dlq_drop" };
        for id in entries {
            self.db
                .apply_ops(CONDUCTOR, vec![json!({"op": op, "entry": id})])
                .await?;
        }
        Ok(entries.len())
    }

    // ----- status and events ------------------------------------------------------------------

    pub async fn status(&self, events: usize) -> Result<Status> {
        let agents = self.list().await?;
        let mut tasks: HashMap<String, u64> = HashMap::new();
        for t in self.tasks(None, None).await? {
            *tasks.entry(t.state).or_default() += 1;
        }
        let mut c = self.db.conn.clone();
        let backlog: u64 = c.zcard(self.db.keys.backlog()).await?;
        let dead_letters: u64 = c.xlen(self.db.keys.dlq()).await?;
        let (w, _) = self.mailbox_depth(CONDUCTOR).await?;
        let hosts: HashMap<String, String> = c.hgetall(self.db.keys.hosts()).await?;
        let mut hosts: Vec<serde_json::Value> = hosts
            .values()
            .filter_map(|v| serde_json::from_str(v).ok())
            .collect();
        hosts.sort_by_key(|h| h["name"].as_str().unwrap_or("").to_string());
        Ok(Status {
            town: self.config.town.name.clone(),
            redis: self
                .config
                .redis
                .url
                .clone()
                .unwrap_or_else(|| "embedded".into()),
            agents,
            conductor_inbox: w,
            tasks,
            backlog,
            dead_letters,
            hosts,
            recent_events: self.events(events, None).await?,
        })
    }

    /// The last `n` events, oldest first, optionally about one agent.
    pub async fn events(&self, n: usize, agent: Option<&str>) -> Result<Vec<Event>> {
        if let Some(a) = agent {
            validate_name(a)?;
        }
        let mut c = self.db.conn.clone();
        let scan = if agent.is_some() {
            n.saturating_mul(20).max(1000)
        } else {
            n
        };
        let v: redis::Value = redis::cmd("XREVRANGE")
            .arg(self.db.keys.events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(scan)
            .query_async(&mut c)
            .await?;
        let mut out: Vec<Event> = streams::entries(&v)
            .into_iter()
            .map(|e| Event {
                fields: e.text_map(),
                id: e.id,
            })
            .filter(|e| agent.is_none_or(|a| event_mentions(e, a)))
            .take(n)
            .collect();
        out.reverse();
        Ok(out)
    }

    /// The id of the newest event (`0-0` when there is none), to follow from.
    pub async fn last_event_id(&self) -> Result<String> {
        let mut c = self.db.conn.clone();
        let v: redis::Value = redis::cmd("XREVRANGE")
            .arg(self.db.keys.events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut c)
            .await?;
        Ok(streams::entries(&v)
            .pop()
            .map(|e| e.id)
            .unwrap_or_else(|| "0-0".into()))
    }

    /// Events after `last` (exclusive), waiting up to `block` for new ones.
    pub async fn events_after(&self, last: &str, block: Duration) -> Result<Vec<Event>> {
        let mut c = self.db.dedicated(block).await?;
        let v: redis::Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.db.keys.events())
            .arg(last)
            .query_async(&mut c)
            .await?;
        Ok(streams::read_reply(&v)
            .into_iter()
            .flat_map(|(_, es)| es)
            .map(|e| Event {
                fields: e.text_map(),
                id: e.id,
            })
            .collect())
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
            if matches!(a.agent.state.as_str(), "stopped" | "cold" | "interrupted") {
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
            .all(|t| is_terminal(&t.state) || t.state == "pending"))
    }
}

fn last_delivered(group: &HashMap<String, redis::Value>) -> String {
    group
        .get("last-delivered-id")
        .and_then(streams::text)
        .unwrap_or_else(|| "0-0".into())
}

pub fn event_mentions(e: &Event, agent: &str) -> bool {
    ["agent", "from", "to", "by"]
        .iter()
        .any(|k| e.fields.get(*k).map(String::as_str) == Some(agent))
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
