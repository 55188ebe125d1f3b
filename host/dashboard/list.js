// The operations view: active operations (oldest first), then history
// (newest first), filtered by status, type and target. Rows are keyed by
// operation id and updated in place, so a live update never rebuilds the
// table under the user's focus; a row moves only when its group or order
// changes.

import { api, problemText } from "./api.js";
import { cancelling, confirmCancel } from "./cancel.js";
import { h, byId, setText, setAttr } from "./dom.js";
import { ACTIVE, STATUS_LABEL, elapsedLabel, opTitle, TERMINAL } from "./format.js";
import { RunSteps, isRun } from "./runs.js";
import { toast } from "./toasts.js";

const PAGE = 50;

export class OperationsList {
  constructor(store) {
    this.store = store;
    this.rows = new Map();
    /** Ids of the runs whose steps are shown. */
    this.expanded = new Set();
    this.filters = { status: byId("filter-status"), type: byId("filter-type"), target: byId("filter-target") };
    this.active = this.table(byId("active-list"), "Active operations");
    this.history = this.table(byId("history-list"), "Operation history");
    this.older = byId("load-older");
    for (const control of Object.values(this.filters)) control.addEventListener("input", () => this.render());
    byId("filters").addEventListener("submit", (e) => e.preventDefault());
    this.older.addEventListener("click", () => this.loadOlder());
  }

  table(box, caption) {
    const body = h("tbody");
    const empty = h("p", { class: "empty" });
    const head = h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Operation", "Status", "Progress", "Elapsed", "Started by"].map((t) => h("th", { scope: "col" }, t)),
        h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")),
      ),
    );
    const table = h("table", { class: "ops" }, h("caption", { class: "visually-hidden" }, caption), head, body);
    box.replaceChildren(table, empty);
    return { table, body, empty };
  }

  /** The filter as a predicate. */
  keep() {
    const status = this.filters.status.value;
    const type = this.filters.type.value;
    const target = this.filters.target.value.trim().toLowerCase();
    // A workflow's steps show inside its run's row, not as rows of their own.
    return (op) =>
      !op.parent &&
      (!status || op.status === status) &&
      (!type || op.type === type) &&
      (!target || op.target.toLowerCase().includes(target));
  }

  render(now = Date.now()) {
    this.syncTypeFilter();
    const { active, ended } = this.store.sorted(this.keep());
    const filtered = Boolean(this.filters.status.value || this.filters.type.value || this.filters.target.value.trim());
    this.fill(this.active, active, filtered ? "No active operation matches the filters." : "No active operations.", now);
    this.fill(this.history, ended, filtered ? "No ended operation matches the filters." : "Nothing has run yet.", now);
    setText(byId("active-count"), active.length);
    setText(byId("history-count"), ended.length);
    this.older.hidden = !this.store.olderExist || this.store.oldestEnded() === null;
    // Rows of operations the store no longer holds (after a reset) go.
    for (const [id, row] of this.rows) {
      if (!this.store.ops.has(id) || !row.tr.isConnected) {
        row.tr.remove();
        row.sub?.remove();
        this.rows.delete(id);
      }
    }
  }

  fill(group, ops, emptyText, now) {
    group.table.hidden = ops.length === 0;
    group.empty.hidden = ops.length > 0;
    setText(group.empty, emptyText);
    const wanted = new Set();
    for (const op of ops) {
      wanted.add(this.row(op).tr);
      if (this.expanded.has(op.id) && this.rows.get(op.id).sub) wanted.add(this.rows.get(op.id).sub);
    }
    for (const tr of [...group.body.children]) if (!wanted.has(tr)) tr.remove();
    let i = 0;
    const place = (tr) => {
      if (group.body.children[i] !== tr) group.body.insertBefore(tr, group.body.children[i] ?? null);
      i += 1;
    };
    for (const op of ops) {
      const row = this.row(op);
      this.update(row, op, now);
      place(row.tr);
      if (row.sub && this.expanded.has(op.id)) place(row.sub);
    }
  }

  row(op) {
    let row = this.rows.get(op.id);
    if (row) return row;
    const link = h("a", { class: "op-type", href: `#/operations/${op.id}` });
    const expand = h("button", { type: "button", class: "expand", "aria-expanded": "false", hidden: true }, "▸");
    expand.addEventListener("click", () => {
      if (this.expanded.has(op.id)) this.expanded.delete(op.id);
      else this.expanded.add(op.id);
      this.render();
    });
    const target = h("span", { class: "op-target" });
    const badge = h("span", { class: "badge" });
    const fill = h("div", { class: "progress-fill" });
    const bar = h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 }, fill);
    const pct = h("span", { class: "pct" });
    const phase = h("span", { class: "phase" });
    const message = h("span", { class: "message" });
    const elapsed = h("td", { class: "c-elapsed", "data-label": "Elapsed" });
    const by = h("td", { class: "c-by", "data-label": "Started by" });
    const cancel = h("button", { type: "button", class: "button small danger-outline" }, "Cancel");
    cancel.addEventListener("click", () => {
      const current = this.store.ops.get(op.id);
      if (current && ACTIVE.has(current.status)) confirmCancel(current, () => this.render());
    });
    const tr = h(
      "tr",
      { "data-op-id": op.id },
      h("td", { class: "c-op" }, expand, link, target),
      h("td", { class: "c-status" }, badge),
      h("td", { class: "c-progress" }, h("div", { class: "bar-line" }, bar, pct), h("div", { class: "op-line" }, phase, message)),
      elapsed,
      by,
      h("td", { class: "c-actions" }, cancel),
    );
    row = { tr, link, target, badge, bar, fill, pct, phase, message, elapsed, by, cancel, expand, sub: null, steps: null };
    this.rows.set(op.id, row);
    return row;
  }

  update(row, op, now) {
    setAttr(row.tr, "data-status", op.status);
    if (isRun(op)) {
      if (!row.steps) {
        row.steps = new RunSteps(this.store);
        row.sub = h("tr", { class: "steps-row", "data-run": op.id }, h("td", { colspan: 6 }, row.steps.el));
      }
      const open = this.expanded.has(op.id);
      row.expand.hidden = false;
      setAttr(row.expand, "aria-expanded", String(open));
      setAttr(row.expand, "aria-label", `${open ? "Hide" : "Show"} the steps of ${opTitle(op)}`);
      setText(row.expand, open ? "▾" : "▸");
      if (open) row.steps.update(op);
    }
    setText(row.link, op.type);
    setText(row.target, op.target);
    setAttr(row.target, "title", op.target);
    row.badge.className = `badge badge-${op.status}`;
    setText(row.badge, STATUS_LABEL[op.status] ?? op.status);
    setAttr(row.bar, "aria-valuenow", op.progress);
    setAttr(row.bar, "aria-label", `Progress of ${opTitle(op)}`);
    setAttr(row.bar, "data-status", op.status);
    row.fill.style.width = `${op.progress}%`;
    setText(row.pct, `${op.progress}%`);
    setText(row.phase, op.phase ?? "");
    row.phase.hidden = !op.phase;
    const text = op.status === "failed" && op.error ? op.error.message : op.message;
    setText(row.message, text ?? "");
    setAttr(row.message, "title", text ?? "");
    setText(row.elapsed, elapsedLabel(op, now));
    setText(row.by, op.created_by);
    const active = ACTIVE.has(op.status);
    row.cancel.hidden = !active;
    const busy = cancelling.has(op.id);
    row.cancel.disabled = busy;
    setText(row.cancel, busy ? "Cancelling…" : "Cancel");
    setAttr(row.cancel, "aria-label", busy ? `Cancelling ${opTitle(op)}` : `Cancel ${opTitle(op)}`);
  }

  /** Refreshes only the elapsed times of active rows (once a second). */
  tick(now = Date.now()) {
    for (const [id, row] of this.rows) {
      const op = this.store.ops.get(id);
      if (op && !TERMINAL.has(op.status)) setText(row.elapsed, elapsedLabel(op, now));
    }
  }

  syncTypeFilter() {
    const select = this.filters.type;
    const types = this.store.types();
    const have = [...select.options].slice(1).map((o) => o.value);
    if (have.join("\n") === types.join("\n")) return;
    const chosen = select.value;
    select.replaceChildren(h("option", { value: "" }, "All"), ...types.map((t) => h("option", { value: t }, t)));
    select.value = types.includes(chosen) ? chosen : "";
  }

  /** One more page of ended operations, older than the oldest held. */
  async loadOlder() {
    const cursor = this.store.oldestEnded();
    if (!cursor) return;
    this.older.disabled = true;
    const reply = await api.list({ status: "completed,failed,cancelled", limit: String(PAGE), cursor });
    this.older.disabled = false;
    if (!reply.ok) {
      toast({ kind: "failed", title: "Could not load older operations", text: problemText(reply) });
      return;
    }
    for (const op of reply.body.operations) this.store.learn(op);
    this.store.olderExist = Boolean(reply.body.next_cursor);
    this.render();
  }
}
