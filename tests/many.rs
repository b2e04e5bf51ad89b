//! A big town on one host: thousands of agents read over a few connections
//! (`host::mailboxes`), each getting exactly its mail, urgent first; a busy agent beside idle
//! ones on the same connection; a host killed and restarted under its name resuming the mail
//! of many agents at once.
//!
//! Real `tt host` processes, real Redis, real compiled plugins (the `relay` role forwarding
//! every message to the mailbox-only agent `sink`, so every effect is visible). Speeds are
//! measured by `tt bench scale`, not here: the bounds below only catch a host that waits for
//! a timeout it should not.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::fleet::{poll, Host, Probe, Sent};
use common::{plugin, TestTown};
use tinytown::store::applier::Op;
use tinytown::store::model::Kind;

/// tinytown.toml: `n` relay agents `r0000`... forwarding to `sink`, reading over at most
/// `connections` connections, with room in the event stream for every handling.
fn config(n: usize, connections: usize, lease_ms: u64) -> String {
    let relay = plugin("relay");
    let mut s = format!(
        "[town]\nname = \"test\"\n\n[host]\nlease_ms = {lease_ms}\nheartbeat_ms = 200\n\
         connections = {connections}\n\n[retention]\nevents = 1000000\n\n"
    );
    for name in names(n) {
        s.push_str(&format!(
            "[agents.{name}]\nrole = \"relay\"\nplugin = \"{relay}\"\nconfig = {{ next = \"sink\" }}\n\n"
        ));
    }
    s
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i:04}")).collect()
}

/// A town of `n` relay agents and the sink, all spawned (no host runs yet).
fn big_town(n: usize, connections: usize, lease_ms: u64) -> (TestTown, Probe, Vec<String>) {
    let town = TestTown::new();
    town.write_config(&config(n, connections, lease_ms));
    let probe = Probe::open(town.path());
    let agents = names(n);
    probe.spawn(&agents, "relay");
    probe.spawn(&["sink".to_string()], "mailbox");
    (town, probe, agents)
}

/// Sends each agent of `agents` `normal` normal messages and then one urgent one.
fn send_each(probe: &Probe, agents: &[String], normal: usize) -> Sent {
    let mut sent = Sent {
        per_agent: BTreeMap::new(),
        ids: Vec::new(),
    };
    let mut ops = Vec::new();
    for a in agents {
        for i in 0..=normal {
            ops.push(Op::Send {
                to: a.clone(),
                kind: Kind::Info,
                body: format!("{a} {i}"),
                urgent: i == normal,
                task: None,
                corr: None,
            });
        }
        *sent.per_agent.entry(a.clone()).or_default() += normal as u64 + 1;
        if ops.len() >= 1000 {
            sent.ids.extend(probe.apply(std::mem::take(&mut ops)));
        }
    }
    if !ops.is_empty() {
        sent.ids.extend(probe.apply(ops));
    }
    sent
}

/// Waits until everything `sent` reached the sink, calling `watch` at every look (the host must
/// keep running), then checks that each agent handled all its mail and the sink got each
/// forward once.
fn all_forwarded(
    host: &mut Host,
    probe: &Probe,
    agents: &[String],
    sent: &Sent,
    every: Duration,
    mut watch: impl FnMut(),
) {
    let total = sent.total();
    poll(
        "every message forwarded to the sink",
        Duration::from_secs(300),
        every,
        || {
            host.assert_running();
            watch();
            match probe.depth("sink").0 {
                n if n >= total => Ok(()),
                n => Err(format!("{n} of {total} forwarded")),
            }
        },
    );
    probe.wait_all_handled(agents, total, Duration::from_secs(60));
    probe.assert_forwarded(sent, "sink", agents.len());
}

/// The Redis clients other than the probe's own connection (a `redis-cli PING` of the host's
/// liveness check is not one of the host's connections).
fn host_clients(probe: &Probe) -> usize {
    let mut p = redis::pipe();
    p.cmd("CLIENT").arg("ID").cmd("CLIENT").arg("LIST");
    let (me, list): (u64, String) = probe.query(&p);
    list.lines()
        .filter(|l| !l.starts_with(&format!("id={me} ")) && !l.contains("cmd=ping"))
        .count()
}

/// Every `handled` event of the town, in order: (agent, `<stream>/<entry>`).
fn handled_events(probe: &Probe) -> Vec<(String, String)> {
    let mut p = redis::pipe();
    p.cmd("XRANGE")
        .arg(probe.town.db.keys.events())
        .arg("-")
        .arg("+");
    let v: Vec<redis::Value> = probe.query(&p);
    tinytown::store::streams::entries(&v[0])
        .into_iter()
        .map(|e| e.text_map())
        .filter(|f| f.get("type").map(String::as_str) == Some("handled"))
        .map(|f| {
            (
                f.get("agent").cloned().unwrap_or_default(),
                f.get("msg").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn thousands_of_agents_get_exactly_their_mail_urgent_first_over_few_connections() {
    let connections = 6;
    let (town, probe, agents) = big_town(2000, connections, 30_000);
    // Mail waits before the host starts: each agent's urgent message, sent last, must be the
    // first it handles.
    let sent = send_each(&probe, &agents, 2);
    let mut host = Host::start(&town, "h1", 1);
    let mut most = 0;
    all_forwarded(
        &mut host,
        &probe,
        &agents,
        &sent,
        Duration::from_millis(100),
        || {
            most = most.max(host_clients(&probe));
        },
    );
    assert!(
        most <= connections,
        "the host held {most} Redis connections; [host] connections = {connections}"
    );
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for (agent, msg) in handled_events(&probe) {
        first.entry(agent).or_insert(msg);
    }
    assert_eq!(first.len(), agents.len(), "every agent handled mail");
    let late: Vec<_> = first
        .iter()
        .filter(|(_, m)| !m.starts_with("urgent/"))
        .collect();
    assert!(
        late.is_empty(),
        "agents that handled normal mail before urgent: {late:?}"
    );
    host.sigterm(Duration::from_secs(60));
}

#[test]
fn a_busy_agent_does_not_starve_idle_ones_on_its_connection() {
    // The fewest connections: commands, and the bell every agent's mail is waited on.
    let (town, probe, agents) = big_town(51, 2, 30_000);
    let (busy, idle) = agents.split_first().unwrap();
    let mut host = Host::start(&town, "h1", 1);
    host.wait_serving(agents.len());
    let backlog = 20_000;
    let mut ops: Vec<Op> = (0..backlog)
        .map(|i| Op::send(busy, Kind::Info, format!("busy {i}")))
        .collect();
    while !ops.is_empty() {
        let rest = ops.split_off(ops.len().min(1000));
        probe.apply(std::mem::replace(&mut ops, rest));
    }
    poll(
        "the busy agent to be handling its backlog",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || match probe.handled(std::slice::from_ref(busy))[0] {
            n if n > 0 => Ok(()),
            _ => Err("nothing handled yet".into()),
        },
    );
    let started = Instant::now();
    send_each(&probe, idle, 0);
    let busy_done = poll(
        "every idle agent to handle its message",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || {
            host.assert_running();
            let handled = probe.handled(idle);
            if handled.iter().all(|n| *n == 1) {
                Ok(probe.handled(std::slice::from_ref(busy))[0])
            } else {
                Err(format!(
                    "{} of {} handled",
                    handled.iter().sum::<u64>(),
                    idle.len()
                ))
            }
        },
    );
    assert!(
        busy_done < backlog,
        "the idle agents were served only after the busy one's backlog ({busy_done} of \
         {backlog} handled), {:?} after their mail",
        started.elapsed()
    );
    host.sigterm(Duration::from_secs(60));
}

#[test]
fn a_restarted_host_resumes_the_mail_of_many_agents_at_once() {
    // A lease far longer than the test: the restart must not wait for any lease to lapse.
    let (town, probe, agents) = big_town(1000, 8, 120_000);
    let sent = probe.send_counts(&agents, 20_000);
    let mut first = Host::start(&town, "h1", 1);
    poll(
        "some of the mail handled",
        Duration::from_secs(120),
        Duration::from_millis(5),
        || {
            first.assert_running();
            match probe.total_handled(&agents) {
                n if n >= 2000 => Ok(()),
                n => Err(format!("{n} handled")),
            }
        },
    );
    first.sigkill();
    let held = probe.held_by("h1", &agents);
    let killed_at = Instant::now();
    let mut second = Host::start(&town, "h1", 2);
    probe.wait_all_handled(&agents, sent.total(), Duration::from_secs(90));
    assert!(
        killed_at.elapsed() < Duration::from_secs(90),
        "the restart took {:?} for {} messages held at the kill",
        killed_at.elapsed(),
        held.len()
    );
    probe.assert_forwarded_once(&sent, "sink");
    assert_eq!(probe.dead_letters(), 0, "nothing dead-lettered");
    second.sigterm(Duration::from_secs(60));
}

#[test]
fn a_big_town_lists_in_pages_after_a_summary_and_commands_skip_other_agents_tables() {
    let (town, probe, agents) = big_town(150, 32, 30_000);
    drop(probe);
    let out = town.ok(&["list"]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("151 agents; 1-100 shown (page 1 of 2; `tt list --page 2` for more, `tt status` for the summary)"),
        "{out}"
    );
    assert_eq!(lines.count(), 100, "{out}");
    let last = town.ok(&["list", "--page", "2"]);
    assert_eq!(last.lines().count(), 1 + 51, "{last}");
    assert!(last.contains("sink"), "{last}");
    town.refused(
        &["list", "--page", "3"],
        2,
        &["page 3 is past the end", "2 pages"],
    );
    town.refused(&["list", "--page", "0"], 2, &["count from 1"]);
    assert_eq!(
        town.json(&["list", "--json"]).as_array().unwrap().len(),
        151
    );
    let page = town.json(&["list", "--json", "--page", "2", "--per-page", "50"]);
    let names: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&agents[50].as_str()));
    assert_eq!(names.len(), 50);

    // The summary: counts by state, then the agents with the most mail (here r0007).
    town.ok(&["send", "r0007", "hello"]);
    let status = town.ok(&["status"]);
    assert!(status.contains("agents by state: idle 151"), "{status}");
    let shown: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("  r") || l.starts_with("  sink"))
        .collect();
    assert_eq!(shown.len(), 20, "{status}");
    assert!(shown[0].trim_start().starts_with("r0007"), "{status}");

    // `tt send` reads no agent's table: a broken one does not stop it; `tt list` refuses it.
    let mut config = town.read_config();
    config.push_str("[agents.r0001.exce]\nprogram = \"x\"\n");
    town.write_config(&config);
    town.ok(&["send", "r0002", "still delivered"]);
    town.fails(&["list"], 1);
}

#[test]
fn bench_scale_refuses_an_empty_town_size() {
    let town = TestTown::bare();
    town.refused(
        &["bench", "scale", "--agents", "0"],
        2,
        &["--agents needs town sizes above 0"],
    );
}

#[test]
fn bench_scale_refuses_zero_turns() {
    let town = TestTown::bare();
    let r = town.refused(
        &["bench", "scale", "--turns", "0"],
        2,
        &["--turns needs 1 or more"],
    );
    assert!(r.hint.contains("--turns 15"), "{}", r.stderr);
}

/// `tt` is linked position-dependent on Linux (`host/build.rs` for glibc, `.cargo/config.toml`
/// for musl): a command then starts without rewriting ~1 MB of relocated data, about a
/// millisecond of every `tt send`.
#[test]
#[cfg(target_os = "linux")]
fn tt_starts_without_relocating_itself() {
    if std::env::var_os("TT_PIE").is_some() {
        return;
    }
    use std::io::Read;
    let mut exe = [0u8; 18];
    std::fs::File::open(env!("CARGO_BIN_EXE_tt"))
        .and_then(|mut f| f.read_exact(&mut exe))
        .unwrap();
    assert_eq!(&exe[..4], b"\x7fELF");
    // e_type: 2 is a position-dependent executable, 3 a shared object (PIE).
    let e_type = u16::from_le_bytes([exe[16], exe[17]]);
    assert_eq!(
        e_type, 2,
        "tt was linked as a position-independent executable"
    );
}

/// A musl build of `tt` (how it ships on x86_64 Linux) is static: no program interpreter, so a
/// command starts without the dynamic loader's work (README "Big towns").
#[test]
#[cfg(all(target_os = "linux", target_env = "musl"))]
fn tt_is_one_static_executable() {
    let exe = std::fs::read(env!("CARGO_BIN_EXE_tt")).unwrap();
    let word = |at: usize| u16::from_le_bytes([exe[at], exe[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(exe[32..40].try_into().unwrap()) as usize;
    let (size, count) = (word(54), word(56));
    // p_type 3 is PT_INTERP: the path of the dynamic loader that would start the program.
    let interp = (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(exe[at..at + 4].try_into().unwrap()) == 3
    });
    assert!(
        !interp,
        "tt names a dynamic loader: it was linked dynamically"
    );
}

/// One applier call rings the bell once for each agent it gives mail, however many messages
/// it gives: the bell is read only after the call, and a host reads the whole mailbox.
#[test]
fn a_call_rings_the_bell_once_for_each_agent_it_gives_mail() {
    let (_town, probe, agents) = big_town(2, 2, 30_000);
    let bell = probe.town.db.keys.bell();
    let rung = |after: &str| -> Vec<String> {
        let mut p = redis::pipe();
        p.cmd("XRANGE").arg(&bell).arg(format!("({after}")).arg("+");
        let v: Vec<redis::Value> = probe.query(&p);
        tinytown::store::streams::entries(&v[0])
            .into_iter()
            .filter_map(|e| e.text_map().remove("a"))
            .collect()
    };
    let mut p = redis::pipe();
    p.cmd("XREVRANGE")
        .arg(&bell)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    let v: Vec<redis::Value> = probe.query(&p);
    let last = tinytown::store::streams::entries(&v[0])
        .pop()
        .map_or_else(|| "0-0".to_string(), |e| e.id);
    let (a, b) = (&agents[0], &agents[1]);
    let ids = probe.apply(vec![
        Op::send(a, Kind::Info, "one"),
        Op::send(b, Kind::Info, "two"),
        Op::send(a, Kind::Info, "three"),
        Op::Send {
            to: a.clone(),
            kind: Kind::Info,
            body: "four".into(),
            urgent: true,
            task: None,
            corr: None,
        },
    ]);
    assert_eq!(ids.len(), 4, "every message sent");
    let mut heard = rung(&last);
    heard.sort();
    assert_eq!(heard, [a.clone(), b.clone()], "one bell for each agent");
    assert_eq!(probe.depth(a), (3, 0), "{a}'s three messages wait");
}

/// A host further behind the bell than the bell keeps (100,000 entries, trimmed with the
/// applier's `MAXLEN ~`) has lost bells naming its agents. It must notice and read every
/// mailbox at once: a lost bell otherwise leaves its mail waiting for the periodic resync, half
/// a minute later (what `tt bench scale` saw as a busy run ending 15 s late).
#[test]
fn a_host_whose_unheard_bells_were_trimmed_reads_every_mailbox_at_once() {
    lost_bell(None, 1);
}

/// The same for an agent waiting without an instance slot (its instance dropped when idle):
/// the reading of every mailbox looks for its mail one entry a stream, and the rest is read
/// once it holds a slot.
#[test]
fn a_host_whose_unheard_bells_were_trimmed_reads_the_mail_of_agents_without_an_instance() {
    lost_bell(Some(100), 3);
}

/// `messages` for one agent of two whose bell is trimmed before the host hears it, once every
/// agent's instance was dropped after `idle_ms` without mail (`None`: the default, kept).
fn lost_bell(idle_ms: Option<u64>, messages: usize) {
    let (town, probe, agents) = big_town(2, 2, 30_000);
    if let Some(ms) = idle_ms {
        let config = town.read_config();
        town.write_config(
            &config.replace("[host]\n", &format!("[host]\nidle_instance_ms = {ms}\n")),
        );
    }
    let mut host = Host::start(&town, "h1", 1);
    host.wait_serving(agents.len());
    if idle_ms.is_some() {
        // The runners took their slots to read their leftovers; idle, they give them back.
        poll(
            "every idle agent to give its instance slot back",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || match live_instances(&probe, "h1") {
                0 => Ok(()),
                n => Err(format!("{n} live")),
            },
        );
    }
    // Mail whose bell is trimmed before the host can hear it: written with more than the
    // bell keeps after it, in one script (one step of Redis: the reader cannot read between).
    let lost = r#"
        for i = 1, tonumber(ARGV[3]) do
          redis.call('XADD', KEYS[1], '*', 'id', 'm-lost-' .. i, 'from', 'conductor',
            'to', ARGV[1], 'kind', 'info', 'body', 'its bell was trimmed', 'prio', 'normal',
            'task', '', 'corr', '', 'ts', ARGV[2])
        end
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'a', ARGV[1])
        for i = 1, 102000 do
          redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'a', 'nobody')
        end
        local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1][2]
        return first[2]
    "#;
    let agent = &agents[1];
    let mut p = redis::pipe();
    p.cmd("EVAL")
        .arg(lost)
        .arg(2)
        .arg(probe.stream("inbox", agent))
        .arg(probe.town.db.keys.bell())
        .arg(agent)
        .arg(common::fleet::now_ms())
        .arg(messages);
    let first: Vec<String> = probe.query(&p);
    assert_eq!(first, ["nobody"], "the bell naming {agent} was trimmed");
    let written = Instant::now();
    poll(
        "the messages whose bell was lost to be handled",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            host.assert_running();
            match probe.handled(std::slice::from_ref(agent))[0] {
                n if n == messages as u64 => Ok(()),
                n => Err(format!("{n} handled")),
            }
        },
    );
    // The periodic resync would have found them too, but only up to half a minute later.
    assert!(
        written.elapsed() < Duration::from_secs(10),
        "the mail of a lost bell waited {:?}; the host's log:\n{}",
        written.elapsed(),
        host.log()
    );
    assert!(
        host.log().contains("reading every mailbox"),
        "the host says it lost bells: {}",
        host.log()
    );
    host.sigterm(Duration::from_secs(60));
}

/// Sets `[host] max_instances` to `max`, sends each agent `each` messages and one urgent one
/// ([`send_each`]), and starts host `h1`.
fn serve_with_max_instances(
    town: &TestTown,
    probe: &Probe,
    agents: &[String],
    max: u64,
    each: usize,
) -> (Sent, Host) {
    let config = town.read_config();
    town.write_config(&config.replace("[host]\n", &format!("[host]\nmax_instances = {max}\n")));
    let sent = send_each(probe, agents, each);
    (sent, Host::start(town, "h1", 1))
}

/// The live instances host `host`'s last heartbeat counted.
fn live_instances(probe: &Probe, host: &str) -> u64 {
    let (beat,): (Option<String>,) =
        probe.query(redis::pipe().hget(probe.town.db.keys.hosts(), host));
    beat.and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["instances"].as_u64())
        .unwrap_or(0)
}

#[test]
fn more_busy_agents_than_instance_slots_all_get_their_mail_within_the_bound() {
    // Forty agents with mail, four instances at a time: each agent takes a slot an idle one
    // gives up, and the host's heartbeat never counts more than four live. Mail is read only
    // for agents holding a slot, so what the host has in hand stays near four agents' mail
    // (it held all forty agents' when every agent woken read its mail before queueing).
    let (max, each) = (4, 20);
    let (town, probe, agents) = big_town(40, 6, 30_000);
    let (sent, mut host) = serve_with_max_instances(&town, &probe, &agents, max, each);
    let (mut most, mut most_in_hand) = (0u64, 0u64);
    all_forwarded(
        &mut host,
        &probe,
        &agents,
        &sent,
        Duration::from_millis(20),
        || {
            most = most.max(live_instances(&probe, "h1"));
            // Read and not yet acknowledged: the mail in the host's hands.
            let in_hand: u64 = agents.iter().map(|a| probe.depth(a).1).sum();
            most_in_hand = most_in_hand.max(in_hand);
        },
    );
    // A slot given up while mail was being read for its holder leaves that mail in hand until
    // the holder takes a slot again: twice the slots' mail at most.
    assert!(
        most_in_hand <= 2 * max * each as u64,
        "{most_in_hand} messages were in the host's hands at once; {max} slots take {}",
        max * each as u64
    );
    // Idle agents keep their instances while no other needs the slot: the next heartbeats
    // (`heartbeat_ms = 200`) count them.
    poll(
        "the heartbeat to count live instances",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            most = most.max(live_instances(&probe, "h1"));
            match most {
                0 => Err("no live instance counted".into()),
                _ => Ok(()),
            }
        },
    );
    assert!(
        most <= max,
        "{most} instances were live; [host] max_instances = {max}"
    );
    host.sigterm(Duration::from_secs(60));
}

#[test]
fn a_max_instances_past_the_machines_mapping_limit_is_lowered_with_a_warning() {
    // A hundred million instances would need 800 million mappings; the kernel allows a process
    // `vm.max_map_count` (65,530 by default), and past it every instantiation fails and its
    // mail is dead-lettered. The host serves with what fits and says how to have more.
    let (town, probe, agents) = big_town(3, 6, 30_000);
    let (sent, mut host) = serve_with_max_instances(&town, &probe, &agents, 100_000_000, 2);
    all_forwarded(
        &mut host,
        &probe,
        &agents,
        &sent,
        Duration::from_millis(20),
        || {},
    );
    let log = host.log();
    assert!(
        log.contains("[host] max_instances = 100000000")
            && log.contains("a host keeps at most")
            && log.contains("sudo sysctl -w vm.max_map_count=800"),
        "the host names the bound it lowered and the fixes: {log}"
    );
    host.sigterm(Duration::from_secs(60));
}

/// The applier calls Redis has run so far.
fn applier_calls(town: &TestTown) -> u64 {
    let stats = town.redis(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A command's unit as the group-commit tests send it: one message to `to`, with an
/// idempotency key (only units that apply once, however often sent, go together).
fn unit_to(to: &str, idem: &str) -> tinytown::store::applier::Unit {
    tinytown::store::applier::Unit {
        ops: vec![Op::send(to, Kind::Info, format!("for {to}"))],
        by: Some("conductor".into()),
        human: true,
        idem: Some(idem.into()),
        ..Default::default()
    }
}

/// A runtime on this thread alone: callers that start together are all waiting before the
/// committer (a task of its own) takes any.
fn one_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Group commit (`applier::together`): the units of callers waiting at once go in one call.
#[test]
fn units_waiting_together_are_applied_in_one_call_with_each_callers_results() {
    let (town, _probe, agents) = big_town(3, 4, 5_000);
    let before = applier_calls(&town);
    let rt = one_thread();
    let results = rt.block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        let calls = agents.iter().map(|a| {
            t.db.apply_together(vec![unit_to(a, &format!("k-{a}"))], 200)
        });
        futures::future::join_all(calls).await
    });
    assert_eq!(
        applier_calls(&town) - before,
        1,
        "one call for three callers"
    );
    for (a, r) in agents.iter().zip(results) {
        let applied = r.unwrap();
        assert_eq!(applied.len(), 1, "each caller gets its own unit's result");
        assert_eq!(applied[0].message_ids().len(), 1);
        assert_eq!(town.xlen(&format!("inbox:{a}")), 1, "{a} got its message");
    }
}

/// A shared call that fails part-way (one caller's unit is refused after another's applied):
/// each caller applies alone, gets its own outcome, and nothing is applied twice.
#[test]
fn a_failed_shared_call_gives_each_caller_its_own_outcome_and_applies_nothing_twice() {
    let (town, _probe, agents) = big_town(1, 4, 5_000);
    let before = applier_calls(&town);
    let rt = one_thread();
    let (good, bad) = rt.block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        tokio::join!(
            t.db.apply_together(vec![unit_to(&agents[0], "good")], 200),
            t.db.apply_together(vec![unit_to("nobody", "bad")], 200),
        )
    });
    // The shared call, then each caller's own.
    assert_eq!(applier_calls(&town) - before, 3);
    assert_eq!(good.unwrap()[0].message_ids().len(), 1);
    let bad = format!("{:#}", bad.unwrap_err());
    assert!(bad.contains("nobody"), "the refusal names the agent: {bad}");
    assert_eq!(
        town.xlen(&format!("inbox:{}", agents[0])),
        1,
        "applied in the shared call and not again"
    );
}

/// Calls of each of `commands` Redis has run since its stats were last reset.
fn calls(town: &TestTown, commands: &[&str]) -> u64 {
    let stats = town.redis(&["INFO", "commandstats"]);
    commands
        .iter()
        .filter_map(|c| {
            let line = stats
                .lines()
                .find(|l| l.starts_with(&format!("cmdstat_{c}:")))?;
            line.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn an_idle_hosts_heartbeat_does_not_grow_with_its_agents_nor_rewrite_their_counts() {
    let (town, probe, agents) = big_town(300, 4, 30_000);
    // The relays and the sink (a mailbox the host keeps trimmed).
    let n = agents.len() + 1;
    let mut host = Host::start(&town, "h1", 1);
    let served = town.key("served:h1");
    let all_counted = |what: &str| {
        poll(
            what,
            Duration::from_secs(60),
            Duration::from_millis(20),
            || match town.redis(&["HLEN", &served]).parse::<usize>() {
                Ok(k) if k == n => Ok(()),
                k => Err(format!("{k:?} counted")),
            },
        )
    };
    all_counted("the host to count every agent it serves");
    let beat = town.redis(&["HGET", &town.key("hosts"), "h1"]);
    assert!(
        beat.len() < 1000,
        "the heartbeat is {} bytes: {beat}",
        beat.len()
    );
    assert!(beat.contains(&format!("\"serving\":{n}")), "{beat}");
    // Idle: beats (`heartbeat_ms = 200`) go on, and no agent's count is written again.
    town.redis(&["CONFIG", "RESETSTAT"]);
    std::thread::sleep(Duration::from_millis(1500));
    let rewritten = calls(&town, &["hmset", "hdel"]);
    let beats = calls(&town, &["hset"]);
    assert_eq!(rewritten, 0, "an idle host wrote agents' counts");
    assert!(beats >= 4, "{beats} heartbeats in 1.5 s");
    // Mail to one agent: its count alone is written.
    probe.apply(vec![Op::send(&agents[7], Kind::Task, "one")]);
    poll(
        "the agent's count to be written",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || match town.redis(&["HGET", &served, &agents[7]]).as_str() {
            "1" => Ok(()),
            v => Err(format!("count {v:?}")),
        },
    );
    let status = town.json(&["status", "--json"]);
    let h = &status["hosts"][0];
    assert_eq!(h["agents"].as_object().map(|a| a.len()), Some(n), "{h}");
    assert_eq!(h["agents"][&agents[7]], 1);
    assert_eq!(h["handled"], 1);
    let deep = town.ok(&["status", "--deep"]);
    let line = deep
        .lines()
        .find(|l| l.contains("h1 (pid"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("{n} agents, 1 messages handled")) && !line.contains("r0007"),
        "{deep}"
    );
    // A beat that fails (Redis refusing writes) leaves the counts unknown: once writes are
    // accepted again, the next beat writes them all, even those that did not change.
    let max = town.redis(&["CONFIG", "GET", "maxmemory"]);
    let max = max.lines().nth(1).unwrap_or("0").to_string();
    town.redis(&["CONFIG", "SET", "maxmemory", "1"]);
    std::thread::sleep(Duration::from_millis(600));
    town.redis(&["DEL", &served]);
    town.redis(&["CONFIG", "SET", "maxmemory", &max]);
    all_counted("the counts to be written again after a failed beat");
    host.assert_running();
    host.sigterm(Duration::from_secs(60));
    assert_eq!(
        town.redis(&["EXISTS", &served]),
        "0",
        "a stopped host's counts stay"
    );
}
