//! Builds every plugin crate under `plugins/` for wasm32-wasip2 and generates
//! `bundled.rs`, which embeds them in the `opal` binary.
//!
//! This is how a fresh clone gets its plugins with no extra step, in the style
//! of wasmtime's `test-programs`: a nested `cargo build` with its own target
//! directory (sharing the outer one would deadlock on its lock), and a clean
//! environment (the outer build's flags are for the host, not for wasm).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for watched in ["plugins", "sdk", "wit", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let plugins = plugin_crates(&root.join("plugins"));
    let target_dir = outer_target_dir(&root).join("wasm-plugins");
    ensure_target_installed();

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--target",
            TARGET,
            "--profile",
            PROFILE,
            "--target-dir",
        ])
        .arg(&target_dir);
    for (_, package) in &plugins {
        cmd.args(["-p", package]);
    }
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo to build the plugins");
    assert!(
        status.success(),
        "building the plugins for {TARGET} failed (see above)"
    );

    let mut generated = String::from(
        "/// Every bundled plugin: (crate directory name, component bytes).\n\
         pub const BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    for (dir, package) in &plugins {
        let wasm = target_dir
            .join(TARGET)
            .join(PROFILE)
            .join(format!("{}.wasm", package.replace('-', "_")));
        assert!(wasm.exists(), "expected {} after the build", wasm.display());
        generated.push_str(&format!(
            "    ({dir:?}, include_bytes!({:?})),\n",
            wasm.display().to_string()
        ));
    }
    generated.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bundled.rs");
    std::fs::write(out, generated).unwrap();
}

/// `(directory name, package name)` of each crate in `plugins/`, sorted. The
/// package of `plugins/<dir>` is `opal-plugin-<dir>` by convention.
fn plugin_crates(dir: &Path) -> Vec<(String, String)> {
    let mut crates: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("plugins/ directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let package = format!("opal-plugin-{name}");
            (name, package)
        })
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

/// `rust-toolchain.toml` lists the wasm target, but a toolchain installed
/// before that file existed lacks it; add it rather than fail obscurely.
fn ensure_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok();
    let installed = sysroot
        .map(|o| {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
                .join("lib/rustlib")
                .join(TARGET)
                .exists()
        })
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
    assert!(
        ok,
        "the {TARGET} target is missing and `rustup target add {TARGET}` failed; install it by hand"
    );
}
