//! Bounded by default (issue 10): the retention sweep of every host keeps mailboxes, dead
//! letters, events, finished tasks and heartbeats within `[retention]`, never trimming a
//! message that is not yet applied; the embedded Redis has a maxmemory and the host says when
//! it nears it. Real hosts, real Redis, the real `chaos` plugin.

mod common;

use std::time::Duration;

use common::{host_until_idle, plugin, TestTown};

/// A town under `retention` (a sweep every 100 ms unless it sets `sweep_ms`).
fn town(retention: &str) -> TestTown {
    let town = TestTown::new();
    let sweep = if retention.contains("sweep_ms") {
        ""
    } else {
        "sweep_ms = 100\n"
    };
    town.write_config(&format!(
        "[town]\nname = \"test\"\n\n[host]\nlease_ms = 30000\nheartbeat_ms = 200\n\n\
         [retention]\n{sweep}{retention}\n\
         [agents.c]\nrole = \"chaos\"\nplugin = \"{}\"\n\n[agents.people]\nrole = \"mailbox\"\n",
        plugin("chaos")
    ));
    town.ok(&["spawn", "c"]);
    town.ok(&["spawn", "people"]);
    town
}

/// Serves until idle twice: the second run sweeps at its start, after everything was applied.
fn serve(town: &TestTown) {
    host_until_idle(town, Duration::from_secs(60));
    host_until_idle(town, Duration::from_secs(60));
}

/// The stream ids in a redis-cli reply.
fn stream_ids(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| {
            l.split_once('-').is_some_and(|(a, b)| {
                a.len() >= 13
                    && a.chars().all(|c| c.is_ascii_digit())
                    && b.chars().all(|c| c.is_ascii_digit())
            })
        })
        .map(str::to_string)
        .collect()
}

fn send(town: &TestTown, to: &str, body: &str, n: usize) {
    for _ in 0..n {
        town.ok(&["send", to, body]);
    }
}

/// One sweep of `agents`' mailboxes under the town's policy, as a host runs it.
fn sweep(town: &TestTown, agents: &[&str]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        let agents: Vec<String> = agents.iter().map(|a| a.to_string()).collect();
        t.db.sweep(&agents, &t.config.retention).await.unwrap();
    });
}

#[test]
fn mailboxes_keep_their_recent_history_and_never_lose_what_is_not_applied() {
    // A host sweeps when it starts and then every sweep_ms; a mailbox is trimmed once it
    // holds more than twice its history. With one sweep per run, the first run's finds
    // nothing applied and the second's finds all 60 applied: exactly the history stays.
    // (A sweep in between could leave 11 to 20, which the next sweep keeps.)
    let town = town("sweep_ms = 3600000\nmailbox_history = 10\n");
    send(&town, "c", "count", 60);
    serve(&town);
    assert_eq!(
        town.xlen("inbox:c"),
        10,
        "applied mail beyond the history is trimmed"
    );
    // Mail nobody has read yet: never trimmed.
    send(&town, "people", "for a person", 40);
    sweep(&town, &["people"]);
    assert_eq!(town.xlen("inbox:people"), 40, "undelivered mail stays");
    // A message a host took and did not apply (it died): pending, so it and all after it stay.
    send(&town, "c", "count", 1);
    let inbox = town.key("inbox:c");
    let read = |consumer: &str| {
        let out = town.redis(&[
            "XREADGROUP",
            "GROUP",
            "tt",
            consumer,
            "COUNT",
            "100",
            "STREAMS",
            &inbox,
            ">",
        ]);
        stream_ids(&out)
    };
    let held = read("gone").pop().unwrap();
    // The 50 after it are delivered and applied (acknowledged), as by another host.
    send(&town, "c", "count", 50);
    let applied = read("other");
    assert_eq!(applied.len(), 50);
    let mut ack = vec!["XACK", inbox.as_str(), "tt"];
    ack.extend(applied.iter().map(String::as_str));
    town.redis(&ack);
    sweep(&town, &["c"]);
    let kept = town.redis(&["XRANGE", &inbox, &held, &held]);
    assert!(kept.contains("count"), "the pending entry stays: {kept:?}");
    assert!(town.xlen("inbox:c") >= 51, "{}", town.xlen("inbox:c"));
    // Once it is applied (acknowledged), the mailbox shrinks to its history.
    town.redis(&["XACK", &inbox, "tt", &held]);
    sweep(&town, &["c"]);
    assert_eq!(town.xlen("inbox:c"), 10);
}

#[test]
fn dead_letters_events_finished_tasks_and_dead_hosts_are_capped() {
    let town = town("dead_letters = 3\nevents = 50\nfinished_task_secs = 0\ndead_host_secs = 1\n");
    send(&town, "c", "fatal", 8);
    let out = town.ok(&["assign", "people", "a task"]);
    let t = out.split_whitespace().nth(1).unwrap().to_string();
    town.ok(&["task", "complete", &t, "--result", "done"]);
    town.redis(&[
        "HSET",
        &town.key("hosts"),
        "long-gone",
        "{\"name\":\"long-gone\",\"seen_ms\":1}",
    ]);
    town.redis(&["HSET", &town.key("served:long-gone"), "c", "7"]);
    serve(&town);
    assert_eq!(town.xlen("dlq"), 3);
    assert!(town.xlen("events") <= 50, "{}", town.xlen("events"));
    // The task is gone from Redis, and still counted.
    town.fails(&["task", "show", &t], 1);
    let status = town.json(&["status", "--json"]);
    assert_eq!(status["tasks"]["completed"], 1, "{status}");
    let hosts = town.redis(&["HKEYS", &town.key("hosts")]);
    assert!(!hosts.contains("long-gone"), "{hosts}");
    assert_eq!(town.redis(&["EXISTS", &town.key("served:long-gone")]), "0");
}

#[test]
fn each_journal_is_kept_to_its_share_of_the_town_journal_budget() {
    // Two agents (c and people) share a budget of 6: three entries each, below `journal`.
    let town = town("sweep_ms = 3600000\njournal = 100\njournal_total = 6\n");
    send(&town, "c", "count", 10);
    host_until_idle(&town, Duration::from_secs(60));
    // Written trimmed to its share, no sweep needed: the newest entries stay.
    assert_eq!(town.xlen("journal:c"), 3, "written trimmed to its share");
    assert_eq!(
        town.ok(&["journal", "c", "-n", "10"])
            .matches("count")
            .count(),
        3
    );
    // A third agent: the share is two now. The next host's sweep (at its start) cuts the
    // journal written under the larger share; the newest entries stay.
    let newest = town.redis(&["XREVRANGE", &town.key("journal:c"), "+", "-", "COUNT", "2"]);
    town.ok(&["spawn", "desk", "--role", "mailbox"]);
    host_until_idle(&town, Duration::from_secs(60));
    assert_eq!(town.xlen("journal:c"), 2, "cut to the smaller share");
    let kept = town.redis(&["XREVRANGE", &town.key("journal:c"), "+", "-", "COUNT", "2"]);
    assert_eq!(stream_ids(&kept), stream_ids(&newest));
    // New entries are written trimmed to the smaller share.
    send(&town, "c", "count", 4);
    host_until_idle(&town, Duration::from_secs(60));
    assert_eq!(town.xlen("journal:c"), 2);
}

#[test]
fn each_mailbox_keeps_its_share_of_the_town_mailbox_history() {
    // Two agents (c and people) share a budget of 12 entries per stream: six each, below
    // `mailbox_history`.
    let town = town("sweep_ms = 3600000\nmailbox_history = 10\nmailbox_history_total = 12\n");
    send(&town, "c", "count", 30);
    serve(&town);
    assert_eq!(
        town.xlen("inbox:c"),
        6,
        "applied mail beyond the share is trimmed"
    );
    // Three more agents: the share is two now, and the next host's sweep (at its start) cuts
    // the mailbox to it; the newest entries stay.
    let newest = town.redis(&["XREVRANGE", &town.key("inbox:c"), "+", "-", "COUNT", "2"]);
    for name in ["d1", "d2", "d3"] {
        town.ok(&["spawn", name, "--role", "mailbox"]);
    }
    host_until_idle(&town, Duration::from_secs(60));
    assert_eq!(town.xlen("inbox:c"), 2, "cut to the smaller share");
    let kept = town.redis(&["XREVRANGE", &town.key("inbox:c"), "+", "-", "COUNT", "2"]);
    assert_eq!(stream_ids(&kept), stream_ids(&newest));
    // Mail nobody has applied yet is never cut to a share: people's 20 unread messages stay.
    send(&town, "people", "for a person", 20);
    sweep(&town, &["people"]);
    assert_eq!(town.xlen("inbox:people"), 20, "undelivered mail stays");
}

#[test]
fn the_embedded_redis_rewrites_its_aof_after_a_quarter_of_maxmemory_and_keeps_stream_nodes_small() {
    let town = town("maxmemory_mb = 2048\n");
    town.ok(&["list"]);
    let min_size = |town: &TestTown| {
        town.redis(&["CONFIG", "GET", "auto-aof-rewrite-min-size"])
            .lines()
            .nth(1)
            .map(str::to_string)
    };
    assert_eq!(min_size(&town).as_deref(), Some("536870912"));
    // A server started under an older config is set again by the next command.
    town.redis(&["CONFIG", "SET", "auto-aof-rewrite-min-size", "64mb"]);
    town.redis(&["CONFIG", "SET", "stream-node-max-bytes", "4096"]);
    town.ok(&["list"]);
    assert_eq!(min_size(&town).as_deref(), Some("536870912"));
    // Streams' nodes are small: most of a town's streams hold a few entries each.
    assert_eq!(
        town.redis(&["CONFIG", "GET", "stream-node-max-bytes"])
            .lines()
            .nth(1),
        Some("1024")
    );
}

#[test]
fn the_embedded_redis_has_a_maxmemory_and_the_host_warns_near_it() {
    let town = town("maxmemory_mb = 16\n");
    town.ok(&["list"]);
    assert_eq!(
        town.redis(&["CONFIG", "GET", "maxmemory"]).lines().nth(1),
        Some("16777216")
    );
    assert_eq!(
        town.redis(&["CONFIG", "GET", "maxmemory-policy"])
            .lines()
            .nth(1),
        Some("noeviction")
    );
    assert!(town.ok(&["status"]).contains(" of 16 MiB"));
    // Fill it to ~90% with a value of its own, then serve: one warning, in the log and events.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        let mut c = t.db.conn.clone();
        // In parts: a value in flight counts against maxmemory too.
        // Until Redis refuses more: it is then past 80% of its maxmemory (checked below).
        for part in 0..16 {
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("junk{part}"))
                .arg(vec![b'x'; 1 << 20])
                .query_async(&mut c)
                .await;
            if let Err(e) = r {
                assert!(e.to_string().contains("OOM"), "{e}");
                break;
            }
        }
        let m = t.db.memory().await.unwrap();
        assert!(m.near_full(), "{m:?}");
    });
    send(&town, "c", "count", 1);
    let log = host_until_idle(&town, Duration::from_secs(60));
    let used = town.redis(&["INFO", "memory"]);
    assert!(log.contains("of its maxmemory 16 MiB"), "{log}\n{used}");
    assert!(town.ok(&["status"]).contains("NEAR FULL"));
    let warned = town
        .events()
        .iter()
        .filter(|e| e["type"] == "log" && e["body"].as_str().unwrap_or("").contains("maxmemory"))
        .count();
    assert_eq!(warned, 1);
}
