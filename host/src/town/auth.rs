//! API keys: who may use the town over HTTP (`tt serve`) and MCP (`tt mcp`), with which scope,
//! and the audit trail of what they changed.
//!
//! A key is `tt_<id>_<secret>`. The town stores only an argon2id hash of the secret (in the
//! `apikeys` hash, written by the applier like everything else), so a copy of the database
//! gives no working key. Scopes are ordered: `manage` includes `write`, which includes `read`.
//! Checking a hash costs tens of milliseconds by design, so [`KeyCheck`] remembers which tokens
//! it has verified; every request still reads the key's record, so a revoked key is refused at
//! once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use anyhow::{Context, Result};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::Town;
use crate::store::applier::Op;
use crate::store::error;
use crate::store::keys::CONDUCTOR;
use crate::store::model::validate_name;

/// What a key may do; each scope includes the ones before it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Look: status, agents, tasks, mail, events, metrics.
    Read,
    /// Act on the work: send, assign, move tasks, the backlog, retry dead letters.
    Write,
    /// Run the town: spawn, kill, prune, swap, drop dead letters.
    Manage,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Manage];

    pub fn parse(s: &str) -> Result<Scope> {
        Scope::ALL
            .into_iter()
            .find(|x| x.to_string() == s)
            .ok_or_else(|| {
                error::usage(
                    format!("unknown scope {s:?}"),
                    "scopes are read, write and manage (each includes the ones before it)",
                )
            })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Manage => "manage",
        })
    }
}

/// A key as listed: never its secret or hash.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created: u64,
}

/// A key just made: the token is shown once and never stored.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    #[serde(flatten)]
    pub key: ApiKey,
    pub token: String,
}

/// Who made a request: the key's id, name and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub name: String,
    pub scope: Scope,
}

impl Caller {
    pub fn allows(&self, need: Scope) -> bool {
        self.scope >= need
    }
}

#[derive(Deserialize)]
struct Record {
    name: String,
    scope: String,
    hash: String,
    #[serde(default)]
    created: u64,
}

impl Record {
    fn scope(&self) -> Scope {
        // Stored by `key_add` from a parsed scope; an unreadable one grants the least.
        Scope::parse(&self.scope).unwrap_or(Scope::Read)
    }
}

/// Remembers verified tokens (by their sha256) so a hash is checked once per key and process.
#[derive(Default)]
pub struct KeyCheck {
    verified: Mutex<HashMap<[u8; 32], String>>,
}

impl KeyCheck {
    /// True when `token` was verified before (so checking it again costs no hashing).
    pub fn knows(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.verified
            .lock()
            .map(|m| m.contains_key(&digest))
            .unwrap_or(false)
    }
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(crate::store::model::hex(&b))
}

/// Splits `tt_<id>_<secret>`.
fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("tt_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty() && id.len() <= 32).then_some((id, secret))
}

impl Town {
    /// Makes a key named `name` with `scope`; the token in the answer is the only copy.
    pub async fn key_add(&self, name: &str, scope: Scope) -> Result<NewKey> {
        validate_name(name).map_err(|_| {
            error::usage(
                format!("invalid key name {name:?}"),
                "names are 1-64 of A-Za-z0-9-_, e.g. the person or program using it",
            )
        })?;
        let id = random_hex(4)?;
        let secret = random_hex(32)?;
        let hash = tokio::task::spawn_blocking(move || {
            Argon2::default()
                .hash_password(secret.as_bytes())
                .map(|h| (h.to_string(), secret))
                .map_err(|e| anyhow::anyhow!("hashing the key: {e}"))
        })
        .await??;
        let (hash, secret) = hash;
        self.db
            .apply_ops(
                CONDUCTOR,
                vec![Op::KeyAdd {
                    id: id.clone(),
                    name: name.to_string(),
                    scope: scope.to_string(),
                    hash,
                }],
            )
            .await?;
        Ok(NewKey {
            token: format!("tt_{id}_{secret}"),
            key: ApiKey {
                id,
                name: name.to_string(),
                scope,
                created: crate::store::model::now_ms(),
            },
        })
    }

    pub async fn keys(&self) -> Result<Vec<ApiKey>> {
        let mut c = self.db.conn.clone();
        let all: HashMap<String, String> = c.hgetall(self.db.keys.api_keys()).await?;
        let mut out: Vec<ApiKey> = all
            .into_iter()
            .filter_map(|(id, json)| {
                let r: Record = serde_json::from_str(&json).ok()?;
                Some(ApiKey {
                    scope: r.scope(),
                    id,
                    name: r.name,
                    created: r.created,
                })
            })
            .collect();
        out.sort_by_key(|k| (k.created, k.id.clone()));
        Ok(out)
    }

    /// Revokes key `id`; requests with it are refused from now on.
    pub async fn key_revoke(&self, id: &str) -> Result<()> {
        self.db
            .apply_ops(CONDUCTOR, vec![Op::KeyRevoke { id: id.to_string() }])
            .await?;
        Ok(())
    }

    /// The caller a token belongs to, or `None` for an unknown, revoked or wrong token.
    pub async fn authenticate(&self, check: &KeyCheck, token: &str) -> Result<Option<Caller>> {
        let Some((id, secret)) = parse_token(token) else {
            return Ok(None);
        };
        let mut c = self.db.conn.clone();
        let json: Option<String> = c.hget(self.db.keys.api_keys(), id).await?;
        let Some(json) = json else { return Ok(None) };
        let record: Record = serde_json::from_str(&json).context("reading an API key record")?;
        let caller = Caller {
            id: id.to_string(),
            name: record.name.clone(),
            scope: record.scope(),
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let known = check
            .verified
            .lock()
            .map(|m| m.get(&digest) == Some(&record.hash));
        if known.unwrap_or(false) {
            return Ok(Some(caller));
        }
        let (hash, secret) = (record.hash.clone(), secret.to_string());
        let ok = tokio::task::spawn_blocking(move || {
            let parsed = argon2::password_hash::phc::PasswordHash::new(&hash).ok()?;
            Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .ok()
        })
        .await?
        .is_some();
        if !ok {
            return Ok(None);
        }
        if let Ok(mut m) = check.verified.lock() {
            m.insert(digest, record.hash);
        }
        Ok(Some(caller))
    }

    /// Records one write request made over HTTP or MCP, allowed or refused.
    pub async fn audit(&self, who: &str, action: &str, peer: &str, status: u16) -> Result<()> {
        self.db
            .apply_ops(
                CONDUCTOR,
                vec![Op::Audit {
                    who: who.to_string(),
                    action: action.to_string(),
                    peer: peer.to_string(),
                    status,
                }],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_include_the_lesser_ones() {
        let c = |scope| Caller {
            id: "k".into(),
            name: "n".into(),
            scope,
        };
        assert!(c(Scope::Manage).allows(Scope::Write));
        assert!(c(Scope::Write).allows(Scope::Read));
        assert!(!c(Scope::Read).allows(Scope::Write));
        assert!(!c(Scope::Write).allows(Scope::Manage));
        assert!(Scope::parse("admin").is_err());
    }

    #[test]
    fn tokens_parse_only_in_their_form() {
        assert_eq!(parse_token("tt_ab12_xyz"), Some(("ab12", "xyz")));
        for bad in ["", "tt_", "tt__x", "tt_ab12_", "Bearer x", "ab12_xyz"] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }
}
