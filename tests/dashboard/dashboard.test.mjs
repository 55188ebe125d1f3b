// The dashboard suite: `node dashboard.test.mjs` runs every scenario in one
// process against one Chromium (each test gets a fresh server and browser
// context). host/tests/dashboard.rs runs it from `cargo test --workspace`
// with OPAL_BIN set; by hand:
//
//   cargo build -p opal-host && cd tests/dashboard && npm ci &&
//   OPAL_BIN=../../target/debug/opal node dashboard.test.mjs

import { after } from "node:test";
import { closeBrowser } from "./support.mjs";

// OPAL_DASHBOARD_FILES (comma-separated, e.g. `start,live`) runs part of the suite.
const files = (process.env.OPAL_DASHBOARD_FILES || "start,live,look,auth,storage,workflows,notify").split(",");
for (const file of files) await import(`./${file.trim()}.mjs`);

after(closeBrowser);
