//! `tt host` and `tt shutdown`: running the town, and stopping its embedded Redis.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;

use crate::store::config::Config;
use crate::store::embedded::Embedded;
use crate::store::error;
use crate::store::model::validate_name;

// Flattened into the top-level command: each variant is a `tt` command.
#[derive(Subcommand, Debug)]
pub enum HostCommand {
    /// Stop the embedded Redis of this town.
    Shutdown,
    /// Run the town: serve agents' mailboxes with their Wasm roles.
    Host {
        /// Exit once every served mailbox is empty and nothing is in flight.
        #[arg(long)]
        until_idle: bool,
        /// Serve only these agents (repeatable).
        #[arg(long = "agent")]
        agents: Vec<String>,
        /// This host's name (default: the machine's host name); keep it stable across restarts.
        #[arg(long)]
        name: Option<String>,
    },
}

impl HostCommand {
    /// `tt host` runs until stopped (or idle); `tt shutdown` prints and exits.
    pub fn is_short_lived(&self) -> bool {
        matches!(self, HostCommand::Shutdown)
    }
}

/// `dir` is the town directory.
pub async fn run(dir: &Path, command: HostCommand) -> Result<()> {
    match command {
        HostCommand::Shutdown => {
            // Only the config: opening the town would start its embedded Redis.
            let config = Config::load(dir)?;
            let stopped = Embedded::new(&config).stop()?;
            println!(
                "{}",
                if stopped {
                    "embedded Redis stopped"
                } else {
                    "embedded Redis was not running"
                }
            );
        }
        HostCommand::Host {
            until_idle,
            agents,
            name,
        } => {
            let town = super::open_town(dir).await?;
            for a in &agents {
                validate_name(a)?;
            }
            let name = name.unwrap_or_else(crate::host::default_host_name);
            validate_name(&name).map_err(|_| {
                error::usage(format!("invalid host name {name:?}"), "pass --name NAME")
            })?;
            let opts = crate::host::HostOptions {
                name,
                until_idle,
                agents,
            };
            crate::host::run(Arc::new(town), opts).await?;
        }
    }
    Ok(())
}
