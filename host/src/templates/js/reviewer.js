// {{name}}: a tinytown `reviewer` role, in JavaScript (componentize-js; world agent-exec).
//
// On a review-request it runs config `program` with the work on stdin and approves only on
// exit 0. It fails closed: any other outcome rejects (with the check's output as feedback), and
// a check that cannot run or a request without a task id is escalated. It never approves by default.
// config: program (required), args (whitespace-separated), timeout-ms.
//
// handle() *returns* actions; the host applies them atomically. exec is the one import that acts.
// A thrown { message, retryable } becomes the WIT `error`.
import { run } from 'tinytown:agent/exec@0.1.0';
import { selfName } from 'tinytown:agent/host@0.1.0';

function parseConfig(pairs) {
  const cfg = new Map(pairs.map(([k, v]) => [k, v.trim()]).filter(([, v]) => v)); // last wins
  if (!cfg.has('program')) throw { message: 'reviewer needs config key `program`', retryable: false };
  const timeout = cfg.get('timeout-ms');
  if (timeout !== undefined && !(/^[0-9]+$/.test(timeout) && Number(timeout) < 2 ** 32)) {
    throw { message: `config key \`timeout-ms\` must be a whole number, got \`${timeout}\``, retryable: false };
  }
  return {
    program: cfg.get('program'),
    args: (cfg.get('args') ?? '').split(/\s+/).filter((a) => a),
    timeoutMs: timeout === undefined ? undefined : Number(timeout),
  };
}

let config = null; // set by init

export function init(pairs) {
  config = parseConfig(pairs);
}

// Runs the check: [approved, text, escalation or undefined]. Only a clean exit 0 approves.
function review(body) {
  if (body.trim() === '') return [false, 'nothing to review'];
  let out;
  try {
    out = run({ program: config.program, args: config.args, stdin: body, timeoutMs: config.timeoutMs });
  } catch (e) { // result::err: the check could not run
    const err = e?.payload ?? e;
    return [false, `check could not run: ${err}`, `reviewer ${selfName()} cannot run its check: ${err}`];
  }
  if (out.timedOut) return [false, 'check timed out'];
  if (out.status === 0) return [true, 'check passed'];
  if (out.status == null) return [false, 'check failed (killed by a signal)'];
  const detail = out.stderr.trim() || out.stdout.trim();
  return [false, `check failed (exit ${out.status})` + (detail ? `: ${detail}` : '')];
}

export function handle(msg) {
  config ??= parseConfig([]); // a host that skipped init gets init's error
  if (msg.kind.tag !== 'review-request') return [];
  if (msg.taskId == null) {
    return [{ tag: 'escalate', val: `review request from ${msg.sender} has no task id` }];
  }
  const [approved, text, escalation] = review(msg.body);
  const actions = [{ tag: approved ? 'approve' : 'reject', val: { taskId: msg.taskId, text } }];
  if (escalation !== undefined) actions.push({ tag: 'escalate', val: escalation });
  return actions;
}
