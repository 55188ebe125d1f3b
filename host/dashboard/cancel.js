// Cancelling an operation: confirm in a modal dialog (Escape or "Keep
// running" backs out, focus returns to the button that asked), then POST the
// cancel. The new state arrives over the socket like any other change.

import { api, problemText } from "./api.js";
import { byId } from "./dom.js";
import { opTitle } from "./format.js";
import { toast } from "./toasts.js";

/** Ids whose cancel request is in flight: their buttons say so. */
export const cancelling = new Set();

/** Asks, then cancels `op`; `changed()` is called whenever `cancelling` changes. */
export function confirmCancel(op, changed) {
  const dialog = byId("confirm-cancel");
  const what = op.status === "pending" ? "queued" : `running (${op.progress}%)`;
  byId("confirm-text").textContent =
    `${opTitle(op)} is ${what}. The plugin is asked to stop now and is stopped by force after a grace period.`;
  dialog.returnValue = "";
  dialog.addEventListener(
    "close",
    async () => {
      if (dialog.returnValue !== "cancel") return;
      cancelling.add(op.id);
      changed();
      const reply = await api.cancel(op.id);
      cancelling.delete(op.id);
      changed();
      if (reply.status === 409) {
        toast({ kind: "info", title: `${opTitle(op)} had already ended`, href: `#/operations/${op.id}` });
      } else if (!reply.ok) {
        toast({ kind: "failed", title: `Could not cancel ${opTitle(op)}`, text: problemText(reply) });
      }
    },
    { once: true },
  );
  dialog.showModal();
}
