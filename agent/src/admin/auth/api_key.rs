//! API keys: `kk_live_` or `kk_test_` followed by the URL-safe base64 (no padding) of 32
//! random bytes. An ApiKey resource points at the argon2 hash of the whole key.
//!
//! Argon2 on every request would cost 64 MB and a few hundred milliseconds each, so a key
//! is verified once: the cache maps the key's SHA-256 to the ApiKey it matched and the
//! hash it matched against, and holds while that ApiKey's Secret still has that hash. An
//! unknown key is verified against each usable (not disabled, not expired) ApiKey through
//! a bounded argon2 queue of its own (one at a time), apart from the logins', so a flood
//! of unknown keys cannot hold up logins. A key is refused once its ApiKey is disabled,
//! expired (`key_expired`) or deleted, cached or not.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use http::StatusCode;
use kubekuma_crds::ApiKey;

use super::{Auth, Principal, PrincipalKind, jwt, lock, rfc3339};
use crate::admin::error::ApiError;
use crate::catalog::{ObjKey, Snapshot};
use crate::store::AuthActivity;

/// Prefix of production keys.
pub const LIVE_PREFIX: &str = "kk_live_";
/// Prefix of development keys.
pub const TEST_PREFIX: &str = "kk_test_";

/// Cached verified keys at most (far more than keys exist; a bound against surprises).
const MAX_CACHED: usize = 10_000;
/// A key's last use is recorded at most this often.
const USE_RECORD_EVERY: Duration = Duration::from_secs(60);

/// A new random key.
pub fn generate(test: bool) -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{}{}",
        if test { TEST_PREFIX } else { LIVE_PREFIX },
        URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Whether `text` starts like an API key (and is not a JWT).
pub fn has_prefix(text: &str) -> bool {
    text.starts_with(LIVE_PREFIX) || text.starts_with(TEST_PREFIX)
}

/// Whether `text` is a well-formed key: a prefix and 32 bytes of URL-safe base64.
pub fn well_formed(text: &str) -> bool {
    let body = text
        .strip_prefix(LIVE_PREFIX)
        .or_else(|| text.strip_prefix(TEST_PREFIX));
    body.is_some_and(|b| b.len() == 43 && URL_SAFE_NO_PAD.decode(b).is_ok_and(|v| v.len() == 32))
}

/// Verified keys by SHA-256, and when each ApiKey's use was last recorded.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    verified: HashMap<String, (ObjKey, String)>,
    recorded: HashMap<ObjKey, Instant>,
}

/// The argon2 hash an ApiKey points at, if its Secret has it.
fn hash_of(snap: &Snapshot, key: &ObjKey, k: &ApiKey) -> Option<String> {
    let r = k.spec.key_hash_secret_ref.as_ref()?;
    snap.secrets
        .get(&key.namespace, &r.name, &r.key)
        .map(|v| v.expose_str().trim().to_string())
}

fn expired(k: &ApiKey, now: DateTime<Utc>) -> bool {
    k.spec.expires_at.is_some_and(|t| t <= now)
}

impl Auth {
    pub(crate) async fn authenticate_key(&self, text: &str) -> Result<Principal, ApiError> {
        let refused = || ApiError::unauthorized("invalid API key");
        if !well_formed(text) {
            return Err(refused());
        }
        let digest = jwt::sha256_hex(text);
        let snap = self.snapshot();
        let now = Utc::now();
        let cached = lock(&self.keys).verified.get(&digest).cloned();
        if let Some((id, hash)) = cached {
            match snap.api_keys.get(&id) {
                Some(k) if hash_of(&snap, &id, k).as_deref() == Some(hash.as_str()) => {
                    return self.key_principal(&id, k, now).await;
                }
                _ => {
                    // The ApiKey or its Secret changed: verify again.
                    lock(&self.keys).verified.remove(&digest);
                }
            }
        }
        let candidates: Vec<(ObjKey, String)> = snap
            .api_keys
            .iter()
            .filter(|(_, k)| k.spec.disabled != Some(true) && !expired(k, now))
            .filter_map(|(id, k)| hash_of(&snap, id, k).map(|h| (id.clone(), h)))
            .collect();
        for (id, hash) in candidates {
            let ok = self
                .key_hasher
                .verify(text.as_bytes().to_vec(), Some(hash.clone()))
                .await
                .map_err(|_| {
                    let mut e = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                        "too many API keys being verified; retry in a moment",
                    );
                    e.retry_after = Some(1);
                    e
                })?;
            if ok {
                {
                    let mut cache = lock(&self.keys);
                    if cache.verified.len() >= MAX_CACHED {
                        cache.verified.clear();
                    }
                    cache.verified.insert(digest, (id.clone(), hash));
                }
                let Some(k) = snap.api_keys.get(&id) else {
                    return Err(refused());
                };
                return self.key_principal(&id, k, now).await;
            }
        }
        tracing::debug!("request with an unknown API key");
        Err(refused())
    }

    async fn key_principal(
        &self,
        id: &ObjKey,
        k: &ApiKey,
        now: DateTime<Utc>,
    ) -> Result<Principal, ApiError> {
        if k.spec.disabled == Some(true) {
            tracing::info!(key = %id, "request with a disabled API key");
            return Err(ApiError::unauthorized("the API key is disabled"));
        }
        if let Some(at) = k.spec.expires_at.filter(|t| *t <= now) {
            tracing::info!(key = %id, "request with an expired API key");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "key_expired",
                format!("the API key expired at {}", rfc3339(at)),
            ));
        }
        let record = {
            let mut cache = lock(&self.keys);
            let due = cache
                .recorded
                .get(id)
                .is_none_or(|t| t.elapsed() >= USE_RECORD_EVERY);
            if due {
                if cache.recorded.len() >= MAX_CACHED {
                    cache.recorded.clear();
                }
                cache.recorded.insert(id.clone(), Instant::now());
            }
            due
        };
        if record
            && let Err(e) = self
                .store
                .record_auth_activity(AuthActivity::ApiKeyUse, &id.to_string(), now)
                .await
        {
            tracing::warn!(error = %e, "cannot record an API key's use");
        }
        Ok(Principal {
            id: id.to_string(),
            username: k.spec.name.clone(),
            role: k.spec.role,
            all_namespaces: self.all_namespaces(k.spec.role, &id.namespace),
            namespace: id.namespace.clone(),
            kind: PrincipalKind::ApiKey,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format() {
        let k = generate(false);
        assert!(k.starts_with("kk_live_") && k.len() == 8 + 43, "{k}");
        assert!(well_formed(&k));
        assert!(generate(true).starts_with("kk_test_"));
        assert_ne!(generate(false), k);
        assert!(!well_formed("kk_live_short"));
        assert!(!well_formed(&format!("kk_prod_{}", &k[8..])));
        assert!(!well_formed(&format!("{k}A")));
        assert!(has_prefix("kk_test_x") && !has_prefix("eyJhbGciOi"));
    }
}
