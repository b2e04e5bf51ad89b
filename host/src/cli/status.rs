//! `tt status`: the town at a glance; `--deep` adds plugins, hosts and more events.

use anyhow::Result;
use clap::Args;

use super::print::{format_event, format_ms, print_json, Json};
use crate::runtime::Grants;
use crate::store::error::one_line;
use crate::town::Town;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long)]
    pub deep: bool,
    #[command(flatten)]
    pub json: Json,
}

/// Above this many agents, `tt status` shows a summary and the busiest agents only.
const STATUS_AGENTS: usize = 20;

pub async fn run(town: &Town, args: StatusArgs) -> Result<()> {
    let StatusArgs { deep, json } = args;
    let mut status = town.status(if deep { 20 } else { 5 }).await?;
    mark_unservable(town, &mut status).await?;
    let llm_today = town.usage(1, None, None).await?.total;
    if json.json {
        #[derive(serde::Serialize)]
        struct WithSpend<'a> {
            #[serde(flatten)]
            status: &'a crate::town::Status,
            /// Model calls today (UTC): calls, tokens and cost over all agents.
            llm_today: crate::town::UsageLine,
        }
        return print_json(&WithSpend {
            status: &status,
            llm_today,
        });
    }
    println!("town {} (redis: {})", status.town, status.redis);
    println!(
        "agents: {}   conductor inbox: {}   backlog: {}   dead letters: {}",
        status.agents.len(),
        status.conductor_inbox,
        status.backlog,
        status.dead_letters
    );
    if llm_today.calls > 0 {
        println!(
            "model spend today: {} calls, {} tokens in, {} out, cost {:.6} (`tt usage`)",
            llm_today.calls, llm_today.input_tokens, llm_today.output_tokens, llm_today.cost
        );
    }
    let m = status.memory;
    if m.max > 0 {
        println!(
            "redis memory: {} of {} MiB{}",
            m.used >> 20,
            m.max >> 20,
            if m.near_full() {
                "  (NEAR FULL: writes are refused when full; see [retention])"
            } else {
                ""
            }
        );
    }
    // A big town: a summary by state, then the agents with the most mail.
    let shown: Vec<&crate::town::AgentView> = if status.agents.len() > STATUS_AGENTS {
        let mut by_state: std::collections::BTreeMap<String, usize> = Default::default();
        for a in &status.agents {
            *by_state.entry(a.agent.state.to_string()).or_default() += 1;
        }
        let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let mut busiest: Vec<&crate::town::AgentView> = status.agents.iter().collect();
        busiest.sort_by_key(|a| {
            (
                std::cmp::Reverse(a.waiting + a.in_flight),
                !status.cannot_serve.contains_key(&a.agent.name),
            )
        });
        busiest.truncate(STATUS_AGENTS);
        println!(
            "agents by state: {}; the {STATUS_AGENTS} with the most mail (`tt list --page 1` \
             lists all, {} per page):",
            states.join(", "),
            super::agents::PER_PAGE
        );
        busiest
    } else {
        status.agents.iter().collect()
    };
    for a in shown {
        print!(
            "  {:<16} {:<10} {:<11} waiting {:<4} in hand {:<3} tasks {}",
            a.agent.name, a.agent.role, a.agent.state, a.waiting, a.in_flight, a.active_tasks
        );
        if deep {
            let digest = a.agent.digest.as_deref().map(|d| &d[..12.min(d.len())]);
            print!(
                "  plugin {} @{}",
                a.agent.plugin.as_deref().unwrap_or("-"),
                digest.unwrap_or("-")
            );
            if let Some(ms) = a.agent.swapped_ms {
                print!(" swapped {}", format_ms(ms));
            }
            if let Some(sh) = &a.agent.shadow {
                print!("  shadow {sh}");
            }
        }
        println!();
        if let Some(why) = &a.agent.refused {
            println!("      SWAP REFUSED by a host, old plugin kept: {why}");
        }
        if let (true, Some(judged)) = (deep, &a.agent.judged) {
            println!("      swap judged on: {judged}");
        }
        if let Some(why) = status.cannot_serve.get(&a.agent.name) {
            println!("      CANNOT BE SERVED: {why}");
        }
        if deep {
            for line in confinement(town, &a.agent.name) {
                println!("      {line}");
            }
        }
    }
    let mut states: Vec<_> = status.tasks.iter().collect();
    states.sort();
    let line: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!(
        "tasks: {}",
        if line.is_empty() {
            "none".into()
        } else {
            line.join(", ")
        }
    );
    if deep {
        println!("hosts:");
        if status.hosts.is_empty() {
            println!("  none running");
        }
        for h in &status.hosts {
            println!("  {}", host_line(h));
        }
    }
    println!("recent events:");
    for e in &status.recent_events {
        println!("  {}", format_event(e));
    }
    Ok(())
}

/// A host's heartbeat as one line: who it is, when it was last seen, what it serves; each
/// agent's handled count only while there are few (`--json` has them all).
fn host_line(h: &serde_json::Value) -> String {
    let seen = h["seen_ms"].as_u64().unwrap_or(0);
    let ago = crate::store::model::now_ms().saturating_sub(seen) as f64 / 1000.0;
    let agents = h["agents"].as_object();
    let serving = agents.map_or(0, |a| a.len());
    let mut line = format!(
        "{} (pid {} on {}): seen {ago:.1} s ago, {serving} agents, {} messages handled, {} \
         instances",
        h["name"].as_str().unwrap_or("?"),
        h["pid"],
        h["machine"].as_str().unwrap_or("?"),
        h["handled"].as_u64().unwrap_or(0),
        h["instances"].as_u64().unwrap_or(0),
    );
    match agents {
        Some(a) if !a.is_empty() && a.len() <= STATUS_AGENTS => {
            let each: Vec<String> = a.iter().map(|(n, k)| format!("{n} {k}")).collect();
            line.push_str(&format!(": {}", each.join(", ")));
        }
        _ => {}
    }
    if let Some(b) = h["blocked"].as_object().filter(|b| !b.is_empty()) {
        let names: Vec<&str> = b.keys().map(String::as_str).collect();
        line.push_str(&format!("; cannot serve {}", names.join(", ")));
    }
    line
}

/// Marks agents with mail whose plugin could not be set up, as a host would find (its file,
/// the built-in's settings and program, its grants), even when no host is running: a stopped
/// `tt host --until-idle` that gave up on them no longer reports them.
async fn mark_unservable(town: &Town, status: &mut crate::town::Status) -> Result<()> {
    let peers = crate::host::builtin_peers(town).await?;
    for a in &status.agents {
        let (name, mail) = (&a.agent.name, a.waiting + a.in_flight > 0);
        let Some(plugin) = a.agent.plugin.as_deref() else {
            continue;
        };
        if !mail || !a.agent.state.is_served() || status.cannot_serve.contains_key(name) {
            continue;
        }
        let why = match crate::runtime::builtin::prepare(&town.config, name, plugin, &peers) {
            Ok(p) => match p.source {
                crate::runtime::builtin::Source::File(f) if !f.is_file() => Some(format!(
                    "plugin {} of agent `{name}` is missing",
                    f.display()
                )),
                _ => None,
            },
            Err(e) => Some(match crate::store::error::user_error(&e) {
                Some(u) => format!("{} ({})", u.message, u.hint.clone().unwrap_or_default()),
                None => one_line(&e),
            }),
        };
        if let Some(why) = why {
            status.cannot_serve.insert(name.clone(), why);
        }
    }
    Ok(())
}

/// What the agent's capabilities let it reach (its `exec` confinement), from its grants as the
/// host would resolve them; a grant that cannot be resolved says why.
fn confinement(town: &Town, agent: &str) -> Vec<String> {
    let granted = town
        .config
        .agents
        .get(agent)
        .is_some_and(|a| !a.grants.is_empty());
    if !granted {
        return Vec::new();
    }
    match Grants::for_agent(&town.config, agent) {
        Ok(g) => g.describe(),
        Err(e) => vec![format!("grants cannot be resolved: {}", one_line(&e))],
    }
}
