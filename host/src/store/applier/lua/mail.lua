-- Mail: sending, escalating to the humans, and clearing their mailbox.

-- Kinds only their actions make, so that a `verdict:approve` or a `task-assign` in a mailbox
-- always comes from a move the applier checked.
local ACTION_KINDS = {['task-assign'] = 'assign', ['review-request'] = 'request-review',
  ['verdict:approve'] = 'approve', ['verdict:reject'] = 'reject'}

function OPS.send(op)
  local by_action = ACTION_KINDS[s(op.kind) or '']
  if by_action then
    fail('FORGED', 'a `' .. s(op.kind) .. '` message comes only from the `' .. by_action ..
      '` action, never from send')
  end
  send({from = s(op.by), to = s(op.to), kind = s(op.kind), body = s(op.body),
    urgent = op.urgent, task = s(op.task), corr = s(op.corr)})
end

function OPS.escalate(op)
  send({from = s(op.by), to = 'conductor', kind = 'custom:escalation', body = s(op.text),
    urgent = true})
  later(function() event({type = 'escalated', agent = s(op.by), body = preview(s(op.text))}) end)
end

-- The humans read their mailbox with `tt inbox --clear`; this marks read what they were shown:
-- each stream up to and including the newest entry shown (`urgent_upto`, `inbox_upto`).
function OPS.clear_conductor(op)
  local upto = {urgent = s(op.urgent_upto), inbox = s(op.inbox_upto)}
  for _, id in pairs(upto) do
    if not string.match(id, '^%d+%-%d+$') then fail('BADID', 'not a stream id: ' .. id) end
  end
  later(function()
    local n = 0
    for kind, id in pairs(upto) do
      local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
      n = n + call('XTRIM', key(kind, 'conductor'), 'MINID', ms .. '-' .. (tonumber(seq) + 1))
    end
    V.cleared = n
    event({type = 'inbox-cleared', agent = 'conductor', body = n .. ' messages', by = s(op.by)})
  end)
end
