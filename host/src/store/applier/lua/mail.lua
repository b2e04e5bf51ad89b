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

