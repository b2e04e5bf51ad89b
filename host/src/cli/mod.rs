//! The `tt` command line: argument parsing and printing, nothing else. Every command calls the
//! service layer ([`Town`], [`crate::town::init`], [`crate::host::swap`], ...) and prints its answer, as
//! text or, with `--json`, as JSON.
//!
//! One file per command group, each with its clap types, its `run` and its printing:
//! [`agents`], [`mail`], [`tasks`], [`backlog`], [`dlq`], [`events`], [`status`], [`usage`], [`swap`],
//! [`plugin`], [`host`], [`init`], [`bench`], [`doctor`], [`serve`] (`tt serve`, `tt mcp`, `tt auth`); [`print`] has what several of them print. This
//! file holds the global options and dispatches.

pub mod agents;
pub mod backlog;
pub mod bench;
pub mod dlq;
pub mod doctor;
pub mod events;
pub mod host;
pub mod init;
pub mod journal;
pub mod mail;
pub mod plugin;
pub mod print;
pub mod replay;
pub mod serve;
pub mod status;
pub mod swap;
pub mod tasks;
pub mod usage;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::store::config::Config;
use crate::town::Town;

pub use print::{format_event, Json};

#[derive(Parser, Debug)]
#[command(
    name = "tt",
    version,
    about = "tinytown: agents with Redis mailboxes and Wasm roles"
)]
pub struct Cli {
    /// The town directory (where tinytown.toml is); default: the current directory or a parent.
    #[arg(long, global = true, env = "TT_TOWN")]
    pub town: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

// The order here is the order of `tt --help`; a flattened group adds its commands in place.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a town here: tinytown.toml, .tt/, and a running Redis.
    Init(init::InitArgs),
    #[command(flatten)]
    Agents(agents::AgentsCommand),
    #[command(flatten)]
    Mail(mail::MailCommand),
    #[command(flatten)]
    Tasks(tasks::TasksCommand),
    /// Tasks waiting for an owner.
    Backlog(backlog::BacklogArgs),
    /// The town at a glance; --deep adds plugins, hosts and recent events.
    Status(status::StatusArgs),
    /// The town's event history.
    Events(events::EventsArgs),
    /// Model calls: tokens and cost by agent, task and model.
    Usage(usage::UsageArgs),
    /// What an agent's recent handlings were asked, asked the world and decided.
    Journal(journal::JournalArgs),
    /// Run a candidate policy on an agent's past handlings; which decisions would change.
    Replay(replay::ReplayArgs),
    #[command(flatten)]
    Host(host::HostCommand),
    /// Measure speed and memory on this machine (a throwaway town under /tmp).
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Swap(swap::SwapCommand),
    /// Check or create plugins.
    Plugin(plugin::PluginArgs),
    /// Messages that could not be handled, with the reason.
    Dlq(dlq::DlqArgs),
    /// Check this installation and town, one line per check with its fix.
    Doctor(doctor::DoctorArgs),
    /// The townhall: REST API, live events, metrics, MCP over HTTP and the dashboard.
    Serve(serve::ServeArgs),
    /// MCP over stdio, for Claude Code and other MCP clients (key: TT_API_KEY).
    Mcp(serve::McpArgs),
    /// API keys for `tt serve` and `tt mcp`.
    Auth(serve::AuthArgs),
}

impl Command {
    /// Commands that print and exit (everything but hosts and followers).
    pub fn is_short_lived(&self) -> bool {
        match self {
            Command::Events(e) => !e.follow,
            Command::Host(h) => h.is_short_lived(),
            Command::Bench(_) | Command::Serve(_) | Command::Mcp(_) => false,
            _ => true,
        }
    }
}

/// The town directory: `--town` (or `TT_TOWN`), else the current directory or the nearest
/// parent with a `tinytown.toml`.
pub(crate) fn town_dir(cli_town: &Option<PathBuf>) -> Result<PathBuf> {
    match cli_town {
        Some(d) => Ok(d.clone()),
        None => Config::find(&std::env::current_dir()?),
    }
}

/// Opens the town in `dir`: its config (every agent's grants checked by the capability
/// registry, so a misspelt grant is refused before anything runs) and its Redis.
pub(crate) async fn open_town(dir: &Path) -> Result<Town> {
    let config = Config::load(dir)?;
    crate::runtime::capabilities::check_config(&config)?;
    Town::connect(config).await
}

pub async fn run(cli: Cli) -> Result<()> {
    // These need no town (init makes one; bench makes its own; plugins work anywhere).
    let command = match cli.command {
        Command::Init(args) => return init::run(cli.town.as_deref(), args).await,
        Command::Bench(args) => return bench::run(args).await,
        Command::Plugin(args) => return plugin::run(&cli.town, args),
        Command::Doctor(args) => return doctor::run(&cli.town, args).await,
        command => command,
    };
    let dir = town_dir(&cli.town)?;
    // `tt host` owns its town; `tt shutdown` must not open (and so start) the Redis it stops.
    if let Command::Host(command) = command {
        return host::run(&dir, command).await;
    }
    let town = match command {
        // They touch Redis only: a big town's agent tables are not read for them.
        Command::Mail(_) | Command::Tasks(_) | Command::Backlog(_) => {
            Town::connect(Config::load_without_agents(&dir)?).await?
        }
        _ => open_town(&dir).await?,
    };
    match command {
        Command::Serve(args) => serve::serve(town, args).await,
        Command::Mcp(args) => serve::mcp(town, args).await,
        Command::Auth(args) => serve::auth(&town, args).await,
        Command::Init(_)
        | Command::Bench(_)
        | Command::Plugin(_)
        | Command::Host(_)
        | Command::Doctor(_) => {
            unreachable!("handled above")
        }
        Command::Agents(c) => agents::run(&town, c).await,
        Command::Mail(c) => mail::run(&town, c).await,
        Command::Tasks(c) => tasks::run(&town, c).await,
        Command::Backlog(args) => backlog::run(&town, args).await,
        Command::Status(args) => status::run(&town, args).await,
        Command::Events(args) => events::run(&town, args).await,
        Command::Usage(args) => usage::run(&town, args).await,
        Command::Journal(args) => journal::run(&town, args).await,
        Command::Replay(args) => replay::run(&town, args).await,
        Command::Swap(c) => swap::run(&town, c).await,
        Command::Dlq(args) => dlq::run(&town, args).await,
    }
}
