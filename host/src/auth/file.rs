//! The `[auth]` and `[limits]` sections of the config file, checked and
//! turned into [`AuthConfig`] and [`Limits`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::limits::Limits;
use super::{ApiToken, AuthConfig, Role, Scope, TokenHash};

/// The shortest accepted JWT secret, in bytes: HS256's key should be at
/// least as long as its output.
pub const MIN_JWT_SECRET: usize = 32;

/// `[auth]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSection {
    jwt_secret: Option<String>,
    jwt_secret_file: Option<PathBuf>,
    ws_auth_timeout_ms: Option<u64>,
    #[serde(default)]
    cors_origins: Vec<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    tokens: Vec<TokenSection>,
}

/// One `[[auth.tokens]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSection {
    name: String,
    sha256: String,
    role: Role,
    targets: Option<Vec<String>>,
}

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsSection {
    max_body_kib: Option<usize>,
    start_burst: Option<u32>,
    starts_per_second: Option<f64>,
    ws_message_burst: Option<u32>,
    ws_messages_per_second: Option<f64>,
    max_connections_per_principal: Option<usize>,
    max_subscriptions: Option<usize>,
    max_schedules: Option<usize>,
}

impl AuthSection {
    /// Checks every entry; `base` resolves a relative `jwt_secret_file`.
    pub(crate) fn into_config(self, base: &Path) -> Result<AuthConfig, String> {
        let mut config = AuthConfig::dev();
        config.jwt_secret = match (self.jwt_secret, self.jwt_secret_file) {
            (Some(_), Some(_)) => return Err("auth: set jwt_secret or jwt_secret_file, not both".into()),
            (Some(secret), None) => Some(secret.into_bytes()),
            (None, Some(file)) => {
                let path = base.join(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("auth.jwt_secret_file: cannot read {}: {e}", path.display()))?;
                Some(text.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
            }
            (None, None) => None,
        };
        if config.jwt_secret.as_ref().is_some_and(|s| s.len() < MIN_JWT_SECRET) {
            return Err(format!("auth: the JWT secret must be at least {MIN_JWT_SECRET} bytes"));
        }
        if let Some(ms) = self.ws_auth_timeout_ms {
            if ms == 0 {
                return Err("auth.ws_auth_timeout_ms must be at least 1".into());
            }
            config.ws_auth_timeout = Duration::from_millis(ms);
        }
        for origin in &self.cors_origins {
            check_origin(origin)?;
        }
        config.cors_origins = self.cors_origins;
        for host in &self.allowed_hosts {
            super::host::check_entry(host)?;
        }
        config.allowed_hosts = self.allowed_hosts;
        let mut names = HashSet::new();
        for token in self.tokens {
            let at = format!("auth.tokens {:?}", token.name);
            if token.name.is_empty() || token.name.len() > 64 || !token.name.chars().all(name_char) {
                return Err(format!("{at}: name must be 1 to 64 letters, digits, '-', '_', '.' or '@'"));
            }
            if !names.insert(token.name.clone()) {
                return Err(format!("{at}: the name is used twice"));
            }
            let hash = TokenHash::from_hex(&token.sha256).map_err(|e| format!("{at}: sha256: {e}"))?;
            let scope = match (token.role, token.targets) {
                (Role::Admin, None) => Scope::All,
                // A scraper sees no operation at all: an empty list of targets.
                (Role::Metrics, None) => Scope::Targets(Vec::new().into()),
                (Role::Metrics, Some(_)) => {
                    return Err(format!("{at}: a metrics token reads only /metrics; drop targets"));
                }
                (Role::Admin, Some(_)) => {
                    return Err(format!("{at}: an admin sees every target; drop targets or pick another role"));
                }
                (_, None) => return Err(format!("{at}: targets is required for a {}", token.role.as_str())),
                (_, Some(targets)) if targets.is_empty() => {
                    return Err(format!("{at}: targets must list at least one pattern (\"**\" for all)"));
                }
                (_, Some(targets)) => Scope::from_patterns(&targets).map_err(|e| format!("{at}: {e}"))?,
            };
            config.tokens.push(ApiToken { name: token.name, hash, role: token.role, scope });
        }
        Ok(config)
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')
}

/// An origin is `scheme://host[:port]`, exactly as browsers send it.
fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ', '*']) => Ok(()),
        _ => Err(format!(
            "auth.cors_origins: {origin:?} is not an origin like \"https://ops.example.com\" (scheme and host, \
             optional port, no path, no wildcard)"
        )),
    }
}

impl LimitsSection {
    /// Checks every value.
    pub(crate) fn into_limits(self) -> Result<Limits, String> {
        let mut limits = Limits::default();
        let positive =
            |what: &str, v: usize| if v == 0 { Err(format!("limits.{what} must be at least 1")) } else { Ok(v) };
        let rate = |what: &str, v: f64| {
            if v.is_finite() && v > 0.0 { Ok(v) } else { Err(format!("limits.{what} must be a number above 0")) }
        };
        if let Some(kib) = self.max_body_kib {
            limits.max_body = positive("max_body_kib", kib)? * 1024;
        }
        if let Some(n) = self.start_burst {
            limits.start_burst = positive("start_burst", n as usize)? as u32;
        }
        if let Some(r) = self.starts_per_second {
            limits.starts_per_second = rate("starts_per_second", r)?;
        }
        if let Some(n) = self.ws_message_burst {
            limits.ws_message_burst = positive("ws_message_burst", n as usize)? as u32;
        }
        if let Some(r) = self.ws_messages_per_second {
            limits.ws_messages_per_second = rate("ws_messages_per_second", r)?;
        }
        if let Some(n) = self.max_connections_per_principal {
            limits.max_connections = positive("max_connections_per_principal", n)?;
        }
        if let Some(n) = self.max_subscriptions {
            limits.max_subscriptions = positive("max_subscriptions", n)?;
        }
        if let Some(n) = self.max_schedules {
            limits.max_schedules = positive("max_schedules", n)?;
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(text: &str) -> Result<AuthConfig, String> {
        let section: AuthSection = toml::from_str(text).map_err(|e| e.to_string())?;
        section.into_config(Path::new("."))
    }

    #[test]
    fn tokens_are_read_and_checked() {
        let hash = TokenHash::of("t").to_hex();
        let config = auth(&format!(
            "[[tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nrole = \"operator\"\ntargets = [\"site-a/*\"]\n\
             [[tokens]]\nname = \"root\"\nsha256 = \"{hash}\"\nrole = \"admin\""
        ))
        .unwrap();
        assert_eq!(config.tokens.len(), 2);
        assert!(!config.dev_mode());
        for (bad, words) in [
            (format!("[[tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nrole = \"viewer\""), "targets is required"),
            (
                format!("[[tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nrole = \"admin\"\ntargets = [\"x\"]"),
                "drop targets",
            ),
            (format!("[[tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nrole = \"root\""), "unknown variant"),
            ("[[tokens]]\nname = \"ci\"\nsha256 = \"abc\"\nrole = \"admin\"".to_owned(), "not a sha256"),
            (format!("[[tokens]]\nname = \"a b\"\nsha256 = \"{hash}\"\nrole = \"admin\""), "name must be"),
            ("jwt_secret = \"short\"".to_owned(), "at least 32 bytes"),
            ("cors_origins = [\"https://a.example/path\"]".to_owned(), "is not an origin"),
            ("cors_origins = [\"*\"]".to_owned(), "is not an origin"),
            ("allowed_hosts = [\"https://ops.example.com\"]".to_owned(), "is not a host"),
        ] {
            let err = auth(&bad).unwrap_err();
            assert!(err.contains(words), "{bad}: {err}");
        }
        assert!(auth("").unwrap().dev_mode());
    }

    #[test]
    fn limits_are_checked() {
        let limits: LimitsSection = toml::from_str("max_body_kib = 4\nstarts_per_second = 0.5").unwrap();
        let limits = limits.into_limits().unwrap();
        assert_eq!((limits.max_body, limits.starts_per_second), (4096, 0.5));
        let bad: LimitsSection = toml::from_str("starts_per_second = 0.0").unwrap();
        assert!(bad.into_limits().unwrap_err().contains("above 0"));
    }
}
