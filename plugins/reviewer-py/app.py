# tinytown reviewer role, in Python (componentize-py; world tinytown:agent/agent-exec).
#
# On a `review-request` it runs the configured check program (via the `exec` capability) with
# the request body on stdin, and returns approve/reject for the task, optionally an `info`
# note to the `notify` agent, and an escalation when the check cannot run at all.
# Same semantics and texts as the Rust reviewer (a conformance suite compares them).
#
# config: program (required), args (whitespace-separated, `{task}` -> task id),
#         notify (agent name), timeout-ms (integer, passed to exec).
import wit_world
from wit_world.imports import exec, host
from wit_world.imports.types import (
    Action_Approve, Action_Escalate, Action_Reject, Action_Send, Error, Kind_Info,
    Kind_ReviewRequest, Outgoing, Priority, TaskOutcome,
)
from componentize_py_types import Err

# Whitespace as Rust's str::trim / split_whitespace see it (Unicode White_Space), so that texts
# match the Rust reviewer byte for byte. Python's own str.strip()/split() use a different set.
WS = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
MISSING_PROGRAM = "reviewer needs config key `program` (the check to run for a review)"


def trim(s):
    return s.strip(WS)


def split_ws(s):
    for c in WS:
        s = s.replace(c, " ")
    return [a for a in s.split(" ") if a]


def config_error(message):
    return Err(Error(message=message, retryable=False))


def parse_config(pairs):
    """(program, args, notify, timeout_ms); raises Err like the Rust reviewer's parse_config."""
    cfg = {}
    for k, v in pairs:  # a repeated key: the last one wins; blank values count as absent
        cfg[k] = trim(v)
    get = lambda key: cfg.get(key) or None
    program = get("program")
    if program is None:
        raise config_error(MISSING_PROGRAM)
    timeout_ms = get("timeout-ms")
    if timeout_ms is not None:
        digits = timeout_ms[1:] if timeout_ms.startswith("+") else timeout_ms  # like u32::from_str
        if not (digits and all("0" <= c <= "9" for c in digits) and int(digits) <= 0xFFFFFFFF):
            raise config_error("reviewer config key `timeout-ms` must be a whole number of "
                               f"milliseconds, got `{timeout_ms}`")
        timeout_ms = int(digits)
    return program, split_ws(get("args") or ""), get("notify"), timeout_ms


class WitWorld(wit_world.WitWorld):
    config = None  # (program, args, notify, timeout_ms) once init succeeded

    def init(self, config):
        WitWorld.config = parse_config(config)

    def handle(self, msg):
        # A host that skipped `init` gets the error `init` would have given.
        program, args, notify, timeout_ms = WitWorld.config or parse_config([])
        if not isinstance(msg.kind, Kind_ReviewRequest):
            return []
        task = msg.task_id
        if task is None:
            return [Action_Escalate(f"review request from {msg.sender} has no task id")]

        escalation = None
        approved = False
        if not trim(msg.body):
            text = "nothing to review"
        else:
            cmd = exec.Command(program=program, args=[a.replace("{task}", task) for a in args],
                               stdin=msg.body, timeout_ms=timeout_ms)
            try:
                out = exec.run(cmd)
            except Err as e:
                text = f"check could not run: {e.value}"
                escalation = f"reviewer {host.self_name()} cannot run its check: {e.value}"
            else:
                if out.timed_out:
                    text = "check timed out"
                elif out.status == 0:
                    approved, text = True, "check passed"
                elif out.status is not None:
                    text = f"check failed (exit {out.status})"
                    detail = trim(out.stderr) or trim(out.stdout)
                    if detail:
                        text += ": " + detail
                else:
                    text = "check failed (killed by a signal)"

        outcome = TaskOutcome(task_id=task, text=text)
        actions = [Action_Approve(outcome) if approved else Action_Reject(outcome)]
        if notify is not None:
            word = "approved" if approved else "rejected"
            actions.append(Action_Send(Outgoing(
                to=notify, kind=Kind_Info(), body=f"{word} {task}: {text}", priority=Priority.NORMAL,
                task_id=task, correlation_id=msg.id)))
        if escalation is not None:
            actions.append(Action_Escalate(escalation))
        return actions
