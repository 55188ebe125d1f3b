//! `opal plugin new`: writes a plugin crate that tests natively with
//! `cargo test` and builds for wasm32-wasip2 with `cargo build --target
//! wasm32-wasip2`, one command each, wherever it is put.
//!
//! Owns the templates (`template/*.tmpl`, embedded in the binary), the rules
//! for a plugin's name, and finding the SDK. It touches nothing but the
//! directory it creates, and knows nothing of the server.
//!
//! There is no published `opal-sdk`, so the crate depends on the SDK by path:
//! by default the `sdk/` of the checkout this binary was built from, or
//! another with `--sdk-path`. The crate is a workspace of its own, so it also
//! builds inside another workspace's tree, and it starts with this checkout's
//! `Cargo.lock`, so it gets the dependency versions the SDK is tested with.

use std::path::{Component, Path, PathBuf};

/// What can stop `opal plugin new`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaffoldError {
    /// The name is not a valid operation type and crate name.
    #[error("{name:?} cannot be a plugin name: {why}")]
    InvalidName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        why: String,
    },
    /// The directory already holds something.
    #[error("{} already exists and is not empty", .0.display())]
    Exists(PathBuf),
    /// No `opal-sdk` crate where the SDK was looked for.
    #[error("no opal-sdk crate at {}: pass --sdk-path with the sdk/ directory of an Opal checkout", .0.display())]
    SdkNotFound(PathBuf),
    /// Reading or writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The files of a new plugin crate: (path inside the crate, template).
const TEMPLATES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("template/Cargo.toml.tmpl")),
    ("Cargo.lock", include_str!("../../../Cargo.lock")),
    ("rust-toolchain.toml", include_str!("template/rust-toolchain.toml.tmpl")),
    (".gitignore", include_str!("template/gitignore.tmpl")),
    ("README.md", include_str!("template/README.md.tmpl")),
    ("src/lib.rs", include_str!("template/lib.rs.tmpl")),
    ("tests/native.rs", include_str!("template/native.rs.tmpl")),
];

/// The `sdk/` of the checkout this binary was built from.
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("sdk"), |root| root.join("sdk"))
}

/// The files of the crate for plugin `name`, depending on the SDK at
/// `sdk` (as written into `Cargo.toml`): (path inside the crate, contents).
pub fn render(name: &str, sdk: &str) -> Result<Vec<(&'static str, String)>, ScaffoldError> {
    check_name(name)?;
    let guide = Path::new(sdk).join("../docs/plugin-guide.md");
    let replacements = [
        ("{{name}}", name.to_owned()),
        ("{{crate}}", name.replace('-', "_")),
        ("{{Type}}", type_name(name)),
        ("{{sdk_toml}}", sdk.replace('\\', "\\\\").replace('"', "\\\"")),
        ("{{sdk}}", sdk.to_owned()),
        ("{{guide}}", normalize(&guide).display().to_string()),
    ];
    Ok(TEMPLATES
        .iter()
        .map(|(path, template)| {
            let text = replacements.iter().fold((*template).to_owned(), |text, (key, value)| text.replace(key, value));
            (*path, text)
        })
        .collect())
}

/// Writes the crate for plugin `name` into `dir` (which must not exist or be
/// empty), depending on the SDK in `sdk`. Returns the files written.
pub fn create(name: &str, dir: &Path, sdk: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    check_name(name)?;
    let manifest = sdk.join("Cargo.toml");
    let is_sdk = std::fs::read_to_string(&manifest).is_ok_and(|text| text.contains("name = \"opal-sdk\""));
    let sdk = match sdk.canonicalize() {
        Ok(sdk) if is_sdk => sdk,
        _ => return Err(ScaffoldError::SdkNotFound(sdk.to_path_buf())),
    };
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = dir.canonicalize().map_err(io(dir))?;
    let mut written = Vec::new();
    for (path, text) in render(name, &sdk_dependency(&dir, &sdk))? {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// How `Cargo.toml` names the SDK: relative to the crate when both are in the
/// same checkout (so the tree can move as a whole), absolute otherwise.
fn sdk_dependency(dir: &Path, sdk: &Path) -> String {
    let checkout = sdk.parent().unwrap_or(sdk);
    match dir.strip_prefix(checkout) {
        Ok(inside) => {
            let up: Vec<&str> = inside.components().map(|_| "..").chain(["sdk"]).collect();
            up.join("/")
        }
        Err(_) => sdk.display().to_string(),
    }
}

/// Names that would clash with what the template's `lib.rs` imports or
/// defines, and so get a `Plugin` suffix on the type.
const TAKEN_TYPES: &[&str] = &[
    "Context",
    "Deserialize",
    "Error",
    "FieldError",
    "JsonSchema",
    "Level",
    "Outcome",
    "Params",
    "Plugin",
    "PluginInfo",
    "Result",
    "Serialize",
];

/// `ssh-check` -> `SshCheck`, the plugin's type in `lib.rs`.
fn type_name(name: &str) -> String {
    let mut camel: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    if TAKEN_TYPES.contains(&camel.as_str()) {
        camel.push_str("Plugin");
    }
    camel
}

/// Names that cannot be the crate (Rust keywords as its identifier, the
/// standard library's crates, the crate's own dependencies).
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "opal-sdk",
    "override",
    "priv",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "schemars",
    "self",
    "serde",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// A plugin's name is its operation type (what the server accepts: 1-64
/// lowercase letters, digits and `-`, starting with a letter) and its crate's
/// name.
fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let invalid = |why: &str| Err(ScaffoldError::InvalidName { name: name.to_owned(), why: why.to_owned() });
    if name.is_empty() || name.len() > 64 {
        return invalid("it must be 1 to 64 characters long");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return invalid("it must start with a lowercase letter");
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return invalid("it may hold only lowercase letters, digits and '-'");
    }
    if name.ends_with('-') || name.contains("--") {
        return invalid("each '-' must sit between two words");
    }
    if RESERVED.contains(&name) {
        return invalid("it is reserved in Rust or by the crate's dependencies");
    }
    Ok(())
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests;
