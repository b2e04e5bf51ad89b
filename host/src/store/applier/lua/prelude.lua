-- tinytown's one write path: every change to a town goes through this script.
--
-- The script is this prelude, the generated task-move table, then one file per concern
-- (agents, mail, tasks, dlq, shadow) and the unit loop, joined by `applier/mod.rs`. Redis
-- scripts cannot `require`, so the parts share this file's locals. Every op an `OPS.<name>`
-- function accepts is a variant of the Rust `Op` enum (`applier/op.rs`), and every field it
-- reads is one that variant serialises: a unit test checks both ways.
--
-- ARGV[1] key prefix `tt:{town}:`   ARGV[2] now (ms)   ARGV[3] JSON list of units
-- ARGV[4] max message bytes   ARGV[5] JSON town rules (Rust: `store::policy::Rules`):
-- {review = "required"|"optional", events = n, shadow_records = n}
-- ARGV[6] JSON facts the key list was computed from (Rust: `declare::Facts`):
-- {seq = n, owners = {task = owner}, agents = [...], dlq = {entry = agent}}
-- KEYS: every key the units may touch, computed by Rust from the ops and the facts
-- (`applier/declare.rs`); the key guard (`store/lua/guard.lua`) refuses any other. The facts
-- are what the key list depends on beyond the ops (the task counter for new task ids, the
-- owners of the tasks named, the agents a backlog notice goes to, the agents of dead letters
-- retried). They are checked before any unit runs: when one changed since Rust read it, the
-- script writes nothing and returns {stale = "what"}, and Rust reads again and retries.
--
-- A unit is what one command or one handled message does:
--   { ops = [...], by = "agent", human = true, digest = "sha256",
--     ack = {stream, entry, agent, kind, member}, dlq = true, dead = "reason", attempts = n,
--     fence = {agent, holder} }
-- `human` marks a unit of the humans (the CLI, speaking as `by`): they may make any legal move.
-- A unit of an agent's handling may make only the moves its role and the task allow
-- (`authorise`), checked in phase 1 like legality.
-- Each unit is all-or-nothing: phase 1 checks every op against a view of the town and plans
-- the writes; phase 2 performs them only when every check passed. With `ack`, the unit is also
-- idempotent: it applies only while its mailbox entry is pending, and applying acknowledges
-- the entry in the same step, so a redelivered message whose effects were applied is skipped. With `dlq`, a unit whose ops are
-- illegal is dead-lettered with the reason instead of failing; with `dead`, it is dead-lettered
-- without running its ops.
--
-- Returns a JSON list, one result per unit: {s = "ok"|"dup"|"dlq"|"fenced", ids = "m1,m2",
-- tasks = "t1", reason = "...", cleared = n} (Rust: `Applied` and `Outcome`). A unit without
-- `dlq` that fails raises `TT <CODE> <message>`.

local P = ARGV[1]
-- Now in ms, as the text Rust sent. Numbers become text with `string.format('%d')` on the
-- way to a command: Redis 7.0 formats a Lua number given to a command with "%.17g", and Lua
-- its `..` and `tostring` with "%.14g", each through glibc's float printer (~4% of a busy
-- Redis's time went to it).
local NOW = ARGV[2]
local UNITS = cjson.decode(ARGV[3])
local MAX_BYTES = tonumber(ARGV[4])
local RULES = cjson.decode(ARGV[5])
local FACTS = cjson.decode(ARGV[6])
local EVENTS_KEPT = string.format('%d', RULES.events)
-- Whether the unit being applied is the humans' (events record it).
local HUMAN = false
local GROUP = 'tt'

local function key(...) return P .. table.concat({...}, ':') end

-- The bell tells the hosts what they wait for (Rust: `host::mailboxes`): `a` names an agent
-- with new mail, `c` one whose record changed (`spawned` = 1: a new agent). Kept long enough
-- for a host far behind to read (one that falls further behind reads every mailbox it serves
-- and looks at every agent again). A call rings once for each agent it gives mail: nobody reads
-- the bell before the call ends, so one bell says as much as one per message (a call of 500
-- messages to 50 agents rang 500 bells, and a busy big town's hosts fell behind the bell).
local BELLS_KEPT = '100000'
local RUNG = {}
local function ring(agent)
  if RUNG[agent] then return end
  RUNG[agent] = true
  call('XADD', key('bell'), 'MAXLEN', '~', BELLS_KEPT, '*', 'a', agent)
end
local CHANGES = {agent = true, swap = true, ['swap-refused'] = true, shadow = true}

-- MOVES (state -> {state = true}) and TERMINAL are generated from `TaskState` in Rust and
-- inserted here.
--@MOVES@

-- Refuses the unit: `code` and `msg` reach Rust as `TT <CODE> <msg>`. Only phase 1 may call
-- it (phase 2 has begun writing and must not stop part-way).
local function fail(code, msg) error({tt = code .. ' ' .. msg}) end

local function check_size(what, text, limit)
  limit = limit or MAX_BYTES
  if text and #text > limit then
    fail('TOOBIG', what .. ' is ' .. #text .. ' bytes; the limit is ' .. limit)
  end
end

-- Bounds of the short fields (ids, names, keys); bodies and texts are bounded by MAX_BYTES.
local MAX_ID = 128
local MAX_KEY = 256


local function s(v)
  if v == nil or v == cjson.null then return nil end
  return tostring(v)
end

local function present(v) return v ~= nil and v ~= cjson.null end

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

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
  if HUMAN then
    args[#args + 1] = 'human'
    args[#args + 1] = '1'
  end
  for k, v in pairs(fields) do
    if v ~= nil then
      args[#args + 1] = k
      args[#args + 1] = tostring(v)
    end
  end
  call(unpack(args))
  if CHANGES[fields.type] and fields.agent then
    local spawned = (fields.type == 'agent' and fields.role) and '1' or '0'
    call('XADD', key('bell'), 'MAXLEN', '~', BELLS_KEPT, '*', 'c', fields.agent, 'spawned', spawned)
  end
end

local function preview(text)
  text = text or ''
  if #text > 160 then return string.sub(text, 1, 157) .. '...' end
  return text
end

-- A hash as a table, or false when it does not exist.
local function load_hash(k)
  local h = call('HGETALL', k)
  if #h == 0 then return false end
  local t = {}
  for i = 1, #h, 2 do t[h[i]] = h[i + 1] end
  return t
end

-- Agent records read by the earlier units of this call, while every unit so far only sent
-- messages (a send reads records, never writes one): a call of handlings that each forward a
-- message reads each record once, not twice per unit. Nil while a unit that may write records
-- is applied; the unit loop sets it.
local RECORDS = nil

local function agent(name)
  name = canonical(name)
  local a = V.agents[name]
  if a == nil then
    if name == 'conductor' then
      a = {role = 'human', state = 'idle'}
    elseif RECORDS and RECORDS[name] ~= nil then
      a = RECORDS[name]
    else
      a = load_hash(key('agent', name))
      if RECORDS then RECORDS[name] = a end
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

-- An agent's name and record, refusing the humans' mailbox, which `what` (has no lifecycle).
local function need_real_agent(name, what)
  name = canonical(name or '')
  local a = need_agent(name)
  if name == 'conductor' then fail('RESERVED', 'the conductor mailbox ' .. what) end
  return name, a
end

local function task(id)
  local t = V.tasks[id]
  if t == nil then
    t = load_hash(key('task', id))
    V.tasks[id] = t
  end
  return t
end

local function need_task(id)
  if id == nil or id == '' then fail('NOTASK', 'no task id given') end
  check_size('task id', id, MAX_ID)
  local t = task(id)
  if not t then fail('NOTASK', 'task `' .. id .. '` not found') end
  return t
end

-- Authority: a human may do anything; an agent's op passes only when `ok`.
local function authorise(op, ok, msg)
  if not (op.human or ok) then fail('FORBIDDEN', msg) end
end

local function role_of(name)
  local a = agent(name or '')
  return a and a.role or nil
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
    call(unpack(args))
    if TERMINAL[to] then
      if owner and owner ~= '' then call('SREM', key('owned', owner), id) end
      -- The retention sweep removes finished tasks after [retention] finished_task_secs.
      call('ZADD', key('finished'), NOW, id)
    end
    event({type = 'task', task = id, from = from, to = to, by = by})
  end)
end

local function new_task_id()
  if V.seq == nil then V.seq = tonumber(call('GET', key('seq', 'task')) or '0') end
  V.seq = V.seq + 1
  local id = 't' .. V.seq
  local seq = V.seq
  later(function() call('SET', key('seq', 'task'), seq) end)
  return id
end

-- The agent whose pending mail the unit being applied acknowledges: it exists (pruning an agent
-- deletes its mailboxes with its record), so its sends need not read its record, unless an
-- earlier op of the unit looked at it (a prune marks it gone).
local ACKED = nil

-- Plans one message into `to`'s mailbox.
local function send(m)
  local to = canonical(s(m.to) or '')
  need_agent(to)
  local from = canonical(s(m.from) or 'conductor')
  if from ~= ACKED or V.agents[from] ~= nil then need_agent(from) end
  local body = s(m.body) or ''
  check_size('message body', body)
  check_size('task id', s(m.task), MAX_ID)
  check_size('correlation id', s(m.corr), MAX_KEY)
  check_size('message kind', s(m.kind), MAX_ID)
  local stream = key(m.urgent and 'urgent' or 'inbox', to)
  later(function()
    local id = string.format('m%d', call('INCR', key('seq', 'msg')))
    call('XADD', stream, '*', 'id', id, 'from', s(m.from) or '?', 'to', to,
      'kind', s(m.kind) or 'task', 'body', body, 'prio', m.urgent and 'urgent' or 'normal',
      'task', s(m.task) or '', 'corr', s(m.corr) or '', 'ts', NOW)
    ring(to)
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
    call('HSET', key('task', id), 'desc', desc, 'state', 'pending', 'tags', tags or '',
      'created', NOW, 'updated', NOW, 'rejections', 0, 'by', by or '')
    call('ZADD', key('tasks'), tonumber(string.sub(id, 2)), id)
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
    if old and old ~= '' and old ~= who then call('SREM', key('owned', old), id) end
    call('SADD', key('owned', who), id)
    call('ZREM', key('backlog'), id)
  end)
  send({from = by, to = who, kind = 'task-assign', body = t.desc or '', task = id})
end

local OPS = {}
