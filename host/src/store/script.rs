//! Every server-side Lua script of tinytown is built here, so all of them keep two rules that
//! make a town survive Redis Cluster resharding:
//!
//! - Each starts with a Redis 7 shebang (`#!lua`), so Redis treats it as a script that declares
//!   its keys: it is refused when a key would cross slots, and it is never half-run because a
//!   key it names moved to another master (the cluster checks the declared keys before the
//!   script starts and answers ASK or TRYAGAIN instead, which the client follows).
//! - Each runs behind the key guard (`lua/guard.lua`): its commands go through `call` and
//!   `pcall_call`, which refuse any key its caller did not pass in `KEYS` with
//!   `TT UNDECLARED <key>`. So the caller's key list is complete, or the script fails the first
//!   time it runs in any test, on a single server as on a cluster.
//!
//! The callers compute their key lists before the call: the applier from its typed ops
//! (`applier/declare.rs`), the sweep from a read before it, the lease scripts from the agent,
//! the budget script from the reservation.

const GUARD: &str = include_str!("lua/guard.lua");

/// What a script may do when Redis is over `maxmemory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Refused before it starts when Redis is full (Redis 7's default for a script with a
    /// shebang): nothing of it runs, so a full Redis never half-applies it.
    Refuse,
    /// Runs when Redis is full (`flags=allow-oom`): for scripts that free memory (the sweep) or
    /// must go on for the town to stay safe (leases and host claims, a few bytes each).
    Run,
}

/// The full text of a guarded script with `body`.
pub fn text(full: OnFull, body: &str) -> String {
    let shebang = match full {
        OnFull::Refuse => "#!lua\n",
        OnFull::Run => "#!lua flags=allow-oom\n",
    };
    format!("{shebang}{GUARD}\n{body}")
}

/// A guarded script with `body` (which uses `call` and `pcall_call`, never `redis.call`).
pub fn new(full: OnFull, body: &str) -> redis::Script {
    redis::Script::new(&text(full, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Lua text tinytown sends to Redis, by name.
    fn all_lua() -> Vec<(&'static str, String)> {
        let mut out: Vec<(&str, String)> = crate::store::applier::LUA_PARTS
            .iter()
            .map(|(n, t)| (*n, t.to_string()))
            .collect();
        out.push(("sweep", include_str!("sweep.lua").to_string()));
        for (n, t) in crate::store::lease::LUA {
            out.push((n, t.to_string()));
        }
        out.push(("budget", crate::store::budget::SCRIPT.to_string()));
        out
    }

    #[test]
    fn no_script_calls_redis_past_the_guard() {
        for (name, text) in all_lua() {
            for bad in ["redis.call", "redis.pcall", "KEYS["] {
                // Lease and budget scripts name their keys by position; the others by
                // `key(...)`, checked.
                if bad == "KEYS[" && (name.starts_with("lease") || name == "budget") {
                    continue;
                }
                assert!(
                    !text.contains(bad),
                    "the {name} script uses {bad}: go through `call`/`pcall_call` (lua/guard.lua)"
                );
            }
        }
    }

    #[test]
    fn the_guard_knows_every_command_the_scripts_use() {
        let known: Vec<&str> = GUARD
            .lines()
            .skip_while(|l| !l.starts_with("local KEY_AT"))
            .take_while(|l| !l.starts_with('}'))
            .flat_map(|l| l.split(','))
            .filter_map(|kv| kv.split('=').next())
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase()))
            .collect();
        for (name, text) in all_lua() {
            for quote in ["call('", "pcall_call('"] {
                for part in text.split(quote).skip(1) {
                    let cmd = part.split('\'').next().unwrap_or("");
                    assert!(
                        known.contains(&cmd),
                        "the {name} script calls {cmd}, which lua/guard.lua's KEY_AT lacks"
                    );
                }
            }
        }
    }

    #[test]
    fn scripts_start_with_the_shebang() {
        assert!(text(OnFull::Refuse, "return 1").starts_with("#!lua\n"));
        assert!(text(OnFull::Run, "return 1").starts_with("#!lua flags=allow-oom\n"));
    }
}
