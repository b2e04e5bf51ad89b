//! The parts of the multi-host tests (`tests/scale.rs`, `tests/reshard.rs`): `tt host` child
//! processes, and a probe that reads the town directly through the library's own connection
//! (`tinytown::town::Town`), the same for the embedded server and for a cluster, and counts
//! every effect exactly.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tinytown::store::applier::Op;
use tinytown::store::model::Kind;
use tinytown::town::Town;

use super::TestTown;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Polls `check` every `every` until it returns `Ok`; panics after `limit` with `what` and the
/// last progress report (`Err`).
pub fn poll<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(v) => return v,
            Err(progress) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {limit:?} waiting for {what}; last seen: {progress}"
                );
            }
        }
        std::thread::sleep(every);
    }
}

// ----- hosts ---------------------------------------------------------------------------------

/// A `tt host --name NAME` child process; its log (TT_LOG=info) goes to a file in the town dir.
/// Killed on drop.
pub struct Host {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Host {
    pub fn start(town: &TestTown, name: &str, run: u32) -> Host {
        let log = town.path().join(format!("host-{name}-{run}.log"));
        let file = File::create(&log).expect("creating the host's log file");
        let child = town
            .command(&["host", "--name", name])
            .env("TT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting tt host");
        Host {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reap it: when this returns the host is gone.
    pub fn sigkill(&mut self) {
        // Our own child, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let status = self.child.wait().expect("waiting for the killed host");
        assert!(
            !status.success(),
            "{} survived SIGKILL: {status}",
            self.name
        );
    }

    /// SIGTERM, then waits up to `limit` for it to exit.
    pub fn sigterm(&mut self, limit: Duration) -> ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("polling the host") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "host {} did not stop within {limit:?} of SIGTERM; its log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many agents it is ready to serve (from its log): a runner says so once, when it
    /// first waits for mail. Plugins load on an agent's first message, so this, not "plugin
    /// loaded", is what says a host has started serving.
    pub fn plugins_loaded(&self) -> usize {
        self.log().matches("ready: waiting for mail").count()
    }

    /// Waits until it is ready to serve `n` agents ([`Host::plugins_loaded`]).
    pub fn wait_serving(&self, n: usize) {
        poll(
            "the host to serve every agent",
            Duration::from_secs(60),
            Duration::from_millis(20),
            || match self.plugins_loaded() {
                k if k >= n => Ok(()),
                k => Err(format!("{k} ready")),
            },
        );
    }

    /// Panics (with the log) if the host exited on its own.
    pub fn assert_running(&mut self) {
        if let Some(s) = self.child.try_wait().expect("polling the host") {
            panic!(
                "host {} exited early ({s}); its log:\n{}",
                self.name,
                self.log()
            );
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ----- a direct view of the town's Redis -----------------------------------------------------

/// What the test sent: how many messages each agent got, and every message id.
pub struct Sent {
    pub per_agent: BTreeMap<String, u64>,
    pub ids: Vec<String>,
}

impl Sent {
    pub fn total(&self) -> u64 {
        self.per_agent.values().sum()
    }
}

/// One delivered, unacknowledged mailbox entry.
#[derive(Debug, Clone)]
pub struct Held {
    pub agent: String,
    pub kind: &'static str,
    pub id: String,
}

/// The town through the library: its own runtime and connection (single server or cluster).
pub struct Probe {
    pub rt: tokio::runtime::Runtime,
    pub town: Town,
}

impl Probe {
    pub fn open(dir: &Path) -> Probe {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let town = rt.block_on(Town::open(dir)).expect("opening the town");
        Probe { rt, town }
    }

    pub fn stream(&self, kind: &str, agent: &str) -> String {
        let k = &self.town.db.keys;
        if kind == "urgent" {
            k.urgent(agent)
        } else {
            k.inbox(agent)
        }
    }

    pub fn query<T: redis::FromRedisValue>(&self, p: &redis::Pipeline) -> T {
        let mut c = self.town.db.conn.clone();
        self.rt
            .block_on(p.query_async(&mut c))
            .expect("a Redis pipeline")
    }

    /// Spawns the agents that do not exist yet (their plugin comes from tinytown.toml).
    pub fn spawn(&self, names: &[String], role: &str) {
        for n in names {
            let exists = self
                .rt
                .block_on(self.town.agent(n))
                .expect("reading an agent");
            if exists.is_none() {
                self.rt
                    .block_on(self.town.spawn(n, role, None, None))
                    .expect("spawning an agent");
            }
        }
    }

    /// Sends `n` "count" messages spread over `agents` by a fixed pseudo-random sequence (so
    /// each agent gets a different number), one in ten urgent, many per applier call. Returns how many each agent got.
    pub fn send_counts(&self, agents: &[String], n: usize) -> Sent {
        let mut sent = Sent {
            per_agent: agents.iter().map(|a| (a.clone(), 0)).collect(),
            ids: Vec::new(),
        };
        let mut x: u64 = 0x5eed;
        let mut ops = Vec::new();
        for i in 0..n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let a = &agents[((x >> 33) % agents.len() as u64) as usize];
            *sent.per_agent.get_mut(a).unwrap() += 1;
            ops.push(Op::Send {
                to: a.clone(),
                kind: Kind::Info,
                body: "count".into(),
                urgent: i % 10 == 0,
                task: None,
                corr: None,
            });
            if ops.len() == 1000 {
                sent.ids.extend(self.apply(std::mem::take(&mut ops)));
            }
        }
        if !ops.is_empty() {
            sent.ids.extend(self.apply(ops));
        }
        sent
    }

    /// Applies `ops` for the conductor; the ids of the messages they sent.
    pub fn apply(&self, ops: Vec<Op>) -> Vec<String> {
        let n = ops.len();
        let r = self
            .rt
            .block_on(self.town.db.apply_ops("conductor", ops))
            .expect("sending");
        let ids = r.message_ids();
        assert_eq!(ids.len(), n, "every send took effect");
        ids
    }

    /// The chaos agents' state `count`.
    pub fn counts(&self, agents: &[String]) -> Vec<u64> {
        let mut p = redis::pipe();
        for a in agents {
            p.cmd("HGET").arg(self.town.db.keys.state(a)).arg("count");
        }
        let v: Vec<Option<u64>> = self.query(&p);
        v.into_iter().map(|c| c.unwrap_or(0)).collect()
    }

    /// How many messages of each agent were applied and acknowledged: the entries its consumer
    /// group has read minus those still pending, over both of its streams.
    pub fn handled(&self, agents: &[String]) -> Vec<u64> {
        let mut p = redis::pipe();
        for a in agents {
            for kind in ["urgent", "inbox"] {
                p.cmd("XINFO").arg("GROUPS").arg(self.stream(kind, a));
            }
        }
        let v: Vec<redis::Value> = self.query(&p);
        v.chunks(2)
            .map(|both| both.iter().map(acknowledged).sum())
            .collect()
    }

    pub fn total_handled(&self, agents: &[String]) -> u64 {
        self.handled(agents).iter().sum()
    }

    /// The entries `consumer` holds (delivered, not acknowledged) in the agents' mailboxes.
    pub fn held_by(&self, consumer: &str, agents: &[String]) -> Vec<Held> {
        let mut p = redis::pipe();
        let mut which = Vec::new();
        for a in agents {
            for kind in ["urgent", "inbox"] {
                p.cmd("XPENDING")
                    .arg(self.stream(kind, a))
                    .arg("tt")
                    .arg("-")
                    .arg("+")
                    .arg(10_000)
                    .arg(consumer);
                which.push((a.clone(), kind));
            }
        }
        let v: Vec<Vec<(String, String, u64, u64)>> = self.query(&p);
        which
            .into_iter()
            .zip(v)
            .flat_map(|((agent, kind), entries)| {
                entries.into_iter().map(move |(id, _, _, _)| Held {
                    agent: agent.clone(),
                    kind,
                    id,
                })
            })
            .collect()
    }

    /// Those of `held` not applied yet: still pending in their group (applying acknowledges).
    pub fn unhandled(&self, held: &[Held]) -> Vec<Held> {
        if held.is_empty() {
            return Vec::new();
        }
        let mut p = redis::pipe();
        for h in held {
            p.cmd("XPENDING")
                .arg(self.stream(h.kind, &h.agent))
                .arg("tt")
                .arg(&h.id)
                .arg(&h.id)
                .arg(1);
        }
        let v: Vec<Vec<redis::Value>> = self.query(&p);
        held.iter()
            .zip(v)
            .filter(|(_, p)| !p.is_empty())
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// The count of the `XPENDING stream tt` summary.
    pub fn pending(&self, kind: &str, agent: &str) -> u64 {
        let mut p = redis::pipe();
        p.cmd("XPENDING").arg(self.stream(kind, agent)).arg("tt");
        let v: Vec<redis::Value> = self.query(&p);
        match v.first() {
            Some(redis::Value::Array(summary)) => match summary.first() {
                Some(redis::Value::Int(n)) => *n as u64,
                other => panic!("XPENDING summary of {agent}/{kind} starts with {other:?}"),
            },
            other => panic!("XPENDING summary of {agent}/{kind}: {other:?}"),
        }
    }

    /// Which host holds each exclusive agent's lease (`<host>/<instance>:<token>`; empty when
    /// none).
    pub fn lease_holders(&self, agents: &[String]) -> Vec<String> {
        let mut p = redis::pipe();
        for a in agents {
            p.cmd("GET").arg(self.town.db.keys.lease(a));
        }
        let v: Vec<Option<String>> = self.query(&p);
        v.into_iter()
            .map(|h| {
                let h = h.unwrap_or_default();
                h.split(['/', ':']).next().unwrap_or_default().to_string()
            })
            .collect()
    }

    /// (waiting, delivered-but-unacknowledged) over both of an agent's streams.
    pub fn depth(&self, agent: &str) -> (u64, u64) {
        self.rt
            .block_on(self.town.mailbox_depth(agent))
            .expect("mailbox depth")
    }

    pub fn dead_letters(&self) -> u64 {
        let mut p = redis::pipe();
        p.cmd("XLEN").arg(self.town.db.keys.dlq());
        let v: Vec<u64> = self.query(&p);
        v[0]
    }

    /// Waits until every message of `agents` is applied and every mailbox is empty.
    pub fn wait_all_handled(&self, agents: &[String], total: u64, limit: Duration) {
        poll(
            "every message handled",
            limit,
            Duration::from_millis(50),
            || {
                let done = self.total_handled(agents);
                if done < total {
                    return Err(format!("{done} of {total} handled"));
                }
                for a in agents {
                    let d = self.depth(a);
                    if d != (0, 0) {
                        return Err(format!(
                            "{done} handled; {a} still has (waiting, in hand) {d:?}"
                        ));
                    }
                }
                Ok(())
            },
        )
    }

    /// Asserts each agent handled exactly what was sent to it, once, with nothing left pending
    /// in either stream and nothing dead-lettered.
    pub fn assert_exactly_once(&self, sent: &Sent) {
        let sent = &sent.per_agent;
        let agents: Vec<String> = sent.keys().cloned().collect();
        let handled = self.handled(&agents);
        for (a, h) in agents.iter().zip(&handled) {
            assert_eq!(*h, sent[a], "agent {a}: messages applied vs. sent");
            for kind in ["urgent", "inbox"] {
                assert_eq!(
                    self.pending(kind, a),
                    0,
                    "tt:{{test}}:{kind}:{a} has unacknowledged entries"
                );
            }
            assert_eq!(self.depth(a), (0, 0), "agent {a}: mailbox not empty");
        }
        assert_eq!(self.dead_letters(), 0, "no dead letters");
    }

    /// Asserts each chaos agent's `count` equals what was sent to it.
    pub fn assert_counts(&self, sent: &Sent) {
        let sent = &sent.per_agent;
        let agents: Vec<String> = sent.keys().cloned().collect();
        let counts = self.counts(&agents);
        let total: u64 = counts.iter().sum();
        let want: u64 = sent.values().sum();
        let wrong: Vec<String> = agents
            .iter()
            .zip(&counts)
            .filter(|(a, c)| **c != sent[*a])
            .map(|(a, c)| format!("{a}: count {c}, sent {}", sent[a]))
            .collect();
        assert!(
            total == want && wrong.is_empty(),
            "sum of counts {total}, sent {want}; wrong agents: {wrong:#?}"
        );
    }
}

impl Probe {
    /// Asserts `sink` received exactly one forward of every message sent: the correlation ids
    /// of its mail are the sent ids, each once; per sender, as many as that agent was sent;
    /// urgent ones stayed urgent.
    pub fn assert_forwarded_once(&self, sent: &Sent, sink: &str) {
        self.assert_forwarded(sent, sink, sent.ids.len().div_ceil(10));
    }

    /// [`Probe::assert_forwarded_once`] for mail of which `urgent` messages were urgent.
    pub fn assert_forwarded(&self, sent: &Sent, sink: &str, urgent_sent: usize) {
        let mut corr = Vec::new();
        let mut from: BTreeMap<String, u64> = BTreeMap::new();
        let mut urgent = 0;
        for kind in ["urgent", "inbox"] {
            let mut p = redis::pipe();
            p.cmd("XRANGE")
                .arg(self.stream(kind, sink))
                .arg("-")
                .arg("+");
            let v: Vec<redis::Value> = self.query(&p);
            for e in tinytown::store::streams::entries(&v[0]) {
                let f = e.text_map();
                corr.push(f.get("corr").cloned().unwrap_or_default());
                *from
                    .entry(f.get("from").cloned().unwrap_or_default())
                    .or_default() += 1;
                if kind == "urgent" {
                    urgent += 1;
                }
            }
        }
        assert_eq!(
            corr.len() as u64,
            sent.total(),
            "forwards received by {sink}"
        );
        corr.sort();
        let dups: Vec<&String> = corr
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| &w[0])
            .collect();
        assert!(dups.is_empty(), "messages forwarded twice: {dups:?}");
        let mut ids = sent.ids.clone();
        ids.sort();
        assert!(
            corr == ids,
            "the forwards do not correlate to the sent messages one to one"
        );
        assert_eq!(from, sent.per_agent, "forwards per relay agent");
        assert_eq!(urgent, urgent_sent, "urgent forwards");
    }
}

/// `entries-read - pending` of the `tt` group in an `XINFO GROUPS` reply.
pub fn acknowledged(reply: &redis::Value) -> u64 {
    let redis::Value::Array(groups) = reply else {
        panic!("XINFO GROUPS replied {reply:?}")
    };
    let Some(redis::Value::Array(fields)) = groups.first() else {
        return 0;
    };
    let int = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| matches!(&kv[0], redis::Value::BulkString(k) if k == name.as_bytes()))
            .and_then(|kv| match &kv[1] {
                redis::Value::Int(n) => Some(*n as u64),
                // A group that has read nothing yet.
                redis::Value::Nil => Some(0),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
    };
    int("entries-read") - int("pending")
}
