//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every refusal of the service layer is a [`UserError`](crate::store::error::UserError) whose
//! [`ErrorKind`] decides the status: 404 for a missing agent, task or dead letter, 409 for an
//! illegal move, 422 for bad input, 503 when Redis is away. Only an error tinytown did not
//! foresee is a 500, and it is logged. The `hint` member carries the same hint the CLI prints.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::error::{self, ErrorKind};

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    #[serde(skip)]
    pub status_code: StatusCode,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Seconds to wait before trying again (429), also sent as `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// What a refusal was judged on (a gated swap's replay report), an extension member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Box<serde_json::Value>>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>, hint: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status_code: status,
            status: status.as_u16(),
            detail: detail.into(),
            hint: Some(hint.into()),
            retry_after: None,
            report: None,
        }
    }

    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "this route needs an API key (Authorization: Bearer tt_...)",
            "make one with `tt auth key add NAME --scope read|write|manage`",
        )
    }

    pub fn not_found(what: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!("no route {what}"),
            "GET /openapi.json lists every route",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code;
        let retry = self.retry_after;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = retry {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<anyhow::Error> for Problem {
    fn from(err: anyhow::Error) -> Problem {
        if error::is_unavailable(&err) {
            let detail = match error::user_error(&err) {
                Some(u) => u.message.clone(),
                None => format!(
                    "the town's Redis is not answering: {}",
                    error::one_line(&err)
                ),
            };
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                detail,
                "the town's Redis cannot be reached; is it running? `tt status` says more",
            );
        }
        match error::user_error(&err) {
            Some(u) => {
                let status = match u.kind {
                    ErrorKind::NotFound => StatusCode::NOT_FOUND,
                    ErrorKind::Conflict => StatusCode::CONFLICT,
                    ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                };
                let mut p = Problem::new(status, u.message.clone(), "");
                p.hint = u.hint.clone();
                p
            }
            None => {
                tracing::error!("internal error: {err:#}");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error: {}", error::one_line(&err)),
                    "this is a bug in tinytown; please report it with the request you made",
                )
            }
        }
    }
}

/// A body, query or path that could not be read is bad input: 422 with what was wrong.
fn bad_input(what: &str, text: String) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("the request's {what} is not valid: {text}"),
        "GET /openapi.json has the schema of every route",
    )
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Problem {
        let mut p = bad_input("JSON body", r.body_text());
        if r.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            p.status_code = r.status();
            p.status = r.status().as_u16();
            p.title = "Unsupported Media Type".into();
            p.hint = Some("send Content-Type: application/json".into());
        }
        p
    }
}

impl From<QueryRejection> for Problem {
    fn from(r: QueryRejection) -> Problem {
        bad_input("query", r.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Problem {
        bad_input("path", r.body_text())
    }
}
