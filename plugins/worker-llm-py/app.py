# tinytown worker role that drafts with a model, in Python (componentize-py; world
# tinytown:agent/agent-llm).
#
# On a `task-assign` it asks the model (through the host's `llm` capability, alias config
# `model`) to do the task, and requests a review of the draft from config `reviewer`. On a
# `verdict(reject)` it drafts again with the reviewer's feedback. A model error that may pass
# (rate limited, provider unavailable, a day budget) fails the handling retryably, so the host
# retries the message later; one that will not (a task budget, a model not granted, a refused
# request) fails the task and escalates to the humans. It never asks for review of nothing.
#
# config: model (required), reviewer (required), max-tokens (whole number, optional),
#         instructions (optional, added to the system prompt).
import wit_world
from wit_world.imports import host, llm
from wit_world.imports.types import (
    Action_Escalate, Action_Fail, Action_Log, Action_RequestReview, Error, Kind_TaskAssign,
    Kind_Verdict, LogLevel, ReviewRequest, TaskOutcome, Verdict_Reject,
)
from componentize_py_types import Err

SYSTEM = ("You are a worker. Do the task you are given and answer with the finished work "
          "itself: no preamble, no questions.")


def parse_config(pairs):
    cfg = {k: v.strip() for k, v in pairs if v.strip()}  # the last value of a key wins
    for key, what in (("model", "the model alias it drafts with"),
                      ("reviewer", "the agent that reviews its work")):
        if key not in cfg:
            raise Err(Error(message=f"worker-llm needs config key `{key}` ({what})",
                            retryable=False))
    max_tokens = cfg.get("max-tokens")
    if max_tokens is not None and not (max_tokens.isascii() and max_tokens.isdigit()
                                       and int(max_tokens) < 2**32):
        raise Err(Error(message="worker-llm config key `max-tokens` must be a whole number, "
                                f"got `{max_tokens}`", retryable=False))
    return dict(model=cfg["model"], reviewer=cfg["reviewer"],
                max_tokens=int(max_tokens) if max_tokens else None,
                instructions=cfg.get("instructions"))


def message(role, content):
    return llm.ChatMessage(role=role, content=content, tool_calls=[], tool_call_id=None)


def draft(cfg, task_id, prompt):
    system = SYSTEM + ("\n\n" + cfg["instructions"] if cfg["instructions"] else "")
    req = llm.Request(
        model=cfg["model"],
        messages=[message(llm.Role.SYSTEM, system), message(llm.Role.USER, prompt)],
        tools=[], response_format=None,
        params=llm.Params(max_tokens=cfg["max_tokens"], temperature=None, stop=[]))
    try:
        resp = llm.chat(req)
    except Err as e:
        err = e.value
        why = f"worker {host.self_name()} could not draft task {task_id}: {err.message}"
        if err.retryable:
            raise Err(Error(message=why, retryable=True))
        return [Action_Fail(TaskOutcome(task_id=task_id, text=why)), Action_Escalate(why)]
    text = resp.text.strip()
    if not text:
        why = f"worker {host.self_name()}: the model drafted nothing for task {task_id}"
        return [Action_Fail(TaskOutcome(task_id=task_id, text=why)), Action_Escalate(why)]
    return [Action_RequestReview(ReviewRequest(reviewer=cfg["reviewer"], task_id=task_id,
                                               body=text))]


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
            return draft(cfg, task_id, msg.body)
        if isinstance(msg.kind, Kind_Verdict):
            if not isinstance(msg.kind.value, Verdict_Reject):
                return [Action_Log((LogLevel.INFO, f"task {task_id} approved"))]
            task = host.get_task(task_id)
            if task is None:
                return [Action_Log((LogLevel.WARN, f"rejected task {task_id} is unknown"))]
            return draft(cfg, task_id, f"{task.description}\n\nA reviewer rejected your last "
                                       f"draft:\n{msg.kind.value.value}\n\nDo the task again.")
        return []
