//! Who serves what: the claim of a host name by one process, and the leases of exclusive agents.
//!
//! A host name is the consumer name in every mailbox's group, so two processes under one name
//! would share pending lists and leases. Each `tt host` process therefore draws a random
//! instance id at start and claims its name (`host-claim:<name>` = instance, with a TTL its
//! heartbeat renews); a second process with a live name is refused ([`Db::claim_host`]).
//!
//! A lease is the string `<host>/<instance>:<token>` under the agent's lease key, with a TTL.
//! Taking one increments the agent's counter, so every holder has a new token; the applier
//! refuses a unit fenced with a token that is no longer the holder's (`Unit::fence`).
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

/// Takes or renews an exclusive agent's lease. KEYS: lease, lease-seq, the claim of the
/// holder's host name. ARGV: holder
/// (`<host>/<instance>`), ttl ms, the lease this holder had before (or ""). Returns
/// `<holder>:<token>` when this holder has it, nil when another does. A lease that lapsed with
/// nobody taking it since (the counter still at its token) is taken back with the same token,
/// so work fenced with it (a long handling) still applies. A lease held by another process
/// under the same host name is taken over while the caller holds that name's claim: the other
/// process is gone.
const LEASE_LUA: &str = r#"
local v = call('GET', KEYS[1])
if v then
  local holder = string.match(v, '^(.*):%d+$')
  if holder == ARGV[1] then
    call('PEXPIRE', KEYS[1], ARGV[2])
    return v
  end
  -- Another process under our host name: only one holds the name's claim, and it is us, so
  -- that one is gone (a restart after a crash). Its lease is ours, with a new token.
  local name, instance = string.match(ARGV[1], '^([^/]*)/(.*)$')
  if not (name and string.match(holder or '', '^([^/]*)/') == name
      and call('GET', KEYS[3]) == instance) then
    return false
  end
end
local prev = ARGV[3]
if prev ~= '' and string.match(prev, '^(.*):%d+$') == ARGV[1]
    and string.match(prev, ':(%d+)$') == call('GET', KEYS[2]) then
  call('SET', KEYS[1], prev, 'PX', ARGV[2])
  return prev
end
local holder = ARGV[1] .. ':' .. call('INCR', KEYS[2])
call('SET', KEYS[1], holder, 'PX', ARGV[2])
return holder
"#;

/// [`LEASE_LUA`] for many agents of one holder in one call: what lets a host renew all its
/// leases at once, at a cost that does not grow with calls per agent. KEYS: the claim of the
/// holder's host name, then each agent's lease and lease-seq. ARGV: holder, ttl ms, then each
/// agent's previous lease (or ""). Returns, per agent, its lease string, or "" when another
/// holds it.
const LEASES_LUA: &str = r#"
local function one(lease, seq, prev)
  local v = call('GET', lease)
  if v then
    local holder = string.match(v, '^(.*):%d+$')
    if holder == ARGV[1] then
      call('PEXPIRE', lease, ARGV[2])
      return v
    end
    local name, instance = string.match(ARGV[1], '^([^/]*)/(.*)$')
    if not (name and string.match(holder or '', '^([^/]*)/') == name
        and call('GET', KEYS[1]) == instance) then
      return ''
    end
  end
  if prev ~= '' and string.match(prev, '^(.*):%d+$') == ARGV[1]
      and string.match(prev, ':(%d+)$') == call('GET', seq) then
    call('SET', lease, prev, 'PX', ARGV[2])
    return prev
  end
  local held = ARGV[1] .. ':' .. call('INCR', seq)
  call('SET', lease, held, 'PX', ARGV[2])
  return held
end
local out = {}
for i = 3, #ARGV do
  local j = (i - 3) * 2 + 2
  out[#out + 1] = one(KEYS[j], KEYS[j + 1], ARGV[i])
end
return out
"#;

/// The most agents one [`Db::leases`] script call renews (a call blocks Redis while it runs).
const LEASES_PER_CALL: usize = 500;

/// Deletes a lease only if `ARGV[1]` still holds it. KEYS: lease.
const RELEASE_LUA: &str =
    "if call('GET', KEYS[1]) == ARGV[1] then call('DEL', KEYS[1]) end return 1";

/// Claims a host name. KEYS: claim. ARGV: instance, ttl ms, previous instance that is known to
/// be gone (or ""). Returns "" when claimed (or renewed), else the live holder's instance.
const CLAIM_LUA: &str = r#"
local v = call('GET', KEYS[1])
if v and v ~= ARGV[1] and v ~= ARGV[3] then return v end
call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
"#;

/// The lease scripts by name, for the checks of `store::script`.
#[cfg(test)]
pub(crate) const LUA: &[(&str, &str)] = &[
    ("lease", LEASE_LUA),
    ("leases", LEASES_LUA),
    ("lease-release", RELEASE_LUA),
    ("lease-claim", CLAIM_LUA),
];

// Leases and claims are a few bytes and must go on when Redis is full: a host that cannot renew
// them stops serving its exclusive agents.
static LEASE: LazyLock<redis::Script> = LazyLock::new(|| script::new(OnFull::Run, LEASE_LUA));
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
        let mut conn = self.conn.clone();
        let other: String = CLAIM
            .key(self.keys.host_claim(host))
            .arg(instance)
            .arg(ttl.as_millis() as u64)
            .arg(gone.unwrap_or(""))
            .invoke_async(&mut conn)
            .await
            .map_err(error::from_redis)?;
        Ok((!other.is_empty()).then_some(other))
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

    /// Takes or renews `agent`'s exclusive lease for `holder` (`<host>/<instance>`), keeping
    /// the token of `previous` (the lease it had) when nobody took the lease since; the lease
    /// string when held.
    pub async fn lease(
        &self,
        agent: &str,
        holder: &str,
        ttl: Duration,
        previous: Option<&str>,
    ) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        LEASE
            .key(self.keys.lease(agent))
            .key(self.keys.lease_seq(agent))
            .key(
                self.keys
                    .host_claim(holder.split('/').next().unwrap_or(holder)),
            )
            .arg(holder)
            .arg(ttl.as_millis() as u64)
            .arg(previous.unwrap_or(""))
            .invoke_async(&mut conn)
            .await
            .map_err(error::from_redis)
    }

    /// [`Db::lease`] for many agents at once: `agents` with the lease each had (or `None`), in
    /// calls of at most [`LEASES_PER_CALL`] agents; per agent, the lease when `holder` holds it.
    pub async fn leases(
        &self,
        agents: &[(String, Option<String>)],
        holder: &str,
        ttl: Duration,
    ) -> Result<Vec<Option<String>>> {
        let mut conn = self.conn.clone();
        let claim = self
            .keys
            .host_claim(holder.split('/').next().unwrap_or(holder));
        let mut out = Vec::with_capacity(agents.len());
        for chunk in agents.chunks(LEASES_PER_CALL) {
            let mut call = LEASES.key(&claim);
            call.arg(holder).arg(ttl.as_millis() as u64);
            for (agent, previous) in chunk {
                call.key(self.keys.lease(agent))
                    .key(self.keys.lease_seq(agent))
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
