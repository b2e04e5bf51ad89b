//! `tt doctor [--json]`: checks an installation and a town, one line per check with its fix.
//!
//! It works anywhere: outside a town it checks what `tt` itself needs (`redis-server`) and
//! says how to make a town. Inside one it checks the config, the embedded server's private
//! directories, that Redis answers with the configured credentials, the compiled-code cache,
//! that `[host] max_instances` fits the machine's limit on memory mappings, every program the
//! town may run, the guest toolchains of plugin projects in the town, and every agent's plugin
//! as a host would load it (compiled, linked with its grants, `init` passed), with its
//! programs' confinement. A check that cannot run because an earlier one
//! failed (no config, no Redis) is not reported: its cause is. The exit status is 1 unless
//! every check passed. The checks themselves are in [`checks`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

mod checks;
use super::print::{print_json, Json};
use crate::store::config::{Config, RedisTarget};
use crate::store::error;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub json: Json,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked: `redis-server`, `tinytown.toml`, `agent alice: plugin`, ...
    pub check: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            check: check.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A failure from an error: its message, and its hint as the fix.
    pub fn from_error(check: impl Into<String>, e: &anyhow::Error, fix: &str) -> Check {
        match error::user_error(e) {
            Some(u) => Check::fail(
                check,
                u.message.clone(),
                u.hint.clone().unwrap_or(fix.into()),
            ),
            None => Check::fail(check, error::one_line(e), fix),
        }
    }
}

/// `town` is the global `--town`, if given.
pub async fn run(town: &Option<PathBuf>, args: DoctorArgs) -> Result<()> {
    let checks = diagnose(town).await;
    if args.json.json {
        let ok = checks.iter().all(|c| c.ok);
        print_json(&serde_json::json!({ "ok": ok, "checks": checks }))?;
    } else {
        for c in &checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            match &c.fix {
                Some(fix) => println!("{mark}  {}: {}; fix: {fix}", c.check, c.detail),
                None => println!("{mark}  {}: {}", c.check, c.detail),
            }
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        return Err(error::fail(
            format!("{failed} of {} checks failed", checks.len()),
            "each line marked FAIL says what to fix",
        ));
    }
    Ok(())
}

/// Every check that applies, in order.
async fn diagnose(town: &Option<PathBuf>) -> Vec<Check> {
    let mut out = Vec::new();
    let dir = super::town_dir(town);
    let config = match dir {
        Err(e) => {
            out.push(checks::redis_server());
            out.push(Check::from_error("tinytown.toml", &e, "run `tt init`"));
            return out;
        }
        Ok(dir) => Config::load(&dir).and_then(|c| {
            crate::runtime::capabilities::check_config(&c)?;
            Ok(c)
        }),
    };
    let config = match config {
        Ok(c) => {
            out.push(Check::pass(
                "tinytown.toml",
                format!(
                    "{} is valid (town {})",
                    c.dir.join(crate::store::config::FILE_NAME).display(),
                    c.town.name
                ),
            ));
            c
        }
        Err(e) => {
            out.push(checks::redis_server());
            out.push(Check::from_error(
                "tinytown.toml",
                &e,
                "fix the file, or `tt init --force`",
            ));
            return out;
        }
    };
    if matches!(config.redis.target(), RedisTarget::Embedded { .. }) {
        out.push(checks::redis_server());
    }
    let town = checks::redis(&config, &mut out).await;
    if matches!(config.redis.target(), RedisTarget::Embedded { .. }) {
        out.extend(checks::private_dirs(&config));
    }
    out.push(checks::cache(&config));
    out.push(checks::instances(&config));
    out.extend(checks::programs(&config));
    out.extend(checks::toolchains(&config));
    if let Some(town) = town {
        out.extend(checks::agents(&town).await);
    }
    out
}
