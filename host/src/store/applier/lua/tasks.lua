-- Tasks and the backlog: assignment, transitions, review and verdicts.

-- Create-and-assign (no `task`) or assign an existing task.
function OPS.assign(op)
  local who = canonical(s(op.agent) or '')
  need_agent(who)
  if who == 'conductor' then fail('RESERVED', 'tasks go to agents, not to the conductor mailbox') end
  local id = s(op.task)
  if id == nil then
    id = create_task(s(op.desc) or '', nil, s(op.by))
  else
    local t = need_task(id)
    authorise(op, s(op.by) == t.owner or role_of(s(op.by)) == 'conductor',
      'only the owner of task ' .. id .. ' (' .. (t.owner or 'none') ..
      ') or a conductor may reassign it')
  end
  hand_to(id, who, s(op.by) or 'conductor')
end

function OPS.backlog_add(op)
  local desc = s(op.desc) or ''
  local id = create_task(desc, s(op.tags), s(op.by))
  later(function() call('ZADD', key('backlog'), tonumber(string.sub(id, 2)), id) end)
  -- Conductor policies learn about new work without polling.
  for _, name in ipairs(call('SMEMBERS', key('agents'))) do
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
  if not call('ZSCORE', key('backlog'), id) or V.tasks[id].claimed then
    fail('NOTBACKLOG', 'task ' .. id .. ' is not in the backlog (already claimed or removed)')
  end
  V.tasks[id].claimed = true
  hand_to(id, canonical(s(op.agent)), s(op.by) or 'conductor')
end

function OPS.backlog_remove(op)
  local id = s(op.task)
  need_task(id)
  if not call('ZSCORE', key('backlog'), id) then
    fail('NOTBACKLOG', 'task ' .. id .. ' is not in the backlog')
  end
  move(id, 'cancelled', s(op.by), {result = 'removed from the backlog'})
  later(function() call('ZREM', key('backlog'), id) end)
end

-- complete / fail / cancel / running, checked against the legal moves.
function OPS.transition(op)
  local to = s(op.to)
  local fields = {}
  if s(op.text) then fields.result = s(op.text) end
  local id = s(op.task)
  local t = need_task(id)
  local by = s(op.by)
  local owner = by == t.owner
  if to == 'completed' and RULES.merger then
    -- A repository town: done means merged, and only the merge queue knows that.
    authorise(op, t.state == 'approved' and by == RULES.merger, 'task ' .. id ..
      ' completes when its change is merged: only ' .. RULES.merger ..
      ', the merger, may complete it, once it is approved ([repo])')
  elseif to == 'completed' then
    authorise(op, RULES.review ~= 'required',
      'task ' .. id .. ' must pass review: request-review it ([tasks] review = "required")')
    authorise(op, owner, 'only the owner of task ' .. id .. ' (' .. (t.owner or 'none') ..
      ') may complete it')
  elseif to == 'failed' and t.state == 'approved' then
    authorise(op, owner or by == RULES.merger, 'only the owner of task ' .. id ..
      ' or the merger may fail it')
  elseif to == 'cancelled' then
    authorise(op, owner or role_of(by) == 'conductor',
      'only the owner of task ' .. id .. ' or a conductor may cancel it')
  else
    authorise(op, owner, 'only the owner of task ' .. id .. ' (' .. (t.owner or 'none') ..
      ') may ' .. (to == 'failed' and 'fail' or 'move') .. ' it')
  end
  check_size('result', s(op.text))
  local owner_now = t.owner
  move(id, to, by, fields)
  if to == 'cancelled' then
    later(function() call('ZREM', key('backlog'), id) end)
    -- The owner hears of it (a repository worker removes the task's worktree), unless it
    -- cancelled the task itself or is gone.
    if present(owner_now) and owner_now ~= '' and owner_now ~= by and agent(owner_now) then
      local why = s(op.text)
      send({from = by or 'conductor', to = owner_now, kind = 'info', task = id,
        body = 'task ' .. id .. ' was cancelled by ' .. (by or 'conductor') ..
          (why and (': ' .. why) or '')})
    end
  end
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
  authorise(op, s(op.by) == t.owner, 'only the owner of task ' .. id .. ' (' ..
    (t.owner or 'none') .. ') may request its review')
  if reviewer == s(op.by) and not op.human then
    fail('FORBIDDEN', 'the owner of task ' .. id .. ' cannot review its own work')
  end
  move(id, 'in-review', s(op.by), {reviewer = reviewer})
  t.reviewer = reviewer
  send({from = s(op.by), to = reviewer, kind = 'review-request', body = s(op.body), task = id})
  return t
end

function OPS.verdict(op)
  local id = s(op.task)
  local t = need_task(id)
  local text = s(op.text) or ''
  local owner = t.owner or 'conductor'
  local by = s(op.by)
  local verb = op.approve and 'approve' or 'reject'
  if t.state == 'approved' then
    -- In the merge queue: the merger sends it back (a conflict, a failing merged check); it
    -- completes an approved task with `complete`, never with a second approval.
    authorise(op, by == RULES.merger and not op.approve, 'task ' .. id ..
      ' is approved and waits in the merge queue: only ' .. (RULES.merger or 'the merger') ..
      ' may send it back (reject) or complete it')
  elseif present(t.reviewer) and t.reviewer ~= '' then
    authorise(op, by == t.reviewer, 'only ' .. t.reviewer .. ', the reviewer task ' .. id ..
      ' was sent to, may ' .. verb .. ' it')
  else
    authorise(op, role_of(by) == 'reviewer', 'only a reviewer may ' .. verb .. ' task ' .. id)
  end
  if op.approve and RULES.merger then
    move(id, 'approved', by, {result = text})
    send({from = by, to = RULES.merger, kind = 'verdict:approve', body = text, task = id})
  elseif op.approve then
    move(id, 'completed', s(op.by), {result = text})
    send({from = s(op.by), to = owner, kind = 'verdict:approve', body = text, task = id})
  else
    move(id, 'rejected', s(op.by), {result = text})
    move(id, 'assigned', s(op.by), {})
    later(function() call('HINCRBY', key('task', id), 'rejections', 1) end)
    send({from = s(op.by), to = owner, kind = 'verdict:reject', body = text, task = id})
  end
end

