//! The town's records as they are stored in Redis, and their checks.
//!
//! A message is a stream entry whose fields are flat strings (`id`, `from`, `to`, `kind`, `body`,
//! `prio`, `task`, `corr`, `ts`). [`Message::decode`] is the single place where an entry becomes
//! a message: anything that is not our schema is an error naming the field, never a panic, so a
//! foreign entry in a mailbox is dead-lettered instead of crashing a host.

use std::collections::HashMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error;
use crate::keys::{CONDUCTOR, SUPERVISOR};
use crate::limits::MAX_NAME_LEN;

/// Checks an agent name: 1–64 letters, digits, `-` or `_`, not starting with `-`.
/// That leaves no room for path tricks (`../`), control characters or key separators (`:`).
pub fn validate_name(name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || name.starts_with('-') {
        return Err(error::usage(
            format!("invalid agent name {:?}", name.escape_debug().to_string()),
            format!("use 1-{MAX_NAME_LEN} letters, digits, `-` or `_`, not starting with `-`"),
        ));
    }
    Ok(())
}

/// Maps `supervisor` to `conductor`: they are one mailbox.
pub fn canonical_name(name: &str) -> &str {
    if name == SUPERVISOR {
        CONDUCTOR
    } else {
        name
    }
}

pub fn is_conductor(name: &str) -> bool {
    name == CONDUCTOR || name == SUPERVISOR
}

/// Validates a task id as typed by a user (`t12`).
pub fn validate_task_id(id: &str) -> Result<()> {
    let ok = id.len() > 1
        && id.len() <= 24
        && id.starts_with('t')
        && id[1..].chars().all(|c| c.is_ascii_digit());
    if !ok {
        return Err(error::usage(
            format!("invalid task id {:?}", id.escape_debug().to_string()),
            "task ids look like `t12`; `tt tasks` lists them",
        ));
    }
    Ok(())
}

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

/// Task states and the legal moves between them. The Lua applier enforces the same table
/// (`lua/prelude.lua`); this copy is for messages and tests.
pub const TASK_STATES: &[&str] = &[
    "pending",
    "assigned",
    "running",
    "in-review",
    "rejected",
    "completed",
    "failed",
    "cancelled",
];

pub fn is_terminal(state: &str) -> bool {
    matches!(state, "completed" | "failed" | "cancelled")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub description: String,
    pub state: String,
    pub owner: Option<String>,
    pub reviewer: Option<String>,
    pub result: Option<String>,
    pub rejections: u32,
    pub tags: Vec<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl Task {
    pub fn from_hash(id: &str, h: &HashMap<String, String>) -> Task {
        let get = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
        let num = |k: &str| h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Task {
            id: id.to_string(),
            description: get("desc").unwrap_or_default(),
            state: get("state").unwrap_or_else(|| "pending".into()),
            owner: get("owner"),
            reviewer: get("reviewer"),
            result: get("result"),
            rejections: num("rejections") as u32,
            tags: get("tags")
                .map(|t| t.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            created_ms: num("created"),
            updated_ms: num("updated"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub name: String,
    pub role: String,
    pub state: String,
    pub nickname: Option<String>,
    pub plugin: Option<String>,
    pub digest: Option<String>,
    pub swapped_ms: Option<u64>,
    /// The plugin before the last swap (for `tt swap --rollback`).
    pub previous: Option<String>,
    /// A candidate running beside the live plugin, decisions recorded only.
    pub shadow: Option<String>,
    pub shadow_digest: Option<String>,
    pub created_ms: u64,
}

impl Agent {
    pub fn from_hash(name: &str, h: &HashMap<String, String>) -> Agent {
        let get = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
        Agent {
            name: name.to_string(),
            role: get("role").unwrap_or_default(),
            state: get("state").unwrap_or_else(|| "idle".into()),
            nickname: get("nickname"),
            plugin: get("plugin"),
            digest: get("digest"),
            swapped_ms: get("swapped").and_then(|v| v.parse().ok()),
            previous: get("previous"),
            shadow: get("shadow"),
            shadow_digest: get("shadow_digest"),
            created_ms: get("created").and_then(|v| v.parse().ok()).unwrap_or(0),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("id", "m1"),
            ("from", "alice"),
            ("to", "bob"),
            ("kind", "verdict:reject"),
            ("body", "fix the typo"),
            ("prio", "urgent"),
            ("task", "t3"),
            ("corr", ""),
            ("ts", "17"),
        ]
    }

    #[test]
    fn decodes_our_schema() {
        let m = Message::decode(&entry(&good())).unwrap();
        assert_eq!(m.kind, Kind::Reject);
        assert!(m.urgent);
        assert_eq!(m.task.as_deref(), Some("t3"));
        assert_eq!(m.corr, None);
    }

    #[test]
    fn rejects_foreign_entries_with_the_field_named() {
        let mut missing = good();
        missing.retain(|(k, _)| *k != "from");
        assert!(Message::decode(&entry(&missing))
            .unwrap_err()
            .0
            .contains("`from`"));

        let mut bad_kind = good();
        bad_kind[3] = ("kind", "gossip");
        assert!(Message::decode(&entry(&bad_kind))
            .unwrap_err()
            .0
            .contains("gossip"));

        let mut bad_ts = good();
        bad_ts[8] = ("ts", "soon");
        assert!(Message::decode(&entry(&bad_ts))
            .unwrap_err()
            .0
            .contains("`ts`"));

        let mut raw = entry(&good());
        raw[4].1 = vec![0xff, 0xfe];
        assert!(Message::decode(&raw).unwrap_err().0.contains("UTF-8"));

        let mut dup = entry(&good());
        dup.push((b"id".to_vec(), b"m2".to_vec()));
        assert!(Message::decode(&dup).unwrap_err().0.contains("twice"));
    }

    #[test]
    fn names_are_checked() {
        for ok in ["alice", "w-1", "Bob_2"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "../etc",
            "a b",
            "a:b",
            "-x",
            "tab\there",
            "é",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            Kind::Task,
            Kind::Approve,
            Kind::Custom("ping".into()),
            Kind::ReviewRequest,
        ] {
            assert_eq!(Kind::parse(&k.as_str()).unwrap(), k);
        }
        assert!(Kind::parse("custom:").is_err());
    }
}
