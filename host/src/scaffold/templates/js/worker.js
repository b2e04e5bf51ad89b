// {{name}}: a tinytown `worker` role, in JavaScript (componentize-js; world agent-exec).
//
// On a task-assign it runs config `program` with the task text on stdin, then asks config
// `reviewer` to review the output. On a verdict reject it runs again with the feedback appended.
// config: program (required), reviewer (required), args (whitespace-separated), timeout-ms.
//
// handle() *returns* actions; the host applies them atomically. exec is the one import that acts.
// A thrown { message, retryable } becomes the WIT `error`.
import { run } from 'tinytown:agent/exec@0.2.0';
import { getTask, selfName } from 'tinytown:agent/host@0.2.0';

function parseConfig(pairs) {
  const cfg = new Map(pairs.map(([k, v]) => [k, v.trim()]).filter(([, v]) => v)); // last wins
  for (const key of ['program', 'reviewer']) {
    if (!cfg.has(key)) throw { message: `worker needs config key \`${key}\``, retryable: false };
  }
  const timeout = cfg.get('timeout-ms');
  if (timeout !== undefined && !(/^[0-9]+$/.test(timeout) && Number(timeout) < 2 ** 32)) {
    throw { message: `config key \`timeout-ms\` must be a whole number, got \`${timeout}\``, retryable: false };
  }
  return {
    program: cfg.get('program'),
    reviewer: cfg.get('reviewer'),
    args: (cfg.get('args') ?? '').split(/\s+/).filter((a) => a),
    timeoutMs: timeout === undefined ? undefined : Number(timeout),
  };
}

let config = null; // set by init

export function init(pairs) {
  config = parseConfig(pairs);
}

function runAndRequestReview(taskId, stdin) {
  let out;
  try {
    out = run({ program: config.program, args: config.args, stdin, timeoutMs: config.timeoutMs });
  } catch (e) { // the program could not run at all: result::err
    const text = `worker ${selfName()} could not run \`${config.program}\`: ${e?.payload ?? e}`;
    return [
      { tag: 'fail', val: { taskId, text } },
      { tag: 'escalate', val: `${text} (task ${taskId})` },
    ];
  }
  const status = out.timedOut ? 'timed out' : (out.status ?? 'signal');
  return [{
    tag: 'request-review',
    val: { reviewer: config.reviewer, taskId, body: `exit ${status}\n${out.stdout}` },
  }];
}

export function handle(msg) {
  config ??= parseConfig([]); // a host that skipped init gets init's error
  const { tag, val } = msg.kind;
  const taskId = msg.taskId;
  if ((tag === 'task-assign' || tag === 'verdict') && taskId == null) {
    return [{ tag: 'log', val: ['warn', `message ${msg.id} has no task id; ignored`] }];
  }
  if (tag === 'task-assign') return runAndRequestReview(taskId, msg.body);
  if (tag === 'verdict') {
    if (val.tag !== 'reject') return [{ tag: 'log', val: ['info', `task ${taskId} approved`] }];
    const task = getTask(taskId);
    if (task == null) return [{ tag: 'log', val: ['warn', `rejected task ${taskId} is unknown`] }];
    return runAndRequestReview(taskId, `${task.description}\n\nReviewer feedback:\n${val.val}`);
  }
  return [];
}
