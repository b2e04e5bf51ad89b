-- The unit loop: fence, de-duplication, phase 1 (check and plan), phase 2 (write), ack.

local function acknowledge(unit)
  local a = unit.ack
  call('XACK', a.stream, GROUP, a.entry)
  -- Retry counters and the last failure exist only once a delivery has failed.
  if (tonumber(unit.attempts) or 1) > 1 or unit.retried then
    call('HDEL', key('attempts', a.agent), a.member, a.member .. '!why',
      a.member .. '!starts')
  end
end

-- The consumer group's pending list is the de-duplication record: an entry is pending from
-- its delivery until the unit that handles it is applied, which acknowledges it in the same
-- step. A stream or group that is gone (the agent was pruned) has nothing pending.
local function pending(a)
  local p = pcall_call('XPENDING', a.stream, GROUP, a.entry, a.entry, 1)
  return type(p) == 'table' and not p.err and #p > 0
end

-- Which fact of ARGV[6] no longer holds, or nil when all do.
local function stale()
  if present(FACTS.seq) and tonumber(call('GET', key('seq', 'task')) or '0') ~= FACTS.seq then
    return 'the task counter'
  end
  for id, owner in pairs(FACTS.owners or {}) do
    if (call('HGET', key('task', id), 'owner') or '') ~= owner then
      return 'the owner of task ' .. id
    end
  end
  if present(FACTS.agents) then
    local now = call('SMEMBERS', key('agents'))
    local known = {}
    for _, a in ipairs(FACTS.agents) do known[a] = true end
    if #now ~= #FACTS.agents then return 'the agents' end
    for _, a in ipairs(now) do if not known[a] then return 'the agents' end end
  end
  for id, agent in pairs(FACTS.dlq or {}) do
    local e = call('XRANGE', key('dlq'), id, id)[1]
    local f = {}
    if e then for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end end
    if (f.agent or '') ~= agent then return 'dead letter ' .. id end
  end
  return nil
end

-- Whether a unit only sends messages: it reads agent records and writes none (`RECORDS`).
local function sends_only(unit)
  for _, op in ipairs(unit.ops or {}) do
    if op.op ~= 'send' then return false end
  end
  return true
end

-- Leases are written only by the lease scripts, never by this one: each is read once a call.
local LEASES = {}
local function holder(agent)
  local h = LEASES[agent]
  if h == nil then
    h = call('GET', key('lease', agent))
    LEASES[agent] = h
  end
  return h
end

local changed = stale()
if changed then return cjson.encode({stale = changed}) end

local results = {}
for _, unit in ipairs(UNITS) do
  reset_view()
  -- The records the units before read still hold while each only sent; any other unit may
  -- change them, and the units after it read them again.
  if sends_only(unit) then RECORDS = RECORDS or {} else RECORDS = nil end
  HUMAN = unit.human == true
  ACKED = nil
  local r = {s = 'ok'}
  local fenced = false
  if present(unit.fence) then
    -- An exclusive agent's effects count only from the current lease holder: a host that
    -- paused past its lease cannot apply stale work over its successor's.
    fenced = holder(unit.fence.agent) ~= unit.fence.holder
  end
  -- A command's unit carries an idempotency key: sent twice (a retry after a lost reply), it
  -- applies once and the second gets the first's result.
  local idem = present(unit.idem) and key('idem', s(unit.idem)) or nil
  local before = idem and call('GET', idem)
  if before then
    r = cjson.decode(before)
  elseif fenced then
    r.s = 'fenced'
  elseif unit.ack and not pending(unit.ack) then
    r.s = 'dup'
  elseif unit.dead then
    dead_letter(unit, s(unit.dead))
    acknowledge(unit)
    r.s = 'dlq'
    r.reason = s(unit.dead)
  else
    if unit.ack then ACKED = s(unit.ack.agent) end
    local ok, err = pcall(function()
      for i, op in ipairs(unit.ops or {}) do
        op.by = unit.by
        op.human = unit.human
        local f = OPS[s(op.op) or '']
        if not f then fail('BADOP', 'unknown operation ' .. tostring(op.op)) end
        f(op)
      end
    end)
    if not ok then
      -- The key guard's refusal is a bug in the caller's key list, never the unit's fault.
      if type(err) == 'table' and err.err then return err end
      local msg
      if type(err) == 'table' and err.tt then msg = err.tt else msg = 'INTERNAL ' .. tostring(err) end
      if unit.dlq and unit.ack then
        local reason = string.gsub(msg, '^%u+ ', '')
        dead_letter(unit, 'its actions were refused: ' .. reason)
        acknowledge(unit)
        r.s = 'dlq'
        r.reason = reason
      else
        return redis.error_reply('TT ' .. msg)
      end
    else
      for _, f in ipairs(V.plan) do f() end
      if unit.ack then
        acknowledge(unit)
        if unit.digest then
          event({type = 'handled', agent = unit.ack.agent, msg = s(unit.ack.member),
            digest = s(unit.digest), actions = string.format('%d', #(unit.ops or {}))})
        end
      end
      r.ids = table.concat(V.ids, ',')
      r.tasks = table.concat(V.task_ids, ',')
      r.cleared = V.cleared
      if idem then call('SET', idem, cjson.encode(r), 'EX', 600) end
    end
  end
  results[#results + 1] = r
end

return cjson.encode(results)
