//! Promises that hold (issue 10): one serving process per host name, every delivery counted,
//! and a town whose memory stays bounded. Real `tt host` processes, real Redis, the real
//! `chaos` plugin (its `count` command increments a state counter, so a lost or doubled
//! update shows in the count).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{expect_code, host_until_idle, plugin, run_timeout, TestTown};
use serde_json::Value;
use tinytown::store::lease::Claim;

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

/// `tt host --name h1` in the background, its output discarded.
fn start_host(town: &TestTown) -> std::process::Child {
    town.command(&["host", "--name", "h1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn count(town: &TestTown) -> u64 {
    town.redis(&["HGET", &town.key("state:c"), "count"])
        .trim()
        .parse()
        .unwrap_or(0)
}

fn send_counts(town: &TestTown, n: usize) {
    // One `tt send` per message is slow; the applier takes them in one pipeline of units.
    rt().block_on(async {
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
    let mut first = start_host(&town);
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
        let mut host = start_host(&town);
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

/// The delivery count of the oldest pending entry of c's inbox (0 when none is pending).
fn deliveries(town: &TestTown) -> u64 {
    let out = town.redis(&["XPENDING", &town.key("inbox:c"), "tt", "-", "+", "1"]);
    out.lines()
        .nth(3)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_message_that_crashes_its_host_is_dead_lettered_after_max_deliveries() {
    // `loop` never returns within the (long) call timeout: the host is killed while handling
    // it, as if the message crashed it. Each restart delivers it again.
    let town = chaos_town("[agents.c.limits]\nmax_deliveries = 2\ncall_timeout_ms = 600000\n");
    town.ok(&["send", "c", "loop"]);
    town.ok(&["send", "c", "count"]);
    for round in 1..=3 {
        let mut host = start_host(&town);
        // Delivered once more (the first pending entry is the `loop` message).
        wait_for(
            "the host to take the message",
            Duration::from_secs(30),
            || deliveries(&town) == round,
        );
        if round > 1 {
            // A redelivered message is marked when its handling begins, after the plugin
            // loads (a kill while loading is not counted against it), and the previous
            // process's mark is counted then.
            wait_for("the handling to begin", Duration::from_secs(60), || {
                let all = town.redis(&["HGETALL", &town.key("attempts:c")]);
                let lines: Vec<&str> = all.lines().map(str::trim).collect();
                let field = |name: &str| {
                    lines
                        .chunks(2)
                        .find(|kv| kv[0].ends_with(name))
                        .and_then(|kv| kv.get(1).copied())
                };
                let starts: u64 = field("!starts").and_then(|v| v.parse().ok()).unwrap_or(0);
                field("!current").is_some() && starts == round - 2
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(host.id() as i32, libc::SIGKILL) };
        host.wait().unwrap();
        assert!(dead_letters(&town).is_empty(), "round {round}");
    }
    // The first crash is in a fresh delivery (not marked); the next two are counted: the fourth
    // delivery is dead-lettered without running, and the mail behind it is served.
    host_until_idle(&town, Duration::from_secs(60));
    let dlq = dead_letters(&town);
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let reason = dlq[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("2 deliveries failed without it being applied (limits.max_deliveries = 2)")
            && reason.contains("the host stopped or crashed while handling it"),
        "{reason}"
    );
    assert_eq!(count(&town), 1);
    // It can be retried from the dead letters like any other.
    let id = dlq[0]["id"].as_str().unwrap().to_string();
    town.ok(&["dlq", "drop", &id]);
}

#[test]
fn a_unit_redis_refuses_is_dead_lettered_alone_and_the_rest_is_applied() {
    let town = chaos_town("[agents.c.limits]\nmax_deliveries = 3\n");
    // Redis takes no argument over 1 MiB here: a handling whose unit is bigger cannot be
    // applied, whatever the plugin does.
    town.redis(&["CONFIG", "SET", "proto-max-bulk-len", "1048576"]);
    for _ in 0..5 {
        town.ok(&["send", "c", "count"]);
    }
    town.ok(&["send", "c", "huge 1100000"]);
    for _ in 0..5 {
        town.ok(&["send", "c", "count"]);
    }
    let log = host_until_idle(&town, Duration::from_secs(90));
    assert_eq!(
        count(&town),
        10,
        "the messages around it were applied: {:?} {}",
        dead_letters(&town),
        log
    );
    let dlq = dead_letters(&town);
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let reason = dlq[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "deliveries failed without it being applied (limits.max_deliveries = 3); last: applying it failed"
        ),
        "{reason}"
    );
}

#[test]
fn a_dead_hosts_messages_are_reclaimed_in_one_pass_over_its_pending_list() {
    // 200 messages held by a host that is gone, idle for an hour. XAUTOCLAIM takes 64 at a
    // time; the host follows its cursor through the whole list at once. (Without it, the rest
    // would wait for the next pass, half a 30 s lease later: past this test's limit.)
    let town = TestTown::new();
    town.write_config(&format!(
        "[town]\nname = \"test\"\n\n[host]\nlease_ms = 30000\nheartbeat_ms = 200\n\n\
         [agents.c]\nrole = \"chaos\"\nplugin = \"{}\"\n",
        plugin("chaos")
    ));
    town.ok(&["spawn", "c"]);
    send_counts(&town, 200);
    let inbox = town.key("inbox:c");
    town.redis(&[
        "XREADGROUP",
        "GROUP",
        "tt",
        "gone",
        "COUNT",
        "1000",
        "STREAMS",
        &inbox,
        ">",
    ]);
    let ids = town.redis(&["XRANGE", &inbox, "-", "+"]);
    let ids: Vec<&str> = ids
        .lines()
        .filter(|l| l.contains('-') && l.len() > 12)
        .collect();
    assert_eq!(ids.len(), 200);
    let mut args = vec!["XCLAIM", &inbox, "tt", "gone", "0"];
    args.extend(ids.iter().copied());
    args.extend(["IDLE", "3600000", "JUSTID"]);
    town.redis(&args);
    let args = ["host", "--until-idle", "--name", "h1"];
    let out = run_timeout(town.command(&args), Duration::from_secs(12));
    expect_code(&args, &out, 0);
    assert_eq!(count(&town), 200);
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_command_sent_twice_with_one_idempotency_key_applies_once() {
    let town = chaos_town("");
    rt().block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        let unit = tinytown::store::applier::Unit {
            ops: vec![tinytown::store::applier::Op::send(
                "c",
                tinytown::store::model::Kind::Info,
                "once",
            )],
            by: Some("conductor".into()),
            human: true,
            idem: Some("k1".into()),
            ..Default::default()
        };
        // As a connection retrying the call after a lost reply would send it.
        let first = t.db.apply(std::slice::from_ref(&unit)).await.unwrap();
        let again = t.db.apply(std::slice::from_ref(&unit)).await.unwrap();
        assert_eq!(first, again, "the repeat gets the first result");
        assert_eq!(first[0].message_ids().len(), 1);
        // Another key is another command.
        let other = tinytown::store::applier::Unit {
            idem: Some("k2".into()),
            ..unit
        };
        t.db.apply(&[other]).await.unwrap();
    });
    assert_eq!(town.xlen("inbox:c"), 2);
}

#[test]
fn a_send_after_a_prune_in_the_same_call_finds_the_agent_gone() {
    // The applier reads each agent's record once per call while its units only send; a unit
    // that may change records (here a prune) makes the units after it read them again.
    let town = TestTown::new();
    town.ok(&["spawn", "x", "--role", "mailbox"]);
    town.ok(&["kill", "x"]);
    use tinytown::store::applier::{Op, Unit};
    use tinytown::store::model::{AgentState, Kind};
    let human = |ops: Vec<Op>| Unit {
        ops,
        by: Some("conductor".into()),
        human: true,
        ..Default::default()
    };
    let send = || human(vec![Op::send("x", Kind::Info, "hello")]);
    let prune = human(vec![Op::Prune {
        name: "x".into(),
        states: vec![AgentState::Stopped],
    }]);
    let err = rt().block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        t.db.apply(&[send(), prune, send()]).await.unwrap_err()
    });
    assert!(
        format!("{err:#}").contains("agent `x` not found"),
        "the second send is refused: {err:#}"
    );
    // Nothing was written for a pruned agent: no mailbox came back to life.
    assert_eq!(town.xlen("inbox:x"), 0);
    let record = town.redis(&["EXISTS", &town.key("agent:x")]);
    assert_eq!(record.trim(), "0", "the record stays gone");
}

#[test]
fn clearing_the_conductor_inbox_keeps_what_arrived_after_it_was_shown() {
    let town = chaos_town("");
    town.ok(&["send", "conductor", "seen 1"]);
    town.ok(&["send", "conductor", "seen 2", "--urgent"]);
    rt().block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        let shown = t.inbox("conductor").await.unwrap();
        assert_eq!(shown.waiting.len(), 2);
        t.send(
            "conductor",
            "arrived meanwhile",
            tinytown::store::model::Kind::Info,
            false,
            None,
        )
        .await
        .unwrap();
        assert_eq!(t.clear_conductor_inbox(&shown).await.unwrap(), 2);
        let left = t.inbox("conductor").await.unwrap();
        assert_eq!(left.waiting.len(), 1);
        assert_eq!(
            left.waiting[0].message.as_ref().unwrap().body,
            "arrived meanwhile"
        );
    });
    // The command shows, then clears what it showed.
    let out = town.ok(&["inbox", "--clear"]);
    assert!(
        out.contains("arrived meanwhile") && out.contains("marked 1 messages read"),
        "{out}"
    );
    assert_eq!(town.xlen("inbox:conductor"), 0);
}

#[test]
fn a_pruned_agents_mail_is_dead_lettered_whole_and_retryable() {
    let town = TestTown::new();
    town.ok(&["spawn", "x", "--role", "mailbox"]);
    for i in 0..3 {
        town.ok(&["send", "x", &format!("letter {i}")]);
    }
    town.ok(&["kill", "x"]);
    town.ok(&["prune"]);
    let dlq = dead_letters(&town);
    assert_eq!(dlq.len(), 3);
    assert_eq!(dlq[0]["orig.body"], "letter 0", "{:?}", dlq[0]);
    town.ok(&["spawn", "x", "--role", "mailbox"]);
    for d in &dlq {
        town.ok(&["dlq", "retry", d["id"].as_str().unwrap()]);
    }
    let inbox = town.inbox("x");
    let bodies: Vec<&str> = inbox["waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["letter 0", "letter 1", "letter 2"]);
    assert!(dead_letters(&town).is_empty());
}

#[test]
fn a_dead_letter_without_its_message_is_refused_by_retry_and_kept() {
    let town = TestTown::new();
    town.ok(&["spawn", "x", "--role", "mailbox"]);
    let id = town.redis(&[
        "XADD",
        &town.key("dlq"),
        "*",
        "agent",
        "x",
        "stream",
        "inbox",
        "reason",
        "old",
    ]);
    town.refused(&["dlq", "retry", &id], 1, &["kept no message to retry"]);
    assert_eq!(
        dead_letters(&town).len(),
        1,
        "a refused retry changes nothing"
    );
    assert_eq!(town.xlen("inbox:x"), 0);
}

#[test]
fn a_lease_holds_while_its_holders_claim_does_and_a_lapsed_one_keeps_its_token() {
    let town = chaos_town("");
    rt().block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        let ttl = Duration::from_secs(30);
        let claim = |host: &'static str, instance: &'static str, gone: Option<&'static str>| {
            let db = &t.db;
            async move { db.renew_host(host, instance, gone, ttl).await.unwrap() }
        };
        let key = t.db.keys.lease("c");
        let mut c = t.db.conn.clone();
        assert_eq!(claim("h", "1", None).await, Claim::Taken);
        assert_eq!(claim("h", "1", None).await, Claim::Renewed);
        let first = t.db.lease("c", "h/1", None).await.unwrap().unwrap();
        // It has no TTL of its own: the claim of its holder's name keeps it.
        let ttl_ms: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(
            ttl_ms, -1,
            "a lease expires with its holder's claim, not by itself"
        );
        // Another host cannot take it while h/1's claim lives.
        assert_eq!(claim("h2", "9", None).await, Claim::Taken);
        assert!(t.db.lease("c", "h2/9", None).await.unwrap().is_none());
        // Gone, nobody took it: the same token (work fenced with it still applies).
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        let again = t.db.lease("c", "h/1", Some(&first)).await.unwrap();
        assert_eq!(again.as_deref(), Some(first.as_str()));
        // h/1's claim lapses: another host takes the lease with a new token, and h/1, back,
        // is refused while h2/9 lives.
        let _: () = redis::cmd("DEL")
            .arg(t.db.keys.host_claim("h"))
            .query_async(&mut c)
            .await
            .unwrap();
        let other = t.db.lease("c", "h2/9", None).await.unwrap().unwrap();
        assert!(other != first && other.starts_with("h2/9:"), "{other}");
        assert_eq!(claim("h", "1", None).await, Claim::Taken);
        assert!(t
            .db
            .lease("c", "h/1", Some(&first))
            .await
            .unwrap()
            .is_none());
        // A later process under the same name takes the lease over at once, but only once it
        // holds the name's claim (the earlier one is then gone).
        let _: () = redis::cmd("DEL")
            .arg(t.db.keys.host_claim("h2"))
            .query_async(&mut c)
            .await
            .unwrap();
        let third = t.db.lease("c", "h/1", Some(&first)).await.unwrap().unwrap();
        assert!(
            third != first && third != other && third.starts_with("h/1:"),
            "{third}"
        );
        assert!(t.db.lease("c", "h/2", None).await.unwrap().is_none());
        assert_eq!(claim("h", "2", None).await, Claim::Refused("1".into()));
        assert_eq!(claim("h", "2", Some("1")).await, Claim::Taken);
        let taken = t.db.lease("c", "h/2", None).await.unwrap().unwrap();
        assert!(taken.starts_with("h/2:") && taken != third, "{taken}");
        assert!(t
            .db
            .lease("c", "h/1", Some(&third))
            .await
            .unwrap()
            .is_none());
        // Many at once: the leases another live host holds are left, the free ones taken.
        let asked: Vec<(String, Option<String>)> =
            vec![("c".into(), None), ("d".into(), None), ("e".into(), None)];
        assert_eq!(claim("h3", "5", None).await, Claim::Taken);
        let held = t.db.leases(&asked, "h3/5").await.unwrap();
        assert!(held[0].is_none(), "{held:?}");
        assert!(
            held[1].as_deref().is_some_and(|h| h.starts_with("h3/5:")),
            "{held:?}"
        );
        assert!(
            held[2].as_deref().is_some_and(|h| h.starts_with("h3/5:")),
            "{held:?}"
        );
    });
}
