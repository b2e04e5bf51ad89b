//! The sandbox every `exec` runs in: what a program may write, read and connect to.
//!
//! [`Sandbox`] is the resolved policy of one grant, plain data: the paths (canonical, symlinks
//! resolved), the network rule and the child's resource limits. [`super::ruleset`] turns it
//! into a Landlock ruleset, [`super::confine`] applies it (with [`super::seccomp`]'s filter) to
//! each program it starts.
//!
//! Confined (the default), a program may write only its working directory, its private temp
//! directory and the paths the grant lists; read the system's programs and libraries (see
//! [`super::ruleset::SYSTEM`]), the allow-listed programs and the paths the grant lists; and
//! reach no network unless the grant says so. Fail closed: a kernel without the Landlock ABI
//! the grant needs makes the grant fail to resolve, naming the setting.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::grant::{ExecConfig, ExecGrant};
use super::presets;
use super::ruleset::kernel_abi;
use crate::store::config::Config;
use crate::store::error;

/// The Landlock ABI a grant demands unless `sandbox_abi` says otherwise: 4, the first with TCP
/// rules, so that "no network" is enforced.
pub const DEFAULT_ABI: u32 = 4;
/// The Landlock ABI of TCP connect/bind rules.
pub const NET_ABI: u32 = 4;

/// `network` as written: `"none"`, `"full"` or a list of ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkConfig {
    Word(String),
    Ports(Vec<u16>),
}

impl<'de> Deserialize<'de> for NetworkConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = NetworkConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"none\", \"full\" or a list of TCP ports such as [443]")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<NetworkConfig, E> {
                Ok(NetworkConfig::Word(s.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NetworkConfig, A::Error> {
                let mut ports = Vec::new();
                while let Some(p) = seq.next_element::<u16>()? {
                    ports.push(p);
                }
                Ok(NetworkConfig::Ports(ports))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for NetworkConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NetworkConfig::Word(w) => s.serialize_str(w),
            NetworkConfig::Ports(p) => p.serialize(s),
        }
    }
}

/// What a confined program may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// No sockets but `socketpair`: no TCP, no UDP, no unix sockets.
    None,
    /// Outbound TCP to these ports (any address); UDP too (name lookups need it).
    Ports(Vec<u16>),
    /// Any TCP and UDP; unix sockets stay refused.
    Full,
}

/// `setrlimit` limits of the child, applied to each process it starts (not to the tree).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildLimits {
    /// RLIMIT_AS, MiB.
    pub memory_mb: Option<u64>,
    /// RLIMIT_CPU, seconds.
    pub cpu_secs: Option<u64>,
}

/// The Landlock side of a confined grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// The lowest Landlock ABI this grant runs under (checked when it resolved).
    pub abi: u32,
    /// Writable (and readable) hierarchies: the working directory first.
    pub write: Vec<PathBuf>,
    /// Readable (and executable) paths besides the system's: programs, listed paths.
    pub read: Vec<PathBuf>,
    pub network: Network,
}

/// The resolved sandbox of one grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// `None`: `sandbox = "off"`, the program reaches what the host can.
    pub confine: Option<Confinement>,
    pub limits: ChildLimits,
}

fn bad(agent: &str, what: String, hint: &str) -> anyhow::Error {
    error::fail(format!("[agents.{agent}.exec] {what}"), hint)
}

impl Sandbox {
    /// Unconfined, no limits.
    pub fn off() -> Sandbox {
        Sandbox {
            confine: None,
            limits: ChildLimits::default(),
        }
    }

    /// The sandbox of a grant built in code (a bare [`ExecGrant`]): confined to its working
    /// directory, its programs readable, no network.
    pub fn default_for(grant: &ExecGrant) -> Sandbox {
        let workdir = grant
            .workdir
            .canonicalize()
            .unwrap_or(grant.workdir.clone());
        Sandbox {
            confine: Some(Confinement {
                abi: DEFAULT_ABI,
                write: vec![workdir],
                read: grant.allow.clone(),
                network: Network::None,
            }),
            limits: ChildLimits::default(),
        }
    }

    pub fn is_confined(&self) -> bool {
        self.confine.is_some()
    }

    /// Checks the sandbox fields of a grant table without touching any file.
    pub fn check(agent: &str, c: &ExecConfig) -> Result<()> {
        match c.sandbox.as_deref() {
            None | Some("on") | Some("off") => {}
            Some(other) => {
                return Err(bad(
                    agent,
                    format!("sandbox = {other:?}: use \"on\" (the default) or \"off\""),
                    "\"off\" runs the agent's programs unconfined, with the host's access",
                ))
            }
        }
        let full = matches!(&c.network, Some(NetworkConfig::Word(w)) if w == "full");
        match c.sandbox_abi {
            Some(0) => {
                return Err(bad(
                    agent,
                    "sandbox_abi = 0: the lowest Landlock ABI is 1".into(),
                    "leave sandbox_abi out for the default (4)",
                ))
            }
            Some(n) if n < NET_ABI && !full => {
                return Err(bad(
                    agent,
                    format!(
                        "sandbox_abi = {n} is below {NET_ABI}, the Landlock ABI that refusing \
                         network connections needs"
                    ),
                    "leave sandbox_abi out (4), or allow the network fully: network = \"full\"",
                ))
            }
            _ => {}
        }
        for name in &c.preset {
            if presets::by_name(name).is_none() {
                return Err(bad(
                    agent,
                    format!("preset: there is no preset {name:?}"),
                    &format!("the presets are: {}", presets::names()),
                ));
            }
        }
        match &c.network {
            None => {}
            Some(NetworkConfig::Word(w)) if w == "none" || w == "full" => {}
            Some(NetworkConfig::Word(w)) => {
                return Err(bad(
                    agent,
                    format!(
                        "network = {w:?}: use \"none\" (the default), \"full\" or a list of \
                         TCP ports"
                    ),
                    "for example network = [443] allows outbound HTTPS only",
                ))
            }
            Some(NetworkConfig::Ports(p)) if p.contains(&0) => {
                return Err(bad(
                    agent,
                    "network: port 0 is not a port a program connects to".into(),
                    "list the outbound TCP ports, for example network = [443]",
                ))
            }
            Some(NetworkConfig::Ports(_)) => {}
        }
        for (field, v) in [("memory_mb", c.memory_mb), ("cpu_secs", c.cpu_secs)] {
            if v == Some(0) {
                return Err(bad(
                    agent,
                    format!("{field} = 0: a limit must be 1 or more"),
                    "leave the field out for no limit",
                ));
            }
        }
        Ok(())
    }

    /// Resolves the sandbox of `c` for `agent`, whose programs side is `exec`. Confined, it
    /// checks the kernel, makes the agent's private temp directory (passed as TMPDIR unless
    /// the grant passes its own) and the presets' config directories, and resolves every
    /// listed path; each error names the setting.
    pub fn resolve(
        config: &Config,
        agent: &str,
        c: &ExecConfig,
        exec: &mut ExecGrant,
    ) -> Result<Sandbox> {
        Sandbox::check(agent, c)?;
        let limits = ChildLimits {
            memory_mb: c.memory_mb,
            cpu_secs: c.cpu_secs,
        };
        if c.sandbox.as_deref() == Some("off") {
            return Ok(Sandbox {
                confine: None,
                limits,
            });
        }
        let chosen: Vec<&presets::Preset> = presets::named(&c.preset).collect();
        let network = network_of(c, &chosen);
        let abi = check_kernel(agent, c)?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let tmp = config.state_dir().join("tmp").join(agent);
        std::fs::create_dir_all(&tmp).map_err(|e| {
            bad(
                agent,
                format!("temp dir {}: {e}", tmp.display()),
                "tt must be able to create it",
            )
        })?;
        let tmp = canonical(&tmp).unwrap_or(tmp);
        let state = canonical(&config.state_dir()).unwrap_or(config.state_dir());
        let workdir = canonical(&exec.workdir).unwrap_or(exec.workdir.clone());
        outside_state(
            agent,
            "workdir",
            &exec.workdir.display().to_string(),
            &workdir,
            &state,
        )?;
        if !exec.env.iter().any(|(k, _)| k == "TMPDIR") {
            exec.env.push(("TMPDIR".into(), tmp.display().to_string()));
        }
        let listed = |field: &str, p: &str| -> Result<PathBuf> {
            let path = expand(config, home.as_deref(), p);
            let path = path.as_deref().and_then(canonical).ok_or_else(|| {
                bad(
                    agent,
                    format!("{field}: `{p}` does not exist"),
                    "list existing paths: absolute, relative to the town directory, or ~/... \
                     (with HOME set)",
                )
            })?;
            outside_state(agent, field, p, &path, &state)?;
            Ok(path)
        };

        let mut write = vec![workdir, tmp];
        for p in &c.write {
            write.push(listed("write", p)?);
        }
        let mut read = exec.allow.clone();
        for p in &c.read {
            read.push(listed("read", p)?);
        }
        if let Some(home) = &home {
            for p in &chosen {
                for d in p.config_dirs {
                    let _ = std::fs::create_dir_all(home.join(d));
                }
                let found = |names: &[&str]| -> Vec<PathBuf> {
                    names
                        .iter()
                        .filter_map(|n| canonical(&home.join(n)))
                        .filter(|p| !state.starts_with(p))
                        .collect()
                };
                write.extend(found(p.config_dirs));
                write.extend(found(p.write_if_exists));
                read.extend(found(p.read_if_exists));
                if p.node {
                    read.extend(found(presets::NODE));
                }
            }
        }
        dedup(&mut write);
        dedup(&mut read);
        Ok(Sandbox {
            confine: Some(Confinement {
                abi,
                write,
                read,
                network,
            }),
            limits,
        })
    }

    /// One line: how a program of this grant is confined.
    pub fn describe(&self) -> String {
        let limits = match (self.limits.memory_mb, self.limits.cpu_secs) {
            (None, None) => "limits: none".to_string(),
            (m, c) => {
                let mut parts = Vec::new();
                if let Some(m) = m {
                    parts.push(format!("address space {m} MiB"));
                }
                if let Some(c) = c {
                    parts.push(format!("cpu {c} s"));
                }
                format!("limits: {} per process", parts.join(", "))
            }
        };
        let Some(c) = &self.confine else {
            return format!("sandbox off: programs reach what the host can; {limits}");
        };
        let paths = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let net = match &c.network {
            Network::None => "none".to_string(),
            Network::Ports(p) => format!(
                "tcp to port{} {} (and udp)",
                if p.len() == 1 { "" } else { "s" },
                p.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Network::Full => "full".to_string(),
        };
        let mut read = String::from("system (/usr, /etc basics, /proc, /sys, /dev basics)");
        if !c.read.is_empty() {
            read.push_str(", ");
            read.push_str(&paths(&c.read));
        }
        format!(
            "landlock (ABI >= {}) + seccomp: write {}; read {read}; net {net}; unix sockets none; {limits}",
            c.abi,
            paths(&c.write)
        )
    }
}

/// The network rule of a grant: its `network` field with its presets' ports added.
fn network_of(c: &ExecConfig, chosen: &[&presets::Preset]) -> Network {
    let mut ports = match &c.network {
        Some(NetworkConfig::Word(w)) if w == "full" => return Network::Full,
        Some(NetworkConfig::Ports(p)) => p.clone(),
        _ => Vec::new(),
    };
    for p in chosen {
        ports.extend_from_slice(p.ports);
    }
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        Network::None
    } else {
        Network::Ports(ports)
    }
}

/// Fails closed: the kernel must offer the ABI the grant demands (`sandbox_abi`, which
/// [`Sandbox::check`] keeps at 4 or more unless the network is fully open). Returns it.
fn check_kernel(agent: &str, c: &ExecConfig) -> Result<u32> {
    let kernel = kernel_abi();
    let demanded = c.sandbox_abi.unwrap_or(DEFAULT_ABI);
    if kernel >= demanded {
        return Ok(demanded);
    }
    let offers = if kernel == 0 {
        "this kernel offers no Landlock (not built in, or not in the boot's lsm= list)".to_string()
    } else {
        format!("this kernel offers Landlock ABI {kernel}")
    };
    let default = if c.sandbox_abi.is_none() {
        " (the default)"
    } else {
        ""
    };
    Err(bad(
        agent,
        format!(
            "sandbox_abi = {demanded}{default}: {offers}; the agent does not start rather than \
             run its programs unconfined"
        ),
        "run the host on a kernel with that Landlock ABI (Linux 6.7 or newer has 4), or set \
         sandbox = \"off\" to run this agent's programs unconfined on purpose",
    ))
}

/// `~/x` from HOME, anything else relative to the town directory.
fn expand(config: &Config, home: Option<&Path>, p: &str) -> Option<PathBuf> {
    if p == "~" {
        return home.map(Path::to_path_buf);
    }
    match p.strip_prefix("~/") {
        Some(rest) => home.map(|h| h.join(rest)),
        None => Some(config.resolve(Path::new(p))),
    }
}

fn canonical(p: &Path) -> Option<PathBuf> {
    p.canonicalize().ok()
}

/// A path that holds the town's `.tt/` would open it (the Redis socket, secrets, the cache).
fn outside_state(agent: &str, field: &str, written: &str, path: &Path, state: &Path) -> Result<()> {
    if state.starts_with(path) {
        return Err(bad(
            agent,
            format!(
                "{field}: `{written}` holds the town's {} (the Redis socket, secrets, the \
                 cache), which a confined program must not reach",
                state.display()
            ),
            "name a directory beside it or below it (the default workdir is .tt/work/<agent>)",
        ));
    }
    Ok(())
}

fn dedup(v: &mut Vec<PathBuf>) {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|p| seen.insert(p.clone()));
}
