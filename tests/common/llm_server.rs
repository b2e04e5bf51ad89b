//! A model provider on loopback for the LLM tests: a real HTTP server (axum, on its own thread
//! and runtime, so blocking tests and `tt host` processes can use it too) that answers both
//! `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages` (Anthropic) from a script of
//! replies, and keeps every request it saw (headers and body) for the test to count and read.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// One scripted reply.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status, a body and extra headers, after an optional delay.
    Raw {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
        delay_ms: u64,
    },
    /// Accept the request and never answer.
    Stall,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Raw {
            status,
            body: body.to_string(),
            headers: vec![],
            delay_ms: 0,
        }
    }
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::Raw {
            status,
            body: body.into(),
            headers: vec![],
            delay_ms: 0,
        }
    }
    pub fn with_header(self, k: &str, v: &str) -> Reply {
        match self {
            Reply::Raw {
                status,
                body,
                mut headers,
                delay_ms,
            } => {
                headers.push((k.into(), v.into()));
                Reply::Raw {
                    status,
                    body,
                    headers,
                    delay_ms,
                }
            }
            s => s,
        }
    }
    pub fn after_ms(self, ms: u64) -> Reply {
        match self {
            Reply::Raw {
                status,
                body,
                headers,
                ..
            } => Reply::Raw {
                status,
                body,
                headers,
                delay_ms: ms,
            },
            s => s,
        }
    }
}

/// An OpenAI chat-completions answer with text.
pub fn openai_text(text: &str, input: u32, output: u32) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "loopback-gpt",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": input, "completion_tokens": output,
                  "total_tokens": input + output}
    })
}

/// An OpenAI answer that calls a tool.
pub fn openai_tool_call(name: &str, args: Value) -> Value {
    json!({
        "model": "loopback-gpt",
        "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": name, "arguments": args.to_string()}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8}
    })
}

/// An Anthropic Messages answer with the given content blocks.
pub fn anthropic(content: Value, stop_reason: &str, input: u32, output: u32) -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "loopback-claude",
        "content": content, "stop_reason": stop_reason,
        "usage": {"input_tokens": input, "output_tokens": output}
    })
}

/// A request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub at: std::time::Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Reply>,
    /// Answers once the queue is empty.
    fallback: Option<Reply>,
    seen: Vec<Seen>,
}

pub struct LlmServer {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl LlmServer {
    /// Starts a server on a free loopback port answering `replies` in order, then `fallback`
    /// (or a 500 saying the script ran out).
    pub fn start(replies: Vec<Reply>, fallback: Option<Reply>) -> LlmServer {
        let script = Arc::new(Mutex::new(Script {
            queue: replies.into(),
            fallback,
            seen: vec![],
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        let s = script.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = Router::new()
                    .route("/v1/chat/completions", post(handle))
                    .route("/v1/messages", post(handle))
                    .with_state(s);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        LlmServer {
            addr,
            script,
            _stop: stop,
        }
    }

    /// The `base_url` of an OpenAI-compatible provider here.
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The `base_url` of an Anthropic provider here.
    pub fn anthropic_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }

    pub fn count(&self) -> usize {
        self.script.lock().unwrap().seen.len()
    }

    pub fn push(&self, r: Reply) {
        self.script.lock().unwrap().queue.push_back(r);
    }
}

async fn handle(
    axum::extract::State(script): axum::extract::State<Arc<Mutex<Script>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut s = script.lock().unwrap();
        s.seen.push(Seen {
            path: uri.path().to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: std::time::Instant::now(),
        });
        s.queue.pop_front().or_else(|| s.fallback.clone())
    };
    match reply {
        None => (StatusCode::INTERNAL_SERVER_ERROR, "the test script ran out").into_response(),
        Some(Reply::Stall) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Some(Reply::Raw {
            status,
            body,
            headers,
            delay_ms,
        }) => {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
            r.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                "application/json".parse().unwrap(),
            );
            for (k, v) in headers {
                r.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            r
        }
    }
}
