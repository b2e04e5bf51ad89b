-- The retention sweep (Rust: `store/sweep.rs`): trims what a town keeps to the `[retention]`
-- policy. Run by every host every `sweep_ms`, for the agents it serves, and town-wide.
--
-- ARGV[1] key prefix   ARGV[2] now (ms)
-- ARGV[3] JSON {agents = [...], finished = [...], hosts = [...], mailbox_keep, journal_keep,
--               events, dead_letters, dead_letter_ms, shadow_records, finished_task_ms,
--               dead_host_ms}
-- `mailbox_keep` and `journal_keep` are each agent's shares of the town's budgets (Rust:
-- `RetentionSection::shares`; a `journal_keep` of 0: the journal is off).
-- KEYS: every key it touches (the key guard refuses others): the agents' mailboxes and shadow
-- records, the town-wide streams and sets, the served counts of `hosts` (the hosts whose
-- heartbeats Rust saw), and the tasks of `finished`, the finished tasks old enough to go as
-- Rust read them just before (`store/sweep.rs`). Each is checked again here, so a task read
-- twice, or finished again since, is left alone: the sweep is safe to repeat.
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
-- last `mailbox_keep` entries, whichever is oldest. Nil when nothing may go.
local function floor(stream)
  local len = call('XLEN', stream)
  local keep = R.mailbox_keep
  if len <= keep * 2 then return nil end
  local groups = pcall_call('XINFO', 'GROUPS', stream)
  if type(groups) ~= 'table' or groups.err then return nil end
  local last
  for _, g in ipairs(groups) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f.name == GROUP then last = f['last-delivered-id'] end
  end
  if not last then return nil end
  local min = last
  local p = call('XPENDING', stream, GROUP)
  if p[1] > 0 and older(p[2], min) then min = p[2] end
  local recent = call('XREVRANGE', stream, '+', '-', 'COUNT', keep)
  local nth = recent[#recent][1]
  if older(nth, min) then min = nth end
  return min
end

local trimmed = 0
for _, agent in ipairs(R.agents) do
  for _, kind in ipairs({'urgent', 'inbox'}) do
    local stream = key(kind, agent)
    local min = floor(stream)
    if min then trimmed = trimmed + call('XTRIM', stream, 'MINID', min) end
  end
  trimmed = trimmed + call('XTRIM', key('shadow', agent), 'MAXLEN', R.shadow_records)
  -- The hosts write journals trimmed to their share; this cuts those written under a larger one.
  if R.journal_keep > 0 then
    trimmed = trimmed + call('XTRIM', key('journal', agent), 'MAXLEN', R.journal_keep)
  end
end

trimmed = trimmed + call('XTRIM', key('events'), 'MAXLEN', R.events)
trimmed = trimmed + call('XTRIM', key('dlq'), 'MAXLEN', R.dead_letters)
trimmed = trimmed + call('XTRIM', key('dlq'), 'MINID', math.max(0, NOW - R.dead_letter_ms))

-- Finished tasks older than the policy leave; their counts by state stay in `archived`.
local archived = 0
for _, id in ipairs(R.finished) do
  local score = tonumber(call('ZSCORE', key('finished'), id))
  if score and score <= NOW - R.finished_task_ms then
    local state = call('HGET', key('task', id), 'state')
    if state then call('HINCRBY', key('archived'), state, 1) end
    call('DEL', key('task', id))
    call('ZREM', key('tasks'), id)
    call('ZREM', key('finished'), id)
    archived = archived + 1
  end
end

-- Hosts that have not written a heartbeat for long are forgotten, with their served counts. A
-- heartbeat written after Rust listed the hosts waits for the next sweep: its counts' key is
-- not declared in this one.
local forgotten = 0
local listed = {}
for _, h in ipairs(R.hosts or {}) do listed[h] = true end
local hosts = call('HGETALL', key('hosts'))
for i = 1, #hosts, 2 do
  local ok, beat = pcall(cjson.decode, hosts[i + 1])
  local seen = ok and type(beat) == 'table' and tonumber(beat.seen_ms) or 0
  if seen < NOW - R.dead_host_ms and listed[hosts[i]] then
    call('HDEL', key('hosts'), hosts[i])
    call('DEL', key('served', hosts[i]))
    forgotten = forgotten + 1
  end
end

return cjson.encode({trimmed = trimmed, archived = archived, hosts_forgotten = forgotten})
