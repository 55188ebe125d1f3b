// The queue's pause switch (admins only): while the queue is paused, starts
// are accepted and wait, and nothing more starts on any node; what runs goes
// on. Its state comes from the `system` topic (`paused`), so every dashboard
// shows a pause made anywhere.

import { api, problemText } from "./api.js";
import { byId, setText } from "./dom.js";
import { toast } from "./toasts.js";

export class QueueSwitch {
  constructor(store) {
    this.store = store;
    this.box = byId("queue");
    this.input = byId("queue-paused");
    this.label = byId("queue-label");
    this.input.addEventListener("change", () => this.set(this.input.checked));
    store.on("system", () => this.render());
    store.on("caller", () => this.render());
  }

  async set(paused) {
    this.input.disabled = true;
    const reply = await api.queue(paused);
    this.input.disabled = false;
    if (!reply.ok) {
      toast({ kind: "failed", title: `Could not ${paused ? "pause" : "resume"} the queue`, text: problemText(reply) });
    } else {
      this.store.setSystem({ ...(this.store.system ?? {}), paused: reply.body.paused });
    }
    this.render();
  }

  render() {
    const paused = Boolean(this.store.system?.paused);
    const admin = this.store.caller?.role === "admin";
    // Everyone sees that the queue is paused; only an admin may flip it.
    this.box.hidden = !admin && !paused;
    this.input.disabled = !admin;
    this.input.checked = paused;
    this.box.dataset.paused = String(paused);
    setText(this.label, paused ? "Queue paused" : "Queue running");
  }
}
