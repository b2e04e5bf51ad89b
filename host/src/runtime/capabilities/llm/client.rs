//! One provider: its HTTP client, its key, and sending a request with timeouts and retries.
//!
//! Every attempt has a connect timeout and a whole-request timeout (connect to last byte of
//! the body), so a stalled socket costs at most `timeout_ms`. A 429, a 5xx or a failed
//! connection is retried up to `retries` times with exponential backoff (250 ms doubling, at
//! most [`MAX_BACKOFF`]), waiting what a `Retry-After` header asks instead (seconds or an HTTP
//! date) when it asks at most [`MAX_RETRY_AFTER`]; a provider asking for longer is not waited
//! for. A timed-out attempt is not retried: it has already waited the whole timeout.
//!
//! How failures reach the guest: 429 after the retries -> rate-limited; 5xx, no connection or a
//! timeout -> provider-unavailable; any other 4xx -> invalid-request (with the provider's own
//! message); a body that is not the expected JSON -> provider-unavailable, retryable. Messages
//! pass through [`Secret::scrub`], so a provider echoing the key does not leak it.

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

use super::secret::Secret;
use super::types::{ChatRequest, ChatResponse, ErrorCode, LlmError};
use super::{anthropic, openai};
use crate::store::llm::{ProviderConfig, ProviderKind, CONNECT_TIMEOUT_MS, RETRIES, TIMEOUT_MS};

/// The longest backoff between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The longest `Retry-After` the host waits; a longer one ends the retries.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Most bytes of a provider's error message passed on.
const MESSAGE_CHARS: usize = 300;

pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    base_url: String,
    key: Option<Secret>,
    pub timeout: Duration,
    pub retries: u32,
    http: reqwest::Client,
}

/// What one send did: the answer or the error, the last HTTP status, the attempts made, and
/// the provider's body as JSON (for the call's record).
pub struct Sent {
    pub result: Result<(ChatResponse, bool), LlmError>,
    pub status: Option<u16>,
    pub attempts: u32,
    pub body: Option<Value>,
}

enum Attempt {
    Done(Value, u16),
    /// Worth another attempt after the wait (the header's, or the backoff when `None`).
    Again(LlmError, Option<u16>, Option<Duration>),
    Fail(LlmError, Option<u16>),
}

/// One HTTP client per (connect timeout, timeout), shared by every provider of the process:
/// building one reads and parses the system's root certificates (milliseconds of CPU: a
/// thousand agents granted a model spent seconds on it), and a shared one pools connections.
fn shared_client(connect: Duration, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    type Clients =
        std::sync::Mutex<std::collections::HashMap<(Duration, Duration), reqwest::Client>>;
    static CLIENTS: std::sync::OnceLock<Clients> = std::sync::OnceLock::new();
    let mut clients = CLIENTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = clients.get(&(connect, timeout)) {
        return Ok(c.clone());
    }
    let c = reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(timeout)
        .build()?;
    clients.insert((connect, timeout), c.clone());
    Ok(c)
}

impl Provider {
    pub fn new(name: &str, c: &ProviderConfig, key: Option<Secret>) -> anyhow::Result<Provider> {
        // reqwest is built without a crypto provider of its own; the host's is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_millis(c.timeout_ms.unwrap_or(TIMEOUT_MS));
        let connect = Duration::from_millis(c.connect_timeout_ms.unwrap_or(CONNECT_TIMEOUT_MS));
        let http = shared_client(connect, timeout).map_err(|e| {
            crate::store::error::fail(
                format!("[llm.providers.{name}]: cannot build an HTTP client: {e}"),
                "this is a bug in tinytown; please report it",
            )
        })?;
        Ok(Provider {
            name: name.to_string(),
            kind: c.kind,
            base_url: c.base_url.trim().trim_end_matches('/').to_string(),
            key,
            timeout,
            retries: c.retries.unwrap_or(RETRIES),
            http,
        })
    }

    /// The request body for `model`; an error is the guest's (invalid-request).
    pub fn body(&self, model: &str, req: &ChatRequest, max_tokens: u32) -> Result<Value, LlmError> {
        match self.kind {
            ProviderKind::Openai => openai::body(model, req, max_tokens),
            ProviderKind::Anthropic => anthropic::body(model, req, max_tokens),
        }
        .map_err(|m| LlmError::new(ErrorCode::InvalidRequest, m, false))
    }

    /// The longest one send can take, retries and waits included: how long its budget hold
    /// must stay counted.
    pub fn worst_case(&self) -> Duration {
        (self.timeout + MAX_RETRY_AFTER.max(MAX_BACKOFF)) * (self.retries + 1)
    }

    /// Text with the key removed.
    pub fn scrub(&self, text: &str) -> String {
        match &self.key {
            Some(k) => k.scrub(text),
            None => text.to_string(),
        }
    }

    /// Sends `body`, retrying as the module says. The answer's flag says whether the provider
    /// reported usage.
    pub async fn send(&self, body: &Value, structured: bool) -> Sent {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last = attempts > self.retries;
            match self.attempt(body).await {
                Attempt::Done(v, status) => {
                    let parsed = match self.kind {
                        ProviderKind::Openai => {
                            openai::parse(&v).map(|r| (r, openai::has_usage(&v)))
                        }
                        ProviderKind::Anthropic => {
                            anthropic::parse(&v, structured).map(|r| (r, anthropic::has_usage(&v)))
                        }
                    };
                    let result = parsed.map_err(|m| {
                        self.error(
                            ErrorCode::ProviderUnavailable,
                            format!("the answer is not what the protocol says: {m}"),
                            true,
                        )
                    });
                    return Sent {
                        result,
                        status: Some(status),
                        attempts,
                        body: Some(v),
                    };
                }
                Attempt::Fail(e, status) => {
                    return Sent {
                        result: Err(e),
                        status,
                        attempts,
                        body: None,
                    };
                }
                Attempt::Again(e, status, wait) => {
                    let wait = match wait {
                        Some(w) if w > MAX_RETRY_AFTER => {
                            return Sent {
                                result: Err(e),
                                status,
                                attempts,
                                body: None,
                            };
                        }
                        Some(w) => w,
                        None => backoff(attempts),
                    };
                    if last {
                        return Sent {
                            result: Err(e),
                            status,
                            attempts,
                            body: None,
                        };
                    }
                    tracing::debug!(provider = %self.name, attempts, ?wait, "llm call retried: {}", e.message);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(&self, body: &Value) -> Attempt {
        let path = match self.kind {
            ProviderKind::Openai => openai::PATH,
            ProviderKind::Anthropic => anthropic::PATH,
        };
        let url = format!("{}{path}", self.base_url);
        let mut b = self
            .http
            .post(&url)
            .header("content-type", "application/json");
        if let Some(k) = &self.key {
            // Marked sensitive, so no layer below prints it (bearer_auth does the same).
            let (name, value) = match self.kind {
                ProviderKind::Openai => ("authorization", format!("Bearer {}", k.expose())),
                ProviderKind::Anthropic => ("x-api-key", k.expose().to_string()),
            };
            match reqwest::header::HeaderValue::from_str(&value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    b = b.header(name, v);
                }
                Err(_) => {
                    return Attempt::Fail(
                        self.error(
                            ErrorCode::InvalidRequest,
                            "has a key that is not a valid HTTP header value; check its \
                             api_key_env or api_key_file"
                                .into(),
                            false,
                        ),
                        None,
                    )
                }
            }
        }
        if self.kind == ProviderKind::Anthropic {
            b = b.header("anthropic-version", anthropic::VERSION);
        }
        let started = Instant::now();
        let resp = match b.body(body.to_string()).send().await {
            Ok(r) => r,
            Err(e) => return self.transport(e, started),
        };
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return self.transport(e, started),
        };
        if (200..300).contains(&status) {
            return match serde_json::from_str::<Value>(&text) {
                Ok(v) => Attempt::Done(v, status),
                Err(e) => Attempt::Fail(
                    self.error(
                        ErrorCode::ProviderUnavailable,
                        format!("answered {status} with a body that is not JSON ({e})"),
                        true,
                    ),
                    Some(status),
                ),
            };
        }
        let said = provider_message(&text);
        match status {
            429 => Attempt::Again(
                self.error(
                    ErrorCode::RateLimited,
                    format!("rate limited (429) after the host's retries: {said}"),
                    true,
                ),
                Some(status),
                retry_after,
            ),
            500..=599 => Attempt::Again(
                self.error(
                    ErrorCode::ProviderUnavailable,
                    format!("answered {status}: {said}"),
                    true,
                ),
                Some(status),
                retry_after,
            ),
            _ => Attempt::Fail(
                self.error(
                    ErrorCode::InvalidRequest,
                    format!("refused the request ({status}): {said}"),
                    false,
                ),
                Some(status),
            ),
        }
    }

    fn transport(&self, e: reqwest::Error, started: Instant) -> Attempt {
        if e.is_timeout() {
            return Attempt::Fail(
                self.error(
                    ErrorCode::ProviderUnavailable,
                    format!(
                        "did not answer within {} ms (timed out after {} ms)",
                        self.timeout.as_millis(),
                        started.elapsed().as_millis()
                    ),
                    true,
                ),
                None,
            );
        }
        let what = if e.is_connect() {
            "cannot be reached"
        } else {
            "dropped the connection"
        };
        // reqwest's own text names the URL; the key is in a header, never in it.
        let mut detail = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            detail = format!("{detail}: {s}");
            src = s.source();
        }
        Attempt::Again(
            self.error(
                ErrorCode::ProviderUnavailable,
                format!("{what} ({detail})"),
                true,
            ),
            None,
            None,
        )
    }

    fn error(&self, code: ErrorCode, message: String, retryable: bool) -> LlmError {
        LlmError::new(
            code,
            self.scrub(&format!("provider `{}` {message}", self.name)),
            retryable,
        )
    }
}

/// The wait before attempt `n + 1`: 250 ms, 500 ms, 1 s, ... at most [`MAX_BACKOFF`].
fn backoff(n: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// `Retry-After` as a wait: delay-seconds or an HTTP date (a date in the past is no wait).
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The provider's own error text (`error.message` in both protocols), cut short.
fn provider_message(body: &str) -> String {
    let v: Option<Value> = serde_json::from_str(body).ok();
    let msg = v
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| e.get("message").and_then(Value::as_str).or(e.as_str()))
        .map(str::to_string)
        .unwrap_or_else(|| body.trim().to_string());
    let msg = msg.replace('\n', " ");
    if msg.chars().count() > MESSAGE_CHARS {
        format!("{}...", msg.chars().take(MESSAGE_CHARS).collect::<String>())
    } else if msg.is_empty() {
        "(no message)".into()
    } else {
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(1));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let soon = SystemTime::now() + Duration::from_secs(20);
        h.insert(RETRY_AFTER, httpdate::fmt_http_date(soon).parse().unwrap());
        let w = retry_after(&h).unwrap();
        assert!(
            w > Duration::from_secs(17) && w <= Duration::from_secs(20),
            "{w:?}"
        );
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
