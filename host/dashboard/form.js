// The start form: a plugin picker, a target, and the plugin's params as
// fields generated from its JSON Schema. It checks what the schema says
// before sending, shows the server's 400 field errors at their fields
// (`errors[].field` is a JSON Pointer such as `params/steps`), turns a 409
// into a link to the operation already running, and keeps the start button
// honest: while an operation of the chosen type is active on the chosen
// target, the button shows its live state and is disabled.

import { api, problemText } from "./api.js";
import { h, byId, setText, setAttr } from "./dom.js";
import { busyLabel } from "./format.js";
import { fieldsOf, parse, rulesText } from "./schema.js";

const MAX_TARGET_BYTES = 256;

export class StartForm {
  constructor(store) {
    this.store = store;
    this.form = byId("start-form");
    this.type = byId("start-type");
    this.target = byId("start-target");
    this.fieldsBox = byId("start-fields");
    this.alert = byId("start-alert");
    this.button = byId("start-button");
    this.note = byId("start-note");
    /** The fields of the chosen plugin, and the schema they came from. */
    this.fields = [];
    this.schemaKey = null;
    this.submitting = false;
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.type.addEventListener("change", () => this.build());
    this.target.addEventListener("input", () => {
      this.clearError("target");
      this.refresh();
    });
    this.form.addEventListener("input", (e) => {
      if (e.target.dataset.field) this.clearError(`params/${e.target.dataset.field}`);
    });
  }

  /** Fills the picker; rebuilds the fields only if the chosen plugin's schema changed (input is kept). */
  setPlugins(plugins) {
    const labels = plugins.map((p) => [p.name, `${p.title} (${p.name})`]);
    const shown = [...this.type.options].map((o) => [o.value, o.textContent]);
    if (JSON.stringify(labels) !== JSON.stringify(shown)) {
      const chosen = this.type.value;
      this.type.replaceChildren(...labels.map(([value, label]) => h("option", { value }, label)));
      if (plugins.some((p) => p.name === chosen)) this.type.value = chosen;
    }
    this.build();
  }

  build() {
    const plugin = this.store.plugins.get(this.type.value);
    const key = plugin ? `${plugin.name}@${plugin.version}:${JSON.stringify(plugin.params_schema)}` : null;
    setText(byId("start-type-hint"), plugin?.description ?? "No plugins are loaded.");
    if (key === this.schemaKey) return this.refresh();
    this.schemaKey = key;
    this.fields = plugin ? fieldsOf(plugin.params_schema) : [];
    this.fieldsBox.replaceChildren(...this.fields.map((f) => this.control(f)));
    byId("start-params").hidden = this.fields.length === 0;
    this.clearErrors();
    this.refresh();
  }

  control(f) {
    const id = `param-${f.name}`;
    // Doc comments mark code with backticks; on a form they are noise.
    const description = f.description.replace(/`([^`]*)`/g, "$1");
    const rules = rulesText(f);
    const hintText = rules ? `${description} (${rules})`.trim() : description;
    const describedBy = `${id}-hint ${id}-error`;
    const common = { id, name: f.name, "data-field": f.name, "aria-describedby": describedBy };
    let input;
    if (f.kind === "boolean") {
      input = h("input", { ...common, type: "checkbox", checked: f.default === true });
    } else if (f.kind === "enum") {
      const blank = f.required ? null : h("option", { value: "" }, "—");
      input = h("select", common, blank, f.options.map((o) => h("option", { value: String(o) }, String(o))));
      if (f.default !== null) input.value = String(f.default);
    } else if (f.kind === "list" || f.kind === "json") {
      input = h("textarea", { ...common, rows: 3, spellcheck: "false" });
      if (f.default !== null) {
        input.value = f.kind === "list" ? f.default.join("\n") : JSON.stringify(f.default, null, 2);
      }
    } else {
      const numeric = f.kind === "integer" || f.kind === "number";
      input = h("input", {
        ...common,
        type: numeric ? "number" : "text",
        inputmode: f.kind === "integer" ? "numeric" : null,
        step: f.kind === "integer" ? "1" : numeric ? "any" : null,
        min: f.rules.minimum,
        max: f.rules.maximum,
        maxlength: f.rules.maxLength,
        autocomplete: "off",
      });
      if (f.default !== null) input.value = String(f.default);
    }
    setAttr(input, "required", f.required && f.kind !== "boolean");
    const mark = f.required && f.kind !== "boolean" ? h("span", { class: "required", "aria-hidden": "true" }, " *") : null;
    const label = h("label", { for: id }, f.label, mark);
    const parts = f.kind === "boolean" ? [h("div", { class: "check" }, input, label)] : [label, input];
    return h(
      "div",
      { class: "field", "data-field-box": f.name },
      ...parts,
      h("p", { class: "hint", id: `${id}-hint` }, hintText),
      h("p", { class: "field-error", id: `${id}-error`, hidden: true }),
    );
  }

  /** Reads and checks the form: {params, errors}, errors as the server would name them. */
  collect() {
    const errors = [];
    const target = this.target.value.trim();
    if (!target) errors.push({ field: "target", message: "is required" });
    else if (new TextEncoder().encode(target).length > MAX_TARGET_BYTES) {
      errors.push({ field: "target", message: `takes at most ${MAX_TARGET_BYTES} bytes` });
    } else if (/\p{Cc}/u.test(target)) errors.push({ field: "target", message: "must not contain control characters" });
    const params = {};
    for (const f of this.fields) {
      const input = byId(`param-${f.name}`);
      if (input.validity?.badInput) {
        errors.push({ field: `params/${f.name}`, message: "must be a number" });
        continue;
      }
      const raw = f.kind === "boolean" ? input.checked : input.value;
      const result = parse(f, typeof raw === "string" && f.kind !== "string" ? raw.trim() : raw);
      if (result.error) errors.push({ field: `params/${f.name}`, message: result.error });
      else if (result.value !== undefined) params[f.name] = result.value;
    }
    if (!this.type.value) errors.push({ field: "type", message: "choose an operation type" });
    return { target, params, errors };
  }

  async submit() {
    if (this.submitting) return;
    this.clearErrors();
    const { target, params, errors } = this.collect();
    if (errors.length) return this.showErrors(errors);
    this.submitting = true;
    this.refresh();
    const reply = await api.start(this.type.value, target, params);
    this.submitting = false;
    if (reply.status === 202 || reply.status === 200) {
      this.store.learn(reply.body);
      this.showNote(reply.body);
    } else if (reply.status === 400) {
      this.showErrors(reply.body?.errors?.length ? reply.body.errors : [{ field: "", message: problemText(reply) }]);
    } else if (reply.status === 409 && reply.body?.operation) {
      this.store.learn(reply.body.operation);
      this.showConflict(reply);
    } else {
      this.showAlert([h("strong", {}, "Could not start. "), problemText(reply)]);
    }
    this.refresh();
  }

  showNote(op) {
    this.note.replaceChildren(
      `Started ${op.type} on ${op.target}. `,
      h("a", { href: `#/operations/${op.id}` }, "View operation"),
    );
  }

  showConflict(reply) {
    const op = reply.body.operation;
    this.showAlert([
      h("strong", {}, "Already running. "),
      `${problemText(reply)}. `,
      h("a", { href: `#/operations/${op.id}`, "data-conflict-id": op.id }, "View the running operation"),
    ]);
  }

  showAlert(content) {
    this.alert.replaceChildren(...content);
    this.alert.hidden = false;
  }

  /** Puts each error at its field; errors naming no field of the form go to the alert. */
  showErrors(errors) {
    const loose = [];
    let first = null;
    for (const { field, message } of errors) {
      const control = this.controlFor(field);
      if (!control) {
        loose.push(h("li", {}, field ? `${field}: ${message}` : message));
        continue;
      }
      const box = byId(`${control.id}-error`);
      const text = box.hidden ? message : `${box.textContent}; ${message}`;
      setText(box, text);
      box.hidden = false;
      control.setAttribute("aria-invalid", "true");
      first ??= control;
    }
    if (loose.length) this.showAlert([h("strong", {}, "The server refused the request:"), h("ul", {}, loose)]);
    (first ?? (loose.length ? this.alert : null))?.focus?.();
  }

  /** The control a JSON Pointer names: `target`, `type`, or `params/<name>[/...]`. */
  controlFor(pointer) {
    if (pointer === "target") return this.target;
    if (pointer === "type") return this.type;
    const match = /^params\/([^/]+)/.exec(pointer ?? "");
    if (!match) return null;
    const name = match[1].replace(/~1/g, "/").replace(/~0/g, "~");
    return this.fields.some((f) => f.name === name) ? byId(`param-${name}`) : null;
  }

  clearError(pointer) {
    const control = this.controlFor(pointer);
    if (!control) return;
    control.removeAttribute("aria-invalid");
    const box = byId(`${control.id}-error`);
    box.hidden = true;
    box.textContent = "";
  }

  clearErrors() {
    for (const control of this.form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
    for (const box of this.form.querySelectorAll(".field-error")) {
      box.hidden = true;
      box.textContent = "";
    }
    this.alert.hidden = true;
    this.alert.replaceChildren();
  }

  /** Updates the start button from the store: live state while busy. */
  refresh() {
    const type = this.type.value;
    const target = this.target.value.trim();
    const busy = type && target ? this.store.activeFor(type, target) : null;
    if (this.submitting) {
      this.setButton("Starting…", true, null);
    } else if (busy) {
      this.setButton(busyLabel(busy), true, busy.id);
      this.note.replaceChildren(
        `${busy.type} is ${busy.status === "pending" ? "queued" : "running"} on ${busy.target}. `,
        h("a", { href: `#/operations/${busy.id}` }, "View it"),
      );
    } else {
      this.setButton(type ? `Start ${type}` : "Start", !type, null);
      if (this.note.dataset.busy) this.note.replaceChildren();
    }
    setAttr(this.note, "data-busy", busy ? busy.id : null);
  }

  setButton(label, disabled, opId) {
    setText(this.button, label);
    this.button.disabled = disabled;
    setAttr(this.button, "aria-busy", disabled && opId ? "true" : null);
    setAttr(this.button, "data-op-id", opId);
    setAttr(this.button, "aria-describedby", opId ? "start-note" : null);
  }
}
