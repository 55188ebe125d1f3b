//! Webhook signatures, both ways.
//!
//! - GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
//! - Opal's `X-Opal-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`
//!   (Stripe's scheme): the timestamp is signed too, and one older (or
//!   newer) than [`TOLERANCE`] is refused, so a captured delivery cannot be
//!   replayed later. Opal signs its own notifications this way.
//!
//! Comparisons are constant-time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far an `X-Opal-Signature` timestamp may be from now.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused (for the log; the client learns nothing more
/// than that it was refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The header is absent.
    #[error("no signature header")]
    Missing,
    /// The header is not in the scheme's form.
    #[error("the signature header is malformed")]
    Malformed,
    /// The timestamp is outside the tolerance.
    #[error("the signature's timestamp is {0} s from now, over the {TOLERANCE_SECS} s allowed")]
    Stale(i64),
    /// The HMAC does not match.
    #[error("the signature does not match")]
    Mismatch,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length")
}

/// Checks GitHub's `X-Hub-Signature-256` header value against `body`.
pub fn verify_github(secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<(), Refused> {
    let header = header.ok_or(Refused::Missing)?;
    let hex_mac = header.strip_prefix("sha256=").ok_or(Refused::Malformed)?;
    let given = hex::decode(hex_mac.trim()).map_err(|_| Refused::Malformed)?;
    let mut mac = mac(secret);
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| Refused::Mismatch)
}

/// Checks an `X-Opal-Signature` header value against `body` at `now` (Unix seconds).
pub fn verify_opal(secret: &[u8], header: Option<&str>, body: &[u8], now: i64) -> Result<(), Refused> {
    let header = header.ok_or(Refused::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| Refused::Malformed)?),
            Some(("v1", v)) => signatures.push(hex::decode(v).map_err(|_| Refused::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Refused::Malformed)?;
    if signatures.is_empty() {
        return Err(Refused::Malformed);
    }
    let skew = now - timestamp;
    if skew.abs() > TOLERANCE_SECS {
        return Err(Refused::Stale(skew));
    }
    let mut signed = mac(secret);
    signed.update(format!("{timestamp}.").as_bytes());
    signed.update(body);
    // Several v1 values are allowed, as when a secret is being rotated.
    for given in signatures {
        if signed.clone().verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(Refused::Mismatch)
}

/// The `X-Opal-Signature` value for `body` at `timestamp` (Unix seconds).
pub fn sign_opal(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut signed = mac(secret);
    signed.update(format!("{timestamp}.").as_bytes());
    signed.update(body);
    format!("t={timestamp},v1={}", hex::encode(signed.finalize().into_bytes()))
}

/// The `X-Hub-Signature-256` value for `body`.
pub fn sign_github(secret: &[u8], body: &[u8]) -> String {
    let mut signed = mac(secret);
    signed.update(body);
    format!("sha256={}", hex::encode(signed.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";

    #[test]
    fn githubs_own_example_verifies() {
        // From GitHub's docs ("Validating webhook deliveries"), test values.
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(verify_github(SECRET, Some(header), b"Hello, World!"), Ok(()));
        assert_eq!(sign_github(SECRET, b"Hello, World!"), header);
        assert_eq!(verify_github(SECRET, Some(header), b"Hello, World?"), Err(Refused::Mismatch));
        assert_eq!(verify_github(SECRET, None, b"x"), Err(Refused::Missing));
        assert_eq!(verify_github(SECRET, Some("sha1=00"), b"x"), Err(Refused::Malformed));
    }

    #[test]
    fn opal_signatures_bind_the_time_and_expire() {
        let now = 1_800_000_000;
        let header = sign_opal(SECRET, now, b"{}");
        assert_eq!(verify_opal(SECRET, Some(&header), b"{}", now + 10), Ok(()));
        assert_eq!(verify_opal(SECRET, Some(&header), b"{ }", now), Err(Refused::Mismatch));
        assert_eq!(verify_opal(SECRET, Some(&header), b"{}", now + 301), Err(Refused::Stale(301)));
        let moved = header.replace(&format!("t={now}"), &format!("t={}", now + 1));
        assert_eq!(verify_opal(SECRET, Some(&moved), b"{}", now), Err(Refused::Mismatch), "the time is signed");
        assert_eq!(verify_opal(b"other", Some(&header), b"{}", now), Err(Refused::Mismatch));
        assert_eq!(verify_opal(SECRET, Some("v1=00"), b"{}", now), Err(Refused::Malformed));
    }
}
