-- Shadow mode: a candidate plugin beside the live one, decisions recorded only.

-- Starts (plugin given) or stops shadowing an agent with a candidate plugin.
function OPS.shadow(op)
  local name = s(op.name)
  need_agent(name)
  later(function()
    local k = key('agent', name)
    if s(op.plugin) then
      call('HSET', k, 'shadow', s(op.plugin), 'shadow_digest', s(op.digest))
      call('DEL', key('shadow', name))
      event({type = 'shadow', agent = name, plugin = s(op.plugin), digest = s(op.digest), by = s(op.by)})
    else
      call('HDEL', k, 'shadow', 'shadow_digest')
      event({type = 'shadow', agent = name, to = 'stopped', by = s(op.by)})
    end
  end)
end

-- What the shadow decided beside the live plugin, for `tt shadow report`.
function OPS.shadow_record(op)
  later(function()
    call('XADD', key('shadow', s(op.by)), 'MAXLEN', '~', RULES.shadow_records, '*', 'msg', s(op.msg),
      'agree', op.agree and '1' or '0', 'live', s(op.live), 'shadow', s(op.shadow),
      'live_digest', s(op.live_digest), 'shadow_digest', s(op.shadow_digest), 'ts', NOW)
  end)
end

