// tinytown reviewer role, in JavaScript (componentize-js; world tinytown:agent/agent-exec).
//
// On a `review-request` it runs the configured check program (via the `exec` capability) with
// the request body on stdin, and returns approve/reject for the task, optionally an `info`
// note to the `notify` agent, and an escalation when the check cannot run at all.
// Same semantics and texts as the Rust reviewer (a conformance suite compares them).
//
// config: program (required), args (whitespace-separated, `{task}` -> task id),
//         notify (agent name), timeout-ms (integer, passed to exec).
import { run } from 'tinytown:agent/exec@0.2.0';
import { selfName } from 'tinytown:agent/host@0.2.0';

const MISSING_PROGRAM = 'reviewer needs config key `program` (the check to run for a review)';
// Whitespace as Rust's str::trim / split_whitespace see it (Unicode White_Space), so that texts
// match the Rust reviewer byte for byte. JS's own trim() and \s use a different set.
const WS = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/.source;
const trim = (s) => s.replace(new RegExp(`^${WS}|${WS}$`, 'g'), '');
const splitWs = (s) => s.split(new RegExp(WS)).filter((a) => a !== '');
const configError = (message) => ({ message, retryable: false }); // thrown => result::err

// Like the Rust reviewer's parse_config: { program, args, notify, timeoutMs }, or throws.
function parseConfig(pairs) {
  const cfg = new Map(pairs.map(([k, v]) => [k, trim(v)])); // the last of a repeated key wins
  const get = (key) => cfg.get(key) || undefined; // blank counts as absent
  const program = get('program');
  if (program === undefined) throw configError(MISSING_PROGRAM);
  let timeoutMs = get('timeout-ms');
  if (timeoutMs !== undefined) {
    const digits = timeoutMs.startsWith('+') ? timeoutMs.slice(1) : timeoutMs; // like u32::from_str
    if (!/^[0-9]+$/.test(digits) || Number(digits) > 0xffffffff) {
      throw configError(`reviewer config key \`timeout-ms\` must be a whole number of milliseconds, got \`${timeoutMs}\``);
    }
    timeoutMs = Number(digits);
  }
  return { program, args: splitWs(get('args') ?? ''), notify: get('notify'), timeoutMs };
}

let config = null; // set by init

export function init(pairs) {
  config = parseConfig(pairs);
}

// Runs the check; returns [approved, text, escalation or undefined].
function review(task, body) {
  if (trim(body) === '') return [false, 'nothing to review'];
  let out;
  try {
    out = run({
      program: config.program,
      args: config.args.map((a) => a.split('{task}').join(task)),
      stdin: body,
      timeoutMs: config.timeoutMs,
    });
  } catch (e) {
    const err = e && typeof e === 'object' && 'payload' in e ? e.payload : e; // result::err
    return [false, `check could not run: ${err}`, `reviewer ${selfName()} cannot run its check: ${err}`];
  }
  if (out.timedOut) return [false, 'check timed out'];
  if (out.status === 0) return [true, 'check passed'];
  if (out.status === undefined || out.status === null) return [false, 'check failed (killed by a signal)'];
  const detail = trim(out.stderr) || trim(out.stdout);
  return [false, `check failed (exit ${out.status})` + (detail ? `: ${detail}` : '')];
}

export function handle(msg) {
  config ??= parseConfig([]); // a host that skipped `init` gets the error `init` would have given
  if (msg.kind.tag !== 'review-request') return [];
  const task = msg.taskId;
  if (task === undefined || task === null) {
    return [{ tag: 'escalate', val: `review request from ${msg.sender} has no task id` }];
  }
  const [approved, text, escalation] = review(task, msg.body);
  const actions = [{ tag: approved ? 'approve' : 'reject', val: { taskId: task, text } }];
  if (config.notify !== undefined) {
    actions.push({
      tag: 'send',
      val: {
        to: config.notify,
        kind: { tag: 'info' },
        body: `${approved ? 'approved' : 'rejected'} ${task}: ${text}`,
        priority: 'normal',
        taskId: task,
        correlationId: msg.id,
      },
    });
  }
  if (escalation !== undefined) actions.push({ tag: 'escalate', val: escalation });
  return actions;
}
