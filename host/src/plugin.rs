//! Plugin identity: a component is known by the sha256 of its bytes.

use std::fmt;

use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The first 12 hex digits, for people.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What `tt plugin check` says about a file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub path: String,
    pub digest: String,
    pub bytes: usize,
    /// `agent` or `agent-exec`: the world it fits.
    pub world: String,
    pub wit_version: String,
    /// Capabilities it needs granted (`exec`).
    pub capabilities: Vec<String>,
    pub wasi_imports: Vec<String>,
    pub exports_init: bool,
    /// Where the compiled code was cached, if a town's cache was at hand.
    pub cached_at: Option<String>,
    pub compile_ms: u128,
}

/// Checks that `path` is a component of our world and precompiles it into `cache_dir`.
pub fn check(
    path: &std::path::Path,
    cache_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<CheckReport> {
    use std::sync::Arc;

    use crate::runtime::{Grants, Runtime};
    let bytes = std::fs::read(path).map_err(|e| {
        crate::error::fail(
            format!("{}: {e}", path.display()),
            "check the path of the plugin file",
        )
    })?;
    crate::runtime::check_is_component(path, &bytes)?;
    let runtime = Runtime::new(cache_dir.clone(), false)?;
    let started = std::time::Instant::now();
    // Every capability granted, so the report can say which ones it needs.
    let tmp = std::env::temp_dir();
    let grants = Grants {
        exec: Some(Arc::new(crate::exec::ExecGrant {
            allow: vec![],
            env: vec![],
            workdir: tmp.clone(),
            town_dir: tmp,
            timeout: std::time::Duration::from_secs(1),
            output_bytes: 0,
        })),
    };
    let plugin = runtime.load("check", path, &grants)?;
    let compile_ms = started.elapsed().as_millis();
    let ours: Vec<&String> = plugin
        .imports
        .iter()
        .filter(|i| i.starts_with("tinytown:agent/"))
        .collect();
    let capabilities: Vec<String> = ours
        .iter()
        .filter(|i| i.starts_with("tinytown:agent/exec"))
        .map(|_| "exec".to_string())
        .collect();
    let wit_version = ours
        .first()
        .and_then(|i| i.split_once('@'))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| crate::runtime::WIT_VERSION.to_string());
    let cached_at = cache_dir.map(|d| d.display().to_string());
    Ok(CheckReport {
        path: path.display().to_string(),
        digest: plugin.digest.to_string(),
        bytes: bytes.len(),
        world: if capabilities.is_empty() {
            "agent".into()
        } else {
            "agent-exec".into()
        },
        wit_version,
        capabilities,
        wasi_imports: plugin
            .imports
            .iter()
            .filter(|i| i.starts_with("wasi:"))
            .cloned()
            .collect(),
        exports_init: plugin.has_init(),
        cached_at,
        compile_ms,
    })
}
