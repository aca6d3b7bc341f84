//! The admin API's routes: one table ([`ROUTES`]) of method, path pattern and who may
//! call it, one `match` over [`RouteId`] that dispatches to the handlers (one file per
//! resource). The OpenAPI document ([`openapi`]) and the role tests are driven by the
//! same table.
//!
//! Order of answering (see [`crate::admin::Api::respond`]): push, then `/api/…`,
//! `/metrics`, `/health` and `/ready` from this table; then, with `kubekuma up`, a file of
//! the static site; then the dynamic twins of the static outputs (`/status/…`,
//! `/badge/…`, `/uptime/…`). So a twin never hides a file of the site, and no status
//! page slug can hide an API route.

pub mod audit;
pub mod incidents;
pub mod monitors;
pub mod notifications;
pub mod openapi;
pub mod silences;
pub mod twins;

use std::net::IpAddr;

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, Method, StatusCode, header};
use serde::de::DeserializeOwned;

use super::AdminContext;
use super::auth::{Credential, Login, Principal, auth_disabled_error, csrf};
use super::error::{ApiError, Reply, json_reply};
use super::roles::{Access, Area};
use crate::store::{AuditEvent, StoreError};

/// Largest request body accepted (413 `payload_too_large` beyond).
pub const BODY_LIMIT: usize = 64 * 1024;

/// The HTTP methods routes use (HEAD is answered as GET).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// GET (and HEAD).
    Get,
    /// POST.
    Post,
    /// DELETE.
    Delete,
}

impl Verb {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
        }
    }

    /// The verb of a request's method (HEAD as GET).
    pub fn of(m: &Method) -> Option<Verb> {
        match *m {
            Method::GET | Method::HEAD => Some(Verb::Get),
            Method::POST => Some(Verb::Post),
            Method::DELETE => Some(Verb::Delete),
            _ => None,
        }
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Anyone.
    Public,
    /// Any authenticated principal.
    Principal,
    /// A principal whose role may `Access` the `Area`.
    Role(Area, Access),
}

/// Every route, for the one dispatching `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteId {
    /// `POST /api/v1/auth/login`.
    Login,
    /// `POST /api/v1/auth/logout`.
    Logout,
    /// `GET /api/v1/auth/me`.
    Me,
    /// `GET /api/v1/auth/oidc/login`.
    OidcLogin,
    /// `GET /api/v1/auth/oidc/callback`.
    OidcCallback,
    /// `GET /api/v1/monitors`.
    Monitors,
    /// `GET /api/v1/monitors/{namespace}/{name}`.
    Monitor,
    /// `GET /api/v1/incidents`.
    Incidents,
    /// `POST /api/v1/incidents/{id}/acknowledge`.
    IncidentAcknowledge,
    /// `POST /api/v1/incidents/{id}/updates`.
    IncidentUpdate,
    /// `POST /api/v1/incidents/{id}/resolve`.
    IncidentResolve,
    /// `GET /api/v1/silences`.
    Silences,
    /// `POST /api/v1/silences`.
    SilenceCreate,
    /// `DELETE /api/v1/silences/{namespace}/{name}`.
    SilenceExpire,
    /// `GET /api/v1/deliveries`.
    Deliveries,
    /// `POST /api/v1/providers/{namespace}/{name}/test`.
    ProviderTest,
    /// `GET /api/v1/audit`.
    Audit,
    /// `GET /api/v1/openapi.json`.
    OpenApi,
    /// `GET|POST /api/v1/push/{token}` (answered by [`crate::admin::Api::push`]).
    Push,
    /// `GET /metrics`.
    Metrics,
    /// `GET /health`.
    Health,
    /// `GET /ready`.
    Ready,
    /// `GET /status/{slug}`.
    StatusPage,
    /// `GET /badge/{slug}/{monitor}` and `/badge/{slug}/{namespace}/{name}`.
    Badge,
    /// `GET /uptime/{monitor}` and `/uptime/{namespace}/{name}`.
    Uptime,
}

impl RouteId {
    /// Whether a successful request changes what the exported objects show (incidents,
    /// silences): the agent exports them at once.
    pub fn changes_public_state(self) -> bool {
        matches!(
            self,
            RouteId::IncidentAcknowledge
                | RouteId::IncidentUpdate
                | RouteId::IncidentResolve
                | RouteId::SilenceCreate
                | RouteId::SilenceExpire
        )
    }

    /// Whether the route changes desired state (what belongs in Git): refused with 403
    /// `gitops_read_only` while `spec.mode.gitOpsReadOnly` is true. Silences created or
    /// expired through the API are desired state (they decide what is notified, like
    /// Silence resources). Acknowledging, updating and resolving incidents, logins and
    /// push heartbeats are operations on the running system and stay allowed.
    pub fn changes_desired_state(self) -> bool {
        match self {
            RouteId::SilenceCreate | RouteId::SilenceExpire => true,
            RouteId::Login
            | RouteId::Logout
            | RouteId::OidcLogin
            | RouteId::OidcCallback
            | RouteId::Me
            | RouteId::Monitors
            | RouteId::Monitor
            | RouteId::Incidents
            | RouteId::IncidentAcknowledge
            | RouteId::IncidentUpdate
            | RouteId::IncidentResolve
            | RouteId::Silences
            | RouteId::Deliveries
            | RouteId::ProviderTest
            | RouteId::Audit
            | RouteId::OpenApi
            | RouteId::Push
            | RouteId::Metrics
            | RouteId::Health
            | RouteId::Ready
            | RouteId::StatusPage
            | RouteId::Badge
            | RouteId::Uptime => false,
        }
    }
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct RouteDef {
    /// What answers.
    pub id: RouteId,
    /// Method.
    pub method: Verb,
    /// Path with `{param}` segments (as OpenAPI writes them).
    pub pattern: &'static str,
    /// Who may call it.
    pub guard: Guard,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
}

const fn route(
    id: RouteId,
    method: Verb,
    pattern: &'static str,
    guard: Guard,
    summary: &'static str,
) -> RouteDef {
    RouteDef {
        id,
        method,
        pattern,
        guard,
        summary,
    }
}

use Guard::{Principal as AnyPrincipal, Public};
use RouteId as R;
use Verb::{Delete, Get, Post};

const MON_R: Guard = Guard::Role(Area::Monitors, Access::Read);
const INC_R: Guard = Guard::Role(Area::Incidents, Access::Read);
const INC_W: Guard = Guard::Role(Area::Incidents, Access::Write);
const SET_R: Guard = Guard::Role(Area::Settings, Access::Read);
const SET_W: Guard = Guard::Role(Area::Settings, Access::Write);
const AUDIT_R: Guard = Guard::Role(Area::Audit, Access::Read);

/// Every route of the listener.
pub const ROUTES: &[RouteDef] = &[
    route(
        R::Login,
        Post,
        "/api/v1/auth/login",
        Public,
        "Log in with a LocalUser's password",
    ),
    route(
        R::Logout,
        Post,
        "/api/v1/auth/logout",
        AnyPrincipal,
        "End the session",
    ),
    route(
        R::Me,
        Get,
        "/api/v1/auth/me",
        AnyPrincipal,
        "The current principal",
    ),
    route(
        R::OidcLogin,
        Get,
        super::auth::oidc::LOGIN_PATH,
        Public,
        "Log in through the OpenID provider (auth.mode: oidc): a redirect to it",
    ),
    route(
        R::OidcCallback,
        Get,
        super::auth::oidc::CALLBACK_PATH,
        Public,
        "Where the OpenID provider sends the browser back; starts a session",
    ),
    route(
        R::Monitors,
        Get,
        "/api/v1/monitors",
        MON_R,
        "List monitors with their status",
    ),
    route(
        R::Monitor,
        Get,
        "/api/v1/monitors/{namespace}/{name}",
        MON_R,
        "One monitor with recent heartbeats",
    ),
    route(
        R::Incidents,
        Get,
        "/api/v1/incidents",
        INC_R,
        "List incidents, newest first",
    ),
    route(
        R::IncidentAcknowledge,
        Post,
        "/api/v1/incidents/{id}/acknowledge",
        INC_W,
        "Acknowledge an incident",
    ),
    route(
        R::IncidentUpdate,
        Post,
        "/api/v1/incidents/{id}/updates",
        INC_W,
        "Add a public update to an incident",
    ),
    route(
        R::IncidentResolve,
        Post,
        "/api/v1/incidents/{id}/resolve",
        INC_W,
        "Resolve an open incident",
    ),
    route(
        R::Silences,
        Get,
        "/api/v1/silences",
        INC_R,
        "List silences (catalog and API)",
    ),
    route(
        R::SilenceCreate,
        Post,
        "/api/v1/silences",
        INC_W,
        "Create a silence",
    ),
    route(
        R::SilenceExpire,
        Delete,
        "/api/v1/silences/{namespace}/{name}",
        INC_W,
        "Expire a silence created through the API",
    ),
    route(
        R::Deliveries,
        Get,
        "/api/v1/deliveries",
        SET_R,
        "Recent notification deliveries, newest first, with outcome and error",
    ),
    route(
        R::ProviderTest,
        Post,
        "/api/v1/providers/{namespace}/{name}/test",
        SET_W,
        "Send a test message through a notification provider",
    ),
    route(
        R::Audit,
        Get,
        "/api/v1/audit",
        AUDIT_R,
        "The audit log, newest first (admins of the home namespace)",
    ),
    route(
        R::OpenApi,
        Get,
        "/api/v1/openapi.json",
        SET_R,
        "This document",
    ),
    route(
        R::Push,
        Get,
        "/api/v1/push/{token}",
        Public,
        "Push a heartbeat",
    ),
    route(
        R::Push,
        Post,
        "/api/v1/push/{token}",
        Public,
        "Push a heartbeat",
    ),
    route(
        R::Metrics,
        Get,
        "/metrics",
        Public,
        "Prometheus metrics (OpenMetrics text)",
    ),
    route(R::Health, Get, "/health", Public, "Liveness"),
    route(R::Ready, Get, "/ready", Public, "Readiness"),
    route(
        R::StatusPage,
        Get,
        "/status/{slug}",
        Public,
        "A published status page as JSON",
    ),
    route(
        R::Badge,
        Get,
        "/badge/{slug}/{monitor}",
        Public,
        "A monitor's SVG badge (monitor by name)",
    ),
    route(
        R::Badge,
        Get,
        "/badge/{slug}/{namespace}/{name}",
        Public,
        "A monitor's SVG badge",
    ),
    route(
        R::Uptime,
        Get,
        "/uptime/{monitor}",
        Public,
        "Uptime of a monitor (`namespace/name`, URL-encoded, or a unique name)",
    ),
    route(
        R::Uptime,
        Get,
        "/uptime/{namespace}/{name}",
        Public,
        "Uptime of a monitor",
    ),
];

/// Path parameters by name.
#[derive(Clone, Debug, Default)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    /// A parameter (empty when the pattern has none of that name).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// Whether the pattern had this parameter.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| *n == name)
    }
}

/// Decode `%XX` escapes of a path segment (invalid escapes stay as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The parameters if `path` matches `pattern` (segments compared one by one; a `{param}`
/// takes one non-empty segment, percent-decoded).
pub fn match_pattern(pattern: &'static str, path: &str) -> Option<Params> {
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    let mut params = Vec::new();
    loop {
        match (want.next(), have.next()) {
            (None, None) => return Some(Params(params)),
            (Some(w), Some(h)) => {
                if let Some(name) = w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                    if h.is_empty() {
                        return None;
                    }
                    params.push((name, percent_decode(h)));
                } else if w != h {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// What the table says about a path and method.
#[derive(Debug)]
pub enum Found {
    /// This route, with its parameters.
    Route(&'static RouteDef, Params),
    /// The path exists for other methods only (for `Allow`).
    WrongMethod(Vec<&'static str>),
    /// No route has this path.
    Nothing,
}

/// Look `method path` up in [`ROUTES`].
pub fn find(method: &Method, path: &str) -> Found {
    let verb = Verb::of(method);
    let mut allow: Vec<&'static str> = Vec::new();
    for r in ROUTES {
        if let Some(params) = match_pattern(r.pattern, path) {
            if Some(r.method) == verb {
                return Found::Route(r, params);
            }
            if !allow.contains(&r.method.as_str()) {
                allow.push(r.method.as_str());
            }
        }
    }
    if allow.is_empty() {
        Found::Nothing
    } else {
        Found::WrongMethod(allow)
    }
}

/// Whether `path` is answered only by the table (never by the static site): the API,
/// metrics, health and readiness.
pub fn reserved(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || matches!(path, "/metrics" | "/health" | "/ready")
}

/// Whether `path` is one of the twins of the static site (answered after its files).
pub fn is_twin(path: &str) -> bool {
    ["/status/", "/badge/", "/uptime/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// One request, as handlers see it.
pub struct Call<'a> {
    /// The admin context.
    pub ctx: &'a AdminContext,
    /// Who calls (`None` on public routes).
    pub principal: Option<Principal>,
    /// Path parameters.
    pub params: Params,
    /// The query string.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The body (at most [`BODY_LIMIT`] bytes).
    pub body: &'a Bytes,
    /// The client.
    pub peer: IpAddr,
    /// Twin caches.
    pub twins: &'a twins::Twins,
}

impl Call<'_> {
    /// The principal of a guarded route.
    pub fn who(&self) -> Result<&Principal, ApiError> {
        self.principal
            .as_ref()
            .ok_or_else(|| ApiError::unauthorized("authentication required"))
    }

    /// The JSON body as `T` (400 `bad_request` naming the problem).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request("a JSON body is required"));
        }
        serde_json::from_slice(self.body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }

    /// The query's pairs, percent-decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    }

    /// Record an audit event by the caller (errors are logged: the change is done).
    pub async fn audit(
        &self,
        resource_type: &str,
        resource_key: &str,
        event_type: &str,
        details: serde_json::Value,
        summary: Option<String>,
    ) {
        let event = AuditEvent {
            id: 0,
            resource_type: resource_type.into(),
            resource_key: resource_key.into(),
            event_type: event_type.into(),
            actor: self.principal.as_ref().map(Principal::actor),
            details: Some(details),
            changes_summary: summary,
            timestamp: Utc::now(),
        };
        if let Err(e) = self.ctx.store.record_audit(event).await {
            tracing::error!(error = %e, resource_type, resource_key, event_type, "audit event not recorded");
        }
    }
}

/// Query parameter helpers shared by the handlers.
pub fn parse_limit(v: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(ApiError::bad_request(format!(
                "limit must be a whole number from 1 to {max}"
            ))),
            Ok(n) => Ok(n.min(max)),
        },
    }
}

/// `offset`: a whole number, default 0.
pub fn parse_offset(v: Option<&str>) -> Result<usize, ApiError> {
    match v {
        None => Ok(0),
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("offset must be a whole number")),
    }
}

/// The store's failure as a 500 (the cause goes to the log).
pub fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "admin api: store operation failed");
    ApiError::internal("the database operation failed")
}

/// Answer a route found in the table, checking its guard first: 403 `csrf` for a login
/// or a cookie-authenticated write that breaks [`csrf`]'s rule, 401 without (valid)
/// credentials (429 once `peer` sent too many invalid API keys), 403 when the role lacks
/// access. Which namespaces a principal may see and change is the handlers' part
/// ([`Principal::sees_namespace`]).
pub async fn dispatch(
    ctx: &AdminContext,
    twins: &twins::Twins,
    route: &'static RouteDef,
    params: Params,
    req: &http::Request<Bytes>,
    peer: IpAddr,
) -> Reply {
    let by_cookie = matches!(Credential::of(req.headers()), Credential::Cookie(_));
    let forgeable = match route.guard {
        Guard::Public => route.id == R::Login,
        Guard::Principal | Guard::Role(..) => by_cookie && csrf::changes_state(req.method()),
    };
    if let Some(e) = refused_by_settings(ctx, route) {
        tracing::info!(%peer, path = route.pattern, "request refused: {}", e.message);
        return e.into_reply();
    }
    if forgeable
        && let Err(e) = csrf::check(req.headers(), req.uri().authority().map(|a| a.as_str()))
    {
        tracing::info!(%peer, path = route.pattern, "request refused: {}", e.message);
        return e.into_reply();
    }
    let principal = match route.guard {
        Guard::Public => None,
        Guard::Principal | Guard::Role(..) => {
            match ctx.auth.authenticate(req.headers(), peer).await {
                Ok(p) => Some(p),
                Err(e) => return e.into_reply(),
            }
        }
    };
    if let Some(p) = &principal
        && let Err(e) = role_allows(route, p)
    {
        return e.into_reply();
    }
    let call = Call {
        ctx,
        principal,
        params,
        query: req.uri().query(),
        headers: req.headers(),
        body: req.body(),
        peer,
        twins,
    };
    let answer = match route.id {
        R::Login => Ok(login(&call).await),
        R::Logout => logout(&call).await,
        R::Me => match call.who() {
            Ok(p) => Ok(ctx.auth.me(p).await),
            Err(e) => Err(e),
        },
        R::OidcLogin => Ok(ctx.auth.oidc_login(call.headers, call.query).await),
        R::OidcCallback => Ok(oidc_callback(&call).await),
        R::Monitors => monitors::list(&call).await,
        R::Monitor => monitors::one(&call).await,
        R::Incidents => incidents::list(&call).await,
        R::IncidentAcknowledge => incidents::acknowledge(&call).await,
        R::IncidentUpdate => incidents::add_update(&call).await,
        R::IncidentResolve => incidents::resolve(&call).await,
        R::Silences => silences::list(&call).await,
        R::SilenceCreate => silences::create(&call).await,
        R::SilenceExpire => silences::expire(&call).await,
        R::Deliveries => notifications::list(&call).await,
        R::ProviderTest => notifications::test(&call).await,
        R::Audit => audit::list(&call).await,
        R::OpenApi => Ok(json_reply(StatusCode::OK, &openapi::document())),
        R::Metrics => metrics(&call, req).await,
        R::StatusPage | R::Badge | R::Uptime if !twin_enabled(ctx, route.id) => {
            return public_endpoint_off(req.uri().path());
        }
        R::StatusPage => twins::status_page(&call).await,
        R::Badge => twins::badge(&call).await,
        R::Uptime => twins::uptime(&call).await,
        // Answered before the table (see `Api::respond`): push keeps its own replies.
        R::Push | R::Health | R::Ready => Err(ApiError::not_found("no such route")),
    };
    answer.unwrap_or_else(ApiError::into_reply)
}

/// Whether the settings refuse `route` before anyone is asked who they are:
/// `spec.auth.mode: disabled` refuses logins and every write through the table (push,
/// answered before the table, stays open; reads are the anonymous viewer's), and
/// `spec.mode.gitOpsReadOnly` refuses changes of desired state. The console asks the
/// same before acting.
pub fn refused_by_settings(ctx: &AdminContext, route: &RouteDef) -> Option<ApiError> {
    if route.guard != Guard::Public || route.id == R::Login {
        let writes = route.id == R::Login || route.method != Verb::Get;
        if writes && ctx.auth.auth_disabled() {
            return Some(if route.id == R::Login {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "auth_disabled",
                    "login is refused: auth.mode is disabled (KubeKumaSettings spec.auth.mode); the API is read-only without login",
                )
            } else {
                auth_disabled_error()
            });
        }
    }
    if route.id.changes_desired_state() && ctx.catalog.borrow().effective.git_ops_read_only {
        return Some(git_ops_read_only_error());
    }
    None
}

/// 403 naming role, access and area when `route`'s guard does not let `p` in (the
/// console checks its actions with the same guard).
pub fn role_allows(route: &RouteDef, p: &Principal) -> Result<(), ApiError> {
    let Guard::Role(area, access) = route.guard else {
        return Ok(());
    };
    if p.can(area, access) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "role {} may not {} {}",
        p.role.as_str(),
        match access {
            Access::Read => "read",
            Access::Write => "change",
        },
        match area {
            Area::Monitors => "monitors",
            Area::Incidents => "incidents",
            Area::Settings => "settings",
            Area::Users => "users",
            Area::Audit => "the audit log",
        }
    )))
}

/// The table's row of route `id` with `method` (the console looks its actions' guards up
/// here).
pub fn route_of(id: RouteId, method: Verb) -> Option<&'static RouteDef> {
    ROUTES.iter().find(|r| r.id == id && r.method == method)
}

/// 403 for a route that changes desired state while `spec.mode.gitOpsReadOnly` is true.
pub fn git_ops_read_only_error() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "gitops_read_only",
        "refused: KubeKumaSettings spec.mode.gitOpsReadOnly is true, so desired state \
         (silences included) changes only through manifests in Git; incidents can still be \
         acknowledged, updated and resolved",
    )
}

/// 404 for a public path turned off in `spec.publicEndpoints`, saying so.
pub fn public_endpoint_off(path: &str) -> Reply {
    ApiError::not_found(format!(
        "no route for {path} (turned off in spec.publicEndpoints)"
    ))
    .into_reply()
}

/// Whether a twin route is served under the catalog's `spec.publicEndpoints`:
/// `statusPagesEnabled: false` turns every twin off, `badgesEnabled: false` the badges.
fn twin_enabled(ctx: &AdminContext, id: RouteId) -> bool {
    let catalog = ctx.catalog.borrow();
    let p = &catalog.effective.public_endpoints;
    p.status_pages_enabled && (id != R::Badge || p.badges_enabled)
}

/// Whether a file of the built site (`kubekuma up`) is served under the catalog's
/// `spec.publicEndpoints`: none while `statusPagesEnabled` is false, no badge
/// (`<slug>/badges/…`) while `badgesEnabled` is false. The builder still publishes them to
/// its output; these switches decide what the agent itself serves.
pub fn site_file_enabled(ctx: &AdminContext, path: &str) -> bool {
    let catalog = ctx.catalog.borrow();
    let p = &catalog.effective.public_endpoints;
    let badge = path.trim_start_matches('/').split('/').nth(1) == Some("badges");
    p.status_pages_enabled && (!badge || p.badges_enabled)
}

/// Where `path` goes under the catalog's `spec.publicEndpoints.metrics`: the configured
/// metrics path is looked up as `/metrics`; `/metrics` itself, when metrics are turned
/// off or served elsewhere, and the configured path when turned off, are not served
/// (`None`, a 404). Other paths are unchanged.
pub fn metrics_path<'a>(ctx: &AdminContext, path: &'a str) -> Option<&'a str> {
    let catalog = ctx.catalog.borrow();
    let m = &catalog.effective.public_endpoints;
    if path == m.metrics_path {
        m.metrics_enabled.then_some("/metrics")
    } else if path == "/metrics" {
        None
    } else {
        Some(path)
    }
}

/// `/metrics` (or `spec.publicEndpoints.metrics.path`): without credentials the
/// aggregate series of [`crate::metrics::Metrics::render_public`] (401 instead when
/// `requireAuth` is set); with credentials, which must be valid and allow reading
/// settings, everything for principals acting on every namespace and for the others
/// only the series of the namespaces they see (see
/// [`crate::metrics::Metrics::render_scoped`]).
async fn metrics(call: &Call<'_>, req: &http::Request<Bytes>) -> Result<Reply, ApiError> {
    let require_auth = call
        .ctx
        .catalog
        .borrow()
        .effective
        .public_endpoints
        .metrics_require_auth;
    let principal = if require_auth || !matches!(Credential::of(req.headers()), Credential::None) {
        let p = call.ctx.auth.authenticate(req.headers(), call.peer).await?;
        if !p.can(Area::Settings, Access::Read) {
            return Err(ApiError::forbidden(format!(
                "role {} may not read settings",
                p.role.as_str()
            )));
        }
        Some(p)
    } else {
        None
    };
    let snapshot = call.ctx.catalog.borrow().clone();
    let text = {
        let live = call.ctx.live.lock().unwrap_or_else(|p| p.into_inner());
        match &principal {
            Some(p) if p.all_namespaces => call.ctx.metrics.render(&snapshot, &live),
            Some(p) => call
                .ctx
                .metrics
                .render_scoped(&snapshot, &live, &|ns| p.sees_namespace(ns)),
            None => call.ctx.metrics.render_public(&snapshot, &live),
        }
    };
    let mut r = http::Response::new(http_body_util::Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

/// The login's user name, for the audit record (never the password).
fn login_username(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("username")
                .and_then(|u| u.as_str())
                .map(str::to_string)
        })
        .map(|u| u.chars().take(128).collect())
        .unwrap_or_default()
}

async fn login(call: &Call<'_>) -> Reply {
    let Login { reply, user_id } = call
        .ctx
        .auth
        .log_in(call.headers, call.body, call.peer)
        .await;
    let username = login_username(call.body);
    let status = reply.status();
    let ok = status.is_success();
    let event = AuditEvent {
        id: 0,
        resource_type: "session".into(),
        resource_key: user_id.clone().unwrap_or_else(|| username.clone()),
        event_type: if ok { "login" } else { "login_failed" }.into(),
        actor: user_id.filter(|_| ok).map(|id| format!("user:{id}")),
        details: Some(serde_json::json!({
            "username": username,
            "peer": call.peer.to_string(),
            "status": status.as_u16(),
        })),
        changes_summary: None,
        timestamp: Utc::now(),
    };
    if let Err(e) = call.ctx.store.record_audit(event).await {
        tracing::error!(error = %e, "audit event of a login not recorded");
    }
    reply
}

/// The OIDC callback, with its audit record (a login or a refused one).
async fn oidc_callback(call: &Call<'_>) -> Reply {
    let super::auth::oidc::Callback { reply, user_id } = call
        .ctx
        .auth
        .oidc_callback(call.headers, call.query, call.peer)
        .await;
    let status = reply.status();
    let event = AuditEvent {
        id: 0,
        resource_type: "session".into(),
        resource_key: user_id.clone().unwrap_or_else(|| "oidc".into()),
        event_type: if user_id.is_some() {
            "login"
        } else {
            "login_failed"
        }
        .into(),
        actor: user_id.map(|id| format!("user:{id}")),
        details: Some(serde_json::json!({
            "via": "oidc",
            "peer": call.peer.to_string(),
            "status": status.as_u16(),
        })),
        changes_summary: None,
        timestamp: Utc::now(),
    };
    if let Err(e) = call.ctx.store.record_audit(event).await {
        tracing::error!(error = %e, "audit event of an OIDC login not recorded");
    }
    reply
}

async fn logout(call: &Call<'_>) -> Result<Reply, ApiError> {
    let p = call.who()?;
    let reply = call.ctx.auth.logout(p).await;
    if reply.status().is_success() {
        call.audit(
            "session",
            &p.id,
            "logout",
            serde_json::json!({"peer": call.peer.to_string()}),
            None,
        )
        .await;
    }
    Ok(reply)
}

/// 404 JSON for a path no route has.
pub fn not_found(path: &str) -> Reply {
    ApiError::not_found(format!("no route for {path}")).into_reply()
}

/// 405 JSON with `Allow`.
pub fn wrong_method(allow: &[&str]) -> Reply {
    let allow = allow.join(", ");
    let mut r = ApiError::method_not_allowed(&allow).into_reply();
    if let Ok(v) = header::HeaderValue::from_str(&allow) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_segments() {
        let p = match_pattern(
            "/api/v1/monitors/{namespace}/{name}",
            "/api/v1/monitors/a/b%2Dc",
        );
        let p = p.unwrap_or_default();
        assert_eq!(p.get("namespace"), "a");
        assert_eq!(p.get("name"), "b-c");
        assert!(
            match_pattern("/api/v1/monitors/{namespace}/{name}", "/api/v1/monitors/a").is_none()
        );
        assert!(
            match_pattern("/api/v1/monitors/{namespace}/{name}", "/api/v1/monitors/a/").is_none()
        );
        assert!(match_pattern("/health", "/health/").is_none());
        assert_eq!(
            match_pattern("/uptime/{monitor}", "/uptime/prod%2Fapi")
                .unwrap_or_default()
                .get("monitor"),
            "prod/api"
        );
    }

    #[test]
    fn methods_and_allow() {
        assert!(
            matches!(find(&Method::GET, "/api/v1/monitors"), Found::Route(r, _) if r.id == RouteId::Monitors)
        );
        assert!(
            matches!(find(&Method::HEAD, "/health"), Found::Route(r, _) if r.id == RouteId::Health)
        );
        match find(&Method::PUT, "/api/v1/silences") {
            Found::WrongMethod(allow) => assert_eq!(allow, ["GET", "POST"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(find(&Method::GET, "/api/v1/nope"), Found::Nothing));
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.pattern == b.pattern),
                    "{} {} twice",
                    a.method.as_str(),
                    a.pattern
                );
            }
        }
    }

    #[test]
    fn reserved_and_twins() {
        assert!(reserved("/api/v1/x") && reserved("/metrics") && !reserved("/status/x"));
        assert!(is_twin("/badge/a/b") && !is_twin("/badges/a"));
    }
}
