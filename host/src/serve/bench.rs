//! `tt bench serve`: the townhall's speed on this machine, each number printed beside a
//! baseline measured in the same run, in a throwaway town under /tmp:
//!
//! - REST `GET /v1/status` (and the cheap `GET /v1/tasks/t1`) at a paced 500 requests/s over
//!   keep-alive connections, beside the same service call in-process (what HTTP, routing, the
//!   key check and JSON add);
//! - an event from `XADD` (a `send`) to an SSE client, beside an in-process
//!   [`Follower`](crate::town::Follower) on the same stream (what the server adds to
//!   `XREAD BLOCK`);
//! - an MCP `tools/call` round trip over stdio to a `tt mcp` child, beside the tool's service
//!   call in-process.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::App;
use crate::store::config::Config;
use crate::store::embedded::Embedded;
use crate::store::model::Kind;
use crate::town::auth::Scope;
use crate::town::Town;

const REST_RATE: u64 = 500;
const REST_REQUESTS: usize = 2500;
const CONNECTIONS: usize = 4;
const SSE_EVENTS: usize = 300;
const MCP_CALLS: usize = 300;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn line(what: &str, mut d: Vec<Duration>, base_what: &str, mut base: Vec<Duration>, target: &str) {
    d.sort();
    base.sort();
    let f = |x: Duration| format!("{:.2} ms", x.as_secs_f64() * 1000.0);
    println!(
        "{what:<44} p50 {:>8}  p99 {:>8}  (n={})  target {target}",
        f(pct(&d, 0.5)),
        f(pct(&d, 0.99)),
        d.len()
    );
    println!(
        "  baseline: {base_what:<34} p50 {:>8}  p99 {:>8}  (n={})",
        f(pct(&base, 0.5)),
        f(pct(&base, 0.99)),
        base.len()
    );
}

/// A throwaway town; its Redis stops and its directory goes when dropped.
struct Scratch {
    dir: PathBuf,
    config: Config,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Embedded::new(&self.config).stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One keep-alive HTTP/1.1 connection: GET and read a `Content-Length` answer.
struct Conn {
    stream: BufReader<TcpStream>,
    auth: String,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr, token: &str) -> Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(s),
            auth: format!("Bearer {token}"),
        })
    }

    async fn get(&mut self, path: &str) -> Result<u16> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: {}\r\n\r\n",
            self.auth
        );
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let mut status = 0;
        let mut len = 0usize;
        let mut l = String::new();
        loop {
            l.clear();
            if self.stream.read_line(&mut l).await? == 0 {
                bail!("the server closed the connection");
            }
            let t = l.trim_end();
            if t.is_empty() {
                break;
            }
            if let Some(code) = t.strip_prefix("HTTP/1.1 ") {
                status = code.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            } else if let Some((k, v)) = t.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await?;
        Ok(status)
    }
}

/// `GET path` at a paced [`REST_RATE`] over [`CONNECTIONS`] keep-alive connections: each
/// connection sends every `CONNECTIONS / REST_RATE` seconds. Latencies and the rate reached.
async fn paced(
    addr: std::net::SocketAddr,
    token: &str,
    path: &'static str,
) -> Result<(Vec<Duration>, f64)> {
    let mut tasks = Vec::new();
    let per = REST_REQUESTS / CONNECTIONS;
    let gap = Duration::from_micros(1_000_000 * CONNECTIONS as u64 / REST_RATE);
    let start = Instant::now();
    for c in 0..CONNECTIONS {
        let token = token.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr, &token).await?;
            let _ = conn.get(path).await?; // warm
            let mut out = Vec::with_capacity(per);
            let first = Instant::now() + gap * c as u32 / CONNECTIONS as u32;
            for i in 0..per {
                tokio::time::sleep_until((first + gap * i as u32).into()).await;
                let t = Instant::now();
                let status = conn.get(path).await?;
                out.push(t.elapsed());
                if status != 200 {
                    bail!("GET {path} answered {status}");
                }
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut rest = Vec::new();
    for t in tasks {
        rest.extend(t.await??);
    }
    let rate = rest.len() as f64 / start.elapsed().as_secs_f64();
    Ok((rest, rate))
}

pub async fn suite() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("ttserve{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut config = Config::new("bench", &dir);
    config.serve.rate_per_sec = Some(1_000_000);
    config.serve.rate_burst = Some(1_000_000);
    config.save()?;
    let scratch = Scratch {
        dir: dir.clone(),
        config: config.clone(),
    };
    let town = Town::connect(config.clone()).await?;
    for a in ["alice", "bob", "sink"] {
        town.spawn(a, "worker", None, None).await?;
    }
    for i in 0..20 {
        town.assign("alice", &format!("task {i}"), None).await?;
    }
    let token = town.key_add("bench", Scope::Manage).await?.token;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let app = App::new(town);
    let service =
        super::router(app.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move { axum_server::from_tcp(listener)?.serve(service).await });
    let town = app.town.clone();
    println!(
        "townhall bench ({} build, {} cores; a throwaway town under /tmp)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    for (path, what) in [
        ("/v1/status", "Town::status in-process"),
        ("/v1/tasks/t1", "Town::need_task in-process"),
    ] {
        let (rest, rate) = paced(addr, &token, path).await?;
        let mut base = Vec::new();
        for _ in 0..REST_REQUESTS / 5 {
            let t = Instant::now();
            if path == "/v1/status" {
                town.status(10).await?;
            } else {
                town.need_task("t1").await?;
            }
            base.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let target = if path == "/v1/status" {
            "p99 < 5 ms"
        } else {
            ""
        };
        line(
            &format!("REST GET {path} at {rate:.0} req/s"),
            rest,
            what,
            base,
            target,
        );
    }

    // SSE: a send, then wait for that event at the client.
    let mut sse = TcpStream::connect(addr).await?;
    sse.set_nodelay(true)?;
    let req = format!("GET /v1/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n");
    sse.write_all(req.as_bytes()).await?;
    let mut sse_lat = Vec::new();
    let mut reader = BufReader::new(sse);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..SSE_EVENTS {
        let marker = format!("sse-{i}\"");
        let t = Instant::now();
        town.send("sink", &format!("sse-{i}"), Kind::Info, false, None)
            .await?;
        let mut l = String::new();
        loop {
            l.clear();
            let n = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut l))
                .await
                .context("no event within 5 s")??;
            if n == 0 {
                bail!("the event stream ended");
            }
            if l.contains(&marker) {
                break;
            }
        }
        sse_lat.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut follower = town.follow(None, Duration::from_secs(5)).await?;
    let mut base = Vec::new();
    for i in 0..SSE_EVENTS {
        let t = Instant::now();
        town.send("sink", &format!("base-{i}"), Kind::Info, false, None)
            .await?;
        'wait: loop {
            for e in follower.next().await? {
                if e.fields.get("body").map(String::as_str) == Some(&format!("base-{i}")) {
                    break 'wait;
                }
            }
        }
        base.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    line(
        "SSE: send (XADD) -> event at the client",
        sse_lat,
        "in-process XREAD BLOCK follower",
        base,
        "p99 < 20 ms",
    );

    // MCP over stdio: a `tt mcp` child of this binary.
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .arg("--town")
        .arg(&dir)
        .arg("mcp")
        .env("TT_API_KEY", &token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut out = BufReader::new(child.stdout.take().context("stdout")?);
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
    stdin
        .write_all(
            format!("{init}\n{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}}\n")
                .as_bytes(),
        )
        .await?;
    let mut l = String::new();
    out.read_line(&mut l).await?;
    if !l.contains("\"result\"") {
        bail!("tt mcp did not initialize: {l}");
    }
    let mut mcp = Vec::new();
    for i in 1..=MCP_CALLS {
        let msg = format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"tools/call\",\"params\":{{\"name\":\"status\",\"arguments\":{{}}}}}}\n");
        let t = Instant::now();
        stdin.write_all(msg.as_bytes()).await?;
        stdin.flush().await?;
        l.clear();
        out.read_line(&mut l).await?;
        mcp.push(t.elapsed());
        if !l.contains(&format!("\"id\":{i}")) {
            bail!("unexpected MCP answer: {l}");
        }
    }
    drop(stdin);
    let _ = child.wait().await;
    let mut base = Vec::new();
    for _ in 0..MCP_CALLS {
        let t = Instant::now();
        let s = town.status(10).await?;
        let _ = serde_json::to_string_pretty(&s)?;
        base.push(t.elapsed());
    }
    line(
        "MCP stdio tools/call status round trip",
        mcp,
        "the tool's service call in-process",
        base,
        "p99 < 10 ms",
    );
    server.abort();
    drop(scratch);
    Ok(())
}
