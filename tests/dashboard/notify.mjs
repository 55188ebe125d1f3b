// An operation's outbound notifications on its page (docs/hooks.md): a
// receiver in this process gets the signed notification of a failed
// operation, and the operation's page says it was delivered.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { assertClean, openDashboard, withDashboard, LIMIT } from "./support.mjs";

test("an operation's page shows its notifications and their delivery", LIMIT, async () => {
  const received = [];
  const receiver = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      received.push({ delivery: request.headers["x-opal-delivery"], body: JSON.parse(body) });
      response.end("ok");
    });
  });
  await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  const { port } = receiver.address();
  const config = `
[[notify]]
name = "alerts"
url = "http://127.0.0.1:${port}/hook"
secret = "a notification secret for the dashboard"
events = ["failed"]
`;
  try {
    await withDashboard(
      async (server, context) => {
        const op = await server.startDemo("alert-1", { steps: 2, step_ms: 20, fail_at_step: 1 });
        await server.waitOperation(op.id, (o) => o.status === "failed", "the operation to fail");
        const page = await openDashboard(context, server, `/#/operations/${op.id}`);
        await page.waitForSelector('#detail-notifications li.notification[data-state="delivered"][data-event="failed"]');
        assert.match(await page.textContent("#detail-notifications"), /failed → alerts/);
        assert.equal(received.length, 1);
        assert.equal(received[0].body.operation.id, op.id);
        assertClean(page, assert);
      },
      {},
      { config },
    );
  } finally {
    receiver.close();
  }
});
