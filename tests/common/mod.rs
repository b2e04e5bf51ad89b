//! Test harness for the end-to-end tests: a town in a temp dir with its own embedded
//! `redis-server`, and helpers to run `tt` against it and check what it printed.
//!
//! Every test gets its own [`TestTown`]; nothing is shared, so tests run in parallel. Dropping a
//! town runs `tt shutdown`, which stops its Redis.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod cluster;
pub mod fleet;
pub mod repo;

/// No single `tt` invocation in these tests may take longer than this.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The town name every [`TestTown::new`] uses, so Redis keys are `tt:{test}:…`.
pub const TOWN: &str = "test";

/// The `tt` binary under test.
pub fn tt_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tt"))
}

pub struct TestTown {
    pub dir: tempfile::TempDir,
}

/// A refused command: its exit code and the `error:` and `hint:` lines it printed.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: i32,
    /// The `error:` line without its prefix.
    pub error: String,
    /// The `hint:` line without its prefix.
    pub hint: String,
    pub stderr: String,
}

impl Default for TestTown {
    fn default() -> Self {
        Self::new()
    }
}

impl TestTown {
    /// A temp dir and `tt init --name test` in it (which starts the town's Redis).
    pub fn new() -> TestTown {
        let town = TestTown::bare();
        town.ok(&["init", "--name", TOWN]);
        town
    }

    /// A fresh empty temp dir, no `tt init`. Short path: the Redis socket goes inside it.
    pub fn bare() -> TestTown {
        let dir = tempfile::Builder::new()
            .prefix("tt")
            .tempdir_in("/tmp")
            .expect("creating a temp dir in /tmp");
        TestTown { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `tt` command with `TT_TOWN` set to this town and a clean environment otherwise.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(tt_bin());
        c.args(args)
            .env("TT_TOWN", self.path())
            .env_remove("TT_REDIS_SERVER")
            .env_remove("TT_LOG")
            .current_dir(self.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs `tt args…` with `TT_TOWN` set; panics if it runs longer than [`TIMEOUT`].
    pub fn tt(&self, args: &[&str]) -> Output {
        run(self.command(args))
    }

    /// Runs `tt` and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.tt(args);
        expect_ok(args, &out)
    }

    /// Runs `tt` and asserts the exit code; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.tt(args);
        expect_code(args, &out, code)
    }

    /// Runs `tt`, asserts the exit code, exactly one `error:` line containing every needle,
    /// and a non-empty `hint:` line after it.
    pub fn refused(&self, args: &[&str], code: i32, needles: &[&str]) -> Refusal {
        let stderr = self.fails(args, code);
        refusal(args, code, &stderr, needles)
    }

    /// `ok()` and parse stdout as one JSON document.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!("`tt {}` printed invalid JSON ({e}):\n{out}", args.join(" "))
        })
    }

    /// `ok()` and parse every stdout line as JSON (for `tt events --json`).
    pub fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        self.ok(args)
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("`tt {}` printed a bad line ({e}): {l}", args.join(" "))
                })
            })
            .collect()
    }

    /// Overwrites tinytown.toml.
    pub fn write_config(&self, toml_text: &str) {
        std::fs::write(self.path().join("tinytown.toml"), toml_text)
            .expect("writing tinytown.toml");
    }

    pub fn read_config(&self) -> String {
        std::fs::read_to_string(self.path().join("tinytown.toml")).expect("reading tinytown.toml")
    }

    /// The embedded Redis's socket.
    pub fn socket(&self) -> PathBuf {
        self.path().join(".tt").join("redis.sock")
    }

    /// A Redis key of this town: `tt:{test}:<rest>`.
    pub fn key(&self, rest: &str) -> String {
        format!("tt:{{{TOWN}}}:{rest}")
    }

    /// `redis-cli -s <socket> args…` against the embedded Redis; returns its trimmed output.
    pub fn redis(&self, args: &[&str]) -> String {
        let mut c = Command::new("redis-cli");
        c.arg("-s")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null());
        let out = run(c);
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `XLEN` of one of this town's streams.
    pub fn xlen(&self, rest: &str) -> u64 {
        let key = self.key(rest);
        let n = self.redis(&["XLEN", &key]);
        n.parse()
            .unwrap_or_else(|_| panic!("XLEN {key} answered {n:?}"))
    }

    /// `tt task show ID --json`.
    pub fn task(&self, id: &str) -> Value {
        self.json(&["task", "show", id, "--json"])
    }

    /// `tt list --json`.
    pub fn agents(&self) -> Vec<Value> {
        self.json(&["list", "--json"])
            .as_array()
            .expect("list --json is an array")
            .clone()
    }

    /// One agent from `tt list --json`.
    pub fn agent(&self, name: &str) -> Option<Value> {
        self.agents().into_iter().find(|a| a["name"] == name)
    }

    /// The names `tt list --json` shows.
    pub fn agent_names(&self) -> Vec<String> {
        self.agents()
            .iter()
            .map(|a| a["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// `tt inbox NAME --json`.
    pub fn inbox(&self, name: &str) -> Value {
        self.json(&["inbox", name, "--json"])
    }

    /// Every event of the town, oldest first.
    pub fn events(&self) -> Vec<Value> {
        self.json_lines(&["events", "-n", "100000", "--json"])
    }

    /// Ids of the tasks in the backlog.
    pub fn backlog_ids(&self) -> Vec<String> {
        ids(&self.json(&["backlog", "list", "--json"]))
    }

    /// Starts `tt args…` in the background; stdout is read line by line.
    pub fn start(&self, args: &[&str]) -> Running {
        Running::start(self.command(args), args)
    }

    /// Spawns an agent for each name (role worker).
    pub fn spawn_agents(&self, names: &[&str]) {
        for n in names {
            self.ok(&["spawn", n]);
        }
    }
}

impl Drop for TestTown {
    fn drop(&mut self) {
        let out = try_run(self.command(&["shutdown"]), Duration::from_secs(20));
        if out.is_some_and(|o| o.status.success()) {
            return;
        }
        // `tt shutdown` could not read the config (a test broke it): stop our server by its pid,
        // after checking that the pid really is the redis-server of this town.
        let pidfile = self.path().join(".tt").join("redis.pid");
        let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            return;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("redis-server") || cmdline.contains(&*self.socket().to_string_lossy()) {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// The `id`s of a JSON array of tasks.
pub fn ids(tasks: &Value) -> Vec<String> {
    tasks
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|t| t["id"].as_str().expect("task id").to_string())
        .collect()
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`tt {}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts exit 0; returns stdout.
pub fn expect_ok(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success: {}",
        describe(args, out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the exit code; returns stderr.
pub fn expect_code(args: &[&str], out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit code {code}: {}",
        describe(args, out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks stderr of a refused command: one `error:` line naming every needle, then a `hint:`.
pub fn refusal(args: &[&str], code: i32, stderr: &str, needles: &[&str]) -> Refusal {
    let lines: Vec<&str> = stderr.lines().collect();
    let errors: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("error: "))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "`tt {}`: expected one `error:` line in stderr:\n{stderr}",
        args.join(" ")
    );
    let error = lines[errors[0]].trim_start_matches("error: ").to_string();
    for n in needles {
        assert!(
            error.contains(n),
            "`tt {}`: error line {error:?} does not mention {n:?}",
            args.join(" ")
        );
    }
    let hint = lines
        .get(errors[0] + 1)
        .and_then(|l| l.strip_prefix("hint: "))
        .unwrap_or_else(|| {
            panic!(
                "`tt {}`: no `hint:` line after the error:\n{stderr}",
                args.join(" ")
            )
        })
        .to_string();
    assert!(!hint.trim().is_empty(), "empty hint:\n{stderr}");
    Refusal {
        code,
        error,
        hint,
        stderr: stderr.to_string(),
    }
}

/// Runs a command to completion, panicking after [`TIMEOUT`] (the child is killed).
pub fn run(cmd: Command) -> Output {
    run_timeout(cmd, TIMEOUT)
}

/// Runs a command to completion, panicking (after killing it) if it takes longer than `limit`.
pub fn run_timeout(cmd: Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    try_run(cmd, limit).unwrap_or_else(|| panic!("{what} did not finish within {limit:?}"))
}

/// Runs a command; `None` if it could not start or ran longer than `limit` (it is then killed).
pub fn try_run(mut cmd: Command, limit: Duration) -> Option<Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().ok()?;
    let pid = child.id() as i32;
    let mut stdout = child.stdout.take()?;
    let mut stderr = child.stderr.take()?;
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(limit) {
        Ok(Ok(status)) => status,
        _ => {
            // Our own child, by its pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv_timeout(Duration::from_secs(5));
            return None;
        }
    };
    Some(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// A `tt` command running in the background (`events --follow`, `wait`). Killed on drop.
pub struct Running {
    child: Child,
    what: String,
    lines: Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    pub fn start(mut cmd: Command, args: &[&str]) -> Running {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting tt");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        }));
        Running {
            child,
            what: format!("tt {}", args.join(" ")),
            lines,
            stderr,
        }
    }

    /// The next stdout line; panics if none comes within `limit`.
    pub fn next_line(&self, limit: Duration) -> String {
        self.lines
            .recv_timeout(limit)
            .unwrap_or_else(|e| panic!("`{}` printed no line within {limit:?} ({e})", self.what))
    }

    /// The next stdout line, if one comes within `limit`.
    pub fn try_next_line(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process and returns what it wrote to stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` of our own on a free loopback port (for tests of `[redis] url`), with no
/// persistence. Killed on drop.
pub struct ExternalRedis {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl ExternalRedis {
    /// Starts `redis-server --port N --save '' --appendonly no` plus `extra` arguments.
    pub fn start(extra: &[&str]) -> ExternalRedis {
        let dir = tempfile::Builder::new()
            .prefix("ttr")
            .tempdir_in("/tmp")
            .expect("temp dir");
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(dir.path())
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting redis-server");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken after all; try another
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return ExternalRedis {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start a redis-server on a free port");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for ExternalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local addr").port()
}

/// A compiled plugin of this repository (`plugins/dist/NAME.wasm`, from `bash plugins/build.sh`).
/// A 0.1.0 build of an example plugin, kept in tests/fixtures/wit-0.1.0/ so the frozen
/// contract stays tested.
pub fn fixture_0_1(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/wit-0.1.0")
        .join(format!("{name}.wasm"))
}

pub fn plugin_path(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run `bash plugins/build.sh` first",
        p.display()
    );
    p.canonicalize().unwrap()
}

/// [`plugin_path`] as text, for a `plugin = "..."` line of tinytown.toml.
pub fn plugin(name: &str) -> String {
    plugin_path(name).display().to_string()
}

/// Runs `tt host --until-idle --name h1`, asserting it exits 0 within `limit` without a panic;
/// returns what it logged.
pub fn host_until_idle(town: &TestTown, limit: Duration) -> String {
    let args = ["host", "--until-idle", "--name", "h1"];
    let out = run_timeout(town.command(&args), limit);
    let err = expect_code(&args, &out, 0);
    assert!(!err.contains("panicked at"), "tt host panicked: {err}");
    err
}

/// The demo town's agents (worker alice, reviewer bob, conductor policy mayor) in `town`, under
/// the given `head` of tinytown.toml ([town], [host], [redis]): copies the demo's scripts,
/// spawns the agents and puts one task in the backlog.
pub fn demo_town(town: &TestTown, head: &str) {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
    for f in ["coder.sh", "check.sh"] {
        std::fs::copy(demo.join(f), town.path().join(f)).unwrap();
    }
    std::fs::create_dir_all(town.path().join("work")).unwrap();
    let (worker, reviewer, conductor) = (plugin("worker"), plugin("reviewer"), plugin("conductor"));
    town.write_config(&format!(
        r#"{head}
[agents.alice]
role = "worker"
plugin = "{worker}"
config = {{ program = "./coder.sh", reviewer = "bob" }}
exec = {{ allow = ["./coder.sh"], env = ["PATH"], workdir = "work" }}

[agents.bob]
role = "reviewer"
plugin = "{reviewer}"
config = {{ program = "./check.sh", notify = "mayor" }}
exec = {{ allow = ["./check.sh"], env = ["PATH"], workdir = "work" }}

[agents.mayor]
role = "conductor"
plugin = "{conductor}"
"#
    ));
    for (n, r) in [
        ("alice", "worker"),
        ("bob", "reviewer"),
        ("mayor", "conductor"),
    ] {
        town.ok(&["spawn", n, "--role", r]);
    }
    town.ok(&[
        "backlog",
        "add",
        "Write greet.sh so that it prints: Hello, tinytown!",
    ]);
}

/// After the demo town ran: task t1 completed after exactly one rejection, through the task
/// states of the review loop in order, and the humans were told. Returns the town's events.
pub fn assert_demo_task_done(town: &TestTown) -> Vec<Value> {
    let t = town.task("t1");
    assert_eq!(t["state"], "completed", "{t}");
    assert_eq!(t["owner"], "alice");
    assert_eq!(t["rejections"], 1);
    assert_eq!(t["result"], "check passed");
    let events = town.events();
    let states: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "task" && e["task"] == "t1")
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "pending",
            "assigned",
            "running",
            "in-review",
            "rejected",
            "assigned",
            "running",
            "in-review",
            "completed"
        ]
    );
    let inbox = town.inbox("conductor");
    let msg = &inbox["waiting"][0]["message"];
    assert_eq!(msg["from"], "mayor", "{inbox}");
    let body = msg["body"].as_str().unwrap_or_default();
    assert!(body.contains("task t1 completed by alice"), "{inbox}");
    events
}
