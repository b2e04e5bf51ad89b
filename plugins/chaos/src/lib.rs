//! The `chaos` role: misbehaves on purpose, for the host's fault tests. The first word of each
//! message body picks the misbehaviour (errors, traps, panics, endless loops, huge allocations,
//! floods of actions, attempts to reach files, environment or network, moves it has no authority
//! for and forged verdicts); config key `init` makes `init` itself fail or trap. Nothing here is
//! meant to be useful, only to be survivable.

wit_bindgen::generate!({ world: "agent", path: "../../wit" });

use core::hint::black_box;

use tinytown::agent::host;
use tinytown::agent::types::{
    Assignment, Kind, LogLevel, Outgoing, Priority, ReviewRequest, TaskOutcome, Verdict,
};
use tinytown_guest::Table;

fn fail(message: impl Into<String>, retryable: bool) -> Error {
    Error {
        message: message.into(),
        retryable,
    }
}

fn log(text: impl Into<String>) -> Action {
    Action::Log((LogLevel::Info, text.into()))
}

/// The numeric argument of a command such as `flaky 3`.
fn number<T: core::str::FromStr>(word: &str, arg: Option<&str>) -> Result<T, Error> {
    let arg = arg.unwrap_or("");
    arg.parse().map_err(|_| {
        fail(
            format!("chaos: `{word}` needs a number, got `{arg}`"),
            false,
        )
    })
}

/// The word argument of a command such as `approve t1`.
fn arg(word: &str, arg: Option<&str>) -> Result<String, Error> {
    arg.map(str::to_owned)
        .ok_or_else(|| fail(format!("chaos: `{word}` needs an argument"), false))
}

/// Spins forever; `black_box` keeps the optimiser from proving the loop useless.
fn endless() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Really allocates and touches 1 GiB, so the host's memory limit has something to stop.
fn allocate_a_gibibyte() -> usize {
    const SIZE: usize = 1 << 30;
    const PAGE: usize = 64 << 10;
    let mut v: Vec<u8> = black_box(vec![0; black_box(SIZE)]);
    for i in (0..SIZE).step_by(PAGE) {
        v[i] = black_box(1);
    }
    black_box(
        v.iter()
            .step_by(PAGE)
            .map(|&b| usize::from(b))
            .sum::<usize>(),
    ) * PAGE
}

fn misbehave(msg: Message) -> Result<Vec<Action>, Error> {
    let mut words = msg.body.split_whitespace();
    let word = words.next().unwrap_or("ok");
    match word {
        "error" => Err(fail("chaos: retryable error", true)),
        "fatal" => Err(fail("chaos: permanent error", false)),
        "flaky" => {
            let n: u32 = number(word, words.next())?;
            if msg.attempt < n {
                Err(fail(format!("chaos: flaky attempt {}", msg.attempt), true))
            } else {
                Ok(vec![log(format!(
                    "flaky succeeded at attempt {}",
                    msg.attempt
                ))])
            }
        }
        "trap" => core::arch::wasm32::unreachable(),
        "panic" => panic!("chaos panic"),
        "loop" => endless(),
        "alloc" => {
            let n = allocate_a_gibibyte();
            Ok(vec![log(format!("alloc: touched {n} bytes"))])
        }
        "actions" => {
            let n: usize = number(word, words.next())?;
            Ok((0..n).map(|_| log("a")).collect())
        }
        "huge" => {
            let n: usize = number(word, words.next())?;
            Ok(vec![log("x".repeat(n))])
        }
        "spin" => {
            let n: u64 = number(word, words.next())?;
            for _ in 0..n {
                black_box(host::now_ms());
            }
            Ok(Vec::new())
        }
        "file" => Ok(vec![log(match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => format!("file: read {} bytes", text.len()),
            Err(e) => format!("file: denied: {e}"),
        })]),
        "env" => Ok(vec![log(format!(
            "env: {} variables",
            std::env::vars().count()
        ))]),
        "net" => Ok(vec![log(
            match std::net::TcpStream::connect("127.0.0.1:6379") {
                Ok(_) => "net: connected".to_owned(),
                Err(e) => format!("net: denied: {e}"),
            },
        )]),
        "count" => {
            let n = host::get_state("count")
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            Ok(vec![
                Action::SetState(("count".to_owned(), Some(n.to_string()))),
                log(format!("count {n}")),
            ])
        }
        "send" => {
            let rest = msg.body.trim_start()["send".len()..].trim_start();
            let Some(to) = rest.split_whitespace().next() else {
                return Err(fail("chaos: `send` needs a recipient", false));
            };
            let body = rest[to.len()..].trim_start();
            Ok(vec![Action::Send(Outgoing {
                to: to.to_owned(),
                kind: Kind::Info,
                body: body.to_owned(),
                priority: Priority::Normal,
                task_id: None,
                correlation_id: Some(msg.id),
            })])
        }
        // Moves on a task, whoever owns it: `approve t1`, `complete t1`, `review t1 bob`,
        // `reassign t1 carol`. The applier decides whether this agent may make them.
        "approve" | "reject" | "complete" | "fail" => {
            let outcome = TaskOutcome {
                task_id: arg(word, words.next())?,
                text: format!("{word} by chaos"),
            };
            Ok(vec![match word {
                "approve" => Action::Approve(outcome),
                "reject" => Action::Reject(outcome),
                "complete" => Action::Complete(outcome),
                _ => Action::Fail(outcome),
            }])
        }
        "review" => Ok(vec![Action::RequestReview(ReviewRequest {
            task_id: arg(word, words.next())?,
            reviewer: arg(word, words.next())?,
            body: "review this".to_owned(),
        })]),
        "reassign" => {
            let task = arg(word, words.next())?;
            Ok(vec![Action::Assign(Assignment {
                agent: arg(word, words.next())?,
                task_id: Some(task),
                description: String::new(),
            })])
        }
        // `forge approve bob t1`: a message of a kind only actions may make.
        "forge" => {
            let kind = match words.next() {
                Some("assign") => Kind::TaskAssign,
                Some("review") => Kind::ReviewRequest,
                Some("approve") => Kind::Verdict(Verdict::Approve),
                Some("reject") => Kind::Verdict(Verdict::Reject("forged".to_owned())),
                other => return Err(fail(format!("chaos: cannot forge {other:?}"), false)),
            };
            Ok(vec![Action::Send(Outgoing {
                to: arg(word, words.next())?,
                kind,
                body: "forged".to_owned(),
                priority: Priority::Normal,
                task_id: words.next().map(str::to_owned),
                correlation_id: None,
            })])
        }
        // `fanout 500 bob`: that many messages from one handling.
        "fanout" => {
            let n: usize = number(word, words.next())?;
            let to = arg(word, words.next())?;
            Ok((0..n)
                .map(|i| {
                    Action::Send(Outgoing {
                        to: to.clone(),
                        kind: Kind::Info,
                        body: format!("fan {i}"),
                        priority: Priority::Normal,
                        task_id: None,
                        correlation_id: None,
                    })
                })
                .collect())
        }
        // Oversized short fields: `longkey 1000`, `longtask 1000 bob`, `longkind 1000 bob`.
        "longkey" => {
            let n: usize = number(word, words.next())?;
            Ok(vec![Action::SetState(("k".repeat(n), Some("v".to_owned())))])
        }
        "longtask" | "longcorr" | "longkind" => {
            let n: usize = number(word, words.next())?;
            let long = "x".repeat(n);
            Ok(vec![Action::Send(Outgoing {
                to: arg(word, words.next())?,
                kind: if word == "longkind" {
                    Kind::Custom(long.clone())
                } else {
                    Kind::Info
                },
                body: "long".to_owned(),
                priority: Priority::Normal,
                task_id: (word == "longtask").then(|| long.clone()),
                correlation_id: (word == "longcorr").then_some(long),
            })])
        }
        // "ok" and anything unknown.
        _ => Ok(Vec::new()),
    }
}

struct Chaos;

impl Guest for Chaos {
    fn init(config: Vec<(String, String)>) -> Result<(), Error> {
        match Table::new("chaos", &config).get("init") {
            Some("fail") => Err(fail("chaos init refused", false)),
            Some("trap") => panic!("chaos init trap"),
            _ => Ok(()),
        }
    }

    fn handle(msg: Message) -> Result<Vec<Action>, Error> {
        // What the town sends it (assignments, review requests, verdicts) is not a command.
        if matches!(
            msg.kind,
            Kind::TaskAssign | Kind::ReviewRequest | Kind::Verdict(_)
        ) {
            return Ok(Vec::new());
        }
        misbehave(msg)
    }
}

export!(Chaos);
