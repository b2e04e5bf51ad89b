//! Agents: spawn, look up, list, lifecycle, prune.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use redis::AsyncCommands;

use super::{AgentView, Town};
use crate::store::applier::Op;
use crate::store::builtin;
use crate::store::error;
use crate::store::model::{validate_name, Agent, AgentState, Digest};

/// Lifecycle commands on an agent.
#[derive(Debug, Clone, Copy)]
pub enum Lifecycle {
    Kill,
    Interrupt,
    Resume,
    Close,
}

impl Town {
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
        // No plugin: the built-in role of that name, if there is one (`builtin:worker`).
        let builtin = match &plugin {
            Some(p) => match builtin::referenced(&p.to_string_lossy()) {
                Some(b) => Some(builtin::by_name(b).ok_or_else(|| {
                    error::fail(
                        format!("there is no built-in role `{b}`"),
                        format!("the built-ins are: {}", builtin::names()),
                    )
                })?),
                None => None,
            },
            None => builtin::for_role(role),
        };
        let (plugin_str, digest) = match (&plugin, builtin) {
            (_, Some(b)) => (Some(b.reference()), Some(b.digest().to_string())),
            (Some(p), None) => {
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
            (None, None) => (None, None),
        };
        self.as_humans(Op::Spawn {
            name: name.to_string(),
            role: role.to_string(),
            plugin: plugin_str,
            digest,
            nickname: nickname.map(str::to_string),
        })
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
            error::of_kind(
                error::ErrorKind::NotFound,
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

    /// The served agents (not stopped, cold or interrupted) of each of `roles`, in name order:
    /// one read of every agent's role and state, whatever the number of roles asked.
    pub async fn agents_of_roles(&self, roles: &[&str]) -> Result<Vec<Vec<String>>> {
        let mut out = vec![Vec::new(); roles.len()];
        let names = self.agent_names().await?;
        if names.is_empty() {
            return Ok(out);
        }
        let mut p = redis::pipe();
        for name in &names {
            p.cmd("HMGET")
                .arg(self.db.keys.agent(name))
                .arg("role")
                .arg("state");
        }
        let mut c = self.db.conn.clone();
        let found: Vec<(Option<String>, Option<String>)> = p.query_async(&mut c).await?;
        for (name, (role, state)) in names.into_iter().zip(found) {
            let served = state
                .as_deref()
                .and_then(crate::store::model::AgentState::parse)
                .unwrap_or(crate::store::model::AgentState::Idle)
                .is_served();
            let at = roles.iter().position(|r| role.as_deref() == Some(*r));
            if let (true, Some(i)) = (served, at) {
                out[i].push(name);
            }
        }
        Ok(out)
    }

    /// Every agent with its mailbox depths and tasks in hand, read in one pipelined round trip
    /// (plus one to count, in the rare case Redis cannot say a group's lag).
    pub async fn list(&self) -> Result<Vec<AgentView>> {
        let names = self.agent_names().await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let k = &self.db.keys;
        let mut p = redis::pipe();
        p.ignore_errors();
        for n in &names {
            p.hgetall(k.agent(n)).scard(k.owned(n));
            for stream in [k.urgent(n), k.inbox(n)] {
                p.cmd("XINFO").arg("GROUPS").arg(&stream);
                p.xlen(&stream);
            }
        }
        let mut c = self.db.conn.clone();
        let replies: Vec<redis::RedisResult<redis::Value>> = p.query_async(&mut c).await?;
        let mut replies = replies.into_iter();
        let mut next = || replies.next().unwrap_or(Ok(redis::Value::Nil));
        let mut out = Vec::new();
        for name in names {
            let h: HashMap<String, String> = redis::from_redis_value(next()?)?;
            let active_tasks: u64 = redis::from_redis_value(next()?)?;
            let (mut waiting, mut in_flight) = (0, 0);
            for stream in [k.urgent(&name), k.inbox(&name)] {
                let groups = next().ok();
                let len: u64 = next()
                    .ok()
                    .and_then(|v| redis::from_redis_value(v).ok())
                    .unwrap_or(0);
                let (w, p) = self
                    .resolve_depth(&stream, super::mail::depth_of(groups.as_ref(), len))
                    .await?;
                waiting += w;
                in_flight += p;
            }
            if h.is_empty() {
                continue; // pruned between the two reads
            }
            out.push(AgentView {
                agent: Agent::from_hash(&name, &h),
                waiting,
                in_flight,
                active_tasks,
            });
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

    pub async fn lifecycle(&self, name: &str, what: Lifecycle) -> Result<Agent> {
        validate_name(name)?;
        use AgentState::*;
        let (state, from): (AgentState, Option<&[AgentState]>) = match what {
            Lifecycle::Kill => (Stopped, None),
            Lifecycle::Interrupt => (Interrupted, Some(&[Idle, Working, Closing])),
            Lifecycle::Resume => (Idle, Some(&[Interrupted, Cold, Stopped, Closing])),
            Lifecycle::Close => (Closing, Some(&[Idle, Working, Interrupted])),
        };
        self.as_humans(Op::AgentState {
            name: name.to_string(),
            state,
            from: from.map(<[AgentState]>::to_vec),
        })
        .await?;
        self.need_agent(name).await
    }

    /// Removes stopped agents (and cold ones with `all`). Returns the names removed.
    pub async fn prune(&self, all: bool) -> Result<Vec<String>> {
        let states: &[AgentState] = if all {
            &[AgentState::Stopped, AgentState::Cold]
        } else {
            &[AgentState::Stopped]
        };
        let mut removed = Vec::new();
        for agent in self.list().await? {
            if states.contains(&agent.agent.state) {
                self.as_humans(Op::Prune {
                    name: agent.agent.name.clone(),
                    states: states.to_vec(),
                })
                .await?;
                removed.push(agent.agent.name);
            }
        }
        Ok(removed)
    }
}
