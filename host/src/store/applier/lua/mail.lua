-- Mail: sending, escalating to the humans, and clearing their mailbox.

function OPS.send(op)
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

