# {{name}}: a tinytown `conductor` policy, in Python (componentize-py; world agent).
#
# Whatever message wakes it, it hands backlog tasks (oldest first) to idle workers (role
# `worker`, no unfinished task, in name order), one task per worker.
# config: none (it accepts any table).
#
# handle() *returns* actions; the host applies them atomically. host answers read-only questions.
import wit_world
from wit_world.imports import host
from wit_world.imports.types import Action_Assign, Action_Log, Assignment, LogLevel


class WitWorld(wit_world.WitWorld):
    def init(self, config):
        pass

    def handle(self, msg):
        workers = sorted((w for w in host.list_agents("worker")
                          if w.active_tasks == 0 and w.state in ("idle", "working")),
                         key=lambda w: w.name)
        actions = []
        for worker, task in zip(workers, host.backlog()):
            actions.append(Action_Assign(Assignment(agent=worker.name, task_id=task.id,
                                                    description=task.description)))
            actions.append(Action_Log((LogLevel.INFO, f"assigned {task.id} to {worker.name}")))
        return actions
