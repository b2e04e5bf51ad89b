//! What an agent's recorded plugin resolves to, and how a built-in role is set up from the
//! town's config.
//!
//! A plugin file runs with what tinytown.toml says for its agent: its `config` table and its
//! grants. A built-in role (`builtin:worker`, see [`crate::store::builtin`]) also takes its
//! defaults from tinytown.toml, from the `[town]` settings, so that `tt spawn alice --role
//! worker` works with no agent table at all:
//!
//! - the worker runs `[town] default_cli` (a preset such as `claude`, or a command line) and
//!   asks the town's first reviewer (by name) unless its config names one;
//! - the reviewer runs `[town] default_check` unless its config names a `program`, and tells
//!   the town's first conductor policy of each verdict unless its config names whom to `notify`;
//! - without an `[agents.NAME.exec]` table, the agent is granted exactly that program (and the
//!   preset's confinement), working in the town's `work/` directory, which the built-in roles
//!   share so the reviewer's check sees what the worker wrote.
//!
//! An agent's own `config` keys and `exec` table always win. Grants still come only from
//! tinytown.toml: the defaults are derived from it, never from Redis. Anything missing (no
//! CLI set, the CLI not installed, no reviewer) is an error naming the setting and the fix,
//! raised before the plugin is loaded, so the agent is reported as not servable and its mail is
//! kept.

use std::path::PathBuf;

use anyhow::Result;

use super::capabilities::exec::presets::{self, Preset};
use super::capabilities::{self, Grants};
use crate::store::builtin::{self, Builtin};
use crate::store::config::Config;
use crate::store::error;

/// Where the built-in roles' programs work (relative to the town), when their agent has no
/// `exec` table of its own.
pub const WORKDIR: &str = "work";

/// What an agent's recorded plugin is.
#[derive(Debug, Clone)]
pub enum Source {
    Builtin(&'static Builtin),
    /// A component file (resolved against the town directory).
    File(PathBuf),
}

impl Source {
    /// The source of the plugin an agent records (`builtin:NAME` or a path).
    pub fn of(config: &Config, plugin: &str) -> Result<Source> {
        match builtin::referenced(plugin) {
            Some(name) => builtin::by_name(name).map(Source::Builtin).ok_or_else(|| {
                error::fail(
                    format!("there is no built-in role `{name}`"),
                    format!("the built-ins are: {}", builtin::names()),
                )
            }),
            None => Ok(Source::File(config.resolve(&PathBuf::from(plugin)))),
        }
    }
}

/// An agent's plugin, resolved: where its bytes are, and what it runs with.
pub struct Prepared {
    pub source: Source,
    pub grants: Grants,
    pub init_config: Vec<(String, String)>,
}

/// The agents a built-in talks to by default, by role, in name order (served agents only).
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// The built-in worker asks the first for review.
    pub reviewers: Vec<String>,
    /// The built-in reviewer tells the first of each verdict, so a conductor policy hears
    /// of finished work and hands out the next task.
    pub conductors: Vec<String>,
}

/// Resolves `plugin` for `agent`, with the built-ins' defaults from `peers`.
pub fn prepare(config: &Config, agent: &str, plugin: &str, peers: &Peers) -> Result<Prepared> {
    let reviewers = &peers.reviewers;
    let source = Source::of(config, plugin)?;
    let Source::Builtin(b) = source else {
        return Ok(Prepared {
            source,
            grants: Grants::for_agent(config, agent)?,
            init_config: config.init_config(agent),
        });
    };
    let mut init = config.init_config(agent);
    let has = |init: &[(String, String)], key: &str| {
        init.iter().any(|(k, v)| k == key && !v.trim().is_empty())
    };
    // The program it runs, when the agent's config does not name one.
    let mut default_program = None;
    match b.name {
        "worker" => {
            if !has(&init, "program") {
                let cli = default_command(config, agent, b, "default_cli")?;
                init.push(("program".into(), cli.program.clone()));
                init.push(("args".into(), cli.args.join(" ")));
                default_program = Some(cli);
            }
            if !has(&init, "reviewer") {
                let Some(reviewer) = reviewers.iter().find(|r| *r != agent) else {
                    return Err(error::fail(
                        format!(
                            "agent `{agent}` runs the built-in worker, which asks a reviewer to \
                             review its work, and the town has no agent of role reviewer"
                        ),
                        format!(
                            "spawn one (`tt spawn bob --role reviewer`), or name it: \
                             [agents.{agent}] config = {{ reviewer = \"NAME\" }}"
                        ),
                    ));
                };
                init.push(("reviewer".into(), reviewer.clone()));
            }
        }
        "reviewer" => {
            if !has(&init, "program") {
                let check = default_command(config, agent, b, "default_check")?;
                init.push(("program".into(), check.program.clone()));
                init.push(("args".into(), check.args.join(" ")));
                default_program = Some(check);
            }
            if !has(&init, "notify") {
                if let Some(c) = peers.conductors.iter().find(|c| *c != agent) {
                    init.push(("notify".into(), c.clone()));
                }
            }
        }
        _ => {}
    }
    let own_grants = config
        .agents
        .get(agent)
        .is_some_and(|a| !a.grants.is_empty());
    let grants = match default_program {
        Some(cmd) if !own_grants => default_grants(config, agent, &cmd)?,
        _ => Grants::for_agent(config, agent)?,
    };
    Ok(Prepared {
        source,
        grants,
        init_config: init,
    })
}

/// A command from a `[town]` setting, found on PATH (or in the town).
#[derive(Debug, Clone)]
pub struct Command {
    pub program: String,
    pub args: Vec<String>,
    pub preset: Option<&'static Preset>,
    /// Where the program was found.
    pub path: PathBuf,
}

/// The text of `[town] <setting>` (`default_cli` or `default_check`).
fn setting<'a>(config: &'a Config, setting: &str) -> Option<&'a str> {
    match setting {
        "default_cli" => config.town.default_cli.as_deref(),
        _ => config.town.default_check.as_deref(),
    }
    .filter(|s| !s.trim().is_empty())
}

/// Parses `[town] <setting>`: a preset name (its command) or a command line (split on
/// whitespace, like the roles' `args`). `Ok(None)` when the setting is absent.
pub fn parse_command(config: &Config, name: &str) -> Result<Option<Command>> {
    let Some(text) = setting(config, name) else {
        return Ok(None);
    };
    let preset = presets::by_name(text.trim()).filter(|_| name == "default_cli");
    let words: Vec<String> = match preset {
        Some(p) => p.command.iter().map(|s| s.to_string()).collect(),
        None => text.split_whitespace().map(str::to_string).collect(),
    };
    let (program, args) = words.split_first().expect("a non-blank setting has a word");
    let install = match preset {
        Some(p) => format!("install it ({}), or ", p.install),
        None => String::new(),
    };
    let path = super::capabilities::exec::resolve(&config.dir, program).ok_or_else(|| {
        error::fail(
            format!("[town] {name} = {text:?}: `{program}` is not installed (not found on PATH or in the town)"),
            format!(
                "{install}set [town] {name} in tinytown.toml to {}",
                if name == "default_cli" {
                    format!("a preset ({}) or a command", presets::names())
                } else {
                    "a command on PATH, e.g. \"make test\"".to_string()
                }
            ),
        )
    })?;
    Ok(Some(Command {
        program: program.clone(),
        args: args.to_vec(),
        preset,
        path,
    }))
}

/// The command a built-in runs from `[town] <name>`, or an error saying what to set.
fn default_command(config: &Config, agent: &str, b: &Builtin, name: &str) -> Result<Command> {
    let what = if name == "default_cli" {
        "a coding CLI to run"
    } else {
        "a check to run on the work"
    };
    parse_command(config, name)
        .map_err(|e| {
            let (msg, hint) = match error::user_error(&e) {
                Some(u) => (u.message.clone(), u.hint.clone().unwrap_or_default()),
                None => (error::one_line(&e), String::new()),
            };
            error::fail(
                format!("agent `{agent}` (built-in {}): {msg}", b.name),
                hint,
            )
        })?
        .ok_or_else(|| {
            let example = if name == "default_cli" {
                format!("\"claude\" (or {}, or a command)", presets::names())
            } else {
                "\"make test\" (a command; exit 0 approves)".to_string()
            };
            error::fail(
                format!(
                    "agent `{agent}` runs the built-in {}, which needs {what}, and [town] {name} \
                     is not set",
                    b.name
                ),
                format!(
                    "set {name} = {example} under [town] in tinytown.toml, or give the agent \
                     its own: [agents.{agent}] config = {{ program = \"...\" }}"
                ),
            )
        })
}

/// The grant of an agent that has no `exec` table: exactly `cmd`'s program, confined with its
/// preset, working in the town's shared [`WORKDIR`].
fn default_grants(config: &Config, agent: &str, cmd: &Command) -> Result<Grants> {
    let mut table = toml::map::Map::new();
    table.insert(
        "allow".into(),
        toml::Value::Array(vec![cmd.program.clone().into()]),
    );
    table.insert(
        "env".into(),
        toml::Value::Array(vec!["PATH".into(), "HOME".into()]),
    );
    table.insert("workdir".into(), WORKDIR.into());
    if let Some(p) = cmd.preset {
        table.insert("preset".into(), p.name.into());
    }
    let exec = capabilities::by_name("exec").expect("exec is a capability");
    let grant = exec.grant(config, agent, &toml::Value::Table(table))?;
    Ok(Grants::none().with(exec.name(), grant))
}
