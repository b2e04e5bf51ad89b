//! `tt plugin check|list|export|new`: checking a component against our world, the built-in
//! roles, and new plugin projects.
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
    /// The built-in roles: name, digest, WIT version, what each needs.
    List {
        #[command(flatten)]
        json: Json,
    },
    /// Write a built-in role out as a starting point: its Rust project (as `tt plugin new`
    /// writes it) and its component DIR/NAME.wasm.
    Export {
        /// worker, reviewer or conductor.
        name: String,
        dir: PathBuf,
        /// Only the component.
        #[arg(long, conflicts_with = "source")]
        component: bool,
        /// Only the source project.
        #[arg(long)]
        source: bool,
    },
    /// Create a plugin project that builds with one command.
    New {
        name: String,
        #[arg(long)]
        lang: String,
        #[arg(long, default_value = "worker")]
        role: String,
        /// The variant that asks a model through the host (`--lang rust --role reviewer`
        /// or `--lang python --role worker`); the agent needs an `[agents.NAME.llm]` grant.
        #[arg(long)]
        llm: bool,
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
        PluginCommand::List { json } => {
            let cache = super::town_dir(town)
                .ok()
                .and_then(|d| Config::load(&d).ok())
                .map(|c| c.state_dir().join("cache"));
            let list = builtins(cache)?;
            if json.json {
                return print_json(&list);
            }
            for b in &list {
                println!(
                    "{:<10} builtin:{:<10} tinytown:agent@{}  digest {}  {}",
                    b.name, b.name, b.wit_version, b.digest, b.summary
                );
            }
        }
        PluginCommand::Export {
            name,
            dir,
            component,
            source,
        } => {
            let b = crate::store::builtin::by_name(&name).ok_or_else(|| {
                crate::store::error::fail(
                    format!("there is no built-in role `{name}`"),
                    format!(
                        "the built-ins are: {} (`tt plugin list`)",
                        crate::store::builtin::names()
                    ),
                )
            })?;
            use crate::scaffold::Export;
            let what = match (component, source) {
                (true, _) => Export::Component,
                (_, true) => Export::Source,
                _ => Export::Both,
            };
            let files = crate::scaffold::export(&dir, b, what)?;
            println!(
                "exported builtin:{name} ({} files) to {}",
                files.len(),
                dir.display()
            );
            if what != Export::Component {
                println!("build it with: (cd {} && bash build.sh)", dir.display());
            }
        }
        PluginCommand::New {
            name,
            lang,
            role,
            llm,
        } => {
            let dir = crate::scaffold::new_plugin_with(
                &std::env::current_dir()?,
                &name,
                &lang,
                &role,
                llm,
            )?;
            println!(
                "created {}; build it with: (cd {} && bash build.sh)",
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// One built-in role, as `tt plugin list` shows it.
#[derive(Debug, serde::Serialize)]
pub struct BuiltinInfo {
    pub name: String,
    pub plugin: String,
    pub digest: String,
    pub wit_version: String,
    pub world: String,
    pub capabilities: Vec<String>,
    pub bytes: usize,
    pub summary: String,
}

/// Every built-in, checked (and compiled into `cache`, when in a town).
fn builtins(cache: Option<PathBuf>) -> Result<Vec<BuiltinInfo>> {
    let mut out = Vec::new();
    for b in crate::store::builtin::BUILTINS {
        let r = crate::runtime::check_bytes(
            std::path::Path::new(&b.reference()),
            b.bytes,
            cache.clone(),
        )?;
        out.push(BuiltinInfo {
            name: b.name.into(),
            plugin: b.reference(),
            digest: r.digest,
            wit_version: r.wit_version,
            world: r.world,
            capabilities: r.capabilities,
            bytes: r.bytes,
            summary: b.summary.into(),
        });
    }
    Ok(out)
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
