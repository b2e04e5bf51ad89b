//! `tt bench`: the speed and memory numbers, measured on this machine, printed.
//!
//! Each run makes a throwaway town under /tmp with its own embedded Redis and the compiled
//! plugins from `plugins/dist`, so the numbers include everything a real town pays: Lua
//! applier, AOF, consumer groups, Wasm calls. Targets are printed beside the numbers; nothing
//! here fails on a miss (that is what a benchmark is for, not a test).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tokio::sync::watch;

use crate::config::{AgentSection, Config};
use crate::db::{Ack, Unit};
use crate::embedded::Embedded;
use crate::host::{self, HostOptions};
use crate::keys::GROUP;
use crate::streams;
use crate::town::Town;

pub struct BenchOptions {
    pub plugins: PathBuf,
    /// Messages per agent count in the throughput runs.
    pub messages: usize,
    pub appendfsync: String,
}

/// An agent of a scratch town: name, plugin (file stem in plugins/dist; empty for a
/// mailbox-only agent), init config.
type Spec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// A throwaway town; its Redis stops and its directory goes when dropped.
struct Scratch {
    dir: PathBuf,
    town: Arc<Town>,
}

impl Scratch {
    async fn new(opts: &BenchOptions, agents: &[Spec<'_>]) -> Result<Scratch> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ttb{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut config = Config::new("bench", &dir);
        config.redis.appendfsync = Some(opts.appendfsync.clone());
        for (name, plugin, cfg) in agents {
            config.agents.insert(
                name.to_string(),
                AgentSection {
                    role: Some("bench".into()),
                    // The bench's roles keep no state: any host may serve them.
                    mode: crate::config::ServeMode::Shared,
                    // An empty plugin name makes a mailbox-only agent.
                    plugin: (!plugin.is_empty())
                        .then(|| opts.plugins.join(format!("{plugin}.wasm"))),
                    config: cfg
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                },
            );
        }
        config.save()?;
        let town = Arc::new(Town::open(&dir).await?);
        // From here on, dropping the scratch town stops its Redis, whatever fails next.
        let scratch = Scratch { dir, town };
        for (name, _, _) in agents {
            scratch.town.spawn(name, "bench", None, None).await?;
        }
        Ok(scratch)
    }

    fn socket(&self) -> PathBuf {
        Embedded::new(&self.town.config).socket()
    }

    /// Sends `n` messages to each of `agents`, many per applier call.
    async fn fill(&self, agents: &[String], n: usize, body: &str) -> Result<()> {
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let mut ops = Vec::new();
            for a in agents {
                for _ in chunk {
                    ops.push(json!({"op": "send", "to": a, "body": body}));
                }
            }
            self.town.db.apply_ops("conductor", ops).await?;
        }
        Ok(())
    }

    /// True when every mailbox of `agents` is empty. Polls gently: the bench must not be what
    /// loads Redis.
    async fn drained(&self, agents: &[String]) -> Result<bool> {
        tokio::time::sleep(Duration::from_millis(agents.len() as u64 / 4)).await;
        for a in agents {
            if self.town.mailbox_depth(a).await? != (0, 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Embedded::new(&self.town.config).stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_host(town: &Arc<Town>) -> (watch::Sender<bool>, tokio::task::JoinHandle<Result<()>>) {
    start_named_host(town, "bench")
}

fn start_named_host(
    town: &Arc<Town>,
    name: &str,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<Result<()>>) {
    let (tx, rx) = watch::channel(false);
    let opts = HostOptions {
        name: name.into(),
        until_idle: false,
        agents: vec![],
    };
    let handle = tokio::spawn(host::run_until(town.clone(), opts, tx.clone(), rx));
    (tx, handle)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub async fn run(opts: BenchOptions) -> Result<()> {
    for p in ["noop", "relay", "chaos"] {
        let f = opts.plugins.join(format!("{p}.wasm"));
        if !f.exists() {
            return Err(crate::error::fail(
                format!("{} is missing", f.display()),
                "build the plugins first: bash plugins/build.sh (or pass --plugins DIR)",
            ));
        }
    }
    println!(
        "tinytown bench (appendfsync {}, {} cores)",
        opts.appendfsync,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    redis_baseline(&opts).await?;
    cli_send_time(&opts).await?;
    library_throughput(&opts).await?;
    for agents in [1, 10, 100] {
        host_throughput(&opts, agents).await?;
    }
    latency(&opts).await?;
    cold_start(&opts).await?;
    idle_memory(&opts).await?;
    for hosts in [1, 2, 3] {
        several_hosts(&opts, hosts).await?;
    }
    swap_latency(&opts).await?;
    polyglot_load(&opts)?;
    Ok(())
}

/// Throughput of 10 no-op agents served by 1, 2 or 3 hosts (in one process, so on two cores the
/// gain is small; what matters is that it does not fall and nothing is lost).
async fn several_hosts(opts: &BenchOptions, hosts: usize) -> Result<()> {
    let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    let specs: Vec<Spec> = names
        .iter()
        .map(|n| (n.as_str(), "noop", &[][..]))
        .collect();
    let s = Scratch::new(opts, &specs).await?;
    let per_agent = (opts.messages / 10).max(200);
    s.fill(&names, per_agent, "x").await?;
    let t = Instant::now();
    let running: Vec<_> = (0..hosts)
        .map(|i| start_named_host(&s.town, &format!("h{i}")))
        .collect();
    while !s.drained(&names).await? {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let el = t.elapsed();
    for (stop, handle) in running {
        let _ = stop.send(true);
        handle.await??;
    }
    let mut c = s.town.db.conn.clone();
    let handled: u64 = redis::cmd("XLEN")
        .arg(s.town.db.keys.events())
        .query_async(&mut c)
        .await?;
    println!(
        "{hosts} host(s), 10 agents:                         {:.0} msg/s ({} messages in {:.2} s; events {handled})",
        (per_agent * 10) as f64 / el.as_secs_f64(),
        per_agent * 10,
        el.as_secs_f64()
    );
    Ok(())
}

/// How long from `tt swap` returning until the first message runs on the new version, and the
/// longest gap in handling around a swap, with messages arriving at 500/s.
async fn swap_latency(opts: &BenchOptions) -> Result<()> {
    let s = Scratch::new(opts, &[("c", "chaos", &[])]).await?;
    let v1 = opts.plugins.join("chaos.wasm");
    let v2 = s.dir.join("chaos-v2.wasm");
    let mut bytes = std::fs::read(&v1)?;
    bytes.extend_from_slice(&[0, 10, 8]);
    bytes.extend_from_slice(b"tt-build2");
    std::fs::write(&v2, bytes)?;
    let (stop, handle) = start_host(&s.town);
    let sender = {
        let town = s.town.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            for _ in 0..2500 {
                tick.tick().await;
                town.db
                    .apply_ops(
                        "conductor",
                        vec![json!({"op": "send", "to": "c", "body": "ok"})],
                    )
                    .await?;
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    for i in 0..8 {
        let file = if i % 2 == 0 { &v2 } else { &v1 };
        let digest = crate::swap::swap(&s.town, "c", file, false)
            .await?
            .to_string();
        let t = Instant::now();
        loop {
            let events = s.town.events(20, Some("c")).await?;
            if events.iter().any(|e| {
                e.fields.get("type").map(String::as_str) == Some("handled")
                    && e.fields.get("digest") == Some(&digest)
            }) {
                latencies.push(t.elapsed());
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("swap to {digest} never took effect");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sender.await??;
    let _ = stop.send(true);
    handle.await??;
    // The longest gap between two handled messages, over the whole run.
    let events = s.town.events(20_000, Some("c")).await?;
    let ts: Vec<u64> = events
        .iter()
        .filter(|e| e.fields.get("type").map(String::as_str) == Some("handled"))
        .filter_map(|e| e.fields.get("ts")?.parse().ok())
        .collect();
    let gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    latencies.sort();
    println!(
        "swap: command to first message on the new version: median {}  max {}; longest pause in handling {gap} ms (messages every 2 ms)",
        ms(percentile(&latencies, 0.5)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO))
    );
    Ok(())
}

/// Loading the heavy (Python, JavaScript) reviewers: compiling versus from the on-disk cache.
fn polyglot_load(opts: &BenchOptions) -> Result<()> {
    for name in ["reviewer-py", "reviewer-js", "reviewer-c", "reviewer"] {
        let path = opts.plugins.join(format!("{name}.wasm"));
        let Ok(bytes) = std::fs::read(&path) else {
            println!("load {name}: not built (bash plugins/build.sh)");
            continue;
        };
        let cache = std::env::temp_dir().join(format!("ttb-cache-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let cold = {
            let rt = crate::runtime::Runtime::new(Some(cache.clone()), false)?;
            let t = Instant::now();
            rt.compile(&path, &bytes)?;
            t.elapsed()
        };
        let warm = {
            let rt = crate::runtime::Runtime::new(Some(cache.clone()), false)?;
            let t = Instant::now();
            let (_, _, from_cache) = rt.compile(&path, &bytes)?;
            anyhow::ensure!(from_cache, "{name} was not loaded from the cache");
            t.elapsed()
        };
        let _ = std::fs::remove_dir_all(&cache);
        println!(
            "load {name:<12} ({:>5.1} MB): compile {:>9}, from cache {:>8}",
            bytes.len() as f64 / 1e6,
            ms(cold),
            ms(warm)
        );
    }
    Ok(())
}

/// redis-benchmark's own XADD rate against the same kind of server, for scale.
async fn redis_baseline(opts: &BenchOptions) -> Result<()> {
    let s = Scratch::new(opts, &[]).await?;
    let out = Command::new("redis-benchmark")
        .arg("-s")
        .arg(s.socket())
        .args(["-q", "-n", "100000", "XADD", "bench:stream", "*", "f", "v"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let line = text
                .split('\r')
                .rfind(|l| l.contains("requests per second"))
                .unwrap_or("")
                .trim()
                .to_string();
            println!("redis-benchmark XADD (unix socket, P=1):       {line}");
        }
        _ => println!("redis-benchmark XADD:                          (redis-benchmark not found)"),
    }
    Ok(())
}

/// Median wall time of a whole `tt send` process against a running embedded Redis.
async fn cli_send_time(opts: &BenchOptions) -> Result<()> {
    let s = Scratch::new(opts, &[("a", "noop", &[])]).await?;
    let exe = std::env::current_exe()?;
    let mut times = Vec::new();
    for i in 0..60 {
        let t = Instant::now();
        let st = Command::new(&exe)
            .args(["send", "a", &format!("hello {i}")])
            .env("TT_TOWN", &s.dir)
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(st.success(), "tt send failed");
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "tt send, whole process (60 runs):              median {}  p90 {}   (target < 5 ms)",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9))
    );
    Ok(())
}

/// Library level, one connection: send (applier), receive (XREADGROUP), acknowledge (applier).
async fn library_throughput(opts: &BenchOptions) -> Result<()> {
    let s = Scratch::new(opts, &[("a", "noop", &[])]).await?;
    let keys = s.town.db.keys.clone();
    let n = opts.messages.max(10_000);
    let batch = 200;
    let mut conn = s.town.db.conn.clone();
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let ops: Vec<_> = (0..batch)
            .map(|_| json!({"op": "send", "to": "a", "body": "x"}))
            .collect();
        s.town.db.apply_ops("conductor", ops).await?;
        let v: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg("bench")
            .arg("COUNT")
            .arg(batch)
            .arg("STREAMS")
            .arg(keys.inbox("a"))
            .arg(">")
            .query_async(&mut conn)
            .await?;
        let entries: Vec<_> = streams::read_reply(&v)
            .into_iter()
            .flat_map(|(_, e)| e)
            .collect();
        let units: Vec<Unit> = entries
            .iter()
            .map(|e| Unit {
                by: Some("a".into()),
                ack: Some(Ack {
                    stream: keys.inbox("a"),
                    entry: e.id.clone(),
                    agent: "a".into(),
                    kind: "inbox".into(),
                    member: format!("inbox/{}", e.id),
                }),
                dlq: true,
                ..Default::default()
            })
            .collect();
        s.town.db.apply(&units).await?;
        done += entries.len();
    }
    let el = t.elapsed();
    println!(
        "library send+receive+ack, one connection:      {:.0} msg/s ({n} messages in {:.2} s, batches of {batch})   (target >= 30,000)",
        n as f64 / el.as_secs_f64(),
        el.as_secs_f64()
    );
    Ok(())
}

/// Messages per second through `tt host` with a no-op Rust role.
async fn host_throughput(opts: &BenchOptions, agents: usize) -> Result<()> {
    let names: Vec<String> = (0..agents).map(|i| format!("n{i}")).collect();
    let specs: Vec<Spec> = names
        .iter()
        .map(|n| (n.as_str(), "noop", &[][..]))
        .collect();
    let s = Scratch::new(opts, &specs).await?;
    let per_agent = (opts.messages / agents).max(200);
    s.fill(&names, per_agent, "x").await?;
    let total = per_agent * agents;
    let t = Instant::now();
    let (stop, handle) = start_host(&s.town);
    while !s.drained(&names).await? {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let el = t.elapsed();
    let _ = stop.send(true);
    handle.await??;
    let target = if agents == 10 {
        "   (target >= 20,000 with 10 agents)"
    } else {
        ""
    };
    println!(
        "tt host, no-op role, {agents:>3} agent(s):             {:.0} msg/s ({total} messages in {:.2} s, incl. start){target}",
        total as f64 / el.as_secs_f64(),
        el.as_secs_f64()
    );
    Ok(())
}

/// Send-to-applied latency at a steady 1,000 msg/s: a relay forwards each message to a sink
/// mailbox, and the time from the send call to the forward's arrival is measured.
async fn latency(opts: &BenchOptions) -> Result<()> {
    // The sink has no plugin: its mailbox is read by the bench itself.
    let s = Scratch::new(
        opts,
        &[("relay", "relay", &[("next", "sink")]), ("sink", "", &[])],
    )
    .await?;
    let (stop, handle) = start_host(&s.town);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = 3000;
    let sink = s.town.db.keys.inbox("sink");
    let mut reader = s.town.db.dedicated(Duration::from_secs(1)).await?;
    let sent_at: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; n]));
    let sender = {
        let town = s.town.clone();
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            for i in 0..n {
                tick.tick().await;
                sent_at.lock().unwrap()[i] = Some(Instant::now());
                let op = json!({"op": "send", "to": "relay", "body": i.to_string()});
                town.db.apply_ops("conductor", vec![op]).await?;
            }
            anyhow::Ok(())
        })
    };
    let mut lat = Vec::with_capacity(n);
    let mut last = "0-0".to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lat.len() < n && Instant::now() < deadline {
        let v: redis::Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(200)
            .arg("STREAMS")
            .arg(&sink)
            .arg(&last)
            .query_async(&mut reader)
            .await?;
        let now = Instant::now();
        for (_, entries) in streams::read_reply(&v) {
            for e in entries {
                last = e.id.clone();
                let body = e.text_map().get("body").cloned().unwrap_or_default();
                if let Ok(i) = body.parse::<usize>() {
                    if let Some(t) = sent_at.lock().unwrap().get(i).copied().flatten() {
                        lat.push(now - t);
                    }
                }
            }
        }
    }
    sender.await.context("sender")??;
    let _ = stop.send(true);
    handle.await??;
    lat.sort();
    println!(
        "send -> applied latency at 1,000 msg/s ({} msgs): p50 {}  p99 {}  max {}   (target p99 < 5 ms)",
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );
    Ok(())
}

/// Time from starting a host until three agents with three different plugins (compiled cache
/// warm) have each handled their first message.
async fn cold_start(opts: &BenchOptions) -> Result<()> {
    let agents: [Spec; 3] = [("a", "noop", &[]), ("b", "relay", &[]), ("c", "chaos", &[])];
    let s = Scratch::new(opts, &agents).await?;
    let names: Vec<String> = agents.iter().map(|a| a.0.to_string()).collect();
    // Warm the on-disk cache, as a previous run of the town would have.
    {
        let (stop, handle) = start_host(&s.town);
        s.fill(&names, 1, "ok").await?;
        while !s.drained(&names).await? {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop.send(true);
        handle.await??;
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        s.fill(&names, 1, "ok").await?;
        let t = Instant::now();
        let (stop, handle) = start_host(&s.town);
        while !s.drained(&names).await? {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(t.elapsed());
        let _ = stop.send(true);
        handle.await??;
    }
    times.sort();
    println!(
        "cold start, 3 plugins from cache, to 3 handled: median {}  max {}   (target < 300 ms; in-process, new engine each time)",
        ms(percentile(&times, 0.5)),
        ms(*times.last().unwrap_or(&Duration::ZERO))
    );
    Ok(())
}

/// Resident memory per idle agent (instance, runner, its own Redis connection).
async fn idle_memory(opts: &BenchOptions) -> Result<()> {
    let names: Vec<String> = (0..100).map(|i| format!("i{i}")).collect();
    let specs: Vec<Spec> = names
        .iter()
        .map(|n| (n.as_str(), "noop", &[][..]))
        .collect();
    let s = Scratch::new(opts, &specs).await?;
    let (stop, handle) = start_host(&s.town);
    // One message each, so every agent has a live instance, then idle.
    s.fill(&names, 1, "x").await?;
    while !s.drained(&names).await? {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = rss_kib();
    let _ = stop.send(true);
    handle.await??;
    // The same host with a single agent.
    let one = Scratch::new(opts, &[("solo", "noop", &[])]).await?;
    let (stop, handle) = start_host(&one.town);
    one.fill(&["solo".to_string()], 1, "x").await?;
    while !one.drained(&["solo".to_string()]).await? {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss_kib();
    let _ = stop.send(true);
    handle.await??;
    let per = (with as f64 - base as f64) / 99.0;
    println!(
        "memory per idle agent (100 vs 1 agent, RSS):   {:.0} KiB   (host RSS with 100 agents: {} MiB)",
        per.max(0.0),
        with / 1024
    );
    Ok(())
}

/// `plugins/dist` of the repository we are run from, if it exists.
pub fn default_plugins_dir() -> PathBuf {
    let mut dir = std::env::current_dir().unwrap_or_default();
    loop {
        let candidate = dir.join("plugins").join("dist");
        if candidate.is_dir() {
            return candidate;
        }
        if !dir.pop() {
            return Path::new("plugins/dist").to_path_buf();
        }
    }
}
