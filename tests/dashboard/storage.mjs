// The server panel's "Disk" figure: what an operator sees when new
// operations are refused for storage. On redb, a free-space floor above the
// disk's free space (507 for starts); on PostgreSQL (OPAL_DASHBOARD_STORE),
// a database made read-only (503 for starts), then writable again.

import { test } from "node:test";
import assert from "node:assert/strict";
import { LIMIT, STORE_ADMIN, WAIT_MS, assertClean, openDashboard, psql, withDashboard } from "./support.mjs";

const DISK = '[data-figure="storage_state"]';

/** Waits until the panel's Disk figure matches `pattern`; returns its text. */
async function diskSays(page, pattern) {
  const handle = await page.waitForFunction(
    ([selector, source]) => {
      const text = document.querySelector(selector)?.textContent ?? "";
      return new RegExp(source).test(text) ? text : null;
    },
    [DISK, pattern.source],
    { timeout: WAIT_MS },
  );
  return handle.jsonValue();
}

/** POSTs demo starts until one gets `status` (bounded); returns that reply. */
async function startUntil(server, status, what) {
  const deadline = Date.now() + WAIT_MS;
  for (let i = 0; ; i += 1) {
    const reply = await server.call("POST", "/api/v1/operations", {
      type: "demo",
      target: `storage-${i}`,
      params: { steps: 1, step_ms: 1 },
    });
    if (reply.status === status) return reply;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: last ${reply.status} ${reply.text}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test("below the free-space floor the panel says new operations are refused", { ...LIMIT, skip: STORE_ADMIN !== null }, () =>
  withDashboard(
    async (server, context) => {
      const page = await openDashboard(context, server);
      const text = await diskSays(page, /^Low on space/);
      assert.equal(text, "Low on space: new operations refused");
      assert.ok(await page.$eval(DISK, (dd) => dd.classList.contains("warning")), "shown as a warning");
      const refused = await server.call("POST", "/api/v1/operations", {
        type: "demo",
        target: "floor",
        params: { steps: 1, step_ms: 1 },
      });
      assert.equal(refused.status, 507, refused.text);
      assertClean(page, assert);
    },
    {},
    // A floor of about 95 TiB: no test machine's disk clears it.
    { config: "min_free_mib = 100000000\n" },
  ));

test("a database that refuses writes: the panel says storage failed and why, then OK once it is writable", { ...LIMIT, skip: STORE_ADMIN === null }, () =>
  withDashboard(async (server, context) => {
    const page = await openDashboard(context, server);
    await diskSays(page, /^OK$/);
    psql(`ALTER DATABASE "${server.database}" SET default_transaction_read_only = on`);
    psql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${server.database}'`);
    const refused = await startUntil(server, 503, "a start refused with 503");
    assert.ok(refused.headers.get("retry-after"), "a 503 says when to retry");
    const failed = await diskSays(page, /^Storage failed: .*read-only/);
    assert.match(failed, /new operations refused until it recovers/);
    assert.ok(await page.$eval(DISK, (dd) => dd.classList.contains("warning")), "shown as a warning");

    psql(`ALTER DATABASE "${server.database}" RESET default_transaction_read_only`);
    await startUntil(server, 202, "a start admitted again");
    await diskSays(page, /^OK$/);
    assert.ok(!(await page.$eval(DISK, (dd) => dd.classList.contains("warning"))), "no longer a warning");
    // The page itself logged nothing; the 503s were the test's own calls.
    assertClean(page, assert);
  }));
