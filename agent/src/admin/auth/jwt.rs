//! Session tokens: HS256 JWTs with the spec's payload `{sub, username, role, sessionId,
//! iat, exp}`. Validation accepts HS256 only (so `alg: none`, RS*/ES* and other tricks are
//! refused before any key is used) and checks `exp` with zero leeway.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The payload of a session token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// `namespace/name` of the LocalUser.
    pub sub: String,
    /// Login name.
    pub username: String,
    /// Role at login time.
    pub role: String,
    /// The `sessions` row.
    pub session_id: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
}

/// Why a token was refused (for the log; clients only see 401).
#[derive(Debug, thiserror::Error)]
#[error("invalid session token: {0}")]
pub struct TokenError(String);

/// Sign `claims` with `secret`.
pub fn sign(claims: &Claims, secret: &[u8]) -> Result<String, TokenError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| TokenError(e.to_string()))
}

/// The claims of `token` if it is an HS256 token signed with `secret` that has not
/// expired.
pub fn verify(token: &str, secret: &[u8]) -> Result<Claims, TokenError> {
    let mut v = Validation::new(Algorithm::HS256);
    v.algorithms = vec![Algorithm::HS256];
    v.leeway = 0;
    v.validate_exp = true;
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &v)
        .map(|d| d.claims)
        .map_err(|e| TokenError(kind_name(&e)))
}

/// The error's kind, without any part of the token.
fn kind_name(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "expired".into(),
        K::InvalidSignature => "bad signature".into(),
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            "algorithm not allowed".into()
        }
        K::MissingRequiredClaim(c) => format!("missing claim {c}"),
        _ => "malformed".into(),
    }
}

/// Lowercase hex SHA-256 of a token or key: what the store and caches keep.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn claims(exp_in: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "kubekuma/admin".into(),
            username: "admin".into(),
            role: "admin".into(),
            session_id: "s1".into(),
            iat: now,
            exp: now + exp_in,
        }
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_refusals() {
        let c = claims(60);
        let t = sign(&c, KEY).unwrap_or_default();
        assert_eq!(verify(&t, KEY).ok(), Some(c.clone()));
        let payload = t.split('.').nth(1).unwrap_or_default();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap_or_default())
            .unwrap_or_default();
        assert!(json.contains("\"sessionId\":\"s1\""), "{json}");
        // Another key.
        assert!(verify(&t, b"another secret, also 32 bytes long!").is_err());
        // Expired, without leeway.
        let old = sign(&claims(-1), KEY).unwrap_or_default();
        assert!(verify(&old, KEY).is_err());
        // alg: none.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(verify(&format!("{header}.{payload}."), KEY).is_err());
        // HS512 with the same key.
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &c,
            &EncodingKey::from_secret(KEY),
        )
        .unwrap_or_default();
        assert!(verify(&hs512, KEY).is_err());
    }
}
