// Starting operations from the generated form: success with live progress
// and a toast, field errors (the client's own and the server's 400), and the
// start button while one already runs (disabled with live state; 409 link).

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  assertClean,
  fillStartForm,
  openDashboard,
  recordProgress,
  row,
  startResponse,
  toastShown,
  withDashboard,
  LIMIT,
} from "./support.mjs";

test("start demo from the generated form: the bar reaches 100% live and a success toast appears", LIMIT, () =>
  withDashboard(async (server, context) => {
    const page = await openDashboard(context, server);
    // The fields come from the demo plugin's params schema (the form shows
    // the first plugin by name until another is chosen).
    await page.selectOption("#start-type", "demo");
    await page.waitForSelector("#param-steps");
    assert.equal(await page.getAttribute("#param-steps", "min"), "1");
    assert.equal(await page.getAttribute("#param-steps", "max"), "10000");
    assert.match(await page.textContent('label[for="param-steps"]'), /Steps/);
    assert.equal(await page.getAttribute("#param-fail_at_step", "required"), null, "optional in the schema");

    await fillStartForm(page, "demo", "srv-1", { steps: 20, step_ms: 100 });
    const started = await startResponse(page, () => page.click("#start-button"));
    assert.equal(started.status, 202);
    const id = started.body.id;
    const progress = await recordProgress(page, id);

    await row(page, id).locator('[role="progressbar"][aria-valuenow="100"]').waitFor();
    await page.waitForSelector(`tr[data-op-id="${id}"][data-status="completed"]`);
    const values = await progress.values();
    assert.ok(values.some((v) => v > 0 && v < 100), `the bar showed progress on the way: ${values}`);
    assert.deepEqual(values, [...values].sort((a, b) => a - b), "the bar never went back");
    assert.equal(values.at(-1), 100);
    assert.equal(await row(page, id).locator(".badge").textContent(), "Completed");
    assert.match(await row(page, id).locator(".c-by").textContent(), /^api$/);

    const toast = await toastShown(page, "completed", "srv-1");
    assert.match(toast.text, /demo on srv-1 completed/);
    assert.equal(await page.getAttribute("#toasts", "aria-live"), "polite");
    assertClean(page, assert);
  }));

test("an invalid form: client-side errors send nothing; the server's 400 shows at its field", LIMIT, () =>
  withDashboard(async (server, context) => {
    const page = await openDashboard(context, server);
    let posts = 0;
    page.on("request", (r) => {
      if (r.method() === "POST") posts += 1;
    });

    // What the schema says, the page checks itself.
    await fillStartForm(page, "demo", "srv-1", { steps: "", step_ms: 100 });
    await page.click("#start-button");
    await page.waitForSelector("#param-steps-error:not([hidden])");
    assert.equal(await page.textContent("#param-steps-error"), "is required");
    assert.equal(await page.getAttribute("#param-steps", "aria-invalid"), "true");
    assert.equal(await page.evaluate(() => document.activeElement.id), "param-steps", "focus moves to the error");
    await page.fill("#param-steps", "0");
    await page.click("#start-button");
    assert.equal(await page.textContent("#param-steps-error"), "must be at least 1");
    assert.equal(posts, 0, "nothing was sent while the form broke the schema");

    // fail_at_step beyond steps passes the schema (which only says >= 1);
    // the plugin's own validate() refuses it, so only the server knows.
    await page.fill("#param-steps", "3");
    await page.fill("#param-fail_at_step", "5");
    const reply = await startResponse(page, () => page.click("#start-button"));
    assert.equal(reply.status, 400);
    assert.deepEqual(reply.body.errors.map((e) => e.field), ["params/fail_at_step"]);
    const error = page.locator("#param-fail_at_step-error");
    await error.waitFor({ state: "visible" });
    assert.equal(await error.textContent(), reply.body.errors[0].message);
    assert.match(reply.body.errors[0].message, /between 1 and steps \(3\)/);
    assert.equal(await page.getAttribute("#param-fail_at_step", "aria-invalid"), "true");
    assert.equal(await page.evaluate(() => document.activeElement.id), "param-fail_at_step");
    assert.equal(await page.isHidden("#param-steps-error"), true, "the fixed field's error is gone");
    assert.equal(await page.locator("tr[data-op-id]").count(), 0, "no operation was created");

    // Editing the field clears its error.
    await page.fill("#param-fail_at_step", "2");
    assert.equal(await error.isHidden(), true);
    assert.equal(await page.getAttribute("#param-fail_at_step", "aria-invalid"), null);
    assertClean(page, assert);
  }));

test("a second start on the same target: the button is disabled with live state; a 409 links to the running one", LIMIT, () =>
  withDashboard(async (server, context) => {
    const page = await openDashboard(context, server);
    await fillStartForm(page, "demo", "srv-2", { steps: 80, step_ms: 100 });
    const started = await startResponse(page, () => page.click("#start-button"));
    assert.equal(started.status, 202);
    const id = started.body.id;

    const busy = () => {
      const b = document.querySelector("#start-button");
      return b.disabled && /^Processing \(\d+%\)$/.test(b.textContent) ? b.textContent : null;
    };
    const first = await (await page.waitForFunction(busy)).jsonValue();
    assert.equal(await page.getAttribute("#start-button", "data-op-id"), id);
    // The label follows the operation's progress as it arrives.
    await page.waitForFunction((before) => {
      const b = document.querySelector("#start-button");
      return b.disabled && /^Processing \(\d+%\)$/.test(b.textContent) && b.textContent !== before;
    }, first);
    assert.match(await page.textContent("#start-note"), /demo is running on srv-2/);

    // Only that (type, target) is busy: another target can start.
    await page.fill("#start-target", "srv-3");
    await page.waitForSelector("#start-button:not([disabled])");
    assert.equal(await page.textContent("#start-button"), "Start demo");
    await page.fill("#start-target", "srv-2");
    await page.waitForSelector("#start-button[disabled]");

    // A start that happens anyway (a tab that has not heard yet, a script)
    // gets the server's 409, shown with a link to the running operation.
    const conflict = await startResponse(page, () => page.$eval("#start-form", (form) => form.requestSubmit()));
    assert.equal(conflict.status, 409);
    assert.equal(conflict.body.operation.id, id);
    const link = page.locator(`#start-alert a[data-conflict-id="${id}"]`);
    await link.waitFor();
    assert.match(await page.textContent("#start-alert"), /already running/);
    assert.equal(await link.getAttribute("href"), `#/operations/${id}`);
    await link.click();
    await page.waitForSelector(`#detail-view[data-op-id="${id}"][data-status="running"]`);

    await server.call("POST", `/api/v1/operations/${id}/cancel`);
    await page.waitForSelector(`#detail-view[data-op-id="${id}"][data-status="cancelled"]`);
    assertClean(page, assert);
  }));
