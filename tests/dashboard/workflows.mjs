// Workflow runs in the dashboard (docs/workflows.md): a run's row expands
// into its steps, which follow the run live; a gate shows Approve and Reject
// to a caller with its role (not to whoever started the run), and an
// approval given from the page resumes the run. Then the queue's pause
// switch, for an admin: starts wait while it is on, and run when it is off.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { assertClean, openDashboard, row, screenshot, withDashboard, LIMIT, WAIT_MS } from "./support.mjs";

const ANN = "opal_dashboard_ann_token_0123456789abcdefghijk";
const BOB = "opal_dashboard_bob_token_0123456789abcdefghijk";

const WORKFLOW = `
name = "guarded-install"
title = "Prepare, then install once approved"
[[steps]]
name = "prepare"
type = "demo"
params = { steps = 6, step_ms = 250 }
[[steps]]
name = "install"
type = "demo"
params = { steps = 2, step_ms = 50 }
approval = { role = "operator", timeout = "1h" }
`;

/** A workflows directory holding the workflow above. */
function workflowsDir() {
  const dir = join(mkdtempSync(join(process.env.OPAL_TMP || tmpdir(), "opal-flows-")), "workflows");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "guarded.toml"), WORKFLOW);
  return dir;
}

const sha = (token) => createHash("sha256").update(token).digest("hex");

function credentials(flows) {
  return `
[workflows]
dirs = [${JSON.stringify(flows)}]

[[auth.tokens]]
name = "ann"
role = "operator"
targets = ["**"]
sha256 = "${sha(ANN)}"

[[auth.tokens]]
name = "bob"
role = "operator"
targets = ["**"]
sha256 = "${sha(BOB)}"
`;
}

/** `method path` as the holder of `token`. */
async function callAs(server, token, method, path, body) {
  const response = await fetch(server.url + path, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

/** Opens the dashboard signed in as the holder of `token`. */
async function openAs(context, server, token) {
  await context.addInitScript((t) => sessionStorage.setItem("opal.token", t), token);
  return openDashboard(context, server);
}

test("a run's steps expand live, and an approval given from the dashboard resumes the run", LIMIT, () => {
  const flows = workflowsDir();
  return withDashboard(
    async (server, context) => {
      const started = await callAs(server, ANN, "POST", "/api/v1/operations", { type: "guarded-install", target: "web-9" });
      assert.equal(started.status, 202, JSON.stringify(started.body));
      const run = started.body.id;

      const page = await openAs(context, server, BOB);
      const runRow = row(page, run);
      const expand = runRow.locator("button.expand");
      await expand.waitFor({ state: "visible" });
      assert.equal(await expand.getAttribute("aria-expanded"), "false");
      await expand.click();
      assert.equal(await expand.getAttribute("aria-expanded"), "true");
      const steps = page.locator(`tr.steps-row[data-run="${run}"]`);
      // The first step is seen running, then completed: the view follows the run.
      await steps.locator('li.step[data-step="prepare"][data-status="running"]').waitFor();
      await steps.locator('li.step[data-step="prepare"] li.child').waitFor();
      await steps.locator('li.step[data-step="prepare"][data-status="completed"]').waitFor();
      // The children are nested under their run, not rows of their own.
      const children = await server.call("GET", `/api/v1/operations?parent=${run}`);
      assert.equal(children.status, 401, "this server needs a token");
      const kids = await callAs(server, BOB, "GET", `/api/v1/operations?parent=${run}`);
      for (const kid of kids.body.operations) assert.equal(await row(page, kid.id).count(), 0, "no row of its own");

      // The gate: Bob holds the role and did not start the run.
      await steps.locator('li.step[data-step="install"][data-status="waiting"]').waitFor();
      assert.equal(await runRow.getAttribute("data-status"), "waiting");
      assert.equal(await runRow.locator(".badge").first().textContent(), "Waiting");
      const gate = steps.locator(".gate");
      await gate.waitFor({ state: "visible" });
      assert.match(await gate.textContent(), /install waits for approval by an operator/);
      console.log(`screenshot: ${await screenshot(page, "workflow-gate.png")}`);
      await gate.locator(".gate-comment").fill("go ahead");
      await gate.getByRole("button", { name: "Approve" }).click();
      await steps.locator('li.step[data-step="install"][data-status="completed"]').waitFor();
      await page.waitForSelector(`tr[data-op-id="${run}"][data-status="completed"]`);
      assert.match(await steps.locator('li.step[data-step="install"] .step-decision').textContent(), /approved by user:bob: go ahead/);
      const op = await callAs(server, BOB, "GET", `/api/v1/operations/${run}`);
      assert.equal(op.body.details.steps[1].approval.by, "user:bob");
      // The run's own page shows its steps too.
      await runRow.locator("a.op-type").click();
      await page.waitForSelector(`#detail-view[data-op-id="${run}"]`);
      const detailSteps = page.locator("#detail-steps li.step");
      await detailSteps.first().waitFor();
      assert.deepEqual(await detailSteps.evaluateAll((els) => els.map((e) => [e.dataset.step, e.dataset.status])), [
        ["prepare", "completed"],
        ["install", "completed"],
      ]);
      assertClean(page, assert);
    },
    {},
    { config: credentials(flows) },
  );
});

test("whoever started the run sees the gate but no buttons", LIMIT, () => {
  const flows = workflowsDir();
  return withDashboard(
    async (server, context) => {
      const started = await callAs(server, ANN, "POST", "/api/v1/operations", { type: "guarded-install", target: "web-1" });
      const run = started.body.id;
      const page = await openAs(context, server, ANN);
      await row(page, run).locator("button.expand").click();
      const gate = page.locator(`tr.steps-row[data-run="${run}"] .gate`);
      await gate.waitFor({ state: "visible", timeout: WAIT_MS });
      assert.match(await gate.textContent(), /You started this run: someone else must decide/);
      assert.equal(await gate.getByRole("button", { name: "Approve" }).count(), 0);
      assert.equal(await page.locator("#queue").isVisible(), false, "an operator has no pause switch");
      assertClean(page, assert);
    },
    {},
    { config: credentials(flows) },
  );
});

test("the queue's pause switch holds new starts until it is switched off", LIMIT, () =>
  withDashboard(async (server, context) => {
    const page = await openDashboard(context, server);
    const toggle = page.locator("#queue-paused");
    await page.locator("#queue").waitFor({ state: "visible" });
    assert.equal(await toggle.isChecked(), false);
    await toggle.check();
    await page.waitForSelector('#queue[data-paused="true"]');
    assert.equal(await page.textContent("#queue-label"), "Queue paused");
    const status = await server.call("GET", "/api/v1/status");
    assert.equal(status.body.paused, true);
    const op = await server.startDemo("held-1", { steps: 1, step_ms: 10 });
    await page.waitForSelector(`tr[data-op-id="${op.id}"][data-status="pending"]`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal((await server.call("GET", `/api/v1/operations/${op.id}`)).body.status, "pending", "it waits");
    await toggle.uncheck();
    await page.waitForSelector('#queue[data-paused="false"]');
    await page.waitForSelector(`tr[data-op-id="${op.id}"][data-status="completed"]`);
    assertClean(page, assert);
  }));
