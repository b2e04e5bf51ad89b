//! Who serves what: the claim of a host name by one process, and the leases of exclusive agents.
//!
//! A host name is the consumer name in every mailbox's group, so two processes under one name
//! would share pending lists and leases. Each `tt host` process therefore draws a random
//! instance id at start and claims its name (`host-claim:<name>` = instance, with a TTL its
//! heartbeat renews); a second process with a live name is refused ([`Db::claim_host`]).
//!
//! A lease is the string `<host>/<instance>:<token>` under the agent's lease key. It has no TTL
//! of its own: it holds while its holder's name is claimed by that instance, so the heartbeat
//! that renews the claim renews every lease of the process at once, however many agents it
//! serves (renewing 10,000 leases one by one took ~6 µs of Redis each, every third of a lease).
//! A lease whose holder's claim lapsed, or names another process, may be taken. Taking one
//! increments the agent's counter, so every holder has a new token; the applier refuses a unit
//! fenced with a token that is no longer the holder's (`Unit::fence`).
//!
//! The scripts name their keys only by position in KEYS and run behind the key guard
//! (`store::script`), so a cluster moving the town's slot refuses a claim or renewal whole, to
//! be retried on the right master, rather than half-running it.

use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Result;

use crate::store::conn::Db;
use crate::store::error;
use crate::store::script::{self, OnFull};

/// Takes exclusive agents' leases for one holder, or says who holds them. KEYS: for each
/// agent its lease, its lease-seq, and the claim of the host name its lease named when the
/// caller read it (the caller's own claim when it named none). ARGV: holder
/// (`<host>/<instance>`), the claim key of a host named "" (the prefix of every claim key),
/// then each agent's previous lease (or ""). Returns, per agent, its lease when this holder
/// has it, else "".
///
/// A lease is free when it is missing, unreadable, or its holder's name is no longer claimed
/// by that holder's instance (the process is gone; a later process under the same name is one
/// such). A free lease that this holder had before, with the counter still at its token (nobody
/// took it since), is taken back with the same token, so work fenced with it (a long handling)
/// still applies. A lease that names another host than the caller read is left for the next
/// call: its claim key was not declared.
const LEASES_LUA: &str = r#"
local function one(lease, seq, claim, prev)
  local v = call('GET', lease)
  if v then
    local holder = string.match(v, '^(.*):%d+$')
    if holder == ARGV[1] then return v end
    local name, instance = string.match(holder or '', '^([^/]*)/(.*)$')
    if name then
      if claim ~= ARGV[2] .. name then return '' end
      if call('GET', claim) == instance then return '' end
    end
  end
  if prev ~= '' and string.match(prev, '^(.*):%d+$') == ARGV[1]
      and string.match(prev, ':(%d+)$') == call('GET', seq) then
    call('SET', lease, prev)
    return prev
  end
  local held = ARGV[1] .. ':' .. call('INCR', seq)
  call('SET', lease, held)
  return held
end
local out = {}
for i = 3, #ARGV do
  local j = (i - 3) * 3 + 1
  out[#out + 1] = one(KEYS[j], KEYS[j + 1], KEYS[j + 2], ARGV[i])
end
return out
"#;

/// The most agents one [`Db::leases`] script call takes (a call blocks Redis while it runs).
const LEASES_PER_CALL: usize = 500;

/// Deletes a lease only if `ARGV[1]` still holds it. KEYS: lease.
const RELEASE_LUA: &str =
    "if call('GET', KEYS[1]) == ARGV[1] then call('DEL', KEYS[1]) end return 1";

/// Claims a host name. KEYS: claim. ARGV: instance, ttl ms, previous instance that is known to
/// be gone (or ""). Returns {"held", ""} when the claim was this instance's already (renewed),
/// {"taken", ""} when it was free or the gone one's, else {"refused", the live holder}.
const CLAIM_LUA: &str = r#"
local v = call('GET', KEYS[1])
if v and v ~= ARGV[1] and v ~= ARGV[3] then return {'refused', v} end
call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if v == ARGV[1] then return {'held', ''} end
return {'taken', ''}
"#;

/// The lease scripts by name, for the checks of `store::script`.
#[cfg(test)]
pub(crate) const LUA: &[(&str, &str)] = &[
    ("leases", LEASES_LUA),
    ("lease-release", RELEASE_LUA),
    ("lease-claim", CLAIM_LUA),
];

// Leases and claims are a few bytes and must go on when Redis is full: a host that cannot renew
// them stops serving its exclusive agents.
static LEASES: LazyLock<redis::Script> = LazyLock::new(|| script::new(OnFull::Run, LEASES_LUA));
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| script::new(OnFull::Run, RELEASE_LUA));
static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| script::new(OnFull::Run, CLAIM_LUA));

/// A fresh instance id: 64 random bits, in hex.
pub fn new_instance() -> String {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = ((t as u64) ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    crate::store::model::hex(&bytes)
}

/// What claiming a host name found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The claim was this instance's: renewed, and with it every lease it holds.
    Renewed,
    /// The claim was free (it lapsed, or was the gone instance's): this instance has it now.
    /// Leases it held before may have been taken meanwhile.
    Taken,
    /// Another live process holds the name: its instance.
    Refused(String),
}

impl Db {
    /// Claims (or renews) host name `host` for process `instance`. `gone` is an instance known
    /// to have ended (its process is dead), whose claim may be taken before it expires. Ok(None)
    /// when claimed; Ok(Some(other)) when another live process holds it.
    pub async fn claim_host(
        &self,
        host: &str,
        instance: &str,
        gone: Option<&str>,
        ttl: Duration,
    ) -> Result<Option<String>> {
        Ok(match self.renew_host(host, instance, gone, ttl).await? {
            Claim::Refused(other) => Some(other),
            Claim::Renewed | Claim::Taken => None,
        })
    }

    /// [`Db::claim_host`], saying whether the claim was still this instance's.
    pub async fn renew_host(
        &self,
        host: &str,
        instance: &str,
        gone: Option<&str>,
        ttl: Duration,
    ) -> Result<Claim> {
        let mut conn = self.conn.clone();
        let (state, other): (String, String) = CLAIM
            .key(self.keys.host_claim(host))
            .arg(instance)
            .arg(ttl.as_millis() as u64)
            .arg(gone.unwrap_or(""))
            .invoke_async(&mut conn)
            .await
            .map_err(error::from_redis)?;
        Ok(match state.as_str() {
            "held" => Claim::Renewed,
            "taken" => Claim::Taken,
            _ => Claim::Refused(other),
        })
    }

    /// Gives up the claim of `host` if `instance` holds it (a clean stop: a restart under the
    /// same name starts at once).
    pub async fn release_host(&self, host: &str, instance: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        RELEASE
            .key(self.keys.host_claim(host))
            .arg(instance)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(error::from_redis)?;
        Ok(())
    }

    /// Takes `agent`'s exclusive lease for `holder` (`<host>/<instance>`) when it is free,
    /// keeping the token of `previous` (the lease it had) when nobody took the lease since; the
    /// lease string when `holder` holds it.
    pub async fn lease(
        &self,
        agent: &str,
        holder: &str,
        previous: Option<&str>,
    ) -> Result<Option<String>> {
        let asked = [(agent.to_string(), previous.map(str::to_string))];
        Ok(self.leases(&asked, holder).await?.pop().flatten())
    }

    /// [`Db::lease`] for many agents at once: `agents` with the lease each had (or `None`), in
    /// calls of at most [`LEASES_PER_CALL`] agents; per agent, the lease when `holder` holds it.
    /// Each call reads the leases first, to declare the claims of the hosts they name.
    pub async fn leases(
        &self,
        agents: &[(String, Option<String>)],
        holder: &str,
    ) -> Result<Vec<Option<String>>> {
        let mut conn = self.conn.clone();
        let host_of = |h: &str| h.split('/').next().unwrap_or(h).to_string();
        let ours = self.keys.host_claim(&host_of(holder));
        let mut out = Vec::with_capacity(agents.len());
        for chunk in agents.chunks(LEASES_PER_CALL) {
            let keys: Vec<String> = chunk.iter().map(|(a, _)| self.keys.lease(a)).collect();
            let now: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .map_err(error::from_redis)?;
            let mut call = LEASES.prepare_invoke();
            call.arg(holder).arg(self.keys.host_claim(""));
            for (((agent, previous), lease), now) in chunk.iter().zip(keys).zip(now) {
                let claim = match now.as_deref().and_then(|v| v.rsplit_once(':')) {
                    Some((h, _)) if h.contains('/') => self.keys.host_claim(&host_of(h)),
                    _ => ours.clone(),
                };
                call.key(lease)
                    .key(self.keys.lease_seq(agent))
                    .key(claim)
                    .arg(previous.as_deref().unwrap_or(""));
            }
            let held: Vec<String> = call
                .invoke_async(&mut conn)
                .await
                .map_err(error::from_redis)?;
            out.extend(held.into_iter().map(|h| (!h.is_empty()).then_some(h)));
        }
        Ok(out)
    }

    /// Gives up a lease this host holds (so a peer can take over at once).
    pub async fn release_lease(&self, agent: &str, holder: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        RELEASE
            .key(self.keys.lease(agent))
            .arg(holder)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(error::from_redis)?;
        Ok(())
    }
}
