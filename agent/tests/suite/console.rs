//! The admin console (issue 21) through the real listener (`admin::serve` on 127.0.0.1 +
//! reqwest, no redirects followed, cookies carried by hand as a browser would): sign-in
//! redirects, the sign-in form (right and wrong passwords), CSRF refusals (missing token,
//! another origin, another session's token), what a viewer sees, the console's headers
//! on every page, the overview's filters, pagination and scoping, `monitors.json`, and
//! the monitor page's redaction of credentials.

use std::sync::{Arc, Mutex};

use crate::common::users::{Browser, User, field, form, phc, users_yaml};
use chrono::{Duration, Utc};
use kubekuma_agent::admin::auth::{Auth, AuthConfig};
use kubekuma_agent::admin::console::CSP;
use kubekuma_agent::admin::{self, AdminContext, Api, Health};
use kubekuma_agent::catalog::ObjKey;
use kubekuma_agent::catalog::folder::FolderCatalog;
use kubekuma_agent::metrics::Metrics;
use kubekuma_agent::state::live::{Live, LiveMonitor};
use kubekuma_agent::store::Store;
use kubekuma_crds::MonitorState;
use kubekuma_crds::results::{CertInfo, FailureReason, Heartbeat};
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, LOCATION};
use reqwest::{StatusCode, redirect};
use serde_json::Value;
use tokio::sync::watch;

const SECRET: &str = "0123456789abcdef0123456789abcdef-console-tests";

/// Users: (resource name, namespace, username, role, password).
const USERS: &[User] = &[
    ("admin", "kubekuma", "admin", "admin", "pw-admin-1"),
    ("viewer", "kubekuma", "viewer", "viewer", "pw-viewer-1"),
    ("alice", "team-a", "alice", "editor", "pw-alice-1"),
];

/// The TOTP secret of the user `otp` (base32 of "a twenty-byte secret").
const TOTP_B32: &str = "MEQHI53FNZ2HSLLCPF2GKIDTMVRXEZLU";

/// Monitors in the namespace `bulk`, for pagination.
const BULK: usize = 250;

fn manifests() -> String {
    let mut y = users_yaml(USERS);
    y.push_str(&tests_yaml());
    y
}

fn tests_yaml() -> String {
    let mut y = String::new();
    // A user with a required second factor.
    y.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: mfa, namespace: kubekuma}}\n\
         stringData: {{totpSecret: '{TOTP_B32}', hash: '{}'}}\n\
         ---\napiVersion: monitoring.kubekuma.io/v1\nkind: LocalUser\nmetadata: {{name: otp, namespace: kubekuma}}\n\
         spec:\n  username: otp\n  role: viewer\n  passwordHashSecretRef: {{name: mfa, key: hash}}\n  \
         mfa:\n    mode: required\n    totpSecretRef: {{name: mfa, key: totpSecret}}\n",
        phc("pw-otp-1")
    ));
    y.push_str(
        "---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: api, namespace: prod, labels: {tier: critical}}
spec:
  type: http
  description: The public API
  target:
    http:
      url: 'https://probe:hunter2@api.example.com/health?token=sekrit&x=1'
      headers:
        Authorization: Bearer abc.def.ghi
        X-Plain: visible-value
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: web, namespace: prod, labels: {tier: low}}
spec:
  type: tcp
  target:
    tcp: {host: web.internal, port: 443}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: db, namespace: team-a}
spec:
  type: tcp
  target:
    tcp: {host: db.internal, port: 5432}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: paused, namespace: team-a}
spec:
  type: tcp
  enabled: false
  target:
    tcp: {host: old.internal, port: 22}
---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {name: public, namespace: prod}
spec:
  slug: public
  title: Public Status
  published: true
  groups:
    - name: Services
      monitors:
        - ref: {name: api}
",
    );
    for i in 0..BULK {
        y.push_str(&format!(
            "---\napiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: m{i:04}, namespace: bulk}}\n\
             spec:\n  type: tcp\n  target:\n    tcp: {{host: h{i}.internal, port: 80}}\n"
        ));
    }
    y
}

struct Env {
    base: String,
    host: String,
    client: reqwest::Client,
    store: Store,
    /// A second admin context over the same store, live view, catalog and auth (for
    /// calling the console's API bridge without HTTP).
    ctx: AdminContext,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    start_with(manifests(), seed).await
}

/// The live view and heartbeats of the tests' catalog.
async fn seed(live: &mut Live, store: &Store) {
    let mut up = LiveMonitor::default();
    up.tracker.base = MonitorState::Up;
    up.checked_at = Some(Utc::now());
    up.latency_ms = Some(42.0);
    up.cert = Some(CertInfo {
        expires_at: Utc::now() + Duration::days(42),
        days_left: 42,
    });
    live.monitors.insert(ObjKey::new("prod", "api"), up);
    let mut down = LiveMonitor::default();
    down.tracker.base = MonitorState::Down;
    down.reason = Some(FailureReason::Timeout);
    down.checked_at = Some(Utc::now());
    live.monitors.insert(ObjKey::new("team-a", "db"), down);
    for i in 0..BULK {
        let mut m = LiveMonitor::default();
        m.tracker.base = MonitorState::Up;
        live.monitors
            .insert(ObjKey::new("bulk", &format!("m{i:04}")), m);
    }
    let now = Utc::now();
    for i in 0..10 {
        store
            .record_heartbeat(Heartbeat {
                namespace: "prod".into(),
                name: "api".into(),
                state: if i == 0 {
                    MonitorState::Down
                } else {
                    MonitorState::Up
                },
                latency_ms: Some(40.0 + f64::from(i)),
                reason: None,
                message: None,
                checked_at: now - Duration::minutes(i64::from(i) * 5 + 1),
                attempts: 1,
            })
            .unwrap();
    }
}

/// The listener with the manifests `yaml`; `fill` writes the live view and heartbeats.
async fn start_with<F>(yaml: String, fill: F) -> Env
where
    F: AsyncFnOnce(&mut Live, &Store),
{
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("manifests");
    std::fs::create_dir_all(&folder).unwrap();
    // Files of at most 512 KiB (the catalog refuses larger ones), split between documents.
    let mut files = vec![String::new()];
    for doc in yaml.split("---\n").filter(|d| !d.trim().is_empty()) {
        if files.last().unwrap().len() + doc.len() > 512 * 1024 {
            files.push(String::new());
        }
        let last = files.last_mut().unwrap();
        last.push_str("---\n");
        last.push_str(doc);
    }
    for (i, text) in files.iter().enumerate() {
        std::fs::write(folder.join(format!("part-{i:03}.yaml")), text).unwrap();
    }
    let built = FolderCatalog::new(vec![folder]).load();
    let errors: Vec<String> = built
        .findings
        .iter()
        .filter(|f| f.severity == kubekuma_agent::catalog::Severity::Error)
        .map(|f| f.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let (catalog_tx, catalog) = watch::channel(Arc::new(built.snapshot));
    std::mem::forget(catalog_tx);

    let store = Store::open(&dir.path().join("kubekuma.db")).unwrap();
    let mut view = Live::default();
    fill(&mut view, &store).await;
    store.flush().await.unwrap();
    let live = Arc::new(Mutex::new(view));

    let mut config = AuthConfig::load(Some(SECRET), dir.path()).unwrap();
    config.home_namespace = "kubekuma".into();
    config.limits.per_address = 10_000;
    config.limits.username_failures = 10_000;
    let auth = Arc::new(Auth::new(config, store.clone(), catalog.clone()));
    let health = Arc::new(Health::default());
    health.set_ready(true);
    let metrics = Arc::new(Metrics::new());
    let ctx = AdminContext {
        store: store.clone(),
        live: live.clone(),
        catalog: catalog.clone(),
        auth: auth.clone(),
        metrics: metrics.clone(),
    };
    let api = Api::new(health).with_admin(AdminContext {
        store: store.clone(),
        live,
        catalog,
        auth,
        metrics,
    });
    let (stop, stop_rx) = watch::channel(false);
    let (addr, _task) = admin::serve("127.0.0.1:0", Arc::new(api), stop_rx)
        .await
        .unwrap();
    Env {
        base: format!("http://{addr}"),
        host: addr.to_string(),
        client: reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap(),
        store,
        ctx,
        _stop: stop,
        _dir: dir,
    }
}

impl Env {
    async fn get(
        &self,
        b: &mut Browser,
        path: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", b.header())
            .send()
            .await
            .unwrap();
        b.take(&r);
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, r.text().await.unwrap())
    }

    /// A form POST as a browser sends it from the console (`Origin` of the agent).
    async fn post(
        &self,
        b: &mut Browser,
        path: &str,
        body: &str,
        origin: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", b.header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string());
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let r = req.send().await.unwrap();
        b.take(&r);
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, r.text().await.unwrap())
    }

    fn origin(&self) -> String {
        format!("http://{}", self.host)
    }

    /// Sign in through the form; returns the browser with its session cookie.
    async fn sign_in(&self, username: &str) -> Browser {
        let pw = USERS.iter().find(|u| u.2 == username).unwrap().4;
        let mut b = Browser::default();
        let (s, _, html) = self.get(&mut b, "/admin/login").await;
        assert_eq!(s, StatusCode::OK);
        let csrf = field(&html, "csrf").unwrap();
        let (s, h, _) = self
            .post(
                &mut b,
                "/admin/login",
                &form(&[
                    ("username", username),
                    ("password", pw),
                    ("totp", ""),
                    ("csrf", &csrf),
                    ("next", "/admin/"),
                ]),
                Some(&self.origin()),
            )
            .await;
        assert_eq!(s, StatusCode::SEE_OTHER, "sign-in of {username}");
        assert_eq!(h[LOCATION], "/admin/");
        assert!(b.has("token"), "{b:?}");
        b
    }
}

fn location(h: &reqwest::header::HeaderMap) -> String {
    h[LOCATION].to_str().unwrap().to_string()
}

#[tokio::test]
async fn pages_redirect_to_sign_in_when_signed_out() {
    let env = start().await;
    let mut b = Browser::default();
    let (s, h, _) = env.get(&mut b, "/admin/").await;
    assert_eq!(
        (s, location(&h).as_str()),
        (StatusCode::SEE_OTHER, "/admin/login")
    );
    let (s, h, _) = env.get(&mut b, "/admin").await;
    assert_eq!(
        (s, location(&h).as_str()),
        (StatusCode::SEE_OTHER, "/admin/")
    );
    let (s, h, _) = env.get(&mut b, "/admin/monitors/prod/api?x=1").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        location(&h),
        "/admin/login?next=%2Fadmin%2Fmonitors%2Fprod%2Fapi%3Fx%3D1"
    );
    // JSON for console.js too: no data without a session.
    let (s, _, _) = env.get(&mut b, "/admin/monitors.json").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    // A cookie of no live session: "expired", and the cookie is cleared.
    let mut stale = Browser {
        cookies: vec![("token".into(), "not.a.session".into())],
    };
    let (s, h, _) = env.get(&mut stale, "/admin/").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location(&h), "/admin/login?done=expired");
    assert!(!stale.has("token"));
    let (s, _, html) = env.get(&mut stale, "/admin/login?done=expired").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("Your session expired, sign in again"),
        "{html}"
    );
    // A form posted after the session ended: back to the overview after signing in.
    let mut stale = Browser {
        cookies: vec![("token".into(), "not.a.session".into())],
    };
    let (s, h, _) = env
        .post(&mut stale, "/admin/logout", "csrf=x", Some(&env.origin()))
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location(&h), "/admin/login?done=expired");
    // `next` is only ever a console path.
    let (_, _, html) = env.get(&mut b, "/admin/login?next=//evil.example/").await;
    assert_eq!(field(&html, "next").as_deref(), Some("/admin/"));
}

#[tokio::test]
async fn sign_in_wrong_password_sign_out() {
    let env = start().await;
    let mut b = Browser::default();
    let (s, h, html) = env
        .get(&mut b, "/admin/login?next=/admin/monitors/prod/api")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[CACHE_CONTROL], "no-store");
    assert!(b.has("kk_console_csrf"));
    for name in ["username", "password", "totp"] {
        assert!(html.contains(&format!("<label for=\"{name}\"")), "{name}");
    }
    assert!(html.contains(">Sign in</button>"));
    let csrf = field(&html, "csrf").unwrap();
    let next = field(&html, "next").unwrap();
    assert_eq!(next, "/admin/monitors/prod/api");

    // A wrong password: the page again, 200, with the error and the username kept.
    let (s, _, html) = env
        .post(
            &mut b,
            "/admin/login",
            &form(&[
                ("username", "admin"),
                ("password", "wrong"),
                ("csrf", &csrf),
                ("next", &next),
            ]),
            Some(&env.origin()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("<p class=\"error\" role=\"alert\">Wrong username or password."));
    assert!(html.contains("value=\"admin\""));
    assert!(!b.has("token"));
    // The login was audited as the API audits it.
    let audit = env.store.audit_events(None, 50).await.unwrap();
    assert!(
        audit.iter().any(|e| e.event_type == "login_failed"),
        "{audit:?}"
    );

    // The right one: 303 to `next` with the session cookie.
    let (s, h, _) = env
        .post(
            &mut b,
            "/admin/login",
            &form(&[
                ("username", "admin"),
                ("password", "pw-admin-1"),
                ("csrf", &csrf),
                ("next", &next),
            ]),
            Some(&env.origin()),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location(&h), "/admin/monitors/prod/api");
    assert!(b.has("token") && !b.has("kk_console_csrf"), "{b:?}");
    let (s, _, html) = env.get(&mut b, "/admin/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("admin <span class=\"role\">(admin)</span>"));
    // Signed in, the sign-in page sends the browser on.
    let (s, h, _) = env.get(&mut b, "/admin/login").await;
    assert_eq!(
        (s, location(&h).as_str()),
        (StatusCode::SEE_OTHER, "/admin/")
    );

    // Sign out: the session is revoked; the old cookie no longer works.
    let token = b.clone();
    let csrf = field(&html, "csrf").unwrap();
    let (s, h, _) = env
        .post(
            &mut b,
            "/admin/logout",
            &form(&[("csrf", &csrf)]),
            Some(&env.origin()),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location(&h), "/admin/login?done=signed_out");
    assert!(!b.has("token"));
    let mut old = token;
    let (s, h, _) = env.get(&mut old, "/admin/").await;
    assert_eq!(
        (s, location(&h).as_str()),
        (StatusCode::SEE_OTHER, "/admin/login?done=expired")
    );
}

#[tokio::test]
async fn csrf_refusals() {
    let env = start().await;
    // Sign-in: no token, a token without its cookie, another origin.
    let mut b = Browser::default();
    let (_, _, html) = env.get(&mut b, "/admin/login").await;
    let csrf = field(&html, "csrf").unwrap();
    let good = [("username", "admin"), ("password", "pw-admin-1")];
    let with = |extra: &[(&'static str, &str)]| {
        let mut all: Vec<(&str, &str)> = good.to_vec();
        all.extend_from_slice(extra);
        form(&all)
    };
    let (s, _, _) = env
        .post(&mut b, "/admin/login", &with(&[]), Some(&env.origin()))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no token");
    let mut cookieless = Browser::default();
    let (s, _, _) = env
        .post(
            &mut cookieless,
            "/admin/login",
            &with(&[("csrf", &csrf)]),
            Some(&env.origin()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no cookie");
    let (s, _, _) = env
        .post(
            &mut b,
            "/admin/login",
            &with(&[("csrf", &csrf)]),
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "other origin");
    let (s, _, _) = env
        .post(&mut b, "/admin/login", &with(&[("csrf", &csrf)]), None)
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "neither Origin nor Sec-Fetch-Site"
    );
    assert!(!b.has("token"));

    // Signed in: sign-out without a token, with another session's token, from elsewhere.
    let mut admin = env.sign_in("admin").await;
    let mut viewer = env.sign_in("viewer").await;
    let (_, _, html) = env.get(&mut admin, "/admin/").await;
    let admin_csrf = field(&html, "csrf").unwrap();
    let (_, _, html) = env.get(&mut viewer, "/admin/").await;
    let viewer_csrf = field(&html, "csrf").unwrap();
    assert_ne!(admin_csrf, viewer_csrf);
    for (body, origin, what) in [
        (form(&[]), Some(env.origin()), "no token"),
        (
            form(&[("csrf", &admin_csrf)]),
            Some(env.origin()),
            "another session's token",
        ),
        (
            form(&[("csrf", &viewer_csrf)]),
            Some("http://evil.example".to_string()),
            "other origin",
        ),
        (
            form(&[("csrf", &viewer_csrf)]),
            Some("null".to_string()),
            "origin null",
        ),
        (form(&[("csrf", &viewer_csrf)]), None, "no origin"),
    ] {
        let (s, _, html) = env
            .post(&mut viewer, "/admin/logout", &body, origin.as_deref())
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{what}");
        assert!(html.contains("role=\"alert\""), "{what}");
    }
    // Still signed in after all that.
    let (s, _, _) = env.get(&mut viewer, "/admin/").await;
    assert_eq!(s, StatusCode::OK);
    // Sec-Fetch-Site alone (a browser that sends no Origin) is enough.
    let r = env
        .client
        .post(format!("{}/admin/logout", env.base))
        .header("cookie", viewer.header())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(form(&[("csrf", &viewer_csrf)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // Sec-Fetch-Site decides when present: cross-site is refused even with a matching
    // Origin; same-origin is taken even when a proxy rewrote Host.
    let mut other = env.sign_in("viewer").await;
    let (_, _, html) = env.get(&mut other, "/admin/").await;
    let other_csrf = field(&html, "csrf").unwrap();
    for (site, host, want) in [
        ("cross-site", env.host.clone(), StatusCode::FORBIDDEN),
        ("same-site", env.host.clone(), StatusCode::FORBIDDEN),
        (
            "same-origin",
            "internal-name:8080".to_string(),
            StatusCode::SEE_OTHER,
        ),
    ] {
        let r = env
            .client
            .post(format!("{}/admin/logout", env.base))
            .header("cookie", other.header())
            .header("host", host)
            .header("origin", env.origin())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", site)
            .body(form(&[("csrf", &other_csrf)]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{site}");
    }
}

#[tokio::test]
async fn a_viewer_gets_no_write_buttons() {
    let env = start().await;
    let mut viewer = env.sign_in("viewer").await;
    for path in ["/admin/", "/admin/monitors/prod/api"] {
        let (s, _, html) = env.get(&mut viewer, path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        // The only form that posts is signing out; no admin-only nav entry.
        assert_eq!(html.matches("method=\"post\"").count(), 1, "{path}");
        assert!(html.contains("action=\"/admin/logout\""));
        assert!(!html.contains("href=\"/admin/audit\""), "{path}");
    }
    let mut admin = env.sign_in("admin").await;
    let (_, _, html) = env.get(&mut admin, "/admin/").await;
    assert!(html.contains("href=\"/admin/audit\""));
}

/// `Session::api`, the bridge every console action goes through: the API's own route,
/// guard and audit for the signed-in principal. A viewer's acknowledge is refused with
/// the API's 403 and changes nothing; an admin's is done and audited as the API does.
#[tokio::test]
async fn actions_go_through_the_apis_guard_and_audit() {
    use kubekuma_agent::admin::console::{Env as ConsoleEnv, Req, Session, session_token};
    use kubekuma_agent::admin::routes::twins::Twins;
    let env = start().await;
    let id = env
        .store
        .open_incident("prod", "api", Utc::now(), Some(FailureReason::Timeout))
        .await
        .unwrap();
    let twins = Twins::default();
    let peer: std::net::IpAddr = [127, 0, 0, 1].into();
    let path = format!("/api/v1/incidents/{id}/acknowledge");
    for (user, want) in [("viewer", StatusCode::FORBIDDEN), ("admin", StatusCode::OK)] {
        let b = env.sign_in(user).await;
        let req = http::Request::post("/admin/incidents/x/acknowledge")
            .header("cookie", b.header())
            .header("host", &env.host)
            .body(bytes::Bytes::new())
            .unwrap();
        let principal = env
            .ctx
            .auth
            .authenticate(req.headers(), peer)
            .await
            .unwrap();
        let csrf = session_token(&env.ctx, &principal);
        let s = Session {
            r: Req {
                env: ConsoleEnv {
                    ctx: &env.ctx,
                    twins: &twins,
                    changes: None,
                },
                req: &req,
                peer,
            },
            principal,
            csrf,
        };
        let a = s
            .api(http::Method::POST, &path, Some(serde_json::json!({})))
            .await;
        assert_eq!(a.status.as_u16(), want.as_u16(), "{user}: {:?}", a.body);
        if want == StatusCode::FORBIDDEN {
            assert_eq!(a.code(), "forbidden");
            assert!(a.message().contains("viewer"), "{}", a.message());
        }
    }
    let audit = env.store.audit_events(Some("incident"), 10).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].event_type, "acknowledged");
    assert_eq!(audit[0].actor.as_deref(), Some("user:kubekuma/admin"));
}

#[tokio::test]
async fn console_headers_on_every_reply() {
    let env = start().await;
    let mut admin = env.sign_in("admin").await;
    for path in [
        "/admin/login",
        "/admin/",
        "/admin/monitors",
        "/admin/monitors.json",
        "/admin/monitors/prod/api",
        "/admin/monitors/prod/nope",
        "/admin/no-such-page",
    ] {
        let mut b = if path == "/admin/login" {
            Browser::default()
        } else {
            admin.clone()
        };
        let (s, h, html) = env.get(&mut b, path).await;
        assert_eq!(h[CONTENT_SECURITY_POLICY], CSP, "{path}");
        assert_eq!(h[CACHE_CONTROL], "no-store", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        // Not no-referrer: browsers would send `Origin: null` with the forms.
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
        if path.ends_with(".json") {
            continue;
        }
        let want = if path.contains("nope") || path.contains("no-such") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(s, want, "{path}");
        for must in [
            "<html lang=\"en\">",
            "<meta name=\"viewport\"",
            "<main id=\"main\"",
            "<title>",
        ] {
            assert!(html.contains(must), "{path}: {must}");
        }
        assert_eq!(html.matches("<h1").count(), 1, "{path}");
        assert!(!html.contains(" style="), "{path}");
        assert!(!html.contains("<script>"), "{path}");
        assert!(!html.contains(" onclick="), "{path}");
    }
    // Assets: hashed URLs, long cached; stale or bare URLs are not.
    let (_, _, html) = env.get(&mut admin, "/admin/").await;
    let at = html.find("/admin/assets/console.css?v=").unwrap();
    let url = &html[at..at + html[at..].find('"').unwrap()];
    let (s, h, css) = env.get(&mut admin, url).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[CACHE_CONTROL].to_str().unwrap().contains("immutable"));
    assert_eq!(h[CONTENT_SECURITY_POLICY], CSP);
    assert!(css.contains("prefers-color-scheme: dark"));
    let (_, h, _) = env.get(&mut admin, "/admin/assets/console.css?v=old").await;
    assert_eq!(h[CACHE_CONTROL], "no-cache");
    let (s, _, _) = env
        .get(&mut Browser::default(), "/admin/assets/nope.js")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn overview_filters_pagination_and_scope() {
    let env = start().await;
    let mut admin = env.sign_in("admin").await;
    let rows = |html: &str| html.matches("<tr data-monitor=").count();
    let (s, _, html) = env.get(&mut admin, "/admin/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rows(&html), 100);
    assert!(
        html.contains(&format!("{} monitors, page 1 of 3", BULK + 4)),
        "{html}"
    );
    assert!(html.contains("<th scope=\"colgroup\" colspan=\"7\">bulk</th>"));
    let (_, _, html) = env.get(&mut admin, "/admin/?page=3").await;
    assert_eq!(rows(&html), BULK + 4 - 200);
    assert!(html.contains("tr data-monitor=\"team-a/db\" data-state=\"down\""));
    assert!(html.contains("tr data-monitor=\"team-a/paused\" data-state=\"paused\""));
    assert!(html.contains("href=\"/admin/?page=2\" rel=\"prev\""));
    // Past the last page: the last page.
    let (_, _, html) = env.get(&mut admin, "/admin/?page=99").await;
    assert_eq!(rows(&html), BULK + 4 - 200);

    for (query, want) in [
        ("state=down", vec!["team-a/db"]),
        ("state=paused", vec!["team-a/paused"]),
        ("ns=prod", vec!["prod/api", "prod/web"]),
        ("type=http", vec!["prod/api"]),
        ("label=tier%3Dcritical", vec!["prod/api"]),
        ("q=PUBLIC+api", vec!["prod/api"]),
        ("q=m0249", vec!["bulk/m0249"]),
        ("ns=team-a&state=down", vec!["team-a/db"]),
    ] {
        let (s, _, html) = env
            .get(&mut admin, &format!("/admin/monitors?{query}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{query}");
        let got: Vec<&str> = html
            .split("<tr data-monitor=\"")
            .skip(1)
            .map(|r| &r[..r.find('"').unwrap()])
            .collect();
        assert_eq!(got, want, "{query}");
    }
    // Counts by state (every filter but the state).
    let (_, _, html) = env.get(&mut admin, "/admin/?state=down").await;
    assert!(
        html.contains("<strong data-count=\"down\">1</strong>"),
        "{html}"
    );
    assert!(html.contains(&format!("<strong data-count=\"up\">{}</strong>", BULK + 1)));
    // Bad filters: 400 naming the parameter, nothing listed.
    for (query, says) in [
        ("state=sideways", "state:"),
        ("type=gopher", "type:"),
        ("label=x", "label:"),
        ("page=0", "page:"),
    ] {
        let (s, _, html) = env.get(&mut admin, &format!("/admin/?{query}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}");
        assert!(html.contains(says), "{query}");
    }

    // Scoping: a principal of team-a sees team-a only, whatever the filter.
    let mut alice = env.sign_in("alice").await;
    let (_, _, html) = env.get(&mut alice, "/admin/").await;
    assert_eq!(rows(&html), 2);
    assert!(!html.contains("prod/api"));
    let (_, _, html) = env.get(&mut alice, "/admin/?ns=prod").await;
    assert_eq!(rows(&html), 0);
    let (s, _, _) = env.get(&mut alice, "/admin/monitors/prod/api").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn monitors_json() {
    let env = start().await;
    let mut admin = env.sign_in("admin").await;
    let (s, h, text) = env.get(&mut admin, "/admin/monitors.json?ns=prod").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["total"], 2);
    assert_eq!(v["page"], 1);
    assert_eq!(v["counts"]["up"], 1);
    let api = &v["rows"][0];
    assert_eq!(api["key"], "prod/api");
    assert_eq!(api["state"], "up");
    assert!(api["lastCheck"].is_string());
    assert_eq!(api["uptime24h"], 90.0);
    assert_eq!(api["sparkline"].as_array().unwrap().len(), 10);
    // Oldest first: the first heartbeat written (i = 9) is the oldest.
    assert_eq!(api["sparkline"][0], 49.0);
    assert_eq!(v["rows"][1]["key"], "prod/web");
    assert_eq!(v["rows"][1]["state"], "unknown");
    let (s, _, text) = env.get(&mut admin, "/admin/monitors.json?state=nope").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(text.contains("state:"));
    let (s, _, text) = env.get(&mut admin, "/admin/monitors.json?page=2").await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 100);
    assert_eq!(v["page"], 2);
}

#[tokio::test]
async fn monitor_detail_redacts_credentials() {
    let env = start().await;
    let id = env
        .store
        .open_incident(
            "prod",
            "api",
            Utc::now() - Duration::hours(2),
            Some(FailureReason::Timeout),
        )
        .await
        .unwrap();
    let mut admin = env.sign_in("admin").await;
    let (s, _, html) = env.get(&mut admin, "/admin/monitors/prod/api").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("<pre id=\"spec\""));
    for secret in ["hunter2", "sekrit", "abc.def.ghi"] {
        assert!(!html.contains(secret), "{secret} leaked");
    }
    assert!(html.contains("***"));
    assert!(html.contains("visible-value"));
    assert!(html.contains(&format!("href=\"/admin/incidents/{id}\"")));
    assert!(html.contains("42 days left"));
    assert!(html.contains("Public Status (prod/public)"));
    assert!(html.contains("class=\"latency-chart\""));
    assert_eq!(html.matches("<tr><td class=\"nowrap\"><time").count(), 10);
    // Names that need escaping in the path are found; unknown monitors are 404 pages.
    let (s, _, _) = env.get(&mut admin, "/admin/monitors/prod/%61pi").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, html) = env.get(&mut admin, "/admin/monitors/prod/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(html.contains("<h1>Not found</h1>"));
}

#[tokio::test]
async fn sign_in_with_a_totp_code() {
    let env = start().await;
    let mut b = Browser::default();
    let (_, _, html) = env.get(&mut b, "/admin/login").await;
    let csrf = field(&html, "csrf").unwrap();
    let post = |totp: String| {
        form(&[
            ("username", "otp"),
            ("password", "pw-otp-1"),
            ("totp", &totp),
            ("csrf", &csrf),
            ("next", "/admin/"),
        ])
    };
    // The password alone: asked for the code, no session.
    let (s, _, html) = env
        .post(
            &mut b,
            "/admin/login",
            &post(String::new()),
            Some(&env.origin()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("needs a code from its authenticator app"),
        "{html}"
    );
    assert!(!b.has("token"));
    let secret = totp_rs::Secret::try_from_base32(TOTP_B32).unwrap();
    let totp = totp_rs::Builder::new()
        .with_secret(secret.as_bytes().to_vec())
        .build()
        .unwrap();
    let now = totp.generate_current().to_string();
    let wrong = format!("{:06}", (now.parse::<u32>().unwrap() + 1) % 1_000_000);
    let (s, _, html) = env
        .post(&mut b, "/admin/login", &post(wrong), Some(&env.origin()))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("The TOTP code is wrong"), "{html}");
    let (s, h, _) = env
        .post(&mut b, "/admin/login", &post(now), Some(&env.origin()))
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location(&h), "/admin/");
    assert!(b.has("token"));
}

/// The overview of a catalog of 10,000 monitors (20 namespaces of 500; 2 % down, 1 %
/// degraded; 24 heartbeats each over the last two hours): the server's time to first
/// byte and the page's size, and, when node and puppeteer-core are found
/// (`~/.cache/kubekuma-test-peers/node_modules`), Chromium's first contentful paint.
/// A measurement, not a test of speed: it asserts only that the pages answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo nextest run -p kubekuma-agent --test suite --run-ignored only console::overview_of_10000_monitors --no-capture"]
async fn overview_of_10000_monitors() {
    const NAMESPACES: usize = 20;
    const PER_NS: usize = 500;
    let mut yaml = users_yaml(USERS);
    for n in 0..NAMESPACES {
        for i in 0..PER_NS {
            let tier = ["critical", "high", "low"][i % 3];
            yaml.push_str(&format!(
                "---\napiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\n\
                 metadata: {{name: svc-{i:04}, namespace: team-{n:02}, labels: {{tier: {tier}}}}}\n\
                 spec:\n  type: tcp\n  description: service {i} of team {n}\n  \
                 target:\n    tcp: {{host: svc-{i}.team-{n}.internal, port: 443}}\n"
            ));
        }
    }
    let started = std::time::Instant::now();
    let env = start_with(yaml, async |live: &mut Live, store: &Store| {
        let now = Utc::now();
        for n in 0..NAMESPACES {
            for i in 0..PER_NS {
                let (ns, name) = (format!("team-{n:02}"), format!("svc-{i:04}"));
                let state = match (n * PER_NS + i) % 100 {
                    0 | 1 => MonitorState::Down,
                    2 => MonitorState::Flapping,
                    _ => MonitorState::Up,
                };
                let mut m = LiveMonitor::default();
                m.tracker.base = state;
                m.checked_at = Some(now - Duration::seconds((i % 60) as i64));
                m.latency_ms = Some(20.0 + (i % 50) as f64);
                if state == MonitorState::Down {
                    m.reason = Some(FailureReason::Timeout);
                    m.message = Some("connect timed out after 10 s".into());
                }
                live.monitors.insert(ObjKey::new(&ns, &name), m);
                for k in 0..24_i64 {
                    store
                        .record_heartbeat(Heartbeat {
                            namespace: ns.clone(),
                            name: name.clone(),
                            state: if k == 0 { state } else { MonitorState::Up },
                            latency_ms: Some(20.0 + ((i as i64 + k) % 40) as f64),
                            reason: None,
                            message: None,
                            checked_at: now - Duration::minutes(k * 5),
                            attempts: 1,
                        })
                        .unwrap();
                }
            }
        }
    })
    .await;
    println!(
        "catalog of {} monitors, 240,000 heartbeats, ready in {:.1} s",
        NAMESPACES * PER_NS,
        started.elapsed().as_secs_f64()
    );
    let admin = env.sign_in("admin").await;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for path in [
        "/admin/",
        "/admin/?page=60",
        "/admin/?state=down",
        "/admin/?q=service+42&label=tier%3Dhigh",
        "/admin/monitors.json",
    ] {
        let (mut ttfb, mut total, mut size) = (Vec::new(), Vec::new(), 0);
        for _ in 0..7 {
            let t = std::time::Instant::now();
            let r = env
                .client
                .get(format!("{}{path}", env.base))
                .header("cookie", admin.header())
                .send()
                .await
                .unwrap();
            let first = t.elapsed();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            size = r.bytes().await.unwrap().len();
            ttfb.push(first.as_secs_f64() * 1000.0);
            total.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "{path}: first byte {:.0} ms (median of 7; cold {:.0} ms), complete {:.0} ms, {:.1} KiB",
            median(ttfb.clone()),
            ttfb[0],
            median(total),
            size as f64 / 1024.0
        );
    }

    // Chromium's first contentful paint, when puppeteer-core is at hand.
    let modules = std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/kubekuma-test-peers/node_modules");
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let (Some(chromium), true) = (chromium, modules.join("puppeteer-core").exists()) else {
        println!("chromium: skipped (no chromium or puppeteer-core)");
        return;
    };
    let token = admin.cookie("token").unwrap();
    let script = env._dir.path().join("paint.js");
    std::fs::write(&script, PAINT_JS).unwrap();
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("{}/admin/", env.base))
        .arg(&token)
        .arg(chromium)
        .env("NODE_PATH", &modules)
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {
            let runs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
            let pick = |k: &str| {
                median(
                    runs.iter()
                        .filter_map(|r| r[k].as_f64())
                        .collect::<Vec<_>>(),
                )
            };
            assert!(!runs.is_empty(), "{}", String::from_utf8_lossy(&o.stdout));
            println!(
                "chromium /admin/ (median of {}): first byte {:.0} ms, first contentful paint {:.0} ms, load {:.0} ms",
                runs.len(),
                pick("ttfb"),
                pick("fcp"),
                pick("load")
            );
        }
        Ok(o) => println!("chromium: failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => println!("chromium: node not runnable: {e}"),
    }
}

/// Loads a console page five times in headless Chromium (the session cookie set first)
/// and prints the navigation's time to first byte, first contentful paint and load, in
/// milliseconds from the navigation's start, as JSON.
const PAINT_JS: &str = r#"
const puppeteer = require('puppeteer-core');
(async () => {
  const [url, token, chromium] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    executablePath: chromium, headless: true, args: ['--no-sandbox', '--disable-gpu'],
  });
  const page = await browser.newPage();
  await page.setViewport({ width: 1366, height: 900 });
  const u = new URL(url);
  await page.setCookie({ name: 'token', value: token, domain: u.hostname, path: '/' });
  const runs = [];
  for (let i = 0; i < 6; i++) {
    await page.goto(url, { waitUntil: 'load' });
    const m = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const fcp = performance.getEntriesByName('first-contentful-paint')[0];
      return { ttfb: nav.responseStart, fcp: fcp ? fcp.startTime : null, load: nav.loadEventEnd };
    });
    if (i > 0) runs.push(m); // the first load fills the cache of console.css/js
  }
  console.log(JSON.stringify(runs));
  await browser.close();
})().catch((e) => { console.error(String(e)); process.exit(1); });
"#;

/// `auth.mode: disabled`: no sign-in; every page is the anonymous viewer's, without a
/// sign-out button. `auth.mode: oidc`: the sign-in page offers the SSO link (with `next`)
/// and no password form unless `local.enabled` is set.
#[tokio::test]
async fn auth_modes_disabled_and_oidc() {
    let env = start_with(
        manifests()
            + "---\napiVersion: monitoring.kubekuma.io/v1\nkind: KubeKumaSettings\n\
               metadata: {name: settings}\nspec:\n  auth:\n    mode: disabled\n",
        seed,
    )
    .await;
    let mut b = Browser::default();
    let (s, _, html) = env.get(&mut b, "/admin/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("anonymous <span class=\"role\">(viewer)</span>"));
    assert!(!html.contains("method=\"post\""));
    let (s, h, _) = env.get(&mut b, "/admin/login").await;
    assert_eq!(
        (s, location(&h).as_str()),
        (StatusCode::SEE_OTHER, "/admin/")
    );

    let oidc = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: oidc-client, namespace: kubekuma}\n\
                stringData: {secret: s3cret}\n---\napiVersion: monitoring.kubekuma.io/v1\n\
                kind: KubeKumaSettings\nmetadata: {name: settings}\nspec:\n  auth:\n    mode: oidc\n    \
                oidc:\n      issuer: 'https://idp.example.com'\n      clientId: kubekuma\n      \
                clientSecretRef: {name: oidc-client, key: secret}\n      \
                redirectUrl: 'https://status.example.com/api/v1/auth/oidc/callback'\n      \
                roleMapping: [{group: admins, role: admin}]\n";
    let env = start_with(manifests() + oidc, seed).await;
    let mut b = Browser::default();
    let (s, _, html) = env
        .get(&mut b, "/admin/login?next=/admin/monitors/prod/api")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("href=\"/api/v1/auth/oidc/login?next=%2Fadmin%2Fmonitors%2Fprod%2Fapi\">Sign in with SSO</a>"),
        "{html}"
    );
    assert!(!html.contains("name=\"password\""));
}
