//! `cert-issue`: issues a TLS client certificate per user from a CA, as seed
//! 000's per-certificate loop ("Issuing certificate 3/10 for bob").
//!
//! For each user it makes a fresh ECDSA P-256 key pair, a certificate with
//! subject `CN=<user>`, extendedKeyUsage clientAuth and a random 128-bit
//! serial, signed by the CA, and writes `<user>.crt.pem` and `<user>.key.pem`
//! (PKCS#8) into the output directory, each user's pair all or nothing. It
//! checks the CA first (readable, a CA, P-256, key matching the certificate,
//! not expired), honours a cancel between certificates, and keeps
//! `details {completed_certs, total_certs}` current.
//!
//! Grants (the operator's config, see docs/operations.md): the CA's directory
//! read-only (default guest path `/ca`) and the output directory read-write
//! (default `/out`).
//!
//! The crypto is RustCrypto (`x509-cert`'s builder, `p256`), pure Rust that
//! compiles to wasm32-wasip2 without a C toolchain; randomness comes from
//! `getrandom`, which reads WASI's `random` interface in the sandbox.

mod ca;
mod issue;
mod output;
mod users;

use std::time::{Duration, SystemTime};

use opal_sdk::prelude::*;

use crate::ca::Ca;
use crate::output::UserFiles;

/// The params of `cert-issue`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The users to issue for. Each becomes a certificate's subject (CN) and
    /// the name of its files: 1-64 letters, digits, `.`, `_`, `@` or `-`,
    /// starting with a letter or digit; no two alike (ignoring case).
    #[schemars(length(min = 1, max = 10000))]
    pub users: Vec<String>,
    /// How long each certificate is valid, in days. It may not outlive the CA.
    #[serde(default = "default_validity_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub validity_days: u32,
    /// The CA certificate (PEM), as the plugin sees it: inside a granted directory.
    #[serde(default = "default_ca_cert")]
    pub ca_cert: String,
    /// The CA's private key (PEM: PKCS#8 or SEC1, unencrypted, P-256).
    #[serde(default = "default_ca_key")]
    pub ca_key: String,
    /// Where the certificates and keys go: a directory granted read-write.
    #[serde(default = "default_out_dir")]
    pub out_dir: String,
    /// Replace a user's existing files; without it, an existing file fails the operation.
    #[serde(default)]
    pub overwrite: bool,
}

fn default_validity_days() -> u32 {
    365
}
fn default_ca_cert() -> String {
    "/ca/ca.crt.pem".into()
}
fn default_ca_key() -> String {
    "/ca/ca.key.pem".into()
}
fn default_out_dir() -> String {
    "/out".into()
}

/// The longest validity accepted, in days (about ten years).
const MAX_VALIDITY_DAYS: u32 = 3650;

/// The client certificate issuer.
pub struct CertIssue;

impl Plugin for CertIssue {
    type Params = Params;

    fn info() -> PluginInfo {
        PluginInfo::new("cert-issue", env!("CARGO_PKG_VERSION"), "Issue client certificates")
            .description("Issues a TLS client certificate (clientAuth) per user from a CA into a granted directory.")
            .timeout(Duration::from_secs(30 * 60))
    }

    fn validate(params: &Params) -> Result<(), Vec<FieldError>> {
        let mut errors = users::check(&params.users);
        if !(1..=MAX_VALIDITY_DAYS).contains(&params.validity_days) {
            errors.push(FieldError::new("validity_days", format!("must be between 1 and {MAX_VALIDITY_DAYS}")));
        }
        for (field, path) in [("ca_cert", &params.ca_cert), ("ca_key", &params.ca_key), ("out_dir", &params.out_dir)] {
            if !path.starts_with('/') {
                errors.push(FieldError::new(
                    field,
                    format!("{path:?} must be an absolute path (inside a granted directory)"),
                ));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn run(ctx: &Context, target: &str, p: Params) -> Result<Outcome> {
        let total = p.users.len();
        let ca = Ca::load(&p.ca_cert, &p.ca_key).map_err(Error::Failed)?;
        let not_after = SystemTime::now() + Duration::from_secs(u64::from(p.validity_days) * 86_400);
        if not_after > ca.not_after {
            return Err(Error::invalid(
                "validity_days",
                format!("{} days would outlive the CA certificate, which expires sooner", p.validity_days),
            ));
        }
        info!(ctx, "issuing {total} client certificates on {target}, signed by {}", ca.name);
        let users = ctx
            .track(p.users.iter().enumerate())
            .details_keys("completed_certs", "total_certs")
            .message(|(i, user)| format!("Issuing certificate {}/{total} for {user}", i + 1));
        // Users are issued in order and the first failure ends the loop, so
        // a user's index is how many were issued before it.
        for (issued, user) in users {
            if ctx.cancelled() {
                warn!(ctx, "cancelled after issuing {issued} of {total} certificates");
                return Err(Error::Cancelled);
            }
            issue_one(ctx, &ca, &p, user, not_after)
                .map_err(|e| Error::failed(format!("{user}: {e} ({issued} of {total} issued before it)")))?;
        }
        Ok(Outcome::message(format!("issued {total} client certificates into {}", p.out_dir)))
    }
}

/// Issues `user`'s certificate and writes its two files.
fn issue_one(ctx: &Context, ca: &Ca, p: &Params, user: &str, not_after: SystemTime) -> Result<(), String> {
    let files = UserFiles::new(&p.out_dir, user);
    if !p.overwrite
        && let Some(existing) = files.existing()
    {
        return Err(format!("{} already exists (set overwrite to replace it)", existing.display()));
    }
    let issued = issue::issue(ca, user, not_after)?;
    files.write(&issued.cert_pem, &issued.key_pem)?;
    info!(ctx, "issued {}: serial {}", files.cert.display(), issued.serial);
    Ok(())
}

opal_sdk::export_plugin!(CertIssue);

#[cfg(test)]
mod tests;
