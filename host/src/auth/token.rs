//! Static API tokens: how they are made, stored and recognized.
//!
//! The config holds only each token's sha256, never the token. A plain
//! sha256 is enough because the tokens are not passwords: `opal token new`
//! makes them from 32 random bytes, so there is no dictionary to try and
//! 2^256 guesses to make; a slow password hash (argon2, bcrypt) would only
//! add milliseconds to every request. The presented token's hash is compared
//! with every configured hash in constant time, without stopping at a match,
//! so response times say nothing about how close a guess was.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Principal, Role, Scope};

/// The prefix of tokens made by `opal token new`, so they are recognizable in a leak scan.
pub const TOKEN_PREFIX: &str = "opal_";

/// The sha256 of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<TokenHash, String> {
        let bytes = hex::decode(text).map_err(|_| format!("{text:?} is not a sha256 (64 hex digits)"))?;
        bytes.try_into().map(TokenHash).map_err(|_| format!("{text:?} is not a sha256 (64 hex digits)"))
    }

    /// As 64 lowercase hex digits.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

/// One configured API token (`[[auth.tokens]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Who holds it: recorded as `user:<name>`.
    pub name: String,
    /// The sha256 of the token.
    pub hash: TokenHash,
    /// Its role.
    pub role: Role,
    /// Its targets (`Scope::All` for admins).
    pub scope: Scope,
}

/// The principal whose token is `token`, if any.
pub(super) fn find(tokens: &[ApiToken], token: &str) -> Option<Principal> {
    let presented = TokenHash::of(token);
    let mut found = None;
    for entry in tokens {
        // No early exit: every entry is compared, match or not.
        if bool::from(entry.hash.0.ct_eq(&presented.0)) {
            found = Some(entry);
        }
    }
    found.map(|entry| Principal {
        name: format!("user:{}", entry.name),
        role: entry.role,
        scope: entry.scope.clone(),
        expires: None,
    })
}

/// A fresh token (`opal_` + 43 base64url characters of 32 random bytes) and its hash.
pub fn generate_token() -> Result<(String, TokenHash), String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the operating system: {e}"))?;
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = TokenHash::of(&token);
    Ok((token, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_found_by_their_hash_only() {
        let (token, hash) = generate_token().unwrap();
        assert!(token.starts_with("opal_") && token.len() == 48, "{token}");
        assert_eq!(TokenHash::from_hex(&hash.to_hex()), Ok(hash));
        let tokens = [ApiToken { name: "ci".into(), hash, role: Role::Viewer, scope: Scope::All }];
        assert_eq!(find(&tokens, &token).map(|p| p.name), Some("user:ci".into()));
        assert_eq!(find(&tokens, &format!("{token}x")), None);
        assert_ne!(generate_token().unwrap().0, token);
        assert!(TokenHash::from_hex("abc").is_err());
    }
}
