-- The key guard, the first part of every server-side script (Rust: `store/script.rs`).
--
-- A script may touch only the keys its caller declared in KEYS. Redis Cluster checks a call's
-- declared keys before the script runs: while the town's slot moves between masters, a call
-- whose keys are not all on the node is refused whole (ASK, TRYAGAIN) and the client retries
-- it elsewhere. A key the script names on its own is checked only when the command runs, so it
-- could fail half-way through a unit, after the first writes. Every command therefore goes
-- through `call` or `pcall_call`, which refuse a key that is not in KEYS with
-- `TT UNDECLARED <key>`, always, on a single server as on a cluster.

local DECLARED = {}
for _, k in ipairs(KEYS) do DECLARED[k] = true end

-- Where each command the scripts use has its key: after the command name (1), after a
-- subcommand (2), or every argument ('all'). A command not listed here is refused, so a new
-- one is added here, with its key position, before a script can use it.
local KEY_AT = {
  GET = 1, SET = 1, INCR = 1, PEXPIRE = 1, EXPIRE = 1,
  HGET = 1, HSET = 1, HMGET = 1, HGETALL = 1, HDEL = 1, HEXISTS = 1, HINCRBY = 1,
  SADD = 1, SREM = 1, SMEMBERS = 1, SCARD = 1,
  ZADD = 1, ZREM = 1, ZSCORE = 1, ZRANGEBYSCORE = 1,
  XADD = 1, XRANGE = 1, XREVRANGE = 1, XTRIM = 1, XACK = 1, XDEL = 1, XLEN = 1, XPENDING = 1,
  XGROUP = 2, XINFO = 2,
  DEL = 'all',
}

local function undeclared(what)
  error({err = 'TT UNDECLARED ' .. what})
end

local function declared(k, cmd)
  if not DECLARED[k] then
    undeclared('the script touched key ' .. tostring(k) .. ' (' .. cmd ..
      ') that its caller did not pass in KEYS')
  end
end

local function guard(cmd, a1, a2, ...)
  local name = string.upper(tostring(cmd))
  local at = KEY_AT[name]
  if at == 1 then
    declared(a1, name)
  elseif at == 2 then
    declared(a2, name)
  elseif at == 'all' then
    declared(a1, name)
    if a2 ~= nil then declared(a2, name) end
    for i = 1, select('#', ...) do declared((select(i, ...)), name) end
  else
    undeclared('the key guard does not know where command ' .. name .. ' has its keys')
  end
end

-- `redis.call` and `redis.pcall`, for declared keys only.
local function call(...)
  guard(...)
  return redis.call(...)
end

local function pcall_call(...)
  guard(...)
  return redis.pcall(...)
end
