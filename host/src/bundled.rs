//! The plugins compiled into the `opal` binary, so `opal serve` has them with
//! no extra step. `build.rs` builds every crate under `plugins/` for
//! wasm32-wasip2 and generates the list.

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The bundled plugin named `name` (its crate directory under `plugins/`).
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, wasm)| *wasm)
}
