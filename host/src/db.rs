//! Connections to the town's Redis, single server or cluster, and the one write path.
//!
//! [`Db`] holds a shared, auto-reconnecting connection for commands and hands out dedicated
//! connections for blocking mailbox reads (a blocking read on a shared connection would stall
//! everything queued behind it). [`Db::apply`] runs `lua/apply.lua`, through which every change
//! to a town goes.

use std::time::Duration;

use anyhow::{Context, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::embedded::Embedded;
use crate::error;
use crate::keys::Keys;
use crate::limits::{EVENTS_KEPT, MAX_MESSAGE_BYTES};
use crate::model::now_ms;

const APPLY_LUA: &str = include_str!("lua/apply.lua");
/// Takes or renews an exclusive agent's lease. KEYS: lease, lease-seq. ARGV: host, ttl ms.
/// Returns `<host>:<token>` when this host holds it, nil when another does.
const LEASE_LUA: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  if string.match(v, '^(.*):%d+$') == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return v
  end
  return false
end
local holder = ARGV[1] .. ':' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], holder, 'PX', ARGV[2])
return holder
"#;
/// How long a handled message's id is remembered for deduplication.
const APPLIED_KEEP_MS: u64 = 7 * 24 * 3600 * 1000;
/// The embedded Redis fsyncs its AOF before answering a write: an acknowledged change
/// survives a crash of Redis or of the machine. The README explains the other settings.
pub const DEFAULT_APPENDFSYNC: &str = "always";
/// Replies slower than this are treated as a lost connection (blocking reads set their own).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one server or to a cluster; both speak the same commands.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[derive(Clone)]
enum Target {
    Single(redis::Client),
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// The town's Redis.
#[derive(Clone)]
pub struct Db {
    pub conn: Conn,
    pub keys: Keys,
    target: Target,
    apply: redis::Script,
}

/// One unit of the applier (see `lua/apply.lua`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Unit {
    pub ops: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dlq: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// For exclusive agents: apply only if this host still holds the agent's lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fence {
    pub agent: String,
    /// `<host>:<token>` as stored in the lease key.
    pub holder: String,
}

/// Which mailbox entry a unit acknowledges, and its deduplication id.
#[derive(Debug, Clone, Serialize)]
pub struct Ack {
    pub stream: String,
    pub entry: String,
    pub agent: String,
    /// `inbox` or `urgent`.
    pub kind: String,
    /// Unique per message across both streams: `<kind>/<entry>`.
    pub member: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Applied {
    /// `ok`, `dup` (already applied; only acknowledged) or `dlq` (dead-lettered).
    pub s: String,
    #[serde(default)]
    pub ids: String,
    #[serde(default)]
    pub tasks: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// Messages removed by `clear_conductor`.
    #[serde(default)]
    pub cleared: Option<u64>,
}

impl Applied {
    pub fn message_ids(&self) -> Vec<String> {
        split_ids(&self.ids)
    }
    pub fn task_ids(&self) -> Vec<String> {
        split_ids(&self.tasks)
    }
}

fn split_ids(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

impl Db {
    /// Connects to the configured Redis, starting the embedded one when no URL is set.
    pub async fn connect(config: &Config) -> Result<Db> {
        let target = target(config)?;
        let conn = match &target {
            Target::Single(client) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(2);
                let cm = tokio::time::timeout(
                    Duration::from_secs(10),
                    ConnectionManager::new_with_config(client.clone(), cfg),
                )
                .await
                .map_err(|_| unreachable_err(config, "timed out"))?
                .map_err(|e| connect_err(config, e))?;
                Conn::Single(cm)
            }
            Target::Cluster(client) => Conn::Cluster(
                client
                    .get_async_connection()
                    .await
                    .map_err(|e| connect_err(config, e))?,
            ),
        };
        // Credentials are checked on first use: ask once, so a refusal is reported as such.
        let mut probe = conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut probe)
            .await
            .map_err(|e| connect_err(config, e))?;
        Ok(Db {
            conn,
            keys: Keys::new(&config.town.name),
            target,
            apply: redis::Script::new(APPLY_LUA),
        })
    }

    /// A connection of its own, for blocking reads; it waits as long as `block` allows.
    pub async fn dedicated(&self, block: Duration) -> Result<Conn> {
        let timeout = block + Duration::from_secs(5);
        Ok(match &self.target {
            Target::Single(client) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(Duration::from_secs(5)));
                Conn::Single(ConnectionManager::new_with_config(client.clone(), cfg).await?)
            }
            Target::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
        })
    }

    /// Runs the applier on `units`; returns one result per unit.
    pub async fn apply(&self, units: &[Unit]) -> Result<Vec<Applied>> {
        let json = serde_json::to_string(units)?;
        let mut conn = self.conn.clone();
        let raw: String = self
            .apply
            .key(self.keys.events())
            .arg(self.keys.prefix())
            .arg(now_ms())
            .arg(json)
            .arg(EVENTS_KEPT)
            .arg(MAX_MESSAGE_BYTES)
            .arg(APPLIED_KEEP_MS)
            .invoke_async(&mut conn)
            .await
            .map_err(error::from_redis)?;
        serde_json::from_str(&raw).with_context(|| format!("decoding the applier's reply {raw:?}"))
    }

    /// Takes or renews `agent`'s exclusive lease for `host`; the holder string when held.
    pub async fn lease(&self, agent: &str, host: &str, ttl: Duration) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        redis::Script::new(LEASE_LUA)
            .key(self.keys.lease(agent))
            .key(self.keys.lease_seq(agent))
            .arg(host)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(error::from_redis)
    }

    /// Gives up a lease this host holds (so a peer can take over at once).
    pub async fn release_lease(&self, agent: &str, holder: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1",
        )
        .key(self.keys.lease(agent))
        .arg(holder)
        .invoke_async::<i64>(&mut conn)
        .await
        .map_err(error::from_redis)?;
        Ok(())
    }

    /// Applies one unit made of `ops` on behalf of `by`; a refused op is the error.
    pub async fn apply_ops(&self, by: &str, ops: Vec<serde_json::Value>) -> Result<Applied> {
        let unit = Unit {
            ops,
            by: Some(by.to_string()),
            ..Default::default()
        };
        let mut r = self.apply(&[unit]).await?;
        r.pop().context("the applier returned no result")
    }
}

fn target(config: &Config) -> Result<Target> {
    let password = config.redis_password()?;
    let username = config.redis.username.clone();
    let with_auth = |info: redis::ConnectionInfo| {
        let mut settings = info.redis_settings().clone();
        if let Some(p) = &password {
            settings = settings.set_password(p);
        }
        if let Some(u) = &username {
            settings = settings.set_username(u);
        }
        info.set_redis_settings(settings)
    };
    let Some(url) = config.redis.url.as_deref().filter(|u| !u.is_empty()) else {
        let fsync = config
            .redis
            .appendfsync
            .as_deref()
            .unwrap_or(DEFAULT_APPENDFSYNC);
        let socket = Embedded::new(config).ensure(fsync)?;
        let info = redis::ConnectionAddr::Unix(socket).into_connection_info()?;
        return Ok(Target::Single(redis::Client::open(with_auth(info))?));
    };
    let cluster = config.redis.cluster || url.starts_with("redis+cluster://");
    let url = url.replacen("redis+cluster://", "redis://", 1);
    let info = url.as_str().into_connection_info().map_err(|e| {
        error::fail(
            format!("[redis] url {url:?} is not a Redis URL: {e}"),
            "use redis://host:port, rediss://host:port, unix:///path/to/redis.sock \
             or redis+cluster://host:port",
        )
    })?;
    let info = with_auth(info);
    if cluster {
        let client = redis::cluster::ClusterClientBuilder::new(vec![info])
            .response_timeout(RESPONSE_TIMEOUT)
            .build()
            .map_err(|e| error::fail(format!("Redis Cluster {url}: {e}"), "check [redis] url"))?;
        Ok(Target::Cluster(Box::new(client)))
    } else {
        Ok(Target::Single(redis::Client::open(info)?))
    }
}

fn connect_err(config: &Config, e: redis::RedisError) -> anyhow::Error {
    let text = e.to_string();
    let refused = [
        "WRONGPASS",
        "NOAUTH",
        "NOPERM",
        "AuthenticationFailed",
        "authentication failed",
    ];
    if refused.iter().any(|r| text.contains(r))
        || e.kind() == redis::ErrorKind::AuthenticationFailed
    {
        return error::fail(
            format!("Redis refused the password: {text}"),
            "check [redis] username and password_env/password_file in tinytown.toml",
        );
    }
    unreachable_err(config, &text)
}

fn unreachable_err(config: &Config, why: &str) -> anyhow::Error {
    let url = config
        .redis
        .url
        .clone()
        .unwrap_or_else(|| "the embedded Redis".into());
    error::fail(
        format!("cannot reach Redis at {url}: {why}"),
        "is the server running and the URL in [redis] url right? \
         Without a url, tt starts its own server",
    )
}
