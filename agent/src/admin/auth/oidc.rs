//! OpenID Connect login (`spec.auth.mode: oidc`) through the `openidconnect` crate:
//! discovery of the issuer (cached, retried after a failure, refreshed now and then),
//! the authorization code flow with PKCE (S256), `state` and `nonce`, and ID-token
//! validation (signature against the provider's keys, issuer, audience, expiry, nonce).
//! The user's groups (`spec.auth.oidc.groupsClaim`) map to a role through
//! `spec.auth.oidc.roleMapping` (when the ID token lacks that claim, it is read from the
//! provider's UserInfo endpoint for the same subject); a user in no mapped group is refused.
//!
//! - `GET /api/v1/auth/oidc/login[?next=/path]`: 303 to the provider. The flow's
//!   `state`, `nonce`, PKCE verifier and `next` travel in the `kk_oidc` cookie, an HS256
//!   token signed with the session secret (HttpOnly, `SameSite=Lax` so that it comes back
//!   with the provider's redirect, ten minutes): nothing is kept on the agent, so a
//!   stranger calling the route over and over fills no memory.
//! - `GET /api/v1/auth/oidc/callback`: checks the cookie and `state`, exchanges the code
//!   (at most [`MAX_EXCHANGES`] at once), validates the ID token, maps the groups and
//!   starts a session of the same kind as a LocalUser login (same `token` cookie, same
//!   `sessions` table, so logout, `auth/me`, roles and CSRF rules all apply), then 303 to
//!   `next` (a path on this agent) or `/`.
//!
//! Calls to the provider go through the workspace's reqwest (no redirects followed,
//! timeouts, bodies up to [`MAX_BODY`] bytes). The client secret comes from the Secret
//! that `spec.auth.oidc.clientSecretRef` names, in the agent's home namespace, and is never
//! logged or put in an error. OIDC principals are of the home namespace (they act on
//! every namespace, as far as their role allows); their session ID is `oidc:<sub>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use http::{HeaderMap, StatusCode, header};
use kubekuma_crds::Role;
use kubekuma_crds::settings::AuthMode;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthType, AuthorizationCode, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, IdTokenClaims, IdTokenFields, IdTokenVerifier, IssuerUrl, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse as _, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore};

use super::{Auth, Principal, PrincipalKind};
use crate::admin::error::{ApiError, Reply};
use crate::admin::headers::is_local_location;
use crate::catalog::Snapshot;
use crate::secrets::SecretValue;
use crate::store::SessionRow;

/// `GET`: start a login at the provider.
pub const LOGIN_PATH: &str = "/api/v1/auth/oidc/login";
/// `GET`: where the provider sends the browser back.
pub const CALLBACK_PATH: &str = "/api/v1/auth/oidc/callback";
/// The cookie carrying a login in progress.
pub const FLOW_COOKIE: &str = "kk_oidc";
/// How long a login may stay at the provider.
pub const FLOW_TTL: Duration = Duration::from_secs(600);
/// Largest body read from the provider.
pub const MAX_BODY: usize = 1024 * 1024;
/// Token exchanges running at once; more get 503 `busy`.
pub const MAX_EXCHANGES: usize = 16;
/// Default scopes (`openid` is always added).
pub const DEFAULT_SCOPES: &[&str] = &["openid", "profile", "email"];
/// Default claim holding the groups.
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// Whole request to the provider.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to the provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A successful discovery is reused this long (then refreshed, for rotated keys).
const REFRESH_AFTER: Duration = Duration::from_secs(900);
/// After a failed discovery, the next attempt waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// The audience of the flow cookie's token, so no other token of ours passes as one.
const FLOW_AUDIENCE: &str = "kubekuma-oidc-flow";
/// Longest accepted `next`.
const MAX_NEXT: usize = 512;

/// Every claim of the ID token beyond the standard ones (the groups claim is looked up here
/// by its configured name).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct OtherClaims(serde_json::Map<String, serde_json::Value>);

impl AdditionalClaims for OtherClaims {}

type IdFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<IdFields, CoreTokenType>;
type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a call to the provider failed (never carries the client secret: it is sent in a
/// header or form body, which no message quotes).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be made or answered.
    #[error("request to {url} failed: {source}")]
    Request {
        /// Where (the provider's endpoint, without query).
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The answer was larger than [`MAX_BODY`].
    #[error("the answer of {url} exceeds {MAX_BODY} bytes")]
    TooLarge {
        /// Where.
        url: String,
    },
    /// The answer could not be passed on.
    #[error("the answer of {url} is malformed: {source}")]
    Malformed {
        /// Where.
        url: String,
        /// Why.
        source: http::Error,
    },
}

/// The OIDC part of [`Auth`]: the client to the provider, the discovery cache and the
/// bound on concurrent exchanges.
pub struct Oidc {
    http: reqwest::Client,
    discovered: Mutex<Option<Discovered>>,
    exchanges: Arc<Semaphore>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc").finish_non_exhaustive()
    }
}

/// The last discovery of an issuer.
struct Discovered {
    issuer: String,
    /// The metadata (with the keys), or why there are none.
    result: Result<Arc<CoreProviderMetadata>, String>,
    /// Not asked again before this.
    next_try: Instant,
}

/// `spec.auth.oidc` of the current catalog with its defaults and its Secret read.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Issuer URL.
    pub issuer: String,
    /// Client ID.
    pub client_id: String,
    /// Client secret (a public client without).
    pub client_secret: Option<SecretValue>,
    /// The callback URL registered at the provider.
    pub redirect_url: String,
    /// Scopes asked for, besides `openid`.
    pub scopes: Vec<String>,
    /// The claim holding the groups.
    pub groups_claim: String,
    /// Group → role.
    pub roles: Vec<(String, Role)>,
}

impl Settings {
    /// The OIDC settings of `snap`: `Ok(None)` unless `auth.mode` is oidc; an error naming
    /// the field when something a login needs is missing.
    /// The Secret of `clientSecretRef` is read in `home`, the agent's own namespace (the
    /// settings are cluster-wide).
    pub fn of(snap: &Snapshot, home: &str) -> Result<Option<Settings>, String> {
        if snap.effective.auth_mode != AuthMode::Oidc {
            return Ok(None);
        }
        let settings = snap.settings.as_ref();
        let Some(o) = settings
            .and_then(|s| s.spec.auth.as_ref())
            .and_then(|a| a.oidc.as_ref())
        else {
            return Err("spec.auth.oidc is not set".into());
        };
        let required = |v: &Option<String>, field: &str| {
            v.clone()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("spec.auth.oidc.{field} is not set"))
        };
        let namespace = home;
        let client_secret = match &o.client_secret_ref {
            None => None,
            Some(r) => match snap.secrets.get(namespace, &r.name, &r.key) {
                Some(v) => Some(v.clone()),
                None => {
                    return Err(format!(
                        "spec.auth.oidc.clientSecretRef: {}",
                        snap.secrets.why_missing(namespace, &r.name, &r.key)
                    ));
                }
            },
        };
        Ok(Some(Settings {
            issuer: required(&o.issuer, "issuer")?,
            client_id: required(&o.client_id, "clientId")?,
            client_secret,
            redirect_url: required(&o.redirect_url, "redirectUrl")?,
            scopes: match &o.scopes {
                Some(s) => s.clone(),
                None => DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
            }
            .into_iter()
            .filter(|s| s != "openid")
            .collect(),
            groups_claim: o
                .groups_claim
                .clone()
                .unwrap_or_else(|| DEFAULT_GROUPS_CLAIM.to_string()),
            roles: o
                .role_mapping
                .iter()
                .map(|m| (m.group.clone(), m.role))
                .collect(),
        }))
    }

    /// The highest role the groups of `claims` map to.
    pub fn role_of(&self, claims: &OtherClaims) -> Option<Role> {
        let groups: Vec<&str> = match claims.0.get(&self.groups_claim) {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            _ => Vec::new(),
        };
        // `Role` orders admin < editor < viewer: the smallest is the highest.
        self.roles
            .iter()
            .filter(|(g, _)| groups.contains(&g.as_str()))
            .map(|(_, r)| *r)
            .min()
    }
}

/// A login in progress, as the `kk_oidc` cookie carries it (signed, not secret from the
/// browser that started it).
#[derive(Debug, Deserialize, Serialize)]
struct Flow {
    aud: String,
    exp: i64,
    /// The issuer the login started at (a changed setting ends the login).
    iss: String,
    state: String,
    nonce: String,
    verifier: String,
    next: String,
}

impl Default for Oidc {
    fn default() -> Self {
        Self::new()
    }
}

impl Oidc {
    /// A client with the bounds above and no redirects followed (the spec forbids them at
    /// the token endpoint, and they would turn the agent into anyone's fetcher).
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("kubekuma/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot build the OIDC HTTP client; using defaults");
                reqwest::Client::new()
            });
        Oidc {
            http,
            discovered: Mutex::new(None),
            exchanges: Arc::new(Semaphore::new(MAX_EXCHANGES)),
        }
    }

    /// The provider's metadata and keys: cached, asked again after [`REFRESH_AFTER`], and
    /// after a failure not before [`RETRY_AFTER`] (a failed refresh keeps the old ones).
    /// One discovery at a time.
    pub async fn metadata(&self, issuer: &str) -> Result<Arc<CoreProviderMetadata>, String> {
        let mut cached = self.discovered.lock().await;
        let now = Instant::now();
        if let Some(d) = cached.as_ref()
            && d.issuer == issuer
            && now < d.next_try
        {
            return d.result.clone();
        }
        let previous = cached
            .take()
            .filter(|d| d.issuer == issuer)
            .and_then(|d| d.result.ok());
        let found = discover(&self.http, issuer).await;
        let (result, next_try) = match (found, previous) {
            (Ok(m), _) => {
                tracing::info!(issuer, "OpenID provider discovered");
                (Ok(Arc::new(m)), now + REFRESH_AFTER)
            }
            (Err(e), Some(old)) => {
                tracing::warn!(issuer, error = %e, "OpenID provider not reachable; keeping its previous metadata and keys");
                (Ok(old), now + RETRY_AFTER)
            }
            (Err(e), None) => {
                tracing::error!(issuer, error = %e, "spec.auth.oidc.issuer: OpenID provider discovery failed; OIDC logins are refused until it succeeds (retried in {}s)", RETRY_AFTER.as_secs());
                (Err(e), now + RETRY_AFTER)
            }
        };
        *cached = Some(Discovered {
            issuer: issuer.to_string(),
            result: result.clone(),
            next_try,
        });
        result
    }

    /// Forget the cached metadata of `issuer` (keys may have rotated).
    async fn forget(&self, issuer: &str) {
        let mut cached = self.discovered.lock().await;
        if cached.as_ref().is_some_and(|d| d.issuer == issuer) {
            *cached = None;
        }
    }
}

/// Discover `issuer` (its metadata, then its keys).
async fn discover(http: &reqwest::Client, issuer: &str) -> Result<CoreProviderMetadata, String> {
    let url = IssuerUrl::new(issuer.to_string()).map_err(|e| format!("invalid issuer: {e}"))?;
    let client = http.clone();
    let call = move |req: HttpRequest| send(client.clone(), req);
    CoreProviderMetadata::discover_async(url, &call)
        .await
        .map_err(|e| error_chain(&e))
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !s.contains(&more) {
            s.push_str(": ");
            s.push_str(&more);
        }
        cause = c.source();
    }
    s
}

/// One request to the provider through reqwest, its answer read up to [`MAX_BODY`].
async fn send(client: reqwest::Client, req: HttpRequest) -> Result<HttpResponse, HttpError> {
    let (parts, body) = req.into_parts();
    let mut shown = parts.uri.to_string();
    if let Some(q) = shown.find('?') {
        shown.truncate(q);
    }
    let request_error = |source: reqwest::Error| HttpError::Request {
        url: shown.clone(),
        source: source.without_url(),
    };
    let mut resp = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(request_error)?;
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(HttpError::TooLarge { url: shown });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(request_error)? {
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(HttpError::TooLarge { url: shown });
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut out = http::Response::builder().status(resp.status());
    if let Some(h) = out.headers_mut() {
        *h = resp.headers().clone();
    }
    out.body(bytes)
        .map_err(|source| HttpError::Malformed { url: shown, source })
}

/// The client of `settings` over discovered `metadata`.
fn client(settings: &Settings, metadata: &CoreProviderMetadata) -> Result<OidcClient, String> {
    let redirect = RedirectUrl::new(settings.redirect_url.clone())
        .map_err(|e| format!("spec.auth.oidc.redirectUrl: {e}"))?;
    let secret = settings
        .client_secret
        .as_ref()
        .map(|s| ClientSecret::new(s.expose_str()));
    let basic = metadata
        .token_endpoint_auth_methods_supported()
        .is_none_or(|m| m.contains(&CoreClientAuthMethod::ClientSecretBasic));
    let client = OidcClient::from_provider_metadata(
        metadata.clone(),
        ClientId::new(settings.client_id.clone()),
        secret,
    )
    .set_redirect_uri(redirect);
    Ok(if basic {
        client
    } else {
        client.set_auth_type(AuthType::RequestBody)
    })
}

/// `next` of a login: a path on this agent (no other host, no scheme), else `/`.
fn safe_next(next: Option<&str>) -> Result<String, ApiError> {
    let Some(next) = next.filter(|n| !n.is_empty()) else {
        return Ok("/".into());
    };
    let ok = next.len() <= MAX_NEXT
        && next.starts_with('/')
        && is_local_location(next.as_bytes())
        && !next.chars().any(|c| c.is_control() || c == '\\');
    if ok {
        Ok(next.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "next must be a path on this agent starting with one /, at most {MAX_NEXT} bytes"
        )))
    }
}

/// The query's value of `name`.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The `kk_oidc` cookie of a request.
fn flow_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(FLOW_COOKIE)?.strip_prefix('='))
        .find(|t| !t.is_empty())
}

fn set_flow_cookie(value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{FLOW_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/api/v1/auth/oidc/; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

fn sign_flow(flow: &Flow, secret: &[u8]) -> Result<String, ApiError> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        flow,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .map_err(|e| {
        tracing::error!(error = %e, "cannot sign an OIDC login");
        ApiError::internal("cannot start the login")
    })
}

/// The login of a `kk_oidc` cookie: signed by us for this purpose, not expired.
fn verify_flow(token: &str, secret: &[u8]) -> Result<Flow, String> {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.leeway = 0;
    v.set_audience(&[FLOW_AUDIENCE]);
    v.set_required_spec_claims(&["exp", "aud"]);
    jsonwebtoken::decode::<Flow>(token, &jsonwebtoken::DecodingKey::from_secret(secret), &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// Equal strings, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn redirect(location: &str, cookies: &[String]) -> Reply {
    let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    let h = r.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    for c in cookies {
        if let Ok(v) = header::HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

/// An error reply that also ends the login in progress (its cookie cleared).
fn fail(e: ApiError, secure: bool) -> Reply {
    let mut r = e.into_reply();
    if let Ok(v) = header::HeaderValue::from_str(&set_flow_cookie("", Duration::ZERO, secure)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

fn unavailable(message: String) -> ApiError {
    let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "oidc_unavailable", message);
    e.retry_after = Some(RETRY_AFTER.as_secs());
    e
}

fn off() -> ApiError {
    ApiError::not_found("OIDC login is off: spec.auth.mode is not oidc")
}

/// Whether a `sessions` user ID is an OIDC user's (`oidc:<sub>`). A LocalUser's ID,
/// `namespace/name`, never starts so: namespaces are DNS-1123 labels, without `:`.
pub fn is_oidc_id(id: &str) -> bool {
    id.starts_with("oidc:")
}

/// The answer to the callback, and the user it logged in (for the audit record).
pub struct Callback {
    /// The reply.
    pub reply: Reply,
    /// `oidc:<sub>` when a session started.
    pub user_id: Option<String>,
}

impl Auth {
    /// The OIDC settings of the current catalog (`None` unless `auth.mode` is oidc).
    fn oidc_settings(&self) -> Result<Option<Settings>, ApiError> {
        Settings::of(&self.snapshot(), &self.config.home_namespace).map_err(|why| {
            tracing::error!("OIDC login refused: {why}");
            unavailable(format!("OIDC login is misconfigured: {why}"))
        })
    }

    /// The principal of a live session row of an OIDC user: of the home namespace, with
    /// the role mapped at login; refused once `auth.mode` is no longer oidc, or once no
    /// entry of `spec.auth.oidc.roleMapping` gives that role any more (a changed mapping
    /// applies to open sessions at once; a changed group membership at the next login).
    pub(super) fn oidc_principal(
        &self,
        snap: &Snapshot,
        row: SessionRow,
    ) -> Result<Principal, ApiError> {
        let refused =
            || ApiError::unauthorized("the session is invalid or has ended; log in again");
        if snap.effective.auth_mode != AuthMode::Oidc {
            tracing::info!(user = %row.user_id, "session refused: spec.auth.mode is no longer oidc");
            return Err(refused());
        }
        let Ok(role) = serde_json::from_value::<Role>(serde_json::Value::String(row.role.clone()))
        else {
            tracing::warn!(user = %row.user_id, role = %row.role, "session refused: unknown role");
            return Err(refused());
        };
        let still_mapped = snap
            .settings
            .as_ref()
            .and_then(|s| s.spec.auth.as_ref())
            .and_then(|a| a.oidc.as_ref())
            .is_some_and(|o| o.role_mapping.iter().any(|m| m.role == role));
        if !still_mapped {
            tracing::info!(user = %row.user_id, role = %row.role, "session refused: spec.auth.oidc.roleMapping no longer gives this role");
            return Err(refused());
        }
        Ok(Principal {
            id: row.user_id,
            username: row.username,
            role,
            namespace: self.config.home_namespace.clone(),
            all_namespaces: true,
            kind: PrincipalKind::Session(row.id),
        })
    }

    /// Discover the provider of the current catalog now (at start and when the settings
    /// change), so that a broken issuer shows in the log before anyone logs in; failures
    /// are retried every [`RETRY_AFTER`] until the provider answers.
    pub async fn oidc_watch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut catalog = self.catalog.clone();
        loop {
            let wait = match Settings::of(&self.snapshot(), &self.config.home_namespace) {
                Ok(Some(s)) => match self.oidc.metadata(&s.issuer).await {
                    Ok(_) => None,
                    Err(_) => Some(RETRY_AFTER),
                },
                Ok(None) => None,
                Err(why) => {
                    tracing::error!("OIDC login cannot work: {why}");
                    None
                }
            };
            let retry = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                changed = catalog.changed() => if changed.is_err() { return },
                () = retry => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// `GET /api/v1/auth/oidc/login[?next=/path]`: 303 to the provider's authorization
    /// endpoint with a fresh `state`, `nonce` and PKCE challenge; the flow in a cookie.
    pub async fn oidc_login(&self, headers: &HeaderMap, query: Option<&str>) -> Reply {
        self.oidc_login_inner(headers, query)
            .await
            .unwrap_or_else(ApiError::into_reply)
    }

    async fn oidc_login_inner(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Reply, ApiError> {
        let settings = self.oidc_settings()?.ok_or_else(off)?;
        let next = safe_next(query_value(query, "next").as_deref())?;
        let metadata = self.oidc.metadata(&settings.issuer).await.map_err(|e| {
            unavailable(format!(
                "the OpenID provider {} cannot be reached: {e}",
                settings.issuer
            ))
        })?;
        let client = client(&settings, &metadata).map_err(|why| {
            tracing::error!("OIDC login refused: {why}");
            unavailable(format!("OIDC login is misconfigured: {why}"))
        })?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(settings.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        let flow = Flow {
            aud: FLOW_AUDIENCE.into(),
            exp: Utc::now().timestamp() + i64::try_from(FLOW_TTL.as_secs()).unwrap_or(600),
            iss: settings.issuer.clone(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            next,
        };
        let token = sign_flow(&flow, &self.config.session_secret)?;
        let secure = super::login::forwarded_https(headers);
        Ok(redirect(
            url.as_str(),
            &[set_flow_cookie(&token, FLOW_TTL, secure)],
        ))
    }

    /// `GET /api/v1/auth/oidc/callback?code=…&state=…`: the login's end (see the module
    /// documentation). 400 for a missing, expired or forged login or a wrong `state`, 403
    /// when the provider refused or the user is in no mapped group, 502 when the provider's
    /// answer does not validate, 503 when it cannot be reached or too many exchanges run.
    pub async fn oidc_callback(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: std::net::IpAddr,
    ) -> Callback {
        let secure = super::login::forwarded_https(headers);
        match self.oidc_callback_inner(headers, query, peer, secure).await {
            Ok((reply, id)) => Callback {
                reply,
                user_id: Some(id),
            },
            Err(e) => Callback {
                reply: fail(e, secure),
                user_id: None,
            },
        }
    }

    /// The provider's redirect checked against the login in progress (its signed cookie,
    /// `state`, the issuer) and for an error it reports: the flow and the code.
    fn callback_request(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: std::net::IpAddr,
        settings: &Settings,
    ) -> Result<(Flow, String), ApiError> {
        let restart = format!("start again at {LOGIN_PATH}");
        let Some(cookie) = flow_cookie(headers) else {
            return Err(ApiError::bad_request(format!(
                "no login in progress in this browser (the {FLOW_COOKIE} cookie is missing); {restart}"
            )));
        };
        let flow = verify_flow(cookie, &self.config.session_secret).map_err(|why| {
            tracing::info!(%peer, "OIDC callback refused: login cookie invalid: {why}");
            ApiError::bad_request(format!(
                "the login in progress is invalid or expired; {restart}"
            ))
        })?;
        let state = query_value(query, "state").unwrap_or_default();
        if !same(&state, &flow.state) {
            tracing::warn!(%peer, "OIDC callback refused: state does not match the login in progress");
            return Err(ApiError::bad_request(format!(
                "the state parameter does not match the login in progress; {restart}"
            )));
        }
        if flow.iss != settings.issuer {
            return Err(ApiError::bad_request(format!(
                "the OpenID provider changed during the login; {restart}"
            )));
        }
        if let Some(error) = query_value(query, "error") {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            tracing::info!(%peer, error = %code, "OIDC login refused by the provider");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "oidc_refused",
                format!("the OpenID provider refused the login ({code})"),
            ));
        }
        let Some(code) = query_value(query, "code").filter(|c| !c.is_empty()) else {
            return Err(ApiError::bad_request(
                "the provider's answer has no code".to_string(),
            ));
        };
        Ok((flow, code))
    }

    async fn oidc_callback_inner(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: std::net::IpAddr,
        secure: bool,
    ) -> Result<(Reply, String), ApiError> {
        let settings = self.oidc_settings()?.ok_or_else(off)?;
        let (flow, code) = self.callback_request(headers, query, peer, &settings)?;
        let Ok(_slot) = self.oidc.exchanges.clone().try_acquire_owned() else {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many OIDC logins in progress; retry in a moment",
            );
            e.retry_after = Some(1);
            return Err(e);
        };
        let metadata = self.oidc.metadata(&settings.issuer).await.map_err(|e| {
            unavailable(format!(
                "the OpenID provider {} cannot be reached: {e}",
                settings.issuer
            ))
        })?;
        let client = client(&settings, &metadata).map_err(unavailable)?;
        let http = self.oidc.http.clone();
        let call = move |req: HttpRequest| send(http.clone(), req);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| unavailable(format!("the OpenID provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier))
            .request_async(&call)
            .await
            .map_err(|e| {
                let why = error_chain(&e);
                tracing::warn!(%peer, issuer = %settings.issuer, "OIDC code exchange failed: {why}");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "oidc_exchange_failed",
                    format!("the OpenID provider did not accept the login: {why}"),
                )
            })?;
        let invalid = |why: String| {
            tracing::warn!(%peer, issuer = %settings.issuer, "OIDC login refused: {why}");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "oidc_invalid_token",
                format!("the OpenID provider's ID token is not valid: {why}"),
            )
        };
        let id_token = tokens
            .id_token()
            .ok_or_else(|| invalid("the answer has no ID token".into()))?;
        let verifier = client.id_token_verifier();
        let claims = match id_token.claims(&verifier, &Nonce::new(flow.nonce.clone())) {
            Ok(c) => c.clone(),
            Err(e) => {
                // A key the cached set lacks may be a rotation: ask again next time.
                self.oidc.forget(&settings.issuer).await;
                return Err(invalid(error_chain(&e)));
            }
        };
        at_hash_matches(&tokens, &claims, &verifier).map_err(invalid)?;
        let sub = claims.subject().as_str().to_string();
        let username = claims
            .preferred_username()
            .map(|u| u.as_str().to_string())
            .or_else(|| claims.email().map(|e| e.as_str().to_string()))
            .unwrap_or_else(|| sub.clone());
        let username: String = username.chars().take(256).collect();
        let id = format!("oidc:{sub}");
        let mut groups = claims.additional_claims().clone();
        if !groups.0.contains_key(&settings.groups_claim) && metadata.userinfo_endpoint().is_some()
        {
            // Providers that keep groups out of the ID token (Okta, for one) hand them out
            // at the UserInfo endpoint, for the same subject.
            let request = client
                .user_info(
                    tokens.access_token().clone(),
                    Some(claims.subject().clone()),
                )
                .map_err(|e| invalid(e.to_string()))?;
            let info: UserInfoClaims<OtherClaims, CoreGenderClaim> = request
                .request_async(&call)
                .await
                .map_err(|e| invalid(format!("UserInfo: {}", error_chain(&e))))?;
            groups = info.additional_claims().clone();
        }
        let Some(role) = settings.role_of(&groups) else {
            tracing::info!(user = %id, %peer, "OIDC login refused: in no group of spec.auth.oidc.roleMapping");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "oidc_no_role",
                format!(
                    "{username} is in no group that spec.auth.oidc.roleMapping gives a role (claim {:?}); ask an administrator",
                    settings.groups_claim
                ),
            ));
        };
        let (session, id) = self
            .issue_session(headers, peer, id, username, role)
            .await?;
        let mut cookies: Vec<String> = session
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        cookies.push(set_flow_cookie("", Duration::ZERO, secure));
        Ok((redirect(&flow.next, &cookies), id))
    }
}

/// `at_hash`, when the ID token has one, binds the access token (used for UserInfo) to
/// the ID token: a substituted access token is refused.
fn at_hash_matches(
    tokens: &Tokens,
    claims: &IdTokenClaims<OtherClaims, CoreGenderClaim>,
    verifier: &IdTokenVerifier<'_, CoreJsonWebKey>,
) -> Result<(), String> {
    let Some(expected) = claims.access_token_hash() else {
        return Ok(());
    };
    let id_token = tokens
        .id_token()
        .ok_or_else(|| "the answer has no ID token".to_string())?;
    let alg = id_token
        .signing_alg()
        .map_err(|e| format!("cannot check at_hash: {e}"))?;
    let key = id_token
        .signing_key(verifier)
        .map_err(|e| format!("cannot check at_hash: {e}"))?;
    let actual = AccessTokenHash::from_token(tokens.access_token(), alg, key)
        .map_err(|e| format!("cannot check at_hash: {e}"))?;
    if actual != *expected {
        return Err("at_hash does not match the access token (token substitution)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_agent() {
        assert_eq!(safe_next(None).unwrap(), "/");
        assert_eq!(safe_next(Some("")).unwrap(), "/");
        assert_eq!(safe_next(Some("/incidents?x=1")).unwrap(), "/incidents?x=1");
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "/\t/evil.example",
            "/a\\b",
        ] {
            assert!(safe_next(Some(bad)).is_err(), "{bad}");
        }
        assert!(safe_next(Some(&format!("/{}", "a".repeat(MAX_NEXT)))).is_err());
    }

    #[test]
    fn flow_tokens_are_ours_and_fresh() {
        let secret = b"a-secret-of-enough-length-for-hs256-tests";
        let flow = |exp: i64| Flow {
            aud: FLOW_AUDIENCE.into(),
            exp,
            iss: "https://idp.example".into(),
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            next: "/".into(),
        };
        let now = Utc::now().timestamp();
        let good = sign_flow(&flow(now + 60), secret).unwrap();
        assert_eq!(verify_flow(&good, secret).unwrap().state, "s");
        assert!(verify_flow(&good, b"another-secret-of-enough-length-for-tests").is_err());
        let expired = sign_flow(&flow(now - 1), secret).unwrap();
        assert!(verify_flow(&expired, secret).is_err());
        let mut other = flow(now + 60);
        other.aud = "something-else".into();
        let other = sign_flow(&other, secret).unwrap();
        assert!(verify_flow(&other, secret).is_err());
    }

    #[test]
    fn highest_mapped_role_wins() {
        let s = Settings {
            issuer: "https://idp.example".into(),
            client_id: "c".into(),
            client_secret: None,
            redirect_url: "https://kuma.example/api/v1/auth/oidc/callback".into(),
            scopes: vec![],
            groups_claim: "groups".into(),
            roles: vec![("ops".into(), Role::Editor), ("root".into(), Role::Admin)],
        };
        let claims = |v: serde_json::Value| OtherClaims(v.as_object().unwrap().clone());
        let role = |v| s.role_of(&claims(v));
        assert_eq!(
            role(serde_json::json!({"groups": ["ops", "root"]})),
            Some(Role::Admin)
        );
        assert_eq!(
            role(serde_json::json!({"groups": "ops"})),
            Some(Role::Editor)
        );
        assert_eq!(role(serde_json::json!({"groups": ["dev"]})), None);
        assert_eq!(role(serde_json::json!({})), None);
        assert_eq!(role(serde_json::json!({"groups": [1, "Ops"]})), None);
    }

    #[test]
    fn constant_time_equality() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
