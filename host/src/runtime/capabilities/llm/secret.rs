//! A provider's API key, and where it comes from.
//!
//! [`Secret`] is the only holder of a key in the host: its `Debug` and `Display` print
//! `[redacted]`, it does not serialise, and [`Secret::scrub`] removes it from any text that
//! leaves the capability (a provider's error message that echoes the key, a record). Only the
//! client's request builder calls [`Secret::expose`].

use std::path::Path;

use anyhow::Result;

use crate::store::error;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(key: impl Into<String>) -> Secret {
        Secret(key.into())
    }

    /// The key itself, for the request header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced by `[redacted]`.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_string();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads the key of `[llm.providers.NAME]` from its environment variable or its file (which must
/// be readable by its owner only). `None`: the provider takes no key (a local server).
pub fn read_key(
    town_dir: &Path,
    provider: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>> {
    let t = format!("[llm.providers.{provider}]");
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
            _ => Err(error::fail(
                format!("{t} api_key_env names ${var}, which is not set (or empty)"),
                format!("export {var}=... in the environment of `tt host`"),
            )),
        };
    }
    let Some(file) = file else {
        return Ok(None);
    };
    let path = if file.is_absolute() {
        file.to_path_buf()
    } else {
        town_dir.join(file)
    };
    let meta = std::fs::metadata(&path).map_err(|e| {
        error::fail(
            format!("{t} api_key_file {}: {e}", path.display()),
            "create it with the key on its first line, mode 0600",
        )
    })?;
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(error::fail(
            format!(
                "{t} api_key_file {} is readable by others (mode {mode:o})",
                path.display()
            ),
            format!("chmod 600 {}", path.display()),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        error::fail(
            format!("{t} api_key_file {}: {e}", path.display()),
            "make it a text file with the key on its first line",
        )
    })?;
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        return Err(error::fail(
            format!("{t} api_key_file {} is empty", path.display()),
            "put the key on its first line",
        ));
    }
    Ok(Some(Secret::new(key)))
}
