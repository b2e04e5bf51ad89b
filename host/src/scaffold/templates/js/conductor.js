// {{name}}: a tinytown `conductor` policy, in JavaScript (componentize-js; world agent).
//
// Whatever message wakes it, it hands backlog tasks (oldest first) to idle workers (role
// `worker`, no unfinished task, in name order), one task per worker.
// config: none (it accepts any table).
//
// handle() *returns* actions; the host applies them atomically. host answers read-only questions.
import { backlog, listAgents } from 'tinytown:agent/host@0.2.0';

export function init(_pairs) {}

export function handle(_msg) {
  const workers = listAgents('worker')
    .filter((w) => w.activeTasks === 0 && (w.state === 'idle' || w.state === 'working'))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const tasks = backlog();
  const actions = [];
  for (let i = 0; i < Math.min(workers.length, tasks.length); i++) {
    const [worker, task] = [workers[i], tasks[i]];
    actions.push({ tag: 'assign', val: { agent: worker.name, taskId: task.id, description: task.description } });
    actions.push({ tag: 'log', val: ['info', `assigned ${task.id} to ${worker.name}`] });
  }
  return actions;
}
