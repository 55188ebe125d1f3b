//! `hooks`: inbound webhooks that start operations (or workflows).
//!
//! Each `[[hooks]]` entry of the config file names a hook served at
//! `POST /api/v1/hooks/{name}`: its secret and signature scheme
//! ([`signature`]), the operation type it starts, where the target and the
//! params come from in the payload (JSON Pointers), and filters on headers
//! and payload values. This module checks a delivery and maps it to a start;
//! the HTTP handler (`api::hooks`) does the rest like any other start.

pub mod signature;

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The longest body a hook takes by default, in KiB.
const DEFAULT_MAX_BODY_KIB: usize = 1024;
/// Deliveries a hook takes per minute by default.
const DEFAULT_PER_MINUTE: u32 = 60;

/// How a hook's deliveries are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// `X-Hub-Signature-256` (GitHub, Gitea, Forgejo).
    Github,
    /// `X-Opal-Signature: t=…,v1=…`, refused past 5 minutes.
    Opal,
}

/// A secret: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret.
    pub fn new(secret: String) -> Secret {
        Secret(secret)
    }

    /// The secret's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Where a value comes from: a JSON Pointer into the payload, or as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `/repository/full_name`.
    Pointer(String),
    /// Any text not starting with `/`.
    Literal(String),
}

/// One configured hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    /// Its name: the last segment of its URL.
    pub name: String,
    /// The shared secret.
    pub secret: Secret,
    /// How deliveries are signed.
    pub scheme: Scheme,
    /// The operation type (or workflow) it starts.
    pub op_type: String,
    /// The started operation's target.
    pub target: Source,
    /// Params taken from the payload: name → JSON Pointer.
    pub params: BTreeMap<String, String>,
    /// Params as written, under the payload's.
    pub static_params: Map<String, Value>,
    /// Deliveries are ignored unless these headers have these values.
    pub headers: BTreeMap<String, String>,
    /// Deliveries are ignored unless these pointers have these values.
    pub when: BTreeMap<String, Value>,
    /// Deliveries taken per minute.
    pub per_minute: u32,
    /// The largest body taken, in bytes.
    pub max_body: usize,
}

/// `[[hooks]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSection {
    name: String,
    secret: String,
    #[serde(default)]
    signature: Option<Scheme>,
    #[serde(rename = "type")]
    op_type: String,
    target: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    static_params: Map<String, Value>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    when: BTreeMap<String, toml::Value>,
    #[serde(default)]
    rate_per_minute: Option<u32>,
    #[serde(default)]
    max_body_kib: Option<usize>,
}

impl HookSection {
    /// Checks the section; the error names the field (`hooks.github.target: …`).
    pub fn into_hook(self) -> Result<Hook, String> {
        let name = self.name;
        let field = |f: &str| format!("hooks.{name}.{f}");
        let good_name = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !good_name {
            return Err(format!("hooks: name {name:?} must be 1 to 64 letters, digits, - or _"));
        }
        if self.secret.len() < 16 {
            return Err(format!("{}: must be at least 16 bytes", field("secret")));
        }
        if self.op_type.is_empty() {
            return Err(format!("{}: must name an operation type", field("type")));
        }
        for (param, pointer) in &self.params {
            if !pointer.starts_with('/') {
                return Err(format!(
                    "{}: {pointer:?} is not a JSON Pointer (it starts with /)",
                    field(&format!("params.{param}"))
                ));
            }
        }
        for pointer in self.when.keys() {
            if !pointer.starts_with('/') {
                return Err(format!("{}: {pointer:?} is not a JSON Pointer (it starts with /)", field("when")));
            }
        }
        let per_minute = self.rate_per_minute.unwrap_or(DEFAULT_PER_MINUTE);
        if per_minute == 0 {
            return Err(format!("{}: must be at least 1", field("rate_per_minute")));
        }
        let max_body_kib = self.max_body_kib.unwrap_or(DEFAULT_MAX_BODY_KIB);
        if max_body_kib == 0 || max_body_kib > 64 * 1024 {
            return Err(format!("{}: must be 1 to 65536", field("max_body_kib")));
        }
        let target = match self.target.strip_prefix('/') {
            Some(_) => Source::Pointer(self.target),
            None if self.target.is_empty() => return Err(format!("{}: must not be empty", field("target"))),
            None => Source::Literal(self.target),
        };
        Ok(Hook {
            secret: Secret(self.secret),
            scheme: self.signature.unwrap_or(Scheme::Github),
            op_type: self.op_type,
            target,
            params: self.params,
            static_params: self.static_params,
            headers: self.headers,
            when: self.when.into_iter().map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Value::Null))).collect(),
            per_minute,
            max_body: max_body_kib * 1024,
            name,
        })
    }
}

/// What a delivery maps to.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// Start this.
    Start {
        /// The target.
        target: String,
        /// The params.
        params: Value,
    },
    /// A filter did not match: say which, and start nothing.
    Ignored(String),
}

/// Why a delivery cannot be mapped: the pointer it needs and why (a 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// The field of the start it would fill (`target`, `params/ref`).
    pub field: String,
    /// What is wrong, naming the pointer.
    pub message: String,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl Hook {
    /// Maps a delivery's headers (by lowercase name) and payload to a start.
    pub fn map(&self, header: impl Fn(&str) -> Option<String>, payload: &Value) -> Result<Mapped, Unmapped> {
        for (name, wanted) in &self.headers {
            let got = header(name);
            if got.as_deref() != Some(wanted.as_str()) {
                let got = got.map_or_else(|| "absent".to_owned(), |g| format!("{g:?}"));
                return Ok(Mapped::Ignored(format!("header {name} is {got}, not {wanted:?}")));
            }
        }
        for (pointer, wanted) in &self.when {
            let got = payload.pointer(pointer);
            if got != Some(wanted) {
                let got = got.map_or_else(|| "absent".to_owned(), text);
                return Ok(Mapped::Ignored(format!("{pointer} is {got}, not {}", text(wanted))));
            }
        }
        let target = match &self.target {
            Source::Literal(target) => target.clone(),
            Source::Pointer(pointer) => match payload.pointer(pointer) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => {
                    let message = format!("{pointer} is {other}, not a non-empty string");
                    return Err(Unmapped { field: "target".into(), message });
                }
                None => {
                    let message = format!("the payload has no {pointer}");
                    return Err(Unmapped { field: "target".into(), message });
                }
            },
        };
        let mut params = self.static_params.clone();
        for (name, pointer) in &self.params {
            match payload.pointer(pointer) {
                Some(value) => {
                    params.insert(name.clone(), value.clone());
                }
                None => {
                    let message = format!("the payload has no {pointer}");
                    return Err(Unmapped { field: format!("params/{name}"), message });
                }
            }
        }
        Ok(Mapped::Start { target, params: Value::Object(params) })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hook() -> Hook {
        let section: HookSection = toml::from_str(
            r#"
name = "push"
secret = "0123456789abcdef0123"
type = "demo"
target = "/repository/full_name"
params = { release = "/head_commit/id" }
static_params = { steps = 2 }
headers = { X-GitHub-Event = "push" }
when = { "/ref" = "refs/heads/main" }
"#,
        )
        .unwrap();
        section.into_hook().unwrap()
    }

    fn headers(event: &'static str) -> impl Fn(&str) -> Option<String> {
        move |name: &str| (name == "X-GitHub-Event").then(|| event.to_owned())
    }

    #[test]
    fn a_matching_delivery_maps_to_a_start() {
        let payload =
            json!({"ref": "refs/heads/main", "repository": {"full_name": "o/r"}, "head_commit": {"id": "abc"}});
        let mapped = hook().map(headers("push"), &payload).unwrap();
        assert_eq!(mapped, Mapped::Start { target: "o/r".into(), params: json!({"steps": 2, "release": "abc"}) });
    }

    #[test]
    fn filters_say_what_did_not_match_and_missing_pointers_are_named() {
        let payload = json!({"ref": "refs/heads/dev", "repository": {"full_name": "o/r"}});
        let ping = hook().map(headers("ping"), &payload).unwrap();
        assert_eq!(ping, Mapped::Ignored("header X-GitHub-Event is \"ping\", not \"push\"".into()));
        let dev = hook().map(headers("push"), &payload).unwrap();
        assert_eq!(dev, Mapped::Ignored("/ref is \"refs/heads/dev\", not \"refs/heads/main\"".into()));
        let payload = json!({"ref": "refs/heads/main", "repository": {"full_name": "o/r"}});
        let missing = hook().map(headers("push"), &payload).unwrap_err();
        assert_eq!(
            (missing.field.as_str(), missing.message.as_str()),
            ("params/release", "the payload has no /head_commit/id")
        );
    }

    #[test]
    fn bad_sections_are_refused_by_field() {
        let bad = |extra: &str| {
            let text = format!("name = \"h\"\nsecret = \"0123456789abcdef\"\ntype = \"demo\"\ntarget = \"t\"\n{extra}");
            toml::from_str::<HookSection>(&text)
                .map_err(|e| e.to_string())
                .and_then(HookSection::into_hook)
                .unwrap_err()
        };
        assert!(bad("params = { x = \"no-slash\" }").contains("hooks.h.params.x"));
        assert!(bad("rate_per_minute = 0").contains("rate_per_minute"));
        assert!(bad("signature = \"md5\"").contains("unknown variant"));
        let short =
            toml::from_str::<HookSection>("name = \"h\"\nsecret = \"short\"\ntype = \"d\"\ntarget = \"t\"").unwrap();
        assert!(short.into_hook().unwrap_err().contains("at least 16 bytes"));
        assert_eq!(format!("{:?}", hook().secret), "Secret(…)", "a secret is never printed");
    }
}
