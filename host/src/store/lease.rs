//! Leases of exclusive agents: which host serves an agent, with a fencing token.
//!
//! A lease is the string `<host>:<token>` under the agent's lease key, with a TTL. Taking one
//! increments the agent's counter, so every holder has a new token; the applier refuses a unit
//! fenced with a token that is no longer the holder's (`Unit::fence`).

use std::time::Duration;

use anyhow::Result;

use crate::store::conn::Db;
use crate::store::error;

/// Takes or renews an exclusive agent's lease. KEYS: lease, lease-seq. ARGV: host, ttl ms.
/// Returns `<host>:<token>` when this host holds it, nil when another does.
const LEASE_LUA: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  if string.match(v, '^(.*):%d+$') == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return v
  end
  return false
end
local holder = ARGV[1] .. ':' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], holder, 'PX', ARGV[2])
return holder
"#;

/// Deletes a lease only if `ARGV[1]` still holds it. KEYS: lease.
const RELEASE_LUA: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1";

impl Db {
    /// Takes or renews `agent`'s exclusive lease for `host`; the holder string when held.
    pub async fn lease(&self, agent: &str, host: &str, ttl: Duration) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        redis::Script::new(LEASE_LUA)
            .key(self.keys.lease(agent))
            .key(self.keys.lease_seq(agent))
            .arg(host)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(error::from_redis)
    }

    /// Gives up a lease this host holds (so a peer can take over at once).
    pub async fn release_lease(&self, agent: &str, holder: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::Script::new(RELEASE_LUA)
            .key(self.keys.lease(agent))
            .arg(holder)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(error::from_redis)?;
        Ok(())
    }
}
