// The dashboard suite: `node dashboard.test.mjs` runs every scenario in one
// process against one Chromium (each test gets a fresh server and browser
// context). host/tests/dashboard.rs runs it from `cargo test --workspace`
// with OPAL_BIN set; by hand:
//
//   cargo build -p opal-host && cd tests/dashboard && npm ci &&
//   OPAL_BIN=../../target/debug/opal node dashboard.test.mjs

import { after } from "node:test";
import { closeBrowser } from "./support.mjs";

import "./start.mjs";
import "./live.mjs";
import "./look.mjs";
import "./auth.mjs";

after(closeBrowser);
