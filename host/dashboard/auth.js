// The page's credentials (docs/dashboard.md, "Signing in").
//
// A server with credentials answers 401 until the page sends a bearer
// token. The page then asks for one in a dialog, checks it with
// GET /api/v1/status, and keeps it in sessionStorage: it lasts as long as the
// tab, is never written to disk, and no other tab or site can read it. In dev
// mode the server never answers 401, so the page never asks.

const KEY = "opal.token";

/** The token of this tab's session, or null. */
export function token() {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

function store(value) {
  try {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  } catch {
    // Storage refused (a sandboxed frame): the token lives in this page only.
  }
}

/** Headers that carry the token, if there is one. */
export function authHeaders() {
  const value = token();
  return value ? { authorization: `Bearer ${value}` } : {};
}

const listeners = new Set();
/** Calls `callback()` whenever a new token has been accepted. */
export function onToken(callback) {
  listeners.add(callback);
}

let asking = null;

/**
 * Asks for a token (once, however many callers need one at the same time)
 * and resolves when one that the server accepts is stored. `reason` is the
 * server's own words on why `failed` (the token that was sent, or null) did
 * not do. If another token has been stored since, resolves at once: retry
 * with that one.
 */
export function requireToken(reason, failed = null) {
  const current = token();
  if (current && current !== failed) return Promise.resolve();
  if (current) store(null);
  if (!asking) {
    asking = ask(reason).finally(() => {
      asking = null;
    });
  }
  return asking;
}

/** Forgets the token and asks for another. */
export function signOut() {
  store(null);
  return requireToken("Signed out.");
}

async function check(candidate) {
  try {
    const response = await fetch("/api/v1/status", { headers: { authorization: `Bearer ${candidate}` } });
    if (response.ok) return null;
    const body = await response.json().catch(() => ({}));
    return body.detail || `HTTP ${response.status}`;
  } catch {
    return "the server cannot be reached";
  }
}

function ask(reason) {
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  document.getElementById("token-reason").textContent = reason
    ? `This server needs a token: ${reason}`
    : "This server needs a token.";
  error.hidden = true;
  input.value = "";
  return new Promise((resolve) => {
    form.onsubmit = async (event) => {
      event.preventDefault();
      const candidate = input.value.trim();
      if (!candidate) return;
      const problem = await check(candidate);
      if (problem) {
        error.textContent = problem;
        error.hidden = false;
        input.setAttribute("aria-invalid", "true");
        input.focus();
        return;
      }
      input.removeAttribute("aria-invalid");
      input.value = "";
      store(candidate);
      dialog.close();
      document.getElementById("sign-out").hidden = false;
      for (const listener of listeners) listener();
      resolve();
    };
    // Escape would leave the page without a way in: keep the dialog up.
    dialog.oncancel = (event) => event.preventDefault();
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

/** Shows the sign-out button while a token is in use. */
export function initSignOut() {
  const button = document.getElementById("sign-out");
  button.hidden = !token();
  button.addEventListener("click", () => {
    button.hidden = true;
    signOut();
  });
}
