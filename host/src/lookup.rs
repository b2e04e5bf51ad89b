//! The guest's read-only view of the town (the `host` import), answered from Redis.
//!
//! Guest calls run on blocking threads, so each lookup waits on the async Redis client with the
//! runtime handle. Answers are as of the moment of asking; effects only happen through actions.

use std::sync::Arc;

use tokio::runtime::Handle;

use crate::model::{Agent, Task};
use crate::runtime::{wit, Lookup};
use crate::town::Town;

pub struct TownLookup {
    pub town: Arc<Town>,
    pub handle: Handle,
}

fn task_info(t: Task) -> wit::TaskInfo {
    wit::TaskInfo {
        id: t.id,
        description: t.description,
        state: t.state,
        owner: t.owner,
        reviewer: t.reviewer,
        result: t.result,
        rejections: t.rejections,
        tags: t.tags,
    }
}

impl TownLookup {
    fn agent_info(&self, a: Agent) -> Option<wit::AgentInfo> {
        let v = self.handle.block_on(self.town.view(a)).ok()?;
        Some(wit::AgentInfo {
            name: v.agent.name,
            role: v.agent.role,
            state: v.agent.state,
            nickname: v.agent.nickname,
            inbox: (v.waiting + v.in_flight).min(u32::MAX as u64) as u32,
            active_tasks: v.active_tasks.min(u32::MAX as u64) as u32,
        })
    }
}

impl Lookup for TownLookup {
    fn task(&self, id: &str) -> Option<wit::TaskInfo> {
        self.handle
            .block_on(self.town.task(id))
            .ok()
            .flatten()
            .map(task_info)
    }

    fn agent(&self, name: &str) -> Option<wit::AgentInfo> {
        let a = self.handle.block_on(self.town.agent(name)).ok().flatten()?;
        self.agent_info(a)
    }

    fn agents(&self, role: Option<&str>) -> Vec<wit::AgentInfo> {
        let names = self
            .handle
            .block_on(self.town.agent_names())
            .unwrap_or_default();
        names
            .iter()
            .filter_map(|n| self.handle.block_on(self.town.agent(n)).ok().flatten())
            .filter(|a| role.is_none_or(|r| a.role == r))
            .filter_map(|a| self.agent_info(a))
            .collect()
    }

    fn backlog(&self) -> Vec<wit::TaskInfo> {
        self.handle
            .block_on(self.town.backlog())
            .unwrap_or_default()
            .into_iter()
            .map(task_info)
            .collect()
    }

    fn state(&self, agent: &str, key: &str) -> Option<String> {
        use redis::AsyncCommands;
        let mut c = self.town.db.conn.clone();
        let k = self.town.db.keys.state(agent);
        self.handle
            .block_on(async move { c.hget::<_, _, Option<String>>(k, key).await })
            .ok()
            .flatten()
    }
}
