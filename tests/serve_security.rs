//! `tt serve`'s protections end to end: API keys (hashed, listed, revoked at once), the rate
//! limit per key and per address, the guard on binds beyond loopback, and TLS for real with a
//! generated certificate.

mod common;
mod townhall;

use std::time::Duration;

use common::TestTown;
use townhall::{assert_problem, key, Server};

#[test]
fn keys_are_hashed_listed_and_revoked_at_once() {
    let town = TestTown::new();
    let s = Server::start(&town, &[]);
    let k = town.json(&["auth", "key", "add", "ci", "--scope", "write", "--json"]);
    let token = k["token"].as_str().unwrap();
    let id = k["id"].as_str().unwrap();
    assert!(token.starts_with(&format!("tt_{id}_")));
    // Only a hash is stored: the secret is nowhere in Redis.
    let stored = town.redis(&["HGET", &town.key("apikeys"), id]);
    let secret = token.rsplit('_').next().unwrap();
    assert!(
        stored.contains("$argon2id$") && !stored.contains(secret),
        "{stored}"
    );
    let listed = town.json(&["auth", "key", "list", "--json"]);
    assert_eq!(listed[0]["name"], "ci");
    assert_eq!(listed[0]["scope"], "write");
    assert!(listed[0].get("token").is_none() && listed[0].get("hash").is_none());

    assert_eq!(s.get("/v1/status", token).status, 200);
    let wrong = format!("tt_{id}_{}", "0".repeat(64));
    assert_problem(&s.get("/v1/status", &wrong), 401, &["API key"]);
    assert_problem(&s.get("/v1/status", "not-a-token"), 401, &["API key"]);
    town.ok(&["auth", "key", "revoke", id]);
    assert_problem(&s.get("/v1/status", token), 401, &["API key"]);

    town.refused(&["auth", "key", "revoke", id], 1, &[id, "not found"]);
    town.refused(
        &["auth", "key", "add", "x", "--scope", "admin"],
        2,
        &["admin"],
    );
    town.refused(&["auth", "key", "add", "bad name"], 2, &["bad name"]);
}

#[test]
fn the_rate_limit_is_per_key_and_answers_429_with_retry_after() {
    let town = TestTown::new();
    let cfg = town.read_config();
    town.write_config(&format!(
        "{cfg}\n[serve]\nrate_per_sec = 1\nrate_burst = 3\n"
    ));
    let s = Server::start(&town, &[]);
    let a = key(&town, "a", "read");
    let b = key(&town, "b", "read");
    for _ in 0..3 {
        assert_eq!(s.get("/v1/agents", &a).status, 200);
    }
    let limited = s.get("/v1/agents", &a);
    assert_problem(&limited, 429, &["rate limit"]);
    assert!(
        limited
            .retry_after
            .as_deref()
            .is_some_and(|r| r.parse::<u64>().unwrap() >= 1),
        "{limited:?}"
    );
    assert_eq!(
        s.get("/v1/agents", &b).status,
        200,
        "another key has its own bucket"
    );
    // Wrong keys from one address are limited before any of them is checked.
    let guesses: Vec<u16> = (0..5)
        .map(|_| s.get("/v1/agents", "tt_0000_guess").status)
        .collect();
    assert!(
        guesses.contains(&401) && guesses.ends_with(&[429]),
        "{guesses:?}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(s.get("/v1/agents", &a).status, 200, "the bucket refills");
}

#[test]
fn a_bind_beyond_loopback_needs_keys_and_tls() {
    let town = TestTown::new();
    town.refused(
        &["serve", "--bind", "0.0.0.0:0"],
        1,
        &["0.0.0.0", "no API keys"],
    );
    key(&town, "ops", "read");
    town.refused(&["serve", "--bind", "0.0.0.0:0"], 1, &["plain HTTP"]);
    town.refused(&["serve", "--bind", "localhost:x"], 2, &["localhost:x"]);
    town.refused(
        &["serve", "--tls-cert", "c.pem"],
        2,
        &["certificate and a key"],
    );
    // Behind a TLS proxy the operator may say so; it then serves.
    let mut run = town.start(&["serve", "--bind", "0.0.0.0:0", "--insecure-http"]);
    let line = run.next_line(Duration::from_secs(30));
    assert!(line.contains("listening on http://0.0.0.0:"), "{line}");
    assert!(run.is_running());
}

#[test]
fn tls_is_served_for_real_with_a_configured_certificate() {
    let town = TestTown::new();
    let dir = town.path();
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = Server::start(&town, &["--tls-cert", "cert.pem", "--tls-key", "key.pem"]);
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);
    let token = key(&town, "ops", "read");
    let curl = |url: &str, extra: &[&str]| {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", "--cacert"])
            .arg(dir.join("cert.pem"))
            .args(extra)
            .arg(url)
            .output()
            .expect("curl")
    };
    let ok = curl(
        &s.url("/v1/agents"),
        &["-H", &format!("Authorization: Bearer {token}")],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "[]");
    // The same port does not speak plain HTTP.
    let plain = curl(&s.url("/healthz").replace("https://", "http://"), &[]);
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("\"ok\""));
    // A certificate that is not one is refused with the file named.
    std::fs::write(dir.join("bad.pem"), "not a certificate").unwrap();
    town.refused(
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            "bad.pem",
            "--tls-key",
            "key.pem",
        ],
        1,
        &["bad.pem"],
    );
}
