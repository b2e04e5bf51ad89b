//! The embedded Redis: a private `redis-server` per town when no URL is configured.
//!
//! It listens only on `.tt/redis.sock` (mode 0700, no TCP port), keeps an append-only file in
//! `.tt/data`, and is shared by every later `tt` command of the town until `tt shutdown`. Two
//! commands starting it at once are serialised by a lock file, so exactly one server runs.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::store::config::Config;
use crate::store::error;

/// Unix socket paths longer than this do not fit in `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 100;

/// The server's settings that follow tinytown.toml: given when it starts, and set again on each
/// connection ([`crate::store::conn`]), since a running server may have started under an older
/// config.
///
/// - `maxmemory` with `noeviction`: a full town refuses writes (each with an error) and never
///   drops data.
/// - `auto-aof-rewrite-min-size`: the append-only file is rewritten (the whole dataset, by a
///   child process) each time it has grown by this much. Redis's 64 MB made a busy town of
///   10,000 agents rewrite its 160 MB every 4 s, a tenth of a core; a quarter of `maxmemory`
///   keeps the file within a small multiple of what the town may hold in memory.
/// - `stream-node-max-bytes` 1024, not 4096: Redis 7.0 allocates a stream's newest node at
///   this size whatever it holds, and every agent has two mailboxes and a journal, most of them
///   holding a few entries. On a scratch server, a mailbox of ten messages took 5.3 KB, now
///   2.2 KB; 10,000 of them 51 MB, now 20 MB, and writing them took 12% less time (less fresh
///   memory touched). A long stream (events) takes ~20% more, for its nodes' headers.
pub fn settings(maxmemory_mb: u64) -> Vec<(&'static str, String)> {
    vec![
        ("maxmemory", format!("{maxmemory_mb}mb")),
        ("maxmemory-policy", "noeviction".to_string()),
        (
            "auto-aof-rewrite-min-size",
            format!("{}mb", (maxmemory_mb / 4).max(64)),
        ),
        ("stream-node-max-bytes", "1024".to_string()),
    ]
}

pub struct Embedded {
    pub dir: PathBuf,
    /// How long a server that accepts connections may take to become ready (loading a large
    /// AOF) before `ensure` gives up on it.
    patience: Duration,
}

impl Embedded {
    pub fn new(config: &Config) -> Embedded {
        Embedded {
            dir: config.state_dir(),
            patience: Duration::from_secs(120),
        }
    }

    /// Where the server listens. A town in a deep directory gets its socket in a private
    /// directory under /tmp instead, named after the town directory.
    pub fn socket(&self) -> PathBuf {
        let local = self.dir.join("redis.sock");
        if local.as_os_str().len() <= MAX_SOCKET_PATH {
            return local;
        }
        use sha2::Digest;
        let hash = sha2::Sha256::digest(self.dir.as_os_str().as_encoded_bytes());
        let short = crate::store::model::hex(&hash[..8]);
        std::env::temp_dir()
            .join(format!("tt-{short}"))
            .join("redis.sock")
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    /// True when a server answers on the socket (ready, or still loading its AOF).
    pub fn is_up(&self) -> bool {
        ping(&self.socket()) != Ping::Down
    }

    /// Waits while a server is loading its AOF or slow to answer; returns how it ended:
    /// `Ready`, `Down` (nothing listens, or it went away), or still `Loading`/`Busy` after
    /// `patience`.
    fn settle(&self, socket: &Path) -> Ping {
        let deadline = Instant::now() + self.patience;
        loop {
            match ping(socket) {
                Ping::Loading | Ping::Busy if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                other => return other,
            }
        }
    }

    /// `None` when no server listens on the socket; else the socket once the server is
    /// ready, or an error if it is alive but never becomes ready. A live server is never
    /// replaced: a second one over the same data would split the town.
    fn running(&self, socket: &Path) -> Option<Result<PathBuf>> {
        match self.settle(socket) {
            Ping::Down => None,
            Ping::Ready => Some(Ok(socket.to_path_buf())),
            Ping::Loading | Ping::Busy => Some(Err(error::fail(
                format!(
                    "redis-server on {} accepts connections but was not ready within {} s",
                    socket.display(),
                    self.patience.as_secs()
                ),
                format!(
                    "see {}; `tt shutdown` stops it",
                    self.dir.join("redis.log").display()
                ),
            ))),
        }
    }

    /// Starts the server unless it already answers, with its [`settings`]. Returns the socket
    /// path.
    pub fn ensure(&self, appendfsync: &str, maxmemory_mb: u64) -> Result<PathBuf> {
        let socket = self.socket();
        if let Some(up) = self.running(&socket) {
            return up;
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        let _lock = Lock::take(&self.dir.join("redis.lock"))?;
        if let Some(up) = self.running(&socket) {
            return up;
        }
        let server = find_redis_server()?;
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data)?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        if let Some(parent) = socket.parent() {
            std::fs::create_dir_all(parent)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
        }
        let _ = std::fs::remove_file(&socket);
        let log = self.dir.join("redis.log");
        let status = Command::new(&server)
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&data)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                appendfsync,
                "--save",
                "",
            ])
            .args(
                settings(maxmemory_mb)
                    .into_iter()
                    .flat_map(|(name, value)| [format!("--{name}"), value]),
            )
            .args(["--daemonize", "yes", "--pidfile"])
            .arg(self.pidfile())
            .arg("--logfile")
            .arg(&log)
            .status()
            .with_context(|| format!("starting {}", server.display()))?;
        if !status.success() {
            return Err(error::fail(
                format!("redis-server exited with {status} while starting"),
                format!("see {}", log.display()),
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(up) = self.running(&socket) {
                return up;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let last = tail.lines().last().unwrap_or("no log").to_string();
        Err(error::fail(
            format!(
                "redis-server did not answer on {} within 10 s: {last}",
                socket.display()
            ),
            format!("see {}", log.display()),
        ))
    }

    /// The server's pid, if its pidfile names a live process.
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
    }

    /// Stops the server (SIGTERM makes Redis flush its AOF first). Returns false if none ran.
    pub fn stop(&self) -> Result<bool> {
        let Some(pid) = self.pid() else {
            return Ok(false);
        };
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && ping(&self.socket()) != Ping::Down {
            std::thread::sleep(Duration::from_millis(20));
        }
        while Instant::now() < deadline && self.pid().is_some() && is_running(pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(self.socket());
        Ok(true)
    }
}

/// Zombies (an exited child not yet reaped) still answer kill(pid, 0); /proc tells them apart.
fn is_running(pid: i32) -> bool {
    super::procfs::stat(pid).is_some_and(|f| !super::procfs::ended(&f))
}

/// The `redis-server` the embedded Redis runs: `$TT_REDIS_SERVER`, else the first on PATH.
pub fn find_redis_server() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("TT_REDIS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("redis-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(error::fail(
        "redis-server is not installed (not found on PATH)",
        "install it (`sudo apt-get install -y redis-server`, or `brew install redis`), \
         or set [redis] url in tinytown.toml to use a server you run",
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ping {
    Down,
    /// Up, but still loading its AOF: do not start another, do not use it yet.
    Loading,
    /// Something accepted the connection but did not answer in time (a server starting, or
    /// one starved of CPU on a loaded machine). It is alive: starting a second server over
    /// the same socket and data would split the town, so wait for it like `Loading`.
    Busy,
    Ready,
}

fn ping(socket: &Path) -> Ping {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return Ping::Down;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return Ping::Down;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) if buf[..n].starts_with(b"-LOADING") => Ping::Loading,
        Ok(n) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH") => Ping::Ready,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ping::Busy
        }
        _ => Ping::Down,
    }
}

/// An exclusive `flock` held until dropped.
struct Lock(std::fs::File);

impl Lock {
    fn take(path: &Path) -> Result<Lock> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("locking the embedded Redis");
        }
        Ok(Lock(f))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A socket that accepts connections and never answers: a server starting, or starved.
    fn silent_server(socket: &Path) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().take(64) {
                held.push(s);
            }
        })
    }

    #[test]
    fn a_silent_server_is_busy_not_down() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        assert_eq!(ping(&socket), Ping::Down);
        let _server = silent_server(&socket);
        assert_eq!(ping(&socket), Ping::Busy);
    }

    #[test]
    fn ensure_never_starts_a_second_server_beside_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = Embedded {
            dir: dir.path().join(".tt"),
            patience: Duration::from_millis(700),
        };
        std::fs::create_dir_all(&embedded.dir).unwrap();
        let _server = silent_server(&embedded.socket());
        let err = embedded.ensure("everysec", 64).unwrap_err().to_string();
        assert!(
            err.contains("accepts connections but was not ready"),
            "{err}"
        );
        assert!(
            !embedded.pidfile().exists(),
            "a second redis-server was started"
        );
        assert!(embedded.socket().exists(), "the live socket was removed");
    }
}
