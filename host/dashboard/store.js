// The page's copy of the server's state. It changes only through `apply`
// (snapshots and events from the socket, in seq order) and `learn` (an
// operation an HTTP reply named before its event arrived). Views listen and
// redraw; nothing else writes here.

import { TERMINAL, ACTIVE } from "./format.js";

/** How many ended operations an `operations` snapshot carries at most (docs/protocol.md). */
const RECENT_TERMINAL = 100;
const TERMINAL_EVENTS = new Set(["operation.completed", "operation.failed", "operation.cancelled"]);

export class Store {
  constructor() {
    /** Operation id -> the latest operation object. */
    this.ops = new Map();
    /** The latest `system.status` figures, or null. */
    this.system = null;
    /** When `system` was last read (ms since the epoch). */
    this.systemAt = null;
    /** Whether ended operations older than the oldest held may exist on the server. */
    this.olderExist = false;
    /** `GET /plugins`, by name. */
    this.plugins = new Map();
    /** Who the page acts as (`GET /status`): `{name, role}`, or null until known. */
    this.caller = null;
    this.listeners = new Map();
  }

  /** Calls `fn(payload)` on every `name` change: ops, op-snapshot, event, terminal, system, plugins. */
  on(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(fn);
    return () => this.listeners.get(name).delete(fn);
  }

  emit(name, payload) {
    for (const fn of this.listeners.get(name) ?? []) fn(payload);
  }

  /** Applies one server message (docs/protocol.md). */
  apply(message) {
    if (message.type === "snapshot") this.applySnapshot(message);
    else if (message.type === "event") this.applyEvent(message);
  }

  applySnapshot(message) {
    if (message.topic === "system") {
      // null means no reading yet: keep what GET /status gave rather than blank the panel.
      if (message.status) this.setSystem(message.status);
      return;
    }
    if (message.topic === "operations" && message.reset) {
      // The server could not replay what we missed: what we hold may be
      // stale in ways no event will fix, so start over from the snapshot.
      this.ops = new Map();
      this.olderExist = false;
    }
    for (const op of message.operations ?? []) this.ops.set(op.id, op);
    if (message.topic === "operations") {
      // The snapshot holds up to RECENT_TERMINAL ended operations: fewer means that is all of them.
      const ended = (message.operations ?? []).filter((op) => TERMINAL.has(op.status)).length;
      this.olderExist = this.olderExist || ended >= RECENT_TERMINAL;
    }
    if (message.topic.startsWith("op:")) {
      this.emit("op-snapshot", { id: message.topic.slice(3), reset: message.reset, seq: message.seq });
    }
    this.emit("ops", { reset: message.reset });
  }

  applyEvent(message) {
    if (message.event === "system.status") {
      this.setSystem(message.status);
      return;
    }
    if (message.operation) {
      this.ops.set(message.operation.id, message.operation);
      this.emit("ops", {});
    }
    this.emit("event", message);
    if (TERMINAL_EVENTS.has(message.event)) this.emit("terminal", message);
  }

  setSystem(status) {
    this.system = status;
    this.systemAt = Date.now();
    this.emit("system", status);
  }

  /** An operation from an HTTP reply: kept only if the socket has not told us about it (its copy is newer). */
  learn(op) {
    if (!op || !op.id || this.ops.has(op.id)) return;
    this.ops.set(op.id, op);
    this.emit("ops", {});
  }

  setCaller(caller) {
    this.caller = caller;
    this.emit("caller", caller);
  }

  setPlugins(list) {
    this.plugins = new Map(list.map((p) => [p.name, p]));
    this.emit("plugins", list);
  }

  /** The pending or running operation of `type` on `target`, if any. */
  activeFor(type, target) {
    for (const op of this.ops.values()) {
      if (op.type === type && op.target === target && ACTIVE.has(op.status)) return op;
    }
    return null;
  }

  /** The steps (children) of workflow run `id`, oldest first. */
  childrenOf(id) {
    const out = [];
    for (const op of this.ops.values()) if (op.parent === id) out.push(op);
    return out.sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /** Active operations oldest first, then ended ones newest first, each filtered by `keep`. */
  sorted(keep = () => true) {
    const active = [];
    const ended = [];
    for (const op of this.ops.values()) {
      if (!keep(op)) continue;
      (TERMINAL.has(op.status) ? ended : active).push(op);
    }
    // ULIDs sort by creation time.
    active.sort((a, b) => (a.id < b.id ? -1 : 1));
    ended.sort((a, b) => (a.id < b.id ? 1 : -1));
    return { active, ended };
  }

  /** The oldest ended operation held: where "load older" continues from. */
  oldestEnded() {
    let oldest = null;
    for (const op of this.ops.values()) {
      if (TERMINAL.has(op.status) && (oldest === null || op.id < oldest)) oldest = op.id;
    }
    return oldest;
  }

  /** Every operation type seen or offered. */
  types() {
    const names = new Set(this.plugins.keys());
    for (const op of this.ops.values()) names.add(op.type);
    return [...names].sort();
  }
}
