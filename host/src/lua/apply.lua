-- tinytown's one write path: every change to a town goes through this script.
--
-- ARGV[1] key prefix `tt:{town}:`   ARGV[2] now (ms)   ARGV[3] JSON list of units
-- ARGV[4] events kept   ARGV[5] max message bytes   ARGV[6] applied-id retention (ms)
-- KEYS[1] the town's event stream (names the slot for Redis Cluster; every other key shares
-- its hash tag, so they live on the same node).
--
-- A unit is what one command or one handled message does:
--   { ops = [...], by = "agent", digest = "sha256", ack = {stream, entry, agent, member},
--     dlq = true, dead = "reason", attempts = n, fence = {agent, holder} }
-- Each unit is all-or-nothing: phase 1 checks every op against a view of the town and plans
-- the writes; phase 2 performs them only when every check passed. With `ack`, the unit is also
-- idempotent: a message already applied is only acknowledged. With `dlq`, a unit whose ops are
-- illegal is dead-lettered with the reason instead of failing; with `dead`, it is dead-lettered
-- without running its ops.
--
-- Returns a JSON list, one result per unit: {s = "ok"|"dup"|"dlq", ids = "m1,m2",
-- tasks = "t1", reason = "..."}. A unit without `dlq` that fails raises `TT <CODE> <message>`.

local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local UNITS = cjson.decode(ARGV[3])
local EVENTS_KEPT = tonumber(ARGV[4])
local MAX_BYTES = tonumber(ARGV[5])
local APPLIED_KEEP = tonumber(ARGV[6])
local GROUP = 'tt'

local function key(...) return P .. table.concat({...}, ':') end

local MOVES = {
  pending = {assigned = true, cancelled = true},
  assigned = {running = true, ['in-review'] = true, completed = true, failed = true, cancelled = true},
  running = {['in-review'] = true, completed = true, failed = true, cancelled = true},
  ['in-review'] = {completed = true, rejected = true, failed = true, cancelled = true},
  rejected = {assigned = true, failed = true, cancelled = true},
}
local TERMINAL = {completed = true, failed = true, cancelled = true}

local function fail(code, msg) error({tt = code .. ' ' .. msg}) end

local function s(v)
  if v == nil or v == cjson.null then return nil end
  return tostring(v)
end

local function present(v) return v ~= nil and v ~= cjson.null end

local function canonical(name)
  if name == 'supervisor' then return 'conductor' end
  return name
end

-- The view: what phase 1 has read or decided so far, overlaying Redis.
local V

local function reset_view()
  V = {tasks = {}, agents = {}, plan = {}, ids = {}, task_ids = {}, seq = nil}
end

local function later(f) V.plan[#V.plan + 1] = f end

local function event(fields)
  local args = {'XADD', key('events'), 'MAXLEN', '~', EVENTS_KEPT, '*', 'ts', NOW}
  for k, v in pairs(fields) do
    if v ~= nil then
      args[#args + 1] = k
      args[#args + 1] = tostring(v)
    end
  end
  redis.call(unpack(args))
end

local function preview(text)
  text = text or ''
  if #text > 160 then return string.sub(text, 1, 157) .. '...' end
  return text
end

local function agent(name)
  name = canonical(name)
  local a = V.agents[name]
  if a == nil then
    if name == 'conductor' then
      a = {role = 'human', state = 'idle'}
    else
      local h = redis.call('HGETALL', key('agent', name))
      if #h == 0 then
        a = false
      else
        a = {}
        for i = 1, #h, 2 do a[h[i]] = h[i + 1] end
      end
    end
    V.agents[name] = a
  end
  return a
end

local function need_agent(name)
  if name == nil or name == '' then fail('NOAGENT', 'no agent named') end
  local a = agent(name)
  if not a then fail('NOAGENT', 'agent `' .. name .. '` not found') end
  return a
end

local function task(id)
  local t = V.tasks[id]
  if t == nil then
    local h = redis.call('HGETALL', key('task', id))
    if #h == 0 then
      t = false
    else
      t = {}
      for i = 1, #h, 2 do t[h[i]] = h[i + 1] end
    end
    V.tasks[id] = t
  end
  return t
end

local function need_task(id)
  if id == nil or id == '' then fail('NOTASK', 'no task id given') end
  local t = task(id)
  if not t then fail('NOTASK', 'task `' .. id .. '` not found') end
  return t
end

local function check_size(what, text)
  if text and #text > MAX_BYTES then
    fail('TOOBIG', what .. ' is ' .. #text .. ' bytes; the limit is ' .. MAX_BYTES)
  end
end

-- Plans a state change of task `id`, checked against the legal moves.
local function move(id, to, by, fields)
  local t = need_task(id)
  local from = t.state or 'pending'
  if not (MOVES[from] and MOVES[from][to]) then
    fail('ILLEGAL', 'task ' .. id .. ' is ' .. from .. '; it cannot become ' .. to)
  end
  t.state = to
  local owner = t.owner
  later(function()
    local args = {'HSET', key('task', id), 'state', to, 'updated', NOW}
    for k, v in pairs(fields or {}) do
      args[#args + 1] = k
      args[#args + 1] = v
    end
    redis.call(unpack(args))
    if TERMINAL[to] and owner and owner ~= '' then
      redis.call('SREM', key('owned', owner), id)
    end
    event({type = 'task', task = id, from = from, to = to, by = by})
  end)
end

local function new_task_id()
  if V.seq == nil then V.seq = tonumber(redis.call('GET', key('seq', 'task')) or '0') end
  V.seq = V.seq + 1
  local id = 't' .. V.seq
  local seq = V.seq
  later(function() redis.call('SET', key('seq', 'task'), seq) end)
  return id
end

-- Plans one message into `to`'s mailbox.
local function send(m)
  local to = canonical(s(m.to) or '')
  need_agent(to)
  need_agent(s(m.from) or 'conductor')
  local body = s(m.body) or ''
  check_size('message body', body)
  local stream = key(m.urgent and 'urgent' or 'inbox', to)
  later(function()
    local id = 'm' .. redis.call('INCR', key('seq', 'msg'))
    redis.call('XADD', stream, '*', 'id', id, 'from', s(m.from) or '?', 'to', to,
      'kind', s(m.kind) or 'task', 'body', body, 'prio', m.urgent and 'urgent' or 'normal',
      'task', s(m.task) or '', 'corr', s(m.corr) or '', 'ts', NOW)
    V.ids[#V.ids + 1] = id
    event({type = 'sent', msg = id, from = s(m.from), to = to, kind = s(m.kind),
      task = s(m.task), urgent = m.urgent and '1' or nil, body = preview(body)})
  end)
end

local function create_task(desc, tags, by)
  check_size('task description', desc)
  local id = new_task_id()
  V.tasks[id] = {state = 'pending', desc = desc}
  later(function()
    redis.call('HSET', key('task', id), 'desc', desc, 'state', 'pending', 'tags', tags or '',
      'created', NOW, 'updated', NOW, 'rejections', 0, 'by', by or '')
    redis.call('ZADD', key('tasks'), tonumber(string.sub(id, 2)), id)
    event({type = 'task', task = id, to = 'pending', by = by, body = preview(desc)})
  end)
  V.task_ids[#V.task_ids + 1] = id
  return id
end

-- Plans giving task `id` to `who` and telling them.
local function hand_to(id, who, by)
  local t = need_task(id)
  local old = t.owner
  move(id, 'assigned', by, {owner = who})
  t.owner = who
  later(function()
    if old and old ~= '' and old ~= who then redis.call('SREM', key('owned', old), id) end
    redis.call('SADD', key('owned', who), id)
    redis.call('ZREM', key('backlog'), id)
  end)
  send({from = by, to = who, kind = 'task-assign', body = t.desc or '', task = id})
end

local OPS = {}

function OPS.spawn(op)
  local name = s(op.name)
  if name == 'conductor' or name == 'supervisor' then
    fail('RESERVED', '`' .. name .. '` is reserved for the humans\' mailbox')
  end
  if agent(name) then fail('EXISTS', 'agent `' .. name .. '` already exists') end
  V.agents[name] = {role = s(op.role), state = 'idle'}
  later(function()
    local k = key('agent', name)
    redis.call('HSET', k, 'role', s(op.role) or 'worker', 'state', 'idle', 'created', NOW)
    for _, f in ipairs({'plugin', 'digest', 'nickname'}) do
      if s(op[f]) then redis.call('HSET', k, f, s(op[f])) end
    end
    redis.call('SADD', key('agents'), name)
    for _, kind in ipairs({'inbox', 'urgent'}) do
      local ok = pcall(redis.call, 'XGROUP', 'CREATE', key(kind, name), GROUP, '0', 'MKSTREAM')
      if not ok then redis.call('XGROUP', 'SETID', key(kind, name), GROUP, '0') end
    end
    event({type = 'agent', agent = name, to = 'idle', role = s(op.role), by = s(op.by)})
  end)
end

-- Sets an agent's lifecycle state, only from the states listed in `from` (any when absent).
function OPS.agent_state(op)
  local name = canonical(s(op.name) or '')
  local a = need_agent(name)
  if name == 'conductor' then fail('RESERVED', 'the conductor mailbox has no lifecycle') end
  local cur = a.state or 'idle'
  if present(op.from) then
    local allowed = false
    for _, st in ipairs(op.from) do if st == cur then allowed = true end end
    if not allowed then
      fail('BADSTATE', 'agent `' .. name .. '` is ' .. cur .. '; it cannot become ' .. s(op.state))
    end
  end
  a.state = s(op.state)
  later(function()
    redis.call('HSET', key('agent', name), 'state', s(op.state))
    event({type = 'agent', agent = name, from = cur, to = s(op.state), by = s(op.by)})
  end)
end

-- Records which plugin an agent runs (a swap), for status and audits.
function OPS.agent_plugin(op)
  local name = s(op.name)
  need_agent(name)
  later(function()
    local k = key('agent', name)
    local old_plugin, old_digest = unpack(redis.call('HMGET', k, 'plugin', 'digest'))
    redis.call('HSET', k, 'plugin', s(op.plugin), 'digest', s(op.digest), 'swapped', NOW)
    if old_plugin and old_digest ~= s(op.digest) then
      redis.call('HSET', k, 'previous', old_plugin, 'previous_digest', old_digest or '')
    end
    if op.promote then redis.call('HDEL', k, 'shadow', 'shadow_digest') end
    event({type = 'swap', agent = name, digest = s(op.digest), plugin = s(op.plugin),
      by = s(op.by)})
  end)
end

-- Starts (plugin given) or stops shadowing an agent with a candidate plugin.
function OPS.shadow(op)
  local name = s(op.name)
  need_agent(name)
  later(function()
    local k = key('agent', name)
    if s(op.plugin) then
      redis.call('HSET', k, 'shadow', s(op.plugin), 'shadow_digest', s(op.digest))
      redis.call('DEL', key('shadow', name))
      event({type = 'shadow', agent = name, plugin = s(op.plugin), digest = s(op.digest), by = s(op.by)})
    else
      redis.call('HDEL', k, 'shadow', 'shadow_digest')
      event({type = 'shadow', agent = name, to = 'stopped', by = s(op.by)})
    end
  end)
end

-- What the shadow decided beside the live plugin, for `tt shadow report`.
function OPS.shadow_record(op)
  later(function()
    redis.call('XADD', key('shadow', s(op.by)), 'MAXLEN', '~', EVENTS_KEPT, '*', 'msg', s(op.msg),
      'agree', op.agree and '1' or '0', 'live', s(op.live), 'shadow', s(op.shadow),
      'live_digest', s(op.live_digest), 'shadow_digest', s(op.shadow_digest), 'ts', NOW)
  end)
end

-- Removes an agent. Messages it never handled go to the dead-letter stream, not away.
function OPS.prune(op)
  local name = canonical(s(op.name) or '')
  local a = need_agent(name)
  if name == 'conductor' then fail('RESERVED', 'the conductor mailbox cannot be pruned') end
  local ok_states = present(op.states) and op.states or {'stopped'}
  local ok = false
  for _, st in ipairs(ok_states) do if st == (a.state or 'idle') then ok = true end end
  if not ok then
    fail('BADSTATE', 'agent `' .. name .. '` is ' .. (a.state or 'idle') ..
      '; kill it first (`tt kill ' .. name .. '`)')
  end
  V.agents[name] = false
  later(function()
    for _, kind in ipairs({'urgent', 'inbox'}) do
      local stream = key(kind, name)
      local unread = {}
      local groups = redis.pcall('XINFO', 'GROUPS', stream)
      if type(groups) == 'table' and groups[1] then
        local g = groups[1]
        local last = '0-0'
        for i = 1, #g, 2 do if g[i] == 'last-delivered-id' then last = g[i + 1] end end
        for _, p in ipairs(redis.call('XPENDING', stream, GROUP, '-', '+', 100000)) do
          unread[#unread + 1] = p[1]
        end
        for _, e in ipairs(redis.call('XRANGE', stream, '(' .. last, '+')) do
          unread[#unread + 1] = e[1]
        end
      end
      for _, entry in ipairs(unread) do
        local e = redis.call('XRANGE', stream, entry, entry)[1]
        if e then
          local args = {'XADD', key('dlq'), '*', 'agent', name, 'stream', kind, 'entry', entry,
            'reason', 'agent pruned before handling it', 'attempts', 0, 'ts', NOW}
          for i = 1, #e[2] do args[#args + 1] = e[2][i] end
          redis.call(unpack(args))
        end
      end
      redis.call('DEL', stream)
    end
    redis.call('DEL', key('agent', name), key('state', name), key('applied', name),
      key('owned', name), key('attempts', name), key('shadow', name))
    redis.call('SREM', key('agents'), name)
    event({type = 'agent', agent = name, to = 'pruned', by = s(op.by)})
  end)
end

-- The humans read their mailbox with `tt inbox`; this marks all of it read.
function OPS.clear_conductor(op)
  later(function()
    local n = 0
    for _, kind in ipairs({'urgent', 'inbox'}) do
      n = n + redis.call('XLEN', key(kind, 'conductor'))
      redis.call('DEL', key(kind, 'conductor'))
    end
    V.cleared = n
    event({type = 'inbox-cleared', agent = 'conductor', body = n .. ' messages', by = s(op.by)})
  end)
end

function OPS.send(op)
  send({from = s(op.from) or s(op.by), to = s(op.to), kind = s(op.kind), body = s(op.body),
    urgent = op.urgent, task = s(op.task), corr = s(op.corr)})
end

-- Create-and-assign (no `task`) or assign an existing task.
function OPS.assign(op)
  local who = canonical(s(op.agent) or '')
  need_agent(who)
  if who == 'conductor' then fail('RESERVED', 'tasks go to agents, not to the conductor mailbox') end
  local id = s(op.task)
  if id == nil then
    id = create_task(s(op.desc) or '', s(op.tags), s(op.by))
  end
  hand_to(id, who, s(op.by) or 'conductor')
end

function OPS.backlog_add(op)
  local desc = s(op.desc) or ''
  local id = create_task(desc, s(op.tags), s(op.by))
  later(function() redis.call('ZADD', key('backlog'), tonumber(string.sub(id, 2)), id) end)
  -- Conductor policies learn about new work without polling.
  for _, name in ipairs(redis.call('SMEMBERS', key('agents'))) do
    local a = agent(name)
    if a and a.role == 'conductor' and a.state ~= 'stopped' then
      send({from = s(op.by) or 'conductor', to = name, kind = 'info',
        body = 'backlog: ' .. id .. ' ' .. desc, task = id})
    end
  end
end

function OPS.backlog_claim(op)
  local id = s(op.task)
  need_task(id)
  need_agent(s(op.agent))
  if canonical(s(op.agent)) == 'conductor' then
    fail('RESERVED', 'tasks go to agents, not to the conductor mailbox')
  end
  if not redis.call('ZSCORE', key('backlog'), id) or V.tasks[id].claimed then
    fail('NOTBACKLOG', 'task ' .. id .. ' is not in the backlog (already claimed or removed)')
  end
  V.tasks[id].claimed = true
  hand_to(id, canonical(s(op.agent)), s(op.by) or 'conductor')
end

function OPS.backlog_remove(op)
  local id = s(op.task)
  need_task(id)
  if not redis.call('ZSCORE', key('backlog'), id) then
    fail('NOTBACKLOG', 'task ' .. id .. ' is not in the backlog')
  end
  move(id, 'cancelled', s(op.by), {result = 'removed from the backlog'})
  later(function() redis.call('ZREM', key('backlog'), id) end)
end

-- complete / fail / cancel / running, checked against the legal moves.
function OPS.transition(op)
  local to = s(op.to)
  local fields = {}
  if s(op.text) then fields.result = s(op.text) end
  local id = s(op.task)
  move(id, to, s(op.by), fields)
  if to == 'cancelled' then later(function() redis.call('ZREM', key('backlog'), id) end) end
end

-- The host marks a task running when its owner starts on it; anything else is left alone.
function OPS.mark_running(op)
  local t = task(s(op.task) or '')
  if t and t.state == 'assigned' and t.owner == s(op.by) then
    move(s(op.task), 'running', s(op.by))
  end
end

function OPS.request_review(op)
  local id = s(op.task)
  local reviewer = canonical(s(op.reviewer) or '')
  need_agent(reviewer)
  local t = need_task(id)
  move(id, 'in-review', s(op.by), {reviewer = reviewer})
  send({from = s(op.by), to = reviewer, kind = 'review-request', body = s(op.body), task = id})
  return t
end

function OPS.verdict(op)
  local id = s(op.task)
  local t = need_task(id)
  local text = s(op.text) or ''
  local owner = t.owner or 'conductor'
  if op.approve then
    move(id, 'completed', s(op.by), {result = text})
    send({from = s(op.by), to = owner, kind = 'verdict:approve', body = text, task = id})
  else
    move(id, 'rejected', s(op.by), {result = text})
    move(id, 'assigned', s(op.by), {})
    later(function() redis.call('HINCRBY', key('task', id), 'rejections', 1) end)
    send({from = s(op.by), to = owner, kind = 'verdict:reject', body = text, task = id})
  end
end

function OPS.escalate(op)
  send({from = s(op.by), to = 'conductor', kind = 'custom:escalation', body = s(op.text),
    urgent = true, task = s(op.task)})
  later(function() event({type = 'escalated', agent = s(op.by), body = preview(s(op.text))}) end)
end

function OPS.set_state(op)
  local who = s(op.by)
  local k, v = s(op.key), s(op.value)
  check_size('state value', v)
  later(function()
    if v then redis.call('HSET', key('state', who), k, v)
    else redis.call('HDEL', key('state', who), k) end
  end)
end

function OPS.log(op)
  later(function()
    event({type = 'log', agent = s(op.by), level = s(op.level), body = preview(s(op.text))})
  end)
end

local function dlq_entry(id)
  local e = redis.call('XRANGE', key('dlq'), id, id)[1]
  if not e then fail('NODLQ', 'dead letter ' .. id .. ' not found') end
  local f = {}
  for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
  return f
end

-- Puts a dead letter back into its agent's mailbox, as it was.
function OPS.dlq_retry(op)
  local id = s(op.entry)
  local f = dlq_entry(id)
  need_agent(f.agent)
  later(function()
    local args = {'XADD', key(f.stream == 'urgent' and 'urgent' or 'inbox', f.agent), '*'}
    for k, v in pairs(f) do
      local name = string.match(k, '^orig%.(.+)$')
      if name then
        args[#args + 1] = name
        args[#args + 1] = v
      end
    end
    if #args == 3 then fail('NODLQ', 'dead letter ' .. id .. ' kept no message to retry') end
    redis.call(unpack(args))
    redis.call('XDEL', key('dlq'), id)
    event({type = 'dlq-retry', agent = f.agent, msg = f['orig.id'], by = s(op.by)})
  end)
end

function OPS.dlq_drop(op)
  local id = s(op.entry)
  local f = dlq_entry(id)
  later(function()
    redis.call('XDEL', key('dlq'), id)
    event({type = 'dlq-drop', agent = f.agent, msg = f['orig.id'], by = s(op.by)})
  end)
end

local function dead_letter(unit, reason)
  local a = unit.ack
  local args = {'XADD', key('dlq'), '*', 'agent', a.agent, 'stream', s(a.kind) or 'inbox',
    'entry', a.entry, 'reason', reason, 'attempts', unit.attempts or 1, 'ts', NOW,
    'digest', s(unit.digest) or ''}
  -- The message as it was, read back from its stream (only this rare path pays for it).
  local e = redis.call('XRANGE', a.stream, a.entry, a.entry)[1]
  if e then
    for i = 1, #e[2], 2 do
      args[#args + 1] = 'orig.' .. e[2][i]
      args[#args + 1] = e[2][i + 1]
    end
  end
  redis.call(unpack(args))
  event({type = 'dead-letter', agent = a.agent, msg = s(a.member), body = preview(reason),
    digest = s(unit.digest)})
end

local function acknowledge(unit)
  local a = unit.ack
  redis.call('XACK', a.stream, GROUP, a.entry)
  redis.call('ZADD', key('applied', a.agent), NOW, a.member)
  -- A retry counter exists only once an attempt has failed.
  if (tonumber(unit.attempts) or 1) > 1 then redis.call('HDEL', key('attempts', a.agent), a.member) end
end

local results = {}
for _, unit in ipairs(UNITS) do
  reset_view()
  local r = {s = 'ok'}
  local fenced = false
  if present(unit.fence) then
    -- An exclusive agent's effects count only from the current lease holder: a host that
    -- paused past its lease cannot apply stale work over its successor's.
    fenced = redis.call('GET', key('lease', unit.fence.agent)) ~= unit.fence.holder
  end
  if fenced then
    r.s = 'fenced'
  elseif unit.ack and redis.call('ZSCORE', key('applied', unit.ack.agent), unit.ack.member) then
    redis.call('XACK', unit.ack.stream, GROUP, unit.ack.entry)
    r.s = 'dup'
  elseif unit.dead then
    dead_letter(unit, s(unit.dead))
    acknowledge(unit)
    r.s = 'dlq'
    r.reason = s(unit.dead)
  else
    local ok, err = pcall(function()
      for i, op in ipairs(unit.ops or {}) do
        op.by = op.by or unit.by
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
    end
  end
  results[#results + 1] = r
end

if math.random(1, 64) == 1 then
  for _, unit in ipairs(UNITS) do
    if unit.ack then
      redis.call('ZREMRANGEBYSCORE', key('applied', unit.ack.agent), 0, NOW - APPLIED_KEEP)
    end
  end
end

return cjson.encode(results)
