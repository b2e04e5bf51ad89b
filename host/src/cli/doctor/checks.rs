//! The checks of `tt doctor`, each returning [`Check`]s; [`super`] orders and prints them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::Check;
use crate::runtime::builtin::{self, Source};
use crate::runtime::{Grants, NoTown, Runtime};
use crate::store::config::Config;
use crate::store::embedded::{find_redis_server, Embedded};
use crate::town::Town;

/// The oldest Redis tinytown runs on (XAUTOCLAIM with a cursor, XTRIM MINID, Redis 7 streams).
const REDIS_MAJOR: u32 = 7;

/// `redis-server` on PATH (or `$TT_REDIS_SERVER`), and its version.
pub fn redis_server() -> Check {
    const NAME: &str = "redis-server";
    let path = match find_redis_server() {
        Ok(p) => p,
        Err(e) => return Check::from_error(NAME, &e, "install redis-server"),
    };
    let out = std::process::Command::new(&path).arg("--version").output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            return Check::fail(
                NAME,
                format!("{} --version exited with {}", path.display(), o.status),
                "reinstall it: sudo apt-get install --reinstall redis-server",
            )
        }
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot run {}: {e}", path.display()),
                "check that it is executable, or reinstall it",
            )
        }
    };
    // "Redis server v=7.0.15 sha=... malloc=jemalloc-5.3.0 bits=64 build=..."
    let version = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("")
        .to_string();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < REDIS_MAJOR {
        return Check::fail(
            NAME,
            format!("{} is version {version:?}", path.display()),
            format!("tinytown needs Redis {REDIS_MAJOR}.0 or newer: install a newer redis-server"),
        );
    }
    Check::pass(NAME, format!("{version} ({})", path.display()))
}

/// The town's Redis answers, with its credentials (the embedded one is started if need be, as
/// any `tt` command would). Returns the open town.
pub async fn redis(config: &Config, out: &mut Vec<Check>) -> Option<Town> {
    let what = format!("redis ({})", config.redis.describe());
    let connect = tokio::time::timeout(Duration::from_secs(20), Town::connect(config.clone()));
    match connect.await {
        Ok(Ok(town)) => {
            let mut c = town.db.conn.clone();
            let info: redis::RedisResult<String> =
                redis::cmd("INFO").arg("server").query_async(&mut c).await;
            let version = info
                .ok()
                .and_then(|i| {
                    i.lines()
                        .find_map(|l| l.strip_prefix("redis_version:").map(str::to_string))
                })
                .unwrap_or_else(|| "?".into());
            let auth = match (
                &config.redis.username,
                config.redis.password_env.is_some() || config.redis.password_file.is_some(),
            ) {
                (Some(u), _) => format!(", as ACL user {u}"),
                (None, true) => ", with its password".into(),
                (None, false) => String::new(),
            };
            out.push(Check::pass(
                &what,
                format!("answers (Redis {version}){auth}"),
            ));
            Some(town)
        }
        Ok(Err(e)) => {
            out.push(Check::from_error(
                &what,
                &e,
                "check [redis] url, username and password_env / password_file",
            ));
            None
        }
        Err(_) => {
            out.push(Check::fail(
                &what,
                "no answer within 20 s",
                "check that the server runs and that [redis] url points at it",
            ));
            None
        }
    }
}

/// The embedded server's directories and socket: ours, and closed to everyone else.
pub fn private_dirs(config: &Config) -> Vec<Check> {
    let embedded = Embedded::new(config);
    let uid = unsafe { libc::getuid() };
    let mut paths: Vec<PathBuf> = vec![embedded.dir.clone(), embedded.dir.join("data")];
    let socket = embedded.socket();
    if let Some(parent) = socket.parent().filter(|p| *p != embedded.dir) {
        paths.push(parent.to_path_buf());
    }
    paths.push(socket);
    let mut out = Vec::new();
    for p in paths {
        let name = format!("private {}", p.display());
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            // Made (mode 0700) when the embedded server first starts.
            Err(_) => continue,
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.uid() != uid {
            out.push(Check::fail(
                &name,
                format!("owned by uid {}, not by you (uid {uid})", meta.uid()),
                format!("chown {uid} {}", p.display()),
            ));
        } else if mode & 0o077 != 0 {
            out.push(Check::fail(
                &name,
                format!("mode {mode:o}: others can reach the town's Redis"),
                format!("chmod go-rwx {}", p.display()),
            ));
        } else {
            out.push(Check::pass(&name, format!("mode {mode:o}, yours")));
        }
    }
    out
}

/// The compiled-code cache can be written.
pub fn cache(config: &Config) -> Check {
    let dir = config.state_dir().join("cache");
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let r = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&probe, b"ok"))
        .and_then(|_| std::fs::remove_file(&probe));
    match r {
        Ok(()) => Check::pass("cache", format!("{} is writable", dir.display())),
        Err(e) => Check::fail(
            "cache",
            format!("cannot write {}: {e}", dir.display()),
            format!("make it writable: chmod u+rwx {}", dir.display()),
        ),
    }
}

/// `[host] max_instances` fits this machine's limit on a process's memory mappings; past it,
/// a host keeps fewer instances alive (see `host::slots`).
pub fn instances(config: &Config) -> Check {
    let fit = crate::host::fit_instances(config.host.max_instances);
    let name = "[host] max_instances";
    if fit.lowered() {
        let (what, fix) = fit.explain();
        return Check::fail(name, what, fix);
    }
    match fit.limit {
        Some(limit) => Check::pass(
            name,
            format!(
                "{} live instances fit vm.max_map_count = {limit}",
                fit.configured
            ),
        ),
        None => Check::pass(
            name,
            format!(
                "{} (this system does not say its mapping limit)",
                fit.configured
            ),
        ),
    }
}

/// Every program the town may run: `[town] default_cli` and `default_check`, and every
/// agent's `exec` allow-list.
pub fn programs(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    for setting in ["default_cli", "default_check"] {
        let name = format!("[town] {setting}");
        match builtin::parse_command(config, setting) {
            Ok(Some(cmd)) => out.push(Check::pass(
                &name,
                format!("`{}` is {}", cmd.program, cmd.path.display()),
            )),
            Ok(None) => {}
            Err(e) => out.push(Check::from_error(
                &name,
                &e,
                "install it or change the setting",
            )),
        }
    }
    for (agent, section) in &config.agents {
        let Some(allow) = section
            .grants
            .get("exec")
            .and_then(|t| t.get("allow"))
            .and_then(|a| a.as_array())
        else {
            continue;
        };
        for entry in allow.iter().filter_map(|e| e.as_str()) {
            let name = format!("[agents.{agent}.exec] allow `{entry}`");
            match crate::runtime::capabilities::exec::resolve(&config.dir, entry) {
                Some(p) => out.push(Check::pass(&name, format!("found: {}", p.display()))),
                None => out.push(Check::fail(
                    &name,
                    "not found (on PATH, or relative to the town)",
                    "install it, or fix the path in tinytown.toml",
                )),
            }
        }
    }
    out
}

/// The toolchains of the plugin projects in the town (folders with a `build.sh` and a
/// `wit/agent.wit`, as `tt plugin new` and `tt plugin export` write them), one or two levels
/// down.
pub fn toolchains(config: &Config) -> Vec<Check> {
    let mut projects = Vec::new();
    for d in subdirs(&config.dir) {
        if is_project(&d) {
            projects.push(d);
        } else {
            projects.extend(subdirs(&d).into_iter().filter(|d| is_project(d)));
        }
    }
    projects.sort();
    projects
        .iter()
        .map(|p| toolchain_of(&config.dir, p))
        .collect()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect()
}

fn is_project(d: &Path) -> bool {
    d.join("build.sh").is_file() && d.join("wit/agent.wit").is_file()
}

fn on_path(program: &str) -> bool {
    crate::runtime::capabilities::exec::resolve(Path::new("/"), program).is_some()
}

/// What a project's `build.sh` needs before it can install the rest itself.
fn toolchain_of(town: &Path, project: &Path) -> Check {
    let shown = project
        .strip_prefix(town)
        .unwrap_or(project)
        .display()
        .to_string();
    let name = format!("toolchain of {shown}");
    let (lang, needs): (&str, &[&str]) = if project.join("Cargo.toml").is_file() {
        ("Rust", &["cargo", "rustup"])
    } else if project.join("app.py").is_file() {
        ("Python", &["python3"])
    } else if project.join("app.js").is_file() {
        ("JavaScript", &["node", "npm"])
    } else if project.join("app.c").is_file() {
        ("C", &["clang", "npm"])
    } else {
        return Check::pass(&name, "a plugin project of unknown language; not checked");
    };
    let missing: Vec<&str> = needs.iter().copied().filter(|p| !on_path(p)).collect();
    if !missing.is_empty() {
        return Check::fail(
            &name,
            format!("{lang} project; {} not found on PATH", missing.join(", ")),
            format!(
                "install {} (then `bash build.sh` installs the rest)",
                missing.join(" and ")
            ),
        );
    }
    if lang == "Rust" {
        let targets = std::process::Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output();
        let has = targets.is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2")
        });
        if !has {
            return Check::fail(
                &name,
                "Rust project; the wasm32-wasip2 target is not installed",
                "rustup target add wasm32-wasip2 (build.sh adds it too)",
            );
        }
    }
    Check::pass(&name, format!("{lang} project; {} found", needs.join(", ")))
}

/// Every agent (spawned, or declared in tinytown.toml) as a host would load it: its plugin
/// compiled and linked with its grants, `init` passed with its config; and what its programs
/// may reach.
pub async fn agents(town: &Town) -> Vec<Check> {
    let mut out = Vec::new();
    let mut agents: Vec<(String, Option<String>)> = Vec::new();
    for name in town.agent_names().await.unwrap_or_default() {
        match town.agent(&name).await {
            Ok(Some(a)) if a.role == crate::store::builtin::MAILBOX_ROLE && a.plugin.is_none() => {
                let how = format!("a mailbox people read (tt inbox {name}); not served");
                out.push(Check::pass(format!("agent {name}"), how));
            }
            Ok(Some(a)) => agents.push((name, a.plugin)),
            _ => {}
        }
    }
    for (name, section) in &town.config.agents {
        let mailbox = section.role.as_deref() == Some(crate::store::builtin::MAILBOX_ROLE);
        if mailbox || agents.iter().any(|(n, _)| n == name) {
            continue;
        }
        let plugin = section
            .plugin
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| {
                let role = section.role.as_deref()?;
                crate::store::builtin::for_role(role).map(|b| b.reference())
            });
        agents.push((name.clone(), plugin));
    }
    let peers = crate::host::builtin_peers(town).await.unwrap_or_default();
    let config = town.config.clone();
    let fuel =
        config.limits.fuel > 0 || config.agents.keys().any(|a| config.limits_for(a).fuel > 0);
    let runtime = match Runtime::new(Some(config.state_dir().join("cache")), fuel) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            out.push(Check::from_error(
                "wasm runtime",
                &e,
                "report this as a bug",
            ));
            return out;
        }
    };
    for (name, plugin) in agents {
        let check = format!("agent {name}");
        let Some(plugin) = plugin else {
            out.push(Check::fail(
                &check,
                "has no plugin: its mail is never served",
                format!(
                    "tt swap {name} PLUGIN (the built-ins: tt plugin list); a mailbox people \
                     read has role `mailbox`"
                ),
            ));
            continue;
        };
        let (rt, c, n, p, r) = (
            runtime.clone(),
            config.clone(),
            name.clone(),
            plugin.clone(),
            peers.clone(),
        );
        let loaded = tokio::task::spawn_blocking(move || load(&rt, &c, &n, &p, &r)).await;
        match loaded {
            Ok(Ok((digest, grants))) => {
                out.push(Check::pass(
                    &check,
                    format!("{plugin} @{digest} loads with its grants and passes init"),
                ));
                for line in grants.describe() {
                    out.push(Check::pass(format!("agent {name}: confinement"), line));
                }
            }
            Ok(Err(e)) => out.push(Check::from_error(
                &check,
                &e,
                "fix its plugin or its grants",
            )),
            Err(e) => out.push(Check::fail(
                &check,
                format!("the check panicked: {e}"),
                "report this as a bug",
            )),
        }
    }
    out
}

/// Loads `plugin` for `agent` as a host would, `init` included; its digest and grants.
fn load(
    runtime: &Runtime,
    config: &Config,
    agent: &str,
    plugin: &str,
    peers: &builtin::Peers,
) -> anyhow::Result<(String, Grants)> {
    let prepared = builtin::prepare(config, agent, plugin, peers)?;
    let p = runtime.load_source(agent, &prepared.source, &prepared.grants)?;
    let limits = config.limits_for(agent);
    runtime
        .instantiate_blocking(
            &p,
            agent,
            &limits,
            &prepared.grants,
            &prepared.init_config,
            Arc::new(NoTown),
        )
        .map_err(|f| {
            crate::store::error::fail(
                format!(
                    "{} cannot serve agent `{agent}`: {}",
                    shown(&prepared.source),
                    f.reason
                ),
                "fix the plugin or the agent's config table in tinytown.toml",
            )
        })?;
    Ok((p.digest.short(), prepared.grants))
}

fn shown(s: &Source) -> String {
    match s {
        Source::Builtin(b) => b.reference(),
        Source::File(p) => p.display().to_string(),
    }
}
