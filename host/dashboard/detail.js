// One operation in full: state, timestamps, details, error, the timeline of
// its events and its log, live while it runs.
//
// The events come from two places that overlap, merged by seq: the socket's
// `op:<id>` topic (live, log lines included) and `GET .../events` (history).
// The history is fetched each time the topic's snapshot arrives, which is
// after the subscription is in place, so every event is in one or the other
// and none is shown twice. After a drop the socket resumes the topic with
// `since`, so the missed events arrive as replay, not as a refetch.

import { api, problemText } from "./api.js";
import { cancelling, confirmCancel } from "./cancel.js";
import { h, byId, setText, setAttr } from "./dom.js";
import { ACTIVE, STATUS_LABEL, TERMINAL, clock, dateTime, elapsedLabel, opTitle } from "./format.js";
import { RunSteps, isRun } from "./runs.js";

/** Operation ids are ULIDs: 26 characters of Crockford base32. */
const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/i;

const EVENT_LABEL = {
  "operation.created": "Created",
  "operation.started": "Started",
  "operation.progress": "Progress",
  "operation.requeued": "Re-queued",
  "operation.retry_scheduled": "Retry scheduled",
  "operation.waiting": "Waiting for approval",
  "operation.approved": "Approved",
  "operation.rejected": "Rejected",
  "operation.completed": "Completed",
  "operation.failed": "Failed",
  "operation.cancelled": "Cancelled",
};

export class DetailView {
  constructor(store, socket) {
    this.store = store;
    this.socket = socket;
    this.root = byId("detail-view");
    this.id = null;
    /** seq -> event frame, for the operation shown. */
    this.events = new Map();
    /** Bumped on every show/reset, so a late history reply for another view is dropped. */
    this.generation = 0;
    store.on("op-snapshot", ({ id, reset }) => {
      if (id !== this.id) return;
      if (reset) this.clearEvents();
      this.loadHistory();
    });
    store.on("event", (frame) => {
      const id = frame.operation?.id ?? frame.operation_id;
      if (id === this.id) this.add(frame);
      // An end makes notifications: read them again shortly after.
      if (id === this.id && TERMINAL.has(frame.operation?.status)) setTimeout(() => this.loadNotifications(), 500);
    });
  }

  show(id) {
    if (this.id === id) return;
    this.hide();
    this.id = id;
    this.generation += 1;
    this.events = new Map();
    this.build();
    if (!ULID.test(id)) {
      this.showMissing(`“${id}” is not an operation id.`);
      return;
    }
    this.socket.want(`op:${id}`);
    if (!this.store.ops.has(id)) this.fetchOperation(id);
    this.loadNotifications();
    this.render();
  }

  /** The operation's outbound notifications and their delivery state (docs/hooks.md). */
  async loadNotifications() {
    const id = this.id;
    if (!id) return;
    const reply = await api.notifications(id);
    if (id !== this.id || !reply.ok) return;
    const list = reply.body.notifications;
    this.ui.notifications.hidden = list.length === 0;
    this.ui.notificationList.replaceChildren(
      ...list.map((n) =>
        h(
          "li",
          { class: "notification", "data-state": n.state, "data-event": n.event },
          h("span", { class: `badge badge-${n.state === "delivered" ? "completed" : n.state === "dead" ? "failed" : "pending"}` }, n.state),
          h("span", {}, `${n.event} → ${n.rule}`),
          h("span", { class: "hint" }, `${n.attempts} attempt${n.attempts === 1 ? "" : "s"}`),
          n.last_error ? h("span", { class: "step-error" }, n.last_error) : null,
        ),
      ),
    );
    // Pending ones are retried: look again until they settle.
    if (list.some((n) => n.state === "pending")) setTimeout(() => this.loadNotifications(), 2000);
  }

  hide() {
    if (this.id) this.socket.unwant(`op:${this.id}`);
    this.id = null;
    this.root.replaceChildren();
  }

  async fetchOperation(id) {
    const reply = await api.operation(id);
    if (id !== this.id) return;
    if (reply.ok) this.store.learn(reply.body);
    else this.showMissing(reply.status === 404 || reply.status === 400 ? "There is no such operation." : problemText(reply));
  }

  showMissing(text) {
    this.ui.missing.hidden = false;
    setText(this.ui.missing, text);
  }

  clearEvents() {
    this.events = new Map();
    this.ui.timeline.replaceChildren();
    this.ui.log.replaceChildren();
  }

  async loadHistory() {
    const id = this.id;
    const generation = this.generation;
    const reply = await api.events(id, 0);
    if (id !== this.id || generation !== this.generation || !reply.ok) return;
    for (const frame of reply.body.events) this.add(frame);
    setAttr(this.root, "data-history-loaded", "true");
  }

  build() {
    const card = (title, ...content) =>
      h("section", { class: "card" }, h("h2", {}, title), ...content);
    const dd = (name) => (this.ui[name] = h("dd", { "data-field": name }));
    this.ui = {};
    const ui = this.ui;
    ui.title = h("h1", { class: "detail-title" });
    ui.opId = h("p", { class: "op-id" });
    ui.badge = h("span", { class: "badge" });
    ui.cancel = h("button", { type: "button", class: "button danger-outline", id: "detail-cancel" }, "Cancel");
    ui.cancel.addEventListener("click", () => {
      const op = this.store.ops.get(this.id);
      if (op && ACTIVE.has(op.status)) confirmCancel(op, () => this.render());
    });
    ui.fill = h("div", { class: "progress-fill" });
    ui.bar = h("div", { class: "progress large", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 }, ui.fill);
    ui.pct = h("span", { class: "pct" });
    ui.message = h("p", { class: "detail-message" });
    ui.missing = h("p", { class: "form-alert", hidden: true, role: "alert" });
    ui.error = h("section", { class: "card error-card", hidden: true }, h("h2", {}, "Error"));
    ui.errorCode = h("p", { class: "error-code" });
    ui.errorText = h("p", {});
    ui.error.append(ui.errorCode, ui.errorText);
    ui.details = h("pre", { class: "json", tabindex: 0, "aria-label": "Details JSON" });
    ui.params = h("pre", { class: "json", tabindex: 0, "aria-label": "Params JSON" });
    ui.timeline = h("ol", { class: "timeline", id: "timeline" });
    ui.log = h("ol", { class: "log", id: "log" });
    ui.logBox = h("div", { class: "log-box", tabindex: 0, "aria-label": "Log lines" }, ui.log);
    ui.logState = h("span", { class: "live-tag" });
    ui.steps = new RunSteps(this.store);
    ui.stepsCard = h("section", { class: "card", hidden: true, id: "detail-steps" }, h("h2", {}, "Steps"), ui.steps.el);
    ui.notificationList = h("ul", { class: "notifications" });
    ui.notifications = h(
      "section",
      { class: "card", hidden: true, id: "detail-notifications" },
      h("h2", {}, "Notifications"),
      ui.notificationList,
    );
    const summary = h(
      "dl",
      { class: "facts" },
      [["Status", "status"], ["Phase", "phase"], ["Started by", "created_by"], ["Attempt", "attempt"],
        ["Plugin version", "plugin_version"], ["Created", "created_at"], ["Started", "started_at"],
        ["Finished", "finished_at"], ["Elapsed", "elapsed"]].map(([label, name]) =>
        h("div", {}, h("dt", {}, label), dd(name)),
      ),
    );
    this.root.replaceChildren(
      h("nav", { class: "crumbs" }, h("a", { href: "#/", class: "back" }, "← All operations")),
      ui.missing,
      h(
        "header",
        { class: "detail-head" },
        h("div", {}, ui.title, ui.opId),
        h("div", { class: "detail-actions" }, ui.badge, ui.cancel),
      ),
      h("section", { class: "card" }, h("div", { class: "bar-line" }, ui.bar, ui.pct), ui.message),
      ui.stepsCard,
      ui.notifications,
      h(
        "div",
        { class: "detail-grid" },
        card("Summary", summary),
        h("div", { class: "stack" }, ui.error, h("div", { class: "pair" }, card("Details", ui.details), card("Params", ui.params))),
      ),
      h(
        "div",
        { class: "detail-grid wide" },
        card("Timeline", h("div", { class: "timeline-box", tabindex: 0, "aria-label": "Timeline" }, ui.timeline)),
        h("section", { class: "card" }, h("h2", {}, "Log ", ui.logState), ui.logBox),
      ),
    );
  }

  render(now = Date.now()) {
    const op = this.store.ops.get(this.id);
    if (!this.id || !op) return;
    const ui = this.ui;
    ui.missing.hidden = true;
    setAttr(this.root, "data-op-id", op.id);
    setAttr(this.root, "data-status", op.status);
    setText(ui.title, opTitle(op));
    setText(ui.opId, op.id);
    ui.badge.className = `badge badge-${op.status}`;
    setText(ui.badge, STATUS_LABEL[op.status] ?? op.status);
    const active = ACTIVE.has(op.status);
    ui.cancel.hidden = !active;
    ui.cancel.disabled = cancelling.has(op.id);
    setText(ui.cancel, cancelling.has(op.id) ? "Cancelling…" : "Cancel");
    setAttr(ui.bar, "aria-valuenow", op.progress);
    setAttr(ui.bar, "aria-label", `Progress of ${opTitle(op)}`);
    setAttr(ui.bar, "data-status", op.status);
    ui.fill.style.width = `${op.progress}%`;
    setText(ui.pct, `${op.progress}%`);
    setText(ui.message, op.message ?? "");
    const facts = {
      status: STATUS_LABEL[op.status] ?? op.status,
      phase: op.phase ?? "–",
      created_by: op.created_by,
      attempt: op.attempt,
      plugin_version: op.plugin_version,
      created_at: dateTime(op.created_at),
      started_at: dateTime(op.started_at),
      finished_at: dateTime(op.finished_at),
      elapsed: elapsedLabel(op, now),
    };
    for (const [name, value] of Object.entries(facts)) setText(ui[name], value);
    for (const name of ["created_at", "started_at", "finished_at"]) setAttr(ui[name], "title", op[name]);
    ui.error.hidden = !op.error;
    setText(ui.errorCode, op.error?.code ?? "");
    setText(ui.errorText, op.error?.message ?? "");
    setText(ui.details, JSON.stringify(op.details ?? {}, null, 2));
    setText(ui.params, JSON.stringify(op.params ?? {}, null, 2));
    ui.stepsCard.hidden = !isRun(op);
    if (isRun(op)) ui.steps.update(op);
    setText(ui.logState, active ? "● Live" : "Ended");
    setAttr(ui.logState, "data-live", active ? "true" : null);
  }

  tick(now = Date.now()) {
    const op = this.store.ops.get(this.id);
    if (op && ACTIVE.has(op.status)) setText(this.ui.elapsed, elapsedLabel(op, now));
  }

  /** Adds one event frame to the timeline or the log, in seq order, once. */
  add(frame) {
    if (typeof frame.seq !== "number" || this.events.has(frame.seq)) return;
    this.events.set(frame.seq, frame);
    const isLog = frame.event === "operation.log";
    const list = isLog ? this.ui.log : this.ui.timeline;
    const box = isLog ? this.ui.logBox : list.parentElement;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    const item = isLog ? this.logItem(frame) : this.timelineItem(frame);
    // Usually the newest; a history reply can bring older ones after live ones.
    let before = null;
    for (let node = list.lastElementChild; node && Number(node.dataset.seq) > frame.seq; node = node.previousElementSibling) {
      before = node;
    }
    list.insertBefore(item, before);
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  timelineItem(frame) {
    const op = frame.operation ?? {};
    let text = op.message ?? "";
    if (frame.event === "operation.progress" && op.phase && !text.startsWith(op.phase)) text = `${op.phase} · ${text}`;
    if (frame.event === "operation.failed" && op.error) text = `${op.error.code}: ${op.error.message}`;
    if (frame.event === "operation.started" || frame.event === "operation.requeued") text = `attempt ${op.attempt}`;
    const label = EVENT_LABEL[frame.event] ?? frame.event;
    return h(
      "li",
      { "data-seq": frame.seq, "data-event": frame.event, class: `tl tl-${frame.event.split(".")[1]}` },
      h("span", { class: "tl-dot", "aria-hidden": "true" }),
      h("time", { datetime: frame.at, title: frame.at }, clock(frame.at, true)),
      h("span", { class: "tl-name" }, frame.event === "operation.progress" ? `${label} ${op.progress}%` : label),
      h("span", { class: "tl-text" }, text),
      h("span", { class: "seq", title: "seq" }, `#${frame.seq}`),
    );
  }

  logItem(frame) {
    return h(
      "li",
      { "data-seq": frame.seq, "data-level": frame.level, class: `log-line log-${frame.level}` },
      h("time", { datetime: frame.at, title: frame.at }, clock(frame.at, true)),
      h("span", { class: "level" }, frame.level),
      h("span", { class: "log-text" }, frame.message),
    );
  }
}
