//! The `exec` grant: what `[agents.NAME.exec]` says, and its resolved form.
//!
//! Resolving happens in two parts: [`ExecGrant`] is the program side (which programs, where,
//! for how long), [`ConfinedExec`] adds the [`Sandbox`] every program runs in. A grant built in
//! code as a bare `ExecGrant` still runs its programs confined, with the default sandbox.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Deserializer, Serialize};

use super::presets;
use super::run::resolve;
use super::sandbox::{NetworkConfig, Sandbox};
use crate::store::config::Config;
use crate::store::error;

/// Default time a program may run.
pub const TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// Default cap on each of stdout and stderr.
pub const OUTPUT_BYTES: usize = 1 << 20;

/// `[agents.NAME.exec]` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// Programs the agent may run: paths (relative to the town dir) or names found on PATH.
    /// Matched on the resolved, canonical path.
    pub allow: Vec<String>,
    /// Environment variables passed through; everything else is cleared.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (relative to the town dir); default `.tt/work/<agent>`.
    pub workdir: Option<PathBuf>,
    pub timeout_ms: Option<u64>,
    pub output_bytes: Option<usize>,
    /// `"on"` (the default): every program runs confined; `"off"`: as the host runs.
    pub sandbox: Option<String>,
    /// The lowest Landlock ABI the kernel must offer (default and minimum with a network rule:
    /// 4); below it the grant does not resolve and the agent does not start.
    pub sandbox_abi: Option<u32>,
    /// What coding CLIs need (`claude`, `codex`, `aider`, `gemini`): one name or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub preset: Vec<String>,
    /// More paths the program may read (and execute): relative to the town dir, or `~/...`.
    #[serde(default)]
    pub read: Vec<String>,
    /// More paths the program may write (and read), besides its working directory.
    #[serde(default)]
    pub write: Vec<String>,
    /// `"none"` (the default), `"full"`, or the outbound TCP ports allowed: `[443]`.
    pub network: Option<NetworkConfig>,
    /// RLIMIT_AS of the program (and of each process it starts), in MiB.
    pub memory_mb: Option<u64>,
    /// RLIMIT_CPU of the program (and of each process it starts), in seconds.
    pub cpu_secs: Option<u64>,
}

/// `preset = "claude"` or `preset = ["claude", "aider"]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d).map_err(|_| {
        serde::de::Error::custom("preset: expected a preset name or a list of names")
    })? {
        OneOrMany::One(s) => Ok(vec![s]),
        OneOrMany::Many(v) => Ok(v),
    }
}

#[derive(Debug, Clone)]
pub struct ExecGrant {
    /// Canonical paths of the programs allowed.
    pub allow: Vec<PathBuf>,
    /// Variables passed through, with their values taken when the host started.
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub town_dir: PathBuf,
    pub timeout: Duration,
    pub output_bytes: usize,
}

impl ExecGrant {
    /// Resolves an agent's grant from tinytown.toml; errors name the entry that does not exist.
    /// The sandbox fields are not looked at here: [`ConfinedExec::from_config`] resolves both.
    pub fn from_config(config: &Config, agent: &str, grant: &ExecConfig) -> Result<ExecGrant> {
        let mut allow = Vec::new();
        for entry in &grant.allow {
            let resolved = resolve(&config.dir, entry).ok_or_else(|| {
                error::fail(
                    format!("[agents.{agent}.exec] allow: `{entry}` does not exist"),
                    "list programs by a path relative to the town directory or a name on PATH",
                )
            })?;
            allow.push(resolved);
        }
        let env = grant
            .env
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
            .collect();
        let workdir = match &grant.workdir {
            Some(w) => config.resolve(w),
            None => config.state_dir().join("work").join(agent),
        };
        std::fs::create_dir_all(&workdir).map_err(|e| {
            error::fail(
                format!("[agents.{agent}.exec] workdir {}: {e}", workdir.display()),
                "point workdir at a directory tt can create",
            )
        })?;
        Ok(ExecGrant {
            allow,
            env,
            workdir,
            town_dir: config.dir.clone(),
            timeout: Duration::from_millis(grant.timeout_ms.unwrap_or(TIMEOUT_MS)),
            output_bytes: grant.output_bytes.unwrap_or(OUTPUT_BYTES),
        })
    }
}

/// The resolved `[agents.NAME.exec]`: the programs and the sandbox they run in. This is what
/// the host grants; its [`ConfinedExec::describe`] is the line to show for the agent.
#[derive(Debug, Clone)]
pub struct ConfinedExec {
    pub exec: ExecGrant,
    pub sandbox: Sandbox,
}

impl ConfinedExec {
    /// Resolves the whole grant. Fails closed: a confined grant on a kernel without the
    /// Landlock ABI it needs does not resolve (the error names the setting), so the agent
    /// does not start rather than run its programs unconfined.
    pub fn from_config(config: &Config, agent: &str, grant: &ExecConfig) -> Result<ConfinedExec> {
        Sandbox::check(agent, grant)?;
        let mut grant = grant.clone();
        for p in presets::named(&grant.preset) {
            for var in p.env {
                if !grant.env.iter().any(|e| e == var) {
                    grant.env.push(var.to_string());
                }
            }
        }
        let mut exec = ExecGrant::from_config(config, agent, &grant)?;
        let sandbox = Sandbox::resolve(config, agent, &grant, &mut exec)?;
        Ok(ConfinedExec { exec, sandbox })
    }

    /// One line: how the agent's programs are confined.
    pub fn describe(&self) -> String {
        self.sandbox.describe()
    }
}
