//! `tt bench scale`: a big town on one host, each number beside the same measure of a
//! 10-agent town taken in the same run (the baseline).
//!
//! Every agent is a `relay` forwarding to the mailbox-only `sink`, served in the default mode
//! (`exclusive`: every agent has a lease), so what is measured includes leases. The host is
//! `tt host`, a process of its own (this executable), so its RSS (`VmHWM`, the peak, and
//! `VmRSS`) and CPU (`/proc/PID/stat`) are its own; Redis's CPU comes from `INFO cpu` and its
//! connections from `CLIENT LIST`, the bench's own connections subtracted.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::redis_stats::{
    clients, percent, redis_cpu, redis_sched, reset_stats, settled, top_commands, waited,
};
use super::scratch::{Scratch, Spec};
use super::sink::{added, counted, forwarded};
use super::{median_by, ms, percentile, turn_ratios, us, BenchOptions};
use crate::store::applier::Op;
use crate::store::config::ServeMode;
use crate::store::model::Kind;
use crate::store::procfs;
use crate::store::streams;

/// What one town measured.
#[derive(Default, Clone)]
struct Figures {
    start: Duration,
    /// The host's resident memory: idle after start, and its peak over the whole run.
    rss_mib: f64,
    peak_mib: f64,
    connections: usize,
    /// Percent of one core, host and Redis.
    idle_cpu: (f64, f64),
    /// What Redis spent its idle-window time on: the top commands by time.
    idle_commands: String,
    p50: Duration,
    p99: Duration,
    /// Every agent's first mail ([`FIRST`] messages in all), then every agent busy ([`BUSY`]),
    /// `--turns` times.
    first: Run,
    busy: Vec<Run>,
    /// Redis's `used_memory` after the busy runs, in MiB.
    redis_mib: f64,
    send_median: Duration,
}

/// Messages of the first run: two to each agent of a 10,000-agent town, every one of which
/// loads its plugin (and is dropped again, past `[host] max_instances`) to handle them.
const FIRST: usize = 20_000;
/// Messages of the second run: a backlog of ten for each agent of a 10,000-agent town.
const BUSY: usize = 100_000;

/// One run of mail to every agent: its rate, CPU per message (host, Redis), and what Redis
/// spent its time on.
#[derive(Default, Clone)]
struct Run {
    rate: f64,
    cpu: (Duration, Duration),
    commands: String,
    /// Redis's main thread's time waiting for a CPU while runnable, as a share of its time
    /// running (None where `/proc` does not say): on a machine of few cores, the host's
    /// threads and Redis take turns.
    redis_waited: Option<f64>,
}

/// Runs the suite for each count of `agents`, with an idle window of `idle`.
///
/// The busy runs of each town (`--turns`) are taken in turn with the baseline's: this
/// machine's speed drifts by as much as a half over minutes (a shared VM), so one run of each,
/// minutes apart, compares the machine as much as the towns. The median of each is reported,
/// and every turn with its ratio to the baseline turn just before it, and the median of those
/// ratios.
pub(super) async fn suite(opts: &BenchOptions, agents: &[usize], idle: Duration) -> Result<()> {
    let connections = crate::store::config::HostSection::default().connections;
    println!(
        "tinytown bench scale: relay agents, one host, [host] connections = {connections}, \
         idle window {} s",
        idle.as_secs()
    );
    let mut base = Subject::start(opts, 10, idle).await?;
    for &n in agents {
        let mut big = Subject::start(opts, n, idle).await?;
        let mut alone = super::alone::Alone::start(opts, n, FIRST).await?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..opts.turns {
            ours.push(base.busy().await?);
            theirs.push(big.busy().await?);
            alone.turn(BUSY).await?;
        }
        let big = big.finish(theirs).await?;
        let base = base.figures(ours).await?;
        report(n, &big, &base, connections, &alone);
    }
    base.host.stop()
}

fn report(n: usize, big: &Figures, base: &Figures, bound: usize, alone: &super::alone::Alone) {
    let line = |what: &str, b: String, s: String, target: &str| {
        println!("  {what:<34} {b:>14}   (10 agents: {s:>12})   {target}");
    };
    println!("{n} agents:");
    line(
        "host start, all agents served",
        format!("{:.2} s", big.start.as_secs_f64()),
        format!("{:.2} s", base.start.as_secs_f64()),
        "target < 5 s for 10,000",
    );
    line(
        "host RSS, idle / peak of the run",
        format!("{:.0} / {:.0} MiB", big.rss_mib, big.peak_mib),
        format!("{:.0} / {:.0} MiB", base.rss_mib, base.peak_mib),
        "target < 300 MiB",
    );
    line(
        "Redis connections of the host",
        big.connections.to_string(),
        base.connections.to_string(),
        &format!("target <= {bound}"),
    );
    line(
        "idle CPU, host + Redis",
        format!("{:.1}% + {:.1}%", big.idle_cpu.0, big.idle_cpu.1),
        format!("{:.1}% + {:.1}%", base.idle_cpu.0, base.idle_cpu.1),
        "target < 5% of a core together",
    );
    println!("  Redis while idle, top commands: {}", big.idle_commands);
    line(
        "one message, random agent, p50/p99",
        format!("{} / {}", ms(big.p50), ms(big.p99)),
        format!("{} / {}", ms(base.p50), ms(base.p99)),
        "target p99 < 5 ms",
    );
    let (busy_big, busy_base) = (median(&big.busy), median(&base.busy));
    for (what, total, b, s, target) in [
        ("first mail", FIRST, &big.first, &base.first, ""),
        (
            "every agent busy",
            BUSY,
            &busy_big,
            &busy_base,
            "target: not below 10 agents",
        ),
    ] {
        let each = total.div_ceil(n);
        line(
            &format!("throughput, {what} ({each} each)"),
            format!("{:.0} msg/s", b.rate),
            format!("{:.0} msg/s", s.rate),
            target,
        );
        line(
            "  CPU per message, host + Redis",
            format!("{} + {}", us(b.cpu.0), us(b.cpu.1)),
            format!("{} + {}", us(s.cpu.0), us(s.cpu.1)),
            "",
        );
        let (wb, ws) = (percent(b.redis_waited), percent(s.redis_waited));
        line("  Redis waiting for a CPU (of its run)", wb, ws, "");
        println!("    Redis's top commands: {}", b.commands);
        println!("    (10 agents: {})", s.commands);
    }
    // Each turn beside the baseline's taken just before it.
    let pairs: Vec<(f64, f64)> = (big.busy.iter().zip(&base.busy))
        .map(|(b, s)| (b.rate, s.rate))
        .collect();
    let (turns, ratio) = turn_ratios(&pairs);
    println!(
        "    every agent busy, {} turns beside the 10-agent town's: {turns} msg/s; \
         median ratio {ratio:.2}",
        pairs.len(),
    );
    alone.report(n);
    let kib_per_agent = big.redis_mib * 1024.0 / n as f64;
    line(
        "Redis memory after the busy runs",
        format!("{:.0} MiB, {kib_per_agent:.0} KiB/agent", big.redis_mib),
        format!("{:.0} MiB", base.redis_mib),
        "",
    );
    line(
        "tt send, whole process, median",
        ms(big.send_median),
        ms(base.send_median),
        "target < 5 ms",
    );
}

/// The run of median rate (a run that did not finish, NaN, counts as the slowest).
fn median(runs: &[Run]) -> Run {
    median_by(runs, |r| r.rate).unwrap_or_default()
}

/// The host: `tt host` in a process of its own, for its own memory and CPU.
struct HostProcess(std::process::Child);

impl HostProcess {
    fn start(s: &Scratch) -> Result<HostProcess> {
        let log = std::fs::File::create(s.dir.join("host.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["host", "--name", "bench"])
            .env("TT_TOWN", &s.dir)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting tt host")?;
        Ok(HostProcess(child))
    }

    /// CPU time (user + system) so far.
    fn cpu(&self) -> Duration {
        let f = procfs::stat(self.0.id()).unwrap_or_default();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // SAFETY: sysconf reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz)
    }

    /// A `/proc/PID/status` memory field (`VmRSS`, `VmHWM`) in MiB.
    fn mem_mib(&self, field: &str) -> f64 {
        procfs::status(self.0.id(), field).unwrap_or(0) as f64 / 1024.0
    }

    /// Stops it as a service manager would (SIGTERM) and waits.
    fn stop(mut self) -> Result<()> {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let st = self.0.wait()?;
        anyhow::ensure!(st.success(), "tt host exited with {st}");
        Ok(())
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (host, Redis) CPU over `window`, in percent of one core; without a host, Redis's only.
async fn cpu_over(s: &Scratch, host: Option<&HostProcess>, window: Duration) -> Result<(f64, f64)> {
    let cpu = |h: Option<&HostProcess>| h.map(HostProcess::cpu).unwrap_or_default();
    let (p0, r0, t) = (cpu(host), redis_cpu(s).await?, Instant::now());
    tokio::time::sleep(window).await;
    let (p1, r1) = (cpu(host), redis_cpu(s).await?);
    let wall = t.elapsed().as_secs_f64();
    let pct = |d: Duration| d.as_secs_f64() / wall * 100.0;
    Ok((pct(p1.saturating_sub(p0)), pct(r1.saturating_sub(r0))))
}

/// A town being measured: its scratch Redis, its host, and the sink's inbox.
struct Subject {
    s: Scratch,
    host: HostProcess,
    names: Vec<String>,
    reader: crate::store::conn::Conn,
    sink: String,
    f: Figures,
}

impl Subject {
    /// A town of `n` relay agents, measured up to its first mail: start, memory, connections,
    /// idle CPU over `idle`, latency, every agent's first mail.
    async fn start(opts: &BenchOptions, n: usize, idle: Duration) -> Result<Subject> {
        let names: Vec<String> = (0..n).map(|i| format!("r{i:05}")).collect();
        let mut specs: Vec<Spec> = names
            .iter()
            .map(|a| (a.as_str(), "relay", &[("next", "sink")][..]))
            .collect();
        specs.push(("sink", "", &[]));
        let s = Scratch::with(opts, &specs, |c| {
            for (name, a) in c.agents.iter_mut() {
                if name != "sink" {
                    a.mode = ServeMode::Exclusive;
                }
            }
        })
        .await?;
        let mut f = Figures::default();
        // Baselines before the host: the bench's own connections, Redis's CPU.
        let clients0 = clients(&s).await?;
        let idle0 = cpu_over(&s, None, idle).await?;
        let t = Instant::now();
        let host = HostProcess::start(&s)?;
        served(&s, n).await?;
        f.start = t.elapsed();
        // The runners' first reads (their own leftovers, a reclaim pass) end within moments.
        tokio::time::sleep(Duration::from_secs(2)).await;
        f.connections = clients(&s).await?.saturating_sub(clients0);
        reset_stats(&s).await?;
        let idle1 = cpu_over(&s, Some(&host), idle).await?;
        f.idle_commands = top_commands(&s).await?;
        f.idle_cpu = (idle1.0, (idle1.1 - idle0.1).max(0.0));
        f.rss_mib = host.mem_mib("VmRSS");
        let sink = s.town.db.keys.inbox("sink");
        let mut reader = s.town.db.dedicated(Duration::from_secs(5)).await?;
        let mut last = "0-0".to_string();
        // One message at a time to a random agent (the first to each loads its plugin: a warm-up
        // round of the same agents comes first, so the figure is a served agent's).
        let mut x: u64 = 0x5eed ^ n as u64;
        let picks: Vec<&String> = (0..300)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                &names[((x >> 33) % n as u64) as usize]
            })
            .collect();
        let mut lat = Vec::new();
        for round in 0..2 {
            for a in &picks {
                let t = Instant::now();
                s.town
                    .db
                    .apply_human("conductor", vec![Op::send(*a, Kind::Task, "ping")])
                    .await?;
                forwarded(&mut reader, &sink, &mut last, 1).await?;
                if round == 1 {
                    lat.push(t.elapsed());
                }
            }
        }
        lat.sort();
        f.p50 = percentile(&lat, 0.5);
        f.p99 = percentile(&lat, 0.99);
        let mut t = Subject {
            s,
            host,
            names,
            reader,
            sink,
            f,
        };
        t.f.first = t.run(FIRST).await?;
        Ok(t)
    }

    /// One run with every agent busy.
    async fn busy(&mut self) -> Result<Run> {
        self.run(BUSY).await
    }

    /// Its figures with these `busy` runs, the host still serving: its peak memory so far and
    /// `tt send`.
    async fn figures(&self, busy: Vec<Run>) -> Result<Figures> {
        let mut f = Figures {
            busy,
            peak_mib: self.host.mem_mib("VmHWM"),
            redis_mib: self.s.town.db.memory().await?.used as f64 / (1 << 20) as f64,
            ..self.f.clone()
        };
        f.send_median = cli_send(&self.s, &self.names[self.names.len() / 2]).await?;
        Ok(f)
    }

    /// Its figures, and its host stopped as a service manager would stop it.
    async fn finish(self, busy: Vec<Run>) -> Result<Figures> {
        let f = self.figures(busy).await?;
        self.host.stop()?;
        Ok(f)
    }
}

impl Subject {
    /// Sends `total` messages spread evenly over the agents (the same total for every town
    /// size) and waits for every forward.
    async fn run(&mut self, total: usize) -> Result<Run> {
        let (s, n) = (&self.s, self.names.len());
        let per = total.div_ceil(n);
        settled(s).await?;
        reset_stats(s).await?;
        let (host0, redis0) = (self.host.cpu(), redis_cpu(s).await?);
        let sched0 = redis_sched(s);
        let before = added(&mut self.reader, &self.sink).await?;
        let t = Instant::now();
        s.fill(&self.names, per, "x").await?;
        // A run that cannot finish (say, instances refused by the kernel) still prints the rest.
        let rate = match counted(&mut self.reader, &self.sink, before, (per * n) as u64).await {
            Ok(()) => (per * n) as f64 / t.elapsed().as_secs_f64(),
            Err(e) => {
                println!("  (a run of {n} agents did not finish: {e:#}; the host's last words:)");
                let log = std::fs::read_to_string(s.dir.join("host.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                for l in &lines[lines.len().saturating_sub(5)..] {
                    println!("    {l}");
                }
                for (agent, what) in stuck(s, &self.names).await?.iter().take(5) {
                    println!("    mail of {agent} not handled: {what}");
                }
                f64::NAN
            }
        };
        let sent = (per * n) as u32;
        Ok(Run {
            redis_waited: waited(sched0, redis_sched(s)),
            rate,
            cpu: (
                self.host.cpu().saturating_sub(host0) / sent,
                redis_cpu(s).await?.saturating_sub(redis0) / sent,
            ),
            commands: top_commands(s).await?,
        })
    }
}

/// The agents whose mail is still in their mailboxes: unread (lag) or read and not acknowledged
/// (pending), per stream.
async fn stuck(s: &Scratch, agents: &[String]) -> Result<Vec<(String, String)>> {
    let mut c = s.town.db.conn.clone();
    let mut out = Vec::new();
    for a in agents {
        let mut what = Vec::new();
        for key in [s.town.db.keys.urgent(a), s.town.db.keys.inbox(a)] {
            let v: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&key)
                .query_async(&mut c)
                .await?;
            for g in streams::array(&v) {
                let g = streams::flat_map(g);
                let field = |k: &str| g.get(k).and_then(streams::int).unwrap_or(0);
                if field("lag") > 0 || field("pending") > 0 {
                    what.push(format!(
                        "{key}: {} unread, {} pending",
                        field("lag"),
                        field("pending")
                    ));
                }
            }
        }
        if !what.is_empty() {
            out.push((a.clone(), what.join("; ")));
        }
    }
    Ok(out)
}

/// Waits until the host's heartbeat says it serves all `n` relay agents.
async fn served(s: &Scratch, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut c = s.town.db.conn.clone();
    loop {
        let beat: Option<String> = redis::cmd("HGET")
            .arg(s.town.db.keys.hosts())
            .arg("bench")
            .query_async(&mut c)
            .await?;
        let count = beat
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["serving"].as_u64())
            .unwrap_or(0);
        if count >= n as u64 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the host serves {count} of {n} agents"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The median of 20 `tt send` runs to `agent`, whole process.
async fn cli_send(s: &Scratch, agent: &str) -> Result<Duration> {
    settled(s).await?;
    let exe = std::env::current_exe()?;
    let mut times = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let st = Command::new(&exe)
            .args(["send", agent, &format!("hello {i}")])
            .env("TT_TOWN", &s.dir)
            .stdout(std::process::Stdio::null())
            .status()
            .context("running tt send")?;
        anyhow::ensure!(st.success(), "tt send failed");
        times.push(t.elapsed());
    }
    times.sort();
    Ok(percentile(&times, 0.5))
}
