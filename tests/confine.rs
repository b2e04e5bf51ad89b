//! Confinement of what `exec` runs (issue 17): real programs (`/bin/sh`, `/bin/bash`,
//! `python3`) run by the real worker plugin (plugins/dist/worker.wasm), with grants resolved the
//! way the host resolves them (`Grants::for_agent` over a parsed tinytown.toml, so
//! `ConfinedExec::from_config`). The worker runs its program with the task text on stdin and
//! requests review with "exit N\n<stdout>"; each script prints what it could and could not do.
//!
//! Every refusal is checked together with the allowed side (the same script under
//! `sandbox = "off"`, or a path or port the grant lists), so no test passes vacuously.
//!
//! The process's HOME is a fake one (set once, before any test reads the environment) with an
//! `.ssh/id` in it. `cargo test --test confine -- --ignored --nocapture` prints the cost of
//! confinement per exec.

use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tinytown::runtime::bindings::tinytown::agent::exec::Command as ExecCommand;
use tinytown::runtime::capabilities::exec::{kernel_abi, ConfinedExec, ExecGrant, Network};
use tinytown::runtime::capabilities::{check_config, exec};
use tinytown::runtime::{wit, Grants, NoTown, Runtime};
use tinytown::store::config::Config;
use tinytown::store::limits::Limits;

const PROGRAMS: &str = r#"allow = ["/bin/sh", "/bin/bash", "/usr/bin/python3"]"#;
const SSH_KEY: &str = "-----BEGIN FAKE PRIVATE KEY-----";

/// The fake HOME of this test process, with `.ssh/id`.
fn home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        // Made afresh by each run, in cargo's temp dir for tests (not left behind in /tmp).
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("confine-home");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(".ssh")).unwrap();
        let dir = dir.canonicalize().unwrap();
        std::fs::write(dir.join(".ssh/id"), format!("{SSH_KEY}\n")).unwrap();
        std::env::set_var("HOME", &dir);
        dir
    })
}

/// A town directory with a `.tt/` holding a secret, and a directory outside both.
struct Town {
    _dir: tempfile::TempDir,
    _out: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Town {
    fn new() -> Town {
        home();
        let dir = tempfile::Builder::new()
            .prefix("tt-confine-")
            .tempdir()
            .unwrap();
        let out = tempfile::Builder::new()
            .prefix("tt-outside-")
            .tempdir()
            .unwrap();
        let root = dir.path().canonicalize().unwrap();
        let outside = out.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join(".tt")).unwrap();
        std::fs::write(root.join(".tt/secret"), "TOWN SECRET\n").unwrap();
        std::fs::write(outside.join("file"), "OUTSIDE\n").unwrap();
        Town {
            _dir: dir,
            _out: out,
            root,
            outside,
        }
    }

    fn workdir(&self) -> PathBuf {
        self.root.join(".tt/work/w")
    }

    /// tinytown.toml with agent `w` granted `[agents.w.exec]` = `exec`.
    fn config(&self, exec: &str) -> Config {
        let text = format!("[town]\nname = \"t\"\n\n[agents.w.exec]\n{exec}\n");
        let mut config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        config.dir = self.root.clone();
        config
    }

    /// The grants as the host resolves them, or the error (message and hint).
    fn try_grants(&self, exec: &str) -> Result<Grants, String> {
        let config = self.config(exec);
        check_config(&config).map_err(user_error)?;
        Grants::for_agent(&config, "w").map_err(user_error)
    }

    fn grants(&self, exec: &str) -> Grants {
        self.try_grants(exec)
            .unwrap_or_else(|e| panic!("grant {exec:?}: {e}"))
    }

    fn refused(&self, exec: &str) -> String {
        match self.try_grants(exec) {
            Ok(_) => panic!("grant {exec:?} resolved; it should be refused"),
            Err(e) => e,
        }
    }

    fn confined(&self, exec: &str) -> Arc<ConfinedExec> {
        self.grants(exec)
            .get::<ConfinedExec>()
            .expect("a ConfinedExec")
    }
}

fn user_error(e: anyhow::Error) -> String {
    match e.downcast_ref::<tinytown::store::error::UserError>() {
        Some(u) => format!(
            "{} (hint: {})",
            u.message,
            u.hint.clone().unwrap_or_default()
        ),
        None => format!("{e:#}"),
    }
}

fn worker_wasm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/worker.wasm")
}

fn runtime() -> Runtime {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("confine-cache");
    Runtime::new(Some(cache), false).unwrap()
}

/// The worker runs `program` with `script` on stdin: Ok(review body "exit N\n<stdout>"), or
/// Err(the text of the task it failed, when the program could not run).
fn try_work(grants: &Grants, program: &str, script: &str) -> Result<String, String> {
    let wasm = worker_wasm();
    assert!(
        wasm.is_file(),
        "{} is missing: run `bash plugins/build.sh` first",
        wasm.display()
    );
    let runtime = runtime();
    let plugin = runtime.load("w", &wasm, grants).expect("load worker");
    let config = [("program", program), ("reviewer", "r")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
    let mut inst = runtime
        .instantiate_blocking(
            &plugin,
            "w",
            &Limits::default(),
            grants,
            &config,
            Arc::new(NoTown),
        )
        .unwrap_or_else(|f| panic!("instantiate: {f:?}"));
    let msg = wit::Message {
        id: "m-1".into(),
        sender: "boss".into(),
        recipient: "w".into(),
        kind: wit::Kind::TaskAssign,
        body: script.into(),
        priority: wit::Priority::Normal,
        task_id: Some("t-1".into()),
        correlation_id: None,
        sent_at_ms: 0,
        attempt: 1,
    };
    let actions =
        tinytown::runtime::block_on(inst.handle(msg)).unwrap_or_else(|f| panic!("handle: {f:?}"));
    for a in &actions {
        match a {
            wit::Action::RequestReview(r) => return Ok(r.body.clone()),
            wit::Action::Fail(t) => return Err(t.text.clone()),
            _ => {}
        }
    }
    panic!("no review request nor failure in {actions:?}")
}

fn work(grants: &Grants, program: &str, script: &str) -> String {
    try_work(grants, program, script).unwrap_or_else(|e| panic!("the program did not run: {e}"))
}

/// `label yes` when `cmd` succeeds, `label no` when it fails (stderr kept on stdout).
fn probe(label: &str, cmd: &str) -> String {
    format!("if {cmd}; then echo '{label} yes'; else echo '{label} no'; fi\n")
}

fn says(body: &str, label: &str, yes: bool) {
    let want = format!("{label} {}", if yes { "yes" } else { "no" });
    assert!(
        body.lines().any(|l| l == want),
        "expected `{want}` in:\n{body}"
    );
}

/// Tries, with `sh`, everything the sandbox is about on the file system; the workdir's
/// `link` points at a file outside, `linkdir` at the directory outside.
fn fs_probes(town: &Town) -> String {
    let out = town.outside.display();
    let root = town.root.display();
    let home = home().display();
    std::os::unix::fs::symlink(town.outside.join("file"), town.workdir().join("link")).ok();
    std::os::unix::fs::symlink(&town.outside, town.workdir().join("linkdir")).ok();
    [
        probe("write-workdir", "echo in > inside.txt"),
        probe("read-workdir", "grep -q in inside.txt"),
        probe("write-outside", &format!("echo x > {out}/new 2>&1")),
        probe("write-town", &format!("echo x > {root}/new 2>&1")),
        probe("read-ssh", &format!("cat {home}/.ssh/id 2>&1")),
        probe("list-home", &format!("ls {home} >/dev/null 2>&1")),
        probe("read-tt", &format!("cat {root}/.tt/secret 2>&1")),
        probe("read-symlink", "cat link 2>&1"),
        probe("write-symlink-dir", "echo x > linkdir/new2 2>&1"),
        probe("read-usr", "test -n \"$(ls /usr/bin)\""),
        probe("dev-null", "echo x > /dev/null"),
        // A child (and grandchild) of the program tries the same.
        probe(
            "child-read-ssh",
            &format!("sh -c 'sh -c \"cat {home}/.ssh/id\"' 2>&1"),
        ),
        probe(
            "child-write-outside",
            &format!("sh -c 'echo x > {out}/child' 2>&1"),
        ),
        probe("child-write-workdir", "sh -c 'echo x > child.txt'"),
        // The host is the program's parent: its environment and its signals are out of reach.
        probe("host-environ", "cat /proc/$PPID/environ >/dev/null 2>&1"),
        probe("signal-host", "kill -0 $PPID 2>&1"),
        probe("signal-self", "kill -0 $$"),
    ]
    .concat()
}

fn ensure_workdir(town: &Town) {
    std::fs::create_dir_all(town.workdir()).unwrap();
}

#[test]
fn a_confined_program_writes_only_its_workdir_and_reads_nothing_of_home_or_the_town() {
    let town = Town::new();
    ensure_workdir(&town);
    let grants = town.grants(PROGRAMS);
    let body = work(&grants, "/bin/sh", &fs_probes(&town));
    assert!(body.starts_with("exit 0\n"), "{body}");
    for (label, yes) in [
        ("write-workdir", true),
        ("read-workdir", true),
        ("read-usr", true),
        ("dev-null", true),
        ("child-write-workdir", true),
        ("write-outside", false),
        ("write-town", false),
        ("read-ssh", false),
        ("list-home", false),
        ("read-tt", false),
        ("read-symlink", false),
        ("write-symlink-dir", false),
        ("child-read-ssh", false),
        ("child-write-outside", false),
        ("host-environ", false),
        ("signal-host", false),
        ("signal-self", true),
    ] {
        says(&body, label, yes);
    }
    // The refusals are the kernel's usual EACCES, and nothing leaked.
    assert!(body.contains("Permission denied"), "{body}");
    assert!(
        !body.contains(SSH_KEY) && !body.contains("TOWN SECRET"),
        "{body}"
    );
    assert!(!body.contains("OUTSIDE"), "{body}");
    assert!(town.workdir().join("inside.txt").is_file());
    assert!(town.workdir().join("child.txt").is_file());
    assert!(!town.outside.join("new").exists());
    assert!(!town.outside.join("new2").exists());
    assert!(!town.outside.join("child").exists());
    assert!(!town.root.join("new").exists());
}

#[test]
fn sandbox_off_behaves_as_before() {
    let town = Town::new();
    ensure_workdir(&town);
    let grants = town.grants(&format!("{PROGRAMS}\nsandbox = \"off\""));
    let c = grants.get::<ConfinedExec>().unwrap();
    assert!(!c.sandbox.is_confined());
    assert!(c.describe().starts_with("sandbox off"), "{}", c.describe());
    let body = work(&grants, "/bin/sh", &fs_probes(&town));
    for label in [
        "write-workdir",
        "write-outside",
        "write-town",
        "read-ssh",
        "list-home",
        "read-tt",
        "read-symlink",
        "write-symlink-dir",
        "child-read-ssh",
        "child-write-outside",
        "host-environ",
        "signal-host",
    ] {
        says(&body, label, true);
    }
    assert!(
        body.contains(SSH_KEY) && body.contains("TOWN SECRET"),
        "{body}"
    );
    assert!(town.outside.join("new").is_file());
    // Unconfined, the program gets no seccomp filter nor no_new_privs: it has what the test
    // process has.
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let theirs = work(&grants, "/bin/sh", "cat /proc/self/status");
    assert_eq!(flags(&theirs), flags(&ours));
    assert_eq!(flags(&ours).len(), 5, "{ours}");
}

/// The lines of /proc/PID/status about privileges: no_new_privs, seccomp, capabilities.
fn flags(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| {
            ["NoNewPrivs:", "Seccomp:", "CapEff:", "CapPrm:", "CapBnd:"]
                .iter()
                .any(|f| l.starts_with(f))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn confinement_is_inherited_and_cannot_be_dropped() {
    let town = Town::new();
    let grants = town.grants(PROGRAMS);
    // A grandchild still has no_new_privs, the seccomp filter and no capability at all, even
    // when the host runs as root (Landlock has no /proc field; the refusals of children are
    // in the tests above).
    let body = work(
        &grants,
        "/bin/sh",
        "sh -c 'sh -c \"cat /proc/self/status\"'",
    );
    let zero = "0000000000000000";
    assert_eq!(
        flags(&body),
        [
            "CapPrm:\t".to_string() + zero,
            "CapEff:\t".to_string() + zero,
            "CapBnd:\t".to_string() + zero,
            "NoNewPrivs:\t1".to_string(),
            "Seccomp:\t2".to_string(),
        ]
    );
}

/// A loopback listener and whether someone connected to it.
struct Listener(TcpListener);

impl Listener {
    fn new() -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Listener(l)
    }
    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }
    /// True when a connection is waiting (the program's connect completed).
    fn was_reached(&self) -> bool {
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            match self.0.accept() {
                Ok(_) => return true,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(_) => return false,
            }
        }
    }
}

/// A bash script that connects to each port with /dev/tcp.
fn connects(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| {
            probe(
                &format!("tcp-{p}"),
                &format!("(exec 3<>/dev/tcp/127.0.0.1/{p}) 2>&1"),
            )
        })
        .collect()
}

#[test]
fn no_network_by_default() {
    let town = Town::new();
    let l = Listener::new();
    let body = work(&town.grants(PROGRAMS), "/bin/bash", &connects(&[l.port()]));
    says(&body, &format!("tcp-{}", l.port()), false);
    assert!(body.contains("Permission denied"), "{body}");
    assert!(!l.was_reached());
    // The same script, unconfined, connects.
    let off = town.grants(&format!("{PROGRAMS}\nsandbox = \"off\""));
    let body = work(&off, "/bin/bash", &connects(&[l.port()]));
    says(&body, &format!("tcp-{}", l.port()), true);
    assert!(l.was_reached());
}

#[test]
fn listed_ports_are_reachable_and_no_others() {
    let town = Town::new();
    let (open, closed) = (Listener::new(), Listener::new());
    let grants = town.grants(&format!("{PROGRAMS}\nnetwork = [{}]", open.port()));
    let c = grants.get::<ConfinedExec>().unwrap();
    assert_eq!(
        c.sandbox.confine.as_ref().unwrap().network,
        Network::Ports(vec![open.port()])
    );
    let body = work(
        &grants,
        "/bin/bash",
        &connects(&[open.port(), closed.port()]),
    );
    says(&body, &format!("tcp-{}", open.port()), true);
    says(&body, &format!("tcp-{}", closed.port()), false);
    assert!(body.contains("Permission denied"), "{body}");
    assert!(open.was_reached());
    assert!(!closed.was_reached());
    // A child of the program is held to the same ports.
    let child = format!(
        "bash -c '{}'",
        connects(&[closed.port()]).replace('\'', "\"")
    );
    let body = work(&grants, "/bin/bash", &child);
    says(&body, &format!("tcp-{}", closed.port()), false);
    assert!(!closed.was_reached());
}

#[test]
fn full_network_reaches_any_port_but_no_unix_socket() {
    let town = Town::new();
    let (a, b) = (Listener::new(), Listener::new());
    let grants = town.grants(&format!("{PROGRAMS}\nnetwork = \"full\""));
    let body = work(&grants, "/bin/bash", &connects(&[a.port(), b.port()]));
    says(&body, &format!("tcp-{}", a.port()), true);
    says(&body, &format!("tcp-{}", b.port()), true);
    assert!(a.was_reached() && b.was_reached());
    let sock = town.root.join(".tt/redis.sock");
    let _l = UnixListener::bind(&sock).unwrap();
    let body = work(&grants, "/usr/bin/python3", &unix_connect(&sock));
    assert!(
        body.contains("unix no") && body.contains("Errno 13"),
        "{body}"
    );
}

fn unix_connect(path: &Path) -> String {
    format!(
        "import socket\ntry:\n    s = socket.socket(socket.AF_UNIX)\n    s.connect({:?})\n    \
         print('unix yes')\nexcept OSError as e:\n    print('unix no', e)\n",
        path.display().to_string()
    )
}

#[test]
fn the_towns_redis_socket_is_out_of_reach() {
    let town = Town::new();
    let sock = town.root.join(".tt/redis.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let body = work(
        &town.grants(PROGRAMS),
        "/usr/bin/python3",
        &unix_connect(&sock),
    );
    assert!(
        body.contains("unix no") && body.contains("Errno 13"),
        "{body}"
    );
    assert!(listener.accept().is_err(), "nobody connected");
    let off = town.grants(&format!("{PROGRAMS}\nsandbox = \"off\""));
    let body = work(&off, "/usr/bin/python3", &unix_connect(&sock));
    assert!(body.contains("unix yes"), "{body}");
}

#[test]
fn listed_paths_are_readable_or_writable_and_symlinks_are_resolved() {
    let town = Town::new();
    let out = &town.outside;
    std::fs::create_dir_all(out.join("ro")).unwrap();
    std::fs::create_dir_all(out.join("rw")).unwrap();
    std::fs::write(out.join("ro/data"), "READ ME").unwrap();
    // Listed through a symlink: the rule is on where it leads.
    std::os::unix::fs::symlink(out.join("rw"), town.root.join("rw-link")).unwrap();
    let grants = town.grants(&format!(
        "{PROGRAMS}\nread = [\"{}\"]\nwrite = [\"rw-link\"]",
        out.join("ro").display()
    ));
    let c = grants.get::<ConfinedExec>().unwrap();
    let conf = c.sandbox.confine.as_ref().unwrap();
    assert!(conf.write.contains(&out.join("rw")), "{conf:?}");
    assert!(conf.read.contains(&out.join("ro")), "{conf:?}");
    let o = out.display();
    let script = [
        probe("read-listed", &format!("grep -q 'READ ME' {o}/ro/data")),
        probe("write-read-only", &format!("echo x > {o}/ro/new 2>&1")),
        probe("write-listed", &format!("echo x > {o}/rw/new")),
        probe("write-unlisted", &format!("echo x > {o}/new 2>&1")),
    ]
    .concat();
    let body = work(&grants, "/bin/sh", &script);
    says(&body, "read-listed", true);
    says(&body, "write-read-only", false);
    says(&body, "write-listed", true);
    says(&body, "write-unlisted", false);
    assert!(out.join("rw/new").is_file() && !out.join("ro/new").exists());
}

#[test]
fn a_preset_opens_its_cli_config_dir_and_https_only() {
    let town = Town::new();
    let grants = town.grants(&format!("{PROGRAMS}\npreset = \"claude\""));
    let c = grants.get::<ConfinedExec>().unwrap();
    let conf = c.sandbox.confine.as_ref().unwrap();
    assert_eq!(conf.network, Network::Ports(vec![443]));
    assert!(
        home().join(".claude").is_dir(),
        "the preset makes its config dir"
    );
    assert!(conf.write.contains(&home().join(".claude")), "{conf:?}");
    assert!(c
        .exec
        .env
        .iter()
        .any(|(k, v)| k == "HOME" && Path::new(v) == home()));
    let script = [
        probe("write-config", "echo x > \"$HOME/.claude/state\""),
        probe("read-ssh", "cat \"$HOME/.ssh/id\" 2>&1"),
    ]
    .concat();
    let body = work(&grants, "/bin/sh", &script);
    says(&body, "write-config", true);
    says(&body, "read-ssh", false);
    // Without the preset the same write is refused.
    let plain = town.grants(&format!("{PROGRAMS}\nenv = [\"HOME\"]"));
    let body = work(&plain, "/bin/sh", &script);
    says(&body, "write-config", false);
    let d = c.describe();
    assert!(
        d.contains(".claude") && d.contains("tcp to port 443"),
        "{d}"
    );
}

#[test]
fn every_preset_resolves() {
    let town = Town::new();
    for p in exec::presets::PRESETS {
        let c = town.confined(&format!("{PROGRAMS}\npreset = \"{}\"", p.name));
        let conf = c.sandbox.confine.as_ref().unwrap();
        assert_eq!(conf.network, Network::Ports(vec![443]), "{}", p.name);
        for d in p.config_dirs {
            assert!(conf.write.contains(&home().join(d)), "{}: {conf:?}", p.name);
        }
    }
    // Two at once; a preset's port joins the listed ones.
    let c = town.confined(&format!(
        "{PROGRAMS}\npreset = [\"codex\", \"gemini\"]\nnetwork = [8080]"
    ));
    let conf = c.sandbox.confine.as_ref().unwrap();
    assert_eq!(conf.network, Network::Ports(vec![443, 8080]));
}

#[test]
fn a_private_temp_dir_is_passed_as_tmpdir() {
    let town = Town::new();
    let grants = town.grants(PROGRAMS);
    let script = [
        probe(
            "mktemp",
            "f=$(mktemp) && echo ok > \"$f\" && echo \"at $f\"",
        ),
        probe("shared-tmp", "echo x > /tmp/tt-confine-shared-$$ 2>&1"),
    ]
    .concat();
    let body = work(&grants, "/bin/sh", &script);
    says(&body, "mktemp", true);
    says(&body, "shared-tmp", false);
    let tmp = town.root.join(".tt/tmp/w");
    assert!(body.contains(&format!("at {}/", tmp.display())), "{body}");
    // A grant that passes the host's TMPDIR (when the host has one) keeps it.
    let c = town.confined(&format!("{PROGRAMS}\nenv = [\"TMPDIR\"]"));
    let passed: Vec<&String> = c
        .exec
        .env
        .iter()
        .filter(|(k, _)| k == "TMPDIR")
        .map(|(_, v)| v)
        .collect();
    match std::env::var("TMPDIR") {
        Ok(host) => assert_eq!(passed, [&host]),
        Err(_) => assert_eq!(passed, [&tmp.display().to_string()]),
    }
}

#[test]
fn limits_are_set_in_the_child() {
    let town = Town::new();
    let grants = town.grants(&format!(
        "{PROGRAMS}\nmemory_mb = 200\ncpu_secs = 1\ntimeout_ms = 20000"
    ));
    let body = work(&grants, "/bin/sh", "ulimit -v; ulimit -t");
    assert_eq!(body, "exit 0\n204800\n1\n");
    // The memory limit holds: 400 MiB cannot be had, 50 MiB can.
    let alloc = |mb: u32| {
        format!(
            "try:\n    b = bytearray({mb} << 20)\n    print('alloc yes')\nexcept MemoryError:\n    \
             print('alloc no')\n"
        )
    };
    says(
        &work(&grants, "/usr/bin/python3", &alloc(400)),
        "alloc",
        false,
    );
    says(
        &work(&grants, "/usr/bin/python3", &alloc(50)),
        "alloc",
        true,
    );
    // The CPU limit ends a busy loop (SIGXCPU), well before the exec timeout.
    let started = Instant::now();
    let body = work(&grants, "/bin/sh", "while :; do :; done");
    assert_eq!(body, "exit signal\n");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Without limits: the program has the limits of the host (this test process).
    let limits = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("Max address space") || l.starts_with("Max cpu time"))
            .map(str::to_string)
            .collect()
    };
    let ours = std::fs::read_to_string("/proc/self/limits").unwrap();
    let theirs = work(&town.grants(PROGRAMS), "/bin/sh", "cat /proc/self/limits");
    assert_eq!(limits(&theirs), limits(&ours));
    assert_eq!(limits(&ours).len(), 2, "{ours}");
    // Limits apply with the sandbox off too.
    let off = town.grants(&format!("{PROGRAMS}\nsandbox = \"off\"\nmemory_mb = 300"));
    assert_eq!(work(&off, "/bin/sh", "ulimit -v"), "exit 0\n307200\n");
}

#[test]
fn a_kernel_without_the_demanded_abi_refuses_the_grant() {
    let town = Town::new();
    let kernel = kernel_abi();
    assert!(
        kernel >= 4,
        "this test needs Landlock ABI 4 or newer (kernel has {kernel})"
    );
    // The kernel's own ABI is enough...
    town.grants(&format!("{PROGRAMS}\nsandbox_abi = {kernel}"));
    // ...one above it is not: the grant does not resolve, so the agent does not start.
    let e = town.refused(&format!("{PROGRAMS}\nsandbox_abi = {}", kernel + 1));
    assert!(
        e.contains(&format!("[agents.w.exec] sandbox_abi = {}:", kernel + 1))
            && e.contains(&format!("this kernel offers Landlock ABI {kernel}"))
            && e.contains("the agent does not start")
            && e.contains("sandbox = \"off\""),
        "{e}"
    );
    // sandbox = "off" is the explicit way out.
    let off = town.grants(&format!(
        "{PROGRAMS}\nsandbox = \"off\"\nsandbox_abi = {}",
        kernel + 1
    ));
    assert!(!off.get::<ConfinedExec>().unwrap().sandbox.is_confined());
}

#[test]
fn a_sandbox_that_cannot_be_applied_keeps_the_program_from_running() {
    let town = Town::new();
    let c = town.confined(PROGRAMS);
    // The kernel changed under a resolved grant (simulated): exec fails, nothing runs.
    let mut broken = (*c).clone();
    broken.sandbox.confine.as_mut().unwrap().abi = kernel_abi() + 1;
    let grants = Grants::none().with("exec", Arc::new(broken));
    let e = try_work(&grants, "/bin/sh", "echo ran > ran.txt").unwrap_err();
    assert!(
        e.contains("cannot confine") && e.contains("does not run"),
        "{e}"
    );
    assert!(!town.workdir().join("ran.txt").exists());
    // The grant as resolved runs it.
    let grants = Grants::none().with("exec", c);
    work(&grants, "/bin/sh", "echo ran > ran.txt");
    assert!(town.workdir().join("ran.txt").exists());
}

#[test]
fn a_replaced_workdir_or_listed_file_is_reachable_again() {
    // Rules hold inodes: the host notices a path that leads elsewhere now and builds anew.
    let town = Town::new();
    std::fs::write(town.outside.join("data"), "FIRST\n").unwrap();
    let grants = town.grants(&format!(
        "{PROGRAMS}\nread = [\"{}\"]",
        town.outside.join("data").display()
    ));
    let data = town.outside.join("data");
    let script = format!("echo x > f && echo wrote; cat {}", data.display());
    assert_eq!(work(&grants, "/bin/sh", &script), "exit 0\nwrote\nFIRST\n");
    std::fs::remove_dir_all(town.workdir()).unwrap();
    std::fs::create_dir_all(town.workdir()).unwrap();
    std::fs::write(town.outside.join("data.new"), "SECOND\n").unwrap();
    std::fs::rename(town.outside.join("data.new"), &data).unwrap();
    assert_eq!(work(&grants, "/bin/sh", &script), "exit 0\nwrote\nSECOND\n");
}

#[test]
fn a_bare_exec_grant_runs_in_the_default_sandbox() {
    // What tests and hosts that build an ExecGrant in code get: confined to its workdir.
    let town = Town::new();
    ensure_workdir(&town);
    let grant = ExecGrant {
        allow: vec![PathBuf::from("/bin/sh").canonicalize().unwrap()],
        env: vec![],
        workdir: town.workdir(),
        town_dir: town.root.clone(),
        timeout: Duration::from_secs(10),
        output_bytes: 1 << 20,
    };
    let grants = Grants::none().with("exec", Arc::new(grant));
    let d = exec::describe(&grants).unwrap();
    assert!(d.starts_with("landlock") && d.contains("net none"), "{d}");
    let body = work(&grants, "/bin/sh", &fs_probes(&town));
    says(&body, "write-workdir", true);
    says(&body, "write-outside", false);
    says(&body, "read-ssh", false);
    says(&body, "read-tt", false);
    assert!(exec::describe(&Grants::none()).is_none());
}

#[test]
fn stderr_says_the_sandbox_may_have_refused() {
    let town = Town::new();
    let c = town.confined(PROGRAMS);
    let cmd = |script: &str| ExecCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        stdin: None,
        timeout_ms: None,
    };
    let ssh = format!("cat {}/.ssh/id", home().display());
    let out = tinytown::runtime::block_on(c.exec.run_in(&c.sandbox, "w", None, cmd(&ssh))).unwrap();
    assert_eq!(out.status, Some(1));
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("[tinytown] this program ran confined by [agents.w.exec]")
            && out.stderr.contains("landlock"),
        "{}",
        out.stderr
    );
    // No note when it succeeded, nor without the sandbox.
    let out = tinytown::runtime::block_on(c.exec.run_in(&c.sandbox, "w", None, cmd("echo fine")))
        .unwrap();
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let off = town.confined(&format!("{PROGRAMS}\nsandbox = \"off\""));
    let script = "echo 'Permission denied' >&2; exit 1";
    let out =
        tinytown::runtime::block_on(off.exec.run_in(&off.sandbox, "w", None, cmd(script))).unwrap();
    assert_eq!(out.stderr, "Permission denied\n");
}

#[test]
fn describe_says_what_a_program_can_reach() {
    let town = Town::new();
    let c = town.confined(PROGRAMS);
    let d = c.describe();
    assert!(
        d.starts_with("landlock (ABI >= 4) + seccomp: write "),
        "{d}"
    );
    assert!(d.contains(&town.workdir().display().to_string()), "{d}");
    assert!(d.contains("net none") && d.contains("limits: none"), "{d}");
    assert!(
        d.contains("/usr/bin/dash"),
        "the allowed programs are readable: {d}"
    );
    let c = town.confined(&format!(
        "{PROGRAMS}\nnetwork = [443, 22]\nmemory_mb = 512\ncpu_secs = 60"
    ));
    let d = c.describe();
    assert!(d.contains("tcp to ports 22, 443"), "{d}");
    assert!(d.contains("address space 512 MiB, cpu 60 s"), "{d}");
}

#[test]
fn sandbox_settings_are_checked_and_errors_name_them() {
    let town = Town::new();
    std::fs::create_dir_all(town.root.join("sub")).unwrap();
    for (exec, wanted) in [
        (
            "sandbox = \"maybe\"",
            "[agents.w.exec] sandbox = \"maybe\": use \"on\"",
        ),
        ("sandbox_abi = 0", "[agents.w.exec] sandbox_abi = 0"),
        (
            "sandbox_abi = 3",
            "[agents.w.exec] sandbox_abi = 3 is below 4",
        ),
        (
            "preset = \"vim\"",
            "[agents.w.exec] preset: there is no preset \"vim\"",
        ),
        (
            "preset = 3",
            "preset: expected a preset name or a list of names",
        ),
        ("network = \"some\"", "[agents.w.exec] network = \"some\""),
        ("network = [0]", "[agents.w.exec] network: port 0"),
        ("network = 443", "\"none\", \"full\" or a list of TCP ports"),
        ("memory_mb = 0", "[agents.w.exec] memory_mb = 0"),
        ("cpu_secs = 0", "[agents.w.exec] cpu_secs = 0"),
        (
            "read = [\"nowhere\"]",
            "[agents.w.exec] read: `nowhere` does not exist",
        ),
        (
            "write = [\"~/nowhere\"]",
            "[agents.w.exec] write: `~/nowhere` does not exist",
        ),
        (
            "read = [\".\"]",
            "[agents.w.exec] read: `.` holds the town's",
        ),
        (
            "write = [\"/\"]",
            "[agents.w.exec] write: `/` holds the town's",
        ),
        ("workdir = \".\"", "[agents.w.exec] workdir: "),
    ] {
        let e = town.refused(&format!("{PROGRAMS}\n{exec}"));
        assert!(e.contains(wanted), "{exec}: {e}");
    }
    // The allowed side of each: fine values resolve.
    for exec in [
        "sandbox = \"on\"",
        "sandbox_abi = 4",
        "sandbox_abi = 1\nnetwork = \"full\"",
        "preset = \"aider\"",
        "network = \"none\"",
        "network = []",
        "memory_mb = 1\ncpu_secs = 1",
        "read = [\"sub\"]\nwrite = [\"~\"]",
        "workdir = \"sub\"",
    ] {
        town.grants(&format!("{PROGRAMS}\n{exec}"));
    }
}

#[test]
fn a_temp_dir_that_cannot_be_made_refuses_the_grant() {
    let town = Town::new();
    std::fs::write(town.root.join(".tt/tmp"), "not a directory").unwrap();
    let e = town.refused(PROGRAMS);
    assert!(e.contains("[agents.w.exec] temp dir"), "{e}");
    let off = town.grants(&format!("{PROGRAMS}\nsandbox = \"off\""));
    assert!(off.has("exec"));
}

/// The cost of confinement per exec: median start-to-exit of `/bin/true`, confined and not.
#[test]
#[ignore]
fn bench_confinement_cost_per_exec() {
    let town = Town::new();
    let confined = town.confined(r#"allow = ["/bin/true"]"#);
    let off = town.confined("allow = [\"/bin/true\"]\nsandbox = \"off\"");
    let run = |c: &ConfinedExec| {
        let cmd = ExecCommand {
            program: "/bin/true".into(),
            args: vec![],
            stdin: None,
            timeout_ms: None,
        };
        let t = Instant::now();
        let out = tinytown::runtime::block_on(c.exec.run_in(&c.sandbox, "w", None, cmd)).unwrap();
        assert_eq!(out.status, Some(0));
        t.elapsed()
    };
    let median = |c: &ConfinedExec| {
        for _ in 0..10 {
            run(c);
        }
        let mut v: Vec<Duration> = (0..200).map(|_| run(c)).collect();
        v.sort();
        v[v.len() / 2]
    };
    // Interleave the two so that machine noise hits both alike.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        a.push(median(&confined));
        b.push(median(&off));
    }
    a.sort();
    b.sort();
    let (on, unconfined) = (a[1], b[1]);
    println!(
        "exec of /bin/true, median of 200 (middle of 3 rounds): confined {:.3} ms, \
         unconfined {:.3} ms, added {:.3} ms",
        on.as_secs_f64() * 1e3,
        unconfined.as_secs_f64() * 1e3,
        (on.as_secs_f64() - unconfined.as_secs_f64()) * 1e3
    );
}

fn sh(script: &str) -> ExecCommand {
    ExecCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        stdin: None,
        timeout_ms: None,
    }
}

/// The `SigBlk` and `SigIgn` masks of /proc/PID/status.
fn signal_masks(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| l.starts_with("SigBlk:") || l.starts_with("SigIgn:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_program_starts_with_no_signal_blocked_or_ignored() {
    // The host blocks every signal around the clone that starts a program, and Rust ignores
    // SIGPIPE for itself; the program gets neither, confined or not.
    let ours = signal_masks(&std::fs::read_to_string("/proc/self/status").unwrap());
    assert!(
        ours.iter()
            .any(|l| l.starts_with("SigIgn:") && !l.ends_with("0000000000000000")),
        "the test process should ignore SIGPIPE: {ours:?}"
    );
    let town = Town::new();
    ensure_workdir(&town);
    for exec in [
        PROGRAMS.to_string(),
        format!("{PROGRAMS}\nsandbox = \"off\""),
    ] {
        let c = town.confined(&exec);
        let out = tinytown::runtime::block_on(c.exec.run_in(
            &c.sandbox,
            "w",
            None,
            sh("exec cat /proc/self/status"),
        ))
        .unwrap();
        assert_eq!(out.status, Some(0), "{}", out.stderr);
        assert_eq!(
            signal_masks(&out.stdout),
            ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"],
            "{exec}"
        );
    }
}

#[test]
fn a_program_that_cannot_start_says_which_step_failed() {
    let town = Town::new();
    // No work directory to enter.
    let off = town.confined(&format!("{PROGRAMS}\nsandbox = \"off\""));
    let _ = std::fs::remove_dir_all(town.workdir());
    let e = tinytown::runtime::block_on(off.exec.run_in(&off.sandbox, "w", None, sh("true")))
        .unwrap_err();
    assert!(
        e.contains("cannot start `")
            && e.contains("`: entering its work directory failed: No such file"),
        "{e}"
    );
    // A listed program that cannot be executed, confined and not.
    ensure_workdir(&town);
    let program = town.root.join("not-executable");
    std::fs::write(&program, "#!/bin/sh\necho ran\n").unwrap();
    let allow = format!("allow = [\"{}\"]", program.display());
    for exec in [allow.clone(), format!("{allow}\nsandbox = \"off\"")] {
        let c = town.confined(&exec);
        let cmd = ExecCommand {
            program: program.display().to_string(),
            args: vec![],
            stdin: None,
            timeout_ms: None,
        };
        let e = tinytown::runtime::block_on(c.exec.run_in(&c.sandbox, "w", None, cmd)).unwrap_err();
        assert!(
            e.contains("executing it failed") && e.contains("Permission denied"),
            "{exec}: {e}"
        );
    }
    // The same program, made executable, runs: the failure above was the missing mode.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = town.confined(&format!("{allow}\nsandbox = \"off\""));
    let cmd = ExecCommand {
        program: program.display().to_string(),
        args: vec![],
        stdin: None,
        timeout_ms: None,
    };
    assert_eq!(
        tinytown::runtime::block_on(c.exec.run_in(&c.sandbox, "w", None, cmd))
            .unwrap()
            .stdout,
        "ran\n"
    );
}
