# {{name}}: a tinytown `reviewer` role, in Python (componentize-py; world agent-exec).
#
# On a review-request it runs config `program` with the work on stdin and approves only on
# exit 0. It fails closed: any other outcome rejects (with the check's output as feedback), and
# a check that cannot run or a request without a task id is escalated. It never approves by default.
# config: program (required), args (whitespace-separated), timeout-ms.
#
# handle() *returns* actions; the host applies them atomically. exec is the one import that acts.
import wit_world
from wit_world.imports import exec, host
from wit_world.imports.types import (
    Action_Approve, Action_Escalate, Action_Reject, Error, Kind_ReviewRequest, TaskOutcome,
)
from componentize_py_types import Err


def parse_config(pairs):
    cfg = {k: v.strip() for k, v in pairs if v.strip()}  # the last value of a key wins
    if "program" not in cfg:
        raise Err(Error(message="reviewer needs config key `program`", retryable=False))
    timeout = cfg.get("timeout-ms")
    if timeout is not None and not (timeout.isascii() and timeout.isdigit() and int(timeout) < 2**32):
        raise Err(Error(message=f"config key `timeout-ms` must be a whole number, got `{timeout}`",
                        retryable=False))
    return dict(program=cfg["program"], args=cfg.get("args", "").split(),
                timeout_ms=int(timeout) if timeout else None)


def review(cfg, body):
    """(approved, text, escalation or None). Only a clean exit 0 approves."""
    if not body.strip():
        return False, "nothing to review", None
    cmd = exec.Command(program=cfg["program"], args=cfg["args"], stdin=body,
                       timeout_ms=cfg["timeout_ms"])
    try:
        out = exec.run(cmd)
    except Err as e:
        return (False, f"check could not run: {e.value}",
                f"reviewer {host.self_name()} cannot run its check: {e.value}")
    if out.timed_out:
        return False, "check timed out", None
    if out.status == 0:
        return True, "check passed", None
    if out.status is None:
        return False, "check failed (killed by a signal)", None
    detail = out.stderr.strip() or out.stdout.strip()
    return False, f"check failed (exit {out.status})" + (f": {detail}" if detail else ""), None


class WitWorld(wit_world.WitWorld):
    config = None

    def init(self, config):
        WitWorld.config = parse_config(config)

    def handle(self, msg):
        cfg = WitWorld.config or parse_config([])
        if not isinstance(msg.kind, Kind_ReviewRequest):
            return []
        if msg.task_id is None:
            return [Action_Escalate(f"review request from {msg.sender} has no task id")]
        approved, text, escalation = review(cfg, msg.body)
        outcome = TaskOutcome(task_id=msg.task_id, text=text)
        actions = [Action_Approve(outcome) if approved else Action_Reject(outcome)]
        if escalation is not None:
            actions.append(Action_Escalate(escalation))
        return actions
