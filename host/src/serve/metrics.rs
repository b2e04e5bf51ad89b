//! `/metrics` in the Prometheus text format.
//!
//! Two sources. Gauges are read from the town at scrape time through the services (mailbox
//! depths, messages in hand, tasks by state, backlog, dead letters, each host's heartbeat and
//! its handled counts). Counters and the latency histogram come from following the event
//! stream while the server runs ([`collect`]): `handled` and `dead-letter` events per agent,
//! swaps, and for each handled message the time from its arrival in the mailbox (its stream
//! id) to the applied handling (the event's time). Counters start at zero with the server, as
//! Prometheus counters may.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use super::App;
use crate::store::model::now_ms;
use crate::town::{Event, Town};

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    handled: BTreeMap<String, u64>,
    dead: BTreeMap<String, u64>,
    swaps: u64,
    events: u64,
    buckets: [u64; BUCKETS.len()],
    latency_sum: f64,
    latency_count: u64,
}

impl Metrics {
    fn record(&self, e: &Event) {
        let Ok(mut c) = self.inner.lock() else { return };
        c.events += 1;
        let field = |k: &str| e.fields.get(k).cloned().unwrap_or_default();
        match field("type").as_str() {
            "handled" => {
                *c.handled.entry(field("agent")).or_default() += 1;
                // msg is `<kind>/<entry id>`, and an entry id starts with its arrival time.
                let arrived = field("msg")
                    .rsplit('/')
                    .next()
                    .and_then(|id| id.split('-').next()?.parse::<u64>().ok());
                let at = field("ts").parse::<u64>().ok();
                if let (Some(arrived), Some(at)) = (arrived, at) {
                    let secs = at.saturating_sub(arrived) as f64 / 1000.0;
                    c.latency_sum += secs;
                    c.latency_count += 1;
                    for (i, b) in BUCKETS.iter().enumerate() {
                        if secs <= *b {
                            c.buckets[i] += 1;
                        }
                    }
                }
            }
            "dead-letter" => *c.dead.entry(field("agent")).or_default() += 1,
            "swap" => c.swaps += 1,
            _ => {}
        }
    }
}

/// Follows the town's events for the counters, until the process ends; reconnects when Redis
/// comes back.
pub async fn collect(town: Arc<Town>, metrics: Arc<Metrics>) {
    let mut from: Option<String> = None;
    loop {
        match town.follow(from.as_deref(), Duration::from_secs(10)).await {
            Ok(mut f) => loop {
                match f.next().await {
                    Ok(batch) => batch.iter().for_each(|e| metrics.record(e)),
                    Err(_) => break,
                }
                from = Some(f.last.clone());
            },
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub async fn render(town: &Town, metrics: &Metrics) -> anyhow::Result<String> {
    let status = town.status(0).await?;
    let mut out = String::new();
    head(
        &mut out,
        "tt_mailbox_waiting",
        "gauge",
        "Messages not yet delivered to a host, per agent.",
    );
    for a in &status.agents {
        let _ = writeln!(
            out,
            "tt_mailbox_waiting{{agent=\"{}\"}} {}",
            label(&a.agent.name),
            a.waiting
        );
    }
    head(
        &mut out,
        "tt_mailbox_in_hand",
        "gauge",
        "Messages delivered and not yet acknowledged (pending), per agent.",
    );
    for a in &status.agents {
        let _ = writeln!(
            out,
            "tt_mailbox_in_hand{{agent=\"{}\"}} {}",
            label(&a.agent.name),
            a.in_flight
        );
    }
    head(
        &mut out,
        "tt_conductor_inbox",
        "gauge",
        "Messages waiting in the humans' mailbox.",
    );
    let _ = writeln!(out, "tt_conductor_inbox {}", status.conductor_inbox);
    head(&mut out, "tt_tasks", "gauge", "Tasks by state.");
    let tasks: BTreeMap<_, _> = status.tasks.iter().collect();
    for (state, n) in tasks {
        let _ = writeln!(out, "tt_tasks{{state=\"{}\"}} {n}", label(state));
    }
    head(
        &mut out,
        "tt_backlog",
        "gauge",
        "Tasks waiting in the backlog.",
    );
    let _ = writeln!(out, "tt_backlog {}", status.backlog);
    head(
        &mut out,
        "tt_dead_letters",
        "gauge",
        "Dead letters kept now.",
    );
    let _ = writeln!(out, "tt_dead_letters {}", status.dead_letters);
    head(
        &mut out,
        "tt_host_heartbeat_age_seconds",
        "gauge",
        "Seconds since each host's last heartbeat.",
    );
    let now = now_ms();
    for h in &status.hosts {
        let name = label(h["name"].as_str().unwrap_or("?"));
        let age = now.saturating_sub(h["seen_ms"].as_u64().unwrap_or(0)) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "tt_host_heartbeat_age_seconds{{host=\"{name}\"}} {age}"
        );
    }
    head(
        &mut out,
        "tt_host_messages_handled",
        "gauge",
        "Messages each host has handled per agent since it started (from its heartbeat).",
    );
    for h in &status.hosts {
        let name = label(h["name"].as_str().unwrap_or("?"));
        if let Some(agents) = h["agents"].as_object() {
            for (agent, n) in agents {
                let _ = writeln!(
                    out,
                    "tt_host_messages_handled{{host=\"{name}\",agent=\"{}\"}} {}",
                    label(agent),
                    n.as_u64().unwrap_or(0)
                );
            }
        }
    }
    let usage = town.usage(1, None, None).await?;
    let mut spend: BTreeMap<(&str, &str), (u64, u64, u64, f64)> = BTreeMap::new();
    for r in &usage.rows {
        let s = spend.entry((&r.agent, &r.model)).or_default();
        s.0 += r.calls;
        s.1 += r.input_tokens;
        s.2 += r.output_tokens;
        s.3 += r.cost;
    }
    head(
        &mut out,
        "tt_llm_calls_today",
        "gauge",
        "Model calls today (UTC day) per agent and model alias.",
    );
    for ((agent, model), s) in &spend {
        let _ = writeln!(
            out,
            "tt_llm_calls_today{{agent=\"{}\",model=\"{}\"}} {}",
            label(agent),
            label(model),
            s.0
        );
    }
    head(
        &mut out,
        "tt_llm_tokens_today",
        "gauge",
        "Model tokens spent today (UTC day) per agent, model alias and direction.",
    );
    for ((agent, model), s) in &spend {
        for (direction, n) in [("input", s.1), ("output", s.2)] {
            let _ = writeln!(
                out,
                "tt_llm_tokens_today{{agent=\"{}\",model=\"{}\",direction=\"{direction}\"}} {n}",
                label(agent),
                label(model)
            );
        }
    }
    head(
        &mut out,
        "tt_llm_cost_today",
        "gauge",
        "Model cost today (UTC day) per agent and model alias, in the prices' currency.",
    );
    for ((agent, model), s) in &spend {
        let _ = writeln!(
            out,
            "tt_llm_cost_today{{agent=\"{}\",model=\"{}\"}} {}",
            label(agent),
            label(model),
            s.3
        );
    }
    let c = metrics
        .inner
        .lock()
        .map_err(|_| anyhow::anyhow!("metrics lock poisoned"))?;
    head(
        &mut out,
        "tt_messages_handled_total",
        "counter",
        "Messages handled per agent (seen by this server).",
    );
    for (agent, n) in &c.handled {
        let _ = writeln!(
            out,
            "tt_messages_handled_total{{agent=\"{}\"}} {n}",
            label(agent)
        );
    }
    head(
        &mut out,
        "tt_messages_dead_lettered_total",
        "counter",
        "Messages dead-lettered per agent (seen by this server).",
    );
    for (agent, n) in &c.dead {
        let _ = writeln!(
            out,
            "tt_messages_dead_lettered_total{{agent=\"{}\"}} {n}",
            label(agent)
        );
    }
    head(
        &mut out,
        "tt_swaps_total",
        "counter",
        "Plugin swaps (seen by this server).",
    );
    let _ = writeln!(out, "tt_swaps_total {}", c.swaps);
    head(
        &mut out,
        "tt_events_total",
        "counter",
        "Town events (seen by this server).",
    );
    let _ = writeln!(out, "tt_events_total {}", c.events);
    head(
        &mut out,
        "tt_handling_latency_seconds",
        "histogram",
        "From a message's arrival in its mailbox to its applied handling.",
    );
    for (i, b) in BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "tt_handling_latency_seconds_bucket{{le=\"{b}\"}} {}",
            c.buckets[i]
        );
    }
    let _ = writeln!(
        out,
        "tt_handling_latency_seconds_bucket{{le=\"+Inf\"}} {}",
        c.latency_count
    );
    let _ = writeln!(out, "tt_handling_latency_seconds_sum {}", c.latency_sum);
    let _ = writeln!(out, "tt_handling_latency_seconds_count {}", c.latency_count);
    Ok(out)
}

pub async fn serve(State(app): State<App>) -> Response {
    match render(&app.town, &app.metrics).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}
