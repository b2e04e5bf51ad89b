//! A town survives Redis Cluster resharding: while three `tt host` processes move 10,000
//! messages through relay agents on a real three-master cluster, the town's slot is migrated to
//! another master the way an operator does it (`CLUSTER SETSLOT … MIGRATING/IMPORTING`,
//! `MIGRATE` of its keys in batches, `SETSLOT … NODE` on every master), then back. Every
//! message is handled, every effect applied exactly once, nothing dead-lettered, no host dies,
//! and a CLI command started mid-migration finishes.
//!
//! It holds because every script declares every key it touches (`store::script`), so the cluster
//! refuses a call whose keys are split between two masters before it runs, and the client retries
//! it. The key guard that makes an undeclared key an error is checked here too, on a real server.
//!
//! Real `redis-server` processes, real `tt` binaries, real compiled plugins (plugins/dist, built
//! by `bash plugins/build.sh`).

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::fleet::{ms, poll, Host, Probe};
use common::{expect_code, plugin, run_timeout, TestTown};
use tinytown::store::applier::{Op, Unit};
use tinytown::store::script::{self, OnFull};

const TOTAL: u64 = 10_000;

/// tinytown.toml of a town on `cluster`: relay agents `agents`, served by every host at once,
/// forwarding everything to the mailbox-only agent `sink`.
fn relay_config(cluster: &Cluster, agents: &[String]) -> String {
    let relay = plugin("relay");
    let mut text = format!(
        "[town]\nname = \"test\"\n\n[redis]\nurl = \"{}\"\n\n[host]\nlease_ms = 5000\nheartbeat_ms = 200\n\n",
        cluster.url()
    );
    for a in agents {
        text.push_str(&format!(
            "[agents.{a}]\nrole = \"relay\"\nplugin = \"{relay}\"\nmode = \"shared\"\nconfig = {{ next = \"sink\" }}\n\n"
        ));
    }
    text
}

/// A master of the cluster by port, with its node id.
#[derive(Debug, Clone)]
struct Master {
    port: u16,
    id: String,
}

fn masters(cluster: &Cluster) -> Vec<Master> {
    cluster
        .ports()
        .into_iter()
        .map(|port| Master {
            port,
            id: cluster.cli(port, &["cluster", "myid"]),
        })
        .collect()
}

/// The master that serves `slot`, from `CLUSTER NODES` as `any` sees it.
fn owner(cluster: &Cluster, masters: &[Master], slot: u16) -> Master {
    let nodes = cluster.cli(masters[0].port, &["cluster", "nodes"]);
    for line in nodes.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let serves = parts.iter().skip(8).any(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                _ => false, // "[slot->-id]": a migration in progress
            }
        });
        if serves {
            return masters
                .iter()
                .find(|m| m.id == parts[0])
                .cloned()
                .unwrap_or_else(|| panic!("slot {slot} is served by unknown node: {line}"));
        }
    }
    panic!("no master serves slot {slot}:\n{nodes}")
}

/// Moves `slot` from `from` to `to` as an operator would. `mid` runs once the slot is half
/// moved: some keys on each master. Returns how many keys moved.
fn migrate(
    cluster: &Cluster,
    masters: &[Master],
    slot: u16,
    from: &Master,
    to: &Master,
    mut mid: impl FnMut(),
) -> usize {
    let s = slot.to_string();
    let ok = |reply: String, what: &str| assert_eq!(reply, "OK", "{what}");
    ok(
        cluster.cli(to.port, &["cluster", "setslot", &s, "importing", &from.id]),
        "SETSLOT IMPORTING",
    );
    ok(
        cluster.cli(from.port, &["cluster", "setslot", &s, "migrating", &to.id]),
        "SETSLOT MIGRATING",
    );
    let mut moved = 0;
    let mut batches = 0;
    loop {
        // Small batches, so the hosts meet the slot half moved for a while.
        let keys = cluster.cli(from.port, &["cluster", "getkeysinslot", &s, "10"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let port = to.port.to_string();
        let mut args = vec!["migrate", "127.0.0.1", &port, "", "0", "10000", "keys"];
        args.extend(keys.iter().copied());
        let reply = cluster.cli(from.port, &args);
        assert!(
            reply == "OK" || reply == "NOKEY",
            "MIGRATE of {keys:?} replied {reply}"
        );
        moved += keys.len();
        batches += 1;
        if batches == 1 {
            mid();
        }
    }
    // The new owner first, so the slot is never owned by nobody.
    ok(
        cluster.cli(to.port, &["cluster", "setslot", &s, "node", &to.id]),
        "SETSLOT NODE (new owner)",
    );
    for m in masters.iter().filter(|m| m.id != to.id) {
        ok(
            cluster.cli(m.port, &["cluster", "setslot", &s, "node", &to.id]),
            "SETSLOT NODE",
        );
    }
    moved
}

/// How often the masters answered ASK, MOVED, TRYAGAIN or CLUSTERDOWN (`INFO errorstats`).
fn redirect_counts(cluster: &Cluster) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for port in cluster.ports() {
        for line in cluster.cli(port, &["info", "errorstats"]).lines() {
            let Some((name, rest)) = line.trim().split_once(':') else {
                continue;
            };
            let name = name.trim_start_matches("errorstat_");
            if ["ASK", "MOVED", "TRYAGAIN", "CLUSTERDOWN"].contains(&name) {
                let n: u64 = rest
                    .trim_start_matches("count=")
                    .parse()
                    .unwrap_or_else(|_| panic!("INFO errorstats line {line:?}"));
                *out.entry(name.to_string()).or_default() += n;
            }
        }
    }
    out
}

/// `entries-added` of a stream: every XADD it ever took, trimmed or not.
fn entries_added(probe: &Probe, key: &str) -> u64 {
    let mut p = redis::pipe();
    p.cmd("XINFO").arg("STREAM").arg(key);
    let v: Vec<redis::Value> = probe.query(&p);
    let f = tinytown::store::streams::flat_map(&v[0]);
    tinytown::store::streams::int(&f["entries-added"]).unwrap_or(-1) as u64
}

#[test]
fn a_town_survives_its_slot_moving_to_another_master_and_back() {
    let cluster = Cluster::start();
    let agents: Vec<String> = (0..10).map(|i| format!("r{i:02}")).collect();
    let town = TestTown::bare();
    std::fs::create_dir_all(town.path().join(".tt")).unwrap();
    // A short host run first compiles the plugin into the town's cache, so the hosts under
    // test start serving at once.
    town.write_config(&relay_config(&cluster, &agents[..1]));
    let args = ["host", "--until-idle", "--name", "warm"];
    expect_code(
        &args,
        &run_timeout(town.command(&args), Duration::from_secs(120)),
        0,
    );
    town.write_config(&relay_config(&cluster, &agents));
    let probe = Probe::open(town.path());
    probe.spawn(&agents, "relay");
    probe.spawn(&["sink".to_string(), "cli-box".to_string()], "mailbox");

    let mut hosts: Vec<Host> = (1..=3)
        .map(|i| Host::start(&town, &format!("h{i}"), 1))
        .collect();
    poll(
        "the hosts to load every agent's plugin",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            for h in hosts.iter_mut() {
                h.assert_running();
            }
            match hosts.iter().all(|h| h.plugins_loaded() >= agents.len()) {
                true => Ok(()),
                false => Err("still loading".into()),
            }
        },
    );

    let masters = masters(&cluster);
    let slot: u16 = cluster
        .cli(
            masters[0].port,
            &["cluster", "keyslot", &town.key("events")],
        )
        .parse()
        .unwrap();
    let home = owner(&cluster, &masters, slot);
    let away = masters.iter().find(|m| m.id != home.id).unwrap().clone();

    // Half the mail, then the slot moves out while the hosts work through it; the other half,
    // then it moves back.
    let started = Instant::now();
    let mut sent = common::fleet::Sent {
        per_agent: agents.iter().map(|a| (a.clone(), 0)).collect(),
        ids: Vec::new(),
    };
    let mut moves = Vec::new();
    let mut cli_runs = Vec::new();
    for (from, to) in [(&home, &away), (&away, &home)] {
        let half = probe.send_counts(&agents, TOTAL as usize / 2);
        for (a, n) in half.per_agent {
            *sent.per_agent.get_mut(&a).unwrap() += n;
        }
        sent.ids.extend(half.ids);
        for h in hosts.iter_mut() {
            h.assert_running();
        }
        let before = probe.total_handled(&agents);
        assert!(
            before + 1000 < sent.total(),
            "only {} messages left to handle when the slot moved; the test proves little",
            sent.total() - before
        );
        let t = Instant::now();
        let keys = migrate(&cluster, &masters, slot, from, to, || {
            // A CLI command while the slot is half moved: it must wait it out, not fail.
            let body = format!("mid-migration {}", cli_runs.len());
            let child = town
                .command(&["send", "cli-box", &body])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("starting tt send");
            cli_runs.push(child);
        });
        let took = t.elapsed();
        assert_eq!(owner(&cluster, &masters, slot).id, to.id, "the slot moved");
        assert!(keys > 10, "only {keys} keys moved; the town is not there?");
        moves.push((keys, took, before));
    }

    for child in cli_runs {
        let out = child.wait_with_output().expect("waiting for tt send");
        expect_code(&["send", "cli-box", "…"], &out, 0);
    }
    probe.wait_all_handled(&agents, TOTAL, Duration::from_secs(90));
    let total = started.elapsed();
    for h in hosts.iter_mut() {
        h.assert_running();
    }

    // Exactly once: each relay agent applied what it was sent, the sink got one forward of
    // each message (by correlation id), and no XADD into the sink was repeated.
    probe.assert_exactly_once(&sent);
    probe.assert_forwarded_once(&sent, "sink");
    let k = &probe.town.db.keys;
    let added = entries_added(&probe, &k.inbox("sink")) + entries_added(&probe, &k.urgent("sink"));
    assert_eq!(added, TOTAL, "entries added to the sink's streams");
    assert_eq!(
        entries_added(&probe, &k.inbox("cli-box")),
        2,
        "each mid-migration `tt send` applied once"
    );
    // The hosts really met the slot mid-move: the masters turned calls away.
    let redirects = redirect_counts(&cluster);
    assert!(
        redirects.values().sum::<u64>() > 0,
        "no call was redirected or asked to retry; the migration proved nothing"
    );
    let logs: String = hosts.iter().map(Host::log).collect();
    assert!(!logs.contains("panicked"), "a host panicked:\n{logs}");
    assert!(
        !logs.contains("UNDECLARED"),
        "a script touched an undeclared key:\n{logs}"
    );
    eprintln!(
        "reshard: {TOTAL} messages in two halves; slot {slot} moved out ({} keys in {} ms, at \
         {} of 5000 handled) and back ({} keys in {} ms, at {} of 10000 handled); all handled \
         {} ms after the first send; {} duplicate handlings skipped; replies of the masters: {redirects:?}",
        moves[0].0,
        ms(moves[0].1),
        moves[0].2,
        moves[1].0,
        ms(moves[1].1),
        moves[1].2,
        ms(total),
        logs.matches("already applied; acknowledged only").count(),
    );
    for h in hosts.iter_mut() {
        let status = h.sigterm(Duration::from_secs(15));
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            h.name,
            h.log()
        );
    }
}

/// The key guard is always on: a script that names a key its caller did not declare fails
/// with that key named, and writes nothing.
#[test]
fn a_script_that_touches_an_undeclared_key_is_refused() {
    let town = TestTown::new();
    let probe = Probe::open(town.path());
    let declared = town.key("declared");
    let stray = town.key("stray");
    let guarded = script::new(
        OnFull::Refuse,
        &format!("call('SET', KEYS[1], 'x')\ncall('SET', '{stray}', 'y')\nreturn 1"),
    );
    let mut conn = probe.town.db.conn.clone();
    let err = probe
        .rt
        .block_on(guarded.key(&declared).invoke_async::<i64>(&mut conn))
        .expect_err("the guard let an undeclared key through");
    assert_eq!(err.code(), Some("TT"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("UNDECLARED") && text.contains(&stray),
        "the refusal names the key: {text}"
    );
    // A command the guard does not know is refused too, rather than let through unchecked.
    let unknown = script::new(OnFull::Refuse, "return call('LPUSH', KEYS[1], 'x')");
    let err = probe
        .rt
        .block_on(unknown.key(&declared).invoke_async::<i64>(&mut conn))
        .expect_err("the guard let an unknown command through");
    assert!(
        err.to_string()
            .contains("does not know where command LPUSH"),
        "{err}"
    );
    let mut p = redis::pipe();
    p.cmd("EXISTS").arg(&stray);
    let v: Vec<u64> = probe.query(&p);
    assert_eq!(v, [0], "the undeclared key was not written");
}

/// Tasks created at once by many clients get distinct ids: the applier declares the keys of
/// the ids it expects from the task counter, and when another client took them meanwhile it
/// writes nothing, reads the counter again and retries.
#[test]
fn tasks_created_at_once_by_many_clients_each_get_their_own_id() {
    let town = TestTown::new();
    town.ok(&["spawn", "boss", "--role", "conductor"]);
    town.ok(&["spawn", "w", "--role", "worker"]);
    let per_client = 40;
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let dir = town.path().to_path_buf();
            std::thread::spawn(move || {
                let probe = Probe::open(&dir);
                for i in 0..per_client {
                    let op = if i % 2 == 0 {
                        Op::BacklogAdd {
                            desc: format!("c{c} #{i}"),
                            tags: String::new(),
                        }
                    } else {
                        Op::Assign {
                            agent: "w".into(),
                            task: None,
                            desc: format!("c{c} #{i}"),
                        }
                    };
                    let unit = Unit {
                        ops: vec![op],
                        by: Some("conductor".into()),
                        human: true,
                        ..Default::default()
                    };
                    let r = probe
                        .rt
                        .block_on(probe.town.db.apply(&[unit]))
                        .expect("creating a task");
                    assert_eq!(r[0].task_ids().len(), 1, "{r:?}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client thread panicked");
    }
    let tasks = town.json(&["tasks", "--json"]);
    let mut ids = common::ids(&tasks);
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((n, ids.len()), (160, 160), "160 tasks, each its own id");
    // Every backlog task was announced to the conductor once.
    let probe = Probe::open(town.path());
    let inbox = entries_added(&probe, &probe.town.db.keys.inbox("boss"));
    assert_eq!(inbox, 80, "backlog notices to the conductor");
}

/// Every op applies behind the key guard: a town taken through each variant of `Op` (the
/// humans' authority, so each one succeeds) never touches a key its call did not declare.
#[test]
fn every_op_declares_the_keys_it_touches() {
    use tinytown::store::model::{AgentState, Kind, TaskState};
    let town = TestTown::new();
    for (n, r) in [
        ("alice", "worker"),
        ("bob", "reviewer"),
        ("boss", "conductor"),
    ] {
        town.ok(&["spawn", n, "--role", r]);
    }
    let probe = Probe::open(town.path());
    let mut used = std::collections::BTreeSet::new();
    let mut apply = |by: &str, op: Op| {
        used.insert(op.name());
        let what = format!("{op:?}");
        probe
            .rt
            .block_on(probe.town.db.apply_human(by, vec![op]))
            .unwrap_or_else(|e| panic!("{what}: {e:#}"))
    };
    let s = |x: &str| x.to_string();
    apply(
        "conductor",
        Op::Spawn {
            name: s("a"),
            role: s("worker"),
            plugin: Some(s("p.wasm")),
            digest: Some(s("d1")),
            nickname: Some(s("ay")),
        },
    );
    apply(
        "conductor",
        Op::AgentPlugin {
            name: s("a"),
            plugin: s("q.wasm"),
            digest: s("d2"),
            judged: Some(s("replayed")),
        },
    );
    apply(
        "a",
        Op::SwapRefused {
            name: s("a"),
            plugin: s("q.wasm"),
            digest: s("d2"),
            kept: s("p.wasm"),
            kept_digest: s("d1"),
            reason: s("init failed"),
        },
    );
    apply(
        "conductor",
        Op::Shadow {
            name: s("a"),
            plugin: Some(s("r.wasm")),
            digest: Some(s("d3")),
        },
    );
    apply(
        "a",
        Op::ShadowRecord {
            msg: s("m1"),
            agree: true,
            live: s("l"),
            shadow: s("s"),
            live_digest: s("d2"),
            shadow_digest: s("d3"),
        },
    );
    apply(
        "conductor",
        Op::Shadow {
            name: s("a"),
            plugin: None,
            digest: None,
        },
    );
    apply(
        "a",
        Op::SetState {
            key: s("k"),
            value: Some(s("v")),
        },
    );
    apply(
        "a",
        Op::Log {
            level: s("info"),
            text: s("hello"),
        },
    );
    for body in ["one", "two"] {
        apply("conductor", Op::send("a", Kind::Info, body));
    }
    apply("a", Op::Escalate { text: s("help") });
    apply(
        "conductor",
        Op::ClearConductor {
            urgent_upto: Some(s("0-1")),
            inbox_upto: Some(s("0-1")),
        },
    );
    // The review loop: create and assign, run, review, reject, review again, approve.
    let t = apply(
        "conductor",
        Op::Assign {
            agent: s("alice"),
            task: None,
            desc: s("write it"),
        },
    )
    .task_ids()[0]
        .clone();
    apply("alice", Op::MarkRunning { task: t.clone() });
    for approve in [false, true] {
        apply(
            "alice",
            Op::RequestReview {
                task: t.clone(),
                reviewer: s("bob"),
                body: s("please"),
            },
        );
        apply(
            "bob",
            Op::Verdict {
                task: t.clone(),
                approve,
                text: s("so"),
            },
        );
    }
    // The backlog: assigned and cancelled, removed, claimed.
    let b1 = apply(
        "conductor",
        Op::BacklogAdd {
            desc: s("later"),
            tags: s("x"),
        },
    )
    .task_ids()[0]
        .clone();
    apply(
        "conductor",
        Op::Assign {
            agent: s("bob"),
            task: Some(b1.clone()),
            desc: String::new(),
        },
    );
    apply(
        "conductor",
        Op::Transition {
            task: b1,
            to: TaskState::Cancelled,
            text: Some(s("not needed")),
        },
    );
    let b2 = apply(
        "conductor",
        Op::BacklogAdd {
            desc: s("never"),
            tags: String::new(),
        },
    )
    .task_ids()[0]
        .clone();
    apply("conductor", Op::BacklogRemove { task: b2 });
    let b3 = apply(
        "conductor",
        Op::BacklogAdd {
            desc: s("soon"),
            tags: String::new(),
        },
    )
    .task_ids()[0]
        .clone();
    apply(
        "conductor",
        Op::BacklogClaim {
            task: b3,
            agent: s("alice"),
        },
    );
    // Pruning dead-letters a's two messages; one is retried into the new `a`, one dropped.
    apply(
        "conductor",
        Op::AgentState {
            name: s("a"),
            state: AgentState::Stopped,
            from: None,
        },
    );
    apply(
        "conductor",
        Op::Prune {
            name: s("a"),
            states: vec![AgentState::Stopped],
        },
    );
    let mut p = redis::pipe();
    p.cmd("XRANGE")
        .arg(probe.town.db.keys.dlq())
        .arg("-")
        .arg("+");
    let v: Vec<redis::Value> = probe.query(&p);
    let dead: Vec<String> = tinytown::store::streams::entries(&v[0])
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(dead.len(), 2, "a's two messages were dead-lettered");
    apply(
        "conductor",
        Op::Spawn {
            name: s("a"),
            role: s("worker"),
            plugin: None,
            digest: None,
            nickname: None,
        },
    );
    apply(
        "conductor",
        Op::DlqRetry {
            entry: dead[0].clone(),
        },
    );
    apply(
        "conductor",
        Op::DlqDrop {
            entry: dead[1].clone(),
        },
    );
    apply(
        "conductor",
        Op::KeyAdd {
            id: s("k1"),
            name: s("ci"),
            scope: s("read"),
            hash: s("$argon2id$..."),
        },
    );
    apply(
        "conductor",
        Op::Audit {
            who: s("ci"),
            action: s("POST /v1/mail"),
            peer: s("127.0.0.1:5000"),
            status: 200,
        },
    );
    apply("conductor", Op::KeyRevoke { id: s("k1") });
    assert_eq!(used.len(), 25, "every op variant was applied: {used:?}");
}
