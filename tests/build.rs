//! Builds the test-only plugins in `tests/plugins/` for wasm32-wasip2 and
//! generates `test_plugins.rs` with the path of each `.wasm`.

#[path = "../host/build_plugins.rs"]
mod build_plugins;

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let plugins = build_plugins::build_all(root, "tests/plugins", "opal-test-plugin-");
    let mut generated = String::from(
        "/// Every test-only plugin: (crate directory name, path of its component).\n\
         pub const TEST_PLUGINS: &[(&str, &str)] = &[\n",
    );
    for (name, wasm) in &plugins {
        generated.push_str(&format!("    ({name:?}, {:?}),\n", wasm.display().to_string()));
    }
    generated.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("test_plugins.rs");
    std::fs::write(out, generated).unwrap();
}
