//! Authentication of the admin API: LocalUser logins (argon2id PHC hashes in Secrets,
//! optional TOTP), HS256 JWT sessions revocable through the `sessions` table, and
//! `kk_live_…` / `kk_test_…` API keys.
//!
//! - `config`: `SESSION_SECRET`, `SESSION_MAX_AGE`, `KUBE_NAMESPACE` (the home namespace), login limits.
//! - [`password`]: argon2id hashes, verified at most two at a time with a bounded queue.
//! - [`jwt`]: session tokens (HS256 only, no leeway).
//! - [`totp`]: the second factor.
//! - [`api_key`]: key format and the cache that keeps argon2 off the request path.
//! - [`manifests`]: what `kubekuma hash-password` and `kubekuma api-key create` print.
//! - `login`: the login flow with its rate limits (`limiter`).
//! - [`csrf`]: what a cookie-authenticated write must carry.
//! - [`oidc`]: OpenID Connect logins (`auth.mode: oidc`) ending in the same sessions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, StatusCode, header};
use tokio::sync::watch;

use super::error::{ApiError, Reply, json_reply};
use super::roles::{Access, Area, Role, allowed};
use crate::catalog::{ObjKey, Snapshot};
use crate::push::UnknownTokenLimiter;
use crate::store::{AuthActivity, Store};
use kubekuma_crds::settings::AuthMode;

pub mod api_key;
mod config;
pub mod csrf;
pub mod jwt;
mod limiter;
mod login;
pub mod manifests;
pub mod oidc;
pub mod password;
pub mod totp;

pub use config::{
    AuthConfig, ConfigError, LoginLimits, MIN_SECRET_LEN, SECRET_FILE, ShortSecret, check_secret,
    home_namespace_from_env,
};

/// Name of the session cookie.
pub const COOKIE: &str = "token";

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `namespace/name` of the LocalUser or ApiKey.
    pub id: String,
    /// The login name (a key's `spec.name` for API keys).
    pub username: String,
    /// Role.
    pub role: Role,
    /// The namespace of the LocalUser or ApiKey resource.
    pub namespace: String,
    /// Whether it acts on every namespace: only principals of the home namespace do; any
    /// other is confined to its own namespace, whatever its role.
    pub all_namespaces: bool,
    /// Session or API key.
    pub kind: PrincipalKind,
}

/// How a principal authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A session JWT; the session's ID.
    Session(String),
    /// An API key.
    ApiKey,
    /// Nobody: `spec.auth.mode: disabled` serves reads to everyone as this principal (a
    /// viewer of every namespace) and refuses every write.
    Anonymous,
}

impl Principal {
    /// Whether the role table lets this principal `access` `area`.
    pub fn can(&self, area: Area, access: Access) -> bool {
        allowed(self.role, area, access)
    }

    /// Whether resources of namespace `ns` are visible to (and changeable by) it.
    pub fn sees_namespace(&self, ns: &str) -> bool {
        self.all_namespaces || self.namespace == ns
    }

    /// `user:<id>` or `apikey:<id>` for audit records.
    pub fn actor(&self) -> String {
        match self.kind {
            PrincipalKind::Session(_) => format!("user:{}", self.id),
            PrincipalKind::ApiKey => format!("apikey:{}", self.id),
            PrincipalKind::Anonymous => "anonymous".to_string(),
        }
    }
}

/// Logins, sessions and API keys.
pub struct Auth {
    config: AuthConfig,
    store: Store,
    catalog: watch::Receiver<Arc<Snapshot>>,
    hasher: password::Hasher,
    /// API keys not yet in the cache get their own slot, so a flood of unknown keys
    /// cannot take the logins' slots (the memory bound is one more hash).
    key_hasher: password::Hasher,
    limits: Mutex<login::Limits>,
    keys: Mutex<api_key::KeyCache>,
    /// Failed API key attempts per client address, checked before any key is looked up.
    key_limiter: Mutex<UnknownTokenLimiter>,
    /// The last TOTP step accepted per user: a code is accepted once.
    totp_steps: Mutex<HashMap<String, u64>>,
    last_purge: Mutex<Option<Instant>>,
    /// OpenID Connect: the provider's client, discovery cache, exchange bound.
    oidc: oidc::Oidc,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Lock a mutex, also after a panic elsewhere (the data are counters and caches).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `namespace/name` → key.
fn parse_id(id: &str) -> Option<ObjKey> {
    id.split_once('/').map(|(ns, n)| ObjKey::new(ns, n))
}

/// The credential a request carries, as [`Auth::authenticate`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `Authorization: Bearer …` (a session JWT or an API key); wins over a cookie.
    Bearer(&'a str),
    /// The `token` session cookie (only without `Authorization: Bearer`): the one a
    /// browser sends on its own, so writes by it are checked against CSRF ([`csrf`]).
    Cookie(&'a str),
    /// Neither.
    None,
}

impl<'a> Credential<'a> {
    /// The credential of a request's headers.
    pub fn of(headers: &'a HeaderMap) -> Self {
        match (bearer(headers), cookie_token(headers)) {
            (Some(t), _) => Credential::Bearer(t),
            (None, Some(t)) => Credential::Cookie(t),
            (None, None) => Credential::None,
        }
    }
}

/// The value of `Authorization: Bearer …`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// The `token` cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("token="))
        .map(|t| t.trim_matches('"'))
        .find(|t| !t.is_empty())
}

/// 403 for a LocalUser login or session while password logins are off: `spec.auth.local.enabled`
/// is false, or `spec.auth.mode` is oidc without `local.enabled: true`.
pub(crate) fn local_login_disabled() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "local_login_disabled",
        "password logins are off: KubeKumaSettings spec.auth.local.enabled is false, or spec.auth.mode is oidc \
         (log in at /api/v1/auth/oidc/login) without spec.auth.local.enabled: true",
    )
}

/// 403 for a login, logout or write while `spec.auth.mode` is `disabled`.
pub fn auth_disabled_error() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "auth_disabled",
        "writes are refused: auth.mode is disabled (KubeKumaSettings spec.auth.mode); the API is read-only without login",
    )
}

/// The answer to a login, and the ID (`namespace/name`) of the LocalUser it logged in.
pub struct Login {
    /// The reply to send.
    pub reply: Reply,
    /// The user, when the login succeeded.
    pub user_id: Option<String>,
}

impl Auth {
    /// Authenticate against the users and keys of the current catalog.
    pub fn new(config: AuthConfig, store: Store, catalog: watch::Receiver<Arc<Snapshot>>) -> Self {
        let l = &config.limits;
        Auth {
            hasher: password::Hasher::new(l.argon2_concurrency, l.argon2_queue),
            key_hasher: password::Hasher::new(1, l.argon2_queue),
            limits: Mutex::new(login::Limits::new(l)),
            keys: Mutex::new(api_key::KeyCache::default()),
            key_limiter: Mutex::new(UnknownTokenLimiter::new(
                l.api_key_failures,
                l.api_key_period,
                l.max_tracked,
            )),
            totp_steps: Mutex::new(HashMap::new()),
            last_purge: Mutex::new(None),
            oidc: oidc::Oidc::new(),
            config,
            store,
            catalog,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The most argon2 verifications that ever ran at once (never above
    /// [`LoginLimits::argon2_concurrency`]).
    pub fn argon2_high_water(&self) -> usize {
        self.hasher.high_water()
    }

    /// How many argon2 verifications ran (logins, and API keys not yet in the cache).
    pub fn argon2_runs(&self) -> usize {
        self.hasher.runs() + self.key_hasher.runs()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.catalog.borrow().clone()
    }

    /// Only principals of the home namespace act on every namespace, whatever the role of
    /// the others (an admin of `team-a` administers `team-a`).
    fn all_namespaces(&self, namespace: &str) -> bool {
        namespace == self.config.home_namespace
    }

    /// Whether the catalog's `spec.auth.mode` is `disabled`: no login, reads for everyone
    /// (see [`Auth::anonymous`]), no writes.
    pub fn auth_disabled(&self) -> bool {
        self.snapshot().effective.auth_mode == AuthMode::Disabled
    }

    /// The principal of every request under `spec.auth.mode: disabled`: a viewer of every
    /// namespace (the mode is for trusted networks), whatever credentials it carries.
    pub fn anonymous(&self) -> Principal {
        Principal {
            id: "anonymous".into(),
            username: "anonymous".into(),
            role: Role::Viewer,
            namespace: self.config.home_namespace.clone(),
            all_namespaces: true,
            kind: PrincipalKind::Anonymous,
        }
    }

    /// The principal of a request from `peer`: a `token` cookie or `Authorization:
    /// Bearer` JWT of a live session, or `Authorization: Bearer kk_…` API key (failed key
    /// attempts limited per `peer`, see [`api_key`]). 401 otherwise, 429 once `peer` sent
    /// too many invalid keys. Under `spec.auth.mode: disabled`, [`Auth::anonymous`]
    /// whatever the request carries (the routes refuse its writes).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<Principal, ApiError> {
        if self.auth_disabled() {
            return Ok(self.anonymous());
        }
        match Credential::of(headers) {
            Credential::Bearer(t) if api_key::has_prefix(t) => {
                if !self.snapshot().effective.api_keys_enabled {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "api_keys_disabled",
                        "API keys are turned off by KubeKumaSettings spec.auth.apiKeys.enabled; \
                         log in with a session instead",
                    ));
                }
                self.authenticate_key(t, peer).await
            }
            Credential::Bearer(t) | Credential::Cookie(t) => self.authenticate_session(t).await,
            Credential::None => Err(ApiError::unauthorized(
                "log in first (the token cookie or Authorization: Bearer)",
            )),
        }
    }

    async fn authenticate_session(&self, token: &str) -> Result<Principal, ApiError> {
        let refused =
            || ApiError::unauthorized("the session is invalid or has ended; log in again");
        let claims = match jwt::verify(token, &self.config.session_secret) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "session token refused");
                return Err(refused());
            }
        };
        let now = Utc::now();
        let row = self
            .store
            .live_session(&jwt::sha256_hex(token), now)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read sessions");
                ApiError::internal("cannot read sessions")
            })?;
        let Some(row) = row.filter(|r| r.id == claims.session_id && r.user_id == claims.sub) else {
            tracing::debug!(user = %claims.sub, "session revoked or expired");
            return Err(refused());
        };
        let snap = self.snapshot();
        if oidc::is_oidc_id(&row.user_id) {
            return self.oidc_principal(&snap, row);
        }
        let user = parse_id(&row.user_id).and_then(|k| snap.local_users.get(&k).map(|u| (k, u)));
        let Some((key, user)) = user else {
            tracing::info!(user = %row.user_id, "session refused: the LocalUser no longer exists");
            return Err(refused());
        };
        if user.spec.disabled == Some(true) {
            tracing::info!(user = %row.user_id, "session refused: the LocalUser is disabled");
            return Err(refused());
        }
        if !snap.effective.local_login_enabled {
            tracing::info!(user = %row.user_id, "session refused: local logins are turned off");
            return Err(local_login_disabled());
        }
        Ok(Principal {
            id: row.user_id.clone(),
            username: user.spec.username.clone(),
            role: user.spec.role,
            all_namespaces: self.all_namespaces(&key.namespace),
            namespace: key.namespace,
            kind: PrincipalKind::Session(row.id),
        })
    }

    /// `POST /api/v1/auth/login` with a JSON body `{username, password, totp?}`.
    pub async fn login(&self, headers: &HeaderMap, body: &[u8], peer: IpAddr) -> Reply {
        self.log_in(headers, body, peer).await.reply
    }

    /// [`Auth::login`], also saying who logged in (for the audit record).
    pub async fn log_in(&self, headers: &HeaderMap, body: &[u8], peer: IpAddr) -> Login {
        match self.login_inner(headers, body, peer).await {
            Ok((reply, user_id)) => Login {
                reply,
                user_id: Some(user_id),
            },
            Err(e) => Login {
                reply: e.into_reply(),
                user_id: None,
            },
        }
    }

    /// `POST /api/v1/auth/logout`: revoke the session and clear the cookie.
    pub async fn logout(&self, principal: &Principal) -> Reply {
        let id = match &principal.kind {
            PrincipalKind::Session(id) => id,
            PrincipalKind::Anonymous => return auth_disabled_error().into_reply(),
            PrincipalKind::ApiKey => {
                return ApiError::bad_request(
                    "API keys have no session to end; disable or delete the ApiKey to revoke it",
                )
                .into_reply();
            }
        };
        if let Err(e) = self.store.delete_session(id).await {
            tracing::error!(error = %e, "cannot revoke a session");
            return ApiError::internal("cannot revoke the session").into_reply();
        }
        tracing::info!(user = %principal.id, "logged out");
        let mut r = json_reply(StatusCode::OK, &serde_json::json!({"success": true}));
        r.headers_mut().insert(
            header::SET_COOKIE,
            header::HeaderValue::from_static(
                "token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
            ),
        );
        r
    }

    /// `GET /api/v1/auth/me`; `lastLoginAt` is the login before this session's (null for
    /// a user's first login and for API keys).
    pub async fn me(&self, principal: &Principal) -> Reply {
        let last = match &principal.kind {
            PrincipalKind::Session(id) => self
                .store
                .session_previous_login(id)
                .await
                .map_err(|e| tracing::warn!(error = %e, "cannot read the previous login"))
                .ok()
                .flatten(),
            PrincipalKind::ApiKey | PrincipalKind::Anonymous => None,
        };
        json_reply(
            StatusCode::OK,
            &serde_json::json!({
                "id": principal.id,
                "username": principal.username,
                "role": principal.role.as_str(),
                "namespace": principal.namespace,
                "authSource": match principal.kind {
                    PrincipalKind::ApiKey => "apiKey",
                    PrincipalKind::Session(_) if oidc::is_oidc_id(&principal.id) => "oidc",
                    PrincipalKind::Session(_) => "local",
                    PrincipalKind::Anonymous => "anonymous",
                },
                "lastLoginAt": last.map(rfc3339),
            }),
        )
    }

    /// The last login of the LocalUser `id` (`namespace/name`).
    pub async fn last_login(&self, id: &str) -> Option<DateTime<Utc>> {
        self.store
            .auth_activity(AuthActivity::UserLogin, id)
            .await
            .map_err(|e| tracing::warn!(error = %e, "cannot read the last login"))
            .ok()
            .flatten()
    }

    /// The last use of the ApiKey `id` (`namespace/name`), recorded at most once a minute.
    pub async fn last_key_use(&self, id: &str) -> Option<DateTime<Utc>> {
        self.store
            .auth_activity(AuthActivity::ApiKeyUse, id)
            .await
            .map_err(|e| tracing::warn!(error = %e, "cannot read the last key use"))
            .ok()
            .flatten()
    }
}
