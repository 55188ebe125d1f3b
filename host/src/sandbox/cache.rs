//! The on-disk cache of precompiled components.
//!
//! A compiled artifact is only valid for the exact component bytes and the
//! exact engine (Wasmtime version, target, compiler settings), so the file name
//! carries both: `<sha256 of the component>-<engine hash>.cwasm`. A change to
//! either is a different name, i.e. a miss; stale files are never read.
//!
//! A miss is compiled in memory and written only when the caller accepts the
//! component ([`Pending::store`]): a plugin the registry refuses (a sha256
//! pin that does not match, an unusable `describe()`) leaves no artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::SandboxError;

/// The hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A stable digest of `Engine::precompile_compatibility_hash` (std's
/// `DefaultHasher` may change between Rust releases; sha256 does not).
pub(crate) fn engine_hash(engine: &Engine) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            unreachable!("only `write` is used")
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..12])
}

/// Where the compiled form of the component with digest `sha256` lives.
fn artifact_path(dir: &Path, sha256: &str, engine_hash: &str) -> PathBuf {
    dir.join(format!("{sha256}-{engine_hash}.cwasm"))
}

/// A freshly compiled artifact, not yet in the cache.
#[must_use = "an artifact not stored is compiled again next time"]
pub struct Pending {
    dir: PathBuf,
    path: PathBuf,
    /// The compiled bytes; `None` after a cache hit (nothing to store).
    compiled: Option<Vec<u8>>,
}

impl Pending {
    /// Writes the artifact into the cache (a failure is logged: the next
    /// load compiles again).
    pub fn store(self) {
        let Some(compiled) = self.compiled else { return };
        if let Err(e) = write_atomically(&self.dir, &self.path, &compiled) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot cache compiled plugin; continuing without");
        }
    }
}

/// Loads the component from the cache, or compiles it. Returns the component,
/// whether it came from the cache, and what to store if it did not.
pub(crate) fn load(
    engine: &Engine,
    dir: &Path,
    wasm: &[u8],
    sha256: &str,
) -> Result<(Component, bool, Pending), SandboxError> {
    let started = std::time::Instant::now();
    let path = artifact_path(dir, sha256, &engine_hash(engine));
    if path.exists() {
        // SAFETY: the file is one this module wrote with `precompile_component`
        // of this exact engine configuration (the name encodes it), into a
        // directory owned by the host; Wasmtime also checks the header.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                crate::telemetry::plugin_load(true, started.elapsed());
                return Ok((component, true, Pending { dir: dir.to_owned(), path, compiled: None }));
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unusable cached artifact; recompiling")
            }
        }
    }
    let compiled = engine.precompile_component(wasm).map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
    // SAFETY: `compiled` was produced just above by this engine.
    #[allow(unsafe_code)]
    let component =
        unsafe { Component::deserialize(engine, &compiled) }.map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
    crate::telemetry::plugin_load(false, started.elapsed());
    Ok((component, false, Pending { dir: dir.to_owned(), path, compiled: Some(compiled) }))
}

/// Writes to a temporary file and renames it into place, so a reader never
/// sees a half-written artifact. The temporary name is unique per write, so
/// servers sharing a cache (in one process or several) never write the same
/// file at once.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(opt: wasmtime::OptLevel) -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).cranelift_opt_level(opt);
        Engine::new(&config).unwrap()
    }

    #[test]
    fn a_different_engine_compiles_its_own_artifact_and_never_reads_another() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = crate::bundled::get("demo").expect("demo is bundled");
        let sha = sha256_hex(wasm);
        let (fast, small) = (engine(wasmtime::OptLevel::Speed), engine(wasmtime::OptLevel::None));
        assert_ne!(engine_hash(&fast), engine_hash(&small), "compiler settings are part of the key");

        let (_, cached, pending) = load(&fast, dir.path(), wasm, &sha).unwrap();
        assert!(!cached, "first compile");
        assert!(!load(&fast, dir.path(), wasm, &sha).unwrap().1, "not cached until stored");
        pending.store();
        assert!(load(&fast, dir.path(), wasm, &sha).unwrap().1, "then cached");
        let (_, cached, pending) = load(&small, dir.path(), wasm, &sha).unwrap();
        assert!(!cached, "another engine compiles again");
        pending.store();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "one artifact per engine");
        // A changed component is another key as well.
        let changed = sha256_hex(&[wasm, b"\0"].concat());
        assert_ne!(artifact_path(dir.path(), &sha, "e"), artifact_path(dir.path(), &changed, "e"));
    }
}
