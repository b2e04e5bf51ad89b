//! `tt init`: parses and prints; [`crate::town::init`] creates the town.

use std::path::Path;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct InitArgs {
    #[arg(long)]
    pub name: Option<String>,
    /// Overwrite an existing tinytown.toml.
    #[arg(long)]
    pub force: bool,
    /// `[town] default_cli`: the coding CLI the built-in worker runs: claude (default), codex,
    /// aider, gemini, or a command line.
    #[arg(long)]
    pub cli: Option<String>,
    /// `[town] default_check`: the check the built-in reviewer runs on the work (a command
    /// line; exit 0 approves), e.g. "make test".
    #[arg(long)]
    pub check: Option<String>,
}

/// `town` is the global `--town`: the directory to make a town of (default: the current one).
pub async fn run(town: Option<&Path>, args: InitArgs) -> Result<()> {
    let dir = match town {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir()?,
    };
    let defaults = crate::town::init::Defaults {
        cli: args.cli,
        check: args.check,
    };
    let t = crate::town::init::init(&dir, args.name.as_deref(), args.force, defaults).await?;
    println!(
        "town {} ready in {} (redis: {})",
        t.name,
        t.dir.display(),
        t.redis_url.as_deref().unwrap_or("embedded, .tt/redis.sock")
    );
    Ok(())
}
