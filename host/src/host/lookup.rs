//! The guest's read-only view of the town (the `host` import), answered from Redis.
//!
//! Each answer is a future on the async Redis client: a guest waiting on the town holds no
//! thread. Answers are as of the moment of asking; effects only happen through actions.

use std::sync::Arc;

use crate::runtime::lookup::Answer;
use crate::runtime::{wit, Lookup};
use crate::store::model::{validate_name, validate_task_id, Agent, Task};
use crate::town::Town;

pub struct TownLookup {
    pub town: Arc<Town>,
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

fn one_line(e: anyhow::Error) -> String {
    crate::store::error::one_line(&e)
}

impl TownLookup {
    async fn agent_info(&self, a: Agent) -> Result<wit::AgentInfo, String> {
        let v = self.town.view(a).await.map_err(one_line)?;
        Ok(wit::AgentInfo {
            name: v.agent.name,
            role: v.agent.role,
            state: v.agent.state.to_string(),
            nickname: v.agent.nickname,
            inbox: (v.waiting + v.in_flight).min(u32::MAX as u64) as u32,
            active_tasks: v.active_tasks.min(u32::MAX as u64) as u32,
        })
    }
}

impl Lookup for TownLookup {
    fn budgets(&self) -> Option<crate::store::budget::Budgets> {
        let t = &self.town;
        Some(crate::store::budget::Budgets::of(
            &t.db,
            t.config.retention.events,
        ))
    }

    fn task<'a>(&'a self, id: &'a str) -> Answer<'a, Option<wit::TaskInfo>> {
        Box::pin(async move {
            if validate_task_id(id).is_err() {
                return Ok(None);
            }
            Ok(self.town.task(id).await.map_err(one_line)?.map(task_info))
        })
    }

    fn agent<'a>(&'a self, name: &'a str) -> Answer<'a, Option<wit::AgentInfo>> {
        Box::pin(async move {
            if validate_name(name).is_err() {
                return Ok(None);
            }
            match self.town.agent(name).await.map_err(one_line)? {
                Some(a) => Ok(Some(self.agent_info(a).await?)),
                None => Ok(None),
            }
        })
    }

    fn agents<'a>(&'a self, role: Option<&'a str>) -> Answer<'a, Vec<wit::AgentInfo>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for n in self.town.agent_names().await.map_err(one_line)? {
                if let Some(a) = self.town.agent(&n).await.map_err(one_line)? {
                    if role.is_none_or(|r| a.role == r) {
                        out.push(self.agent_info(a).await?);
                    }
                }
            }
            Ok(out)
        })
    }

    fn backlog(&self) -> Answer<'_, Vec<wit::TaskInfo>> {
        Box::pin(async move {
            Ok(self
                .town
                .backlog()
                .await
                .map_err(one_line)?
                .into_iter()
                .map(task_info)
                .collect())
        })
    }

    fn state<'a>(&'a self, agent: &'a str, key: &'a str) -> Answer<'a, Option<String>> {
        Box::pin(async move {
            use redis::AsyncCommands;
            let mut c = self.town.db.conn.clone();
            let k = self.town.db.keys.state(agent);
            c.hget::<_, _, Option<String>>(k, key)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
