// The system panel: the server's figures from the `system` topic (sent only
// when they change), plus version and uptime from `GET /status`, read again
// on every (re)connect since a reconnect may be to a restarted server.

import { api } from "./api.js";
import { h, byId, setText } from "./dom.js";
import { bytes, clock, duration } from "./format.js";

const FIGURES = [
  ["active_operations", "Running", String],
  ["queued_operations", "Queued", String],
  ["connected_clients", "Dashboards and clients", String],
  ["plugins", "Plugins", String],
  ["storage_bytes", "Storage", bytes],
  ["disk_free_bytes", "Disk free", bytes],
];

export class SystemPanel {
  constructor(store) {
    this.store = store;
    this.box = byId("system-figures");
    this.updated = byId("system-updated");
    this.values = {};
    /** Version and when the server started (client clock), from `GET /status`. */
    this.server = null;
    const item = (name, label) =>
      h("div", { class: "figure" }, h("dt", {}, label), (this.values[name] = h("dd", { "data-figure": name }, "–")));
    this.box.replaceChildren(
      ...FIGURES.map(([name, label]) => item(name, label)),
      item("storage_state", "Disk"),
      item("version", "Server version"),
      item("uptime", "Uptime"),
    );
    store.on("system", () => this.render());
  }

  async refreshServer() {
    const reply = await api.status();
    if (!reply.ok) return;
    this.server = { version: reply.body.version, startedAt: Date.now() - reply.body.uptime_seconds * 1000 };
    this.store.setCaller({ name: reply.body.caller, role: reply.body.role });
    // Until the first system.status event, the HTTP figures are the best we have.
    if (!this.store.system) this.store.setSystem(reply.body);
    this.render();
  }

  render() {
    const status = this.store.system;
    for (const [name, , format] of FIGURES) {
      setText(this.values[name], status && typeof status[name] === "number" ? format(status[name]) : "–");
    }
    // Below the free-space floor the server refuses new operations (507);
    // while writes fail it refuses them with 503 until the store recovers.
    const state = status?.storage;
    const text = {
      low_space: "Low on space: new operations refused",
      failed: `Storage failed: new operations refused until it recovers (${status?.storage_error ?? "no reason given"})`,
      ok: "OK",
    };
    setText(this.values.storage_state, !state ? "–" : (text[state] ?? state));
    this.values.storage_state.classList.toggle("warning", state === "low_space" || state === "failed");
    setText(this.values.version, this.server?.version ?? document.querySelector('meta[name="opal-version"]')?.content);
    this.tick();
    setText(this.updated, this.store.systemAt ? `Updated ${clock(new Date(this.store.systemAt).toISOString())}` : "");
  }

  tick(now = Date.now()) {
    setText(this.values.uptime, this.server ? duration(now - this.server.startedAt) : "–");
  }
}
