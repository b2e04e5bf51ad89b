-- Model budgets (Rust: `store/budget.rs`): reserve the worst case of a call before it is sent,
-- settle its real usage after, or release the hold when it failed. Each op is one call of this
-- script, so the check and the write are one atomic step: hosts racing for the same budget can
-- never together pass a limit.
--
-- Built by `store::script` (the `#!lua` shebang and the key guard go before this text), so every
-- command goes through `call`. Every key is declared in KEYS and named by position, like the
-- lease scripts (they share the town's `{town}` hash tag, one cluster slot):
--   KEYS[1] the town's event stream   KEYS[2] the agent's day hash (`budget-day:<agent>:<day>`)
--   KEYS[3] the day's usage hash (`usage:<day>`)
--   KEYS[4] the agent's task hash (`budget-task:<task>:<agent>`), only for a call with a task
-- ARGV[1] op: reserve | settle | release   ARGV[2] now (ms)   ARGV[3] JSON arguments:
--   reserve: {id, agent, task, model, tokens, cost, expires, limits = {tokens_per_day,
--             cost_per_day, tokens_per_task, cost_per_task}, events, ttl}
--   settle:  {id, agent, task, model, input, output, cost, ttl}
--   release: {id}
-- A day or task hash holds `tokens` and `cost` (spent; cost in micro-units) and one field
-- `h:<id>` = "tokens cost expires-ms" per reservation in flight. A hold past its expiry (its host
-- died mid-call) no longer counts and is removed by the next reservation that succeeds.
-- Returns: reserve -> {'ok'} or {'refused', budget, detail}; settle, release -> {'ok'}.

local NOW = tonumber(ARGV[2])
local A = cjson.decode(ARGV[3])

local function num(v)
  if v == nil or v == cjson.null then return nil end
  return tonumber(v)
end

-- Spent and live holds of one budget hash, and the names of expired holds.
local function load(k)
  local h = call('HGETALL', k)
  local b = {tokens = 0, cost = 0, held_tokens = 0, held_cost = 0, expired = {}}
  for i = 1, #h, 2 do
    local f, v = h[i], h[i + 1]
    if f == 'tokens' then b.tokens = tonumber(v)
    elseif f == 'cost' then b.cost = tonumber(v)
    elseif string.sub(f, 1, 2) == 'h:' then
      local t, c, e = string.match(v, '^(%d+) (%d+) (%d+)$')
      if t and tonumber(e) > NOW then
        b.held_tokens = b.held_tokens + tonumber(t)
        b.held_cost = b.held_cost + tonumber(c)
      else
        b.expired[#b.expired + 1] = f
      end
    end
  end
  return b
end

-- The first budget this reservation does not fit, as (name, detail), or nil.
local function over(b, scope, L)
  local checks = {
    {'tokens_per_' .. scope, num(L['tokens_per_' .. scope]), b.tokens, b.held_tokens,
     tonumber(A.tokens), 'tokens'},
    {'cost_per_' .. scope, num(L['cost_per_' .. scope]), b.cost, b.held_cost,
     tonumber(A.cost), 'micro-units'},
  }
  for _, c in ipairs(checks) do
    local name, limit, spent, held, want, unit = c[1], c[2], c[3], c[4], c[5], c[6]
    if limit and spent + held + want > limit then
      return name, string.format('needs %d %s; %d spent and %d reserved of %d',
        want, unit, spent, held, limit)
    end
  end
  return nil
end

local function hold(k, b)
  for _, f in ipairs(b.expired) do call('HDEL', k, f) end
  call('HSET', k, 'h:' .. A.id,
    string.format('%d %d %d', tonumber(A.tokens), tonumber(A.cost), tonumber(A.expires)))
  call('EXPIRE', k, A.ttl)
end

local op = ARGV[1]
local task_key = KEYS[4]

if op == 'reserve' then
  local day = load(KEYS[2])
  local task = task_key and load(task_key)
  local budget, detail = over(day, 'day', A.limits)
  if not budget and task then budget, detail = over(task, 'task', A.limits) end
  if budget then
    -- Refused: the one write is the event saying so.
    call('XADD', KEYS[1], 'MAXLEN', '~', A.events, '*', 'ts', NOW,
      'type', 'budget-exhausted', 'agent', A.agent, 'task', A.task or '', 'model', A.model,
      'budget', budget, 'body', detail)
    return {'refused', budget, detail}
  end
  hold(KEYS[2], day)
  if task then hold(task_key, task) end
  return {'ok'}
end

local function spend(k)
  call('HDEL', k, 'h:' .. A.id)
  call('HINCRBY', k, 'tokens', tonumber(A.input) + tonumber(A.output))
  call('HINCRBY', k, 'cost', tonumber(A.cost))
  call('EXPIRE', k, A.ttl)
end

if op == 'settle' then
  spend(KEYS[2])
  if task_key then spend(task_key) end
  local function field(metric)
    return cjson.encode({A.agent, A.task or '', A.model, metric})
  end
  call('HINCRBY', KEYS[3], field('in'), tonumber(A.input))
  call('HINCRBY', KEYS[3], field('out'), tonumber(A.output))
  call('HINCRBY', KEYS[3], field('cost'), tonumber(A.cost))
  call('HINCRBY', KEYS[3], field('calls'), 1)
  call('EXPIRE', KEYS[3], A.ttl)
  return {'ok'}
end

if op == 'release' then
  call('HDEL', KEYS[2], 'h:' .. A.id)
  if task_key then call('HDEL', task_key, 'h:' .. A.id) end
  return {'ok'}
end

return redis.error_reply('TT BADOP budget script op ' .. tostring(op))
