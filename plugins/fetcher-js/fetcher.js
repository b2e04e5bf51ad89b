// tinytown role that calls an HTTP API with `fetch`, in JavaScript (componentize-js; world
// tinytown:agent/agent, plus the standard wasi:http/outgoing-handler that `fetch` imports).
//
// The host links wasi:http only for agents with an `[agents.NAME.http]` grant, and sends a
// request only when its origin is on the grant's allow-list (see the README's http section).
//
// On a `task-assign` it GETs `api` + the task's description (a path such as `/weather/oslo`)
// and completes the task with `HTTP <status>: <body>` (the body cut at 500 characters), or
// fails it with the reason when the request cannot be made. On a plain `task` message it
// answers the sender with an `info` instead.
//
// config: api (required: the base URL, e.g. `https://api.example.com`).
let api = null;

export function init(pairs) {
  const cfg = new Map(pairs);
  api = (cfg.get('api') || '').trim();
  if (api === '') throw { message: 'fetcher needs config key `api` (the base URL to call)', retryable: false };
}

// GETs `path` (relative to `api`, or a whole URL), following up to 5 redirects itself (this
// runtime's fetch returns a 3xx as it is). Each hop is a new request the host checks again, so
// a redirect cannot lead the role past its allow-list.
async function call(path) {
  let url = /^https?:\/\//.test(path) ? path : api.replace(/\/$/, '') + '/' + path.replace(/^\//, '');
  try {
    for (let hop = 0; hop <= 5; hop++) {
      const res = await fetch(url);
      const next = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && next) {
        url = new URL(next, url).toString();
        continue;
      }
      const text = await res.text();
      return [true, `HTTP ${res.status}: ${text.slice(0, 500)}`];
    }
    return [false, `GET ${path}: too many redirects`];
  } catch (e) {
    return [false, `GET ${url} failed: ${e && e.message ? e.message : e}`];
  }
}

export async function handle(msg) {
  const path = msg.body.trim();
  if (msg.kind.tag === 'task-assign' && msg.taskId) {
    const [ok, text] = await call(path);
    return [{ tag: ok ? 'complete' : 'fail', val: { taskId: msg.taskId, text } }];
  }
  if (msg.kind.tag === 'task') {
    const [, text] = await call(path);
    return [{
      tag: 'send',
      val: { to: msg.sender, kind: { tag: 'info' }, body: text, priority: 'normal', correlationId: msg.id },
    }];
  }
  return [];
}
