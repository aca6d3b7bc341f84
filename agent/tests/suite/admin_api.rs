//! The admin API through the real listener (`admin::serve` on 127.0.0.1 + reqwest):
//! LocalUsers (admin, editor, viewer in the home namespace, a scoped editor in `team-a`)
//! and their password hashes (argon2id with low cost) loaded from a manifest folder,
//! logged in through `POST /api/v1/auth/login`. The route × role table is driven by
//! `routes::ROUTES` itself, so a new route is covered (or fails) without a new row.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::common::users::{User, phc, users_yaml};
use chrono::{Duration, Utc};
use kubekuma_agent::admin::auth::{Auth, AuthConfig};
use kubekuma_agent::admin::roles::{Role, allowed};
use kubekuma_agent::admin::routes::{Guard, ROUTES, RouteDef, RouteId, Verb};
use kubekuma_agent::admin::{self, AdminContext, Api, Health};
use kubekuma_agent::catalog::ObjKey;
use kubekuma_agent::catalog::folder::FolderCatalog;
use kubekuma_agent::export::objects;
use kubekuma_agent::metrics::Metrics;
use kubekuma_agent::state::live::{Live, LiveMonitor};
use kubekuma_agent::store::Store;
use kubekuma_crds::objects::{IncidentMonth, keys};
use kubekuma_crds::results::{CertInfo, FailureReason, Heartbeat};
use kubekuma_crds::{MonitorState, MonitorType};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

const SECRET: &str = "0123456789abcdef0123456789abcdef-admin-api-tests";

/// Users: (resource name, namespace, username, role, password).
const USERS: &[User] = &[
    ("admin", "kubekuma", "admin", "admin", "pw-admin-1"),
    ("editor", "kubekuma", "editor", "editor", "pw-editor-1"),
    ("viewer", "kubekuma", "viewer", "viewer", "pw-viewer-1"),
    ("alice", "team-a", "alice", "editor", "pw-alice-1"),
    ("bob", "team-a", "bob", "admin", "pw-bob-1"),
    ("carol", "team-a", "carol", "viewer", "pw-carol-1"),
];

/// The admin API key `team-a/team-key` (32 fixed bytes), with its public key ID.
fn team_key() -> String {
    use base64::Engine as _;
    format!(
        "kk_live_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32])
    )
}

/// The editor API key `kubekuma/ci-key` (32 fixed bytes).
fn api_key() -> String {
    use base64::Engine as _;
    format!(
        "kk_test_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32])
    )
}

fn manifests() -> String {
    let mut y = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: ci-key-hash, namespace: kubekuma}}\nstringData:\n  hash: '{}'\n\
         ---\napiVersion: monitoring.kubekuma.io/v1\nkind: ApiKey\nmetadata: {{name: ci-key, namespace: kubekuma}}\n\
         spec:\n  name: CI\n  role: editor\n  keyHashSecretRef: {{name: ci-key-hash, key: hash}}\n",
        phc(&api_key())
    );
    y.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: team-key-hash, namespace: team-a}}\nstringData:\n  hash: '{}'\n\
         ---\napiVersion: monitoring.kubekuma.io/v1\nkind: ApiKey\nmetadata: {{name: team-key, namespace: team-a}}\n\
         spec:\n  name: team\n  role: admin\n  keyId: '{}'\n  keyHashSecretRef: {{name: team-key-hash, key: hash}}\n",
        phc(&team_key()),
        &team_key()[8..20]
    ));
    y.push_str(&users_yaml(USERS));
    y.push_str(
        "---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: api, namespace: prod, labels: {tier: critical}}
spec:
  type: http
  target:
    http: {url: 'https://api.example.com/health'}
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
          displayName: API
        - ref: {name: db, namespace: team-a}
  badges: {enabled: true, scope: all}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Silence
metadata: {name: catalog-sil, namespace: prod}
spec:
  startsAt: '2020-01-01T00:00:00Z'
  endsAt: '2099-01-01T00:00:00Z'
  reason: planned
",
    );
    y
}

struct Env {
    base: String,
    api: Arc<Api>,
    client: reqwest::Client,
    store: Store,
    live: Arc<Mutex<Live>>,
    metrics: Arc<Metrics>,
    snapshot: Arc<kubekuma_agent::catalog::Snapshot>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    start_with("").await
}

/// The listener with the manifests of [`manifests`] and `extra` (more documents).
async fn start_with(extra: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("manifests");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("all.yaml"), manifests() + extra).unwrap();
    let built = FolderCatalog::new(vec![folder]).load();
    let errors: Vec<String> = built
        .findings
        .iter()
        .filter(|f| f.severity == kubekuma_agent::catalog::Severity::Error)
        .map(|f| f.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let snapshot = Arc::new(built.snapshot);
    let (_catalog_tx, catalog) = watch::channel(snapshot.clone());
    // Keep the sender alive for the test's length.
    std::mem::forget(_catalog_tx);

    let store = Store::open(&dir.path().join("kubekuma.db")).unwrap();
    let live = Arc::new(Mutex::new(Live::default()));
    {
        let mut l = live.lock().unwrap();
        let mut m = LiveMonitor::default();
        m.tracker.base = MonitorState::Up;
        m.checked_at = Some(Utc::now());
        m.latency_ms = Some(42.0);
        m.cert = Some(CertInfo {
            expires_at: Utc::now() + Duration::days(42),
            days_left: 42,
        });
        l.monitors.insert(ObjKey::new("prod", "api"), m);
        let mut down = LiveMonitor::default();
        down.tracker.base = MonitorState::Down;
        down.reason = Some(FailureReason::Timeout);
        l.monitors.insert(ObjKey::new("team-a", "db"), down);
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
    store.flush().await.unwrap();

    let mut config = AuthConfig::load(Some(SECRET), dir.path()).unwrap();
    config.home_namespace = "kubekuma".into();
    config.limits.per_address = 10_000;
    config.limits.username_failures = 10_000;
    let auth = Arc::new(Auth::new(config, store.clone(), catalog.clone()));
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    health.set_ready(true);
    // A built site as `kubekuma up` serves it: a page and one of its badges.
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("public/badges")).unwrap();
    std::fs::write(
        site.join("public/index.html"),
        "<!doctype html><title>p</title>",
    )
    .unwrap();
    std::fs::write(site.join("public/badges/status.svg"), "<svg/>").unwrap();
    let api = Api::new(health).with_site(site).with_admin(AdminContext {
        store: store.clone(),
        live: live.clone(),
        catalog,
        auth,
        metrics: metrics.clone(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let api = Arc::new(api);
    let (addr, _task) = admin::serve("127.0.0.1:0", api.clone(), stop_rx)
        .await
        .unwrap();
    Env {
        base: format!("http://{addr}"),
        api,
        client: reqwest::Client::new(),
        store,
        live,
        metrics,
        snapshot,
        _stop: stop,
        _dir: dir,
    }
}

impl Env {
    async fn login(&self, username: &str) -> String {
        let pw = USERS.iter().find(|u| u.2 == username).unwrap().4;
        let r = self
            .client
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({"username": username, "password": pw}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "login of {username}");
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        crate::common::call_api(&self.client, &self.base, method, path, token, body).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }
}

fn method(v: Verb) -> Method {
    match v {
        Verb::Get => Method::GET,
        Verb::Post => Method::POST,
        Verb::Delete => Method::DELETE,
    }
}

/// A concrete path for a route: parameters that find nothing to change.
fn concrete(r: &RouteDef) -> String {
    r.pattern
        .split('/')
        .map(|seg| match seg {
            "{namespace}" => "prod",
            "{name}" => "api",
            "{id}" => "999999",
            "{token}" => "no-such-token-123",
            "{slug}" => "public",
            "{monitor}" => "api",
            s if s.starts_with('{') => panic!("no value for parameter {s} of {}", r.pattern),
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_for_every_role() {
    let env = start().await;
    let roles = [
        ("admin", Some(Role::Admin)),
        ("editor", Some(Role::Editor)),
        ("viewer", Some(Role::Viewer)),
        ("anonymous", None),
    ];
    let mut tokens = std::collections::HashMap::new();
    for (user, role) in roles {
        if role.is_some() {
            tokens.insert(user, env.login(user).await);
        }
    }
    let mut failures = Vec::new();
    for r in ROUTES {
        for (user, role) in roles {
            let mut token = tokens.get(user).cloned();
            let mut body = (r.method != Verb::Get).then(|| json!({}));
            match r.id {
                // Logging out ends the session: use a fresh one.
                RouteId::Logout if role.is_some() => token = Some(env.login(user).await),
                RouteId::Login => {
                    body = Some(json!({"username": "viewer", "password": "pw-viewer-1"}))
                }
                _ => {}
            }
            let (status, answer) = env
                .call(method(r.method), &concrete(r), token.as_deref(), body)
                .await;
            let expected_denial = match (r.guard, role) {
                (Guard::Public, _) => None,
                (_, None) => Some(StatusCode::UNAUTHORIZED),
                (Guard::Principal, Some(_)) => None,
                (Guard::Role(area, access), Some(role)) => {
                    (!allowed(role, area, access)).then_some(StatusCode::FORBIDDEN)
                }
            };
            let ok = match expected_denial {
                Some(code) => status == code,
                None => status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            };
            if !ok {
                failures.push(format!(
                    "{} {} as {user}: got {status} {answer}, expected {}",
                    r.method.as_str(),
                    r.pattern,
                    expected_denial.map_or("access".to_string(), |c| c.to_string())
                ));
            }
            if let Some(code) = expected_denial {
                assert_eq!(
                    answer["error"]["code"],
                    if code == StatusCode::UNAUTHORIZED {
                        "unauthorized"
                    } else {
                        "forbidden"
                    }
                );
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Wrong methods: 405 with Allow; unknown API paths: 404 JSON.
    let patterns: BTreeSet<&str> = ROUTES.iter().map(|r| r.pattern).collect();
    for p in patterns {
        let path = concrete(ROUTES.iter().find(|r| r.pattern == p).unwrap());
        let r = env
            .client
            .request(Method::PUT, format!("{}{path}", env.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "PUT {p}");
        let allow = r.headers()["allow"].to_str().unwrap().to_string();
        for route in ROUTES.iter().filter(|r| r.pattern == p) {
            assert!(allow.contains(route.method.as_str()), "{p}: {allow}");
        }
    }
    let (status, body) = env.get("/api/v1/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    // Bad credentials.
    let (status, _) = env.get("/api/v1/monitors", Some("not-a-valid-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn monitors_filters_pagination_and_scope() {
    let env = start().await;
    let admin = env.login("admin").await;
    let alice = env.login("alice").await;
    let viewer = env.login("viewer").await;

    let (s, all) = env.get("/api/v1/monitors", Some(&viewer)).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(all["total"], 4);
    let names: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["namespace"].as_str().unwrap(),
                i["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        ["prod/api", "prod/web", "team-a/db", "team-a/paused"]
    );
    let api = &all["items"][0];
    assert_eq!(api["spec"]["type"], "http");
    assert_eq!(
        api["spec"]["target"]["http"]["url"],
        "https://api.example.com/health"
    );
    assert_eq!(api["status"]["state"], "up");
    assert_eq!(api["status"]["latencyMs"], 42.0);
    assert_eq!(api["status"]["uptime"]["24h"], 90.0);
    assert!(api["status"]["uptime"]["7d"].is_number());
    assert_eq!(all["items"][3]["status"]["state"], "paused");
    assert_eq!(all["items"][1]["status"]["state"], "pending");

    let count = |q: &'static str, token: String| {
        let env = &env;
        async move {
            let (s, b) = env.get(&format!("/api/v1/monitors{q}"), Some(&token)).await;
            assert_eq!(s, StatusCode::OK, "{q}: {b}");
            (
                b["total"].as_u64().unwrap(),
                b["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["name"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>(),
            )
        }
    };
    assert_eq!(
        count("?namespace=prod", admin.clone()).await,
        (2, vec!["api".into(), "web".into()])
    );
    assert_eq!(
        count("?label=tier=critical", admin.clone()).await,
        (1, vec!["api".into()])
    );
    assert_eq!(count("?label=tier=critical,x=y", admin.clone()).await.0, 0);
    assert_eq!(count("?type=tcp", admin.clone()).await.0, 3);
    assert_eq!(
        count("?state=down", admin.clone()).await,
        (1, vec!["db".into()])
    );
    assert_eq!(
        count("?state=paused", admin.clone()).await,
        (1, vec!["paused".into()])
    );
    assert_eq!(
        count("?limit=2&offset=1", admin.clone()).await,
        (4, vec!["web".into(), "db".into()])
    );
    assert_eq!(count("?limit=9999", admin.clone()).await.1.len(), 4);
    // A principal of another namespace sees only its own.
    assert_eq!(
        count("", alice.clone()).await,
        (2, vec!["db".into(), "paused".into()])
    );
    assert_eq!(count("?namespace=prod", alice.clone()).await.0, 0);
    for bad in [
        "?limit=0",
        "?limit=x",
        "?offset=-1",
        "?type=gopher",
        "?state=sad",
        "?label=novalue",
    ] {
        let (s, b) = env
            .get(&format!("/api/v1/monitors{bad}"), Some(&admin))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert_eq!(b["error"]["code"], "bad_request");
    }

    // One monitor with its heartbeats, newest first.
    let (s, one) = env
        .get("/api/v1/monitors/prod/api?limit=3", Some(&viewer))
        .await;
    assert_eq!(s, StatusCode::OK, "{one}");
    assert_eq!(one["name"], "api");
    let beats = one["heartbeats"].as_array().unwrap();
    assert_eq!(beats.len(), 3);
    assert_eq!(beats[0]["state"], "down");
    assert_eq!(beats[1]["state"], "up");
    assert!(beats[0]["checkedAt"].as_str().unwrap() > beats[1]["checkedAt"].as_str().unwrap());
    let (s, one) = env.get("/api/v1/monitors/prod/api", Some(&viewer)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["heartbeats"].as_array().unwrap().len(), 10);
    // Hidden and missing monitors are both 404.
    let (s, b) = env.get("/api/v1/monitors/prod/api", Some(&alice)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "not_found");
    let (s, _) = env.get("/api/v1/monitors/prod/nope", Some(&admin)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn incidents_ack_update_resolve_and_audit() {
    let env = start().await;
    let editor = env.login("editor").await;
    let viewer = env.login("viewer").await;
    let alice = env.login("alice").await;
    let t0 = Utc::now() - Duration::hours(2);
    let prod = env
        .store
        .open_incident("prod", "api", t0, Some(FailureReason::Timeout))
        .await
        .unwrap();
    let team = env
        .store
        .open_incident("team-a", "db", t0 + Duration::minutes(10), None)
        .await
        .unwrap();

    let (s, list) = env.get("/api/v1/incidents", Some(&viewer)).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    // Newest first, the spec's shape.
    assert_eq!(list[0]["id"], team);
    assert_eq!(list[1]["monitorId"], "prod/api");
    for key in [
        "id",
        "monitorId",
        "startedAt",
        "endedAt",
        "state",
        "duration",
        "suppressed",
        "suppressReason",
        "acknowledged",
        "updates",
    ] {
        assert!(list[1].get(key).is_some(), "{key} missing in {}", list[1]);
    }
    assert_eq!(list[1]["state"], "down");
    let (_, l) = env
        .get("/api/v1/incidents?monitorId=prod/api", Some(&viewer))
        .await;
    assert_eq!(l.as_array().unwrap().len(), 1);
    let (_, l) = env
        .get("/api/v1/incidents?limit=1&offset=1", Some(&viewer))
        .await;
    assert_eq!(l[0]["id"], prod);
    let (_, l) = env.get("/api/v1/incidents", Some(&alice)).await;
    assert_eq!(l.as_array().unwrap().len(), 1, "{l}");
    let since = (t0 + Duration::minutes(5)).to_rfc3339();
    let (_, l) = env
        .get(
            &format!("/api/v1/incidents?since={}", urlencode(&since)),
            Some(&viewer),
        )
        .await;
    assert_eq!(l.as_array().unwrap().len(), 1, "{l}");
    // An offset's `+` left unencoded still parses.
    assert!(since.contains('+'));
    let (_, raw) = env
        .get(&format!("/api/v1/incidents?since={since}"), Some(&viewer))
        .await;
    assert_eq!(raw, l);
    let until = (t0 + Duration::minutes(5)).to_rfc3339();
    let (_, l) = env
        .get(
            &format!("/api/v1/incidents?until={}", urlencode(&until)),
            Some(&viewer),
        )
        .await;
    assert_eq!(l.as_array().unwrap().len(), 1, "{l}");
    assert_eq!(l[0]["id"], prod);
    let (s, _) = env
        .get("/api/v1/incidents?state=maybe", Some(&viewer))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Acknowledge.
    let (s, i) = env
        .post(
            &format!("/api/v1/incidents/{prod}/acknowledge"),
            &editor,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{i}");
    assert_eq!(i["acknowledged"], true);
    // Another namespace's incident is not found for alice; the viewer may not change it.
    let (s, _) = env
        .post(
            &format!("/api/v1/incidents/{prod}/acknowledge"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = env
        .post(
            &format!("/api/v1/incidents/{prod}/acknowledge"),
            &viewer,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A public update, shown on the status page twin and exported to the builder.
    let (s, i) = env
        .post(
            &format!("/api/v1/incidents/{prod}/updates"),
            &editor,
            json!({"message": "We are on it."}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{i}");
    assert_eq!(i["updates"][0]["message"], "We are on it.");
    for bad in [json!({"message": "  "}), json!({"text": "x"}), json!({})] {
        let (s, b) = env
            .post(&format!("/api/v1/incidents/{prod}/updates"), &editor, bad)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    }
    let (s, page) = env.get("/status/public", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let active = page["activeIncidents"].as_array().unwrap();
    assert!(
        active
            .iter()
            .any(|a| a["updates"][0]["message"] == "We are on it."),
        "{page}"
    );
    let objects = objects::build(
        "a",
        "home",
        &env.snapshot,
        &env.store,
        &env.live,
        Utc::now(),
    )
    .await
    .unwrap()
    .encode()
    .unwrap();
    let now = Utc::now();
    let key = keys::incidents(
        "a",
        chrono::Datelike::year(&now),
        chrono::Datelike::month(&now),
    );
    let month: IncidentMonth =
        serde_json::from_slice(&objects.iter().find(|(k, _)| *k == key).unwrap().1).unwrap();
    let exported = month.incidents.iter().find(|i| i.id == prod).unwrap();
    assert_eq!(exported.updates[0].message, "We are on it.");

    // The monitor is still down when an operator resolves its incident.
    {
        let mut l = env.live.lock().unwrap();
        let t = &mut l
            .monitors
            .get_mut(&ObjKey::new("prod", "api"))
            .unwrap()
            .tracker;
        t.base = MonitorState::Down;
        t.open_incident = Some(prod);
    }
    // Resolve, then again.
    let (s, i) = env
        .post(
            &format!("/api/v1/incidents/{prod}/resolve"),
            &editor,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{i}");
    assert!(i["endedAt"].is_string());
    assert_eq!(i["state"], "resolved", "a resolved incident says so: {i}");
    {
        // Re-armed: no incident held open, pending, so a later failure opens a new one.
        let l = env.live.lock().unwrap();
        let t = &l.monitors[&ObjKey::new("prod", "api")].tracker;
        assert_eq!(t.open_incident, None);
        assert_eq!(t.base, MonitorState::Pending);
    }
    let (s, b) = env
        .post(
            &format!("/api/v1/incidents/{prod}/resolve"),
            &editor,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "already_resolved");
    let (_, open) = env.get("/api/v1/incidents?state=open", Some(&viewer)).await;
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(open[0]["id"], team);
    let (_, resolved) = env
        .get("/api/v1/incidents?state=resolved", Some(&viewer))
        .await;
    assert_eq!(resolved[0]["id"], prod);
    assert_eq!(resolved[0]["state"], "resolved");
    let (s, _) = env
        .post("/api/v1/incidents/424242/resolve", &editor, json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let audit = env.store.audit_events(Some("incident"), 50).await.unwrap();
    let seen: Vec<(&str, &str, Option<&str>)> = audit
        .iter()
        .rev()
        .map(|e| {
            (
                e.event_type.as_str(),
                e.resource_key.as_str(),
                e.actor.as_deref(),
            )
        })
        .collect();
    let key = prod.to_string();
    assert_eq!(
        seen,
        [
            ("acknowledged", key.as_str(), Some("user:kubekuma/editor")),
            ("updated", key.as_str(), Some("user:kubekuma/editor")),
            ("resolved", key.as_str(), Some("user:kubekuma/editor")),
        ]
    );
    let logins = env.store.audit_events(Some("session"), 50).await.unwrap();
    assert!(
        logins
            .iter()
            .any(|e| e.event_type == "login" && e.actor.as_deref() == Some("user:team-a/alice"))
    );
    for e in &logins {
        assert!(
            !e.details.as_ref().unwrap().to_string().contains("pw-"),
            "{e:?}"
        );
    }
    // A failed login is recorded too.
    let r = env
        .client
        .post(format!("{}/api/v1/auth/login", env.base))
        .json(&json!({"username": "viewer", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let logins = env.store.audit_events(Some("session"), 1).await.unwrap();
    assert_eq!(logins[0].event_type, "login_failed");
    assert_eq!(logins[0].actor, None);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn silences_create_list_expire() {
    let env = start().await;
    let editor = env.login("editor").await;
    let viewer = env.login("viewer").await;
    let alice = env.login("alice").await;

    let (s, created) = env
        .post(
            "/api/v1/silences",
            &editor,
            json!({"namespace": "prod", "durationMinutes": 30, "reason": "deploy", "selector": {"matchLabels": {"tier": "critical"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let name = created["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("api-"), "{name}");
    assert_eq!(created["active"], true);
    assert_eq!(created["createdBy"], "user:kubekuma/editor");

    let active = env.store.active_api_silences(Utc::now()).await.unwrap();
    assert_eq!(active.len(), 1);
    let (key, silence) = &active[0];
    assert_eq!(key, &ObjKey::new("prod", &name));
    assert_eq!(silence.metadata.namespace.as_deref(), Some("prod"));
    assert_eq!(silence.spec.reason.as_deref(), Some("deploy"));
    assert_eq!(
        silence.spec.selector.as_ref().unwrap().match_labels["tier"],
        "critical"
    );
    assert!(silence.spec.ends_at - silence.spec.starts_at == Duration::minutes(30));

    // Named, upcoming: stored but not active.
    let starts = Utc::now() + Duration::hours(1);
    let (s, b) = env
        .post(
            "/api/v1/silences",
            &editor,
            json!({"namespace": "prod", "name": "later", "startsAt": starts, "endsAt": starts + Duration::hours(1)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["active"], false);
    assert_eq!(
        env.store
            .active_api_silences(Utc::now())
            .await
            .unwrap()
            .len(),
        1
    );
    let (s, b) = env
        .post(
            "/api/v1/silences",
            &editor,
            json!({"namespace": "prod", "name": "later", "durationMinutes": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "conflict");

    // Invalid bodies.
    let now = Utc::now();
    for bad in [
        json!({"namespace": "prod", "startsAt": now + Duration::hours(2), "endsAt": now + Duration::hours(1)}),
        json!({"namespace": "prod"}),
        json!({"namespace": "prod", "durationMinutes": 5, "endsAt": now + Duration::hours(1)}),
        json!({"namespace": "prod", "durationMinutes": 0}),
        json!({"namespace": "Prod!", "durationMinutes": 5}),
        json!({"namespace": "prod", "durationMinutes": 5, "extra": 1}),
        json!({"namespace": "prod", "durationMinutes": 5, "selector": {"matchNames": [{"pattern": "(", "regex": true}]}}),
    ] {
        let (s, b) = env.post("/api/v1/silences", &editor, bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert_eq!(b["error"]["code"], "bad_request");
    }
    // The catalog's silence cannot be shadowed or expired through the API.
    let (s, b) = env
        .post(
            "/api/v1/silences",
            &editor,
            json!({"namespace": "prod", "name": "catalog-sil", "durationMinutes": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "managed_by_catalog");
    let (s, b) = env
        .call(
            Method::DELETE,
            "/api/v1/silences/prod/catalog-sil",
            Some(&editor),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "managed_by_catalog");
    // Roles and namespaces.
    let (s, _) = env
        .post(
            "/api/v1/silences",
            &viewer,
            json!({"namespace": "prod", "durationMinutes": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = env
        .post(
            "/api/v1/silences",
            &alice,
            json!({"namespace": "prod", "durationMinutes": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = env
        .post(
            "/api/v1/silences",
            &alice,
            json!({"namespace": "team-a", "durationMinutes": 5, "selector": {"matchNamespaces": ["prod"]}}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = env
        .post(
            "/api/v1/silences",
            &alice,
            json!({"namespace": "team-a", "name": "mine", "endsAt": now + Duration::hours(1)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // The list: catalog and API ones, each with `active`; scoped for alice.
    let (s, list) = env.get("/api/v1/silences", Some(&viewer)).await;
    assert_eq!(s, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    let summary: BTreeSet<(String, String, bool)> = items
        .iter()
        .map(|i| {
            (
                format!(
                    "{}/{}",
                    i["namespace"].as_str().unwrap(),
                    i["name"].as_str().unwrap()
                ),
                i["source"].as_str().unwrap().to_string(),
                i["active"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, bool)> = [
        ("prod/catalog-sil".to_string(), "catalog".to_string(), true),
        (format!("prod/{name}"), "api".to_string(), true),
        ("prod/later".to_string(), "api".to_string(), false),
        ("team-a/mine".to_string(), "api".to_string(), true),
    ]
    .into_iter()
    .collect();
    assert_eq!(summary, expected);
    let (_, mine) = env.get("/api/v1/silences", Some(&alice)).await;
    assert_eq!(mine["total"], 1);

    // Expire.
    let (s, _) = env
        .call(
            Method::DELETE,
            &format!("/api/v1/silences/prod/{name}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = env
        .call(
            Method::DELETE,
            &format!("/api/v1/silences/prod/{name}"),
            Some(&editor),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["active"], false);
    assert!(b["expiredAt"].is_string());
    let active = env.store.active_api_silences(Utc::now()).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].0, ObjKey::new("team-a", "mine"));
    let (s, _) = env
        .call(
            Method::DELETE,
            &format!("/api/v1/silences/prod/{name}"),
            Some(&editor),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The name is free again once expired.
    let (s, _) = env
        .post(
            "/api/v1/silences",
            &editor,
            json!({"namespace": "prod", "name": name, "durationMinutes": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let audit = env.store.audit_events(Some("silence"), 50).await.unwrap();
    let events: Vec<(&str, &str)> = audit
        .iter()
        .rev()
        .map(|e| (e.event_type.as_str(), e.resource_key.as_str()))
        .collect();
    let k = format!("prod/{name}");
    assert_eq!(
        events,
        [
            ("created", k.as_str()),
            ("created", "prod/later"),
            ("created", "team-a/mine"),
            ("expired", k.as_str()),
            ("created", k.as_str()),
        ]
    );
    assert_eq!(audit[1].actor.as_deref(), Some("user:kubekuma/editor"));
}

#[tokio::test]
async fn api_keys_act_with_their_role() {
    let env = start().await;
    let key = api_key();
    let (s, list) = env.get("/api/v1/monitors", Some(&key)).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 4);
    let (s, b) = env
        .post(
            "/api/v1/silences",
            &key,
            json!({"namespace": "team-a", "name": "from-ci", "durationMinutes": 10}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["createdBy"], "apikey:kubekuma/ci-key");
    let audit = env.store.audit_events(Some("silence"), 1).await.unwrap();
    assert_eq!(audit[0].actor.as_deref(), Some("apikey:kubekuma/ci-key"));
    let (s, _) = env.get("/metrics", Some(&key)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = env
        .get(
            "/api/v1/monitors",
            Some("kk_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_after_checks() {
    let env = start().await;
    let viewer = env.login("viewer").await;
    env.metrics.check_finished(MonitorType::Http, true, 0.25);
    env.metrics.check_finished(MonitorType::Http, false, 1.5);
    env.metrics.check_finished(MonitorType::Tcp, true, 0.01);
    env.metrics.delivery("slack", "sent");

    // Public by default (spec.publicEndpoints.metrics); see the tests at the end.
    let (s, _) = env.get("/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let r = env
        .client
        .get(format!("{}/metrics", env.base))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    for want in [
        "kubekuma_checks_total{type=\"http\",result=\"up\"} 1",
        "kubekuma_checks_total{type=\"http\",result=\"down\"} 1",
        "kubekuma_checks_total{type=\"tcp\",result=\"up\"} 1",
        "kubekuma_check_duration_seconds_count{type=\"http\"} 2",
        "kubekuma_notification_deliveries_total{provider_type=\"slack\",outcome=\"sent\"} 1",
        "kubekuma_monitors{state=\"up\"} 1",
        "kubekuma_monitors{state=\"down\"} 1",
        "kubekuma_monitors{state=\"pending\"} 1",
        "kubekuma_monitors{state=\"paused\"} 1",
        "kubekuma_monitors{state=\"flapping\"} 0",
        "kubekuma_certificate_days_left{namespace=\"prod\",name=\"api\"} 42",
        "# EOF",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
}

#[tokio::test]
async fn twins_of_the_static_outputs() {
    let env = start().await;
    let (s, page) = env.get("/status/public", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["slug"], "public");
    assert_eq!(page["title"], "Public Status");
    assert!(page["overallStatus"].is_string());
    let monitors = page["groups"][0]["monitors"].as_array().unwrap();
    assert_eq!(monitors.len(), 2);
    assert_eq!(monitors[0]["namespace"], "prod");
    assert_eq!(monitors[0]["name"], "api");
    assert_eq!(monitors[0]["status"], "up");
    assert_eq!(monitors[0]["latency"], 42);
    assert_eq!(monitors[1]["status"], "down");
    let text = page.to_string();
    assert!(
        !text.contains("api.example.com") && !text.contains("db.internal"),
        "{text}"
    );
    let (s, b) = env.get("/status/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "not_found");

    for path in [
        "/badge/public/api",
        "/badge/public/prod/api",
        "/badge/public/prod%2Fapi",
    ] {
        let r = env
            .client
            .get(format!("{}{path}", env.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["content-type"], "image/svg+xml");
        let svg = r.text().await.unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("operational"),
            "{svg}"
        );
    }
    let r = env
        .client
        .get(format!("{}/badge/public/api?kind=uptime-24h", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("uptime 24h"));
    let (s, _) = env.get("/badge/public/team-a/paused", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = env.get("/badge/public/api?kind=nope", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    for path in [
        "/uptime/prod/api?days=7",
        "/uptime/prod%2Fapi?days=7",
        "/uptime/api?days=7",
    ] {
        let (s, u) = env.get(path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {u}");
        assert_eq!(u, json!({"monitor": "prod/api", "days": 7, "uptime": 90.0}));
    }
    let (s, u) = env.get("/uptime/team-a/db", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        u,
        json!({"monitor": "team-a/db", "days": 30, "uptime": null})
    );
    // Monitors on no published page are not answered for.
    let (s, _) = env.get("/uptime/prod/web", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for bad in [
        "/uptime/prod/api?days=0",
        "/uptime/prod/api?days=x",
        "/uptime/prod/api?days=366",
    ] {
        let (s, _) = env.get(bad, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn bodies_are_limited() {
    let env = start().await;
    let admin = env.login("admin").await;
    let big = "x".repeat(70 * 1024);
    let r = env
        .client
        .post(format!("{}/api/v1/silences", env.base))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(format!("{{\"reason\": \"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    // Chunked, without a length: cut off while reading.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let addr = env.base.trim_start_matches("http://").to_string();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for _ in 0..70 {
            req.extend_from_slice(b"400\r\n");
            req.extend_from_slice(&[b' '; 1024]);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        // The server may answer and close before reading everything.
        let _ = tcp.write_all(&req).await;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("payload_too_large"), "{answer}");
    }
    // Invalid JSON is a 400 with a code.
    let r = env
        .client
        .post(format!("{}/api/v1/silences", env.base))
        .bearer_auth(&admin)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn openapi_matches_the_router() {
    let env = start().await;
    let viewer = env.login("viewer").await;
    let (s, doc) = env.get("/api/v1/openapi.json", Some(&viewer)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_string(), r.pattern.to_string()))
        .collect();
    assert_eq!(documented, routed);
    // Security as the table says.
    for r in ROUTES {
        let op = &doc["paths"][r.pattern][r.method.as_str().to_lowercase()];
        let security = op["security"].as_array().unwrap();
        assert_eq!(
            security.is_empty(),
            r.guard == Guard::Public,
            "{}",
            r.pattern
        );
        for p in r
            .pattern
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            assert!(
                op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x["name"] == p && x["in"] == "path"),
                "{} lacks {p}",
                r.pattern
            );
        }
    }
}

/// Principals outside the home namespace act on their own namespace only, whatever their
/// role: an admin LocalUser, an editor LocalUser and an admin ApiKey of `team-a` against
/// every route of the table (a new route fails to compile here until it is covered), with
/// the home namespace's admin as the contrast. Each refused write changes nothing.
#[tokio::test]
async fn every_route_confines_principals_of_other_namespaces() {
    let env = start().await;
    let home = env.login("admin").await;
    let confined = [
        ("bob (admin, team-a)", env.login("bob").await),
        ("alice (editor, team-a)", env.login("alice").await),
        ("team-key (admin key, team-a)", team_key()),
    ];
    let t0 = Utc::now() - Duration::hours(1);
    let prod_inc = env
        .store
        .open_incident("prod", "api", t0, Some(FailureReason::Timeout))
        .await
        .unwrap();
    let (s, b) = env
        .post(
            "/api/v1/silences",
            &home,
            json!({"namespace": "prod", "name": "prod-sil", "durationMinutes": 60}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let namespaces = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .map(|i| {
                i["namespace"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| {
                        i["monitorId"]
                            .as_str()
                            .and_then(|m| m.split('/').next())
                            .map(str::to_string)
                    })
                    .unwrap_or_default()
            })
            .collect()
    };
    // The contrast: the home namespace's admin sees both namespaces.
    let (_, all) = env.get("/api/v1/monitors", Some(&home)).await;
    assert_eq!(
        namespaces(&all["items"]),
        ["prod".to_string(), "team-a".to_string()].into()
    );
    let team: BTreeSet<String> = ["team-a".to_string()].into();

    for (who, token) in &confined {
        let token = token.as_str();
        let t = Some(token);
        let team_inc = env
            .store
            .open_incident("team-a", "db", Utc::now(), None)
            .await
            .unwrap();
        for r in ROUTES {
            let label = format!("{} {} as {who}", r.method.as_str(), r.pattern);
            match r.id {
                RouteId::Login
                | RouteId::OidcLogin
                | RouteId::OidcCallback
                | RouteId::Push
                | RouteId::Health
                | RouteId::Ready
                | RouteId::StatusPage
                | RouteId::Badge
                | RouteId::Uptime
                | RouteId::OpenApi => {
                    // Public, or nothing of any namespace in the answer.
                }
                RouteId::Logout => {
                    // Ending a session is the principal's own business (a key has none).
                }
                RouteId::Me => {
                    let (s, me) = env.get("/api/v1/auth/me", t).await;
                    assert_eq!(s, StatusCode::OK, "{label}");
                    assert_eq!(me["namespace"], "team-a", "{label}");
                }
                RouteId::Monitors => {
                    let (s, l) = env.get("/api/v1/monitors", t).await;
                    assert_eq!(s, StatusCode::OK, "{label}");
                    assert_eq!(namespaces(&l["items"]), team, "{label}");
                    let (_, l) = env.get("/api/v1/monitors?namespace=prod", t).await;
                    assert_eq!(l["total"], 0, "{label}");
                }
                RouteId::Monitor => {
                    let (s, _) = env.get("/api/v1/monitors/prod/api", t).await;
                    assert_eq!(s, StatusCode::NOT_FOUND, "{label}");
                    let (s, _) = env.get("/api/v1/monitors/team-a/db", t).await;
                    assert_eq!(s, StatusCode::OK, "{label}");
                }
                RouteId::Incidents => {
                    let (s, l) = env.get("/api/v1/incidents", t).await;
                    assert_eq!(s, StatusCode::OK, "{label}");
                    assert_eq!(namespaces(&l), team, "{label}");
                }
                RouteId::IncidentAcknowledge
                | RouteId::IncidentUpdate
                | RouteId::IncidentResolve => {
                    let tail = r.pattern.rsplit('/').next().unwrap_or_default();
                    let body = if tail == "acknowledge" {
                        json!({"note": "from another namespace"})
                    } else {
                        json!({"message": "from another namespace"})
                    };
                    let (s, b) = env
                        .post(
                            &format!("/api/v1/incidents/{prod_inc}/{tail}"),
                            token,
                            body.clone(),
                        )
                        .await;
                    assert_eq!(s, StatusCode::NOT_FOUND, "{label}: {b}");
                    let (s, b) = env
                        .post(&format!("/api/v1/incidents/{team_inc}/{tail}"), token, body)
                        .await;
                    assert!(s.is_success(), "{label} on its own namespace: {s} {b}");
                }
                RouteId::Silences => {
                    let (s, l) = env.get("/api/v1/silences", t).await;
                    assert_eq!(s, StatusCode::OK, "{label}");
                    let items = l.get("items").unwrap_or(&l);
                    assert!(namespaces(items).is_subset(&team), "{label}: {l}");
                }
                RouteId::SilenceCreate => {
                    for body in [
                        json!({"namespace": "prod", "durationMinutes": 5}),
                        json!({"namespace": "team-a", "durationMinutes": 5, "selector": {"matchNamespaces": ["prod"]}}),
                    ] {
                        let (s, b) = env.post("/api/v1/silences", token, body).await;
                        assert_eq!(s, StatusCode::FORBIDDEN, "{label}: {b}");
                    }
                    let (s, b) = env
                        .post(
                            "/api/v1/silences",
                            token,
                            json!({"namespace": "team-a", "durationMinutes": 5}),
                        )
                        .await;
                    assert_eq!(s, StatusCode::CREATED, "{label}: {b}");
                }
                RouteId::SilenceExpire => {
                    let (s, b) = env
                        .call(Method::DELETE, "/api/v1/silences/prod/prod-sil", t, None)
                        .await;
                    assert_eq!(s, StatusCode::NOT_FOUND, "{label}: {b}");
                }
                RouteId::Deliveries => {
                    let (s, l) = env.get("/api/v1/deliveries", t).await;
                    assert_eq!(s, StatusCode::OK, "{label}");
                    assert!(namespaces(&l["items"]).is_subset(&team), "{label}: {l}");
                    let (s, l) = env.get("/api/v1/deliveries?provider=prod/x", t).await;
                    assert_eq!((s, &l["total"]), (StatusCode::OK, &json!(0)), "{label}");
                }
                RouteId::ProviderTest => {
                    // Not found in another namespace (or, for an editor, no settings
                    // to change at all).
                    let (s, b) = env
                        .post("/api/v1/providers/prod/hook/test", token, json!({}))
                        .await;
                    assert!(
                        s == StatusCode::NOT_FOUND || s == StatusCode::FORBIDDEN,
                        "{label}: {s} {b}"
                    );
                }
                RouteId::Audit => {
                    // The log spans every namespace: never for a confined principal.
                    let (s, b) = env.get("/api/v1/audit", t).await;
                    assert_eq!(s, StatusCode::FORBIDDEN, "{label}: {b}");
                }
                RouteId::Metrics => {
                    // Readable as settings; what the text shows per namespace is the
                    // metrics handler's part.
                    let (s, _) = env.get("/metrics", t).await;
                    assert_eq!(s, StatusCode::OK, "{label}");
                }
            }
        }
    }
    // Nothing of `prod` changed: its incident is open and unacknowledged with no updates,
    // its silence active.
    let (_, l) = env
        .get("/api/v1/incidents?monitorId=prod/api", Some(&home))
        .await;
    let inc = &l[0];
    assert_eq!(inc["id"], prod_inc);
    assert!(inc["endedAt"].is_null(), "{inc}");
    assert_eq!(inc["acknowledged"], false, "{inc}");
    assert_eq!(inc["updates"].as_array().map(Vec::len), Some(0), "{inc}");
    let (_, l) = env.get("/api/v1/silences", Some(&home)).await;
    let text = l.to_string();
    assert!(text.contains("prod-sil"), "{text}");
    let audit = env.store.audit_events(Some("silence"), 100).await.unwrap();
    assert!(
        !audit
            .iter()
            .any(|a| a.resource_key == "prod/prod-sil" && a.event_type == "expired"),
        "{audit:?}"
    );
}

/// Cross-site request forgery through the real listener: with the session cookie, a page
/// on another port of the same host posts `text/plain` and form-encoded bodies to create a
/// silence and resolve an incident, and JSON with its own Origin; all are refused (403
/// `csrf`) and change nothing. The same with JSON from the agent's own origin (by
/// `Origin` or `Sec-Fetch-Site`) succeeds, as does a Bearer call from anywhere. Logins
/// need JSON and the same origin too.
#[tokio::test]
async fn cookie_writes_refuse_cross_site_requests() {
    let env = start().await;
    let token = env.login("editor").await;
    let cookie = format!("token={token}");
    let own = env.base.clone();
    let port: u16 = own.rsplit(':').next().unwrap().parse().unwrap();
    let foreign = format!("http://127.0.0.1:{}", port.wrapping_add(1).max(1));
    let incident = env
        .store
        .open_incident("prod", "api", Utc::now() - Duration::hours(1), None)
        .await
        .unwrap();
    let silence_json = json!({"namespace": "prod", "name": "forged", "durationMinutes": 30});
    let silence_form = "namespace=prod&name=forged&durationMinutes=30";
    let resolve = format!("/api/v1/incidents/{incident}/resolve");

    let send = |path: &str,
                content_type: Option<&str>,
                body: String,
                headers: &[(&str, &str)],
                auth: Cred<'_>| {
        let mut req = env.client.post(format!("{}{path}", env.base)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req = match auth {
            Cred::Cookie(c) => req.header("cookie", c),
            Cred::Bearer(t) => req.bearer_auth(t),
            Cred::None => req,
        };
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    #[derive(Clone, Copy)]
    enum Cred<'a> {
        Cookie(&'a str),
        Bearer(&'a str),
        None,
    }
    let c = Cred::Cookie(&cookie);
    let from_foreign = [("origin", foreign.as_str())];
    let from_sibling_site = [("sec-fetch-site", "same-site")];
    /// Path, content type, body, extra headers.
    type Attack<'a> = (&'a str, Option<&'a str>, String, &'a [(&'a str, &'a str)]);
    let attacks: Vec<Attack<'_>> = vec![
        (
            "/api/v1/silences",
            Some("text/plain"),
            silence_json.to_string(),
            &from_foreign,
        ),
        (
            "/api/v1/silences",
            Some("application/x-www-form-urlencoded"),
            silence_form.to_string(),
            &from_foreign,
        ),
        (
            "/api/v1/silences",
            Some("application/json"),
            silence_json.to_string(),
            &from_foreign,
        ),
        (
            "/api/v1/silences",
            Some("application/json"),
            silence_json.to_string(),
            &from_sibling_site,
        ),
        // An old browser's form post: no Origin, no Sec-Fetch-Site, a form's content type.
        (
            "/api/v1/silences",
            Some("text/plain"),
            silence_json.to_string(),
            &[],
        ),
        (&resolve, Some("text/plain"), String::new(), &from_foreign),
        (
            &resolve,
            Some("application/x-www-form-urlencoded"),
            String::new(),
            &from_foreign,
        ),
        (&resolve, None, String::new(), &from_foreign),
        (
            &resolve,
            Some("application/json"),
            "{}".into(),
            &from_foreign,
        ),
        (
            &resolve,
            Some("multipart/form-data; boundary=x"),
            String::new(),
            &[],
        ),
    ];
    for (path, ct, body, headers) in &attacks {
        let (status, b) = send(path, *ct, body.clone(), headers, c).await;
        assert_eq!(
            (status, b["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("csrf")),
            "{path} {ct:?} {headers:?}: {b}"
        );
    }
    // Nothing changed.
    let (_, l) = env.get("/api/v1/silences", Some(&token)).await;
    assert!(!l.to_string().contains("forged"), "{l}");
    let (_, l) = env
        .get("/api/v1/incidents?monitorId=prod/api", Some(&token))
        .await;
    assert!(l[0]["endedAt"].is_null(), "{l}");
    assert!(
        env.store
            .audit_events(Some("silence"), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Same origin with JSON succeeds, by Origin or by Sec-Fetch-Site.
    let (status, b) = send(
        "/api/v1/silences",
        Some("application/json"),
        silence_json.to_string(),
        &[("origin", own.as_str())],
        c,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let (status, b) = send(
        &resolve,
        Some("application/json"),
        String::new(),
        &[("sec-fetch-site", "same-origin"), ("origin", own.as_str())],
        c,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    // A non-browser client with the cookie and JSON (neither header) is served.
    let (status, b) = send(
        "/api/v1/silences",
        Some("application/json"),
        json!({"namespace": "prod", "name": "scripted", "durationMinutes": 5}).to_string(),
        &[],
        c,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");

    // A Bearer call from anywhere, whatever its content type, is not a CSRF matter.
    let (status, b) = send(
        "/api/v1/silences",
        Some("text/plain"),
        json!({"namespace": "prod", "name": "by-bearer", "durationMinutes": 5}).to_string(),
        &from_foreign,
        Cred::Bearer(&token),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    // Reads with the cookie from anywhere are not affected.
    let r = env
        .client
        .get(format!("{}/api/v1/auth/me", env.base))
        .header("cookie", &cookie)
        .header("origin", &foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Logins: a `text/plain` form can send a JSON-looking body; refused, as is a
    // foreign origin.
    let login = json!({"username": "viewer", "password": "pw-viewer-1"}).to_string();
    for (ct, headers) in [
        ("text/plain", &from_foreign[..]),
        ("text/plain", &[][..]),
        ("application/x-www-form-urlencoded", &[][..]),
        ("application/json", &from_foreign[..]),
    ] {
        let (status, b) = send(
            "/api/v1/auth/login",
            Some(ct),
            login.clone(),
            headers,
            Cred::None,
        )
        .await;
        assert_eq!(
            (status, b["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("csrf")),
            "login {ct} {headers:?}: {b}"
        );
    }
    let (status, b) = send(
        "/api/v1/auth/login",
        Some("application/json"),
        login,
        &[("origin", own.as_str())],
        Cred::None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{b}");
}

/// Item 11 of issue 17: many concurrent cold requests of the public twins cause one
/// computation of the model, shared by all (counted, not timed); a change through the
/// admin API causes exactly one more.
#[tokio::test]
async fn twins_compute_once_for_many_concurrent_requests() {
    let env = start().await;
    assert_eq!(env.api.twins().computations(), 0);
    let get = |path: &'static str| {
        let (client, url) = (env.client.clone(), format!("{}{path}", env.base));
        async move {
            let r = client.get(url).send().await.unwrap();
            let status = r.status();
            let retry = r.headers().get("retry-after").is_some();
            (status, retry, r.text().await.unwrap())
        }
    };
    let answers = futures::future::join_all((0..64).map(|_| get("/status/public"))).await;
    for (status, _, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert!(body.contains("\"slug\":\"public\""), "{body}");
    }
    assert_eq!(env.api.twins().computations(), 1, "64 cold requests");

    // Badges and uptime share the model; their own work is bounded (503 + Retry-After
    // beyond the bound, never a queue).
    let paths = ["/badge/public/api", "/uptime/prod/api", "/status/public"];
    let answers = futures::future::join_all((0..96).map(|i| get(paths[i % paths.len()]))).await;
    for (status, retry, body) in &answers {
        assert!(
            *status == StatusCode::OK || (*status == StatusCode::SERVICE_UNAVAILABLE && *retry),
            "{status}: {body}"
        );
    }
    assert!(answers.iter().filter(|a| a.0 == StatusCode::OK).count() >= 32);
    assert_eq!(env.api.twins().computations(), 1, "fresh model reused");

    // A public update invalidates the model: 32 concurrent requests, one computation,
    // and every answer shows the update.
    let editor = env.login("editor").await;
    let id = env
        .store
        .open_incident("prod", "api", Utc::now() - Duration::minutes(5), None)
        .await
        .unwrap();
    let (s, b) = env
        .post(
            &format!("/api/v1/incidents/{id}/updates"),
            &editor,
            json!({"message": "looking into it"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let answers = futures::future::join_all((0..32).map(|_| get("/status/public"))).await;
    for (status, _, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    assert_eq!(
        env.api.twins().computations(),
        2,
        "one more after the change"
    );
    let (_, page) = env.get("/status/public", None).await;
    assert!(page.to_string().contains("looking into it"), "{page}");
}

/// Item 10 of issue 17: a viewer outside the home namespace sees only its namespace's
/// series in `/metrics`, and no agent-wide totals.
#[tokio::test]
async fn metrics_are_scoped_to_the_readers_namespace() {
    let env = start().await;
    env.metrics.check_finished(MonitorType::Http, true, 0.25);
    env.metrics.delivery("slack", "sent");
    let carol = env.login("carol").await;
    let r = env
        .client
        .get(format!("{}/metrics", env.base))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    for want in [
        "kubekuma_monitors{namespace=\"team-a\",state=\"down\"} 1",
        "kubekuma_monitors{namespace=\"team-a\",state=\"paused\"} 1",
        "kubekuma_monitors{namespace=\"team-a\",state=\"up\"} 0",
        "# EOF",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
    for never in [
        "prod",
        "kubekuma_checks_total",
        "kubekuma_notification_deliveries_total",
        "kubekuma_builds_total",
        "kubekuma_monitors{state=",
    ] {
        assert!(!text.contains(never), "{never} shown to team-a:\n{text}");
    }
}

/// Item 10 of issue 17: credentials written inline in monitor specs are `***` for every
/// role, for each monitor type with such fields; Secret references stay.
#[tokio::test]
async fn inline_credentials_are_redacted_for_every_role() {
    let extra = "
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: http-creds, namespace: creds}
spec:
  type: http
  target:
    http:
      url: 'https://robot:hunter2-http@api.example.com/x?api_key=k3y-http&page=2'
      headers: {Authorization: 'Bearer t0ken-http', Cookie: 'sid=c00kie-http', X-Api-Key: 'k3y-header', Accept: text/plain}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: keyword-creds, namespace: creds}
spec:
  type: keyword
  target:
    keyword:
      url: 'https://robot:hunter2-keyword@api.example.com/'
      headers: {Proxy-Authorization: 'Basic cHJveHktc2VjcmV0'}
      keyword: ok
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: json-creds, namespace: creds}
spec:
  type: jsonQuery
  target:
    jsonQuery:
      url: 'https://robot:hunter2-json@api.example.com/'
      headers: {X-Auth-Token: 't0ken-json'}
      query: '$.status'
      expected: ok
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: ws-creds, namespace: creds}
spec:
  type: websocket
  target:
    websocket:
      url: 'wss://robot:hunter2-ws@ws.example.com/feed'
      headers: {Authorization: 'Bearer t0ken-ws'}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: ref-only, namespace: creds}
spec:
  type: http
  target:
    http:
      url: 'https://api.example.com/'
      headers: {Authorization: 'Bearer ${SECRET:api-token:token}'}
";
    let env = start_with(extra).await;
    for user in ["viewer", "editor", "admin"] {
        let token = env.login(user).await;
        let (s, list) = env
            .get("/api/v1/monitors?namespace=creds", Some(&token))
            .await;
        assert_eq!(s, StatusCode::OK, "{list}");
        assert_eq!(list["total"], 5, "{list}");
        let (s, one) = env
            .get("/api/v1/monitors/creds/http-creds", Some(&token))
            .await;
        assert_eq!(s, StatusCode::OK, "{one}");
        for text in [list.to_string(), one.to_string()] {
            for secret in [
                "hunter2",
                "k3y-http",
                "t0ken",
                "c00kie",
                "k3y-header",
                "cHJveHktc2VjcmV0",
            ] {
                assert!(!text.contains(secret), "{user} sees {secret}: {text}");
            }
            assert!(text.contains("***"), "{text}");
        }
        let spec = &one["spec"]["target"]["http"];
        assert_eq!(
            spec["url"],
            "https://robot:***@api.example.com/x?api_key=***&page=2"
        );
        assert_eq!(spec["headers"]["Authorization"], "***");
        assert_eq!(spec["headers"]["Accept"], "text/plain");
        let (_, r) = env
            .get("/api/v1/monitors/creds/ref-only", Some(&token))
            .await;
        assert_eq!(
            r["spec"]["target"]["http"]["headers"]["Authorization"],
            "Bearer ${SECRET:api-token:token}"
        );
    }
}

/// Item 10 of issue 17: control characters, bidirectional overrides and zero-width
/// characters in incident updates and acknowledgement notes are refused with a 400
/// naming the field; nothing is stored.
#[tokio::test]
async fn incident_text_with_controls_is_refused() {
    let env = start().await;
    let editor = env.login("editor").await;
    let id = env
        .store
        .open_incident("prod", "api", Utc::now() - Duration::minutes(5), None)
        .await
        .unwrap();
    for bad in [
        "down\u{7} again",
        "esc \u{1b}[2J",
        "<![CDATA[\u{0}]]>",
        "c1 \u{85}",
        "gnp.\u{202e}exe",
        "zero\u{200b}width",
        "a\u{feff}b",
    ] {
        for (route, field) in [("updates", "message"), ("acknowledge", "note")] {
            let (s, b) = env
                .post(
                    &format!("/api/v1/incidents/{id}/{route}"),
                    &editor,
                    json!({ field: bad }),
                )
                .await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?}: {b}");
            assert!(
                b["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{field} contains")),
                "{b}"
            );
        }
    }
    let (s, b) = env
        .post(
            &format!("/api/v1/incidents/{id}/updates"),
            &editor,
            json!({"message": "x".repeat(4001)}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let inc = env.store.incident(id).await.unwrap().unwrap();
    assert!(
        inc.updates.is_empty() && !inc.acknowledged,
        "nothing stored"
    );
    // Newlines and tabs are fine.
    let (s, b) = env
        .post(
            &format!("/api/v1/incidents/{id}/updates"),
            &editor,
            json!({"message": "line one\n\tline two ✓"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = env
        .post(
            &format!("/api/v1/incidents/{id}/acknowledge"),
            &editor,
            json!({"note": "on it"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["acknowledged"], true);
}

/// `spec.publicEndpoints` as a KubeKumaSettings document for [`start_with`].
fn public_endpoints(yaml: &str) -> String {
    format!(
        "---
apiVersion: monitoring.kubekuma.io/v1
kind: KubeKumaSettings
metadata: {{name: kubekuma}}
spec:
  publicEndpoints:
{yaml}"
    )
}

impl Env {
    /// Status and text of `GET path`, anonymous or with `token`.
    async fn text(&self, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

/// An anonymous scrape (Prometheus without a session) answers 200 with the aggregate
/// series only: no namespace, no monitor, no certificate series; bad credentials stay 401.
#[tokio::test]
async fn metrics_are_public_by_default_with_aggregate_series_only() {
    let env = start().await;
    env.metrics.check_finished(MonitorType::Http, true, 0.25);
    env.metrics.delivery("slack", "sent");
    let (s, text) = env.text("/metrics", None).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    for want in [
        "kubekuma_checks_total{type=\"http\",result=\"up\"} 1",
        "kubekuma_notification_deliveries_total{provider_type=\"slack\",outcome=\"sent\"} 1",
        "kubekuma_monitors{state=\"up\"} 1",
        "kubekuma_monitors{state=\"down\"} 1",
        "# EOF",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
    for tenant in ["namespace=", "name=", "prod", "team-a", "certificate"] {
        assert!(
            !text.contains(tenant),
            "{tenant} in the public text\n{text}"
        );
    }
    let (s, _) = env.text("/metrics", Some("not-a-valid-token")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A logged-in reader of the home namespace keeps the full exposition.
    let viewer = env.login("viewer").await;
    let (s, text) = env.text("/metrics", Some(&viewer)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        text.contains("kubekuma_certificate_days_left{namespace=\"prod\",name=\"api\"} 42"),
        "{text}"
    );
}

/// `publicEndpoints.metrics.requireAuth: true`: anonymous scrapes are refused (401);
/// a session still reads them.
#[tokio::test]
async fn metrics_require_auth_refuses_anonymous_scrapes() {
    let env = start_with(&public_endpoints("    metrics: {requireAuth: true}\n")).await;
    let (s, text) = env.text("/metrics", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{text}");
    assert!(!text.contains("kubekuma_"), "{text}");
    let viewer = env.login("viewer").await;
    let (s, text) = env.text("/metrics", Some(&viewer)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("kubekuma_monitors{state=\"up\"} 1"), "{text}");
}

/// `publicEndpoints.metrics.path` moves the endpoint (the old path is 404);
/// `enabled: false` turns it off for everyone.
#[tokio::test]
async fn metrics_path_and_enabled_are_honoured() {
    let env = start_with(&public_endpoints("    metrics: {path: /internal/prom}\n")).await;
    let (s, text) = env.text("/internal/prom", None).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert!(text.contains("kubekuma_monitors{state=\"up\"} 1"), "{text}");
    let viewer = env.login("viewer").await;
    let (s, _) = env.text("/metrics", Some(&viewer)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let env = start_with(&public_endpoints("    metrics: {enabled: false}\n")).await;
    let viewer = env.login("viewer").await;
    for token in [None, Some(viewer.as_str())] {
        let (s, text) = env.text("/metrics", token).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{text}");
        assert!(!text.contains("kubekuma_"), "{text}");
    }
}

/// `publicEndpoints.statusPagesEnabled: false` turns the dynamic twins off (404);
/// `badgesEnabled: false` only the badges.
#[tokio::test]
async fn public_endpoint_switches_turn_twins_off() {
    let twins = [
        "/status/public",
        "/badge/public/api",
        "/uptime/prod/api",
        "/public/",
        "/public/badges/status.svg",
    ];
    let env = start().await;
    for path in twins {
        let (s, _) = env.text(path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }

    let env = start_with(&public_endpoints("    statusPagesEnabled: false\n")).await;
    for path in twins {
        let (s, text) = env.text(path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {text}");
        assert!(text.contains("publicEndpoints"), "{path}: {text}");
    }
    // The built site is off too, and the API still on; with a session the files stay off.
    let viewer = env.login("viewer").await;
    let (s, _) = env.get("/api/v1/monitors", Some(&viewer)).await;
    assert_eq!(s, StatusCode::OK);

    let env = start_with(&public_endpoints("    badgesEnabled: false\n")).await;
    for path in ["/badge/public/api", "/public/badges/status.svg"] {
        let (s, _) = env.text(path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    for path in ["/status/public", "/uptime/prod/api", "/public/"] {
        let (s, _) = env.text(path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
}
