//! The cost of confining a program that `exec` starts: `/bin/true` through a confined grant,
//! through the same grant with `sandbox = "off"`, and through std's `Command` (posix_spawn) as
//! the baseline of a program's start, interleaved so that machine noise hits all three. Run in
//! a small host and again in one that holds the big compiled plugins, since the cost of
//! starting a process from a big one is what confinement must not pay (see `exec/spawn.rs`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{ms, BenchOptions};
use crate::runtime::bindings::tinytown::agent::exec::Command;
use crate::runtime::capabilities::exec::{ConfinedExec, ExecConfig};
use crate::store::config::Config;

/// `tt bench exec`: the cost in a small host, then with the Python and JavaScript reviewers
/// compiled and held (a host serving them is that big).
pub(super) async fn suite(opts: &BenchOptions) -> Result<()> {
    confinement_cost(&format!("(host RSS {} MiB)", super::rss_kib() / 1024)).await?;
    let rt = crate::runtime::Runtime::new(None, false)?;
    let mut held = Vec::new();
    for name in ["reviewer-py", "reviewer-js"] {
        let path = opts.plugins.join(format!("{name}.wasm"));
        match std::fs::read(&path) {
            Ok(bytes) => held.push(rt.compile(&path, &bytes)?),
            Err(_) => println!("{name}: not built (bash plugins/build.sh)"),
        }
    }
    confinement_cost(&format!(
        "(host RSS {} MiB, {} big plugins held)",
        super::rss_kib() / 1024,
        held.len()
    ))
    .await?;
    drop(held);
    Ok(())
}

/// `when` says how big the measuring process is: starting a process by fork costs in
/// proportion to the parent's address space; by `clone(CLONE_VM)` (ours) or posix_spawn, not.
pub(super) async fn confinement_cost(when: &str) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("ttb-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = Config::new("bench", &dir);
    let grant = |sandbox: Option<&str>| {
        let c = ExecConfig {
            allow: vec!["/bin/true".into()],
            sandbox: sandbox.map(str::to_string),
            ..Default::default()
        };
        ConfinedExec::from_config(&config, "bench", &c)
    };
    let (confined, off) = match (grant(None), grant(Some("off"))) {
        (Ok(c), Ok(o)) => (c, o),
        (Err(e), _) | (_, Err(e)) => {
            println!("exec confinement: cannot confine here: {e:#}");
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(());
        }
    };
    async fn run(g: &ConfinedExec) -> Result<Duration> {
        let cmd = Command {
            program: "/bin/true".into(),
            args: vec![],
            stdin: None,
            timeout_ms: None,
        };
        let t = Instant::now();
        g.exec
            .run_in(&g.sandbox, "bench", None, cmd)
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(t.elapsed())
    }
    let std_spawn = || -> Result<Duration> {
        let t = Instant::now();
        std::process::Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()?;
        Ok(t.elapsed())
    };
    let (mut with, mut without, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..200 {
        with.push(run(&confined).await?);
        without.push(run(&off).await?);
        baseline.push(std_spawn()?);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (a, b, c) = (
        median(&mut with),
        median(&mut without),
        median(&mut baseline),
    );
    println!(
        "exec /bin/true {when}, median of 200: confined {}  sandbox off {}  std posix_spawn {}  \
         added by confinement {}   (target < 2 ms)",
        ms(a),
        ms(b),
        ms(c),
        ms(a.saturating_sub(c))
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
