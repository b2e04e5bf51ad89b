//! Helpers for the townhall tests: a real `tt serve` on a loopback port of its own, API keys
//! made with the real `tt auth key add`, and a plain HTTP client (ureq) to talk to it.

#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

use crate::common::{Running, TestTown};

/// A running `tt serve`; killed on drop.
pub struct Server {
    pub running: Running,
    /// `http://127.0.0.1:PORT` (or https).
    pub base: String,
    agent: ureq::Agent,
}

/// An answer: status, headers we look at, and the body (JSON when it parses, else a string).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub body: Value,
    pub text: String,
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

impl Server {
    /// `tt serve --bind 127.0.0.1:0 extra...`, waiting for its "listening on" line.
    pub fn start(town: &TestTown, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let running = town.start(&args);
        let line = running.next_line(Duration::from_secs(30));
        let base = line
            .split("listening on ")
            .nth(1)
            .unwrap_or_else(|| panic!("tt serve printed {line:?}"))
            .trim()
            .to_string();
        Server {
            running,
            base,
            agent: agent(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let url = self.url(path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (m, body) => {
                let mut r = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    other => panic!("method {other}"),
                };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send_json(body.unwrap_or(Value::Object(Default::default())))
            }
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        Answer {
            status,
            content_type,
            retry_after,
            body,
            text,
        }
    }

    pub fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), None)
    }

    pub fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call("POST", path, Some(token), Some(body))
    }

    /// GET that must answer 200; returns the body.
    pub fn ok(&self, path: &str, token: &str) -> Value {
        let a = self.get(path, token);
        assert_eq!(a.status, 200, "GET {path}: {a:?}");
        a.body
    }
}

/// `tt auth key add NAME --scope SCOPE --json`; returns the token.
pub fn key(town: &TestTown, name: &str, scope: &str) -> String {
    let k = town.json(&["auth", "key", "add", name, "--scope", scope, "--json"]);
    k["token"].as_str().expect("token").to_string()
}

/// Asserts a problem-details answer with `status`, whose detail mentions every needle.
pub fn assert_problem(a: &Answer, status: u16, needles: &[&str]) {
    assert_eq!(a.status, status, "{a:?}");
    assert!(
        a.content_type.starts_with("application/problem+json"),
        "not problem+json: {a:?}"
    );
    assert_eq!(a.body["status"], status, "{a:?}");
    let detail = a.body["detail"].as_str().unwrap_or_default();
    for n in needles {
        assert!(
            detail.contains(n),
            "detail {detail:?} does not mention {n:?}"
        );
    }
    assert!(
        a.body["hint"].as_str().is_some_and(|h| !h.is_empty()),
        "no hint: {a:?}"
    );
}
