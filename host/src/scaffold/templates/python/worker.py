# {{name}}: a tinytown `worker` role, in Python (componentize-py; world agent-exec).
#
# On a task-assign it runs config `program` with the task text on stdin, then asks config
# `reviewer` to review the output. On a verdict reject it runs again with the feedback appended.
# config: program (required), reviewer (required), args (whitespace-separated), timeout-ms.
#
# handle() *returns* actions; the host applies them atomically. exec is the one import that acts.
import wit_world
from wit_world.imports import exec, host
from wit_world.imports.types import (
    Action_Escalate, Action_Fail, Action_Log, Action_RequestReview, Error, Kind_TaskAssign,
    Kind_Verdict, LogLevel, ReviewRequest, TaskOutcome, Verdict_Reject,
)
from componentize_py_types import Err


def parse_config(pairs):
    cfg = {k: v.strip() for k, v in pairs if v.strip()}  # the last value of a key wins
    for key in ("program", "reviewer"):
        if key not in cfg:
            raise Err(Error(message=f"worker needs config key `{key}`", retryable=False))
    timeout = cfg.get("timeout-ms")
    if timeout is not None and not (timeout.isascii() and timeout.isdigit() and int(timeout) < 2**32):
        raise Err(Error(message=f"config key `timeout-ms` must be a whole number, got `{timeout}`",
                        retryable=False))
    return dict(program=cfg["program"], reviewer=cfg["reviewer"], args=cfg.get("args", "").split(),
                timeout_ms=int(timeout) if timeout else None)


def run_and_request_review(cfg, task_id, stdin):
    cmd = exec.Command(program=cfg["program"], args=cfg["args"], stdin=stdin,
                       timeout_ms=cfg["timeout_ms"])
    try:
        out = exec.run(cmd)
    except Err as e:  # the program could not run at all
        text = f"worker {host.self_name()} could not run `{cfg['program']}`: {e.value}"
        return [Action_Fail(TaskOutcome(task_id=task_id, text=text)),
                Action_Escalate(f"{text} (task {task_id})")]
    status = "timed out" if out.timed_out else ("signal" if out.status is None else out.status)
    return [Action_RequestReview(ReviewRequest(reviewer=cfg["reviewer"], task_id=task_id,
                                               body=f"exit {status}\n{out.stdout}"))]


class WitWorld(wit_world.WitWorld):
    config = None

    def init(self, config):
        WitWorld.config = parse_config(config)

    def handle(self, msg):
        cfg = WitWorld.config or parse_config([])
        task_id = msg.task_id
        if isinstance(msg.kind, (Kind_TaskAssign, Kind_Verdict)) and task_id is None:
            return [Action_Log((LogLevel.WARN, f"message {msg.id} has no task id; ignored"))]
        if isinstance(msg.kind, Kind_TaskAssign):
            return run_and_request_review(cfg, task_id, msg.body)
        if isinstance(msg.kind, Kind_Verdict):
            if not isinstance(msg.kind.value, Verdict_Reject):
                return [Action_Log((LogLevel.INFO, f"task {task_id} approved"))]
            task = host.get_task(task_id)
            if task is None:
                return [Action_Log((LogLevel.WARN, f"rejected task {task_id} is unknown"))]
            feedback = msg.kind.value.value
            return run_and_request_review(
                cfg, task_id, f"{task.description}\n\nReviewer feedback:\n{feedback}")
        return []
