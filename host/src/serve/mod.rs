//! `tt serve`: the townhall. A REST API, server-sent events, Prometheus metrics, MCP over
//! streamable HTTP and a live dashboard, over the same services as the CLI (layer 5, beside
//! `cli`; it never reaches Redis except through [`Town`]).
//!
//! Security is not optional: every route but `/healthz`, `/readyz`, `/openapi.json` and the
//! dashboard's static files needs an API key with the route's scope ([`guard`]); a bind that is
//! not loopback is refused while the town has no keys, and without TLS unless the operator
//! says a proxy terminates it; every write is audited as a town event.
//!
//! Files: [`routes`] (the table the router and [`openapi`] are built from), [`api`] and
//! [`swaps`] (handlers), [`guard`] (keys, scopes, rate limit, audit), [`problem`] (RFC 9457
//! errors), [`extract`], [`sse`], [`metrics`], [`mcp`] (also `tt mcp` over stdio),
//! [`dashboard`], and [`bench`] (`tt bench serve`).

pub mod api;
pub mod bench;
pub mod dashboard;
pub mod extract;
pub mod guard;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod sse;
pub mod swaps;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;

use crate::store::error;
use crate::town::auth::KeyCheck;
use crate::town::Town;

/// Where `tt serve` listens when neither `--bind` nor `[serve] bind` says.
pub const DEFAULT_BIND: &str = "127.0.0.1:7070";
const DEFAULT_RATE: u32 = 200;
const DEFAULT_BURST: u32 = 400;
const DEFAULT_MAX_STREAMS: usize = 256;

/// What the server shares with every request.
#[derive(Clone)]
pub struct App {
    pub town: Arc<Town>,
    pub keys: Arc<KeyCheck>,
    pub limiter: Arc<guard::Limiter>,
    pub metrics: Arc<metrics::Metrics>,
    /// Live event streams open now, and how many may be.
    pub streams: Arc<std::sync::atomic::AtomicUsize>,
    pub max_streams: usize,
}

impl App {
    pub fn new(town: Town) -> App {
        let s = &town.config.serve;
        let limiter = guard::Limiter::new(
            s.rate_per_sec.unwrap_or(DEFAULT_RATE),
            s.rate_burst.unwrap_or(DEFAULT_BURST),
        );
        let max_streams = s.max_streams.unwrap_or(DEFAULT_MAX_STREAMS);
        App {
            town: Arc::new(town),
            keys: Arc::new(KeyCheck::default()),
            limiter: Arc::new(limiter),
            metrics: Arc::new(metrics::Metrics::default()),
            streams: Arc::default(),
            max_streams,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub bind: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (a proxy in front terminates TLS).
    pub insecure_http: bool,
}

/// Every route: the REST table, `/mcp`, the dashboard, and problem-details fallbacks.
pub fn router(app: App) -> Router {
    routes::router(&app)
        .merge(mcp::router(&app))
        .merge(dashboard::router())
        .fallback(|req: Request| async move {
            problem::Problem::not_found(&format!("{} {}", req.method(), req.uri().path()))
                .into_response()
        })
        .method_not_allowed_fallback(|req: Request| async move {
            problem::Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
                "GET /openapi.json lists each route's methods",
            )
            .into_response()
        })
        .with_state(app)
}

fn parse_bind(bind: &str) -> Result<SocketAddr> {
    bind.parse().map_err(|_| {
        error::usage(
            format!("--bind {bind:?} is not an address"),
            "use HOST:PORT with an IP address, e.g. 127.0.0.1:7070 or 0.0.0.0:7070",
        )
    })
}

pub async fn run(town: Town, opts: ServeOptions) -> Result<()> {
    let cfg = town.config.serve.clone();
    let bind = opts
        .bind
        .or(cfg.bind)
        .unwrap_or_else(|| DEFAULT_BIND.to_string());
    let addr = parse_bind(&bind)?;
    let tls = match (opts.tls_cert.or(cfg.tls_cert), opts.tls_key.or(cfg.tls_key)) {
        (Some(c), Some(k)) => Some((town.config.resolve(&c), town.config.resolve(&k))),
        (None, None) => None,
        _ => {
            return Err(error::usage(
                "TLS needs both a certificate and a key",
                "give both --tls-cert and --tls-key (or [serve] tls_cert and tls_key)",
            ))
        }
    };
    let no_keys = town.keys().await?.is_empty();
    if no_keys && addr.ip().is_loopback() {
        eprintln!(
            "tt serve: the town has no API keys yet, so every route but /healthz, /readyz, \
             /openapi.json and the dashboard's files will answer 401; make one with \
             `tt auth key add NAME --scope write`"
        );
    }
    if !addr.ip().is_loopback() {
        if no_keys {
            return Err(error::fail(
                format!(
                    "refusing to listen on {addr}: it is not loopback and the town has no API keys"
                ),
                "add one first (`tt auth key add NAME --scope read`), or bind 127.0.0.1",
            ));
        }
        if tls.is_none() && !opts.insecure_http {
            return Err(error::fail(
                format!("refusing to serve plain HTTP on {addr}: API keys would cross the network in clear"),
                "configure --tls-cert and --tls-key ([serve] tls_cert/tls_key), or pass \
                 --insecure-http when a proxy in front terminates TLS",
            ));
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        error::fail(
            format!("cannot listen on {addr}: {e}"),
            "pick another port with --bind, or stop what is using it",
        )
    })?;
    let local = listener.local_addr()?;
    let app = App::new(town);
    tokio::spawn(metrics::collect(app.town.clone(), app.metrics.clone()));
    let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        h.graceful_shutdown(Some(Duration::from_secs(2)));
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("tt serve: listening on {scheme}://{local}");
    let _ = std::io::stdout().flush();
    match tls {
        Some((cert, key)) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                .await
                .map_err(|e| {
                    error::fail(
                        format!(
                            "TLS certificate {} / key {}: {e}",
                            cert.display(),
                            key.display()
                        ),
                        "give a PEM certificate chain and its PEM private key",
                    )
                })?;
            axum_server::from_tcp_rustls(listener, config)?
                .handle(handle)
                .serve(service)
                .await?
        }
        None => {
            axum_server::from_tcp(listener)?
                .handle(handle)
                .serve(service)
                .await?
        }
    }
    Ok(())
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
