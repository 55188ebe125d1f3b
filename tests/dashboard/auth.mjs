// Signing in: a server with credentials makes the page ask for a token, says
// why a wrong one is refused, works with the right one (HTTP and the
// socket's auth message), keeps it for the tab's session only, and asks again
// when the socket's token expires.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { assertClean, fillStartForm, row, startResponse, waitLive, withDashboard, LIMIT, WAIT_MS } from "./support.mjs";

const TOKEN = "opal_dashboard_test_token_0123456789abcdefghijk";
const SECRET = "a dashboard test secret of at least 32 bytes";
const CONFIG = `
[auth]
jwt_secret = "${SECRET}"

[[auth.tokens]]
name = "ann"
role = "operator"
targets = ["**"]
sha256 = "${createHash("sha256").update(TOKEN).digest("hex")}"
`;

/** An HS256 JWT for `sub` that expires in `seconds`. */
function jwt(sub, seconds) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, role: "viewer", targets: ["**"], exp: Math.floor(Date.now() / 1000) + seconds })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

async function openPage(context, server) {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(`pageerror: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") page.errors.push(`console: ${message.text()}`);
  });
  await page.goto(server.url);
  return page;
}

async function signIn(page, token) {
  await page.waitForSelector("#token-dialog[open]");
  await page.fill("#token-input", token);
  await page.click("#token-submit");
}

test("a server with credentials: the page asks for a token and keeps it for the tab only", LIMIT, () =>
  withDashboard(
    async (server, context) => {
      const page = await openPage(context, server);
      // Asked at once, with the server's reason; nothing is live yet.
      await page.waitForSelector("#token-dialog[open]");
      assert.match(await page.textContent("#token-reason"), /bearer token/);
      assert.notEqual(await page.getAttribute("#connection", "data-state"), "live");

      // A wrong token: refused in the dialog, which stays.
      await signIn(page, "opal_wrong");
      await page.waitForSelector("#token-error:not([hidden])");
      assert.equal(await page.textContent("#token-error"), "unknown token");
      assert.equal(await page.evaluate(() => sessionStorage.getItem("opal.token")), null);

      // The right one: the dialog closes, the socket authenticates, the page works.
      await page.fill("#token-input", TOKEN);
      await page.click("#token-submit");
      await page.waitForSelector("#token-dialog", { state: "hidden" });
      await waitLive(page);
      await fillStartForm(page, "demo", "site-a/1", { steps: 2, step_ms: 10 });
      const started = await startResponse(page, () => page.click("#start-button"));
      assert.equal(started.status, 202);
      await page.waitForSelector(`tr[data-op-id="${started.body.id}"][data-status="completed"]`);
      assert.equal((await row(page, started.body.id).locator(".c-by").textContent()).trim(), "user:ann");

      // Kept for this tab's session: not on disk, still there after a reload...
      assert.equal(await page.evaluate(() => sessionStorage.getItem("opal.token")), TOKEN);
      assert.equal(await page.evaluate(() => localStorage.length), 0);
      await page.reload();
      await waitLive(page);
      assert.equal(await page.isVisible("#token-dialog"), false, "no question after a reload");
      // ...but a new tab asks again.
      const other = await openPage(context, server);
      await other.waitForSelector("#token-dialog[open]");
      await other.close();

      // Signing out forgets it and asks again.
      await page.click("#sign-out");
      await page.waitForSelector("#token-dialog[open]");
      assert.equal(await page.evaluate(() => sessionStorage.getItem("opal.token")), null);
      assertClean(page, assert, [/status of 401/]);
    },
    {},
    { config: CONFIG },
  ));

test("the socket's token expires: the page asks for a fresh one and goes live again", LIMIT, () =>
  withDashboard(
    async (server, context) => {
      const page = await openPage(context, server);
      await signIn(page, jwt("bob", 5));
      await waitLive(page);
      // The server closes the socket (4419) when the JWT expires; the page asks.
      await page.waitForSelector("#token-dialog[open]", { timeout: 15_000 });
      assert.match(await page.textContent("#token-reason"), /expired/);
      await page.fill("#token-input", jwt("bob", 3600));
      await page.click("#token-submit");
      await waitLive(page);
      assertClean(page, assert, [/status of 401/]);
    },
    {},
    { config: CONFIG },
  ));
