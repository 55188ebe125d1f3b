//! HS256 JSON Web Tokens: the claims Opal reads, verification and signing.
//!
//! Written on `hmac` + `sha2` rather than a JWT crate: Opal accepts exactly
//! one algorithm, so the code that matters is "refuse every header that is
//! not HS256" and "compare the MAC in constant time", both a few lines here
//! and easy to audit. A general JWT library adds algorithm negotiation and a
//! second crypto stack that we would only have to fence off.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{AuthError, Role};

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, in bytes: a real one is a few hundred.
const MAX_TOKEN: usize = 8 * 1024;

/// The claims of an Opal JWT.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// Who: recorded as `user:<sub>` in `created_by` and `cancelled_by`.
    pub sub: String,
    /// `admin`, `operator` or `viewer`.
    pub role: Role,
    /// Target patterns; required unless the role is `admin`.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// Expiry, in seconds since the Unix epoch. Required.
    pub exp: u64,
    /// Not valid before, in seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: Option<u64>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

/// True if `token` has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Checks `token`'s HS256 signature with `secret`, then its claims at `now`
/// (seconds since the epoch).
pub fn verify(token: &str, secret: &[u8], now: u64) -> Result<Claims, AuthError> {
    if token.len() > MAX_TOKEN {
        return Err(AuthError::Malformed("the token is too long".into()));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("a JWT has three dot-separated parts".into()));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD.decode(part).map_err(|_| AuthError::Malformed(format!("the JWT {what} is not base64url")))
    };
    let header: Header = serde_json::from_slice(&decode(header, "header")?)
        .map_err(|_| AuthError::Malformed("the JWT header is not a JSON object with alg".into()))?;
    if header.alg != "HS256" {
        return Err(AuthError::Malformed(format!("JWT algorithm {:?} is not accepted; only HS256 is", header.alg)));
    }
    if header.typ.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("JWT")) {
        return Err(AuthError::Malformed("the JWT header's typ is not JWT".into()));
    }
    let signature = decode(signature, "signature")?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(&token.as_bytes()[..token.len() - parts_len(token)]);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature).map_err(|_| AuthError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&decode(payload, "payload")?)
        .map_err(|e| AuthError::Claims(format!("the JWT claims are not valid: {e}")))?;
    if claims.sub.trim().is_empty() || claims.sub.len() > 200 || claims.sub.chars().any(char::is_control) {
        return Err(AuthError::Claims("sub must be 1 to 200 bytes without control characters".into()));
    }
    if claims.exp <= now {
        return Err(AuthError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err(AuthError::Claims("the JWT is not valid yet (nbf)".into()));
    }
    let scoped = !matches!(claims.role, Role::Admin | Role::Metrics);
    if scoped && claims.targets.as_ref().is_none_or(Vec::is_empty) {
        return Err(AuthError::Claims(format!("a {} JWT must list targets", claims.role.as_str())));
    }
    Ok(claims)
}

/// Length of `.signature` at the end of `token`.
fn parts_len(token: &str) -> usize {
    token.rsplit('.').next().map_or(0, |s| s.len() + 1)
}

/// Signs `claims` (any JSON object) as an HS256 JWT. For tests and tools:
/// the server only verifies.
pub fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_token_verifies() {
        let token = sign(&json!({"sub": "ann", "role": "viewer", "targets": ["site-a/*"], "exp": 2000}), SECRET);
        let claims = verify(&token, SECRET, 1000).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("ann", Role::Viewer));
        assert_eq!(claims.targets, Some(vec!["site-a/*".to_owned()]));
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() {
        let good = json!({"sub": "ann", "role": "operator", "targets": ["x"], "exp": 2000});
        let token = sign(&good, SECRET);
        assert!(matches!(verify(&token, SECRET, 2000), Err(AuthError::Expired)));
        assert!(matches!(verify(&token, b"another secret of thirty-two bytes", 1000), Err(AuthError::BadSignature)));
        // A payload changed after signing.
        let (head, rest) = token.split_once('.').unwrap();
        let sig = rest.rsplit('.').next().unwrap();
        let forged = format!(
            "{head}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(json!({"sub":"ann","role":"admin","exp":9999}).to_string())
        );
        assert!(matches!(verify(&forged, SECRET, 1000), Err(AuthError::BadSignature)));
        // alg "none" and other algorithms.
        let none =
            format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(good.to_string()));
        assert!(matches!(verify(&none, SECRET, 1000), Err(AuthError::Malformed(_))));
        for bad in ["", "a.b", "a.b.c.d", "!!.??.--"] {
            assert!(matches!(verify(bad, SECRET, 1000), Err(AuthError::Malformed(_))), "{bad}");
        }
        for claims in [
            json!({"sub": "ann", "role": "viewer", "exp": 2000}),
            json!({"sub": "", "role": "admin", "exp": 2000}),
            json!({"sub": "ann", "role": "root", "exp": 2000}),
            json!({"sub": "ann", "role": "admin"}),
            json!({"sub": "ann", "role": "admin", "exp": 2000, "nbf": 1500}),
        ] {
            assert!(matches!(verify(&sign(&claims, SECRET), SECRET, 1000), Err(AuthError::Claims(_))), "{claims}");
        }
    }
}
