//! Connections to the town's Redis, single server or cluster.
//!
//! [`Db`] holds a shared, auto-reconnecting connection for commands and hands out dedicated
//! connections for blocking mailbox reads (a blocking read on a shared connection would stall
//! everything queued behind it). Writes go through the applier (`store::applier`, methods on
//! [`Db`]); leases through `store::lease`.
//!
//! On a cluster, the client follows the cluster through a slot move (resharding): it follows
//! `MOVED` (and learns the new slot map) and `ASK` (asking the importing master), and retries
//! `TRYAGAIN` (a call whose keys are split between two masters mid-migration) and
//! `CLUSTERDOWN` with a short, growing backoff, for every command alike: scripts, stream reads
//! and blocking reads. A script is only safe to retry because it declares all its keys
//! (`store::script`): the cluster then refuses it before it runs. A script is loaded on every
//! master when one answers `NOSCRIPT` (redis-rs sends `SCRIPT LOAD` to all of them).

use std::time::Duration;

use anyhow::Result;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use crate::store::config::{Config, RedisTarget};
use crate::store::embedded::{self, Embedded};
use crate::store::error;
use crate::store::keys::Keys;
use crate::store::policy::Rules;

/// Replies slower than this are treated as a lost connection (blocking reads set their own).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a cluster command may keep being redirected and retried (a slot migration moves a
/// town's keys in well under this) before its error reaches the caller.
const CLUSTER_SETTLE: Duration = Duration::from_secs(60);
/// Retries of one cluster command; the waits between them grow from 10 ms to at most
/// [`CLUSTER_MAX_WAIT_MS`] (a random wait below it), so these last about 20 s of `TRYAGAIN`.
const CLUSTER_RETRIES: u32 = 59;
const CLUSTER_MAX_WAIT_MS: u64 = 700;
/// The redis crate computes each wait as `10 * 2^retry` in u64 before capping it, for retry
/// counts up to one past the limit (it computes the wait of the failure it gives up on): past
/// 60 that overflows, which panics a debug build's host in the middle of a slot move (seen in
/// tests/reshard.rs with 80, then 60).
const _: () = assert!(
    match 2u64.checked_pow(CLUSTER_RETRIES + 1) {
        Some(p) => p.checked_mul(10).is_some(),
        None => false,
    },
    "CLUSTER_RETRIES overflows the redis crate's retry wait formula"
);

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
    Cluster {
        client: Box<redis::cluster::ClusterClient>,
        info: Box<redis::ConnectionInfo>,
    },
}

/// The town's Redis.
#[derive(Clone)]
pub struct Db {
    pub conn: Conn,
    pub keys: Keys,
    target: Target,
    /// The town's rules as the applier script takes them (`store::policy::Rules`, JSON).
    pub(crate) rules_json: String,
    /// The merge queue's agent in a repository town (`Rules::merger`): approvals go to it.
    pub(crate) merger: Option<String>,
    /// Applies handled messages of many agents together (`applier::together`).
    pub(crate) committer: crate::store::applier::Committer,
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
            Target::Cluster { client, .. } => Conn::Cluster(
                client
                    .get_async_connection()
                    .await
                    .map_err(|e| connect_err(config, e))?,
            ),
        };
        // Credentials are checked on first use: ask once, so a refusal is reported as such.
        // The embedded server may have been started under an older config: its settings go in
        // the same round trip.
        let mut first = redis::pipe();
        if matches!(config.redis.target(), RedisTarget::Embedded { .. }) {
            let set = first.cmd("CONFIG").arg("SET");
            for (name, value) in embedded::settings(config.retention.maxmemory_mb) {
                set.arg(name).arg(value);
            }
            set.ignore();
        }
        first.cmd("PING");
        let mut probe = conn.clone();
        first
            .query_async::<(String,)>(&mut probe)
            .await
            .map_err(|e| connect_err(config, e))?;
        Ok(Db {
            conn,
            keys: Keys::new(&config.town.name),
            target,
            rules_json: serde_json::to_string(&Rules::of(config))?,
            merger: config.repo.as_ref().map(|r| r.merger.clone()),
            committer: Default::default(),
        })
    }

    /// Whether the town is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster { .. })
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
            Target::Cluster { info, .. } => Conn::Cluster(
                cluster_client(info, timeout)?
                    .get_async_connection()
                    .await?,
            ),
        })
    }
}

fn target(config: &Config) -> Result<Target> {
    let password = config.redis_password()?;
    let username = config.redis.username.clone();
    // Every connection skips `CLIENT SETINFO`: a round trip at each connect that Redis 7.0
    // refuses anyway, and a short command like `tt send` connects once per process.
    let with_settings = |info: redis::ConnectionInfo| {
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(p) = &password {
            settings = settings.set_password(p);
        }
        if let Some(u) = &username {
            settings = settings.set_username(u);
        }
        info.set_redis_settings(settings)
    };
    let (url, cluster) = match config.redis.target() {
        RedisTarget::Embedded { appendfsync } => {
            let socket =
                Embedded::new(config).ensure(&appendfsync, config.retention.maxmemory_mb)?;
            let info = redis::ConnectionAddr::Unix(socket).into_connection_info()?;
            return Ok(Target::Single(redis::Client::open(with_settings(info))?));
        }
        RedisTarget::Url(url) => (url, false),
        RedisTarget::Cluster(url) => (url, true),
    };
    let info = url.as_str().into_connection_info().map_err(|e| {
        error::fail(
            format!("[redis] url {url:?} is not a Redis URL: {e}"),
            "use redis://host:port, rediss://host:port, unix:///path/to/redis.sock \
             or redis+cluster://host:port",
        )
    })?;
    let info = with_settings(info);
    if cluster {
        let client = cluster_client(&info, RESPONSE_TIMEOUT)
            .map_err(|e| error::fail(format!("Redis Cluster {url}: {e}"), "check [redis] url"))?;
        Ok(Target::Cluster {
            client: Box::new(client),
            info: Box::new(info),
        })
    } else {
        Ok(Target::Single(redis::Client::open(info)?))
    }
}

/// A cluster client seeded from `info` whose replies may take `timeout`, following the cluster
/// through slot moves (the module's doc).
fn cluster_client(
    info: &redis::ConnectionInfo,
    timeout: Duration,
) -> redis::RedisResult<redis::cluster::ClusterClient> {
    redis::cluster::ClusterClientBuilder::new(vec![info.clone()])
        .response_timeout(timeout)
        .overall_response_timeout(Some(timeout + CLUSTER_SETTLE))
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(10)
        .max_retry_wait(CLUSTER_MAX_WAIT_MS)
        .retry_wait_formula(10, 2)
        .build()
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
    let url = match config.redis.target() {
        RedisTarget::Embedded { .. } => "the embedded Redis".to_string(),
        RedisTarget::Url(_) | RedisTarget::Cluster(_) => {
            config.redis.url.clone().unwrap_or_default()
        }
    };
    error::of_kind(
        error::ErrorKind::Unavailable,
        format!("cannot reach Redis at {url}: {why}"),
        "is the server running and the URL in [redis] url right? \
         Without a url, tt starts its own server",
    )
}
