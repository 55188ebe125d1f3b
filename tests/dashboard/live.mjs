// Live state: cancelling from a row (keyboard only), two tabs that agree
// (and a refresh mid-operation), and a server killed and restarted while an
// operation runs, after which the page resumes without losing an event.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  assertClean,
  fillStartForm,
  openDashboard,
  recordConnectionStates,
  row,
  startResponse,
  toastShown,
  waitLive,
  withDashboard,
  LIMIT,
} from "./support.mjs";

test("cancel from the row, with confirmation, by keyboard alone", LIMIT, () =>
  withDashboard(async (server, context) => {
    const page = await openDashboard(context, server);
    const op = await server.startDemo("srv-4", { steps: 300, step_ms: 100 });
    await page.waitForSelector(`tr[data-op-id="${op.id}"][data-status="running"]`);
    const cancel = row(page, op.id).getByRole("button", { name: "Cancel demo on srv-4" });

    // Escape backs out: nothing is sent, the operation runs on, focus returns.
    await cancel.focus();
    await page.keyboard.press("Enter");
    await page.waitForSelector("#confirm-cancel[open]");
    assert.equal(await page.evaluate(() => document.activeElement.textContent), "Keep running");
    assert.match(await page.textContent("#confirm-text"), /demo on srv-4 is running/);
    await page.keyboard.press("Escape");
    await page.waitForSelector("#confirm-cancel", { state: "hidden" });
    assert.equal(await page.evaluate(() => document.activeElement.getAttribute("aria-label")), "Cancel demo on srv-4");
    assert.equal((await server.call("GET", `/api/v1/operations/${op.id}`)).body.status, "running");

    // Enter, Tab to "Cancel operation", Enter: cancelled, live, with a toast.
    await page.keyboard.press("Enter");
    await page.waitForSelector("#confirm-cancel[open]");
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement.textContent), "Cancel operation");
    await page.keyboard.press("Enter");
    await page.waitForSelector(`tr[data-op-id="${op.id}"][data-status="cancelled"]`);
    await toastShown(page, "cancelled", "srv-4");
    const stored = (await server.call("GET", `/api/v1/operations/${op.id}`)).body;
    assert.equal(stored.status, "cancelled");
    assert.ok(await row(page, op.id).getByRole("button", { name: /Cancel/ }).isHidden(), "no cancel on an ended row");
    assertClean(page, assert);
  }));

/** id, status and progress of every row, in order. */
/** The messages of one received frame: the page asks for `?batch=true`, one message per line. */
function messages(payload) {
  return String(payload).split("\n").map((line) => JSON.parse(line));
}

function rows(page) {
  return page.$$eval("tr[data-op-id]", (trs) =>
    trs.map((tr) => [tr.dataset.opId, tr.dataset.status, tr.querySelector('[role="progressbar"]').ariaValueNow]),
  );
}

test("two tabs agree, live, both ways; a refresh mid-operation shows it still live", LIMIT, () =>
  withDashboard(async (server, context) => {
    const a = await openDashboard(context, server);
    const b = await openDashboard(context, server);

    await fillStartForm(a, "demo", "srv-6", { steps: 60, step_ms: 100 });
    const started = await startResponse(a, () => a.click("#start-button"));
    const id = started.body.id;
    // Tab B sees it run, and its own start button for srv-6 is busy too.
    await b.waitForSelector(`tr[data-op-id="${id}"][data-status="running"]`);
    await b.selectOption("#start-type", "demo");
    await b.fill("#start-target", "srv-6");
    await b.waitForFunction(() => /^Processing \(\d+%\)$/.test(document.querySelector("#start-button").textContent));

    // A refresh in the middle shows it still running, still moving.
    await b.waitForFunction(
      (id) => Number(document.querySelector(`tr[data-op-id="${id}"] [role="progressbar"]`)?.ariaValueNow) > 0,
      id,
    );
    await b.reload();
    await waitLive(b);
    const rowState = (id) => {
      const tr = document.querySelector(`tr[data-op-id="${id}"]`);
      return tr && { status: tr.dataset.status, progress: Number(tr.querySelector('[role="progressbar"]').ariaValueNow) };
    };
    const reloaded = await (await b.waitForFunction(rowState, id)).jsonValue();
    assert.equal(reloaded.status, "running", "after the refresh it is still running");
    await b.waitForFunction(
      ([id, before]) => Number(document.querySelector(`tr[data-op-id="${id}"] [role="progressbar"]`).ariaValueNow) > before,
      [id, reloaded.progress],
    );
    await b.waitForSelector(`tr[data-op-id="${id}"][data-status="completed"]`);

    // The other way round: B starts, A cancels, both see it.
    const other = await server.startDemo("srv-7", { steps: 300, step_ms: 100 });
    await a.waitForSelector(`tr[data-op-id="${other.id}"][data-status="running"]`);
    await row(a, other.id).getByRole("button", { name: "Cancel demo on srv-7" }).click();
    await a.click("#confirm-cancel-button");
    await b.waitForSelector(`tr[data-op-id="${other.id}"][data-status="cancelled"]`);
    await a.waitForSelector(`tr[data-op-id="${other.id}"][data-status="cancelled"]`);

    await a.waitForSelector(`tr[data-op-id="${id}"][data-status="completed"]`);
    assert.deepEqual(await rows(a), await rows(b));
    assert.deepEqual(
      (await rows(a)).map((r) => r.slice(0, 2)),
      [
        [other.id, "cancelled"],
        [id, "completed"],
      ],
      "history, newest first",
    );
    for (const page of [a, b]) {
      await toastShown(page, "completed", "srv-6");
      await toastShown(page, "cancelled", "srv-7");
      assertClean(page, assert);
    }
  }));

test("kill -9 and restart the server mid-operation: Reconnecting, then Live, the right end state, no event missing", LIMIT, () =>
  withDashboard(async (server, context) => {
    const op = await server.startDemo("srv-5", { steps: 150, step_ms: 100 });
    const list = await openDashboard(context, server);
    const detail = await openDashboard(context, server, `/#/operations/${op.id}`);
    await detail.waitForSelector('#detail-view[data-history-loaded="true"]');

    // Watch what the detail page says on its socket.
    const sent = [];
    const received = [];
    detail.on("websocket", (ws) => {
      ws.on("framesent", (f) => sent.push(JSON.parse(f.payload)));
      ws.on("framereceived", (f) => received.push(...messages(f.payload)));
    });
    const states = await Promise.all([list, detail].map(recordConnectionStates));
    await list.waitForFunction(
      (id) => Number(document.querySelector(`tr[data-op-id="${id}"] [role="progressbar"]`)?.ariaValueNow) >= 10,
      op.id,
    );

    await server.kill();
    for (const page of [list, detail]) await page.waitForSelector('#connection[data-state="reconnecting"]');
    // While it is down the pages keep the last state they knew.
    assert.equal(await list.getAttribute(`tr[data-op-id="${op.id}"]`, "data-status"), "running");

    await server.restart();
    for (const page of [list, detail]) await waitLive(page);

    // demo is not retry-safe: the restart fails it as interrupted.
    await list.waitForSelector(`tr[data-op-id="${op.id}"][data-status="failed"]`);
    await detail.waitForSelector(`#detail-view[data-op-id="${op.id}"][data-status="failed"]`);
    assert.equal(await detail.textContent(".error-code"), "interrupted");
    const stored = (await server.call("GET", `/api/v1/operations/${op.id}`)).body;
    assert.equal(stored.status, "failed");
    assert.equal(stored.error.code, "interrupted");

    // Every stored event is on the page, once: the timeline and the log
    // together hold exactly the seqs of GET .../events.
    const events = (await server.call("GET", `/api/v1/operations/${op.id}/events`)).body.events;
    const shown = await detail.$$eval("#timeline li, #log li", (items) => items.map((li) => Number(li.dataset.seq)));
    assert.deepEqual(
      [...shown].sort((x, y) => x - y),
      events.map((e) => e.seq),
    );
    assert.equal(events.at(-1).event, "operation.failed");

    // And it got there by resuming, not by reloading: it subscribed with
    // `since` and the server replayed what it had missed.
    const resumes = sent.filter((m) => m.type === "subscribe" && typeof m.since === "number");
    assert.deepEqual(resumes.map((m) => m.topics).flat().sort(), [`op:${op.id}`, "operations"]);
    const replayed = received.filter((m) => m.type === "resumed").reduce((n, m) => n + m.replayed, 0);
    assert.ok(replayed >= 1, `the missed events were replayed: ${JSON.stringify(received.filter((m) => m.type === "resumed"))}`);
    assert.ok(!received.some((m) => m.type === "snapshot" && m.reset), "no reset was needed");

    for (const recorder of states) {
      const seen = await recorder.states();
      assert.equal(seen[0], "live");
      assert.equal(seen.at(-1), "live");
      assert.ok(seen.includes("reconnecting"), `went through reconnecting: ${seen}`);
    }
    await toastShown(list, "failed", "srv-5");
    const allow = [/WebSocket connection to .* failed/, /ERR_CONNECTION_REFUSED/];
    assertClean(list, assert, allow);
    assertClean(detail, assert, allow);
  }));

test("a server with another history (it lost its data): the page starts over from fresh snapshots", LIMIT, () =>
  withDashboard(async (server, context) => {
    const old = await server.startDemo("srv-8", { steps: 2, step_ms: 10 });
    const page = await openDashboard(context, server);
    await page.waitForSelector(`tr[data-op-id="${old.id}"][data-status="completed"]`);
    const received = [];
    const sent = [];
    page.on("websocket", (ws) => {
      ws.on("framereceived", (f) => received.push(...messages(f.payload)));
      ws.on("framesent", (f) => sent.push(JSON.parse(f.payload)));
    });

    await server.kill();
    await page.waitForSelector('#connection[data-state="reconnecting"]');
    // Same address, empty data dir: another history, whose seqs mean nothing to the page.
    await server.restartEmpty();
    await waitLive(page);
    await page.waitForSelector(`tr[data-op-id="${old.id}"]`, { state: "detached" });
    const hello = received.find((m) => m.type === "hello");
    assert.ok(hello && /^[0-9a-f]{16}$/.test(hello.history), "hello names the new server's history");
    const subscribes = sent.filter((m) => m.type === "subscribe");
    assert.ok(subscribes.length > 0, "the page subscribed again");
    assert.ok(!subscribes.some((m) => "since" in m), "no resume across histories: " + JSON.stringify(subscribes));
    assert.equal(await page.textContent("#history-count"), "0");

    // And it is live on the new server.
    const fresh = await server.startDemo("srv-9", { steps: 2, step_ms: 10 });
    await page.waitForSelector(`tr[data-op-id="${fresh.id}"][data-status="completed"]`);
    assertClean(page, assert, [/WebSocket connection to .* failed/, /ERR_CONNECTION_REFUSED/]);
  }));
