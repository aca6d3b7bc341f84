//! The admin console (issue 21): server-rendered HTML pages under `/admin/` for the
//! people on call, on the admin listener (and so on `kubekuma up`'s port). This file is
//! the foundation every page group builds on: the dispatch of `/admin/...` paths (one
//! `match` in [`respond`], one arm per page group), the template environment
//! ([`TEMPLATES`], minijinja with auto-escape and strict undefined), the static assets
//! with content-hashed URLs, the headers of every console reply (its own
//! `Content-Security-Policy`, `no-store` for pages), the session lookup (a page without
//! a valid session is a 303 to the sign-in page), the CSRF token of forms
//! ([`Session::form`]), the `can.*` booleans of templates, and a bridge to the JSON API
//! ([`Session::api`]) so that every action goes through the same guard, code and audit
//! as the API.
//!
//! # Adding a page (for the page groups)
//!
//! 1. A file `console/<group>.rs` with `pub async fn page(s: &Session<'_>, …) -> Reply`
//!    (and the POST handlers), declared with `pub mod <group>;` below.
//! 2. An arm in the `match` of [`respond`] (signed-in section), on the path's segments.
//! 3. Templates `console/templates/<name>.html` that `{% extends "base.html" %}` and fill
//!    the blocks `title` and `main`; listed in [`TEMPLATES`]. Render with
//!    [`Session::render`]; every template sees `csrf`, `user`, `can`, `flash`,
//!    `section`, `assets` besides the page's own values.
//! 4. A POST handler starts with `let form = match s.form() { Ok(f) => f, Err(r) =>
//!    return r };` (origin + CSRF checked), acts through [`Session::api`] (the API's
//!    route, guard and audit), and answers [`see_other`] with `?done=<code>`, a code
//!    that [`flash_text`] knows.

pub mod login;
pub mod monitor;
pub mod overview;
// console-b's page groups.
pub mod audit;
pub mod incidents;
pub mod maintenance;
pub mod notifications;
pub mod silences;
pub mod text;

use std::net::IpAddr;
use std::sync::LazyLock;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::Full;
use minijinja::{Environment, UndefinedBehavior, Value, context};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::AdminContext;
use super::auth::{Credential, Principal, PrincipalKind};
use super::error::Reply;
use super::roles::{Access, Area};
use super::routes::{self, twins::Twins};
use crate::export::urgent::Changes;

/// Where the console lives.
pub const PREFIX: &str = "/admin";

/// The console's `Content-Security-Policy`, on every reply of the console: only its own
/// script and style sheet, images of its own or `data:`, forms to itself, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Every template, compiled into the binary: `(name, source)`. Page groups add theirs.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("error.html", include_str!("templates/error.html")),
    ("login.html", include_str!("templates/login.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("monitor.html", include_str!("templates/monitor.html")),
    ("incidents.html", include_str!("templates/incidents.html")),
    ("incident.html", include_str!("templates/incident.html")),
    (
        "update_preview.html",
        include_str!("templates/update_preview.html"),
    ),
    ("silences.html", include_str!("templates/silences.html")),
    (
        "maintenance.html",
        include_str!("templates/maintenance.html"),
    ),
    (
        "notifications.html",
        include_str!("templates/notifications.html"),
    ),
    ("audit.html", include_str!("templates/audit.html")),
];

/// The style sheet and the script, served at `/admin/assets/<name>?v=<hash>`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
];

/// The template environment, built once.
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Auto-escape every template as HTML (the names end in `.html`, but say it anyway).
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    // Strings are escaped for HTML text and quoted attributes (`& < > " '`); unlike
    // minijinja's default, `/` stays as it is, so URLs read plainly and pages stay small.
    env.set_formatter(|out, state, value| {
        if matches!(state.auto_escape(), minijinja::AutoEscape::Html)
            && !value.is_safe()
            && value.kind() == minijinja::value::ValueKind::String
            && let Some(text) = value.as_str()
        {
            let mut last = 0;
            for (i, c) in text.char_indices() {
                let rep = match c {
                    '&' => "&amp;",
                    '<' => "&lt;",
                    '>' => "&gt;",
                    '"' => "&quot;",
                    '\'' => "&#39;",
                    _ => continue,
                };
                out.write_str(&text[last..i])
                    .and_then(|()| out.write_str(rep))
                    .map_err(|_| minijinja::Error::from(minijinja::ErrorKind::WriteFailure))?;
                last = i + 1;
            }
            return out
                .write_str(&text[last..])
                .map_err(|_| minijinja::Error::from(minijinja::ErrorKind::WriteFailure));
        }
        minijinja::escape_formatter(out, state, value)
    });
    // `urlencode` (minijinja's needs a feature): a path segment or query value, with
    // everything but unreserved characters percent-encoded (`/` too).
    env.add_filter("urlencode", |v: String| path_segment(&v));
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            // A broken template is a programming error caught by the tests (every page is
            // rendered there); the page that uses it answers 500.
            tracing::error!(template = name, error = %e, "console template does not compile");
        }
    }
    env
});

/// `?v=<hash>` of each asset: the first 12 hex digits of its SHA-256.
static ASSET_HASHES: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|(_, _, body)| hex::encode(Sha256::digest(body.as_bytes()))[..12].to_string())
        .collect()
});

/// A path segment with everything but unreserved characters percent-encoded.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The console URL of a monitor's page.
pub fn monitor_href(ns: &str, name: &str) -> String {
    format!(
        "{PREFIX}/monitors/{}/{}",
        path_segment(ns),
        path_segment(name)
    )
}

/// A template value of anything serializable.
pub fn ser<T: Serialize>(t: T) -> Value {
    Value::from(minijinja::value::Serde(t))
}

/// The URL of an asset, with its content hash (long cached).
pub fn asset_url(name: &str) -> String {
    ASSETS
        .iter()
        .zip(ASSET_HASHES.iter())
        .find(|((n, _, _), _)| *n == name)
        .map(|(_, h)| format!("{PREFIX}/assets/{name}?v={h}"))
        .unwrap_or_else(|| format!("{PREFIX}/assets/{name}"))
}

/// Whether the console answers `path` (`/admin` and everything under `/admin/`).
pub fn handles(path: &str) -> bool {
    path == PREFIX || path.starts_with("/admin/")
}

/// What the console needs from the listener besides the request.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    /// The admin context (store, live view, catalog, auth).
    pub ctx: &'a AdminContext,
    /// The twins' caches (for [`routes::Call`]).
    pub twins: &'a Twins,
    /// Signalled when an action changed public state (exported at once).
    pub changes: Option<&'a Changes>,
}

/// A request to the console, before anyone is known.
#[derive(Clone, Copy)]
pub struct Req<'a> {
    /// The listener's parts.
    pub env: Env<'a>,
    /// The request (its body read, at most [`routes::BODY_LIMIT`] bytes).
    pub req: &'a Request<Bytes>,
    /// The client.
    pub peer: IpAddr,
}

impl<'a> Req<'a> {
    /// The admin context.
    pub fn ctx(&self) -> &'a AdminContext {
        self.env.ctx
    }

    /// The query's pairs, percent-decoded.
    pub fn query(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    }

    /// The first value of a query parameter.
    pub fn query_value(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The request's headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.req.headers()
    }
}

/// A request by a signed-in principal: what page handlers get.
pub struct Session<'a> {
    /// The request.
    pub r: Req<'a>,
    /// Who is signed in (the anonymous viewer under `auth.mode: disabled`).
    pub principal: Principal,
    /// The CSRF token of this session's forms.
    pub csrf: String,
}

/// What a template's `can` holds: which actions the principal's role allows, so that a
/// page shows no button its reader may not use (the server checks again).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Can {
    /// Acknowledge, update and resolve incidents.
    pub ack: bool,
    /// Create and expire silences (not while `gitOpsReadOnly`).
    pub silence: bool,
    /// Send a test notification (admins).
    pub test_send: bool,
    /// Read the audit log (admins).
    pub audit: bool,
}

impl Can {
    /// The abilities of `p` under the current catalog.
    pub fn of(p: &Principal, ctx: &AdminContext) -> Can {
        let writes = !matches!(p.kind, PrincipalKind::Anonymous) && !ctx.auth.auth_disabled();
        let read_only = ctx.catalog.borrow().effective.git_ops_read_only;
        Can {
            ack: writes && p.can(Area::Incidents, Access::Write),
            silence: writes && !read_only && p.can(Area::Incidents, Access::Write),
            test_send: writes && p.can(Area::Settings, Access::Write),
            audit: p.all_namespaces && p.can(Area::Audit, Access::Read),
        }
    }
}

/// A parsed form (`application/x-www-form-urlencoded`) whose origin and CSRF token
/// passed.
#[derive(Clone, Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Parse a form body.
    pub fn parse(body: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a field, trimmed, `None` when empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Every value of a field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the JSON API answered to [`Session::api`].
#[derive(Clone, Debug)]
pub struct ApiAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its JSON body (`Null` when it was not JSON).
    pub body: serde_json::Value,
}

impl ApiAnswer {
    /// Whether the API accepted the request.
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The error's message (`error.message`), for a page to show.
    pub fn message(&self) -> String {
        self.body
            .pointer("/error/message")
            .and_then(|m| m.as_str())
            .map_or_else(
                || format!("the request failed ({})", self.status),
                str::to_string,
            )
    }

    /// The error's stable code (`error.code`).
    pub fn code(&self) -> &str {
        self.body
            .pointer("/error/code")
            .and_then(|m| m.as_str())
            .unwrap_or("")
    }
}

impl<'a> Session<'a> {
    /// The admin context.
    pub fn ctx(&self) -> &'a AdminContext {
        self.r.env.ctx
    }

    /// What the principal's role allows (the template's `can`).
    pub fn can(&self) -> Can {
        Can::of(&self.principal, self.ctx())
    }

    /// Render `template` with the page's values `page` (a `context!{…}` or any
    /// serializable map) merged over the base values every template sees: `csrf`,
    /// `user` (`name`, `role`), `can`, `flash` (the text of `?done=<code>`), `section`
    /// (the nav entry to mark), `assets` (`css`, `js` URLs).
    pub fn render(&self, template: &str, status: StatusCode, page: Value) -> Reply {
        let flash = self
            .r
            .query_value("done")
            .and_then(|code| flash_text(&code));
        let base = context! {
            csrf => self.csrf.clone(),
            user => context! {
                name => self.principal.username.clone(),
                role => self.principal.role.as_str(),
                anonymous => matches!(self.principal.kind, PrincipalKind::Anonymous),
            },
            can => ser(self.can()),
            flash => flash,
            section => section(self.r.req.uri().path()),
            assets => assets(),
        };
        render_with(template, status, context! { ..page, ..base })
    }

    /// A 403 page saying why.
    pub fn forbidden(&self, message: &str) -> Reply {
        self.error_page(StatusCode::FORBIDDEN, "Not allowed", message)
    }

    /// A 404 page.
    pub fn not_found(&self) -> Reply {
        self.error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page, or you may not see it.",
        )
    }

    /// An error page with this status, heading and message.
    pub fn error_page(&self, status: StatusCode, title: &str, message: &str) -> Reply {
        self.render(
            "error.html",
            status,
            context! { title => title, message => message },
        )
    }

    /// The form of this POST, once its origin and CSRF token passed: 403 page when the
    /// request comes from another origin or carries no valid `csrf` field (a stale page,
    /// a forged form), 400 page for a body that is not a form.
    // The error is the page to answer with, built once per refused form: no need to box.
    #[allow(clippy::result_large_err)]
    pub fn form(&self) -> Result<Form, Reply> {
        if let Err(why) = same_origin(self.r.req) {
            tracing::info!(peer = %self.r.peer, path = self.r.req.uri().path(), "console form refused: {why}");
            return Err(self.forbidden(&format!(
                "This form was not sent from this console ({why})."
            )));
        }
        if !is_form(self.r.headers()) {
            return Err(self.error_page(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "Forms are sent as application/x-www-form-urlencoded.",
            ));
        }
        let form = Form::parse(self.r.req.body());
        let token_ok = form
            .get("csrf")
            .is_some_and(|t| verify_session_token(self.ctx(), &self.principal, t));
        if !token_ok {
            tracing::info!(peer = %self.r.peer, path = self.r.req.uri().path(), "console form refused: missing or wrong csrf token");
            return Err(self.forbidden(
                "The form's security token is missing or out of date. Go back, reload the page and try again.",
            ));
        }
        Ok(form)
    }

    /// Call the JSON API's route for `method path` (a path under `/api/v1/`, with its
    /// query) with `body` as JSON, as this session: the same table, guard (role,
    /// `gitOpsReadOnly`, `auth.mode`), handler and audit records as the API, and the
    /// export signal for changes of public state. Call it only after [`Session::form`]
    /// passed for writes (the console's CSRF check replaces the API's JSON rule).
    pub async fn api(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<serde_json::Value>,
    ) -> ApiAnswer {
        answer_of(call_api(&self.r, method, path_and_query, body, true).await).await
    }
}

/// The API's reply as an [`ApiAnswer`].
pub async fn answer_of(reply: Reply) -> ApiAnswer {
    use http_body_util::BodyExt as _;
    let status = reply.status();
    let bytes = reply
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    ApiAnswer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

/// Send `method path_and_query` with `body` as JSON through the API's table
/// ([`routes::find`], [`routes::dispatch`]) on behalf of the console request `r`, with
/// its session cookie when `with_cookie`; signals the export for changes of public state
/// like [`crate::admin::Api::respond`]. The request carries no `Origin` or
/// `Sec-Fetch-Site`: the console checked them (and its own token) already.
async fn call_api(
    r: &Req<'_>,
    method: Method,
    path_and_query: &str,
    body: Option<serde_json::Value>,
    with_cookie: bool,
) -> Reply {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(path_and_query);
    let mut names = vec![
        header::HOST,
        header::USER_AGENT,
        header::HeaderName::from_static("x-forwarded-proto"),
    ];
    if with_cookie {
        names.push(header::COOKIE);
    }
    for name in names {
        for v in r.headers().get_all(&name) {
            builder = builder.header(&name, v);
        }
    }
    builder = builder.header(header::CONTENT_TYPE, "application/json");
    let req = match builder.body(body) {
        Ok(req) => req,
        Err(e) => {
            return super::error::ApiError::bad_request(format!("bad API request: {e}"))
                .into_reply();
        }
    };
    match routes::find(&method, path) {
        routes::Found::Route(route, params) => {
            let reply = routes::dispatch(r.env.ctx, r.env.twins, route, params, &req, r.peer).await;
            if let Some(changes) = r.env.changes
                && route.id.changes_public_state()
                && reply.status().is_success()
            {
                changes.signal();
            }
            reply
        }
        routes::Found::WrongMethod(allow) => routes::wrong_method(&allow),
        routes::Found::Nothing => routes::not_found(path),
    }
}

/// The text of a flash code (`?done=<code>`); unknown codes show nothing. Page groups add
/// their codes here.
pub fn flash_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "signed_out" => "You are signed out.",
        "expired" => "Your session expired, sign in again.",
        "acknowledged" => "Incident acknowledged.",
        "updated" => "Update posted. It shows on the status page after the next build.",
        "resolved" => "Incident resolved.",
        "silence_created" => "Silence created.",
        "silence_expired" => "Silence expired.",
        "test_sent" => "Test notification sent.",
        _ => return None,
    })
}

/// The nav entry of a path (its first segment under `/admin/`).
fn section(path: &str) -> &'static str {
    match path
        .strip_prefix("/admin/")
        .unwrap_or("")
        .split(['/', '.'])
        .next()
        .unwrap_or("")
    {
        "incidents" => "incidents",
        "silences" => "silences",
        "maintenance" => "maintenance",
        "notifications" => "notifications",
        "audit" => "audit",
        _ => "overview",
    }
}

fn assets() -> Value {
    context! {
        css => asset_url("console.css"),
        js => asset_url("console.js"),
    }
}

/// Render a template alone (no base values, no reply) into HTML: a fragment for
/// console.js. `None` (and the cause in the log) when it fails.
pub fn render_fragment<T: Serialize>(template: &str, ctx: T) -> Option<String> {
    ENV.get_template(template)
        .and_then(|t| t.render(ser(ctx)))
        .map_err(|e| {
            tracing::error!(template, error = %format!("{e:#}"), "console fragment could not be rendered");
        })
        .ok()
}

/// Render a template into an HTML reply with the console's headers; a failure is a 500
/// plain page (and an error in the log naming the template).
pub fn render_with(template: &str, status: StatusCode, ctx: Value) -> Reply {
    let text = ENV.get_template(template).and_then(|t| t.render(ctx));
    match text {
        Ok(html) => html_reply(status, html),
        Err(e) => {
            tracing::error!(template, error = %format!("{e:#}"), "console page could not be rendered");
            html_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error · KubeKuma</title></head><body><main id=\"main\"><h1>Error</h1><p>This page could not be rendered; the agent's log says why.</p></main></body></html>".to_string(),
            )
        }
    }
}

/// An HTML page reply (`no-store`, the console's policy).
pub fn html_reply(status: StatusCode, html: String) -> Reply {
    let mut r = http::Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(r)
}

/// A JSON reply for console.js (`no-store`, the console's policy).
pub fn json_reply<T: Serialize + ?Sized>(body: &T) -> Reply {
    super::error::json_reply(StatusCode::OK, body)
}

fn no_store(mut r: Reply) -> Reply {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 303 See Other to a local path (`/admin/…`).
pub fn see_other(location: &str) -> Reply {
    let mut r = http::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    no_store(r)
}

/// Whether `next` is a path of the console that a sign-in may send the browser back to:
/// `/admin` or under `/admin/`, no second slash or backslash at the start, nothing a
/// browser would read as another host.
pub fn local_next(next: &str) -> bool {
    handles(next.split(['?', '#']).next().unwrap_or(""))
        && !next.contains(['\\', '\r', '\n', '\t'])
        && !next.contains("//")
        && super::headers::is_local_location(next.as_bytes())
}

/// `/admin/login?next=<this request's path and query>`, plus `done=<code>` when given.
fn login_redirect(req: &Request<Bytes>, done: Option<&str>) -> Reply {
    let here = req
        .uri()
        .path_and_query()
        .map_or("/admin/", |pq| pq.as_str());
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    // After signing in the browser GETs `next`: a form's POST target is no page.
    let page = matches!(*req.method(), Method::GET | Method::HEAD);
    if page && local_next(here) && here != "/admin/" && here != PREFIX {
        q.append_pair("next", here);
    }
    if let Some(done) = done {
        q.append_pair("done", done);
    }
    let q = q.finish();
    see_other(&if q.is_empty() {
        "/admin/login".to_string()
    } else {
        format!("/admin/login?{q}")
    })
}

/// Add the console's headers: its `Content-Security-Policy` and `Referrer-Policy:
/// same-origin` on every reply (the
/// listener's [`super::headers::secure`] keeps it and adds the rest).
fn finish(mut r: Reply) -> Reply {
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    // Not `no-referrer`: with it browsers send `Origin: null` with form posts, and the
    // console's forms would all be refused as cross-origin.
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// Answer a request under `/admin` (see [`handles`]).
pub async fn respond(env: Env<'_>, req: &Request<Bytes>, peer: IpAddr) -> Reply {
    finish(route(Req { env, req, peer }).await)
}

async fn route(r: Req<'_>) -> Reply {
    let path = r.req.uri().path();
    let rest = path.strip_prefix(PREFIX).unwrap_or(path);
    if rest.is_empty() {
        return see_other("/admin/");
    }
    let segs: Vec<String> = rest
        .trim_start_matches('/')
        .split('/')
        .map(routes::percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get = matches!(*r.req.method(), Method::GET | Method::HEAD);
    let post = *r.req.method() == Method::POST;

    // Open to everyone: assets and signing in.
    match (segs.as_slice(), get, post) {
        (["assets", name], true, _) => return asset(r.req, name),
        (["login"], true, _) => return login::page(&r).await,
        (["login"], _, true) => return login::submit(&r).await,
        (["assets", _] | ["login"], _, _) => {
            return wrong_method(if segs[0] == "login" {
                "GET, POST"
            } else {
                "GET"
            });
        }
        _ => {}
    }

    let s = match session(&r).await {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    match (segs.as_slice(), get, post) {
        (["logout"], _, true) => login::logout(&s).await,
        ([""] | ["monitors"], true, _) => overview::page(&s).await,
        (["monitors.json"], true, _) => overview::json(&s).await,
        (["monitors", ns, name], true, _) => monitor::page(&s, ns, name).await,
        (["incidents"], true, _) => incidents::list(&s).await,
        (["incidents", id], true, _) => incidents::page(&s, id).await,
        (["incidents", id, "preview"], true, _) => incidents::preview(&s, id).await,
        (["incidents", id, "acknowledge"], _, true) => incidents::acknowledge(&s, id).await,
        (["incidents", id, "updates"], _, true) => incidents::update(&s, id).await,
        (["incidents", id, "resolve"], _, true) => incidents::resolve(&s, id).await,
        (["silences"], true, _) => silences::page(&s).await,
        (["silences"], _, true) => silences::create(&s).await,
        (["silences", "preview"], true, _) => silences::preview(&s).await,
        (["silences", ns, name, "expire"], _, true) => silences::expire(&s, ns, name).await,
        (["maintenance"], true, _) => maintenance::page(&s).await,
        (["notifications"], true, _) => notifications::page(&s).await,
        (["notifications", ns, name, "test"], _, true) => notifications::test(&s, ns, name).await,
        (["audit"], true, _) => audit::page(&s).await,
        (["incidents"] | ["incidents", _] | ["incidents", _, "preview"], _, _)
        | (["silences", "preview"] | ["maintenance"] | ["notifications"] | ["audit"], _, _) => {
            wrong_method("GET")
        }
        (
            ["incidents", _, "acknowledge" | "updates" | "resolve"]
            | ["silences", _, _, "expire"]
            | ["notifications", _, _, "test"],
            _,
            _,
        ) => wrong_method("POST"),
        (["silences"], _, _) => wrong_method("GET, POST"),
        (["logout"] | [""] | ["monitors"] | ["monitors.json"] | ["monitors", _, _], _, _) => {
            wrong_method(if segs[0] == "logout" { "POST" } else { "GET" })
        }
        _ => s.not_found(),
    }
}

/// 405 with `Allow`.
pub fn wrong_method(allow: &'static str) -> Reply {
    let mut r = html_reply(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Method not allowed · KubeKuma</title></head><body><main id=\"main\"><h1>Method not allowed</h1><p>Use {allow}.</p></main></body></html>"
        ),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The principal of a console request: the session cookie's (or the anonymous viewer
/// under `auth.mode: disabled`). Without a cookie, a 303 to the sign-in page; with a
/// cookie that no longer names a live session, the same with "Your session expired" and
/// the cookie cleared.
async fn session<'a>(r: &Req<'a>) -> Result<Session<'a>, Reply> {
    let ctx = r.ctx();
    let principal = if ctx.auth.auth_disabled() {
        ctx.auth.anonymous()
    } else {
        let Credential::Cookie(_) = Credential::of(r.headers()) else {
            return Err(login_redirect(r.req, None));
        };
        match ctx.auth.authenticate(r.headers(), r.peer).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(peer = %r.peer, "console session refused: {}", e.message);
                let mut reply = login_redirect(r.req, Some("expired"));
                reply.headers_mut().insert(
                    header::SET_COOKIE,
                    HeaderValue::from_static(
                        "token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                    ),
                );
                return Err(reply);
            }
        }
    };
    let csrf = session_token(ctx, &principal);
    Ok(Session {
        r: *r,
        principal,
        csrf,
    })
}

type HmacSha256 = Hmac<Sha256>;

fn mac(ctx: &AdminContext, purpose: &str, data: &str) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(&ctx.auth.config().session_secret).ok()?;
    mac.update(b"kubekuma console ");
    mac.update(purpose.as_bytes());
    mac.update(b"\0");
    mac.update(data.as_bytes());
    Some(mac)
}

/// What a session's token is bound to: its session ID (the anonymous viewer's is fixed;
/// it may not write anyway).
fn token_subject(p: &Principal) -> String {
    match &p.kind {
        PrincipalKind::Session(id) => format!("session:{id}"),
        PrincipalKind::ApiKey => format!("apikey:{}", p.id),
        PrincipalKind::Anonymous => "anonymous".into(),
    }
}

/// The CSRF token of a session's forms: HMAC-SHA256 of its session ID under the session
/// secret (nothing stored), URL-safe base64.
pub fn session_token(ctx: &AdminContext, p: &Principal) -> String {
    use base64::Engine as _;
    mac(ctx, "csrf", &token_subject(p))
        .map(|m| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

fn verify_session_token(ctx: &AdminContext, p: &Principal, token: &str) -> bool {
    use base64::Engine as _;
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim()) else {
        return false;
    };
    mac(ctx, "csrf", &token_subject(p)).is_some_and(|m| m.verify_slice(&bytes).is_ok())
}

/// Whether a POST comes from the console's own origin: `Sec-Fetch-Site: same-origin`
/// (browsers set it, pages cannot), else (no `Sec-Fetch-Site`, or `none`) an `Origin`
/// equal to the `Host`'s origin; without `Origin`, only `Sec-Fetch-Site: none`. Any other
/// `Sec-Fetch-Site`, `Origin: null`, or neither header is refused.
pub fn same_origin(req: &Request<Bytes>) -> Result<(), String> {
    let h = req.headers();
    let one = |name: &str| -> Result<Option<&str>, String> {
        let mut values = h.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(v), None) => v
                .to_str()
                .map(|s| Some(s.trim()))
                .map_err(|_| format!("the {name} header is not readable text")),
            (Some(_), Some(_)) => Err(format!("the {name} header is repeated")),
        }
    };
    let site = one("sec-fetch-site")?;
    match site {
        // Set by the browser, never by a page: decides alone, like the API's rule
        // (`admin::auth::csrf`), so a proxy that rewrites `Host` does not matter.
        Some(s) if s.eq_ignore_ascii_case("same-origin") => return Ok(()),
        Some(s) if !s.eq_ignore_ascii_case("none") => {
            return Err(format!("Sec-Fetch-Site is {s}"));
        }
        _ => {}
    }
    match one(header::ORIGIN.as_str())? {
        Some(origin) => {
            let host =
                one(header::HOST.as_str())?.or_else(|| req.uri().authority().map(|a| a.as_str()));
            match host {
                Some(host) if super::auth::csrf::origin_matches(origin, host) => Ok(()),
                _ => Err("Origin does not match the host".into()),
            }
        }
        None if site.is_some() => Ok(()),
        None => Err("neither Origin nor Sec-Fetch-Site".into()),
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    v.to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|e| {
            e.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// `/admin/assets/<name>`: long cached when asked for by its current hash.
fn asset(req: &Request<Bytes>, name: &str) -> Reply {
    let Some(((_, mime, body), hash)) = ASSETS
        .iter()
        .zip(ASSET_HASHES.iter())
        .find(|((n, _, _), _)| *n == name)
    else {
        let mut r = http::Response::new(Full::new(Bytes::from_static(b"not found")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return no_store(r);
    };
    let current = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p.strip_prefix("v=") == Some(hash.as_str()))
    });
    let mut r = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if current {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            assert!(ENV.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn next_is_only_ever_local() {
        for good in ["/admin/", "/admin/monitors/a/b?x=1", "/admin"] {
            assert!(local_next(good), "{good}");
        }
        for bad in [
            "//evil.example/admin/",
            "/admin//evil",
            "https://evil.example/admin/",
            "/\\evil.example",
            "/status/x",
            "/admin\\..",
            "/administrator",
        ] {
            assert!(!local_next(bad), "{bad}");
        }
    }

    #[test]
    fn sections() {
        assert_eq!(section("/admin/"), "overview");
        assert_eq!(section("/admin/monitors.json"), "overview");
        assert_eq!(section("/admin/incidents/3"), "incidents");
        assert_eq!(section("/admin/audit"), "audit");
    }

    #[test]
    fn forms_parse() {
        let f = Form::parse(b"a=1&b=x+y&a=2&c=%20");
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.all("a"), ["1", "2"]);
        assert_eq!(f.get("b"), Some("x y"));
        assert_eq!(f.text("c"), None);
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;

    fn base() -> Value {
        context! {
            csrf => "t",
            user => context! { name => "u", role => "viewer", anonymous => false },
            can => ser(Can { ack: false, silence: false, test_send: false, audit: false }),
            flash => Value::from(()),
            section => "overview",
            assets => assets(),
        }
    }

    #[test]
    fn strings_are_escaped() {
        let mut env = ENV.clone();
        let _ = env.add_template("x.html", "{{ v }}|{{ n }}");
        let out = env
            .get_template("x.html")
            .and_then(|t| t.render(context! { v => "<a href=\"/x?a=1&b='2'\">", n => 3 }));
        assert_eq!(
            out.ok().as_deref(),
            Some("&lt;a href=&quot;/x?a=1&amp;b=&#39;2&#39;&quot;&gt;|3")
        );
    }

    #[test]
    fn overview_renders() {
        let row = context! {
            key => "a/b", ns => "a", name => "b", href => "/admin/monitors/a/b", type => "http", state => "up",
            reason => Value::from(()), message => Value::from(()), lastCheck => Value::from(()),
            lastCheckText => "never", uptime24h => Value::from(()), uptime30d => 99.5,
            sparkline => vec![1.0, 2.0], sparkPoints => "0,1 2,3",
        };
        let page = context! {
            error => Value::from(()),
            filter => ser(crate::admin::console::overview::Filter::default()),
            groups => vec![context! { ns => "a", rows => vec![row] }],
            counts => vec![context! { state => "up", count => 1, href => "/admin/?state=up", current => false }],
            all_states_href => "/admin/", all_count => 1,
            total => 1, page => 1, pages => 1,
            prev_href => Value::from(()), next_href => Value::from(()),
            namespaces => vec!["a"], types => vec!["http"], states => STATES_FOR_TEST,
            json_href => "/admin/monitors.json?",
        };
        let t = ENV
            .get_template("overview.html")
            .map_err(|e| format!("{e:#}"));
        let out = t.and_then(|t| {
            t.render(context! { ..page, ..base() })
                .map_err(|e| format!("{e:#}"))
        });
        assert!(out.is_ok(), "{out:?}");
    }

    const STATES_FOR_TEST: [&str; 2] = ["up", "down"];
}
