// How it is served and how it looks: content types and cache headers of the
// page and its versioned assets, filters, the phone-width layout, and the
// screenshots (main view and operation detail) saved for people to look at.

import { test } from "node:test";
import assert from "node:assert/strict";
import { LIMIT, assertClean, openDashboard, row, screenshot, withDashboard } from "./support.mjs";

test("the page is revalidated; its assets carry this build's hash and are immutable", LIMIT, () =>
  withDashboard(async (server) => {
    const page = await server.call("GET", "/");
    assert.equal(page.status, 200);
    assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(page.headers.get("cache-control"), "no-cache");
    assert.match(page.headers.get("content-security-policy"), /default-src 'self'/);
    const version = (await server.call("GET", "/api/v1/status")).body.version;
    assert.match(page.text, new RegExp(`<meta name="opal-version" content="${version}">`));

    const script = /<script type="module" src="(\/assets\/([0-9a-f]{12})\/app\.js)">/.exec(page.text);
    assert.ok(script, "the page loads app.js from a hashed path");
    const [, path, hash] = script;
    const js = await server.call("GET", path);
    assert.equal(js.status, 200);
    assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
    assert.equal(js.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assert.equal(js.headers.get("x-content-type-options"), "nosniff");
    const css = await server.call("GET", `/assets/${hash}/app.css`);
    assert.equal(css.headers.get("content-type"), "text/css; charset=utf-8");
    const svg = await server.call("GET", `/assets/${hash}/icon.svg`);
    assert.equal(svg.headers.get("content-type"), "image/svg+xml");

    assert.equal((await server.call("GET", path.replace(hash, "0".repeat(12)))).status, 404, "another build's hash");
    assert.equal((await server.call("GET", `/assets/${hash}/nope.js`)).status, 404);
    assert.equal((await server.call("GET", "/api/v1/nope")).status, 404, "the API's own 404 is untouched");
  }));

/** A spread of operations: ended in each way, and two still running. */
async function spread(server) {
  const done = await server.startDemo("db-primary", { steps: 4, step_ms: 20 });
  const failed = await server.startDemo("web-02", { steps: 6, step_ms: 20, fail_at_step: 4 });
  const cancelled = await server.startDemo("cache-01", { steps: 500, step_ms: 100 });
  await server.waitOperation(cancelled.id, (op) => op.progress > 0, "cache-01 runs");
  await server.call("POST", `/api/v1/operations/${cancelled.id}/cancel`);
  for (const op of [done, failed, cancelled]) {
    await server.waitOperation(op.id, (o) => ["completed", "failed", "cancelled"].includes(o.status), "it ends");
  }
  const running = await server.startDemo("web-01", { steps: 600, step_ms: 100 });
  const second = await server.startDemo("edge-eu-west-1.example.net", { steps: 900, step_ms: 50 });
  await server.waitOperation(running.id, (op) => op.progress >= 3, "web-01 makes progress");
  await server.waitOperation(second.id, (op) => op.progress >= 3, "the second one makes progress");
  return { done, failed, cancelled, running, second };
}

test("filters by status, type and target; screenshots of the main view and an operation", LIMIT, () =>
  withDashboard(async (server, context) => {
    const ops = await spread(server);
    const page = await openDashboard(context, server);
    await page.waitForSelector(`tr[data-op-id="${ops.running.id}"][data-status="running"]`);
    const visible = () => page.$$eval("tr[data-op-id]", (trs) => trs.map((tr) => tr.dataset.opId));
    assert.equal((await visible()).length, 5);

    await page.selectOption("#filter-status", "failed");
    assert.deepEqual(await visible(), [ops.failed.id]);
    await page.selectOption("#filter-status", "");
    await page.fill("#filter-target", "WEB-0");
    assert.deepEqual((await visible()).sort(), [ops.failed.id, ops.running.id].sort(), "target: any case, any part");
    await page.selectOption("#filter-type", "demo");
    assert.equal((await visible()).length, 2);
    await page.fill("#filter-target", "");
    await page.selectOption("#filter-type", "");
    assert.equal((await visible()).length, 5);
    assert.equal(await page.textContent("#active-count"), "2");
    assert.equal(await page.textContent("#history-count"), "3");
    assert.equal(await page.isHidden("#load-older"), true, "fewer than a snapshot's worth: nothing older");

    // Main view, with the start button live for a running operation.
    await page.selectOption("#start-type", "demo");
    await page.fill("#start-target", "web-01");
    await page.waitForSelector("#start-button[disabled]");
    await page.fill("#param-steps", "20");
    await page.fill("#param-step_ms", "250");
    await page.waitForSelector(".figure dd[data-figure='active_operations']:not(:empty)");
    console.log(`screenshot: ${await screenshot(page, "main.png")}`);

    // The detail of the running one, with its timeline and live log.
    await row(page, ops.running.id).locator("a.op-type").click();
    await page.waitForSelector(`#detail-view[data-op-id="${ops.running.id}"][data-history-loaded="true"]`);
    await page.waitForSelector("#log li");
    await page.waitForSelector('.live-tag[data-live="true"]');
    console.log(`screenshot: ${await screenshot(page, "detail-running.png")}`);

    // And of the failed one, with its error.
    await page.goto(`${server.url}/#/operations/${ops.failed.id}`);
    await page.waitForSelector(`#detail-view[data-op-id="${ops.failed.id}"][data-history-loaded="true"]`);
    assert.equal(await page.textContent(".error-code"), "plugin_error");
    console.log(`screenshot: ${await screenshot(page, "detail-failed.png")}`);
    assertClean(page, assert);
  }));

test("history older than the snapshot's 100 loads on demand", LIMIT, () =>
  withDashboard(async (server, context) => {
    const ids = [];
    for (let i = 0; i < 105; i += 1) ids.push((await server.startDemo(`bulk-${i}`, { steps: 1, step_ms: 0 })).id);
    for (const id of ids) await server.waitOperation(id, (op) => op.status === "completed", `${id} completes`);
    const page = await openDashboard(context, server);
    await page.waitForSelector(`tr[data-op-id="${ids.at(-1)}"]`);
    assert.equal(await page.textContent("#history-count"), "100", "a snapshot holds the 100 most recent");
    assert.equal(await page.locator(`tr[data-op-id="${ids[0]}"]`).count(), 0);
    await page.click("#load-older");
    await page.waitForSelector(`tr[data-op-id="${ids[0]}"]`);
    assert.equal(await page.textContent("#history-count"), "105");
    await page.waitForSelector("#load-older", { state: "hidden" });
    assertClean(page, assert);
  }));

test("at phone width (375 px) nothing overflows and every control is reachable", LIMIT, () =>
  withDashboard(
    async (server, context) => {
      const ops = await spread(server);
      const page = await openDashboard(context, server);
      await page.waitForSelector(`tr[data-op-id="${ops.running.id}"][data-status="running"]`);
      const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.equal(await overflow(), 0, "no horizontal scrolling");
      // The rows are cards: the cancel button sits inside the viewport.
      const cancel = row(page, ops.running.id).getByRole("button", { name: "Cancel demo on web-01" });
      const box = await cancel.boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= 375, `cancel button inside the screen: ${JSON.stringify(box)}`);
      await page.selectOption("#start-type", "demo");
      for (const id of ["#start-type", "#start-target", "#param-steps", "#start-button", "#filter-status"]) {
        const b = await page.locator(id).boundingBox();
        assert.ok(b && b.x >= 0 && b.x + b.width <= 375, `${id} fits: ${JSON.stringify(b)}`);
      }
      console.log(`screenshot: ${await screenshot(page, "phone-main.png")}`);

      await page.goto(`${server.url}/#/operations/${ops.running.id}`);
      await page.waitForSelector(`#detail-view[data-op-id="${ops.running.id}"][data-history-loaded="true"]`);
      await page.waitForSelector("#log li");
      assert.equal(await overflow(), 0, "no horizontal scrolling in the detail");
      console.log(`screenshot: ${await screenshot(page, "phone-detail.png")}`);
      assertClean(page, assert);
    },
    { viewport: { width: 375, height: 812 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true },
  ));
