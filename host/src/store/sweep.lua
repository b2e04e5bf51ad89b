-- The retention sweep (Rust: `store/sweep.rs`): trims what a town keeps to the `[retention]`
-- policy. Run by every host every `sweep_ms`, for the agents it serves, and town-wide.
--
-- KEYS[1] the town's event stream (names the slot).   ARGV[1] key prefix   ARGV[2] now (ms)
-- ARGV[3] JSON {agents = [...], mailbox_history, events, dead_letters, dead_letter_ms,
--               shadow_records, finished_task_ms, dead_host_ms}
-- Returns JSON {trimmed = n, archived = n, hosts_forgotten = n}.

local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local R = cjson.decode(ARGV[3])
local GROUP = 'tt'
local function key(...) return P .. table.concat({...}, ':') end

-- Stream ids compare as (ms, seq).
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function older(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end

-- The oldest id that must stay: the group's last-delivered id (everything after it is still
-- to be delivered), the oldest pending id (delivered, not yet applied), and the oldest of the
-- last `mailbox_history` entries, whichever is oldest. Nil when nothing may go.
local function floor(stream)
  local len = redis.call('XLEN', stream)
  local keep = R.mailbox_history
  if len <= keep * 2 then return nil end
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if type(groups) ~= 'table' or groups.err then return nil end
  local last
  for _, g in ipairs(groups) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f.name == GROUP then last = f['last-delivered-id'] end
  end
  if not last then return nil end
  local min = last
  local p = redis.call('XPENDING', stream, GROUP)
  if p[1] > 0 and older(p[2], min) then min = p[2] end
  local recent = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', keep)
  local nth = recent[#recent][1]
  if older(nth, min) then min = nth end
  return min
end

local trimmed = 0
for _, agent in ipairs(R.agents) do
  for _, kind in ipairs({'urgent', 'inbox'}) do
    local stream = key(kind, agent)
    local min = floor(stream)
    if min then trimmed = trimmed + redis.call('XTRIM', stream, 'MINID', min) end
  end
  trimmed = trimmed + redis.call('XTRIM', key('shadow', agent), 'MAXLEN', R.shadow_records)
end

trimmed = trimmed + redis.call('XTRIM', key('events'), 'MAXLEN', R.events)
trimmed = trimmed + redis.call('XTRIM', key('dlq'), 'MAXLEN', R.dead_letters)
trimmed = trimmed + redis.call('XTRIM', key('dlq'), 'MINID', math.max(0, NOW - R.dead_letter_ms))

-- Finished tasks older than the policy leave; their counts by state stay in `archived`.
local archived = 0
local old = redis.call('ZRANGEBYSCORE', key('finished'), '-inf', NOW - R.finished_task_ms,
  'LIMIT', 0, 500)
for _, id in ipairs(old) do
  local state = redis.call('HGET', key('task', id), 'state')
  if state then redis.call('HINCRBY', key('archived'), state, 1) end
  redis.call('DEL', key('task', id))
  redis.call('ZREM', key('tasks'), id)
  redis.call('ZREM', key('finished'), id)
  archived = archived + 1
end

-- Hosts that have not written a heartbeat for long are forgotten.
local forgotten = 0
local hosts = redis.call('HGETALL', key('hosts'))
for i = 1, #hosts, 2 do
  local ok, beat = pcall(cjson.decode, hosts[i + 1])
  local seen = ok and type(beat) == 'table' and tonumber(beat.seen_ms) or 0
  if seen < NOW - R.dead_host_ms then
    redis.call('HDEL', key('hosts'), hosts[i])
    forgotten = forgotten + 1
  end
end

return cjson.encode({trimmed = trimmed, archived = archived, hosts_forgotten = forgotten})
