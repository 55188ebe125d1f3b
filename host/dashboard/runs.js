// A workflow run's steps (docs/workflows.md): each step with its status,
// counts, decision and children, and the Approve and Reject buttons of the
// gate the run waits at, for callers who hold the gate's role. Everything
// comes from the run's own `details`, which every run event carries, so the
// view is live without a request of its own.

import { api, problemText } from "./api.js";
import { h } from "./dom.js";
import { STATUS_LABEL, holds } from "./format.js";
import { toast } from "./toasts.js";

const STEP_LABEL = {
  pending: "Pending",
  waiting: "Waiting for approval",
  running: "Running",
  completed: "Completed",
  failed: "Failed",
  rejected: "Rejected",
  skipped: "Skipped",
  cancelled: "Cancelled",
};

/** Whether `op` is a workflow run. */
export function isRun(op) {
  return Array.isArray(op?.details?.steps);
}

export class RunSteps {
  constructor(store) {
    this.store = store;
    this.gate = h("div", { class: "gate", hidden: true, role: "group", "aria-label": "Approval" });
    this.list = h("ol", { class: "steps" });
    this.el = h("div", { class: "run-steps" }, this.gate, this.list);
    this.gateKey = null;
    this.steps = "";
  }

  update(op) {
    const steps = op.details?.steps ?? [];
    // Rebuilt only when they changed; nothing in the list takes focus.
    const key = JSON.stringify(steps);
    if (key !== this.steps) {
      this.steps = key;
      this.list.replaceChildren(...steps.map((step) => this.step(step)));
    }
    this.updateGate(op);
  }

  step(step) {
    const count =
      step.total > 1 ? `${step.done} of ${step.total} done${step.failed ? `, ${step.failed} failed` : ""}` : "";
    const decided = step.approval
      ? `${step.approval.decision === "approve" ? "approved" : "rejected"} by ${step.approval.by}` +
        (step.approval.comment ? `: ${step.approval.comment}` : "")
      : "";
    const children = (step.children ?? []).map((child) =>
      h(
        "li",
        { class: "child", "data-child": child.id },
        h("a", { href: `#/operations/${child.id}` }, child.item !== undefined ? `item ${child.item}` : child.id.slice(-8)),
        h("span", { class: `badge badge-${child.status}` }, STATUS_LABEL[child.status] ?? child.status),
        h("span", { class: "pct" }, `${child.progress}%`),
        child.attempt > 1 ? h("span", { class: "hint" }, `attempt ${child.attempt}`) : null,
      ),
    );
    return h(
      "li",
      { class: "step", "data-step": step.name, "data-status": step.status },
      h(
        "div",
        { class: "step-line" },
        h("span", { class: "step-name" }, step.name),
        h("span", { class: "step-type" }, step.type),
        h("span", { class: `badge badge-${step.status}` }, STEP_LABEL[step.status] ?? step.status),
        count ? h("span", { class: "step-count" }, count) : null,
      ),
      step.error ? h("p", { class: "step-error" }, step.error) : null,
      decided ? h("p", { class: "step-decision" }, decided) : null,
      children.length ? h("ul", { class: "children" }, children) : null,
    );
  }

  updateGate(op) {
    const gate = op.status === "waiting" ? op.details?.gate : null;
    this.gate.hidden = !gate;
    const key = gate ? `${op.id}:${gate.step}:${this.store.caller?.name}` : null;
    // Not rebuilt while it stands: the comment field may have the focus.
    if (key === this.gateKey) return;
    this.gateKey = key;
    if (!gate) {
      this.gate.replaceChildren();
      return;
    }
    const caller = this.store.caller;
    const own = caller && caller.name === op.created_by && !gate.self_approval;
    const may = caller && holds(caller.role, gate.role) && !own;
    const deadline = new Date(gate.deadline).toLocaleString();
    const parts = [
      h(
        "p",
        { class: "gate-text" },
        `Step ${gate.step} waits for approval by ${gate.role === "viewer" ? "a" : "an"} ${gate.role}. `,
        `Unless someone decides, it is ${gate.on_timeout === "approve" ? "approved" : "rejected"} at ${deadline}.`,
      ),
    ];
    if (may) {
      const comment = h("input", {
        type: "text",
        class: "gate-comment",
        maxlength: 2000,
        placeholder: "Comment (optional)",
        "aria-label": `Comment on the approval of step ${gate.step}`,
      });
      const approve = h("button", { type: "button", class: "button small primary" }, "Approve");
      const reject = h("button", { type: "button", class: "button small danger-outline" }, "Reject");
      const decide = async (decision) => {
        approve.disabled = reject.disabled = true;
        const reply = await api.decide(op.id, decision, comment.value.trim());
        if (!reply.ok) {
          approve.disabled = reject.disabled = false;
          toast({ kind: "failed", title: `Could not ${decision} step ${gate.step}`, text: problemText(reply) });
        }
      };
      approve.addEventListener("click", () => decide("approve"));
      reject.addEventListener("click", () => decide("reject"));
      parts.push(h("div", { class: "gate-actions" }, comment, approve, reject));
    } else if (caller) {
      const why = own ? "You started this run: someone else must decide." : `Deciding takes the ${gate.role} role.`;
      parts.push(h("p", { class: "hint" }, why));
    }
    this.gate.replaceChildren(...parts);
  }
}
