// The HTTP API (docs/protocol.md), as the page uses it. Every call resolves
// to `{ok, status, body}`; a network failure is status 0 with a problem body,
// so callers handle one shape. A 401 asks for a token (auth.js) and tries
// again once it is given.

import { authHeaders, requireToken, token } from "./auth.js";

const BASE = "/api/v1";

async function call(method, path, body) {
  for (;;) {
    const sent = token();
    const reply = await attempt(method, path, body);
    if (reply.status !== 401) return reply;
    await requireToken(reply.body?.detail, sent);
  }
}

async function attempt(method, path, body) {
  const init = { method, headers: { accept: "application/json, application/problem+json", ...authHeaders() } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch (error) {
    return { ok: false, status: 0, body: { title: "Network error", detail: "the server cannot be reached" } };
  }
  let parsed = null;
  const text = await response.text();
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { title: response.statusText, detail: text.slice(0, 200) };
  }
  return { ok: response.ok, status: response.status, body: parsed };
}

export const api = {
  plugins: () => call("GET", "/plugins"),
  status: () => call("GET", "/status"),
  operation: (id) => call("GET", `/operations/${encodeURIComponent(id)}`),
  events: (id, since = 0) => call("GET", `/operations/${encodeURIComponent(id)}/events?since=${since}`),
  /** A page of operations, newest first; `query` holds status, type, target, cursor, limit. */
  list: (query) => {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) if (value) params.set(key, value);
    return call("GET", `/operations?${params}`);
  },
  start: (type, target, params) => call("POST", "/operations", { type, target, params }),
  notifications: (id) => call("GET", `/operations/${encodeURIComponent(id)}/notifications`),
  cancel: (id) => call("POST", `/operations/${encodeURIComponent(id)}/cancel`),
  /** Decides the approval gate a workflow run waits at: `decision` is "approve" or "reject". */
  decide: (id, decision, comment) =>
    call("POST", `/operations/${encodeURIComponent(id)}/${decision}`, comment ? { comment } : {}),
  /** Pauses (`true`) or resumes the queue (admins). */
  queue: (paused) => call("POST", `/queue/${paused ? "pause" : "resume"}`),
};

/** One sentence for a failed call. */
export function problemText(reply) {
  const body = reply.body ?? {};
  return body.detail || body.title || `HTTP ${reply.status}`;
}
