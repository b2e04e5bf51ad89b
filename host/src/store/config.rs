//! `tinytown.toml`, the one config file of a town.
//!
//! It names the town, says which Redis holds it, and declares what only the operator may decide
//! for an agent: its capabilities (each an `[agents.NAME.<capability>]` table) and its limits. The live registry
//! of agents is in Redis (`tt spawn` writes there); an agent declared here is spawned by
//! `tt host` if it does not exist yet. Grants are never read from Redis, so write access to Redis
//! does not give anyone the power to run programs.
//!
//! Secrets are not written here by `tt`: a Redis password comes from an environment variable or
//! from a file readable only by its owner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::store::error;
use crate::store::limits::{LimitOverrides, Limits};
use crate::store::llm::LlmSection;
use crate::store::model::validate_name;
use crate::store::policy::{RetentionSection, TasksSection};
use crate::store::repo::RepoSection;

pub const FILE_NAME: &str = "tinytown.toml";
/// The town's private directory (embedded Redis, compiled-plugin cache, logs).
pub const STATE_DIR: &str = ".tt";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub town: TownSection,
    #[serde(default)]
    pub redis: RedisSection,
    #[serde(default)]
    pub host: HostSection,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub tasks: TasksSection,
    #[serde(default)]
    pub retention: RetentionSection,
    /// A repository town: tasks are branches of this git repository, done when merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<RepoSection>,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentSection>,
    #[serde(default, skip_serializing_if = "ServeSection::is_default")]
    pub serve: ServeSection,
    /// Model providers and aliases (`store::llm`); agents get them with `[agents.NAME.llm]`.
    #[serde(default, skip_serializing_if = "LlmSection::is_empty")]
    pub llm: LlmSection,
    /// The directory holding tinytown.toml; paths in the file are relative to it.
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TownSection {
    pub name: String,
    /// The coding CLI the built-in worker runs: a preset (`claude`, `codex`, `aider`,
    /// `gemini`) or a command line (`"./coder.sh --fast"`). `runtime::builtin` gives it meaning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_cli: Option<String>,
    /// The check the built-in reviewer runs on the work (a command line; exit 0 approves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_check: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://host:port[/db]`, `rediss://…` or `unix:///path/to.sock`. Empty: the embedded server.
    pub url: Option<String>,
    /// Treat `url` as one node of a Redis Cluster.
    #[serde(default)]
    pub cluster: bool,
    /// ACL user name.
    pub username: Option<String>,
    /// Name of the environment variable that holds the password.
    pub password_env: Option<String>,
    /// A file (mode 0600) whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// Embedded server only: `always` (default), `everysec` or `no`. See the README.
    pub appendfsync: Option<String>,
}

/// The embedded Redis fsyncs its AOF before answering a write: an acknowledged change
/// survives a crash of Redis or of the machine. The README explains the other settings.
pub const DEFAULT_APPENDFSYNC: &str = "always";

/// Which Redis holds the town. Decided here only: everything else asks [`RedisSection::target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// No URL (absent or empty): tt runs the town's own `redis-server` on `.tt/redis.sock`.
    Embedded { appendfsync: String },
    /// A server someone else runs.
    Url(String),
    /// One node of a Redis Cluster (`cluster = true`, or a `redis+cluster://` URL, which is
    /// given here as `redis://`).
    Cluster(String),
}

impl RedisSection {
    pub fn target(&self) -> RedisTarget {
        match self.url.as_deref().filter(|u| !u.is_empty()) {
            None => RedisTarget::Embedded {
                appendfsync: self
                    .appendfsync
                    .clone()
                    .unwrap_or_else(|| DEFAULT_APPENDFSYNC.into()),
            },
            Some(url) if self.cluster || url.starts_with("redis+cluster://") => {
                RedisTarget::Cluster(url.replacen("redis+cluster://", "redis://", 1))
            }
            Some(url) => RedisTarget::Url(url.to_string()),
        }
    }

    /// How status lines name it.
    pub fn describe(&self) -> String {
        match self.target() {
            RedisTarget::Embedded { .. } => "embedded".into(),
            RedisTarget::Url(u) | RedisTarget::Cluster(u) => self.url.clone().unwrap_or(u),
        }
    }
}

/// The fewest connections a host can work with (`[host] connections`).
pub const MIN_HOST_CONNECTIONS: usize = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSection {
    /// A message delivered to a host that stops answering is reclaimed by another after this.
    pub lease_ms: u64,
    /// How often a host writes its heartbeat and refreshes the leases of messages in hand.
    pub heartbeat_ms: u64,
    /// The most Redis connections one host process may open, whatever the number of agents.
    /// It opens two: one for commands (shared by every agent, pipelined) and one waiting on
    /// the town's bell for all its agents' mail and record changes (`host::mailboxes`).
    pub connections: usize,
    /// An agent's instance is dropped after this long without a message (0: never); the next
    /// message creates a fresh one. Its state lives in Redis, so only memory is given back.
    pub idle_instance_ms: u64,
    /// The most instances alive at once on one host (each maps memory; the kernel bounds a
    /// process's mappings). Beyond it, an idle agent's instance is dropped for a busy one's.
    pub max_instances: usize,
}

impl HostSection {
    /// Checks the values; the error names the field. Leases another host held are looked at
    /// again every third of it, so it must leave room for that.
    pub fn check(&self) -> Result<(), String> {
        if self.lease_ms < 300 {
            return Err(format!(
                "[host] lease_ms = {}: use 300 or more (free leases are looked for every third of it)",
                self.lease_ms
            ));
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms >= self.lease_ms {
            return Err(format!(
                "[host] heartbeat_ms = {}: it must be above 0 and below lease_ms ({})",
                self.heartbeat_ms, self.lease_ms
            ));
        }
        if self.connections < MIN_HOST_CONNECTIONS {
            return Err(format!(
                "[host] connections = {}: use {MIN_HOST_CONNECTIONS} or more (one for commands, \
                 one waiting on the bell for every agent's mail)",
                self.connections
            ));
        }
        if self.max_instances == 0 {
            return Err(
                "[host] max_instances = 0: use 1 or more (the most instances alive at once)"
                    .to_string(),
            );
        }
        Ok(())
    }

    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ms)
    }
}

/// `[serve]`: how `tt serve` listens. Every field is optional; flags of `tt serve` override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSection {
    /// `host:port`; loopback (`127.0.0.1:7070`) when absent.
    pub bind: Option<String>,
    /// PEM certificate chain and private key: with both, `tt serve` speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Requests per second each API key may make (a token bucket), and the burst above it.
    pub rate_per_sec: Option<u32>,
    pub rate_burst: Option<u32>,
    /// Live event streams (`/v1/events`) at once; each holds a Redis connection.
    pub max_streams: Option<usize>,
}

impl ServeSection {
    fn is_default(&self) -> bool {
        *self == ServeSection::default()
    }
}

impl Default for HostSection {
    fn default() -> Self {
        HostSection {
            lease_ms: 30_000,
            heartbeat_ms: 1_000,
            connections: 32,
            idle_instance_ms: 300_000,
            max_instances: 1_000,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentSection {
    pub role: Option<String>,
    pub plugin: Option<PathBuf>,
    pub nickname: Option<String>,
    /// Passed to the plugin's `init`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Overrides of the town-wide `[limits]`, field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitOverrides>,
    /// `exclusive` (default): one host at a time, under a fenced lease; right for every role.
    /// `shared`: any number of hosts at once; only for stateless roles (no read-modify-write
    /// of their state or of the town), which then spread over the hosts.
    #[serde(default)]
    pub mode: ServeMode,
    /// Capability grants, as written: `[agents.NAME.exec]` is `grants["exec"]`. Absent: not
    /// granted. Their meaning belongs to the capability registry (`runtime::capabilities`),
    /// which parses and checks them; this layer only keeps them.
    #[serde(flatten)]
    pub grants: BTreeMap<String, toml::Value>,
}

/// The fields of an agent table other than its capability grants.
const AGENT_FIELDS: &[&str] = &["role", "plugin", "nickname", "config", "limits", "mode"];

/// A capability grant is always a table; anything else under an unknown key is a misspelt
/// field. Refused while reading the value, so the error carries the value's line.
struct GrantTable<'a>(&'a str);

impl<'de> serde::de::DeserializeSeed<'de> for GrantTable<'_> {
    type Value = toml::Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<toml::Value, D::Error> {
        let value = toml::Value::deserialize(d)?;
        if !value.is_table() {
            return Err(serde::de::Error::unknown_field(self.0, AGENT_FIELDS));
        }
        Ok(value)
    }
}

// By hand rather than derived: a derived `flatten` would buffer the table and lose the line
// numbers of errors inside it (`limits = { memory_mb = "lots" }` must name its line).
impl<'de> Deserialize<'de> for AgentSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AgentSection, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = AgentSection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an agent table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AgentSection, A::Error> {
                let mut a = AgentSection::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "role" => a.role = Some(map.next_value()?),
                        "plugin" => a.plugin = Some(map.next_value()?),
                        "nickname" => a.nickname = Some(map.next_value()?),
                        "config" => a.config = map.next_value()?,
                        "limits" => a.limits = Some(map.next_value()?),
                        "mode" => a.mode = map.next_value()?,
                        _ => {
                            let value = map.next_value_seed(GrantTable(&key))?;
                            a.grants.insert(key, value);
                        }
                    }
                }
                Ok(a)
            }
        }
        d.deserialize_map(Fields)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServeMode {
    Shared,
    #[default]
    Exclusive,
}

impl Config {
    /// A fresh config for `tt init`.
    pub fn new(name: &str, dir: &Path) -> Config {
        Config {
            town: TownSection {
                name: name.to_string(),
                default_cli: None,
                default_check: None,
            },
            redis: RedisSection::default(),
            host: HostSection::default(),
            limits: Limits::default(),
            tasks: TasksSection::default(),
            retention: RetentionSection::default(),
            repo: None,
            agents: BTreeMap::new(),
            serve: ServeSection::default(),
            llm: LlmSection::default(),
            dir: dir.to_path_buf(),
        }
    }

    /// Finds `tinytown.toml` in `start` or its parents.
    pub fn find(start: &Path) -> Result<PathBuf> {
        let mut dir = Some(start);
        while let Some(d) = dir {
            if d.join(FILE_NAME).is_file() {
                return Ok(d.to_path_buf());
            }
            dir = d.parent();
        }
        Err(error::fail(
            format!("no {FILE_NAME} in {} or its parents", start.display()),
            "run `tt init` to create a town here, or pass --town DIR (or set TT_TOWN)",
        ))
    }

    pub fn load(dir: &Path) -> Result<Config> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            error::fail(
                format!("cannot read {}: {e}", path.display()),
                "run `tt init` to create a town here, or pass --town DIR (or set TT_TOWN)",
            )
        })?;
        let mut config = Config::parse(&text).map_err(|e| {
            error::fail(
                format!("{} is not valid: {e}", path.display()),
                "fix the line and field named above; `tt init --force` writes a fresh file",
            )
        })?;
        config.dir = dir.to_path_buf();
        Ok(config)
    }

    /// Parses and checks the text of a config file. The error names the line and the field.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config =
            toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))?;
        validate_name(&config.town.name)
            .map_err(|e| format!("[town] name: {}", error::one_line(&e)))?;
        for name in config.agents.keys() {
            validate_name(name).map_err(|e| {
                // The name is the bad input: never print its control characters raw.
                format!("[agents.{}]: {}", name.escape_debug(), error::one_line(&e))
            })?;
        }
        config.retention.check()?;
        config.host.check()?;
        if let Some(r) = &config.repo {
            r.check()?;
        }
        config.limits.check("[limits]")?;
        for (name, a) in &config.agents {
            if let Some(o) = &a.limits {
                config
                    .limits
                    .with(o)
                    .check(&format!("[agents.{name}.limits]"))?;
            }
        }
        config.llm.check()?;
        config.llm.check_grants(&config.agents)?;
        if let Some(f) = &config.redis.appendfsync {
            if !matches!(f.as_str(), "always" | "everysec" | "no") {
                return Err(format!(
                    "[redis] appendfsync = {f:?}: use \"always\", \"everysec\" or \"no\""
                ));
            }
        }
        Ok(config)
    }

    pub fn save(&self) -> Result<()> {
        let text = toml::to_string_pretty(self).context("serialising tinytown.toml")?;
        std::fs::write(self.dir.join(FILE_NAME), text)
            .with_context(|| format!("writing {}", self.dir.join(FILE_NAME).display()))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(STATE_DIR)
    }

    /// The town-wide limits with the agent's overrides applied.
    pub fn limits_for(&self, agent: &str) -> Limits {
        match self.agents.get(agent).and_then(|a| a.limits.as_ref()) {
            Some(o) => self.limits.with(o),
            None => self.limits,
        }
    }

    /// The agent's `config` table, as its plugin's `init` gets it.
    /// In a repository town it also has the `[repo]` settings (`RepoSection::init_config`).
    pub fn init_config(&self, agent: &str) -> Vec<(String, String)> {
        let mut init: Vec<(String, String)> = self
            .agents
            .get(agent)
            .map(|a| a.config.clone().into_iter().collect())
            .unwrap_or_default();
        if let Some(r) = &self.repo {
            init.extend(r.init_config());
        }
        init
    }

    /// Resolves a path from the config file (relative to the town dir).
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// The Redis password, if one is configured, from its env var or its 0600 file.
    pub fn redis_password(&self) -> Result<Option<String>> {
        if let Some(var) = &self.redis.password_env {
            return match std::env::var(var) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(error::fail(
                    format!("[redis] password_env names ${var}, which is not set"),
                    format!("export {var}=... before running tt"),
                )),
            };
        }
        if let Some(file) = &self.redis.password_file {
            let path = self.resolve(file);
            let meta = std::fs::metadata(&path).map_err(|e| {
                error::fail(
                    format!("[redis] password_file {}: {e}", path.display()),
                    "create it with the password on its first line, mode 0600",
                )
            })?;
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(error::fail(
                    format!(
                        "[redis] password_file {} is readable by others (mode {:o})",
                        path.display(),
                        meta.permissions().mode() & 0o777
                    ),
                    format!("chmod 600 {}", path.display()),
                ));
            }
            let text = std::fs::read_to_string(&path)?;
            return Ok(Some(text.lines().next().unwrap_or("").to_string()));
        }
        Ok(None)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

#[path = "config_cut.rs"]
mod cut;
