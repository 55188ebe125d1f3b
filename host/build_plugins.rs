//! Builds plugin crates for wasm32-wasip2 from a build script.
//!
//! Shared by `host/build.rs` (the bundled plugins in `plugins/`) and
//! `tests/build.rs` (the test-only plugins in `tests/plugins/`), in the style
//! of wasmtime's `test-programs`: a nested `cargo build` with its own target
//! directory (sharing the outer one would deadlock on its lock), and a clean
//! environment (the outer build's flags are for the host, not for wasm).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the outer build sets for itself, removed before running an inner
/// cargo: its flags, jobserver and wrappers are not for the inner build.
pub(crate) const OUTER_BUILD_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_LLVM_COV",
    "LLVM_PROFILE_FILE",
];

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

/// Builds every crate in `<root>/<dir>/*` (package `<prefix><name>`) and
/// returns `(name, path of the .wasm)` for each, sorted by name.
pub(crate) fn build_all(root: &Path, dir: &str, prefix: &str) -> Vec<(String, PathBuf)> {
    println!("cargo:rerun-if-changed={}", root.join(dir).display());
    for watched in ["sdk", "wit", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let crates = plugin_crates(&root.join(dir));
    let target_dir = outer_target_dir(root).join("wasm-plugins");
    ensure_target_installed();

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args(["build", "--target", TARGET, "--profile", PROFILE, "--target-dir"]).arg(&target_dir);
    for name in &crates {
        cmd.args(["-p", &format!("{prefix}{name}")]);
    }
    for var in OUTER_BUILD_VARS.iter().chain(&["CARGO_TARGET_DIR"]) {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo to build the plugins");
    assert!(status.success(), "building the plugins in {dir}/ for {TARGET} failed (see above)");

    crates
        .into_iter()
        .map(|name| {
            let file = format!("{}.wasm", format!("{prefix}{name}").replace('-', "_"));
            let wasm = target_dir.join(TARGET).join(PROFILE).join(file);
            assert!(wasm.exists(), "expected {} after the build", wasm.display());
            (name, wasm)
        })
        .collect()
}

/// The directory names of the crates in `dir`, sorted.
fn plugin_crates(dir: &Path) -> Vec<String> {
    let mut crates: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    crates.sort();
    crates
}

/// The target directory of the outer build (honouring `CARGO_TARGET_DIR`).
fn outer_target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// `rust-toolchain.toml` lists the wasm target, but rustup does not always
/// install it by itself (e.g. with `RUSTUP_AUTO_INSTALL=0`, or a toolchain
/// installed before the file existed): add it rather than fail obscurely.
fn ensure_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().ok();
    let installed = sysroot
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("lib/rustlib").join(TARGET).exists())
        .unwrap_or(false);
    if installed {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    let ok = rustup.status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "the {TARGET} target is missing and `rustup target add {TARGET}` failed; install it by hand");
}
