//! API tokens and session ids: 256 random bits from the OS, shown once, stored only as their
//! SHA-256. A token looks like `ofl_` + 43 characters of base64url, so it is recognisable in a
//! leaked file or a secret scanner.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// The start of every API token.
pub const TOKEN_PREFIX: &str = "ofl_";

/// Length of a token: the prefix and 43 characters of base64url (32 bytes).
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 43;

/// The OS random source failed (no entropy available): no secret can be made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct NoRandomness(String);

/// 32 bytes of OS randomness as 43 characters of base64url.
fn random_text() -> Result<String, NoRandomness> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| NoRandomness(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A new API token.
pub fn new_token() -> Result<String, NoRandomness> {
    Ok(format!("{TOKEN_PREFIX}{}", random_text()?))
}

/// A new browser session id (the cookie's value).
pub fn new_session_id() -> Result<String, NoRandomness> {
    random_text()
}

/// The hex SHA-256 of a token or session id: what the store keeps and looks up. No salt or slow
/// hash is needed: the secrets are 256 random bits, not passwords.
pub fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// True if `raw` has the shape of a token (the prefix and 43 base64url characters): anything
/// else is refused without a store lookup.
pub fn is_token_shaped(raw: &str) -> bool {
    raw.len() == TOKEN_LEN
        && raw.starts_with(TOKEN_PREFIX)
        && raw[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// True if `raw` has the shape of a session id.
pub fn is_session_shaped(raw: &str) -> bool {
    raw.len() == 43
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_token_shaped() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_ne!(a, b);
        assert!(a.starts_with("ofl_"), "{a}");
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(is_token_shaped(&a));
        assert!(!is_token_shaped(&a[..TOKEN_LEN - 1]));
        assert!(!is_token_shaped(&format!("xyz_{}", &a[4..])));
        assert!(!is_token_shaped(&a.replace(&a[10..11], "!")));
        let s = new_session_id().expect("session");
        assert!(is_session_shaped(&s));
        assert!(!is_session_shaped(&a));
    }

    #[test]
    fn the_hash_is_hex_sha256_and_never_the_token() {
        let token = new_token().expect("token");
        let h = hash(&token);
        assert_eq!(h.len(), 64);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!h.contains(&token[4..]));
        assert_eq!(h, hash(&token), "stable");
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
