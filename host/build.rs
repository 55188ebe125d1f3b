//! Builds the crates in `plugins/` for wasm32-wasip2 and generates
//! `bundled.rs`, which embeds them in the `opal` binary, so a fresh clone has
//! its plugins with no extra step.

#[path = "build_plugins.rs"]
mod build_plugins;

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let plugins = build_plugins::build_all(root, "plugins", "opal-plugin-");
    let mut generated = String::from(
        "/// Every bundled plugin: (crate directory name, component bytes).\n\
         pub const BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    for (name, wasm) in &plugins {
        generated.push_str(&format!("    ({name:?}, include_bytes!({:?})),\n", wasm.display().to_string()));
    }
    generated.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("bundled.rs");
    std::fs::write(out, generated).unwrap();
}
