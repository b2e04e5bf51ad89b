//! `tt plugin check|new`: checking a component against our world, and new plugin projects.
//! Works outside a town; inside one, `check` precompiles into the town's cache.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::print::{print_json, Json};
use crate::store::config::Config;

#[derive(Args, Debug)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Is FILE a component of our world? Which WIT version, which capabilities? Precompiles it.
    Check {
        file: PathBuf,
        /// The role it is meant for (worker and reviewer roles usually need `exec`).
        #[arg(long)]
        role: Option<String>,
        /// In a town: check it against this agent's grants, and show what each allows (for
        /// `exec`, the program's confinement).
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Create a plugin project that builds with one command.
    New {
        name: String,
        #[arg(long)]
        lang: String,
        #[arg(long, default_value = "worker")]
        role: String,
    },
}

/// `town` is the global `--town`, if given.
pub fn run(town: &Option<PathBuf>, args: PluginArgs) -> Result<()> {
    match args.command {
        PluginCommand::Check {
            file,
            role,
            agent,
            json,
        } => {
            // Inside a town, the compiled code goes into its cache, ready for its hosts.
            let config = match (&agent, super::town_dir(town)) {
                (Some(_), dir) => Some(Config::load(&dir?)?),
                (None, dir) => dir.ok().and_then(|d| Config::load(&d).ok()),
            };
            let cache = config.as_ref().map(|c| c.state_dir().join("cache"));
            let mut r = crate::runtime::check(&file, cache)?;
            if let (Some(agent), Some(config)) = (&agent, &config) {
                r.fit(config, agent)?;
            }
            if json.json {
                print_json(&r)?;
            } else {
                print_report(&r, role.as_deref());
            }
            if let Some(fit) = r.agent.as_ref().filter(|f| !f.missing.is_empty()) {
                let cap = &fit.missing[0];
                let example = crate::runtime::capabilities::by_name(cap)
                    .map(|c| c.grant_example(&fit.name))
                    .unwrap_or_default();
                return Err(crate::store::error::fail(
                    format!(
                        "agent `{}` is not granted `{}`, which {} imports, so it would not load",
                        fit.name,
                        fit.missing.join("`, `"),
                        r.path
                    ),
                    format!("grant it in tinytown.toml: {example}"),
                ));
            }
        }
        PluginCommand::New { name, lang, role } => {
            let dir = crate::scaffold::new_plugin(&std::env::current_dir()?, &name, &lang, &role)?;
            println!(
                "created {}; build it with: (cd {} && bash build.sh)",
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

fn print_report(r: &crate::runtime::CheckReport, role: Option<&str>) {
    println!(
        "{}: a tinytown:agent@{} component (world `{}`)",
        r.path, r.wit_version, r.world
    );
    println!(
        "  digest {}  ({} bytes, compiled in {} ms)",
        r.digest, r.bytes, r.compile_ms
    );
    println!(
        "  capabilities: {}",
        if r.capabilities.is_empty() {
            "none".to_string()
        } else {
            r.capabilities.join(", ")
        }
    );
    println!(
        "  exports init: {}",
        if r.exports_init { "yes" } else { "no (fine)" }
    );
    println!("  WASI imports: {}", r.wasi_imports.len());
    if let Some(c) = &r.cached_at {
        println!("  precompiled into {c}");
    }
    if let Some(fit) = &r.agent {
        for g in &fit.granted {
            println!("  agent `{}`: {g}", fit.name);
        }
        for m in &fit.missing {
            println!("  agent `{}`: `{m}` NOT granted", fit.name);
        }
    }
    if let Some(role) = role {
        if matches!(role, "worker" | "reviewer") && r.capabilities.is_empty() {
            println!("  note: a {role} usually runs programs; this one does not import `exec`");
        }
    }
}
