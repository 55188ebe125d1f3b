//! [`Partial`]: a download in progress, under a hidden temporary name in
//! the destination directory, removed unless it is verified and kept.
//!
//! Writing next to the destination makes the final step a rename within one
//! directory (atomic: readers see the old file or the new one, never half a
//! file), and dropping the guard on any way out of `run` (a failure, a hash
//! mismatch, a cancel) removes what was written.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary file that becomes `dest` on [`Partial::keep`].
pub struct Partial {
    file: Option<File>,
    path: PathBuf,
    dest: PathBuf,
}

impl Partial {
    /// Creates `.<name>.<random>.part` next to `dest`.
    pub fn create(dest: &Path) -> std::io::Result<Partial> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // RandomState is seeded from the OS (WASI random in the sandbox): a
        // fresh suffix, so two downloads of one name never share a file.
        let suffix = RandomState::new().build_hasher().finish();
        let path = dir.join(format!(".{name}.{suffix:016x}.part"));
        let file = OpenOptions::new().write(true).create_new(true).open(&path)?;
        Ok(Partial { file: Some(file), path, dest: dest.to_owned() })
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.as_mut().expect("open until kept").write_all(bytes)
    }

    /// Flushes the file to disk and renames it to its destination,
    /// replacing what was there.
    pub fn keep(mut self) -> std::io::Result<PathBuf> {
        let file = self.file.take().expect("open until kept");
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.path, &self.dest)?;
        self.path = PathBuf::new();
        Ok(self.dest.clone())
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            // Best effort: nothing more can be done about a file that cannot
            // be removed, and the run's own error says what went wrong.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
