//! Writing a user's two files into the output directory, all or nothing:
//! each is written to a hidden `.partial` file, flushed to disk, then renamed
//! into place, and a failure removes whatever of this user's was written. A
//! crash mid-way can leave only a `.partial` file, never a truncated
//! `<user>.key.pem` or a certificate without its key.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The two files of one user.
pub(crate) struct UserFiles {
    /// `<dir>/<user>.crt.pem`.
    pub(crate) cert: PathBuf,
    /// `<dir>/<user>.key.pem`.
    pub(crate) key: PathBuf,
}

impl UserFiles {
    pub(crate) fn new(dir: &str, user: &str) -> UserFiles {
        let dir = Path::new(dir);
        UserFiles { cert: dir.join(format!("{user}.crt.pem")), key: dir.join(format!("{user}.key.pem")) }
    }

    /// The first of the two files that already exists, if any.
    pub(crate) fn existing(&self) -> Option<&Path> {
        [&self.cert, &self.key].into_iter().find(|p| p.exists()).map(PathBuf::as_path)
    }

    /// Writes both files, replacing existing ones; on failure neither new
    /// file is left behind.
    pub(crate) fn write(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        let (key_tmp, cert_tmp) = (partial(&self.key), partial(&self.cert));
        let result = write_new(&key_tmp, key_pem)
            .and_then(|()| write_new(&cert_tmp, cert_pem))
            .and_then(|()| rename(&key_tmp, &self.key))
            .and_then(|()| {
                rename(&cert_tmp, &self.cert).inspect_err(|_| {
                    let _ = fs::remove_file(&self.key);
                })
            });
        if result.is_err() {
            let _ = fs::remove_file(&key_tmp);
            let _ = fs::remove_file(&cert_tmp);
        }
        result
    }
}

/// `<dir>/.<name>.partial`: hidden, and never a name a user's file can have
/// (user names cannot start with a dot).
fn partial(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

fn write_new(path: &Path, contents: &str) -> Result<(), String> {
    // A `.partial` left by a crash is ours to replace.
    let _ = fs::remove_file(path);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut file: File| {
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        })
        .map_err(|e| format!("cannot write {}: {e}", path.display()));
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    fs::rename(from, to).map_err(|e| format!("cannot move {} to {}: {e}", from.display(), to.display()))
}
