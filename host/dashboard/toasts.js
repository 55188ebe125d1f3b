// Toasts: short notices in a polite live region, so screen readers announce
// them without stealing focus. Each can be dismissed; they leave on their
// own after a while, later for failures, and not while hovered or focused.

import { h, byId } from "./dom.js";

const LIFETIME_MS = { completed: 8000, cancelled: 8000, info: 6000, failed: 15000 };
const MAX_SHOWN = 5;

/**
 * Shows a toast.
 * @param {object} toast
 * @param {string} toast.kind completed | failed | cancelled | info
 * @param {string} toast.title one line
 * @param {string} [toast.text] detail
 * @param {string} [toast.href] a link to follow ("View")
 */
export function toast({ kind, title, text, href }) {
  const region = byId("toasts");
  const el = h(
    "div",
    { class: `toast toast-${kind}`, "data-kind": kind },
    h("span", { class: "toast-mark", "aria-hidden": "true" }),
    h(
      "div",
      { class: "toast-body" },
      h("p", { class: "toast-title" }, title),
      text ? h("p", { class: "toast-text" }, text) : null,
    ),
    href ? h("a", { class: "toast-link", href }, "View") : null,
    h("button", { type: "button", class: "toast-close", "aria-label": `Dismiss: ${title}` }, "×"),
  );
  let timer = null;
  const remove = () => {
    clearTimeout(timer);
    el.remove();
  };
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(remove, LIFETIME_MS[kind] ?? 8000);
  };
  el.querySelector(".toast-close").addEventListener("click", remove);
  el.addEventListener("mouseenter", () => clearTimeout(timer));
  el.addEventListener("mouseleave", arm);
  el.addEventListener("focusin", () => clearTimeout(timer));
  el.addEventListener("focusout", arm);
  region.append(el);
  while (region.children.length > MAX_SHOWN) region.firstElementChild.remove();
  arm();
}
