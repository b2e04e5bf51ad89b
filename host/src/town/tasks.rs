//! Tasks and the backlog: create, assign, list, move; claims of backlog tasks.

use std::collections::HashMap;

use anyhow::Result;
use redis::AsyncCommands;

use super::{check_len, first_task, Town};
use crate::store::applier::Op;
use crate::store::error;
use crate::store::limits::MAX_DESCRIPTION_BYTES;
use crate::store::model::{validate_name, validate_task_id, Task, TaskState};

impl Town {
    pub async fn assign(&self, agent: &str, desc: &str, from: Option<&str>) -> Result<String> {
        validate_name(agent)?;
        if let Some(f) = from {
            validate_name(f)?;
        }
        check_len("task description", desc, MAX_DESCRIPTION_BYTES)?;
        let op = Op::Assign {
            agent: agent.to_string(),
            task: None,
            desc: desc.to_string(),
        };
        let r = self.db.apply_human(&Self::who(from), vec![op]).await?;
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
            error::of_kind(
                error::ErrorKind::NotFound,
                format!("task `{id}` not found"),
                "`tt tasks` lists the tasks",
            )
        })
    }

    pub async fn tasks(&self, state: Option<&str>, agent: Option<&str>) -> Result<Vec<Task>> {
        if let Some(a) = agent {
            validate_name(a)?;
        }
        let state = match state {
            None => None,
            Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
                error::usage(
                    format!("unknown task state {s:?}"),
                    format!("use one of: {}", TaskState::names()),
                )
            })?),
        };
        let mut c = self.db.conn.clone();
        let ids: Vec<String> = c.zrange(self.db.keys.tasks(), 0, -1).await?;
        let mut out = Vec::new();
        for (id, h) in ids.iter().zip(self.task_hashes(&ids).await?) {
            let t = Task::from_hash(id, &h);
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
    pub async fn transition(&self, id: &str, to: TaskState, text: Option<&str>) -> Result<Task> {
        validate_task_id(id)?;
        self.as_humans(Op::Transition {
            task: id.to_string(),
            to,
            text: text.map(str::to_string),
        })
        .await?;
        self.need_task(id).await
    }

    pub async fn backlog_add(&self, desc: &str, tags: &[String]) -> Result<String> {
        check_len("task description", desc, MAX_DESCRIPTION_BYTES)?;
        let r = self
            .as_humans(Op::BacklogAdd {
                desc: desc.to_string(),
                tags: tags.join(","),
            })
            .await?;
        first_task(r)
    }

    pub async fn backlog(&self) -> Result<Vec<Task>> {
        let mut c = self.db.conn.clone();
        let ids: Vec<String> = c.zrange(self.db.keys.backlog(), 0, -1).await?;
        let hashes = self.task_hashes(&ids).await?;
        Ok(ids
            .iter()
            .zip(hashes)
            .map(|(id, h)| Task::from_hash(id, &h))
            .collect())
    }

    /// The hashes of tasks `ids`, in one round trip (a pipeline; one slot, so a cluster too).
    async fn task_hashes(&self, ids: &[String]) -> Result<Vec<HashMap<String, String>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for id in ids {
            p.hgetall(self.db.keys.task(id));
        }
        let mut c = self.db.conn.clone();
        Ok(p.query_async(&mut c).await?)
    }

    pub async fn backlog_claim(&self, id: &str, agent: &str) -> Result<Task> {
        validate_task_id(id)?;
        validate_name(agent)?;
        self.as_humans(Op::BacklogClaim {
            task: id.to_string(),
            agent: agent.to_string(),
        })
        .await?;
        self.need_task(id).await
    }

    pub async fn backlog_remove(&self, id: &str) -> Result<Task> {
        validate_task_id(id)?;
        self.as_humans(Op::BacklogRemove {
            task: id.to_string(),
        })
        .await?;
        self.need_task(id).await
    }
}
