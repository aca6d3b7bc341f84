//! The login flow: rate limits (per client address, per username and address, and a
//! generous one per username that never stops an address that has not failed), one argon2
//! verification (against a dummy hash for unknown usernames, so they cost the same), the
//! second factor, then a session row and its HS256 token in a cookie.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use http::{HeaderMap, StatusCode, header};
use kubekuma_crds::auth::MfaMode;
use kubekuma_crds::{LocalUser, Role};
use serde::Deserialize;

use super::limiter::{Window, client_key};
use super::{Auth, LoginLimits, jwt, local_login_disabled, lock, totp};
use crate::admin::error::{ApiError, Reply, json_reply};
use crate::catalog::{ObjKey, Snapshot};
use crate::store::SessionRow;
use kubekuma_crds::settings::AuthMode;

/// Longest accepted username and password (longer ones are refused before hashing).
const MAX_FIELD: usize = 1024;

/// Purge expired sessions at most this often.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The rate limits of logins (see [`LoginLimits`]): every attempt counts until it turns
/// out not to be a failure (a successful login, a busy answer, a missing second factor).
#[derive(Debug)]
pub(crate) struct Limits {
    /// Attempts per client address, whatever the username.
    by_address: Window<IpAddr>,
    /// Failures per username and client address: what locks a guesser out.
    by_user_address: Window<(String, IpAddr)>,
    /// Failures per username from everywhere: refuses only addresses with failures of
    /// their own for that username, so it never locks the user out of a clean address.
    by_username: Window<String>,
}

impl Limits {
    pub(crate) fn new(l: &LoginLimits) -> Self {
        Limits {
            by_address: Window::new(l.per_address, l.address_period, l.max_tracked),
            by_user_address: Window::new(l.username_failures, l.username_period, l.max_tracked),
            by_username: Window::new(
                l.username_global_failures,
                l.username_global_period,
                l.max_tracked,
            ),
        }
    }

    /// Count an attempt of `user` from `address`, or say how long to wait.
    fn take(&mut self, user: &str, address: IpAddr, now: Instant) -> Result<(), ApiError> {
        let pair = (user.to_string(), address);
        if let Err(wait) = self.by_address.check(&address, now) {
            tracing::warn!(%address, "login refused: too many attempts from this address");
            return Err(ApiError::rate_limited(
                "too many login attempts from this address; retry later",
                seconds(wait),
            ));
        }
        let user_limited = |wait: Duration| {
            ApiError::rate_limited(
                "too many failed logins for this user from this address; retry later",
                seconds(wait),
            )
        };
        if let Err(wait) = self.by_user_address.check(&pair, now) {
            tracing::warn!(%address, "login refused: too many failed logins for one username");
            return Err(user_limited(wait));
        }
        if let Err(wait) = self.by_username.check(&user.to_string(), now)
            && self.by_user_address.count(&pair, now) > 0
        {
            tracing::warn!(%address, "login refused: the username's failures from all addresses are used up and this address failed too");
            return Err(user_limited(wait));
        }
        self.by_address.record(&address, now);
        self.by_user_address.record(&pair, now);
        self.by_username.record(&user.to_string(), now);
        Ok(())
    }

    /// Undo [`Limits::take`] for an attempt that was no failure; `success` also clears the
    /// failures of this username from this address.
    fn give_back(&mut self, user: &str, address: IpAddr, success: bool) {
        let pair = (user.to_string(), address);
        self.by_address.give_back(&address);
        self.by_username.give_back(&user.to_string());
        if success {
            self.by_user_address.clear(&pair);
        } else {
            self.by_user_address.give_back(&pair);
        }
    }
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
    #[serde(default)]
    totp: Option<String>,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "invalid username or password",
    )
}

fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The one LocalUser with this username. Several with the same username (in different
/// namespaces) log in as none of them.
fn find_user<'a>(snap: &'a Snapshot, username: &str) -> Option<(&'a ObjKey, &'a LocalUser)> {
    let mut found = snap
        .local_users
        .iter()
        .filter(|(_, u)| u.spec.username == username);
    let first = found.next()?;
    let others: Vec<String> = found.map(|(k, _)| k.to_string()).collect();
    if !others.is_empty() {
        tracing::error!(
            username,
            users = %format!("{}, {}", first.0, others.join(", ")),
            "several LocalUsers share this username; its logins are refused until only one has it"
        );
        return None;
    }
    Some(first)
}

/// Whether the request came through HTTPS (`X-Forwarded-Proto: https` from the proxy).
pub(crate) fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value of a session token.
pub(crate) fn session_cookie(token: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "token={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// A random UUID (version 4) for a session.
fn session_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What the second factor asks of a user.
enum Mfa {
    /// Nothing.
    None,
    /// A code from this generator.
    Totp(totp_rs::Totp),
    /// Required, but the secret is missing or unusable.
    Broken(String),
}

fn mfa_of(snap: &Snapshot, key: &ObjKey, user: &LocalUser) -> Mfa {
    let mfa = user.spec.mfa.clone().unwrap_or_default();
    let mode = mfa.mode.unwrap_or(MfaMode::Disabled);
    if mode == MfaMode::Disabled {
        return Mfa::None;
    }
    let secret = mfa
        .totp_secret_ref
        .as_ref()
        .map(|r| (r, snap.secrets.get(&key.namespace, &r.name, &r.key)));
    match (mode, secret) {
        (_, Some((_, Some(value)))) => match totp::from_base32(value.expose()) {
            Ok(t) => Mfa::Totp(t),
            Err(e) => Mfa::Broken(e.to_string()),
        },
        (MfaMode::Required, Some((r, None))) => Mfa::Broken(format!(
            "its TOTP secret {}",
            snap.secrets.why_missing(&key.namespace, &r.name, &r.key)
        )),
        (MfaMode::Required, None) => Mfa::Broken("spec.mfa.totpSecretRef is not set".into()),
        _ => Mfa::None,
    }
}

impl Auth {
    pub(crate) async fn login_inner(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        peer: IpAddr,
    ) -> Result<(Reply, String), ApiError> {
        {
            let snap = self.snapshot();
            if snap.effective.auth_mode == AuthMode::Disabled {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "auth_disabled",
                    "login is refused: auth.mode is disabled (KubeKumaSettings spec.auth.mode); the API is read-only without login",
                ));
            }
            if !snap.effective.local_login_enabled {
                tracing::info!(%peer, "login refused: local logins are turned off");
                return Err(local_login_disabled());
            }
        }
        // The parser's messages can quote the body (the password), so they are not passed on.
        let body: LoginBody = serde_json::from_slice(body).map_err(|_| {
            ApiError::bad_request(
                "the body must be JSON {\"username\": …, \"password\": …, \"totp\"?: …}",
            )
        })?;
        if body.username.is_empty() || body.password.is_empty() {
            return Err(ApiError::bad_request("username and password are required"));
        }
        if body.username.len() > MAX_FIELD || body.password.len() > MAX_FIELD {
            return Err(ApiError::bad_request(format!(
                "username and password are limited to {MAX_FIELD} bytes"
            )));
        }
        let address = client_key(peer);
        let user_key = body.username.clone();
        lock(&self.limits).take(&user_key, address, Instant::now())?;
        let give_back = |success: bool| lock(&self.limits).give_back(&user_key, address, success);

        let snap = self.snapshot();
        let user = find_user(&snap, &body.username);
        let phc = user.and_then(|(key, u)| {
            let r = &u.spec.password_hash_secret_ref;
            match snap.secrets.get(&key.namespace, &r.name, &r.key) {
                Some(v) => Some(v.expose_str()),
                None => {
                    tracing::warn!(
                        user = %key,
                        "LocalUser cannot log in: its password hash {}",
                        snap.secrets.why_missing(&key.namespace, &r.name, &r.key)
                    );
                    None
                }
            }
        });
        let usable = phc.is_some();
        let verified = self
            .hasher
            .verify(body.password.into_bytes(), phc)
            .await
            .map_err(|_| {
                give_back(false);
                tracing::warn!(%peer, "login refused: too many logins in progress");
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "too many logins in progress; retry in a moment",
                );
                e.retry_after = Some(1);
                e
            })?;
        let (key, user) = match user {
            Some(u) if verified && usable => u,
            Some((key, _)) => {
                tracing::info!(user = %key, %peer, "login failed: wrong password");
                return Err(invalid_credentials());
            }
            None => {
                tracing::info!(%peer, "login failed: unknown username");
                return Err(invalid_credentials());
            }
        };
        if user.spec.disabled == Some(true) {
            tracing::info!(user = %key, %peer, "login refused: the user is disabled");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "user_disabled",
                "this account is disabled",
            ));
        }
        let id = key.to_string();
        match mfa_of(&snap, key, user) {
            Mfa::None => {}
            Mfa::Broken(why) => {
                give_back(false);
                tracing::error!(user = %key, "login refused: TOTP is required but {why}");
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "mfa_unavailable",
                    "this account requires a TOTP code but has no usable TOTP secret; ask an administrator",
                ));
            }
            Mfa::Totp(generator) => {
                let Some(code) = body.totp.as_deref().filter(|c| !c.trim().is_empty()) else {
                    // The password was right: this attempt does not count.
                    give_back(false);
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "mfa_required",
                        "a TOTP code is required: send it as \"totp\"",
                    ));
                };
                let unix = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
                let step = totp::check(&generator, code, unix);
                let fresh = step.filter(|s| {
                    let mut used = lock(&self.totp_steps);
                    match used.get(&id) {
                        Some(last) if *last >= *s => false,
                        _ => {
                            used.insert(id.clone(), *s);
                            true
                        }
                    }
                });
                if fresh.is_none() {
                    tracing::info!(user = %key, %peer, replayed = step.is_some(), "login failed: wrong TOTP code");
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "invalid_totp",
                        "the TOTP code is wrong or was already used",
                    ));
                }
            }
        }
        give_back(true);
        self.issue_session(
            headers,
            peer,
            key.to_string(),
            user.spec.username.clone(),
            user.spec.role,
        )
        .await
    }

    /// A session for user `id` (a LocalUser's `namespace/name`, or an OIDC user's
    /// `oidc:<sub>`): its row, its token in the reply and in the `token` cookie.
    pub(crate) async fn issue_session(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
        id: String,
        username: String,
        role: Role,
    ) -> Result<(Reply, String), ApiError> {
        let now = Utc::now();
        let max_age_std = self.session_max_age();
        let max_age =
            chrono::Duration::from_std(max_age_std).unwrap_or_else(|_| chrono::Duration::days(7));
        let expires = now + max_age;
        let claims = jwt::Claims {
            sub: id.clone(),
            username,
            role: role.as_str().to_string(),
            session_id: session_id(),
            iat: now.timestamp(),
            exp: expires.timestamp(),
        };
        let token = jwt::sign(&claims, &self.config.session_secret).map_err(|e| {
            tracing::error!(error = %e, "cannot sign a session token");
            ApiError::internal("cannot create a session")
        })?;
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect::<String>());
        let row = SessionRow {
            id: claims.session_id.clone(),
            user_id: id.clone(),
            username: claims.username.clone(),
            role: claims.role.clone(),
            token_hash: jwt::sha256_hex(&token),
            created_at: now,
            expires_at: expires,
            ip_address: Some(peer.to_string()),
            user_agent,
        };
        // The session and the user's last login, together (the session keeps the login
        // before it for `auth/me`).
        self.store.insert_session(row).await.map_err(|e| {
            tracing::error!(error = %e, "cannot record a session");
            ApiError::internal("cannot create a session")
        })?;
        self.purge_now_and_then().await;
        tracing::info!(user = %id, %peer, "logged in");
        let mut reply = json_reply(
            StatusCode::OK,
            &serde_json::json!({
                "success": true,
                "user": {"id": id, "username": claims.username, "role": claims.role},
                "token": token,
            }),
        );
        let cookie = session_cookie(&token, max_age_std, forwarded_https(headers));
        if let Ok(v) = header::HeaderValue::from_str(&cookie) {
            reply.headers_mut().insert(header::SET_COOKIE, v);
        }
        Ok((reply, id))
    }

    /// The lifetime of a new session: the catalog's
    /// `spec.auth.local.sessionMaxAgeSeconds` when the KubeKumaSettings set it, else
    /// `SESSION_MAX_AGE` (default 7 days). It is the JWT's `exp`, the cookie's `Max-Age`
    /// and the `sessions` row's expiry alike.
    pub(crate) fn session_max_age(&self) -> Duration {
        let snap = self.snapshot();
        snap.settings
            .as_ref()
            .and_then(|s| s.spec.auth.as_ref())
            .and_then(|a| a.local.as_ref())
            .and_then(|l| l.session_max_age_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(self.config.max_age, Duration::from_secs)
    }

    async fn purge_now_and_then(&self) {
        {
            let mut last = lock(&self.last_purge);
            if last.is_some_and(|t| t.elapsed() < PURGE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.store.purge_expired_sessions(Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sessions = n, "expired sessions purged"),
            Err(e) => tracing::warn!(error = %e, "cannot purge expired sessions"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_attributes() {
        let c = session_cookie("abc", Duration::from_secs(60), false);
        assert_eq!(
            c,
            "token=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=60"
        );
        assert!(session_cookie("abc", Duration::from_secs(60), true).ends_with("; Secure"));
        let mut h = HeaderMap::new();
        assert!(!forwarded_https(&h));
        h.insert(
            "x-forwarded-proto",
            header::HeaderValue::from_static("HTTPS, http"),
        );
        assert!(forwarded_https(&h));
    }

    #[test]
    fn session_ids_are_uuids() {
        let id = session_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, session_id());
    }
}
