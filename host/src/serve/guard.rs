//! The gate in front of every route that needs a key: authentication (401), the rate limit per
//! key (429), the route's scope (403), and the audit event of every write, allowed or refused.
//!
//! A route's scope comes from the route table ([`super::routes`]), so the check and the OpenAPI
//! document cannot disagree. Requests without a known key are rate limited by peer address
//! before their key is checked, so guessing keys is as slow as using one and costs no hashing
//! beyond the limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use super::App;
use crate::town::auth::{Caller, Scope};

/// A token bucket per key (or per peer address for requests without a valid key).
pub struct Limiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(per_sec: u32, burst: u32) -> Limiter {
        Limiter {
            per_sec: per_sec.max(1) as f64,
            burst: burst.max(1) as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` to go ahead, or `Err(seconds)` to wait before the next request is allowed.
    pub fn take(&self, who: &str) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > 100_000 {
            // Bounded: forget every bucket rather than grow without limit under a flood of peers.
            buckets.clear();
        }
        let (tokens, last) = buckets.entry(who.to_string()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_sec).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_sec).ceil().max(1.0) as u64)
        }
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks key, rate and `need`, runs the route, and audits it when `need` is above read.
pub async fn guard(
    need: Scope,
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let action = format!("{} {}", req.method(), req.uri().path());
    let token = bearer(&req);
    // A token not verified before costs a hash check: the peer's bucket pays for it first, so
    // guessing keys is rate limited before any hashing is done.
    let mut limited = None;
    if !token.is_some_and(|t| app.keys.knows(t)) {
        limited = app.limiter.take(&format!("peer:{}", peer.ip())).err();
    }
    let caller = match (token, limited) {
        (Some(token), None) => match app.town.authenticate(&app.keys, token).await {
            Ok(c) => c,
            Err(e) => return Problem::from(e).into_response(),
        },
        _ => None,
    };
    if let (Some(c), None) = (&caller, limited) {
        limited = app.limiter.take(&format!("key:{}", c.id)).err();
    }
    let refusal = if let Some(wait) = limited {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("rate limit of {}/s exceeded", app.limiter.per_sec),
            format!(
                "wait {wait} s; [serve] rate_per_sec and rate_burst in tinytown.toml set the limit"
            ),
        );
        p.retry_after = Some(wait);
        Some(p)
    } else {
        match &caller {
            None => Some(Problem::unauthorized()),
            Some(c) if !c.allows(need) => Some(Problem::new(
                StatusCode::FORBIDDEN,
                format!(
                    "key `{}` has scope {}; {action} needs {need}",
                    c.name, c.scope
                ),
                format!("use a key with scope {need} (`tt auth key add NAME --scope {need}`)"),
            )),
            Some(_) => None,
        }
    };
    let response = match refusal {
        Some(p) => p.into_response(),
        None => {
            if let Some(c) = &caller {
                req.extensions_mut().insert(c.clone());
            }
            next.run(req).await
        }
    };
    // A write is audited whether it ran or was refused; a request the rate limit turned away
    // is not (it did nothing, and auditing a flood would flush the town's history).
    if need > Scope::Read && response.status() != StatusCode::TOO_MANY_REQUESTS {
        audit(&app, caller.as_ref(), &action, peer, response.status()).await;
    }
    response
}

/// Appends the audit event of one write request; a failure to record it is logged, not hidden.
pub async fn audit(
    app: &App,
    caller: Option<&Caller>,
    action: &str,
    peer: SocketAddr,
    status: StatusCode,
) {
    let who = caller.map_or("(no valid key)", |c| c.name.as_str());
    if let Err(e) = app
        .town
        .audit(who, action, &peer.to_string(), status.as_u16())
        .await
    {
        tracing::warn!("could not record the audit event of {action}: {e:#}");
    }
}
