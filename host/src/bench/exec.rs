//! The cost of confining a program that `exec` starts: `/bin/true` through a confined grant and
//! through the same grant with `sandbox = "off"`, interleaved so that machine noise hits both.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::ms;
use crate::runtime::bindings::tinytown::agent::exec::Command;
use crate::runtime::capabilities::exec::{ConfinedExec, ExecConfig};
use crate::store::config::Config;

/// `when` says how big the measuring process is: a confined program is started with fork,
/// whose cost grows with the parent's address space (an unconfined one uses posix_spawn).
pub(super) fn confinement_cost(when: &str) -> Result<()> {
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
    let run = |g: &ConfinedExec| -> Result<Duration> {
        let cmd = Command {
            program: "/bin/true".into(),
            args: vec![],
            stdin: None,
            timeout_ms: None,
        };
        let t = Instant::now();
        g.exec
            .run_in(&g.sandbox, "bench", cmd)
            .map_err(anyhow::Error::msg)?;
        Ok(t.elapsed())
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        with.push(run(&confined)?);
        without.push(run(&off)?);
    }
    with.sort();
    without.sort();
    let (a, b) = (with[with.len() / 2], without[without.len() / 2]);
    println!(
        "exec /bin/true {when}, median of 200: confined {}  unconfined {}  added {}   (target added < 2 ms)",
        ms(a),
        ms(b),
        ms(a.saturating_sub(b))
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
