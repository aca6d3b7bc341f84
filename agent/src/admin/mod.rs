//! The agent's HTTP listener (hyper, no framework): health, readiness, the push
//! endpoint (`GET`/`POST /api/v1/push/<token>`, see [`crate::push`]), the admin API,
//! metrics and the twins of the static site ([`routes`]). Bodies are read up to
//! [`routes::BODY_LIMIT`] before a request is answered. Handlers are plain functions of
//! a request, callable without a socket. Connections (timeouts, how many, from whom, the
//! client address behind trusted proxies) are [`listen`]'s; every answer carries the
//! security headers of [`headers`].

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::catalog::Snapshot;
use crate::push::{PATH_PREFIX, PushError, PushHub, Report, UnknownTokenLimiter};
use crate::state::live::Live;
use crate::store::Store;

pub mod auth;
pub mod console;
pub mod error;
pub mod headers;
pub mod listen;
pub mod roles;
pub mod routes;

/// What the admin API reads and changes: the store, the live view of the monitors, the
/// current catalog, authentication and metrics.
pub struct AdminContext {
    /// The agent's database.
    pub store: Store,
    /// Current state of every monitor.
    pub live: Arc<Mutex<Live>>,
    /// The current catalog.
    pub catalog: watch::Receiver<Arc<Snapshot>>,
    /// Logins, sessions and API keys.
    pub auth: Arc<auth::Auth>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for AdminContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminContext").finish_non_exhaustive()
    }
}

/// What the listener reports about the agent.
#[derive(Debug, Default)]
pub struct Health {
    /// The catalog is loaded and the scheduler runs.
    pub ready: AtomicBool,
    /// With leader election: 1 while this replica leads, 2 while it stands by; 0 without.
    role: std::sync::atomic::AtomicU8,
    /// What keeps the agent from being ready although it runs (the store not writable).
    problem: Mutex<Option<String>>,
}

impl Health {
    /// Mark the agent ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Record what keeps a running agent from being ready (`None`: nothing); `/ready`
    /// answers 503 with it as `reason`.
    pub fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }

    /// Record this replica's role in leader election (`/ready` reports it).
    pub fn set_leader(&self, leader: bool) {
        self.role
            .store(if leader { 1 } else { 2 }, Ordering::SeqCst);
    }

    /// `leader`, `standby`, or `None` without leader election.
    pub fn role(&self) -> Option<&'static str> {
        match self.role.load(Ordering::SeqCst) {
            1 => Some("leader"),
            2 => Some("standby"),
            _ => None,
        }
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    error::json_text_reply(status, Bytes::from(body.to_string()))
}

/// Answer one request.
pub fn handle<B>(req: &Request<B>, health: &Health) -> Response<Full<Bytes>> {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/health") => json(
            StatusCode::OK,
            serde_json::json!({"status": "ok", "timestamp": now}),
        ),
        (&Method::GET | &Method::HEAD, "/ready") => {
            // A standby is ready too (it holds the catalog and takes over when the leader
            // goes); the role says which one records checks. The Service routes to the
            // leader by the role label on its Pod (`cluster::role`); a load balancer that
            // cannot select by label asks `/ready?role=leader`, which a standby answers 503.
            let leader_only = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "role=leader"));
            let problem = health
                .problem
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let ready = health.ready.load(Ordering::SeqCst)
                && problem.is_none()
                && !(leader_only && health.role() == Some("standby"));
            let mut body = serde_json::json!({"ready": ready, "timestamp": now});
            if let Some(reason) = problem {
                body["reason"] = reason.into();
            }
            if let Some(role) = health.role() {
                body["role"] = role.into();
            }
            json(
                if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                body,
            )
        }
        (_, "/health" | "/ready") => json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": {"code": "method_not_allowed", "message": "use GET"}}),
        ),
        (_, path) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": {"code": "not_found", "message": format!("no route for {path}")}}),
        ),
    }
}

/// What the listener answers with: the agent's health, and the push monitors with the
/// rate limit of unknown push tokens.
#[derive(Debug)]
pub struct Api {
    health: Arc<Health>,
    push: Option<Arc<PushHub>>,
    limiter: Mutex<UnknownTokenLimiter>,
    site: Option<crate::site::Site>,
    admin: Option<AdminContext>,
    twins: routes::twins::Twins,
    changes: Option<Arc<crate::export::urgent::Changes>>,
}

impl Api {
    /// Health and readiness only; pushes find no monitor.
    pub fn new(health: Arc<Health>) -> Self {
        Api {
            health,
            push: None,
            limiter: Mutex::new(UnknownTokenLimiter::default()),
            site: None,
            admin: None,
            twins: routes::twins::Twins::default(),
            changes: None,
        }
    }

    /// Signal `changes` after a request that changed public state succeeded (an
    /// incident acknowledged, updated or resolved; a silence created or expired), so the
    /// agent exports it at once.
    pub fn with_changes(mut self, changes: Arc<crate::export::urgent::Changes>) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Serve the admin API (auth, monitors, incidents, silences, metrics, …) too.
    pub fn with_admin(mut self, ctx: AdminContext) -> Self {
        self.admin = Some(ctx);
        self
    }

    /// Also serve the static site built into `dir` (`kubekuma up`): any GET/HEAD that is
    /// not an endpoint of the agent answers from there.
    pub fn with_site(mut self, dir: std::path::PathBuf) -> Self {
        self.site = Some(crate::site::Site::new(dir));
        self
    }

    /// Accept pushes for the monitors of `hub`.
    pub fn with_push(mut self, hub: Arc<PushHub>) -> Self {
        self.push = Some(hub);
        self
    }

    /// The dynamic twins' shared state (its count of model computations, for tests and
    /// benchmarks).
    pub fn twins(&self) -> &routes::twins::Twins {
        &self.twins
    }

    /// Use this limiter for unknown push tokens.
    pub fn with_limiter(mut self, limiter: UnknownTokenLimiter) -> Self {
        self.limiter = Mutex::new(limiter);
        self
    }

    /// Answer one request from the client at `peer` (its body already read, see
    /// [`read_body`]; behind a trusted proxy, the address the proxy names, see
    /// [`listen::client_address`]): push first; then the routes of [`routes::ROUTES`]
    /// under `/api/`, `/metrics`, `/health` and `/ready`; then a file of the static site
    /// (`kubekuma up`); then the other routes (the twins of the static outputs); 405 with
    /// `Allow` for a known path with another method, 404 JSON otherwise. The connection
    /// layer ([`listen`]) adds the security headers of [`headers::secure`] to every answer.
    pub async fn respond(&self, req: Request<Bytes>, peer: IpAddr) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        if let Some(token) = path.strip_prefix(PATH_PREFIX) {
            return self
                .push(req.method(), token, req.uri().query(), peer)
                .await;
        }
        // `spec.publicEndpoints.metrics`: served at its path (looked up as `/metrics`,
        // never a file of the site), or not at all.
        let path = match &self.admin {
            Some(ctx) => match routes::metrics_path(ctx, &path) {
                Some(p) => p.to_string(),
                None => return routes::not_found(&path),
            },
            None => path,
        };
        // The admin console (`/admin/…`), before the site's files.
        if console::handles(&path)
            && let Some(ctx) = &self.admin
        {
            let env = console::Env {
                ctx,
                twins: &self.twins,
                changes: self.changes.as_deref(),
            };
            return console::respond(env, &req, peer).await;
        }
        if !routes::reserved(&path)
            && let Some(site) = &self.site
            && let Some(r) = site.serve(&req)
        {
            return match &self.admin {
                Some(ctx) if !routes::site_file_enabled(ctx, &path) => {
                    routes::public_endpoint_off(&path)
                }
                _ => r,
            };
        }
        match routes::find(req.method(), &path) {
            routes::Found::Route(r, _)
                if matches!(r.id, routes::RouteId::Health | routes::RouteId::Ready) =>
            {
                handle(&req, &self.health)
            }
            routes::Found::Route(r, params) => match &self.admin {
                Some(ctx) => {
                    let answer = routes::dispatch(ctx, &self.twins, r, params, &req, peer).await;
                    if let Some(changes) = &self.changes
                        && r.id.changes_public_state()
                        && answer.status().is_success()
                    {
                        changes.signal();
                    }
                    answer
                }
                None => routes::not_found(&path),
            },
            routes::Found::WrongMethod(allow) => routes::wrong_method(&allow),
            routes::Found::Nothing => routes::not_found(&path),
        }
    }

    /// `/api/v1/push/<token>`: 200 `{"ok":true}` for an enabled push monitor's token;
    /// 404 for any other token, 429 (with `Retry-After`) once `peer` sent too many of
    /// those; 400 for a bad `status` or `ping`; 405 for methods other than GET and POST.
    /// An exhausted client gets 429 before its token is looked up, so answers reveal
    /// nothing about tokens while it is limited.
    pub async fn push(
        &self,
        method: &Method,
        token: &str,
        query: Option<&str>,
        peer: IpAddr,
    ) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::POST {
            let mut r = json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"ok": false, "msg": "Use GET or POST."}),
            );
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, POST"));
            return r;
        }
        let report = match Report::parse(query) {
            Ok(r) => r,
            Err(msg) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"ok": false, "msg": msg}),
                );
            }
        };
        let taken = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(peer, Instant::now());
        if let Err(wait) = taken {
            tracing::debug!(%peer, "push with an unknown token refused: too many");
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({"ok": false, "msg": "Too many unknown push tokens; retry later."}),
            );
            if let Ok(v) = header::HeaderValue::from_str(&wait.as_secs().to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        let result = match &self.push {
            Some(hub) => hub.receive(token, &report, Utc::now()).await,
            None => Err(PushError::NotFound),
        };
        match result {
            Ok(key) => {
                self.limiter
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .give_back(peer, Instant::now());
                tracing::debug!(monitor = %key, up = report.up, "push received");
                json(StatusCode::OK, serde_json::json!({"ok": true}))
            }
            Err(PushError::NotFound) => {
                tracing::debug!(%peer, "push with an unknown token");
                json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"ok": false, "msg": "Monitor not found or not active."}),
                )
            }
            Err(PushError::Stopped) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"ok": false, "msg": "The agent is stopping."}),
            ),
            Err(PushError::Standby) => {
                self.limiter
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .give_back(peer, Instant::now());
                let mut r = json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"ok": false, "msg": "This agent is a standby; push to the leader (its /ready says role leader)."}),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
                r
            }
        }
    }
}

/// Read a request body of at most [`routes::BODY_LIMIT`] bytes: 413 `payload_too_large`
/// beyond (by `Content-Length` before reading, or while reading), 400 when it breaks off.
pub async fn read_body<B>(headers: &http::HeaderMap, body: B) -> Result<Bytes, error::ApiError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt as _;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > routes::BODY_LIMIT as u64) {
        return Err(error::ApiError::too_large(routes::BODY_LIMIT));
    }
    match http_body_util::Limited::new(body, routes::BODY_LIMIT)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(error::ApiError::too_large(routes::BODY_LIMIT))
        }
        Err(_) => Err(error::ApiError::bad_request(
            "the request body could not be read",
        )),
    }
}

/// Bind `addr` and serve `api` with the default [`listen::ListenOptions`] until
/// `shutdown` turns true. Returns the bound address.
pub async fn serve(
    addr: &str,
    api: Arc<Api>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(addr, api, listen::ListenOptions::default(), shutdown)
        .await
        .map_err(|e| match e {
            listen::ServeError::Bind(e) => e,
            other => std::io::Error::other(other),
        })
}

/// Bind `addr` and serve `api` with `opts` until `shutdown` turns true (connections
/// already open finish on their own, within the timeouts). Returns the bound address and
/// the accept loop's task; fails when a setting cannot be honoured with this process's
/// descriptors ([`listen::ListenOptions::limits`]) or the address cannot be bound.
pub async fn serve_with(
    addr: &str,
    api: Arc<Api>,
    opts: listen::ListenOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), listen::ServeError> {
    let limits = opts.limits(listen::nofile_limit())?;
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(
        connections = limits.connections,
        per_client = limits.per_client,
        health_slots = limits.health_slots,
        "listener limits"
    );
    let task = tokio::spawn(listen::run(listener, api, opts, limits, shutdown));
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_ready() {
        let h = Health::default();
        let get = |p: &str| Request::get(p).body(()).unwrap_or_default();
        assert_eq!(handle(&get("/health"), &h).status(), StatusCode::OK);
        assert_eq!(
            handle(&get("/ready"), &h).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.set_ready(true);
        assert_eq!(handle(&get("/ready"), &h).status(), StatusCode::OK);
        assert_eq!(handle(&get("/nope"), &h).status(), StatusCode::NOT_FOUND);
        // Without election every agent leads; a standby is ready, but not for
        // `?role=leader` (a load balancer's check that routes to the leader only).
        let leader_only = "/ready?role=leader";
        assert_eq!(handle(&get(leader_only), &h).status(), StatusCode::OK);
        h.set_leader(false);
        assert_eq!(handle(&get("/ready"), &h).status(), StatusCode::OK);
        assert_eq!(
            handle(&get(leader_only), &h).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.set_leader(true);
        assert_eq!(handle(&get(leader_only), &h).status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn site_files_never_hide_the_api_and_twins_never_hide_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |p: &str, text: &str| {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap_or(dir.path()))
                .unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
        };
        // A status page with slug "status", and files where API paths would be.
        write("status/status.json", "{\"page\":true}");
        write("api/v1/monitors", "site");
        write("metrics", "site");
        let api = Api::new(Arc::new(Health::default())).with_site(dir.path().to_path_buf());
        let peer = IpAddr::from([127, 0, 0, 1]);
        let get = |p: &str| Request::get(p).body(Bytes::new()).unwrap_or_default();
        let r = api.respond(get("/status/status.json"), peer).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        for reserved in ["/api/v1/monitors", "/metrics"] {
            let r = api.respond(get(reserved), peer).await;
            assert_ne!(r.status(), StatusCode::OK, "{reserved}");
        }
        // No file: the twin answers (here without an admin API: 404 JSON).
        let r = api.respond(get("/status/other"), peer).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = api
            .respond(
                Request::post("/health")
                    .body(Bytes::new())
                    .unwrap_or_default(),
                peer,
            )
            .await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET");
    }

    #[tokio::test]
    async fn push_without_monitors() {
        let api = Api::new(Arc::new(Health::default()));
        let peer: IpAddr = "192.0.2.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let r = api.push(&Method::PUT, "abcdefgh", None, peer).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, POST");
        let r = api
            .push(&Method::GET, "abcdefgh", Some("status=maybe"), peer)
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        for _ in 0..10 {
            let r = api.push(&Method::POST, "abcdefgh", None, peer).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
        }
        let r = api.push(&Method::GET, "abcdefgh", None, peer).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "6");
    }
}
