// How values read on screen: statuses, durations, times, sizes.

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);
export const ACTIVE = new Set(["pending", "running", "waiting"]);

export const STATUS_LABEL = {
  pending: "Pending",
  running: "Running",
  waiting: "Waiting",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

/** Milliseconds since the epoch, or null. */
export function ms(timestamp) {
  if (!timestamp) return null;
  const t = Date.parse(timestamp);
  return Number.isNaN(t) ? null : t;
}

/** How long an operation has run (or ran, or has waited, while pending). */
export function elapsedMs(op, now = Date.now()) {
  const created = ms(op.created_at);
  const started = ms(op.started_at);
  const finished = ms(op.finished_at);
  if (finished !== null) return finished - (started ?? created ?? finished);
  if (started !== null) return Math.max(0, now - started);
  if (created !== null) return Math.max(0, now - created);
  return null;
}

/** `850 ms`, `4.2 s`, `1 m 05 s`, `2 h 03 m`. */
export function duration(millis) {
  if (millis === null || millis === undefined) return "–";
  if (millis < 1000) return `${Math.round(millis)} ms`;
  const s = millis / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const total = Math.floor(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (h > 0) return `${h} h ${String(m).padStart(2, "0")} m`;
  return `${m} m ${String(sec).padStart(2, "0")} s`;
}

/** What the elapsed column says for `op`. */
export function elapsedLabel(op, now = Date.now()) {
  const d = duration(elapsedMs(op, now));
  return op.status === "pending" ? `waiting ${d}` : d;
}

/** Local wall-clock time, `14:03:22`; with `millis`, `14:03:22.051`. */
export function clock(timestamp, millis = false) {
  const t = ms(timestamp);
  if (t === null) return "–";
  const d = new Date(t);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const base = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return millis ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
}

/** Local date and time, `2026-11-22 14:03:22`. */
export function dateTime(timestamp) {
  const t = ms(timestamp);
  if (t === null) return "–";
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(timestamp)}`;
}

/** `1.5 GiB`. */
export function bytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** What a start button says while an operation of its type runs on its target. */
export function busyLabel(op) {
  if (op.status === "pending") return "Queued…";
  return op.progress > 0 ? `Processing (${op.progress}%)` : "Processing…";
}

/** `demo on srv-1`. */
export function opTitle(op) {
  return `${op.type} on ${op.target}`;
}

/** The roles, lowest first: each may do what the ones before it may. */
const ROLES = ["viewer", "operator", "admin"];

/** Whether `role` is `needed` or above it. */
export function holds(role, needed) {
  return ROLES.indexOf(role) >= 0 && ROLES.indexOf(role) >= ROLES.indexOf(needed);
}
