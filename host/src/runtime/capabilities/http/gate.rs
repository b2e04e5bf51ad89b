//! Where every outgoing request of a guest goes through: wasmtime-wasi-http's
//! `send_request` hook, wrapped. A request is sent only when its origin matches a rule of the
//! agent's grant and its addresses pass the guard; its timeouts are capped, its response body
//! is cut at the cap, and the call is recorded (credentials redacted).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::rules::Origin;
use super::{guard, HttpGrant};
use crate::runtime::record::Call;

/// Headers whose values never reach a record or a log.
const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// The hooks of one instance: its agent's grant (None: not granted), where its calls are
/// recorded, and how long its requests kept it waiting (excluded from the guest's deadline).
pub struct Gate {
    pub(crate) grant: Option<Arc<HttpGrant>>,
    pub(crate) agent: String,
    pub(crate) calls: Arc<Mutex<Vec<Call>>>,
    pub(crate) waited: Arc<Mutex<Duration>>,
    /// In a replay: nothing is sent (a replay never acts on the world).
    pub(crate) replaying: bool,
}

type Sent = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

/// What a record keeps of a request.
#[derive(serde::Serialize)]
struct Asked {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
}

fn asked(req: &http::Request<WasiBody>) -> Asked {
    Asked {
        method: req.method().to_string(),
        url: req.uri().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                let name = k.as_str().to_string();
                let value = if SECRET_HEADERS.contains(&name.as_str()) {
                    "[redacted]".to_string()
                } else {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                };
                (name, value)
            })
            .collect(),
    }
}

impl WasiHttpHooks for Gate {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let grant = self.grant.clone().filter(|_| !self.replaying);
        let replaying = self.replaying;
        let agent = self.agent.clone();
        let calls = self.calls.clone();
        let waited = self.waited.clone();
        Box::new(async move {
            let started = Instant::now();
            let summary = asked(&request);
            let record = |response: serde_json::Value| {
                let call = Call::new("http", "handle", &summary, response, started.elapsed());
                calls.lock().unwrap_or_else(|p| p.into_inner()).push(call);
                *waited.lock().unwrap_or_else(|p| p.into_inner()) += started.elapsed();
            };
            let refuse = |why: String, code: Error| {
                tracing::warn!(agent = %agent, "http refused: {why}");
                record(serde_json::json!({ "refused": why }));
                Err(code)
            };
            let Some(grant) = grant else {
                let why = if replaying {
                    "a replay sends no request".to_string()
                } else {
                    format!("http is not granted to agent `{agent}`")
                };
                return refuse(why, Error::HttpRequestDenied);
            };
            let Some(origin) = Origin::of(request.uri()) else {
                return refuse(
                    "the request has no scheme or host".into(),
                    Error::HttpRequestUriInvalid,
                );
            };
            let Some(rule) = grant.rules.iter().find(|r| r.matches(&origin)) else {
                return refuse(
                    format!(
                        "{} {} is not allowed for agent `{agent}`: no rule matches {origin}; \
                         add \"{}\" to [agents.{agent}.http] allow",
                        summary.method,
                        summary.url,
                        origin.as_rule()
                    ),
                    Error::HttpRequestDenied,
                );
            };
            let addr = match guard::resolve(&origin.host, origin.port, rule.names_address()).await {
                Ok(a) => a,
                Err(why) => {
                    return refuse(
                        format!(
                            "{} {} refused for agent `{agent}`: {why}",
                            summary.method, summary.url
                        ),
                        Error::DestinationIpProhibited,
                    )
                }
            };
            if origin.scheme == "http" {
                // Sent to the address just checked; the Host header keeps the name.
                let path = request
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".into());
                if let Ok(uri) = format!("http://{addr}{path}").parse() {
                    *request.uri_mut() = uri;
                }
            }
            let cap =
                |asked: Option<Duration>, most: Duration| Some(asked.map_or(most, |a| a.min(most)));
            let options = RequestOptions {
                connect_timeout: cap(
                    options.and_then(|o| o.connect_timeout),
                    grant.connect_timeout,
                ),
                first_byte_timeout: cap(options.and_then(|o| o.first_byte_timeout), grant.timeout),
                between_bytes_timeout: cap(
                    options.and_then(|o| o.between_bytes_timeout),
                    grant.timeout,
                ),
            };
            match wasmtime_wasi_http::default_send_request(request, Some(options)).await {
                Ok((response, io)) => {
                    record(serde_json::json!({
                        "status": response.status().as_u16(),
                        "headers": response.headers().iter()
                            .filter(|(k, _)| !SECRET_HEADERS.contains(&k.as_str()) && k.as_str() != "set-cookie")
                            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                            .collect::<Vec<_>>(),
                    }));
                    let limit = grant.max_response_bytes;
                    let response = response.map(|b| {
                        Capped {
                            inner: b.boxed_unsync(),
                            left: limit,
                            limit,
                        }
                        .boxed_unsync()
                    });
                    Ok((
                        response,
                        Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
                    ))
                }
                Err(e) => {
                    record(serde_json::json!({ "error": e.to_string() }));
                    Err(e)
                }
            }
        })
    }
}

/// A response body cut off, with an error, once it passes `limit` bytes.
struct Capped {
    inner: WasiBody,
    left: u64,
    limit: u64,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.left {
                        let limit = self.limit;
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(limit)))));
                    }
                    self.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
