//! `tt bench llm`: a thousand roles waiting on a model at once, and what the import adds.
//!
//! A local server speaks OpenAI's chat completions on loopback (the protocol the host's
//! client speaks to OpenAI, Ollama, llama.cpp and vLLM) and answers every call with an
//! approving verdict after a fixed delay.
//! - Waiting: 1,000 `reviewer-llm` agents each get one review request; the server answers each
//!   after 1 s. Wall time from the host's start to the last verdict applied (target < 3 s), the
//!   process's RSS and threads at their peak (target RSS < 500 MB).
//! - Overhead: one agent's `LlmGrant::chat` (alias, budget reserve and settle in Redis, the
//!   record) against the same request made directly with reqwest, against an instant server,
//!   median of 200 interleaved (target < 1 ms).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::routing::post;

use super::scratch::{start_host, Scratch, Spec};
use super::BenchOptions;
use crate::runtime::capabilities::llm::types::{ChatMessage, ChatRequest, Role};
use crate::runtime::capabilities::llm::LlmGrant;
use crate::store::applier::Op;
use crate::store::budget::Budgets;
use crate::store::llm::LlmGrantConfig;

const VERDICT: &str = r#"{"verdict": "approve", "reason": "looks right"}"#;

/// A chat-completions server on loopback answering after `delay`; counts the calls.
async fn server(delay: Duration) -> Result<(u16, Arc<AtomicUsize>)> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let counted = counted.clone();
            async move {
                tokio::time::sleep(delay).await;
                counted.fetch_add(1, Ordering::Relaxed);
                axum::Json(serde_json::json!({
                    "model": "bench-model",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": VERDICT}}],
                    "usage": {"prompt_tokens": 40, "completion_tokens": 12}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, calls))
}

fn llm_section(port: u16) -> Result<crate::store::llm::LlmSection> {
    Ok(toml::from_str(&format!(
        "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n\
         [models.bench]\nprovider = \"local\"\nmodel = \"bench-model\"\nmax_tokens = 64\n"
    ))?)
}

/// This process's thread count.
fn thread_count() -> u64 {
    crate::store::procfs::status("self", "Threads").unwrap_or(0)
}

pub(super) async fn suite(opts: &BenchOptions) -> Result<()> {
    if !opts.plugins.join("reviewer-llm.wasm").exists() {
        println!("llm: plugins/dist/reviewer-llm.wasm is not built (bash plugins/build.sh)");
        return Ok(());
    }
    overhead(opts).await?;
    // TT_BENCH_LLM_AGENTS: fewer agents, to tell the waiting from the start-up.
    let n = std::env::var("TT_BENCH_LLM_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    waiting(opts, n).await
}

async fn waiting(opts: &BenchOptions, n: usize) -> Result<()> {
    let (port, calls) = server(Duration::from_secs(1)).await?;
    let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let cfg: &[(&str, &str)] = &[("model", "bench")];
    let mut specs: Vec<Spec> = vec![("owner", "", &[][..])];
    specs.extend(names.iter().map(|r| (r.as_str(), "reviewer-llm", cfg)));
    let section = llm_section(port)?;
    let s = Scratch::with(opts, &specs, |c| {
        c.llm = section;
        let grant: toml::Value = toml::from_str("models = [\"bench\"]").expect("literal");
        for r in &names {
            if let Some(a) = c.agents.get_mut(r) {
                a.grants.insert("llm".into(), grant.clone());
            }
        }
    })
    .await?;
    let mut ops = Vec::new();
    for r in &names {
        let task = s.town.assign("owner", "work", None).await?;
        ops.push(Op::RequestReview {
            task,
            reviewer: r.clone(),
            body: "the work".into(),
        });
        if ops.len() == 200 {
            s.town
                .db
                .apply_ops("owner", std::mem::take(&mut ops))
                .await?;
        }
    }
    s.town.db.apply_ops("owner", ops).await?;
    let (rss0, threads0) = (super::rss_kib(), thread_count());
    let t = Instant::now();
    let (stop, handle) = start_host(&s.town);
    let (mut rss, mut threads) = (0, 0);
    while !(calls.load(Ordering::Relaxed) >= n && s.drained(&names).await?) {
        rss = rss.max(super::rss_kib());
        threads = threads.max(thread_count());
        if t.elapsed() > Duration::from_secs(120) {
            anyhow::bail!(
                "only {} of {n} model calls were made in 120 s",
                calls.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let el = t.elapsed();
    let _ = stop.send(true);
    handle.await??;
    println!(
        "llm, {n} reviewer-llm agents each waiting 1 s on a model: all verdicts applied in {:.2} s \
         from the host's start (target < 3 s); peak RSS {} MB (before: {} MB; target < 500 MB), \
         peak threads {threads} (before: {threads0})",
        el.as_secs_f64(),
        rss.max(super::rss_kib()) / 1024,
        rss0 / 1024
    );
    Ok(())
}

async fn overhead(opts: &BenchOptions) -> Result<()> {
    let (port, _) = server(Duration::ZERO).await?;
    let section = llm_section(port)?;
    let s = Scratch::with(opts, &[("a", "", &[][..])], |c| c.llm = section).await?;
    let grant = LlmGrant::from_config(
        &s.town.config,
        "a",
        &LlmGrantConfig {
            models: vec!["bench".into()],
            tokens_per_day: Some(u64::MAX / 4),
            ..Default::default()
        },
    )?;
    let budgets = Budgets::of(&s.town.db, s.town.config.retention.events);
    let request = || ChatRequest {
        model: "bench".into(),
        messages: vec![ChatMessage {
            role: Role::User,
            content: "Is this right?".into(),
            tool_calls: vec![],
            tool_call_id: None,
        }],
        tools: vec![],
        response_format: None,
        params: Default::default(),
    };
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let body = serde_json::json!({"model": "bench-model", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Is this right?"}]});
    let (mut through, mut direct) = (Vec::new(), Vec::new());
    for i in 0..220 {
        let t = Instant::now();
        grant
            .chat(Some(&budgets), "a", None, request())
            .await
            .map_err(|(e, _)| anyhow::anyhow!("{}", e.message))?;
        let a = t.elapsed();
        let t = Instant::now();
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?
            .bytes()
            .await?;
        let b = t.elapsed();
        if i >= 20 {
            through.push(a);
            direct.push(b);
        }
    }
    through.sort();
    direct.sort();
    let (a, b) = (through[through.len() / 2], direct[direct.len() / 2]);
    println!(
        "llm import overhead, median of 200: LlmGrant::chat {} (budget reserve + settle, record) \
         vs the same request direct {}: {} added   (target < 1 ms)",
        super::ms(a),
        super::ms(b),
        super::ms(a.saturating_sub(b))
    );
    Ok(())
}
