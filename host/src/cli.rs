//! The `tt` command line: argument parsing and printing, nothing else. Every command calls the
//! service layer ([`Town`]) and prints its answer, as text or, with `--json`, as JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::{Config, FILE_NAME, STATE_DIR};
use crate::embedded::Embedded;
use crate::error;
use crate::model::{validate_name, Kind, Task};
use crate::town::{Event, Inbox, Lifecycle, MailItem, Town};

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

#[derive(Args, Debug, Clone, Copy)]
pub struct Json {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a town here: tinytown.toml, .tt/, and a running Redis.
    Init {
        #[arg(long)]
        name: Option<String>,
        /// Overwrite an existing tinytown.toml.
        #[arg(long)]
        force: bool,
    },
    /// Add an agent.
    Spawn {
        name: String,
        #[arg(long, default_value = "worker")]
        role: String,
        /// The role's Wasm component (default: the plugin in its [agents.NAME] section).
        #[arg(long)]
        plugin: Option<PathBuf>,
        #[arg(long)]
        nickname: Option<String>,
    },
    /// List agents with their state, mailbox and workload.
    List {
        #[command(flatten)]
        json: Json,
    },
    /// Stop serving an agent (its mailbox is kept; `tt prune` removes it).
    Kill { name: String },
    /// Pause an agent: its mail waits until `tt resume`.
    Interrupt { name: String },
    /// Resume an interrupted, closed or killed agent.
    Resume { name: String },
    /// Let an agent finish its mailbox, then go cold.
    Close { name: String },
    /// Wait until all tasks are finished and no mail is waiting or in hand.
    Wait {
        /// Give up after this many seconds (exit 1).
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Remove stopped agents; with --all, cold ones too. Unread mail goes to the dead letters.
    Prune {
        #[arg(long)]
        all: bool,
    },
    /// Send a message.
    Send {
        to: String,
        /// The message; `-` reads it from standard input.
        body: String,
        /// Read before anything else in the mailbox.
        #[arg(long)]
        urgent: bool,
        /// For the record; no answer expected.
        #[arg(long, group = "kind")]
        info: bool,
        /// A question.
        #[arg(long, group = "kind")]
        query: bool,
        /// An acknowledgement.
        #[arg(long, group = "kind")]
        ack: bool,
        /// Send as this agent (default: conductor).
        #[arg(long)]
        from: Option<String>,
    },
    /// Show a mailbox without changing it (default: the humans' conductor mailbox).
    Inbox {
        agent: Option<String>,
        /// Every agent's mailbox.
        #[arg(long)]
        all: bool,
        /// Mark the conductor mailbox read (it is the humans'; no host reads it).
        #[arg(long, conflicts_with = "all")]
        clear: bool,
        #[command(flatten)]
        json: Json,
    },
    /// Create a task and assign it, in one step.
    Assign {
        agent: String,
        description: String,
        #[arg(long)]
        from: Option<String>,
    },
    /// List tasks.
    Tasks {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Show or change one task.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Tasks waiting for an owner.
    Backlog {
        #[command(subcommand)]
        command: BacklogCommand,
    },
    /// The town at a glance; --deep adds plugins, hosts and recent events.
    Status {
        #[arg(long)]
        deep: bool,
        #[command(flatten)]
        json: Json,
    },
    /// The town's event history.
    Events {
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        agent: Option<String>,
        /// How many past events to show.
        #[arg(short = 'n', long, default_value_t = 50)]
        count: usize,
        #[command(flatten)]
        json: Json,
    },
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
    /// Measure speed and memory on this machine (a throwaway town under /tmp).
    Bench {
        /// Where the compiled plugins are (default: plugins/dist of the repository).
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// Messages per throughput run.
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// The embedded Redis's AOF fsync policy: always, everysec or no.
        #[arg(long, default_value = crate::db::DEFAULT_APPENDFSYNC)]
        appendfsync: String,
    },
    /// Replace an agent's plugin while the town runs (validated first; between two messages).
    Swap {
        agent: String,
        /// The new component (not needed with --rollback).
        #[arg(required_unless_present = "rollback")]
        plugin: Option<PathBuf>,
        /// Run it beside the live plugin instead: decisions recorded, never applied.
        #[arg(long, conflicts_with = "rollback")]
        shadow: bool,
        /// Go back to the plugin before the last swap.
        #[arg(long)]
        rollback: bool,
    },
    /// Compare a shadow plugin's decisions with the live one's.
    Shadow {
        #[command(subcommand)]
        command: ShadowCommand,
    },
    /// Check or create plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Messages that could not be handled, with the reason.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ShadowCommand {
    /// How many decisions agreed, and the ones that differed.
    Report {
        agent: String,
        #[command(flatten)]
        json: Json,
    },
    /// Make the shadow the live plugin.
    Promote { agent: String },
    /// Stop running the shadow.
    Stop { agent: String },
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Is FILE a component of our world? Which WIT version, which capabilities? Precompiles it.
    Check {
        file: PathBuf,
        /// The role it is meant for (worker and reviewer roles usually need `exec`).
        #[arg(long)]
        role: Option<String>,
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

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    List {
        #[arg(short = 'n', long, default_value_t = 100)]
        count: usize,
        #[command(flatten)]
        json: Json,
    },
    /// Put dead letters back into their agents' mailboxes.
    Retry {
        entries: Vec<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters.
    Drop {
        entries: Vec<String>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    Show {
        id: String,
        #[command(flatten)]
        json: Json,
    },
    Complete {
        id: String,
        #[arg(long)]
        result: String,
    },
    Fail {
        id: String,
        #[arg(long)]
        error: String,
    },
    Cancel {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum BacklogCommand {
    Add {
        description: String,
        /// Comma-separated tags.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    List {
        #[command(flatten)]
        json: Json,
    },
    /// Give a backlog task to an agent (exactly one of several claims wins).
    Claim {
        task: String,
        agent: String,
    },
    Remove {
        task: String,
    },
}

impl Command {
    /// Commands that print and exit (everything but hosts and followers).
    pub fn is_short_lived(&self) -> bool {
        !matches!(
            self,
            Command::Events { follow: true, .. } | Command::Host { .. } | Command::Bench { .. }
        )
    }
}

fn town_dir(cli_town: &Option<PathBuf>) -> Result<PathBuf> {
    match cli_town {
        Some(d) => Ok(d.clone()),
        None => Config::find(&std::env::current_dir()?),
    }
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(cli: Cli) -> Result<()> {
    if let Command::Init { name, force } = &cli.command {
        return init(cli.town.clone(), name.clone(), *force).await;
    }
    if let Command::Bench {
        plugins,
        messages,
        appendfsync,
    } = cli.command
    {
        let plugins = plugins.unwrap_or_else(crate::bench::default_plugins_dir);
        return crate::bench::run(crate::bench::BenchOptions {
            plugins,
            messages,
            appendfsync,
        })
        .await;
    }
    if let Command::Plugin { command } = cli.command {
        return plugin_command(&cli.town, command);
    }
    let dir = town_dir(&cli.town)?;
    if let Command::Shutdown = &cli.command {
        let config = Config::load(&dir)?;
        let stopped = Embedded::new(&config).stop()?;
        println!(
            "{}",
            if stopped {
                "embedded Redis stopped"
            } else {
                "embedded Redis was not running"
            }
        );
        return Ok(());
    }
    let town = Town::open(&dir).await?;
    match cli.command {
        Command::Init { .. }
        | Command::Shutdown
        | Command::Bench { .. }
        | Command::Plugin { .. } => {
            unreachable!("handled above")
        }
        Command::Host {
            until_idle,
            agents,
            name,
        } => {
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
            crate::host::run(std::sync::Arc::new(town), opts).await?;
        }
        Command::Dlq { command } => dlq_command(&town, command).await?,
        Command::Swap {
            agent,
            plugin,
            shadow,
            rollback,
        } => {
            validate_name(&agent)?;
            let started = std::time::Instant::now();
            if rollback {
                let (path, digest) = crate::swap::rollback(&town, &agent).await?;
                println!("{agent} rolled back to {path} ({})", digest.short());
            } else {
                let plugin = plugin.expect("clap requires PLUGIN without --rollback");
                let digest = crate::swap::swap(&town, &agent, &plugin, shadow).await?;
                let what = if shadow { "shadows" } else { "now runs" };
                println!(
                    "{agent} {what} {} ({}), validated in {} ms; hosts switch between two messages",
                    plugin.display(),
                    digest.short(),
                    started.elapsed().as_millis()
                );
            }
        }
        Command::Shadow { command } => match command {
            ShadowCommand::Report { agent, json } => {
                let r = crate::swap::report(&town, &agent).await?;
                if json.json {
                    return print_json(&r);
                }
                println!(
                    "{}: shadow {} ({}): {} decisions compared, {} agreed, {} differed",
                    r.agent,
                    r.shadow.as_deref().unwrap_or("none"),
                    r.shadow_digest
                        .as_deref()
                        .map(|d| &d[..12.min(d.len())])
                        .unwrap_or("-"),
                    r.compared,
                    r.agreed,
                    r.differed.len()
                );
                for d in &r.differed {
                    println!(
                        "  {}\n    live:   {}\n    shadow: {}",
                        d.msg,
                        d.live.replace('\n', "; "),
                        d.shadow.replace('\n', "; ")
                    );
                }
            }
            ShadowCommand::Promote { agent } => {
                let (path, digest) = crate::swap::promote(&town, &agent).await?;
                println!(
                    "{agent} now runs {path} ({}); shadow stopped",
                    digest.short()
                );
            }
            ShadowCommand::Stop { agent } => {
                crate::swap::stop_shadow(&town, &agent).await?;
                println!("{agent}: shadow stopped");
            }
        },
        Command::Spawn {
            name,
            role,
            plugin,
            nickname,
        } => {
            let a = town
                .spawn(&name, &role, plugin.as_deref(), nickname.as_deref())
                .await?;
            let plugin = a.plugin.as_deref().unwrap_or("no plugin yet");
            println!("spawned {} ({}, {plugin})", a.name, a.role);
        }
        Command::List { json } => {
            let agents = town.list().await?;
            if json.json {
                return print_json(&agents);
            }
            if agents.is_empty() {
                println!("no agents; `tt spawn NAME --role ROLE` adds one");
            }
            for a in agents {
                println!(
                    "{:<16} {:<10} {:<11} waiting {:<4} in hand {:<3} tasks {}{}",
                    a.agent.name,
                    a.agent.role,
                    a.agent.state,
                    a.waiting,
                    a.in_flight,
                    a.active_tasks,
                    a.agent
                        .nickname
                        .map(|n| format!("  ({n})"))
                        .unwrap_or_default()
                );
            }
        }
        Command::Kill { name } => report_state(town.lifecycle(&name, Lifecycle::Kill).await?),
        Command::Interrupt { name } => {
            report_state(town.lifecycle(&name, Lifecycle::Interrupt).await?)
        }
        Command::Resume { name } => report_state(town.lifecycle(&name, Lifecycle::Resume).await?),
        Command::Close { name } => report_state(town.lifecycle(&name, Lifecycle::Close).await?),
        Command::Wait { timeout } => {
            town.wait_idle(timeout.map(Duration::from_secs_f64)).await?;
            println!("town is idle");
        }
        Command::Prune { all } => {
            let removed = town.prune(all).await?;
            if removed.is_empty() {
                println!("nothing to prune");
            } else {
                println!("pruned {}", removed.join(", "));
            }
        }
        Command::Send {
            to,
            body,
            urgent,
            info,
            query,
            ack,
            from,
        } => {
            let kind = if info {
                Kind::Info
            } else if query {
                Kind::Query
            } else if ack {
                Kind::Ack
            } else {
                Kind::Task
            };
            let body = if body == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                    error::usage(
                        format!("cannot read the body from stdin: {e}"),
                        "pipe UTF-8 text into `tt send TO -`",
                    )
                })?;
                text
            } else {
                body
            };
            let id = town.send(&to, &body, kind, urgent, from.as_deref()).await?;
            println!("sent {id} to {to}{}", if urgent { " (urgent)" } else { "" });
        }
        Command::Inbox {
            agent,
            all,
            clear,
            json,
        } => {
            if clear {
                let who = agent.as_deref().unwrap_or("conductor");
                if !crate::model::is_conductor(who) {
                    return Err(error::usage(
                        format!("--clear is for the conductor mailbox, not `{who}`"),
                        "agents' mail is acknowledged by the host that handles it",
                    ));
                }
                println!(
                    "marked {} messages read",
                    town.clear_conductor_inbox().await?
                );
                return Ok(());
            }
            let names = if all {
                let mut n = vec!["conductor".to_string()];
                n.extend(town.agent_names().await?);
                n
            } else {
                vec![agent.unwrap_or_else(|| "conductor".into())]
            };
            let mut boxes = Vec::new();
            for n in names {
                boxes.push(town.inbox(&n).await?);
            }
            if json.json {
                return if all {
                    print_json(&boxes)
                } else {
                    print_json(&boxes[0])
                };
            }
            for b in boxes {
                print_inbox(&b);
            }
        }
        Command::Assign {
            agent,
            description,
            from,
        } => {
            let id = town.assign(&agent, &description, from.as_deref()).await?;
            println!("assigned {id} to {agent}");
        }
        Command::Tasks { state, agent, json } => {
            let tasks = town.tasks(state.as_deref(), agent.as_deref()).await?;
            if json.json {
                return print_json(&tasks);
            }
            if tasks.is_empty() {
                println!("no tasks");
            }
            for t in tasks {
                print_task_line(&t);
            }
        }
        Command::Task { command } => task_command(&town, command).await?,
        Command::Backlog { command } => backlog_command(&town, command).await?,
        Command::Status { deep, json } => {
            let status = town.status(if deep { 20 } else { 5 }).await?;
            if json.json {
                return print_json(&status);
            }
            println!("town {} (redis: {})", status.town, status.redis);
            println!(
                "agents: {}   conductor inbox: {}   backlog: {}   dead letters: {}",
                status.agents.len(),
                status.conductor_inbox,
                status.backlog,
                status.dead_letters
            );
            for a in &status.agents {
                print!(
                    "  {:<16} {:<10} {:<11} waiting {:<4} in hand {:<3} tasks {}",
                    a.agent.name,
                    a.agent.role,
                    a.agent.state,
                    a.waiting,
                    a.in_flight,
                    a.active_tasks
                );
                if deep {
                    let digest = a.agent.digest.as_deref().map(|d| &d[..12.min(d.len())]);
                    print!(
                        "  plugin {} @{}",
                        a.agent.plugin.as_deref().unwrap_or("-"),
                        digest.unwrap_or("-")
                    );
                    if let Some(ms) = a.agent.swapped_ms {
                        print!(" swapped {}", format_ms(ms));
                    }
                    if let Some(sh) = &a.agent.shadow {
                        print!("  shadow {sh}");
                    }
                }
                println!();
            }
            let mut states: Vec<_> = status.tasks.iter().collect();
            states.sort();
            let line: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
            println!(
                "tasks: {}",
                if line.is_empty() {
                    "none".into()
                } else {
                    line.join(", ")
                }
            );
            if deep {
                println!("hosts:");
                if status.hosts.is_empty() {
                    println!("  none running");
                }
                for h in &status.hosts {
                    println!("  {}", h);
                }
            }
            println!("recent events:");
            for e in &status.recent_events {
                println!("  {}", format_event(e));
            }
        }
        Command::Events {
            follow,
            agent,
            count,
            json,
        } => {
            let past = town.events(count, agent.as_deref()).await?;
            let mut last = match past.last() {
                Some(e) => e.id.clone(),
                None => town.last_event_id().await?,
            };
            for e in &past {
                print_event(e, json.json)?;
            }
            if follow {
                loop {
                    for e in town.events_after(&last, Duration::from_secs(5)).await? {
                        last = e.id.clone();
                        if agent
                            .as_deref()
                            .is_none_or(|a| crate::town::event_mentions(&e, a))
                        {
                            print_event(&e, json.json)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

async fn init(town: Option<PathBuf>, name: Option<String>, force: bool) -> Result<()> {
    let dir = match town {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let file = dir.join(FILE_NAME);
    if file.exists() && !force {
        return Err(error::fail(
            format!("{} already exists", file.display()),
            "pass --force to overwrite it (agents and tasks in Redis are kept)",
        ));
    }
    let name = match name {
        Some(n) => n,
        None => default_town_name(&dir),
    };
    validate_name(&name)
        .map_err(|_| error::usage(format!("invalid town name {name:?}"), "pass --name NAME"))?;
    let config = Config::new(&name, &dir);
    let previous = std::fs::read(&file).ok();
    config.save()?;
    std::fs::create_dir_all(dir.join(STATE_DIR))?;
    add_to_gitignore(&dir)?;
    let town = match Town::open(&dir).await {
        Ok(t) => t,
        Err(e) => {
            // Leave no half-made town behind: a second `tt init` must not be refused.
            match previous {
                Some(bytes) => std::fs::write(&file, bytes)?,
                None => std::fs::remove_file(&file)?,
            }
            return Err(e);
        }
    };
    let mut c = town.db.conn.clone();
    let _: String = redis::cmd("PING").query_async(&mut c).await?;
    println!(
        "town {name} ready in {} (redis: {})",
        dir.display(),
        town.config
            .redis
            .url
            .as_deref()
            .unwrap_or("embedded, .tt/redis.sock")
    );
    Ok(())
}

fn default_town_name(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('-').to_string();
    if cleaned.is_empty() {
        "town".into()
    } else {
        cleaned.chars().take(64).collect()
    }
}

fn add_to_gitignore(dir: &Path) -> Result<()> {
    let path = dir.join(".gitignore");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    if text
        .lines()
        .any(|l| l.trim() == ".tt/" || l.trim() == ".tt" || l.trim() == "/.tt")
    {
        return Ok(());
    }
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    std::fs::write(&path, format!("{text}{sep}.tt/\n"))?;
    Ok(())
}

async fn task_command(town: &Town, command: TaskCommand) -> Result<()> {
    let t = match command {
        TaskCommand::Show { id, json } => {
            let t = town.need_task(&id).await?;
            if json.json {
                return print_json(&t);
            }
            println!("{} [{}] {}", t.id, t.state, t.description);
            println!("  owner: {}", t.owner.as_deref().unwrap_or("-"));
            println!("  reviewer: {}", t.reviewer.as_deref().unwrap_or("-"));
            println!("  rejections: {}", t.rejections);
            if !t.tags.is_empty() {
                println!("  tags: {}", t.tags.join(", "));
            }
            if let Some(r) = &t.result {
                println!("  result: {r}");
            }
            return Ok(());
        }
        TaskCommand::Complete { id, result } => {
            town.transition(&id, "completed", Some(&result)).await?
        }
        TaskCommand::Fail { id, error } => town.transition(&id, "failed", Some(&error)).await?,
        TaskCommand::Cancel { id } => town.transition(&id, "cancelled", None).await?,
    };
    println!("{} is now {}", t.id, t.state);
    Ok(())
}

async fn backlog_command(town: &Town, command: BacklogCommand) -> Result<()> {
    match command {
        BacklogCommand::Add { description, tags } => {
            let id = town.backlog_add(&description, &tags).await?;
            println!("added {id} to the backlog");
        }
        BacklogCommand::List { json } => {
            let tasks = town.backlog().await?;
            if json.json {
                return print_json(&tasks);
            }
            if tasks.is_empty() {
                println!("backlog is empty");
            }
            for t in tasks {
                print_task_line(&t);
            }
        }
        BacklogCommand::Claim { task, agent } => {
            let t = town.backlog_claim(&task, &agent).await?;
            println!("{} claimed by {}", t.id, t.owner.unwrap_or_default());
        }
        BacklogCommand::Remove { task } => {
            let t = town.backlog_remove(&task).await?;
            println!("{} removed from the backlog ({})", t.id, t.state);
        }
    }
    Ok(())
}

fn plugin_command(town: &Option<PathBuf>, command: PluginCommand) -> Result<()> {
    match command {
        PluginCommand::Check { file, role, json } => {
            // Inside a town, the compiled code goes into its cache, ready for its hosts.
            let cache = town_dir(town)
                .ok()
                .and_then(|d| Config::load(&d).ok())
                .map(|c| c.state_dir().join("cache"));
            let r = crate::plugin::check(&file, cache)?;
            if json.json {
                return print_json(&r);
            }
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
            if let Some(role) = role {
                if matches!(role.as_str(), "worker" | "reviewer") && r.capabilities.is_empty() {
                    println!(
                        "  note: a {role} usually runs programs; this one does not import `exec`"
                    );
                }
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

async fn dlq_command(town: &Town, command: DlqCommand) -> Result<()> {
    let (entries, all, retry) = match command {
        DlqCommand::List { count, json } => {
            let letters = town.dead_letters(count).await?;
            if json.json {
                return print_json(&letters);
            }
            if letters.is_empty() {
                println!("no dead letters");
            }
            for l in letters {
                let f = |k: &str| l.fields.get(k).cloned().unwrap_or_default();
                println!(
                    "{}  {} {} (attempts {}): {}",
                    l.id,
                    f("agent"),
                    if f("orig.id").is_empty() {
                        f("entry")
                    } else {
                        f("orig.id")
                    },
                    f("attempts"),
                    f("reason")
                );
            }
            return Ok(());
        }
        DlqCommand::Retry { entries, all } => (entries, all, true),
        DlqCommand::Drop { entries, all } => (entries, all, false),
    };
    let ids = if all {
        town.dead_letters(usize::MAX)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect()
    } else if entries.is_empty() {
        return Err(error::usage(
            "name the dead letters (ids from `tt dlq list`) or pass --all",
            "tt dlq list",
        ));
    } else {
        entries
    };
    let n = town.dlq_act(&ids, retry).await?;
    println!(
        "{} {n} dead letter{}",
        if retry { "retried" } else { "dropped" },
        if n == 1 { "" } else { "s" }
    );
    Ok(())
}

fn report_state(a: crate::model::Agent) {
    println!("{} is now {}", a.name, a.state);
}

fn print_task_line(t: &Task) {
    let tags = if t.tags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", t.tags.join(","))
    };
    println!(
        "{:<6} {:<10} {:<12} {}{}",
        t.id,
        t.state,
        t.owner.as_deref().unwrap_or("-"),
        t.description.lines().next().unwrap_or(""),
        tags
    );
}

fn print_inbox(b: &Inbox) {
    println!(
        "{}: {} waiting, {} delivered and not yet acknowledged",
        b.agent,
        b.waiting.len(),
        b.delivered.len()
    );
    for m in &b.waiting {
        println!("  waiting    {}", format_mail(m));
    }
    for m in &b.delivered {
        println!(
            "  in hand    {} (host {}, delivery {})",
            format_mail(m),
            m.consumer.as_deref().unwrap_or("?"),
            m.deliveries.unwrap_or(0)
        );
    }
}

fn format_mail(m: &MailItem) -> String {
    match &m.message {
        Some(msg) => format!(
            "{}{} {} from {}{}: {}",
            if msg.urgent { "URGENT " } else { "" },
            msg.id,
            msg.kind.as_str(),
            msg.from,
            msg.task
                .as_deref()
                .map(|t| format!(" [{t}]"))
                .unwrap_or_default(),
            msg.body.replace('\n', " ⏎ ")
        ),
        None => format!(
            "entry {} ({})",
            m.entry,
            m.error.as_deref().unwrap_or("unreadable")
        ),
    }
}

fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

pub fn format_event(e: &Event) -> String {
    let f = |k: &str| e.fields.get(k).cloned().unwrap_or_default();
    let ts = f("ts").parse().map(format_ms).unwrap_or_default();
    let body = match f("type").as_str() {
        "sent" => format!(
            "{} -> {}  {}{}  {}",
            f("from"),
            f("to"),
            f("kind"),
            if f("task").is_empty() {
                String::new()
            } else {
                format!(" [{}]", f("task"))
            },
            f("body").replace('\n', " ⏎ ")
        ),
        "task" => format!(
            "task {}  {} -> {}  by {}",
            f("task"),
            if f("from").is_empty() {
                "new".into()
            } else {
                f("from")
            },
            f("to"),
            f("by")
        ),
        "agent" => format!("agent {}  {} by {}", f("agent"), f("to"), f("by")),
        "handled" => format!(
            "{} handled {} -> {} actions  (plugin {})",
            f("agent"),
            f("msg"),
            f("actions"),
            &f("digest")[..12.min(f("digest").len())]
        ),
        "dead-letter" => format!("{} DEAD LETTER {}: {}", f("agent"), f("msg"), f("body")),
        "swap" => format!(
            "{} now runs {} ({})",
            f("agent"),
            f("plugin"),
            &f("digest")[..12.min(f("digest").len())]
        ),
        "log" => format!("{} [{}] {}", f("agent"), f("level"), f("body")),
        "escalated" => format!("{} ESCALATED: {}", f("agent"), f("body")),
        other => format!("{other} {:?}", e.fields),
    };
    format!("{ts}  {body}")
}

fn print_event(e: &Event, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(e)?);
    } else {
        println!("{}", format_event(e));
    }
    Ok(())
}
