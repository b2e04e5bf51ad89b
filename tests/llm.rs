//! The `llm` capability against real HTTP and a real Redis: `LlmGrant::chat` talking to
//! loopback servers that speak OpenAI chat completions and Anthropic Messages with scripted
//! answers and faults (`common/llm_server.rs`), budgets in the town's own `redis-server`, and
//! the config errors a person can make.

mod common;
#[path = "common/llm_server.rs"]
mod llm_server;
mod townhall;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::TestTown;
use llm_server::{anthropic, openai_text, openai_tool_call, LlmServer, Reply};
use tinytown::runtime::capabilities::llm::{
    ChatMessage, ChatRequest, ErrorCode, FinishReason, Llm, LlmGrant, Params, Role, Tool, ToolCall,
};
use tinytown::runtime::capabilities::Capability;
use tinytown::store::budget::Budgets;
use tinytown::store::config::Config;
use tinytown::town::Town;

const KEY: &str = "sk-test-SECRET-7f3a9c";
const VERDICT: &str = r#"{"type":"object","properties":{"verdict":{"enum":["approve","reject"]},"reason":{"type":"string"}},"required":["verdict","reason"]}"#;

/// `[llm]` with one provider `p` at `url` and alias `fast`, plus `[agents.rev.llm]` with
/// `grant_extra` lines. The key comes from `TT_TEST_LLM_KEY`, set once for the whole binary.
fn llm_toml(kind: &str, url: &str, provider_extra: &str, grant_extra: &str) -> String {
    std::env::set_var("TT_TEST_LLM_KEY", KEY);
    format!(
        "\n[llm.providers.p]\nkind = \"{kind}\"\nbase_url = \"{url}\"\napi_key_env = \
         \"TT_TEST_LLM_KEY\"\ntimeout_ms = 2000\nretries = 2\n{provider_extra}\n\
         [llm.models.fast]\nprovider = \"p\"\nmodel = \"m-1\"\nmax_tokens = 100\n\
         input_price = 2.0\noutput_price = 10.0\n\
         [agents.rev.llm]\nmodels = [\"fast\"]\n{grant_extra}\n"
    )
}

fn config(text: &str, dir: &std::path::Path) -> Config {
    let mut c = Config::parse(&format!("[town]\nname = \"test\"\n{text}"))
        .unwrap_or_else(|e| panic!("config: {e}"));
    c.dir = dir.to_path_buf();
    c
}

/// The grant of agent `rev` as the capability resolves it.
fn grant_of(c: &Config) -> anyhow::Result<LlmGrant> {
    let table = &c.agents["rev"].grants["llm"];
    Llm.check("rev", table)?;
    let g = Llm.grant(c, "rev", table)?;
    Ok(
        std::sync::Arc::try_unwrap(g.downcast::<LlmGrant>().ok().unwrap())
            .ok()
            .unwrap(),
    )
}

fn grant(kind: &str, url: &str, provider_extra: &str) -> LlmGrant {
    let dir = std::env::temp_dir();
    grant_of(&config(&llm_toml(kind, url, provider_extra, ""), &dir)).unwrap()
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        model: "fast".into(),
        messages: vec![
            ChatMessage::new(Role::System, "You review work."),
            ChatMessage::new(Role::User, text),
        ],
        tools: vec![],
        response_format: None,
        params: Params::default(),
    }
}

/// Fails if the key appears anywhere in `what`.
fn no_key(what: &str, text: &str) {
    assert!(!text.contains(KEY), "the key leaked into {what}: {text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_request_and_answer() {
    let s = LlmServer::start(
        vec![],
        Some(Reply::json(200, openai_text("looks good", 31, 7))),
    );
    let g = grant("openai", &s.openai_url(), "");
    let mut req = ask("review this");
    req.tools.push(Tool {
        name: "lookup".into(),
        description: "find a file".into(),
        parameters: r#"{"type":"object"}"#.into(),
    });
    req.response_format = Some(VERDICT.into());
    req.params = Params {
        max_tokens: Some(50),
        temperature: Some(0.5),
        stop: vec!["END".into()],
    };
    let (r, rec) = g.chat(None, "rev", Some("t1"), req).await.unwrap();
    assert_eq!(r.text, "looks good");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (31, 7));
    assert_eq!(r.model, "loopback-gpt");
    let seen = s.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    let b = &seen[0].body;
    assert_eq!(b["model"], "m-1");
    assert_eq!(b["max_tokens"], 50);
    assert_eq!(b["temperature"], 0.5);
    assert_eq!(b["stop"], json!(["END"]));
    assert_eq!(
        b["messages"][0],
        json!({"role": "system", "content": "You review work."})
    );
    assert_eq!(
        b["tools"][0]["function"]["parameters"],
        json!({"type": "object"})
    );
    assert_eq!(b["response_format"]["type"], "json_schema");
    assert_eq!(
        b["response_format"]["json_schema"]["schema"]["required"],
        json!(["verdict", "reason"])
    );
    // The record: provider and model, tokens and cost (2.0 and 10.0 per million).
    assert_eq!(
        (
            rec.provider.as_str(),
            rec.model.as_str(),
            rec.alias.as_str()
        ),
        ("p", "m-1", "fast")
    );
    assert_eq!((rec.input_tokens, rec.output_tokens), (31, 7));
    assert_eq!(rec.cost_micro, 31 * 2 + 7 * 10);
    assert_eq!(rec.attempts, 1);
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.response["text"], "looks good");
    assert_eq!(rec.request["model"], "fast");
    no_key("the record", &serde_json::to_string(&rec).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_tool_calls_both_ways() {
    let s = LlmServer::start(
        vec![Reply::json(
            200,
            openai_tool_call("lookup", json!({"path": "a.rs"})),
        )],
        None,
    );
    let g = grant("openai", &s.openai_url(), "");
    let mut req = ask("find it");
    req.messages.push(ChatMessage {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: vec![ToolCall {
            id: "c0".into(),
            name: "lookup".into(),
            arguments: "{}".into(),
        }],
        tool_call_id: None,
    });
    req.messages.push(ChatMessage {
        role: Role::Tool,
        content: "no such file".into(),
        tool_calls: vec![],
        tool_call_id: Some("c0".into()),
    });
    let (r, _) = g.chat(None, "rev", None, req).await.unwrap();
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(r.tool_calls.len(), 1);
    assert_eq!(r.tool_calls[0].name, "lookup");
    let args: Value = serde_json::from_str(&r.tool_calls[0].arguments).unwrap();
    assert_eq!(args, json!({"path": "a.rs"}));
    let m = &s.seen()[0].body["messages"];
    assert_eq!(m[2]["tool_calls"][0]["function"]["name"], "lookup");
    assert_eq!(m[2]["content"], Value::Null);
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "c0", "content": "no such file"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_request_and_structured_answer() {
    let answer = anthropic(
        json!([{"type": "tool_use", "id": "tu1", "name": "respond",
                "input": {"verdict": "approve", "reason": "fine"}}]),
        "tool_use",
        40,
        12,
    );
    let s = LlmServer::start(vec![Reply::json(200, answer)], None);
    let g = grant("anthropic", &s.anthropic_url(), "");
    let mut req = ask("review this");
    req.messages.push(ChatMessage {
        role: Role::Assistant,
        content: "checking".into(),
        tool_calls: vec![ToolCall {
            id: "c0".into(),
            name: "lookup".into(),
            arguments: r#"{"p":1}"#.into(),
        }],
        tool_call_id: None,
    });
    for (id, out) in [("c0", "one"), ("c1", "two")] {
        req.messages.push(ChatMessage {
            role: Role::Tool,
            content: out.into(),
            tool_calls: vec![],
            tool_call_id: Some(id.into()),
        });
    }
    req.response_format = Some(VERDICT.into());
    let (r, rec) = g.chat(None, "rev", None, req).await.unwrap();
    let v: Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(v, json!({"verdict": "approve", "reason": "fine"}));
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert!(r.tool_calls.is_empty());
    assert_eq!((rec.input_tokens, rec.output_tokens), (40, 12));
    let seen = &s.seen()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some(KEY));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.header("authorization"), None);
    let b = &seen.body;
    assert_eq!(b["system"], "You review work.");
    assert_eq!(b["max_tokens"], 100, "the model's default cap");
    assert_eq!(b["messages"][0]["role"], "user");
    assert_eq!(b["messages"][1]["content"][1]["type"], "tool_use");
    assert_eq!(b["messages"][1]["content"][1]["input"], json!({"p": 1}));
    // Both tool results in one user turn: the roles alternate.
    assert_eq!(b["messages"][2]["role"], "user");
    assert_eq!(b["messages"][2]["content"][1]["tool_use_id"], "c1");
    assert_eq!(b["tool_choice"], json!({"type": "tool", "name": "respond"}));
    assert_eq!(
        b["tools"][0]["input_schema"]["required"],
        json!(["verdict", "reason"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_text_tool_use_and_length() {
    let s = LlmServer::start(
        vec![
            Reply::json(
                200,
                anthropic(
                    json!([{"type": "text", "text": "cut"}]),
                    "max_tokens",
                    5,
                    100,
                ),
            ),
            Reply::json(
                200,
                anthropic(
                    json!([{"type": "tool_use", "id": "x", "name": "lookup", "input": {}}]),
                    "tool_use",
                    5,
                    3,
                ),
            ),
        ],
        None,
    );
    let g = grant("anthropic", &s.anthropic_url(), "");
    let (r, _) = g.chat(None, "rev", None, ask("a")).await.unwrap();
    assert_eq!(
        (r.text.as_str(), r.finish_reason),
        ("cut", FinishReason::Length)
    );
    let (r, _) = g.chat(None, "rev", None, ask("b")).await.unwrap();
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(r.tool_calls[0].arguments, "{}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_honours_retry_after_in_seconds_and_as_a_date() {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(4));
    let s = LlmServer::start(
        vec![
            Reply::json(429, json!({"error": {"message": "slow down"}}))
                .with_header("retry-after", "1"),
            Reply::json(429, json!({})).with_header("retry-after", &date),
        ],
        Some(Reply::json(200, openai_text("ok", 1, 1))),
    );
    let g = grant("openai", &s.openai_url(), "");
    let (r, rec) = g.chat(None, "rev", None, ask("x")).await.unwrap();
    assert_eq!(r.text, "ok");
    assert_eq!(rec.attempts, 3);
    let seen = s.seen();
    assert_eq!(seen.len(), 3);
    let first = seen[1].at - seen[0].at;
    assert!(
        first >= Duration::from_millis(950),
        "waited {first:?} for Retry-After: 1"
    );
    let second = seen[2].at - seen[1].at;
    assert!(
        second >= Duration::from_millis(1000),
        "waited {second:?} for an HTTP date"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_after_the_retries_is_rate_limited_and_a_long_retry_after_is_not_waited() {
    let s = LlmServer::start(
        vec![],
        Some(
            Reply::json(429, json!({"error": {"message": "busy"}})).with_header("retry-after", "0"),
        ),
    );
    let g = grant("openai", &s.openai_url(), "");
    let (e, rec) = g.chat(None, "rev", None, ask("x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert!(e.retryable && e.message.contains("busy"), "{e:?}");
    assert_eq!((s.count(), rec.attempts), (3, 3), "one try and two retries");
    assert_eq!(rec.status, Some(429));

    let s = LlmServer::start(
        vec![],
        Some(Reply::json(429, json!({})).with_header("retry-after", "3600")),
    );
    let g = grant("openai", &s.openai_url(), "");
    let t = Instant::now();
    let (e, _) = g.chat(None, "rev", None, ask("x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(s.count(), 1, "an hour's Retry-After ends the retries");
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5xx_is_retried_with_backoff_then_provider_unavailable() {
    let s = LlmServer::start(
        vec![Reply::text(503, "down")],
        Some(Reply::json(200, openai_text("back", 1, 1))),
    );
    let g = grant("openai", &s.openai_url(), "");
    let (r, _) = g.chat(None, "rev", None, ask("x")).await.unwrap();
    assert_eq!(r.text, "back");
    let seen = s.seen();
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(240),
        "backed off"
    );

    let s = LlmServer::start(
        vec![],
        Some(Reply::json(500, json!({"error": {"message": "boom"}}))),
    );
    let g = grant("openai", &s.openai_url(), "");
    let (e, rec) = g.chat(None, "rev", None, ask("x")).await.unwrap_err();
    assert_eq!(
        (e.code, e.retryable),
        (ErrorCode::ProviderUnavailable, true)
    );
    assert!(
        e.message.contains("500") && e.message.contains("boom"),
        "{}",
        e.message
    );
    assert_eq!((s.count(), rec.attempts), (3, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_socket_times_out_once() {
    let s = LlmServer::start(vec![], Some(Reply::Stall));
    let g = grant("openai", &s.openai_url(), "");
    let t = Instant::now();
    let (e, _) = g.chat(None, "rev", None, ask("x")).await.unwrap_err();
    assert_eq!(
        (e.code, e.retryable),
        (ErrorCode::ProviderUnavailable, true)
    );
    assert!(
        e.message.contains("did not answer within 2000 ms"),
        "{}",
        e.message
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(s.count(), 1, "a timed-out attempt is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_answers_are_provider_unavailable_and_retryable() {
    let s = LlmServer::start(
        vec![
            Reply::text(200, r#"{"choices": ["#),
            Reply::json(200, json!({"choices": []})),
        ],
        None,
    );
    let g = grant("openai", &s.openai_url(), "");
    for want in ["not JSON", "no choices[0]"] {
        let (e, _) = g.chat(None, "rev", None, ask("x")).await.unwrap_err();
        assert_eq!(
            (e.code, e.retryable),
            (ErrorCode::ProviderUnavailable, true)
        );
        assert!(e.message.contains(want), "{}", e.message);
    }
    assert_eq!(s.count(), 2, "not retried inside the call");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_4xx_is_invalid_request_never_retried_and_an_echoed_key_is_scrubbed() {
    let echo = format!("Incorrect API key provided: {KEY}");
    let s = LlmServer::start(
        vec![],
        Some(Reply::json(401, json!({"error": {"message": echo}}))),
    );
    let g = grant("openai", &s.openai_url(), "");
    let (e, rec) = g.chat(None, "rev", None, ask("x")).await.unwrap_err();
    assert_eq!((e.code, e.retryable), (ErrorCode::InvalidRequest, false));
    assert!(
        e.message.contains("401") && e.message.contains("[redacted]"),
        "{}",
        e.message
    );
    no_key("the error", &format!("{e:?} {e}"));
    no_key("the record", &serde_json::to_string(&rec).unwrap());
    assert_eq!(s.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_server_is_provider_unavailable_after_the_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let g = grant("openai", &format!("http://127.0.0.1:{port}/v1"), "");
    let (e, rec) = g.chat(None, "rev", None, ask("x")).await.unwrap_err();
    assert_eq!(
        (e.code, e.retryable),
        (ErrorCode::ProviderUnavailable, true)
    );
    assert!(e.message.contains("cannot be reached"), "{}", e.message);
    assert_eq!(rec.attempts, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guests_mistakes_are_refused_before_anything_is_sent() {
    let s = LlmServer::start(vec![], Some(Reply::json(200, openai_text("x", 1, 1))));
    let g = grant("openai", &s.openai_url(), "");
    let mut req = ask("x");
    req.model = "smart".into();
    let (e, rec) = g.chat(None, "rev", None, req).await.unwrap_err();
    assert_eq!((e.code, e.retryable), (ErrorCode::ModelNotGranted, false));
    assert!(
        e.message.contains("`smart`") && e.message.contains("fast"),
        "{}",
        e.message
    );
    assert_eq!(rec.provider, "");
    let mut req = ask("x");
    req.tools.push(Tool {
        name: "t".into(),
        description: String::new(),
        parameters: "{nope".into(),
    });
    let (e, _) = g.chat(None, "rev", None, req).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(
        e.message.contains("tool `t` parameters is not JSON"),
        "{}",
        e.message
    );
    let mut req = ask("x");
    req.response_format = Some("[".into());
    assert_eq!(
        g.chat(None, "rev", None, req).await.unwrap_err().0.code,
        ErrorCode::InvalidRequest
    );
    let mut req = ask("x");
    req.params.max_tokens = Some(0);
    assert_eq!(
        g.chat(None, "rev", None, req).await.unwrap_err().0.code,
        ErrorCode::InvalidRequest
    );
    assert_eq!(g.models(), vec!["fast".to_string()]);
    assert_eq!(s.count(), 0);
}

// ---- budgets, in the town's own Redis ----

/// A town whose tinytown.toml has the llm section, opened twice (two connections, like two
/// hosts), with its grant for `rev`.
async fn budget_town(url: &str, grant_extra: &str) -> (TestTown, Town, Town, LlmGrant) {
    let t = TestTown::new();
    let mut text = t.read_config();
    text.push_str(&llm_toml("openai", url, "", grant_extra));
    t.write_config(&text);
    let a = Town::open(t.path()).await.unwrap();
    let b = Town::open(t.path()).await.unwrap();
    let g = grant_of(&a.config).unwrap();
    (t, a, b, g)
}

fn budgets(t: &Town) -> Budgets {
    Budgets::of(&t.db, t.config.retention.events)
}

/// Every key of the town but its event stream, with its contents.
fn snapshot(t: &TestTown) -> Vec<(String, String)> {
    let keys = t.redis(&["KEYS", "tt:{test}:*"]);
    let mut out: Vec<_> = keys
        .lines()
        .filter(|k| !k.ends_with(":events"))
        .map(|k| (k.to_string(), t.redis(&["DUMP", k])))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_budget_writes_one_event_and_changes_nothing_else() {
    let s = LlmServer::start(vec![], Some(Reply::json(200, openai_text("x", 1, 1))));
    let (t, a, _b, g) = budget_town(&s.openai_url(), "tokens_per_day = 50").await;
    let before = snapshot(&t);
    let events = t.xlen("events");
    let (e, rec) = g
        .chat(Some(&budgets(&a)), "rev", Some("t-9"), ask("review"))
        .await
        .unwrap_err();
    assert_eq!((e.code, e.retryable), (ErrorCode::BudgetExhausted, true));
    assert!(e.message.contains("tokens_per_day"), "{}", e.message);
    assert!(rec.reserved_tokens > 100);
    assert_eq!(s.count(), 0, "nothing was sent");
    assert_eq!(
        snapshot(&t),
        before,
        "the refusal changed nothing but the events"
    );
    assert_eq!(t.xlen("events"), events + 1);
    let ev = serde_json::to_value(a.events(1, None).await.unwrap().pop().unwrap()).unwrap();
    assert_eq!(ev["type"], "budget-exhausted");
    assert_eq!(
        (ev["agent"].as_str(), ev["task"].as_str()),
        (Some("rev"), Some("t-9"))
    );
    assert_eq!(
        (ev["model"].as_str(), ev["budget"].as_str()),
        (Some("fast"), Some("tokens_per_day"))
    );
    no_key("the event", &ev.to_string());
    let line = t.ok(&["events", "-n", "1"]);
    assert!(
        line.contains("rev BUDGET tokens_per_day exhausted (model fast, task t-9)"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn budgets_that_cannot_be_checked_send_nothing() {
    let s = LlmServer::start(vec![], Some(Reply::json(200, openai_text("x", 1, 1))));
    let (t, a, _b, g) = budget_town(&s.openai_url(), "tokens_per_day = 100000").await;
    t.ok(&["shutdown"]);
    let (e, _) = g
        .chat(Some(&budgets(&a)), "rev", None, ask("x"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.retryable),
        (ErrorCode::ProviderUnavailable, true)
    );
    assert!(
        e.message.contains("budgets cannot be checked"),
        "{}",
        e.message
    );
    assert_eq!(s.count(), 0, "fails closed: nothing is sent unreserved");
}

#[tokio::test(flavor = "multi_thread")]
async fn settled_usage_is_counted_by_agent_task_and_model_and_failures_release() {
    let s = LlmServer::start(
        vec![
            Reply::json(200, openai_text("a", 30, 20)),
            Reply::text(400, "no"),
        ],
        Some(Reply::json(200, openai_text("b", 10, 5))),
    );
    let (t, a, _b, g) = budget_town(&s.openai_url(), "tokens_per_day = 100000").await;
    let bud = budgets(&a);
    g.chat(Some(&bud), "rev", Some("t-1"), ask("one"))
        .await
        .unwrap();
    g.chat(Some(&bud), "rev", Some("t-1"), ask("two"))
        .await
        .unwrap_err();
    g.chat(Some(&bud), "rev", None, ask("three")).await.unwrap();
    let rows = bud.usage(40, None, None).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (
            rows[0].task.as_str(),
            rows[0].input_tokens,
            rows[0].output_tokens,
            rows[0].calls
        ),
        ("", 10, 5, 1)
    );
    assert_eq!(
        (
            rows[1].task.as_str(),
            rows[1].input_tokens,
            rows[1].output_tokens
        ),
        ("t-1", 30, 20)
    );
    assert_eq!(rows[1].cost, 30 * 2 + 20 * 10);
    assert_eq!(rows[1].model, "fast");
    assert_eq!(bud.usage(40, None, Some("t-1")).await.unwrap().len(), 1);
    assert!(bud
        .usage(40, Some("nobody"), None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        bud.agent_today("rev").await.unwrap(),
        (65, 30 * 2 + 20 * 10 + 10 * 2 + 5 * 10)
    );
    // No hold is left behind, by the failed call or the others; keys expire.
    let day = t.key(&format!(
        "budget-day:rev:{}",
        tinytown::store::budget::today()
    ));
    let fields = t.redis(&["HKEYS", &day]);
    assert!(!fields.contains("h:"), "{fields}");
    let ttl: u64 = t.redis(&["TTL", &day]).parse().unwrap();
    assert!(ttl > 39 * 86_400, "{ttl}");
    let task = t.key("budget-task:t-1:rev");
    assert_eq!(t.redis(&["HGET", &task, "tokens"]), "50");
    // tt usage shows the same.
    let u = t.json(&["usage", "--json"]);
    assert_eq!(u["rows"].as_array().unwrap().len(), 2, "{u}");
    let text = t.ok(&["usage", "--task", "t-1"]);
    assert!(
        text.contains("rev") && text.contains("t-1") && text.contains("fast"),
        "{text}"
    );
    let e = t.refused(&["usage", "--days", "0"], 2, &["usage over 0 days"]);
    assert!(
        e.hint.contains("1 to 40") && e.hint.contains("--days N"),
        "{e:?}"
    );
    let st = t.json(&["status", "--json"]);
    assert_eq!(st["llm_today"]["input_tokens"], 40, "{st}");
    // tt serve shows the same: GET /v1/usage, and today's spend in /metrics.
    let server = townhall::Server::start(&t, &[]);
    let token = townhall::key(&t, "spend", "read");
    let u = server.get("/v1/usage?task=t-1", &token);
    assert_eq!(u.status, 200, "{}", u.text);
    assert_eq!(u.body["rows"].as_array().unwrap().len(), 1, "{}", u.text);
    assert_eq!(u.body["total"]["input_tokens"], 30, "{}", u.text);
    assert_eq!(
        u.body["total"]["cost_micro"],
        30 * 2 + 20 * 10,
        "{}",
        u.text
    );
    townhall::assert_problem(
        &server.get("/v1/usage?days=0", &token),
        422,
        &["usage over 0 days"],
    );
    let m = server.get("/metrics", &token).text;
    for line in [
        "tt_llm_calls_today{agent=\"rev\",model=\"fast\"} 2",
        "tt_llm_tokens_today{agent=\"rev\",model=\"fast\",direction=\"input\"} 40",
        "tt_llm_tokens_today{agent=\"rev\",model=\"fast\",direction=\"output\"} 25",
        "tt_llm_cost_today{agent=\"rev\",model=\"fast\"} 0.00033",
    ] {
        assert!(m.contains(line), "no {line:?} in\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_racing_never_overspend() {
    // Each call reserves its estimate plus 100 and reports 110; the limit fits some, not all.
    let s = LlmServer::start(
        vec![],
        Some(Reply::json(200, openai_text("ok", 10, 100)).after_ms(30)),
    );
    let limit = 1_000u64;
    let (_t, a, b, g) = budget_town(&s.openai_url(), &format!("tokens_per_day = {limit}")).await;
    let g = std::sync::Arc::new(g);
    let (ba, bb) = (budgets(&a), budgets(&b));
    let mut calls = Vec::new();
    for i in 0..24 {
        let g = g.clone();
        let bud = if i % 2 == 0 { ba.clone() } else { bb.clone() };
        calls.push(tokio::spawn(async move {
            g.chat(Some(&bud), "rev", None, ask("x"))
                .await
                .map(|(_, rec)| rec)
        }));
    }
    let mut ok = 0;
    let mut reserved = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(rec) => {
                ok += 1;
                reserved = rec.reserved_tokens;
                assert!(rec.input_tokens + rec.output_tokens <= rec.reserved_tokens);
            }
            Err((e, _)) => assert_eq!(e.code, ErrorCode::BudgetExhausted, "{e:?}"),
        }
    }
    let (spent, _) = ba.agent_today("rev").await.unwrap();
    assert_eq!(spent, ok * 110);
    assert!(spent <= limit, "spent {spent} of {limit}");
    assert!((1..24).contains(&ok), "{ok} calls passed");
    assert!(reserved > 110, "each call reserved more than it used");
    assert_eq!(s.count() as u64, ok, "refused calls were never sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn task_and_cost_budgets() {
    let s = LlmServer::start(vec![], Some(Reply::json(200, openai_text("ok", 10, 100))));
    // Each call costs 10*2 + 100*10 = 1020 micro-units; it reserves more.
    let (_t, a, _b, g) = budget_town(
        &s.openai_url(),
        "tokens_per_task = 300\ncost_per_day = 0.004",
    )
    .await;
    let bud = budgets(&a);
    g.chat(Some(&bud), "rev", Some("t-a"), ask("x"))
        .await
        .unwrap();
    g.chat(Some(&bud), "rev", Some("t-a"), ask("x"))
        .await
        .unwrap();
    let (e, _) = g
        .chat(Some(&bud), "rev", Some("t-a"), ask("x"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.retryable),
        (ErrorCode::BudgetExhausted, false),
        "a task budget does not free up"
    );
    assert!(e.message.contains("tokens_per_task"), "{}", e.message);
    g.chat(Some(&bud), "rev", Some("t-b"), ask("x"))
        .await
        .unwrap();
    let (e, _) = g
        .chat(Some(&bud), "rev", Some("t-c"), ask("x"))
        .await
        .unwrap_err();
    assert!(e.message.contains("cost_per_day"), "{}", e.message);
    assert_eq!(s.count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_of_a_dead_host_stops_counting_when_it_expires() {
    use tinytown::store::budget::{Ask, Limits};
    let (_t, a, _b, _g) = budget_town("http://127.0.0.1:9/v1", "").await;
    let bud = budgets(&a);
    let limits = Limits {
        tokens_per_day: Some(100),
        ..Limits::default()
    };
    let ask = |hold_ms| Ask {
        agent: "rev",
        task: None,
        model: "fast",
        tokens: 80,
        cost: 0,
        hold_ms,
    };
    bud.reserve(&limits, &ask(1500)).await.unwrap().unwrap();
    assert!(
        bud.reserve(&limits, &ask(60_000)).await.unwrap().is_err(),
        "the hold counts"
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let r = bud.reserve(&limits, &ask(60_000)).await.unwrap().unwrap();
    bud.release(&r).await.unwrap();
    bud.reserve(&limits, &ask(60_000)).await.unwrap().unwrap();
}

// ---- config ----

fn config_err(extra: &str) -> String {
    Config::parse(&format!("[town]\nname = \"test\"\n{extra}")).unwrap_err()
}

#[test]
fn config_errors_name_the_table_and_field() {
    let ok = llm_toml("openai", "http://127.0.0.1:1/v1", "", "");
    Config::parse(&format!("[town]\nname = \"test\"\n{ok}")).unwrap();
    let e = config_err(&llm_toml(
        "openai",
        "http://x/v1",
        &format!("api_key = \"{KEY}\""),
        "",
    ));
    assert!(
        e.contains("[llm.providers.p] api_key") && e.contains("api_key_env"),
        "{e}"
    );
    no_key("the config error", &e);
    let e = config_err(&ok.replace("provider = \"p\"", "provider = \"q\""));
    assert!(
        e.contains("[llm.models.fast] provider = \"q\"")
            && e.contains("there is no [llm.providers.q]"),
        "{e}"
    );
    let e = config_err(&ok.replace("models = [\"fast\"]", "models = [\"smart\"]"));
    assert!(
        e.contains("[agents.rev.llm] models")
            && e.contains("[llm.models.smart]")
            && e.contains("fast"),
        "{e}"
    );
    let e = config_err(&ok.replace("kind = \"openai\"", "kind = \"gemini\""));
    assert!(e.contains("kind") && e.contains("openai"), "{e}");
    let e = config_err(&ok.replace("http://127.0.0.1:1/v1", "127.0.0.1:1"));
    assert!(e.contains("base_url") && e.contains("http://"), "{e}");
    let e = config_err(&llm_toml("openai", "http://x", "api_key_file = \"k\"", ""));
    assert!(e.contains("both api_key_env and api_key_file"), "{e}");
    let e = config_err(&llm_toml("openai", "http://x", "retries = 99", ""));
    assert!(e.contains("retries = 99"), "{e}");
    let e = config_err(&llm_toml("openai", "http://x", "timeout_ms = 0", ""));
    assert!(e.contains("timeout_ms = 0"), "{e}");
    let e = config_err(&llm_toml("openai", "http://x", "", "tokens_per_day = 0"));
    assert!(e.contains("[agents.rev.llm] tokens_per_day = 0"), "{e}");
    let e = config_err(&llm_toml("openai", "http://x", "", "cost_per_task = -1.0"));
    assert!(e.contains("cost_per_task"), "{e}");
    let e = config_err(&llm_toml("openai", "http://x", "", "budget = 5"));
    assert!(e.contains("budget"), "{e}");
    let e = config_err(&ok.replace("input_price = 2.0", "input_price = -2.0"));
    assert!(e.contains("[llm.models.fast] input_price"), "{e}");
    let e = config_err(&ok.replace("models = [\"fast\"]", "models = []"));
    assert!(e.contains("models = []"), "{e}");
    let e = config_err(&ok.replace("model = \"m-1\"", "model = \"\""));
    assert!(e.contains("[llm.models.fast] model is empty"), "{e}");
}

#[test]
fn keys_come_from_a_set_variable_or_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let with = |source: &str| {
        let text = llm_toml("openai", "http://127.0.0.1:1/v1", "", "")
            .replace("api_key_env = \"TT_TEST_LLM_KEY\"", source);
        grant_of(&config(&text, dir.path()))
    };
    let e = with("api_key_env = \"TT_TEST_LLM_NOT_SET\"").err().unwrap();
    assert!(
        format!("{e:#}").contains("$TT_TEST_LLM_NOT_SET, which is not set"),
        "{e:#}"
    );
    let e = with("api_key_file = \"missing\"").err().unwrap();
    assert!(format!("{e:#}").contains("api_key_file"), "{e:#}");
    let key = dir.path().join("key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = with("api_key_file = \"key\"").err().unwrap();
    let u = tinytown::store::error::user_error(&e).unwrap();
    assert!(
        u.message.contains("readable by others (mode 644)"),
        "{}",
        u.message
    );
    assert!(u.hint.as_deref().unwrap().contains("chmod 600"));
    no_key("the error", &format!("{e:#} {e:?}"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let g = with("api_key_file = \"key\"").unwrap();
    assert_eq!(g.models(), vec!["fast"]);
    assert!(g.describe().contains("models fast"));
    std::fs::write(&key, "\n").unwrap();
    let e = with("api_key_file = \"key\"").err().unwrap();
    assert!(format!("{e:#}").contains("is empty"), "{e:#}");
    // A provider without a key (a local server) is fine.
    assert!(with("").is_ok());
    let secret = tinytown::runtime::capabilities::llm::Secret::new(KEY);
    no_key("Debug and Display", &format!("{secret:?} {secret}"));
}

#[test]
fn tt_refuses_a_key_in_the_file_without_printing_it() {
    let t = TestTown::new();
    let mut text = t.read_config();
    text.push_str(&llm_toml(
        "openai",
        "http://x/v1",
        &format!("api_key = \"{KEY}\""),
        "",
    ));
    t.write_config(&text);
    let r = t.refused(&["status"], 1, &["api_key"]);
    no_key("tt's error", &r.stderr);
}

// ---- end to end: tt host, the example plugins, the loopback provider ----

/// A town with worker `w` (plugins/worker-llm-py) and reviewer `rev` (plugins/reviewer-llm),
/// both granted alias `fast` of a provider at `url`, spawned, and task t1 assigned to `w`.
fn llm_town(url: &str, w_extra: &str, rev_extra: &str) -> TestTown {
    let t = TestTown::new();
    let llm = llm_toml("openai", url, "", rev_extra);
    t.write_config(&format!(
        "[town]\nname = \"test\"\n\n[host]\nlease_ms = 2000\nheartbeat_ms = 200\n{llm}\n\
         [agents.rev]\nrole = \"reviewer\"\nplugin = \"{rev}\"\nconfig = {{ model = \"fast\" }}\n\n\
         [agents.w]\nrole = \"worker\"\nplugin = \"{w}\"\n\
         config = {{ model = \"fast\", reviewer = \"rev\" }}\n\
         [agents.w.llm]\nmodels = [\"fast\"]\n{w_extra}\n",
        rev = common::plugin("reviewer-llm"),
        w = common::plugin("worker-llm-py"),
    ));
    t.ok(&["spawn", "w", "--role", "worker"]);
    t.ok(&["spawn", "rev", "--role", "reviewer"]);
    t.ok(&[
        "assign",
        "w",
        "Write one sentence on why Redis streams suit mailboxes.",
    ]);
    t
}

fn verdict(v: &str, reason: &str) -> Reply {
    let text = json!({"verdict": v, "reason": reason}).to_string();
    Reply::json(200, openai_text(&text, 40, 9))
}

fn sent(t: &TestTown, kind: &str) -> Vec<Value> {
    t.events()
        .into_iter()
        .filter(|e| e["type"] == "sent" && e["kind"] == kind)
        .collect()
}

#[test]
fn a_python_worker_drafts_and_the_llm_reviewer_approves() {
    let draft = "Streams keep every entry until it is acknowledged.";
    let s = LlmServer::start(
        vec![
            Reply::json(200, openai_text(draft, 20, 12)),
            verdict("approve", "does what the task asks"),
        ],
        Some(Reply::text(500, "the script ran out")),
    );
    let t = llm_town(&s.openai_url(), "", "");
    common::host_until_idle(&t, Duration::from_secs(120));
    let task = t.task("t1");
    assert_eq!(task["state"], "completed", "{task}");
    assert_eq!(task["result"], "does what the task asks");
    let seen = s.seen();
    assert_eq!(seen.len(), 2);
    // The worker's draft request: the task, no response format.
    let w = &seen[0].body;
    assert!(w["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("Redis streams suit mailboxes"));
    assert!(w.get("response_format").is_none());
    // The reviewer's: the task, the draft, the verdict schema.
    let r = &seen[1].body;
    let user = r["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains("Redis streams suit mailboxes") && user.contains(draft),
        "{user}"
    );
    assert_eq!(
        r["response_format"]["json_schema"]["schema"]["required"],
        json!(["verdict", "reason"])
    );
    let u = t.json(&["usage", "--json", "--task", "t1"]);
    let agents: Vec<&str> = u["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["rev", "w"], "{u}");
    assert_eq!(u["total"]["input_tokens"], 60);
    no_key("the events", &serde_json::to_string(&t.events()).unwrap());
    // The journal has the call, without the key; a replay of the same policy decides the
    // same from the recorded answer and calls no model.
    let journal = t.ok(&["journal", "rev", "--json"]);
    assert!(
        journal.contains("\"llm\"") && journal.contains("does what the task asks"),
        "{journal}"
    );
    no_key("the journal", &journal);
    let reviewer = common::plugin("reviewer-llm");
    let r = t.json(&["replay", "rev", "--plugin", &reviewer, "--json"]);
    assert!(r["handlings"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["same"], r["handlings"], "{r}");
    assert_eq!(s.count(), 2, "the replay called no model");
}

#[test]
fn a_malformed_verdict_is_a_rejection_never_an_approval() {
    let s = LlmServer::start(
        vec![
            Reply::json(200, openai_text("first draft", 20, 12)),
            Reply::json(200, openai_text("Looks fine to me!", 20, 5)),
            Reply::json(200, openai_text("second draft", 20, 12)),
            verdict("approve", "fixed"),
        ],
        Some(Reply::text(500, "the script ran out")),
    );
    let t = llm_town(&s.openai_url(), "", "");
    common::host_until_idle(&t, Duration::from_secs(120));
    let task = t.task("t1");
    assert_eq!(
        (task["state"].as_str(), task["rejections"].as_u64()),
        (Some("completed"), Some(1)),
        "{task}"
    );
    let rejects = sent(&t, "verdict:reject");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    let body = rejects[0]["body"].as_str().unwrap();
    assert!(body.contains("not a verdict"), "{body}");
    // The second draft was asked with the reviewer's reason.
    let again = s.seen()[2].body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(again.contains("not a verdict"), "{again}");
}

#[test]
fn an_exhausted_budget_rejects_escalates_and_writes_events() {
    // The reviewer can never afford a call; the worker can afford one draft per task.
    let s = LlmServer::start(
        vec![Reply::json(200, openai_text("a draft", 10, 150))],
        Some(Reply::text(500, "no second call may reach the provider")),
    );
    let t = llm_town(
        &s.openai_url(),
        "tokens_per_task = 250",
        "tokens_per_day = 10",
    );
    common::host_until_idle(&t, Duration::from_secs(120));
    assert_eq!(s.count(), 1, "refused calls never reach the provider");
    let task = t.task("t1");
    assert_eq!(task["state"], "failed", "{task}");
    assert!(
        task["result"].as_str().unwrap().contains("tokens_per_task"),
        "{task}"
    );
    let events = t.events();
    let refused: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] == "budget-exhausted")
        .map(|e| {
            (
                e["agent"].as_str().unwrap().to_string(),
                e["budget"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            ("rev".to_string(), "tokens_per_day".to_string()),
            ("w".to_string(), "tokens_per_task".to_string())
        ]
    );
    assert!(
        events.iter().all(|e| e["to"] != "completed"),
        "never approved"
    );
    let reject = &sent(&t, "verdict:reject")[0];
    assert!(
        reject["body"].as_str().unwrap().contains("BudgetExhausted"),
        "{reject}"
    );
    let inbox = t.ok(&["inbox", "conductor"]);
    assert!(
        inbox.contains("tokens_per_day") && inbox.contains("tokens_per_task"),
        "{inbox}"
    );
}

#[test]
fn two_tt_hosts_serving_one_agent_never_overspend_its_budget() {
    // Every call reserves its prompt's estimate plus max-tokens (100) and uses 100; twelve
    // tasks would use 1,200 of the day's 1,000, so some calls must be refused, whichever
    // host makes them.
    let s = LlmServer::start(
        vec![],
        Some(Reply::json(200, openai_text("a draft", 10, 90)).after_ms(300)),
    );
    let limit = 1_000u64;
    let t = TestTown::new();
    let llm = llm_toml("openai", &s.openai_url(), "", "");
    t.write_config(&format!(
        "[town]\nname = \"test\"\n\n[host]\nlease_ms = 2000\nheartbeat_ms = 200\n{llm}\n\
         [agents.rev]\nrole = \"reviewer\"\nplugin = \"{rev}\"\n\n\
         [agents.w]\nrole = \"worker\"\nplugin = \"{w}\"\n\
         config = {{ model = \"fast\", reviewer = \"rev\", max-tokens = \"100\" }}\n\
         [agents.w.llm]\nmodels = [\"fast\"]\ntokens_per_day = {limit}\n",
        rev = common::plugin("noop"),
        w = common::plugin("worker-llm-py"),
    ));
    t.ok(&["spawn", "w", "--role", "worker"]);
    t.ok(&["spawn", "rev", "--role", "reviewer"]);
    for i in 0..12 {
        t.ok(&["assign", "w", &format!("Draft note {i}.")]);
    }
    std::thread::scope(|scope| {
        for name in ["h1", "h2"] {
            let t = &t;
            scope.spawn(move || {
                let args = ["host", "--until-idle", "--name", name];
                let out = common::run_timeout(t.command(&args), Duration::from_secs(180));
                common::expect_code(&args, &out, 0);
            });
        }
    });
    let usage = t.json(&["usage", "--json"]);
    let total = &usage["total"];
    let spent = total["input_tokens"].as_u64().unwrap() + total["output_tokens"].as_u64().unwrap();
    let calls = total["calls"].as_u64().unwrap();
    assert!(spent <= limit, "spent {spent} of {limit}: {usage}");
    assert_eq!(spent, calls * 100, "{usage}");
    assert_eq!(s.count() as u64, calls, "refused calls were never sent");
    let refused = t
        .events()
        .iter()
        .filter(|e| e["type"] == "budget-exhausted" && e["agent"] == "w")
        .count() as u64;
    assert!(
        calls >= 1 && refused >= 1,
        "{calls} calls, {refused} refused"
    );
    // No task was drafted twice; the drafted ones wait for review; each of the others was
    // refused (a refusal while other calls hold reservations is retryable, so it may be
    // refused again on redelivery) until it failed or its assignment was dead-lettered.
    let rows = usage["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["calls"] == 1), "{usage}");
    let tasks = t.json(&["tasks", "--json"]);
    let count = |state: &str| {
        tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == state)
            .count() as u64
    };
    let dead = t.json(&["dlq", "list", "--json"]).as_array().unwrap().len() as u64;
    assert_eq!(count("in-review"), calls, "{tasks}");
    assert_eq!(count("failed") + dead, 12 - calls, "{tasks}");
}

/// A town of one task, for the reviewer's `get-task`.
struct OneTask;

impl tinytown::runtime::Lookup for OneTask {
    fn task<'a>(
        &'a self,
        id: &'a str,
    ) -> tinytown::runtime::lookup::Answer<'a, Option<tinytown::runtime::wit::TaskInfo>> {
        let info = tinytown::runtime::wit::TaskInfo {
            id: id.to_string(),
            description: "Say hello.".into(),
            state: "in-review".into(),
            owner: Some("w".into()),
            reviewer: Some("rev".into()),
            result: None,
            rejections: 0,
            tags: vec![],
        };
        Box::pin(async move { Ok(Some(info)) })
    }
    fn agent<'a>(
        &'a self,
        n: &'a str,
    ) -> tinytown::runtime::lookup::Answer<'a, Option<tinytown::runtime::wit::AgentInfo>> {
        tinytown::runtime::NoTown.agent(n)
    }
    fn agents<'a>(
        &'a self,
        r: Option<&'a str>,
    ) -> tinytown::runtime::lookup::Answer<'a, Vec<tinytown::runtime::wit::AgentInfo>> {
        tinytown::runtime::NoTown.agents(r)
    }
    fn backlog(
        &self,
    ) -> tinytown::runtime::lookup::Answer<'_, Vec<tinytown::runtime::wit::TaskInfo>> {
        tinytown::runtime::NoTown.backlog()
    }
    fn state<'a>(
        &'a self,
        a: &'a str,
        k: &'a str,
    ) -> tinytown::runtime::lookup::Answer<'a, Option<String>> {
        tinytown::runtime::NoTown.state(a, k)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chat_import_is_recorded_with_the_handling_without_the_key() {
    use tinytown::runtime::wit;
    use tinytown::runtime::{Grants, Runtime};
    let s = LlmServer::start(vec![verdict("approve", "hello said")], None);
    let g = std::sync::Arc::new(grant("openai", &s.openai_url(), ""));
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(Some(dir.path().join("cache")), false).unwrap();
    let grants = Grants::none().with("llm", g);
    let plugin = runtime
        .load("rev", &common::plugin_path("reviewer-llm"), &grants)
        .unwrap();
    let config = vec![("model".to_string(), "fast".to_string())];
    let limits = tinytown::store::limits::Limits::default();
    let mut inst = runtime
        .instantiate(
            &plugin,
            "rev",
            &limits,
            &grants,
            &config,
            std::sync::Arc::new(OneTask),
        )
        .await
        .unwrap_or_else(|f| panic!("{}", f.reason));
    let msg = wit::Message {
        id: "m1".into(),
        sender: "w".into(),
        recipient: "rev".into(),
        kind: wit::Kind::ReviewRequest,
        body: "hello".into(),
        priority: wit::Priority::Normal,
        task_id: Some("t1".into()),
        correlation_id: None,
        sent_at_ms: 0,
        attempt: 1,
    };
    let actions = inst
        .handle(msg)
        .await
        .unwrap_or_else(|f| panic!("{}", f.reason));
    assert!(
        matches!(&actions[0], wit::Action::Approve(o) if o.text == "hello said"),
        "{actions:?}"
    );
    let calls = inst.recorded();
    let chat = calls
        .iter()
        .find(|c| c.interface == "llm" && c.function == "chat")
        .expect("the chat call is recorded");
    assert_eq!(chat.request["model"], "fast");
    assert_eq!(
        (
            chat.response["provider"].as_str(),
            chat.response["input_tokens"].as_u64()
        ),
        (Some("p"), Some(40))
    );
    no_key(
        "the handling's record",
        &serde_json::to_string(calls).unwrap(),
    );
    // Without a grant the import is not even linked: the component is refused at load.
    let e = runtime
        .load("rev", &common::plugin_path("reviewer-llm"), &Grants::none())
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("llm"), "{e:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_that_cannot_be_a_header_is_refused_without_sending() {
    let s = LlmServer::start(vec![], Some(Reply::json(200, openai_text("x", 1, 1))));
    std::env::set_var("TT_TEST_LLM_BAD_KEY", "sk-bad\u{1}key");
    let text = llm_toml("openai", &s.openai_url(), "", "")
        .replace("TT_TEST_LLM_KEY", "TT_TEST_LLM_BAD_KEY");
    let g = grant_of(&config(&text, &std::env::temp_dir())).unwrap();
    let (e, _) = g.chat(None, "rev", None, ask("x")).await.unwrap_err();
    assert_eq!((e.code, e.retryable), (ErrorCode::InvalidRequest, false));
    assert!(
        e.message.contains("not a valid HTTP header value"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("sk-bad"), "{}", e.message);
    assert_eq!(s.count(), 0);
}
