//! Promises that hold (issue 10): one serving process per host name, every delivery counted,
//! and a town whose memory stays bounded. Real `tt host` processes, real Redis, the real
//! `chaos` plugin (its `count` command increments a state counter, so a lost or doubled
//! update shows in the count).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{expect_code, host_until_idle, plugin, run_timeout, TestTown};
use serde_json::Value;

fn chaos_town(extra: &str) -> TestTown {
    let town = TestTown::new();
    town.write_config(&format!(
        "[town]\nname = \"test\"\n\n[host]\nlease_ms = 2000\nheartbeat_ms = 200\n\n\
         [agents.c]\nrole = \"chaos\"\nplugin = \"{}\"\n{extra}",
        plugin("chaos")
    ));
    town.ok(&["spawn", "c"]);
    town
}

fn count(town: &TestTown) -> u64 {
    town.redis(&["HGET", &town.key("state:c"), "count"])
        .trim()
        .parse()
        .unwrap_or(0)
}

fn send_counts(town: &TestTown, n: usize) {
    // One `tt send` per message is slow; the applier takes them in one pipeline of units.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let ops = chunk
                .iter()
                .map(|_| {
                    tinytown::store::applier::Op::send(
                        "c",
                        tinytown::store::model::Kind::Task,
                        "count",
                    )
                })
                .collect();
            t.db.apply_human("conductor", ops).await.unwrap();
        }
    });
}

fn dead_letters(town: &TestTown) -> Vec<Value> {
    town.json(&["dlq", "list", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until `f` holds, or panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_host_with_a_live_name_is_refused_and_nothing_is_counted_twice() {
    let town = chaos_town("");
    let n = 2_000;
    send_counts(&town, n);
    let mut first = town
        .command(&["host", "--name", "h1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the first host to start counting",
        Duration::from_secs(30),
        || count(&town) > 0,
    );
    // The second, with the same name (as two `tt host` without --name on one machine are).
    let args = ["host", "--name", "h1", "--until-idle"];
    let out = run_timeout(town.command(&args), Duration::from_secs(30));
    let err = expect_code(&args, &out, 1);
    assert!(
        err.contains("host name `h1` is in use by another live `tt host` (pid ")
            && err.contains(&format!("pid {}", first.id()))
            && err.contains("last heartbeat"),
        "{err}"
    );
    assert!(err.contains("--name OTHER"), "{err}");
    wait_for("the first host to finish", Duration::from_secs(60), || {
        count(&town) >= n as u64
    });
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    assert!(first.wait().unwrap().success());
    assert_eq!(count(&town), n as u64, "every increment exactly once");
    assert!(dead_letters(&town).is_empty());
}

#[test]
fn a_restart_under_the_same_name_starts_at_once_after_a_clean_stop_or_a_crash() {
    let town = chaos_town("");
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let before = count(&town);
        send_counts(&town, 100);
        let mut host = town
            .command(&["host", "--name", "h1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the host to serve", Duration::from_secs(30), || {
            count(&town) > before
        });
        // Its heartbeat is written, then it goes.
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(host.id() as i32, signal) };
        host.wait().unwrap();
        send_counts(&town, 100);
        // At once, inside the 2 s claim: it was released, or its process is gone. Were the
        // claim still taken as live, this host would be refused and exit 1.
        host_until_idle(&town, Duration::from_secs(60));
    }
    assert_eq!(count(&town), 400, "every increment exactly once");
}
