//! MCP: the town's operations as tools and its records as resources, for Claude Code and any
//! MCP client, so a person (or a model) can run the conductor role. Built on `rmcp`, the
//! official Rust SDK, and served two ways with one [`Townhall`] handler: `tt mcp` over stdio,
//! and `/mcp` on `tt serve` over streamable HTTP.
//!
//! Protected like REST: stdio takes a key (`TT_API_KEY`) when it starts; `/mcp` is behind the
//! same guard as `/v1` (401 without a key, the rate limit) and each tool checks the caller's
//! scope before it runs. Write tools are audited as town events. Nothing depends on an MCP
//! session being kept: the HTTP service is stateless and every call carries its key.
//!
//! [`tools`] has the tools and their typed arguments; this file the handler, resources, and
//! the two transports.

mod tools;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use axum::extract::ConnectInfo;
use axum::Router;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool_handler, ErrorData, ServerHandler, ServiceExt};
use serde::Serialize;

use super::problem::Problem;
use super::{guard, App};
use crate::store::error;
use crate::town::auth::{Caller, Scope};
use crate::town::Town;

#[derive(Clone)]
pub struct Townhall {
    app: App,
    /// The stdio caller (its key was checked at start); over HTTP it comes with each request.
    caller: Option<Caller>,
    tool_router: ToolRouter<Townhall>,
}

pub(super) fn json_result<T: Serialize>(v: &T) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(
        serde_json::to_string_pretty(v).unwrap_or_default(),
    )])
}

fn http_parts(ctx: &RequestContext<RoleServer>) -> Option<&axum::http::request::Parts> {
    ctx.extensions.get::<axum::http::request::Parts>()
}

impl Townhall {
    pub fn new(app: App, caller: Option<Caller>) -> Townhall {
        Townhall {
            app,
            caller,
            tool_router: Self::tool_router(),
        }
    }

    pub(super) fn town(&self) -> &Town {
        &self.app.town
    }

    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Option<Caller> {
        self.caller
            .clone()
            .or_else(|| http_parts(ctx)?.extensions.get::<Caller>().cloned())
    }

    /// Checks the scope, runs `work`, audits a write; a refusal of the town is a tool error
    /// (with the problem's detail and hint), so the model reads what to do.
    pub(super) async fn run<T: Serialize>(
        &self,
        ctx: &RequestContext<RoleServer>,
        tool: &str,
        need: Scope,
        work: impl Future<Output = Result<T>>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = self.caller(ctx);
        let peer = http_parts(ctx)
            .and_then(|p| p.extensions.get::<ConnectInfo<SocketAddr>>())
            .map_or_else(|| "stdio".to_string(), |c| c.0.to_string());
        let action = format!("mcp {tool}");
        let audit = |status: u16| {
            let who = caller
                .as_ref()
                .map_or("(no valid key)".to_string(), |c| c.name.clone());
            let (town, action, peer) = (self.app.town.clone(), action.clone(), peer.clone());
            async move {
                if need > Scope::Read {
                    if let Err(e) = town.audit(&who, &action, &peer, status).await {
                        tracing::warn!("could not record the audit event of {action}: {e:#}");
                    }
                }
            }
        };
        let Some(c) = caller.as_ref().filter(|c| c.allows(need)) else {
            audit(403).await;
            let have = caller.as_ref().map_or("no key".to_string(), |c| {
                format!("key `{}` has scope {}", c.name, c.scope)
            });
            return Err(ErrorData::invalid_request(
                format!("{have}; tool {tool} needs scope {need}"),
                None,
            ));
        };
        let _ = c;
        match work.await {
            Ok(v) => {
                audit(200).await;
                Ok(json_result(&v))
            }
            Err(e) => {
                let p = Problem::from(e);
                audit(p.status).await;
                let hint = p.hint.map(|h| format!(" (hint: {h})")).unwrap_or_default();
                Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "{} {}: {}{hint}",
                    p.status, p.title, p.detail
                ))]))
            }
        }
    }
}

const TOWN_URI: &str = "tinytown://town";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Townhall {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("tinytown", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "tinytown: a town of agents with Redis mailboxes and Wasm roles. You can act as \
                 the conductor: read the `conductor` inbox, assign work, complete or fail tasks, \
                 retry dead letters. Resources: tinytown://town, tinytown://agents/NAME, \
                 tinytown://tasks/ID.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.need_read(&ctx)?;
        let err = |e: anyhow::Error| ErrorData::internal_error(error::one_line(&e), None);
        let mut out = vec![Resource::new(TOWN_URI, "town").with_description("The town's status")];
        for name in self.town().agent_names().await.map_err(err)? {
            out.push(Resource::new(
                format!("tinytown://agents/{name}"),
                format!("agent {name}"),
            ));
        }
        for t in self.town().tasks(None, None).await.map_err(err)? {
            out.push(
                Resource::new(
                    format!("tinytown://tasks/{}", t.id),
                    format!("task {}", t.id),
                )
                .with_description(t.description.lines().next().unwrap_or("").to_string()),
            );
        }
        Ok(ListResourcesResult::with_all_items(out))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.need_read(&ctx)?;
        let uri = request.uri.clone();
        let town = self.town();
        let value: Result<serde_json::Value> = async {
            Ok(if uri == TOWN_URI {
                serde_json::to_value(town.status(10).await?)?
            } else if let Some(name) = uri.strip_prefix("tinytown://agents/") {
                serde_json::to_value(town.view(town.need_agent(name).await?).await?)?
            } else if let Some(id) = uri.strip_prefix("tinytown://tasks/") {
                serde_json::to_value(town.need_task(id).await?)?
            } else {
                return Err(error::of_kind(
                    error::ErrorKind::NotFound,
                    format!("no resource {uri}"),
                    "resources/list",
                ));
            })
        }
        .await;
        match value {
            Ok(v) => {
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                Ok(ReadResourceResult::new(vec![ResourceContents::text(text, uri)]).into())
            }
            Err(e)
                if error::user_error(&e).is_some_and(|u| u.kind == error::ErrorKind::NotFound) =>
            {
                Err(ErrorData::resource_not_found(error::one_line(&e), None))
            }
            Err(e) => Err(ErrorData::internal_error(error::one_line(&e), None)),
        }
    }
}

impl Townhall {
    fn need_read(&self, ctx: &RequestContext<RoleServer>) -> Result<(), ErrorData> {
        match self.caller(ctx) {
            Some(c) if c.allows(Scope::Read) => Ok(()),
            _ => Err(ErrorData::invalid_request(
                "resources need a key with scope read",
                None,
            )),
        }
    }
}

/// `/mcp`: streamable HTTP, stateless, behind the guard (a key with at least read).
pub fn router(app: &App) -> Router<App> {
    let a = app.clone();
    let service = StreamableHttpService::new(
        move || Ok(Townhall::new(a.clone(), None)),
        Arc::new(NeverSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            // Every request carries its bearer key, so a rebound DNS name gains nothing; a
            // bind beyond loopback must answer its own host names.
            .disable_allowed_hosts(),
    );
    Router::new()
        .route_service("/mcp", service)
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            |s, c, req, next| guard::guard(Scope::Read, s, c, req, next),
        ))
}

/// `tt mcp`: the same tools over stdin/stdout, as the holder of `key`.
pub async fn stdio(town: Town, key: Option<&str>) -> Result<()> {
    let Some(token) = key else {
        return Err(error::usage(
            "tt mcp needs an API key",
            "set TT_API_KEY to a key from `tt auth key add NAME --scope write` (or pass --key)",
        ));
    };
    let app = App::new(town);
    let caller = app
        .town
        .authenticate(&app.keys, token)
        .await?
        .ok_or_else(|| {
            error::fail(
                "the API key is not valid (unknown, revoked or mistyped)",
                "`tt auth key list` shows the keys; `tt auth key add NAME --scope write` makes one",
            )
        })?;
    let service = Townhall::new(app, Some(caller))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("MCP over stdio: {e}"))?;
    service.waiting().await?;
    Ok(())
}
