//! A message as stored in a mailbox stream, and the one place a stream entry becomes one.
//!
//! A message is a stream entry whose fields are flat strings (`id`, `from`, `to`, `kind`, `body`,
//! `prio`, `task`, `corr`, `ts`). [`Message::decode`] is the single place where an entry becomes
//! a message: anything that is not our schema is an error naming the field, never a panic, so a
//! foreign entry in a mailbox is dead-lettered instead of crashing a host.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// What a message is about; the stored form is one string (see [`Kind::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Kind {
    Task,
    Query,
    Info,
    Ack,
    TaskAssign,
    ReviewRequest,
    Approve,
    /// The reason is the message body.
    Reject,
    Custom(String),
}

impl Kind {
    pub fn as_str(&self) -> String {
        match self {
            Kind::Task => "task".into(),
            Kind::Query => "query".into(),
            Kind::Info => "info".into(),
            Kind::Ack => "ack".into(),
            Kind::TaskAssign => "task-assign".into(),
            Kind::ReviewRequest => "review-request".into(),
            Kind::Approve => "verdict:approve".into(),
            Kind::Reject => "verdict:reject".into(),
            Kind::Custom(name) => format!("custom:{name}"),
        }
    }

    pub fn parse(s: &str) -> Result<Kind, String> {
        Ok(match s {
            "task" => Kind::Task,
            "query" => Kind::Query,
            "info" => Kind::Info,
            "ack" => Kind::Ack,
            "task-assign" => Kind::TaskAssign,
            "review-request" => Kind::ReviewRequest,
            "verdict:approve" => Kind::Approve,
            "verdict:reject" => Kind::Reject,
            other => match other.strip_prefix("custom:") {
                Some(name) if !name.is_empty() => Kind::Custom(name.to_string()),
                _ => return Err(format!("unknown message kind {other:?}")),
            },
        })
    }
}

impl From<Kind> for String {
    fn from(k: Kind) -> String {
        k.as_str()
    }
}

impl TryFrom<String> for Kind {
    type Error = String;
    fn try_from(s: String) -> Result<Kind, String> {
        Kind::parse(&s)
    }
}

/// A message as stored in a mailbox stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub from: String,
    pub to: String,
    pub kind: Kind,
    pub body: String,
    pub urgent: bool,
    pub task: Option<String>,
    pub corr: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

/// Why a stream entry is not a message of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a tinytown message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl Message {
    /// Decodes the raw field/value pairs of a stream entry.
    pub fn decode(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Message, DecodeError> {
        let mut map: HashMap<&[u8], &[u8]> = HashMap::with_capacity(fields.len());
        for (k, v) in fields {
            if map.insert(k.as_slice(), v.as_slice()).is_some() {
                return Err(DecodeError(format!(
                    "field {:?} appears twice",
                    String::from_utf8_lossy(k)
                )));
            }
        }
        let text = |name: &str| -> Result<Option<String>, DecodeError> {
            match map.get(name.as_bytes()) {
                None => Ok(None),
                Some(raw) => std::str::from_utf8(raw)
                    .map(|s| Some(s.to_string()))
                    .map_err(|_| DecodeError(format!("field `{name}` is not valid UTF-8"))),
            }
        };
        let required = |name: &str| -> Result<String, DecodeError> {
            text(name)?.ok_or_else(|| DecodeError(format!("field `{name}` is missing")))
        };
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let kind = Kind::parse(&required("kind")?).map_err(DecodeError)?;
        let ts = required("ts")?
            .parse::<u64>()
            .map_err(|_| DecodeError("field `ts` is not a number".into()))?;
        let urgent = match text("prio")?.as_deref() {
            None | Some("normal") => false,
            Some("urgent") => true,
            Some(other) => return Err(DecodeError(format!("field `prio` is {other:?}"))),
        };
        Ok(Message {
            id: required("id")?,
            from: required("from")?,
            to: required("to")?,
            kind,
            body: required("body")?,
            urgent,
            task: non_empty(text("task")?),
            corr: non_empty(text("corr")?),
            ts,
        })
    }
}

super::str_enum! {
    /// The two mailbox streams of an agent. Urgent mail is always read first.
    pub enum Stream {
        Urgent = "urgent",
        Inbox = "inbox",
    }
}
