//! The REST handlers: each reads its input, calls the same service the CLI calls ([`Town`],
//! [`crate::host::swap`]) and answers JSON. No handler touches Redis itself.
//!
//! The request bodies derive `JsonSchema`: the OpenAPI document ([`super::openapi`]) takes
//! their schemas from these types.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{Body, OptBody, Path, Query};
use super::problem::Problem;
use super::App;
use crate::store::model::{Kind, TaskState};
use crate::town::Lifecycle;

pub type Answer = Result<Json<Value>, Problem>;

pub fn ok<T: serde::Serialize>(v: T) -> Answer {
    Ok(Json(serde_json::to_value(v).map_err(anyhow::Error::from)?))
}

pub async fn healthz() -> Json<Value> {
    Json(json!({"ok": true}))
}

/// Ready when Redis answers and at least one host has sent a heartbeat recently.
pub async fn readyz(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let town = &app.town;
    let limit = town.config.host.heartbeat_ms.saturating_mul(5).max(5_000);
    match town.hosts_alive(Duration::from_millis(limit)).await {
        Ok(hosts) => {
            let status = if hosts.is_empty() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let why = hosts
                .is_empty()
                .then_some("no `tt host` has sent a heartbeat recently");
            (
                status,
                Json(json!({"redis": true, "hosts_alive": hosts, "why": why})),
            )
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"redis": false, "why": crate::store::error::one_line(&e)})),
        ),
    }
}

#[derive(Deserialize, JsonSchema)]
pub struct StatusQuery {
    /// How many recent events to include (default 10).
    pub events: Option<usize>,
}

pub async fn status(State(app): State<App>, Query(q): Query<StatusQuery>) -> Answer {
    ok(app.town.status(q.events.unwrap_or(10).min(1000)).await?)
}

pub async fn agents(State(app): State<App>) -> Answer {
    ok(app.town.list().await?)
}

pub async fn agent(State(app): State<App>, Path(name): Path<String>) -> Answer {
    let a = app.town.need_agent(&name).await?;
    ok(app.town.view(a).await?)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnBody {
    /// 1-64 of A-Za-z0-9-_.
    pub name: String,
    /// worker, reviewer, conductor, ... (default worker).
    pub role: Option<String>,
    /// A component file on the server, relative to the town directory; default: the agent's
    /// `plugin` in tinytown.toml.
    pub plugin: Option<String>,
    pub nickname: Option<String>,
}

pub async fn spawn(State(app): State<App>, Body(b): Body<SpawnBody>) -> Answer {
    let plugin = b.plugin.map(PathBuf::from);
    let a = app
        .town
        .spawn(
            &b.name,
            b.role.as_deref().unwrap_or("worker"),
            plugin.as_deref(),
            b.nickname.as_deref(),
        )
        .await?;
    ok(a)
}

async fn lifecycle(app: App, name: String, what: Lifecycle) -> Answer {
    ok(app.town.lifecycle(&name, what).await?)
}

pub async fn kill(State(app): State<App>, Path(name): Path<String>) -> Answer {
    lifecycle(app, name, Lifecycle::Kill).await
}
pub async fn interrupt(State(app): State<App>, Path(name): Path<String>) -> Answer {
    lifecycle(app, name, Lifecycle::Interrupt).await
}
pub async fn resume(State(app): State<App>, Path(name): Path<String>) -> Answer {
    lifecycle(app, name, Lifecycle::Resume).await
}
pub async fn close(State(app): State<App>, Path(name): Path<String>) -> Answer {
    lifecycle(app, name, Lifecycle::Close).await
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PruneBody {
    /// Also remove cold agents, not only stopped ones.
    #[serde(default)]
    pub all: bool,
}

pub async fn prune(State(app): State<App>, OptBody(b): OptBody<PruneBody>) -> Answer {
    ok(json!({"removed": app.town.prune(b.all).await?}))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// An agent, or `conductor` (the humans).
    pub to: String,
    pub body: String,
    /// task (default), info, query or ack.
    pub kind: Option<String>,
    /// Urgent mail is read first.
    #[serde(default)]
    pub urgent: bool,
    /// Send as this agent instead of as the humans.
    pub from: Option<String>,
}

pub fn kind_of(kind: Option<&str>) -> Result<Kind, Problem> {
    match kind.unwrap_or("task") {
        "task" => Ok(Kind::Task),
        "info" => Ok(Kind::Info),
        "query" => Ok(Kind::Query),
        "ack" => Ok(Kind::Ack),
        other => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown message kind {other:?}"),
            "use task, info, query or ack",
        )),
    }
}

pub async fn send(State(app): State<App>, Body(b): Body<SendBody>) -> Answer {
    let kind = kind_of(b.kind.as_deref())?;
    let id = app
        .town
        .send(&b.to, &b.body, kind, b.urgent, b.from.as_deref())
        .await?;
    ok(json!({"id": id}))
}

pub async fn inbox(State(app): State<App>, Path(name): Path<String>) -> Answer {
    ok(app.town.inbox(&name).await?)
}

/// Clears what the inbox holds as it is read here; mail that arrives meanwhile stays unread.
pub async fn clear_conductor(State(app): State<App>) -> Answer {
    let shown = app.town.inbox("conductor").await?;
    ok(json!({"cleared": app.town.clear_conductor_inbox(&shown).await?}))
}

#[derive(Deserialize, JsonSchema)]
pub struct TasksQuery {
    pub state: Option<String>,
    pub agent: Option<String>,
}

pub async fn tasks(State(app): State<App>, Query(q): Query<TasksQuery>) -> Answer {
    ok(app
        .town
        .tasks(q.state.as_deref(), q.agent.as_deref())
        .await?)
}

pub async fn task(State(app): State<App>, Path(id): Path<String>) -> Answer {
    ok(app.town.need_task(&id).await?)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    pub agent: String,
    pub description: String,
}

pub async fn assign(State(app): State<App>, Body(b): Body<AssignBody>) -> Answer {
    let id = app.town.assign(&b.agent, &b.description, None).await?;
    ok(app.town.need_task(&id).await?)
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TextBody {
    /// The result (complete), the error (fail) or the reason (cancel).
    pub text: Option<String>,
}

async fn transition(app: App, id: String, to: TaskState, text: Option<String>) -> Answer {
    ok(app.town.transition(&id, to, text.as_deref()).await?)
}

pub async fn complete(
    State(app): State<App>,
    Path(id): Path<String>,
    OptBody(b): OptBody<TextBody>,
) -> Answer {
    transition(app, id, TaskState::Completed, b.text).await
}
pub async fn fail(
    State(app): State<App>,
    Path(id): Path<String>,
    OptBody(b): OptBody<TextBody>,
) -> Answer {
    transition(app, id, TaskState::Failed, b.text).await
}
pub async fn cancel(
    State(app): State<App>,
    Path(id): Path<String>,
    OptBody(b): OptBody<TextBody>,
) -> Answer {
    transition(app, id, TaskState::Cancelled, b.text).await
}

pub async fn backlog(State(app): State<App>) -> Answer {
    ok(app.town.backlog().await?)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacklogBody {
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

pub async fn backlog_add(State(app): State<App>, Body(b): Body<BacklogBody>) -> Answer {
    let id = app.town.backlog_add(&b.description, &b.tags).await?;
    ok(app.town.need_task(&id).await?)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    pub agent: String,
}

pub async fn backlog_claim(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(b): Body<ClaimBody>,
) -> Answer {
    ok(app.town.backlog_claim(&id, &b.agent).await?)
}

pub async fn backlog_remove(State(app): State<App>, Path(id): Path<String>) -> Answer {
    ok(app.town.backlog_remove(&id).await?)
}

#[derive(Deserialize, JsonSchema)]
pub struct CountQuery {
    /// How many (default 100).
    pub n: Option<usize>,
    /// Only events about this agent.
    pub agent: Option<String>,
}

pub async fn dlq(State(app): State<App>, Query(q): Query<CountQuery>) -> Answer {
    ok(app
        .town
        .dead_letters(q.n.unwrap_or(100).min(10_000))
        .await?)
}

pub async fn dlq_retry(State(app): State<App>, Path(id): Path<String>) -> Answer {
    app.town.dlq_act(std::slice::from_ref(&id), true).await?;
    ok(json!({"retried": id}))
}

pub async fn dlq_drop(State(app): State<App>, Path(id): Path<String>) -> Answer {
    app.town.dlq_act(std::slice::from_ref(&id), false).await?;
    ok(json!({"dropped": id}))
}

pub async fn events(State(app): State<App>, Query(q): Query<CountQuery>) -> Answer {
    let n = q.n.unwrap_or(100).min(10_000);
    ok(app.town.events(n, q.agent.as_deref()).await?)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only this agent's calls.
    pub agent: Option<String>,
    /// Only calls made while handling this task.
    pub task: Option<String>,
    /// How many UTC days back, today included (1 to 40; default 40).
    pub days: Option<u64>,
}

pub async fn usage(State(app): State<App>, Query(q): Query<UsageQuery>) -> Answer {
    let days = q.days.unwrap_or(crate::store::budget::RETENTION_DAYS);
    ok(app
        .town
        .usage(days, q.agent.as_deref(), q.task.as_deref())
        .await?)
}
