//! The sandbox's compile-once cache, against the real bundled demo component.

use opal_host::sandbox::{Sandbox, SandboxConfig, SandboxError};

fn config(dir: &std::path::Path) -> SandboxConfig {
    SandboxConfig {
        cache_dir: dir.join("cache"),
        memory_limit: 64 << 20,
        max_memory_limit: 64 << 20,
        log_limit: 1 << 20,
        max_wasm_stack: 1 << 20,
        scratch_root: dir.join("scratch"),
        max_instances: 4,
    }
}

fn cached_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_component_is_compiled_once_then_loaded_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = opal_host::bundled::get("demo").expect("demo is bundled");

    let sandbox = Sandbox::new(config(dir.path())).unwrap();
    let first = sandbox.load(wasm).unwrap();
    assert!(!first.from_cache, "nothing cached yet");
    let files = cached_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with(&format!("{}-", first.sha256)) && files[0].ends_with(".cwasm"), "{files:?}");

    // A new engine (a restart) with the same configuration uses the artifact.
    drop(sandbox);
    let sandbox = Sandbox::new(config(dir.path())).unwrap();
    let second = sandbox.load(wasm).unwrap();
    assert!(second.from_cache, "loaded from the cache");
    assert_eq!(second.describe(&sandbox).await.unwrap().name, "demo", "the cached artifact runs");
    assert_eq!(cached_files(dir.path()), files, "no second artifact");
}

#[tokio::test]
async fn a_damaged_artifact_is_recompiled_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = opal_host::bundled::get("demo").unwrap();
    let sandbox = Sandbox::new(config(dir.path())).unwrap();
    sandbox.load(wasm).unwrap();
    let artifact = dir.path().join("cache").join(&cached_files(dir.path())[0]);
    std::fs::write(&artifact, b"garbage").unwrap();

    let again = sandbox.load(wasm).unwrap();
    assert!(!again.from_cache, "the damaged file was not used");
    assert_eq!(again.describe(&sandbox).await.unwrap().name, "demo");
    assert!(std::fs::read(&artifact).unwrap().len() > 1000, "the artifact was rewritten");
}

#[tokio::test]
async fn bytes_that_are_not_a_component_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(config(dir.path())).unwrap();
    let Err(error) = sandbox.load(b"\0asm not really") else { panic!("garbage loaded") };
    assert!(matches!(error, SandboxError::Compile(_)), "{error}");
    assert!(error.to_string().starts_with("cannot compile the component"), "{error}");
}
