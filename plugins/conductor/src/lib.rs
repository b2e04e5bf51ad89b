//! The `conductor` policy: an ordinary agent that keeps work flowing. Whatever message wakes it,
//! it reports a completed task to the humans, escalates (once) a task that reviews keep
//! rejecting, and then hands backlog tasks, oldest first, to idle workers in name order.

wit_bindgen::generate!({ world: "agent", path: "../../wit" });

use tinytown::agent::host;
use tinytown::agent::types::{Assignment, Kind, LogLevel, Outgoing, Priority};
use tinytown_guest::{ConfigError, Table};

/// The policy's settings, read from its `config` table by `init`.
struct Config {
    max_rejections: u32,
    human: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_rejections: 3,
            human: "conductor".to_owned(),
        }
    }
}

fn parse_config(config: &Table) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    if let Some(n) = config.number("max-rejections")? {
        cfg.max_rejections = n;
    }
    if let Some(human) = config.get("human") {
        cfg.human = human.to_owned();
    }
    Ok(cfg)
}

/// Agent states in which a worker cannot take a task.
const UNAVAILABLE: [&str; 4] = ["interrupted", "closing", "cold", "stopped"];
/// Task states after which there is nothing left to escalate.
const FINISHED: [&str; 3] = ["completed", "failed", "cancelled"];

/// Step 1: news about the task this message concerns, if any.
fn task_news(cfg: &Config, msg: &Message, actions: &mut Vec<Action>) {
    let Some(task_id) = &msg.task_id else {
        return;
    };
    let Some(task) = host::get_task(task_id) else {
        return;
    };
    if task.state == "completed" {
        // Tell the humans once, however many messages mention the task afterwards.
        let key = format!("reported:{task_id}");
        if host::get_state(&key).is_some() {
            return;
        }
        actions.push(Action::SetState((key, Some("1".to_owned()))));
        actions.push(Action::Send(Outgoing {
            to: cfg.human.clone(),
            kind: Kind::Info,
            body: format!(
                "task {task_id} completed by {}: {}",
                task.owner.as_deref().unwrap_or("?"),
                task.result.as_deref().unwrap_or("")
            ),
            priority: Priority::Normal,
            task_id: Some(task_id.clone()),
            correlation_id: Some(msg.id.clone()),
        }));
    } else if task.rejections >= cfg.max_rejections && !FINISHED.contains(&task.state.as_str()) {
        let key = format!("escalated:{task_id}");
        if host::get_state(&key).is_none() {
            actions.push(Action::Escalate(format!(
                "task {task_id} was rejected {} times; last word: {}",
                task.rejections, msg.body
            )));
            actions.push(Action::SetState((key, Some("1".to_owned()))));
        }
    }
}

/// Step 2: pair idle workers (by name) with backlog tasks (oldest first).
fn dispatch(actions: &mut Vec<Action>) {
    let mut workers: Vec<_> = host::list_agents(Some("worker"))
        .into_iter()
        .filter(|w| !UNAVAILABLE.contains(&w.state.as_str()) && w.active_tasks == 0)
        .collect();
    if workers.is_empty() {
        return;
    }
    workers.sort_by(|a, b| a.name.cmp(&b.name));
    for (worker, task) in workers.into_iter().zip(host::backlog()) {
        let line = format!("assigned {} to {}", task.id, worker.name);
        actions.push(Action::Assign(Assignment {
            agent: worker.name,
            task_id: Some(task.id),
            description: task.description,
        }));
        actions.push(Action::Log((LogLevel::Info, line)));
    }
}

/// Whatever the message, the news about its task first, then the dispatch.
fn handle_with(cfg: &Config, msg: Message) -> Vec<Action> {
    let mut actions = Vec::new();
    task_news(cfg, &msg, &mut actions);
    dispatch(&mut actions);
    actions
}

// Every key has a default, so a host that skipped `init` gets `Config::default()`.
tinytown_guest::role!(
    /// The policy as exported: `init` reads the config, `handle` uses it.
    Conductor {
        name: "conductor",
        config: Config = parse_config,
        handle: handle_with,
    }
);

export!(Conductor);
