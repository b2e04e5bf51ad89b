-- Access to the town over HTTP and MCP (`tt serve`, `tt mcp`): API keys and the audit trail.
--
-- A key is a field of the hash `apikeys`: id -> JSON {name, scope, hash, created}. Only the
-- argon2 hash of the secret is stored. Revoking deletes the field, so the next request with
-- that key is refused.

function OPS.key_add(op)
  local id = s(op.id)
  if call('HEXISTS', key('apikeys'), id) == 1 then
    fail('EXISTS', 'API key ' .. id .. ' already exists')
  end
  later(function()
    call('HSET', key('apikeys'), id, cjson.encode({name = s(op.name), scope = s(op.scope),
      hash = s(op.hash), created = tonumber(NOW)}))
    event({type = 'key-added', key = id, body = s(op.name) .. ' (' .. s(op.scope) .. ')', by = s(op.by)})
  end)
end

function OPS.key_revoke(op)
  local id = s(op.id)
  if call('HEXISTS', key('apikeys'), id) == 0 then
    fail('NOKEY', 'API key ' .. id .. ' not found')
  end
  later(function()
    call('HDEL', key('apikeys'), id)
    event({type = 'key-revoked', key = id, by = s(op.by)})
  end)
end

-- One request that tried to change the town, allowed or refused: who (the key's name), what
-- (method and path, or the MCP tool), from where (the peer address), and the answer's status.
function OPS.audit(op)
  later(function()
    event({type = 'audit', who = s(op.who), body = s(op.action), from = s(op.peer),
      status = s(op.status), by = s(op.by)})
  end)
end
