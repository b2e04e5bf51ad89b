//! The route table: every route once, with its method, path, scope, summary and body type.
//! The router ([`router`]) and the OpenAPI document ([`super::openapi`]) are both built from
//! [`table`], so a route cannot be served without being documented, or documented without
//! being served, and its scope is the one the guard checks.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use schemars::JsonSchema;

use super::{api, guard, metrics, openapi, sse, swaps, App};
use crate::town::auth::Scope;

pub struct Route {
    pub method: Method,
    /// axum's syntax: `/v1/agents/{name}`.
    pub path: &'static str,
    /// `None`: open to anyone who can reach the server.
    pub scope: Option<Scope>,
    pub summary: &'static str,
    pub body: Option<fn() -> serde_json::Value>,
    /// False when the body may be left out (every field optional).
    pub body_required: bool,
    pub query: Option<fn() -> serde_json::Value>,
    /// The answer is `text/event-stream`, `text/plain` or HTML rather than JSON.
    pub produces: &'static str,
    pub handler: MethodRouter<App>,
}

fn route<H, T>(
    method: Method,
    path: &'static str,
    scope: Option<Scope>,
    summary: &'static str,
    h: H,
) -> Route
where
    H: Handler<T, App>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    Route {
        method,
        path,
        scope,
        summary,
        body: None,
        body_required: true,
        query: None,
        produces: "application/json",
        handler: axum::routing::on(filter, h),
    }
}

/// The JSON schema of `T`, with every subschema inlined (the document has no shared `$defs`).
pub fn schema<T: JsonSchema>() -> serde_json::Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
    });
    let mut v = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
    }
    v
}

impl Route {
    fn body<T: JsonSchema>(mut self) -> Route {
        self.body = Some(schema::<T>);
        self
    }
    fn optional_body<T: JsonSchema>(mut self) -> Route {
        self.body = Some(schema::<T>);
        self.body_required = false;
        self
    }
    fn query<T: JsonSchema>(mut self) -> Route {
        self.query = Some(schema::<T>);
        self
    }
    fn produces(mut self, mime: &'static str) -> Route {
        self.produces = mime;
        self
    }
}

const READ: Option<Scope> = Some(Scope::Read);
const WRITE: Option<Scope> = Some(Scope::Write);
const MANAGE: Option<Scope> = Some(Scope::Manage);

/// Every REST route. (`/`, the dashboard's assets and `/mcp` are mounted beside these.)
pub fn table() -> Vec<Route> {
    use Method as M;
    vec![
        route(M::GET, "/healthz", None, "The server is up", api::healthz),
        route(
            M::GET,
            "/readyz",
            None,
            "Redis reachable and a host alive (else 503)",
            api::readyz,
        ),
        route(
            M::GET,
            "/openapi.json",
            None,
            "This document",
            openapi::serve,
        ),
        route(
            M::GET,
            "/metrics",
            READ,
            "Prometheus metrics",
            metrics::serve,
        )
        .produces("text/plain"),
        route(
            M::GET,
            "/v1/status",
            READ,
            "The town at a glance",
            api::status,
        )
        .query::<api::StatusQuery>(),
        route(
            M::GET,
            "/v1/agents",
            READ,
            "Agents with mailbox depths",
            api::agents,
        ),
        route(M::POST, "/v1/agents", MANAGE, "Spawn an agent", api::spawn).body::<api::SpawnBody>(),
        route(M::GET, "/v1/agents/{name}", READ, "One agent", api::agent),
        route(
            M::POST,
            "/v1/agents/{name}/kill",
            MANAGE,
            "Stop serving an agent (mail kept)",
            api::kill,
        ),
        route(
            M::POST,
            "/v1/agents/{name}/interrupt",
            MANAGE,
            "Pause an agent",
            api::interrupt,
        ),
        route(
            M::POST,
            "/v1/agents/{name}/resume",
            MANAGE,
            "Resume an agent",
            api::resume,
        ),
        route(
            M::POST,
            "/v1/agents/{name}/close",
            MANAGE,
            "Drain an agent, then go cold",
            api::close,
        ),
        route(
            M::POST,
            "/v1/prune",
            MANAGE,
            "Remove stopped (and with all, cold) agents",
            api::prune,
        )
        .optional_body::<api::PruneBody>(),
        route(
            M::POST,
            "/v1/agents/{name}/swap",
            MANAGE,
            "Swap (or shadow) an agent's plugin",
            swaps::swap_plugin,
        )
        .body::<swaps::SwapBody>(),
        route(
            M::POST,
            "/v1/agents/{name}/rollback",
            MANAGE,
            "Go back to the previous plugin",
            swaps::rollback,
        ),
        route(
            M::GET,
            "/v1/agents/{name}/shadow",
            READ,
            "The shadow report",
            swaps::shadow_report,
        ),
        route(
            M::POST,
            "/v1/agents/{name}/shadow/promote",
            MANAGE,
            "Make the shadow the live plugin",
            swaps::shadow_promote,
        ),
        route(
            M::POST,
            "/v1/agents/{name}/shadow/stop",
            MANAGE,
            "Stop shadowing",
            swaps::shadow_stop,
        ),
        route(
            M::POST,
            "/v1/agents/{name}/replay",
            MANAGE,
            "Replay a candidate plugin on the agent's journal (writes nothing)",
            swaps::replay,
        )
        .body::<swaps::ReplayBody>(),
        route(
            M::GET,
            "/v1/swaps",
            READ,
            "Swap and shadow history",
            swaps::history,
        )
        .query::<swaps::HistoryQuery>(),
        route(M::POST, "/v1/mail", WRITE, "Send a message", api::send).body::<api::SendBody>(),
        route(
            M::GET,
            "/v1/inbox/{name}",
            READ,
            "A mailbox (`conductor`: the humans'), unchanged by reading",
            api::inbox,
        ),
        route(
            M::POST,
            "/v1/inbox/conductor/clear",
            WRITE,
            "Mark the humans' mailbox read",
            api::clear_conductor,
        ),
        route(M::GET, "/v1/tasks", READ, "Tasks", api::tasks).query::<api::TasksQuery>(),
        route(
            M::POST,
            "/v1/tasks",
            WRITE,
            "Create a task and assign it",
            api::assign,
        )
        .body::<api::AssignBody>(),
        route(
            M::GET,
            "/v1/tasks/{id}",
            READ,
            "One task with its history",
            api::task,
        ),
        route(
            M::POST,
            "/v1/tasks/{id}/complete",
            WRITE,
            "Complete a task",
            api::complete,
        )
        .optional_body::<api::TextBody>(),
        route(
            M::POST,
            "/v1/tasks/{id}/fail",
            WRITE,
            "Fail a task",
            api::fail,
        )
        .optional_body::<api::TextBody>(),
        route(
            M::POST,
            "/v1/tasks/{id}/cancel",
            WRITE,
            "Cancel a task",
            api::cancel,
        )
        .optional_body::<api::TextBody>(),
        route(
            M::GET,
            "/v1/backlog",
            READ,
            "Tasks waiting for an owner",
            api::backlog,
        ),
        route(
            M::POST,
            "/v1/backlog",
            WRITE,
            "Add a task to the backlog",
            api::backlog_add,
        )
        .body::<api::BacklogBody>(),
        route(
            M::POST,
            "/v1/backlog/{id}/claim",
            WRITE,
            "Give a backlog task to an agent",
            api::backlog_claim,
        )
        .body::<api::ClaimBody>(),
        route(
            M::DELETE,
            "/v1/backlog/{id}",
            WRITE,
            "Remove a task from the backlog",
            api::backlog_remove,
        ),
        route(
            M::GET,
            "/v1/dlq",
            READ,
            "Dead letters with the reason",
            api::dlq,
        )
        .query::<api::CountQuery>(),
        route(
            M::POST,
            "/v1/dlq/{id}/retry",
            WRITE,
            "Put a dead letter back in its mailbox",
            api::dlq_retry,
        ),
        route(
            M::DELETE,
            "/v1/dlq/{id}",
            MANAGE,
            "Delete a dead letter",
            api::dlq_drop,
        ),
        route(
            M::GET,
            "/v1/usage",
            READ,
            "Model calls: tokens and cost by agent, task and model",
            api::usage,
        )
        .query::<api::UsageQuery>(),
        route(
            M::GET,
            "/v1/events/recent",
            READ,
            "The newest events, oldest first",
            api::events,
        )
        .query::<api::CountQuery>(),
        route(
            M::GET,
            "/v1/events",
            READ,
            "Live events (server-sent events; Last-Event-ID resumes)",
            sse::events,
        )
        .query::<sse::SseQuery>()
        .produces("text/event-stream"),
    ]
}

/// The routes of [`table`], each behind the guard of its scope.
pub fn router(app: &App) -> Router<App> {
    let mut r = Router::new();
    for route in table() {
        let mut handler = route.handler;
        if let Some(need) = route.scope {
            handler = handler.route_layer(axum::middleware::from_fn_with_state(
                app.clone(),
                move |s, c, req, next| guard::guard(need, s, c, req, next),
            ));
        }
        r = r.route(route.path, handler);
    }
    r
}
