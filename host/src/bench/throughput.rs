//! Throughput: the Redis baseline, `tt send`, the library on one connection, the host.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::scratch::{start_host, Scratch, Spec};
use super::{ms, percentile, BenchOptions};
use crate::store::applier::{Ack, Op, Unit};
use crate::store::keys::GROUP;
use crate::store::model::{Kind, Stream};
use crate::store::streams;

/// redis-benchmark's own XADD rate against the same kind of server, for scale.
pub(super) async fn redis_baseline(opts: &BenchOptions) -> Result<()> {
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
pub(super) async fn cli_send_time(opts: &BenchOptions) -> Result<()> {
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
pub(super) async fn library_throughput(opts: &BenchOptions) -> Result<()> {
    let s = Scratch::new(opts, &[("a", "noop", &[])]).await?;
    let keys = s.town.db.keys.clone();
    let n = opts.messages.max(10_000);
    let batch = 200;
    let mut conn = s.town.db.conn.clone();
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let ops: Vec<_> = (0..batch).map(|_| Op::send("a", Kind::Task, "x")).collect();
        s.town.db.apply_human("conductor", ops).await?;
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
                    kind: Stream::Inbox,
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

/// One run of the host figure: how many messages, how long, and the CPU it took.
pub(super) struct Figure {
    pub(super) messages: usize,
    pub(super) elapsed: Duration,
    /// CPU seconds of this process (the host, and the bench polling it) during the run.
    pub(super) host_cpu: f64,
    /// CPU seconds of the town's Redis during the run.
    pub(super) redis_cpu: f64,
}

/// Messages per second through `tt host` with a no-op Rust role.
/// The host figure: `agents` no-op agents, their mail sent first, then a host started and
/// timed until it has handled all of it. Returns (messages, time). `tweak` changes the town's
/// config (the journal bench turns the journal off).
pub(super) async fn host_figure(
    opts: &BenchOptions,
    agents: usize,
    tweak: impl FnOnce(&mut crate::store::config::Config),
) -> Result<(usize, Duration)> {
    let f = figure(opts, agents, tweak, false).await?;
    Ok((f.messages, f.elapsed))
}

/// [`host_figure`], with the CPU the host and Redis spent (on a machine shared with other
/// work, CPU per message moves much less than messages per second do), and the role compiled
/// into the scratch town's cache first: compiling it is a fixed cost of a fresh town (a large
/// one in a debug build) that would blur what is compared.
pub(super) async fn host_figure_measured(
    opts: &BenchOptions,
    agents: usize,
    tweak: impl FnOnce(&mut crate::store::config::Config),
) -> Result<Figure> {
    figure(opts, agents, tweak, true).await
}

async fn figure(
    opts: &BenchOptions,
    agents: usize,
    tweak: impl FnOnce(&mut crate::store::config::Config),
    warm: bool,
) -> Result<Figure> {
    let names: Vec<String> = (0..agents).map(|i| format!("n{i}")).collect();
    let specs: Vec<Spec> = names
        .iter()
        .map(|n| (n.as_str(), "noop", &[][..]))
        .collect();
    let s = Scratch::with(opts, &specs, tweak).await?;
    let per_agent = (opts.messages / agents).max(200);
    s.fill(&names, per_agent, "x").await?;
    if warm {
        let cache = s.town.config.state_dir().join("cache");
        let path = opts.plugins.join("noop.wasm");
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path)?;
            crate::runtime::Runtime::new(Some(cache), false)?.compile(&path, &bytes)?;
            anyhow::Ok(())
        })
        .await??;
    }
    let (cpu, redis) = (cpu_secs(), redis_cpu(&s).await?);
    let t = Instant::now();
    let (stop, handle) = start_host(&s.town);
    while !s.drained(&names).await? {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let el = t.elapsed();
    let (host_cpu, redis_cpu) = (cpu_secs() - cpu, redis_cpu(&s).await? - redis);
    let _ = stop.send(true);
    handle.await??;
    Ok(Figure {
        messages: per_agent * agents,
        elapsed: el,
        host_cpu,
        redis_cpu,
    })
}

/// CPU seconds (user and system, all threads) this process has used.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(r.ru_utime) + secs(r.ru_stime)
}

/// CPU seconds the scratch town's Redis has used (`INFO cpu`).
async fn redis_cpu(s: &Scratch) -> Result<f64> {
    let mut c = s.town.db.conn.clone();
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut c).await?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum())
}

pub(super) async fn host_throughput(opts: &BenchOptions, agents: usize) -> Result<()> {
    let (total, el) = host_figure(opts, agents, |_| {}).await?;
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
