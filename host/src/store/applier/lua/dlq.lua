-- Dead letters: writing one, retrying and dropping them.

local function dlq_entry(id)
  local e = call('XRANGE', key('dlq'), id, id)[1]
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
  local kept = false
  for k in pairs(f) do if string.match(k, '^orig%.') then kept = true end end
  if not kept then fail('NODLQ', 'dead letter ' .. id .. ' kept no message to retry') end
  later(function()
    local args = {'XADD', key(f.stream == 'urgent' and 'urgent' or 'inbox', f.agent), '*'}
    for k, v in pairs(f) do
      local name = string.match(k, '^orig%.(.+)$')
      if name then
        args[#args + 1] = name
        args[#args + 1] = v
      end
    end
    call(unpack(args))
    ring(f.agent)
    call('XDEL', key('dlq'), id)
    event({type = 'dlq-retry', agent = f.agent, msg = f['orig.id'], by = s(op.by)})
  end)
end

function OPS.dlq_drop(op)
  local id = s(op.entry)
  local f = dlq_entry(id)
  later(function()
    call('XDEL', key('dlq'), id)
    event({type = 'dlq-drop', agent = f.agent, msg = f['orig.id'], by = s(op.by)})
  end)
end

local function dead_letter(unit, reason)
  local a = unit.ack
  local args = {'XADD', key('dlq'), '*', 'agent', a.agent, 'stream', s(a.kind) or 'inbox',
    'entry', a.entry, 'reason', reason, 'attempts', unit.attempts or 1, 'ts', NOW,
    'digest', s(unit.digest) or ''}
  -- The message as it was, read back from its stream (only this rare path pays for it).
  local e = call('XRANGE', a.stream, a.entry, a.entry)[1]
  if e then
    for i = 1, #e[2], 2 do
      args[#args + 1] = 'orig.' .. e[2][i]
      args[#args + 1] = e[2][i + 1]
    end
  end
  call(unpack(args))
  event({type = 'dead-letter', agent = a.agent, msg = s(a.member), body = preview(reason),
    digest = s(unit.digest)})
end

