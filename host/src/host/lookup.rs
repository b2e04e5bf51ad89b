//! The guest's read-only view of the town (the `host` import), answered from Redis.
//!
//! Guest calls run on blocking threads, so each lookup waits on the async Redis client with the
//! runtime handle. Answers are as of the moment of asking; effects only happen through actions.

use std::sync::Arc;

use tokio::runtime::Handle;

use crate::runtime::{wit, Lookup};
use crate::store::model::{validate_name, validate_task_id, Agent, Task};
use crate::town::Town;

pub struct TownLookup {
    pub town: Arc<Town>,
    pub handle: Handle,
}

fn task_info(t: Task) -> wit::TaskInfo {
    wit::TaskInfo {
        id: t.id,
        description: t.description,
        state: t.state.to_string(),
        owner: t.owner,
        reviewer: t.reviewer,
        result: t.result,
        rejections: t.rejections,
        tags: t.tags,
    }
}

impl TownLookup {
    fn agent_info(&self, a: Agent) -> Result<wit::AgentInfo, String> {
        let v = self
            .handle
            .block_on(self.town.view(a))
            .map_err(|e| e.to_string())?;
        Ok(wit::AgentInfo {
            name: v.agent.name,
            role: v.agent.role,
            state: v.agent.state.to_string(),
            nickname: v.agent.nickname,
            inbox: (v.waiting + v.in_flight).min(u32::MAX as u64) as u32,
            active_tasks: v.active_tasks.min(u32::MAX as u64) as u32,
        })
    }

    fn ask<T>(&self, f: impl std::future::Future<Output = anyhow::Result<T>>) -> Result<T, String> {
        self.handle
            .block_on(f)
            .map_err(|e| crate::store::error::one_line(&e))
    }
}

impl Lookup for TownLookup {
    fn task(&self, id: &str) -> Result<Option<wit::TaskInfo>, String> {
        if validate_task_id(id).is_err() {
            return Ok(None);
        }
        Ok(self.ask(self.town.task(id))?.map(task_info))
    }

    fn agent(&self, name: &str) -> Result<Option<wit::AgentInfo>, String> {
        if validate_name(name).is_err() {
            return Ok(None);
        }
        match self.ask(self.town.agent(name))? {
            Some(a) => Ok(Some(self.agent_info(a)?)),
            None => Ok(None),
        }
    }

    fn agents(&self, role: Option<&str>) -> Result<Vec<wit::AgentInfo>, String> {
        let mut out = Vec::new();
        for n in self.ask(self.town.agent_names())? {
            if let Some(a) = self.ask(self.town.agent(&n))? {
                if role.is_none_or(|r| a.role == r) {
                    out.push(self.agent_info(a)?);
                }
            }
        }
        Ok(out)
    }

    fn backlog(&self) -> Result<Vec<wit::TaskInfo>, String> {
        Ok(self
            .ask(self.town.backlog())?
            .into_iter()
            .map(task_info)
            .collect())
    }

    fn state(&self, agent: &str, key: &str) -> Result<Option<String>, String> {
        use redis::AsyncCommands;
        let mut c = self.town.db.conn.clone();
        let k = self.town.db.keys.state(agent);
        self.handle
            .block_on(async move { c.hget::<_, _, Option<String>>(k, key).await })
            .map_err(|e| e.to_string())
    }
}
