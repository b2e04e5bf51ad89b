// The townhall dashboard: plain JS over the REST API and the live event stream.
// The key lives in sessionStorage (or comes in the URL fragment #key=..., never sent to a
// server); every request sends it as a bearer token. Live updates come from /v1/events (SSE,
// read with fetch so the key can go in a header); each event also refreshes the panels it
// touches. Nothing is polled.
"use strict";
const $ = (s) => document.querySelector(s);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k ?? "")));
  return e;
};
const fragKey = new URLSearchParams(location.hash.slice(1)).get("key");
if (fragKey) { sessionStorage.setItem("tt-key", fragKey); history.replaceState(null, "", location.pathname); }
let key = sessionStorage.getItem("tt-key") || "";
let lastId = null;
let streamAbort = null;

function showError(text) { const e = $("#error"); e.textContent = text; e.hidden = !text; }

async function api(method, path, body) {
  const r = await fetch(path, {
    method, headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    const msg = data && data.detail ? `${data.status} ${data.detail}` + (data.hint ? ` (${data.hint})` : "") : `${r.status}`;
    throw new Error(msg);
  }
  return data;
}

async function act(method, path, body) {
  try { await api(method, path, body); showError(""); await refresh(); }
  catch (e) { showError(e.message); }
}

function short(d) { return d ? d.slice(0, 12) : "-"; }

function renderAgents(status) {
  const hostOf = {};
  for (const h of status.hosts || []) for (const a of Object.keys(h.agents || {})) hostOf[a] = h.name;
  const body = $("#agents tbody"); body.replaceChildren();
  for (const a of status.agents) {
    body.append(el("tr", { "data-agent": a.name },
      el("td", {}, a.name), el("td", {}, a.state), el("td", {}, a.role),
      el("td", { class: "mono", title: a.plugin || "" }, short(a.digest)),
      el("td", {}, hostOf[a.name] || "-"),
      el("td", { class: "num" }, a.waiting), el("td", { class: "num" }, a.in_flight),
      el("td", { class: "num" }, a.active_tasks)));
  }
}

const STATES = ["pending", "assigned", "running", "in-review", "rejected", "completed", "failed", "cancelled"];
function renderBoard(tasks) {
  const board = $("#board"); board.replaceChildren();
  for (const s of STATES) {
    const col = el("div", { class: "column", "data-state": s }, el("h3", {}, s));
    for (const t of tasks.filter((t) => t.state === s)) {
      col.append(el("div", { class: "card", "data-task": t.id, onclick: () => showHistory(t) },
        el("b", {}, t.id), " ", t.owner || "", el("br"), t.description.split("\n")[0]));
    }
    board.append(col);
  }
}

async function showHistory(t) {
  const events = await api("GET", "/v1/events/recent?n=5000");
  const h = $("#history"); h.hidden = false;
  const steps = events.filter((e) => e.type === "task" && e.task === t.id)
    .map((e) => el("li", {}, `${time(e.ts)}  ${e.from || "new"} → ${e.to}  by ${e.by || "?"}`));
  h.replaceChildren(el("b", {}, `${t.id}: ${t.description}`), el("ul", {}, ...steps),
    t.result ? el("p", {}, "result: " + t.result) : "");
}

function renderDlq(letters) {
  const ul = $("#dlq"); ul.replaceChildren();
  if (!letters.length) ul.append(el("li", {}, "none"));
  for (const l of letters) {
    ul.append(el("li", { "data-dlq": l.id }, el("code", {}, l.id), ` ${l.agent || ""}: ${l.reason || ""} `,
      el("button", { class: "retry", onclick: () => act("POST", `/v1/dlq/${l.id}/retry`) }, "retry"), " ",
      el("button", { class: "drop", onclick: () => act("DELETE", `/v1/dlq/${l.id}`) }, "drop")));
  }
}

function renderInbox(inbox) {
  const ul = $("#inbox"); ul.replaceChildren();
  const items = [...inbox.waiting, ...inbox.delivered].filter((i) => i.message);
  if (!items.length) ul.append(el("li", {}, "empty"));
  for (const i of items) {
    const m = i.message;
    const input = el("input", { placeholder: `reply to ${m.from}`, size: 24 });
    const form = el("form", { onsubmit: (ev) => { ev.preventDefault(); act("POST", "/v1/mail", { to: m.from, body: input.value, kind: "info" }); } },
      input, el("button", {}, "reply"));
    ul.append(el("li", {}, el("b", {}, m.from), ` ${m.kind}: ${m.body} `, m.from === "conductor" ? "" : form));
  }
}

async function renderSwaps(swaps, agents) {
  const ul = $("#swaps"); ul.replaceChildren();
  if (!swaps.length) ul.append(el("li", {}, "no swaps yet"));
  for (const s of swaps) ul.append(el("li", {}, `${time(s.ts)} ${s.type} ${s.agent} → ${s.plugin || s.to || ""} ${short(s.digest)}`));
  const box = $("#shadows"); box.replaceChildren();
  for (const a of agents.filter((a) => a.shadow)) {
    const r = await api("GET", `/v1/agents/${a.name}/shadow`);
    box.append(el("p", {}, `${a.name}: shadow ${r.shadow} agreed ${r.agreed} of ${r.compared}`));
  }
}

function time(ts) { const d = new Date(Number(ts)); return isNaN(d) ? "" : d.toISOString().slice(11, 23); }

function describe(e) {
  switch (e.type) {
    case "sent": return `${e.from} → ${e.to} ${e.kind}: ${e.body || ""}`;
    case "task": return `task ${e.task} ${e.from || "new"} → ${e.to} by ${e.by}`;
    case "handled": return `${e.agent} handled ${e.msg}`;
    case "dead-letter": return `${e.agent} DEAD LETTER ${e.msg}: ${e.body}`;
    case "audit": return `audit ${e.who} ${e.body} → ${e.status}`;
    default: return `${e.type} ${e.agent || ""} ${e.body || e.to || ""}`;
  }
}

function addEvent(e, fresh) {
  const feed = $("#feed");
  const li = el("li", { "data-id": e.id }, `${time(e.ts)}  ${describe(e)}`);
  feed.prepend(li);
  if (fresh) { li.classList.add("fresh"); setTimeout(() => li.classList.remove("fresh"), 2000); }
  while (feed.children.length > 300) feed.lastChild.remove();
}

let refreshing = null;
async function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    try {
      const [status, tasks, dlq, inbox, swaps] = await Promise.all([
        api("GET", "/v1/status?events=0"), api("GET", "/v1/tasks"), api("GET", "/v1/dlq"),
        api("GET", "/v1/inbox/conductor"), api("GET", "/v1/swaps")]);
      $("#town").textContent = status.town;
      renderAgents(status); renderBoard(tasks); renderDlq(dlq); renderInbox(inbox);
      await renderSwaps(swaps, status.agents);
    } catch (e) { showError(e.message); }
    finally { refreshing = null; }
  })();
  return refreshing;
}

let refreshTimer = null;
function refreshSoon() { clearTimeout(refreshTimer); refreshTimer = setTimeout(refresh, 100); }

// Server-sent events over fetch: parse `id:` and `data:` lines; reconnect from the last id.
async function follow() {
  if (streamAbort) streamAbort.abort();
  streamAbort = new AbortController();
  const headers = { "Authorization": "Bearer " + key, "Accept": "text/event-stream" };
  if (lastId) headers["Last-Event-ID"] = lastId;
  try {
    const r = await fetch("/v1/events", { headers, signal: streamAbort.signal });
    if (!r.ok) throw new Error(`events: ${r.status}`);
    $("#conn").className = "pill on"; $("#conn").textContent = "live";
    const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
        let id = null, data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("id:")) id = line.slice(3).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (!data) continue;
        if (id) lastId = id;
        addEvent(JSON.parse(data), true); refreshSoon();
      }
    }
  } catch (e) { if (e.name === "AbortError") return; showError(e.message); }
  $("#conn").className = "pill off"; $("#conn").textContent = "reconnecting";
  setTimeout(follow, 1000);
}

async function start() {
  if (!key) { showError("paste an API key to see the town"); return; }
  try {
    const recent = await api("GET", "/v1/events/recent?n=50");
    $("#feed").replaceChildren();
    for (const e of recent) addEvent(e);
    if (recent.length) lastId = recent[recent.length - 1].id;
    showError("");
  } catch (e) { showError(e.message); return; }
  await refresh();
  follow();
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault(); key = $("#key").value.trim(); sessionStorage.setItem("tt-key", key); $("#key").value = ""; start();
});
start();
