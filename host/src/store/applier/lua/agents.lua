-- Agents: spawn, lifecycle, plugin records, prune, and an agent's own state and log.

function OPS.spawn(op)
  local name = s(op.name)
  if name == 'conductor' or name == 'supervisor' then
    fail('RESERVED', '`' .. name .. '` is reserved for the humans\' mailbox')
  end
  if agent(name) then fail('EXISTS', 'agent `' .. name .. '` already exists') end
  V.agents[name] = {role = s(op.role), state = 'idle'}
  later(function()
    local k = key('agent', name)
    call('HSET', k, 'role', s(op.role) or 'worker', 'state', 'idle', 'created', NOW)
    local optional = {plugin = s(op.plugin), digest = s(op.digest), nickname = s(op.nickname)}
    for f, v in pairs(optional) do call('HSET', k, f, v) end
    call('SADD', key('agents'), name)
    for _, kind in ipairs({'inbox', 'urgent'}) do
      local r = pcall_call('XGROUP', 'CREATE', key(kind, name), GROUP, '0', 'MKSTREAM')
      if type(r) == 'table' and r.err then call('XGROUP', 'SETID', key(kind, name), GROUP, '0') end
    end
    event({type = 'agent', agent = name, to = 'idle', role = s(op.role), by = s(op.by)})
  end)
end

-- Sets an agent's lifecycle state, only from the states listed in `from` (any when absent).
function OPS.agent_state(op)
  local name, a = need_real_agent(s(op.name), 'has no lifecycle')
  local cur = a.state or 'idle'
  if present(op.from) then
    if not contains(op.from, cur) then
      fail('BADSTATE', 'agent `' .. name .. '` is ' .. cur .. '; it cannot become ' .. s(op.state))
    end
  end
  a.state = s(op.state)
  later(function()
    call('HSET', key('agent', name), 'state', s(op.state))
    event({type = 'agent', agent = name, from = cur, to = s(op.state), by = s(op.by)})
  end)
end

-- Records which plugin an agent runs (a swap), for status and audits.
function OPS.agent_plugin(op)
  local name = s(op.name)
  need_agent(name)
  later(function()
    local k = key('agent', name)
    local old_plugin, old_digest = unpack(call('HMGET', k, 'plugin', 'digest'))
    call('HSET', k, 'plugin', s(op.plugin), 'digest', s(op.digest), 'swapped', NOW)
    if old_plugin and old_digest ~= s(op.digest) then
      call('HSET', k, 'previous', old_plugin, 'previous_digest', old_digest or '')
    end
    if present(op.judged) then
      call('HSET', k, 'judged', s(op.judged))
    else
      call('HDEL', k, 'judged')
    end
    call('HDEL', k, 'refused')
    event({type = 'swap', agent = name, digest = s(op.digest), plugin = s(op.plugin),
      by = s(op.by), judged = present(op.judged) and s(op.judged) or nil})
  end)
end

-- A host could not switch to the recorded plugin and keeps serving the one it has: the record
-- goes back to that one and keeps the reason, unless another swap has been recorded since.
function OPS.swap_refused(op)
  local name = s(op.name)
  need_agent(name)
  later(function()
    local k = key('agent', name)
    if call('HGET', k, 'digest') ~= s(op.digest) then return end
    call('HSET', k, 'plugin', s(op.kept), 'digest', s(op.kept_digest), 'refused',
      s(op.plugin) .. ' (' .. string.sub(s(op.digest), 1, 12) .. '): ' .. s(op.reason))
    call('HDEL', k, 'judged')
    event({type = 'swap-refused', agent = name, plugin = s(op.plugin), digest = s(op.digest),
      kept = s(op.kept), body = s(op.reason), by = s(op.by)})
  end)
end

-- Removes an agent. Messages it never handled go to the dead-letter stream, not away.
function OPS.prune(op)
  local name, a = need_real_agent(s(op.name), 'cannot be pruned')
  local ok_states = present(op.states) and op.states or {'stopped'}
  if not contains(ok_states, a.state or 'idle') then
    fail('BADSTATE', 'agent `' .. name .. '` is ' .. (a.state or 'idle') ..
      '; kill it first (`tt kill ' .. name .. '`)')
  end
  V.agents[name] = false
  later(function()
    for _, kind in ipairs({'urgent', 'inbox'}) do
      local stream = key(kind, name)
      local unread = {}
      local groups = pcall_call('XINFO', 'GROUPS', stream)
      if type(groups) == 'table' and groups[1] then
        local g = groups[1]
        local last = '0-0'
        for i = 1, #g, 2 do if g[i] == 'last-delivered-id' then last = g[i + 1] end end
        -- Every pending entry, a page at a time.
        local from = '-'
        repeat
          local page = call('XPENDING', stream, GROUP, from, '+', 10000)
          for _, p in ipairs(page) do unread[#unread + 1] = p[1] end
          if #page > 0 then from = '(' .. page[#page][1] end
        until #page < 10000
        for _, e in ipairs(call('XRANGE', stream, '(' .. last, '+')) do
          unread[#unread + 1] = e[1]
        end
      end
      for _, entry in ipairs(unread) do
        local e = call('XRANGE', stream, entry, entry)[1]
        if e then
          local args = {'XADD', key('dlq'), '*', 'agent', name, 'stream', kind, 'entry', entry,
            'reason', 'agent pruned before handling it', 'attempts', 0, 'ts', NOW}
          -- The message under `orig.` as `dead_letter` keeps it, so `tt dlq retry` can put
          -- it back and its fields do not shadow the dead letter's own (`ts`, `id`).
          for i = 1, #e[2], 2 do
            args[#args + 1] = 'orig.' .. e[2][i]
            args[#args + 1] = e[2][i + 1]
          end
          call(unpack(args))
        end
      end
      call('DEL', stream)
    end
    call('DEL', key('agent', name), key('state', name),
      key('owned', name), key('attempts', name), key('shadow', name))
    call('SREM', key('agents'), name)
    event({type = 'agent', agent = name, to = 'pruned', by = s(op.by)})
  end)
end

function OPS.set_state(op)
  local who = s(op.by)
  local k, v = s(op.key), s(op.value)
  if k == nil or k == '' then fail('BADKEY', 'set-state needs a key') end
  check_size('state key', k, MAX_KEY)
  check_size('state value', v)
  later(function()
    if v then call('HSET', key('state', who), k, v)
    else call('HDEL', key('state', who), k) end
  end)
end

function OPS.log(op)
  later(function()
    event({type = 'log', agent = s(op.by), level = s(op.level), body = preview(s(op.text))})
  end)
end

