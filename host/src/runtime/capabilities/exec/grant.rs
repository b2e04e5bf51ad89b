//! The `exec` grant: what `[agents.NAME.exec]` says, and its resolved form.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::run::resolve;
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
