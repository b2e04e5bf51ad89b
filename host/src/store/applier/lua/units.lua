-- The unit loop: fence, de-duplication, phase 1 (check and plan), phase 2 (write), ack.

local function acknowledge(unit)
  local a = unit.ack
  redis.call('XACK', a.stream, GROUP, a.entry)
  -- Retry counters and the last failure exist only once a delivery has failed.
  if (tonumber(unit.attempts) or 1) > 1 or unit.retried then
    redis.call('HDEL', key('attempts', a.agent), a.member, a.member .. '!why',
      a.member .. '!starts')
  end
end

-- The consumer group's pending list is the de-duplication record: an entry is pending from
-- its delivery until the unit that handles it is applied, which acknowledges it in the same
-- step. A stream or group that is gone (the agent was pruned) has nothing pending.
local function pending(a)
  local p = redis.pcall('XPENDING', a.stream, GROUP, a.entry, a.entry, 1)
  return type(p) == 'table' and not p.err and #p > 0
end

local results = {}
for _, unit in ipairs(UNITS) do
  reset_view()
  HUMAN = unit.human == true
  local r = {s = 'ok'}
  local fenced = false
  if present(unit.fence) then
    -- An exclusive agent's effects count only from the current lease holder: a host that
    -- paused past its lease cannot apply stale work over its successor's.
    fenced = redis.call('GET', key('lease', unit.fence.agent)) ~= unit.fence.holder
  end
  -- A command's unit carries an idempotency key: sent twice (a retry after a lost reply), it
  -- applies once and the second gets the first's result.
  local idem = present(unit.idem) and key('idem', s(unit.idem)) or nil
  local before = idem and redis.call('GET', idem)
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
            digest = s(unit.digest), actions = #(unit.ops or {})})
        end
      end
      r.ids = table.concat(V.ids, ',')
      r.tasks = table.concat(V.task_ids, ',')
      r.cleared = V.cleared
      if idem then redis.call('SET', idem, cjson.encode(r), 'EX', 600) end
    end
  end
  results[#results + 1] = r
end

return cjson.encode(results)
