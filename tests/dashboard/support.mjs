// Shared helpers for the dashboard tests: the real `opal` binary on
// 127.0.0.1 with a temp data dir (killable and restartable on the same port
// and data), headless Chromium through playwright-core, plain HTTP calls,
// and bounded waits that fail with a message instead of hanging.
//
// With OPAL_DASHBOARD_STORE set to a PostgreSQL admin URL (host/tests/
// dashboard.rs sets it for its PostgreSQL run), every server runs on a fresh
// database of its own (`--store`), with a node id kept across its restarts.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, existsSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

/** The longest one wait may take. */
export const WAIT_MS = 30_000;
/** Options for every test: a backstop over the bounded waits inside it. */
export const LIMIT = { timeout: 120_000 };

export const OPAL_BIN = process.env.OPAL_BIN;
export const CHROMIUM = process.env.OPAL_CHROMIUM || "/usr/bin/chromium";
export const SCREENSHOTS = process.env.OPAL_SCREENSHOTS || join(tmpdir(), "opal-dashboard-screenshots");

/** The flags the project runs Chromium with (no GPU, no network chatter of its own). */
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

if (!OPAL_BIN) throw new Error("set OPAL_BIN to the opal binary (cargo test sets it; or target/debug/opal)");
if (!existsSync(CHROMIUM)) {
  throw new Error(`Chromium is missing at ${CHROMIUM}: install it with \`apt-get install -y chromium\``);
}

export const STORE_ADMIN = process.env.OPAL_DASHBOARD_STORE || null;
let databases = 0;

/** Runs one SQL statement as the admin of OPAL_DASHBOARD_STORE. */
export function psql(sql) {
  const run = spawnSync("psql", [STORE_ADMIN, "-qAtc", sql], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`psql ${sql}: ${run.stderr || run.error}`);
}

/** The admin URL with its database replaced by `name`. */
function databaseUrl(name) {
  const url = new URL(STORE_ADMIN);
  url.pathname = `/${name}`;
  return url.toString();
}

const servers = new Set();
process.on("exit", () => {
  for (const server of servers) {
    server.child?.kill("SIGKILL");
    if (server.database) spawnSync("psql", [STORE_ADMIN, "-qAtc", `DROP DATABASE IF EXISTS "${server.database}" WITH (FORCE)`]);
  }
});

/** A running `opal serve`. `kill()` is SIGKILL; `restart()` comes back on the same port and data. */
export class Server {
  /** `config`: the text of a config file to start with (e.g. `[[auth.tokens]]`). */
  static async start({ config } = {}) {
    const root = mkdtempSync(join(process.env.OPAL_TMP || tmpdir(), "opal-dashboard-"));
    const server = new Server(root);
    if (config !== undefined) {
      server.config = join(root, "opal.toml");
      writeFileSync(server.config, config);
    }
    await server.launch("127.0.0.1:0");
    return server;
  }

  constructor(root) {
    this.root = root;
    this.data = join(root, "data");
    mkdirSync(this.data, { recursive: true });
    this.child = null;
    this.addr = null;
    this.log = [];
    this.config = null;
    this.database = null;
    if (STORE_ADMIN) {
      // Named like the Rust tests' databases, so a crashed run's are swept too.
      databases += 1;
      this.database = `opal_test_${process.pid}_dash${databases}`;
      this.nodeId = `dash-${databases}`;
      psql(`CREATE DATABASE "${this.database}"`);
    }
  }

  get url() {
    return `http://${this.addr}`;
  }

  async launch(listen) {
    // One compiled-plugin cache for every server of the suite (OPAL_CACHE).
    const cache = process.env.OPAL_CACHE ? ["--cache", process.env.OPAL_CACHE] : [];
    const config = this.config ? ["--config", this.config] : [];
    const store = this.database ? ["--store", databaseUrl(this.database), "--node-id", this.nodeId] : [];
    const child = spawn(OPAL_BIN, ["serve", "--listen", listen, "--data", this.data, ...config, ...cache, ...store], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" },
    });
    this.child = child;
    servers.add(this);
    child.stderr.on("data", (chunk) => this.log.push(String(chunk)));
    const line = await within(
      new Promise((resolve, reject) => {
        const lines = createInterface({ input: child.stdout });
        lines.once("line", resolve);
        child.once("exit", (code) => reject(new Error(`opal exited (${code}) before listening:\n${this.log.join("")}`)));
      }),
      WAIT_MS,
      "opal serve prints its address",
    );
    const match = /^listening on http:\/\/(.+)$/.exec(line.trim());
    if (!match) throw new Error(`unexpected first line from opal: ${line}`);
    this.addr = match[1];
  }

  /** SIGKILL: no shutdown path runs, as in a crash. */
  async kill() {
    const child = this.child;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await within(exited, WAIT_MS, "opal exits after SIGKILL");
    this.child = null;
  }

  /** Starts again on the same address and data directory. */
  async restart() {
    await this.launch(this.addr);
  }

  /** Starts again on the same address with an empty data directory: a server that lost its history. */
  async restartEmpty() {
    rmSync(this.data, { recursive: true, force: true });
    mkdirSync(this.data, { recursive: true });
    if (this.database) {
      psql(`DROP DATABASE IF EXISTS "${this.database}" WITH (FORCE)`);
      psql(`CREATE DATABASE "${this.database}"`);
    }
    await this.launch(this.addr);
  }

  async stop() {
    if (this.child) await this.kill();
    servers.delete(this);
    rmSync(this.root, { recursive: true, force: true });
    if (this.database) psql(`DROP DATABASE IF EXISTS "${this.database}" WITH (FORCE)`);
  }

  async call(method, path, body) {
    const response = await fetch(this.url + path, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: response.status, headers: response.headers, text, body: json };
  }

  /** Starts a demo operation over HTTP; returns it. */
  async startDemo(target, params) {
    const reply = await this.call("POST", "/api/v1/operations", { type: "demo", target, params });
    if (reply.status !== 202) throw new Error(`start ${target}: ${reply.status} ${reply.text}`);
    return reply.body;
  }

  /** Polls until operation `id` satisfies `test` (bounded). */
  async waitOperation(id, test, what) {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const reply = await this.call("GET", `/api/v1/operations/${id}`);
      if (reply.status === 200 && test(reply.body)) return reply.body;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${reply.text}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}

/** Rejects with `what` if `promise` takes longer than `ms`. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export async function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, timeout: WAIT_MS });
}

let shared = null;

/** One Chromium for the whole run (each test makes its own context). */
export function browser() {
  shared ??= launchBrowser();
  return shared;
}

export async function closeBrowser() {
  if (shared) await (await shared).close();
  shared = null;
}

/**
 * Runs `body(server, context)` against a fresh server and a fresh browser
 * context (desktop size unless `contextOptions` says otherwise), and tears
 * both down whatever happens.
 */
export async function withDashboard(body, contextOptions = {}, serverOptions = {}) {
  const server = await Server.start(serverOptions);
  const context = await (await browser()).newContext({ viewport: { width: 1280, height: 900 }, ...contextOptions });
  try {
    await body(server, context);
  } catch (error) {
    if (server.log.length) error.message += `\n--- opal stderr ---\n${server.log.join("")}`;
    throw error;
  } finally {
    await context.close();
    await server.stop();
  }
}

/** Waits for the POST that starts an operation while `action` runs; returns {status, body}. */
export async function startResponse(page, action) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === "/api/v1/operations"),
    action(),
  ]);
  return { status: response.status(), body: await response.json() };
}

/**
 * A page on the dashboard, waiting until the socket is live. Console errors
 * and page errors are collected; `assertClean()` fails the test on any.
 */
export async function openDashboard(context, server, path = "/") {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(`pageerror: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") page.errors.push(`console: ${message.text()}`);
  });
  await page.addInitScript(recordToasts);
  await page.goto(server.url + path);
  await waitLive(page);
  return page;
}

export async function waitLive(page) {
  await page.waitForSelector('#connection[data-state="live"]');
}

/**
 * Runs in the page before its scripts, on every load: keeps every toast
 * ever shown in `window.__toasts`, so a test can check for one after it has
 * timed out and left the screen.
 */
function recordToasts() {
  window.__toasts = [];
  new MutationObserver((changes) => {
    for (const change of changes) {
      for (const node of change.addedNodes) {
        if (node.nodeType === 1 && node.classList.contains("toast")) {
          window.__toasts.push({ kind: node.dataset.kind, text: node.textContent });
        }
      }
    }
  }).observe(document, { childList: true, subtree: true });
}

/** Waits until a toast of `kind` whose text contains `text` has been shown (on this load of the page). */
export async function toastShown(page, kind, text) {
  const handle = await page.waitForFunction(
    ([kind, text]) => window.__toasts.find((t) => t.kind === kind && t.text.includes(text)),
    [kind, text],
  );
  return handle.jsonValue();
}

/** The row of operation `id` in the operations view. */
export function row(page, id) {
  return page.locator(`tr[data-op-id="${id}"]`);
}

/**
 * Starts recording, inside the page, every value the badge's data-state
 * takes; `states()` reads them back. Event-driven (MutationObserver), so
 * no transition is missed between polls.
 */
export async function recordConnectionStates(page) {
  await page.evaluate(() => {
    const badge = document.getElementById("connection");
    window.__states = [badge.dataset.state];
    new MutationObserver(() => {
      const state = badge.dataset.state;
      if (window.__states[window.__states.length - 1] !== state) window.__states.push(state);
    }).observe(badge, { attributes: true, attributeFilter: ["data-state"] });
  });
  return { states: () => page.evaluate(() => window.__states) };
}

/** Records every aria-valuenow the row's progress bar takes. */
export async function recordProgress(page, id) {
  await page.evaluate((id) => {
    window.__progress = window.__progress || {};
    const seen = (window.__progress[id] = []);
    const watch = () => {
      const bar = document.querySelector(`tr[data-op-id="${id}"] [role="progressbar"]`);
      if (!bar) return false;
      const note = () => {
        const value = Number(bar.getAttribute("aria-valuenow"));
        if (seen[seen.length - 1] !== value) seen.push(value);
      };
      note();
      new MutationObserver(note).observe(bar, { attributes: true, attributeFilter: ["aria-valuenow"] });
      return true;
    };
    if (!watch()) {
      const body = new MutationObserver(() => watch() && body.disconnect());
      body.observe(document.body, { childList: true, subtree: true });
    }
  }, id);
  return { values: () => page.evaluate((id) => window.__progress[id], id) };
}

/** Fills the start form: type, target, then each param (by field name). */
export async function fillStartForm(page, type, target, params) {
  await page.selectOption("#start-type", type);
  await page.fill("#start-target", target);
  for (const [name, value] of Object.entries(params)) await page.fill(`#param-${name}`, String(value));
}

/**
 * Fails on any uncaught error or console error the page logged, except
 * Chrome's own notes about API replies the test provoked on purpose (400,
 * 409) and whatever `allow` adds (e.g. refused connections while the server
 * is down).
 */
export function assertClean(page, assert, allow = []) {
  const expected = [/the server responded with a status of 40[09]/, ...allow];
  const unexpected = page.errors.filter((e) => !expected.some((re) => re.test(e)));
  assert.deepEqual(unexpected, [], "the page logged errors");
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, name);
  await page.screenshot({ path, fullPage: true });
  return path;
}
