//! The `http` capability end to end: a JavaScript role that calls an API with `fetch`, through
//! the host's allow-list and SSRF guard, against a real HTTP server on loopback.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::time::Duration;

use common::{host_until_idle, plugin, TestTown};

/// A small HTTP/1.1 server on 0.0.0.0 (so a name that resolves to this machine would reach
/// it): `/hello`, `/redirect` (to the same server under the name `localhost`) and `/big`.
fn serve() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, extra, body) = match path.as_str() {
                    "/hello" => ("200 OK", String::new(), "hi there".to_string()),
                    "/redirect" => (
                        "302 Found",
                        format!("Location: http://localhost:{port}/hello\r\n"),
                        String::new(),
                    ),
                    "/big" => ("200 OK", String::new(), "x".repeat(3 << 20)),
                    _ => ("404 Not Found", String::new(), "no".to_string()),
                };
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

#[test]
fn a_role_calls_an_allow_listed_api_and_nothing_else() {
    let port = serve();
    let town = TestTown::new();
    let fetcher = plugin("fetcher-js");
    // `vm`-style host names resolve to this machine: a rule naming one by its DNS name must
    // not reach it. (Only checked where the name does resolve to a restricted address.)
    let host = std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let loops_back = (host.as_str(), port)
        .to_socket_addrs()
        .map(|mut a| {
            a.all(|a| {
                a.ip().is_loopback()
                    || matches!(a.ip(), std::net::IpAddr::V4(v4) if v4.is_private())
            })
        })
        .unwrap_or(false);
    let named_host = if loops_back && !host.is_empty() {
        host.clone()
    } else {
        "localhost.invalid".into()
    };
    town.write_config(&format!(
        "[town]\nname = \"test\"\n\n[tasks]\nreview = \"optional\"\n\n\
         [agents.f]\nrole = \"worker\"\nplugin = \"{fetcher}\"\n\
         config = {{ api = \"http://127.0.0.1:{port}\" }}\n\
         limits = {{ call_timeout_ms = 5000 }}\n\
         [agents.f.http]\nallow = [\"http://127.0.0.1:{port}/\", \"http://{named_host}:{port}\"]\n\
         max_response_bytes = 1048576\n\n\
         [agents.owner]\nrole = \"mailbox\"\n"
    ));
    town.ok(&["spawn", "f"]);
    town.ok(&["spawn", "owner"]);
    let assign = |what: &str| {
        let out = town.ok(&["assign", "f", what]);
        out.split_whitespace().nth(1).unwrap().to_string()
    };
    let hello = assign("/hello");
    let redirect = assign("/redirect");
    let big = assign("/big");
    let unlisted = assign("http://localhost:1/never");
    let by_name = assign(&format!("http://{named_host}:{port}/hello"));
    let log = host_until_idle(&town, Duration::from_secs(240));

    let result = |t: &str| {
        let v = town.task(t);
        (
            v["state"].as_str().unwrap_or("").to_string(),
            v["result"].as_str().unwrap_or("").to_string(),
        )
    };
    // Allowed (the rule's trailing slash does not matter).
    assert_eq!(
        result(&hello),
        ("completed".into(), "HTTP 200: hi there".into())
    );
    // The redirect leads to `localhost`, which no rule names: the follow-up request is refused.
    let (state, why) = result(&redirect);
    assert_eq!(state, "failed", "{why}");
    assert!(
        log.contains(&format!("no rule matches http://localhost:{port}"))
            && log.contains(&format!(
                "add \"http://localhost:{port}\" to [agents.f.http] allow"
            )),
        "{log}"
    );
    // Cut at the response cap.
    let (state, why) = result(&big);
    assert_eq!(state, "failed", "{why}");
    // Not on the list at all.
    assert_eq!(result(&unlisted).0, "failed");
    // A DNS name that resolves to this machine is refused even though a rule names it.
    let (state, why) = result(&by_name);
    assert_eq!(state, "failed", "{why}");
    if loops_back {
        assert!(
            log.contains(&format!("{named_host} resolves to")) && log.contains("loopback"),
            "{log}"
        );
    }
    // The journal keeps each request (and each refusal with its reason).
    let journal = town
        .json(&["journal", "f", "-n", "10", "--json"])
        .to_string();
    assert!(journal.contains("\"status\":200"), "{journal}");
    assert!(journal.contains("no rule matches"), "{journal}");
}

#[test]
fn a_role_that_imports_http_needs_the_grant() {
    let town = TestTown::new();
    let fetcher = plugin("fetcher-js");
    town.write_config(&format!(
        "[town]\nname = \"test\"\n\n[agents.f]\nrole = \"worker\"\nplugin = \"{fetcher}\"\n\
         config = {{ api = \"http://127.0.0.1:1\" }}\n"
    ));
    // Compiling a JavaScript component takes a while in a debug build on a busy machine.
    let slow = |args: &[&str]| common::run_timeout(town.command(args), Duration::from_secs(300));
    let out = slow(&["plugin", "check", &fetcher, "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["capabilities"], serde_json::json!(["http"]), "{r}");
    let out = slow(&["plugin", "check", &fetcher, "--agent", "f"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("http"), "{err}");
    // A rule that is not an origin is refused when the config is read, naming the fix.
    town.write_config(&format!(
        "[town]\nname = \"test\"\n\n[agents.f]\nrole = \"worker\"\nplugin = \"{fetcher}\"\n\
         [agents.f.http]\nallow = [\"https://api.example.com/v1\"]\n"
    ));
    let r = town.refused(&["list"], 1, &["[agents.f.http] allow", "origin"]);
    assert!(r.hint.contains("scheme://host"), "{}", r.hint);
}
