//! Host-side bindings of the `opal:plugin` world, generated from `wit/`.
//!
//! Exports are async so a guest blocked in an async host call (a WASI sleep)
//! only suspends its own fiber. `progress.log` is async so a plugin that logs
//! faster than the store can take waits for room instead of growing a queue;
//! `progress.sleep` waits on the host's timer and the run's cancel;
//! `exec.run` is async as it waits for a host process. The other imports are
//! sync overwrites of the operation's live state.

#![allow(missing_docs, unreachable_pub)]

wasmtime::component::bindgen!({
    world: "operation",
    path: "../wit",
    imports: {
        "opal:plugin/progress.log": async,
        "opal:plugin/progress.sleep": async,
        "opal:plugin/exec.run": async,
    },
    exports: { default: async },
});
