//! API keys: `kk_live_` or `kk_test_` followed by the URL-safe base64 (no padding) of 32
//! random bytes. The first [`KEY_ID_LEN`] characters after the prefix are the key's
//! public identifier, written into its ApiKey as `spec.keyId`; the ApiKey points at the
//! argon2 hash of the whole key.
//!
//! Argon2 on every request would cost 64 MB and a few hundred milliseconds each, so a
//! presented key goes through these steps, cheapest first:
//!
//! 1. The cache of verified keys (the key's SHA-256 → the ApiKey it matched and the hash it
//!    matched against, holding while that ApiKey's Secret still has that hash): a valid,
//!    already verified key is answered from memory, never queued or rate limited.
//! 2. The client's budget of failed key attempts (a token bucket per address, like the
//!    push tokens'): an exhausted client gets 429 before anything is looked up; a key that
//!    authenticates gives its try back.
//! 3. The key's identifier: the one usable ApiKey with that `spec.keyId` is verified with
//!    its own hash (one argon2, on a bounded queue of its own apart from the logins'). An
//!    identifier no ApiKey has costs no argon2 at all.
//! 4. Only when no ApiKey has the identifier: the ApiKeys without `spec.keyId` (manifests
//!    from before identifiers; `validate` warns about them), each verified in turn.
//!
//! A key is refused once its ApiKey is disabled, expired (`key_expired`) or deleted,
//! cached or not.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use http::StatusCode;
use kubekuma_crds::ApiKey;
pub use kubekuma_crds::auth::KEY_ID_LEN;

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

/// The public identifier of a well-formed key: the first [`KEY_ID_LEN`] characters after
/// its prefix (what `spec.keyId` of its ApiKey holds).
pub fn key_id(text: &str) -> Option<&str> {
    let body = text
        .strip_prefix(LIVE_PREFIX)
        .or_else(|| text.strip_prefix(TEST_PREFIX))?;
    well_formed(text).then(|| body.get(..KEY_ID_LEN)).flatten()
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

/// What checking a key that is not in the cache found.
enum Verified {
    /// It matches this ApiKey's hash.
    Matched(ObjKey, String),
    /// No usable ApiKey has it.
    Unknown,
}

fn busy() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many API keys being verified; retry in a moment",
    );
    e.retry_after = Some(1);
    e
}

fn usable(k: &ApiKey, now: DateTime<Utc>) -> bool {
    k.spec.disabled != Some(true) && !expired(k, now)
}

impl Auth {
    pub(crate) async fn authenticate_key(
        &self,
        text: &str,
        peer: IpAddr,
    ) -> Result<Principal, ApiError> {
        let refused = || ApiError::unauthorized("invalid API key");
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
        if let Err(wait) = lock(&self.key_limiter).take(peer, Instant::now()) {
            tracing::debug!(%peer, "API key refused: too many invalid keys from this address");
            return Err(ApiError::rate_limited(
                "too many invalid API keys from this address; retry later",
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            ));
        }
        let give_back = || lock(&self.key_limiter).give_back(peer, Instant::now());
        let (id, hash) = match self.verify_new(text, &snap, now).await {
            Ok(Verified::Matched(id, hash)) => (id, hash),
            Ok(Verified::Unknown) => {
                tracing::debug!(%peer, "request with an unknown API key");
                return Err(refused());
            }
            Err(e) => {
                // Busy is the agent's state, not the client's failure.
                give_back();
                return Err(e);
            }
        };
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
        let principal = self.key_principal(&id, k, now).await?;
        give_back();
        Ok(principal)
    }

    /// Verify a key that is not in the cache: by its identifier (one argon2 at most, none
    /// when no ApiKey has it), else against the ApiKeys without an identifier.
    async fn verify_new(
        &self,
        text: &str,
        snap: &Snapshot,
        now: DateTime<Utc>,
    ) -> Result<Verified, ApiError> {
        let Some(kid) = key_id(text) else {
            return Ok(Verified::Unknown);
        };
        let by_id = snap
            .api_keys
            .iter()
            .find(|(_, k)| k.spec.key_id.as_deref() == Some(kid));
        let candidates: Vec<(ObjKey, String)> = match by_id {
            Some((id, k)) => usable(k, now)
                .then(|| hash_of(snap, id, k).map(|h| (id.clone(), h)))
                .flatten()
                .into_iter()
                .collect(),
            None => snap
                .api_keys
                .iter()
                .filter(|(_, k)| k.spec.key_id.is_none() && usable(k, now))
                .filter_map(|(id, k)| hash_of(snap, id, k).map(|h| (id.clone(), h)))
                .collect(),
        };
        for (id, hash) in candidates {
            let ok = self
                .key_hasher
                .verify(text.as_bytes().to_vec(), Some(hash.clone()))
                .await
                .map_err(|_| busy())?;
            if ok {
                return Ok(Verified::Matched(id, hash));
            }
        }
        Ok(Verified::Unknown)
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
            all_namespaces: self.all_namespaces(&id.namespace),
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
        let id = key_id(&k).unwrap_or_default();
        assert_eq!(id, &k[8..20]);
        assert!(kubekuma_crds::auth::valid_key_id(id));
        assert_eq!(key_id("kk_live_short"), None);
    }
}
