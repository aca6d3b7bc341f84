//! The console's operations pages (issue 21) through the real listener (`admin::serve` on
//! 127.0.0.1 + reqwest form posts with the `csrf` field scraped from the page, cookies
//! carried by hand, no redirects followed): acknowledging, updating (with its preview)
//! and resolving an incident, checked through the JSON API and the audit log; creating a
//! silence with its preview (JSON and without JavaScript) and expiring it; maintenance
//! windows' next occurrences; recent deliveries and "Send test" to a real webhook
//! receiver (hyper) with a failing one whose error must not show its secret; the audit
//! log's filters and pages; and a viewer refused on every write while holding a valid
//! token of its own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::common::users::{Browser, User, field, form, users_yaml};
use bytes::Bytes;
use chrono::{Duration, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kubekuma_agent::admin::auth::{Auth, AuthConfig};
use kubekuma_agent::admin::{self, AdminContext, Api, Health};
use kubekuma_agent::catalog::ObjKey;
use kubekuma_agent::catalog::folder::FolderCatalog;
use kubekuma_agent::catalog::schedule_expr::WindowSchedule;
use kubekuma_agent::metrics::Metrics;
use kubekuma_agent::state::live::{Live, LiveMonitor};
use kubekuma_agent::store::deliveries::{DeliveryStatus, NewDelivery};
use kubekuma_agent::store::{AuditEvent, Store};
use kubekuma_crds::MonitorState;
use kubekuma_crds::results::FailureReason;
use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode, redirect};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

const SECRET: &str = "0123456789abcdef0123456789abcdef-console-ops-tests";
/// A credential in the failing webhook's URL path: it must never show.
const HOOK_TOKEN: &str = "tok3n-s3cr3t-9f8e7d";

/// Users: (resource name, namespace, username, role, password).
const USERS: &[User] = &[
    ("admin", "kubekuma", "admin", "admin", "pw-admin-1"),
    ("editor", "kubekuma", "editor", "editor", "pw-editor-1"),
    ("viewer", "kubekuma", "viewer", "viewer", "pw-viewer-1"),
    ("alice", "team-a", "alice", "editor", "pw-alice-1"),
];

/// A webhook receiver: records every request's path and JSON body; answers 500 on paths
/// under `/fail/`, 200 otherwise.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let fail = path.starts_with("/fail/");
                            log.lock()
                                .unwrap()
                                .push((path, serde_json::from_slice(&body).unwrap_or_default()));
                            let mut r = Response::new(Full::new(Bytes::from_static(if fail {
                                b"receiver says no"
                            } else {
                                b"ok"
                            })));
                            if fail {
                                *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, seen }
    }

    fn seen(&self) -> Vec<(String, Value)> {
        self.seen.lock().unwrap().clone()
    }
}

fn manifests(hook: SocketAddr) -> String {
    let mut y = String::new();
    y.push_str(&users_yaml(USERS));
    y.push_str(&format!(
        "---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: api, namespace: prod, labels: {{tier: critical}}}}
spec:
  type: tcp
  target:
    tcp: {{host: api.internal, port: 443}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: web, namespace: prod, labels: {{tier: low}}}}
spec:
  type: tcp
  target:
    tcp: {{host: web.internal, port: 443}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: db, namespace: team-a, labels: {{tier: critical}}}}
spec:
  type: tcp
  target:
    tcp: {{host: db.internal, port: 5432}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {{name: hook, namespace: prod}}
spec: {{type: webhook, config: {{webhook: {{url: 'http://{hook}/hook'}}}}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {{name: broken, namespace: prod}}
spec: {{type: webhook, config: {{webhook: {{url: 'http://{hook}/fail/{HOOK_TOKEN}'}}}}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {{name: team-hook, namespace: team-a}}
spec: {{type: webhook, config: {{webhook: {{url: 'http://{hook}/team'}}}}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Silence
metadata: {{name: catalog-sil, namespace: prod}}
spec:
  startsAt: '2020-01-01T00:00:00Z'
  endsAt: '2099-01-01T00:00:00Z'
  reason: planned in Git
  selector: {{matchLabels: {{tier: low}}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: MaintenanceWindow
metadata: {{name: weekly, namespace: prod}}
spec:
  schedule: '0 2 * * SUN'
  durationMinutes: 60
  description: Sunday patching
  selector: {{matchLabels: {{tier: critical}}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: MaintenanceWindow
metadata: {{name: always, namespace: team-a}}
spec:
  schedule: '* * * * *'
  durationMinutes: 5
"
    ));
    y
}

struct Env {
    base: String,
    host: String,
    client: reqwest::Client,
    store: Store,
    receiver: Receiver,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("manifests");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("all.yaml"), manifests(receiver.addr)).unwrap();
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
    let live = Arc::new(Mutex::new(Live::default()));
    {
        let mut l = live.lock().unwrap();
        let mut down = LiveMonitor::default();
        down.tracker.base = MonitorState::Down;
        down.reason = Some(FailureReason::Timeout);
        down.checked_at = Some(Utc::now());
        l.monitors.insert(ObjKey::new("prod", "api"), down);
    }
    let mut config = AuthConfig::load(Some(SECRET), dir.path()).unwrap();
    config.home_namespace = "kubekuma".into();
    config.limits.per_address = 10_000;
    config.limits.username_failures = 10_000;
    let auth = Arc::new(Auth::new(config, store.clone(), catalog.clone()));
    let health = Arc::new(Health::default());
    health.set_ready(true);
    let api = Api::new(health).with_admin(AdminContext {
        store: store.clone(),
        live,
        catalog,
        auth,
        metrics: Arc::new(Metrics::new()),
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
        receiver,
        _stop: stop,
        _dir: dir,
    }
}

/// The number of `needle`s in `html`.
fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

/// The inner HTML of the element whose opening tag contains `id="{id}"`, up to the
/// first `</{tag}>` after it.
fn inner<'a>(html: &'a str, id: &str, tag: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let rest = &html[start..];
    let open_end = rest.find('>').unwrap() + 1;
    let rest = &rest[open_end..];
    &rest[..rest.find(&format!("</{tag}>")).unwrap_or(rest.len())]
}

type Page = (StatusCode, reqwest::header::HeaderMap, String);

/// The page with `/` unescaped (minijinja's HTML escaping writes it `&#x2f;`; a browser
/// reads both the same), so checks can name paths and keys as they are.
fn slashes(html: String) -> String {
    html.replace("&#x2f;", "/")
}

impl Env {
    async fn get(&self, b: &mut Browser, path: &str) -> Page {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", b.header())
            .send()
            .await
            .unwrap();
        b.take(&r);
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, slashes(r.text().await.unwrap()))
    }

    /// A form POST as a browser sends it from the console (`Origin` of the agent).
    async fn post(&self, b: &mut Browser, path: &str, pairs: &[(&str, &str)]) -> Page {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", b.header())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", format!("http://{}", self.host))
            .body(form(pairs))
            .send()
            .await
            .unwrap();
        b.take(&r);
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, slashes(r.text().await.unwrap()))
    }

    /// Sign in through the console's form.
    async fn sign_in(&self, username: &str) -> Browser {
        let pw = USERS.iter().find(|u| u.2 == username).unwrap().4;
        let mut b = Browser::default();
        let (s, _, html) = self.get(&mut b, "/admin/login").await;
        assert_eq!(s, StatusCode::OK);
        let csrf = field(&html, "csrf").unwrap();
        let (s, h, body) = self
            .post(
                &mut b,
                "/admin/login",
                &[
                    ("username", username),
                    ("password", pw),
                    ("totp", ""),
                    ("csrf", &csrf),
                    ("next", "/admin/"),
                ],
            )
            .await;
        assert_eq!(s, StatusCode::SEE_OTHER, "sign in of {username}: {body}");
        assert_eq!(h[LOCATION], "/admin/");
        b
    }

    /// The page's `csrf` token.
    async fn csrf(&self, b: &mut Browser, path: &str) -> (String, String) {
        let (s, _, html) = self.get(b, path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {html}");
        (field(&html, "csrf").unwrap(), html)
    }

    /// A bearer token of the JSON API.
    async fn token(&self, username: &str) -> String {
        let pw = USERS.iter().find(|u| u.2 == username).unwrap().4;
        let r = self
            .client
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({"username": username, "password": pw}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    async fn api(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        crate::common::call_api(&self.client, &self.base, method, path, Some(token), body).await
    }

    async fn incident(&self, token: &str, id: i64) -> Value {
        let (s, l) = self
            .api(Method::GET, "/api/v1/incidents?limit=500", token, None)
            .await;
        assert_eq!(s, StatusCode::OK, "{l}");
        l.as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("incident {id} not listed: {l}"))
    }

    async fn audit(&self, kind: &str) -> Vec<AuditEvent> {
        self.store.audit_events(Some(kind), 1000).await.unwrap()
    }
}

#[tokio::test]
async fn an_incident_is_acknowledged_updated_and_resolved_through_forms() {
    let env = start().await;
    let t0 = Utc::now() - Duration::minutes(30);
    let id = env
        .store
        .open_incident("prod", "api", t0, Some(FailureReason::Timeout))
        .await
        .unwrap();
    let token = env.token("admin").await;
    let mut b = env.sign_in("admin").await;

    let (s, _, list) = env.get(&mut b, "/admin/incidents").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        list.contains(&format!("data-incident=\"{id}\" data-status=\"open\"")),
        "{list}"
    );
    assert!(list.contains(&format!("href=\"/admin/incidents/{id}\"")));

    // Acknowledge.
    let page = format!("/admin/incidents/{id}");
    let (csrf, html) = env.csrf(&mut b, &page).await;
    assert!(html.contains(">Acknowledge</button>"), "{html}");
    let (s, h, _) = env
        .post(&mut b, &format!("{page}/acknowledge"), &[("csrf", &csrf)])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], format!("{page}?done=acknowledged"));
    let (_, _, html) = env.get(&mut b, &format!("{page}?done=acknowledged")).await;
    assert!(html.contains("<p class=\"flash\" role=\"status\">Incident acknowledged."));
    assert!(
        !html.contains(">Acknowledge</button>"),
        "acknowledged twice?"
    );
    assert_eq!(env.incident(&token, id).await["acknowledged"], true);

    // The preview without JavaScript: nothing is posted, the page shows the update as
    // the status page will, escaped.
    let draft = "Investigating <b>slow</b> answers";
    let (s, _, html) = env
        .post(
            &mut b,
            &format!("{page}/updates"),
            &[("csrf", &csrf), ("message", draft), ("preview", "1")],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let preview = inner(&html, "update-preview", "section");
    assert!(
        preview.contains("<ol class=\"updates\" reversed>")
            && preview.contains("Investigating &lt;b&gt;slow&lt;/b&gt; answers")
            && preview.contains("api is down"),
        "{preview}"
    );
    assert!(html.contains(">Investigating &lt;b&gt;slow&lt;/b&gt; answers</textarea>"));
    assert_eq!(env.incident(&token, id).await["updates"], json!([]));
    // The preview for console.js, and what it says about text the API would refuse.
    let (s, _, j) = env
        .get(
            &mut b,
            &format!("{page}/preview?message=Looking%20%3Cinto%3E%20it"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let j: Value = serde_json::from_str(&j).unwrap();
    let fragment = j["html"].as_str().unwrap();
    assert!(
        fragment.contains("<article class=\"incident\">")
            && fragment.contains("Looking &lt;into&gt; it"),
        "{fragment}"
    );
    let (_, _, j) = env
        .get(&mut b, &format!("{page}/preview?message=rlo%20%E2%80%AEx"))
        .await;
    let j: Value = serde_json::from_str(&j).unwrap();
    assert!(
        j["error"].as_str().unwrap().contains("bidirectional"),
        "{j}"
    );

    // Post it.
    let (s, h, _) = env
        .post(
            &mut b,
            &format!("{page}/updates"),
            &[("csrf", &csrf), ("message", draft)],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], format!("{page}?done=updated"));
    let inc = env.incident(&token, id).await;
    assert_eq!(inc["updates"][0]["message"], draft);
    let (_, _, html) = env.get(&mut b, &page).await;
    assert!(
        inner(&html, "updates", "ol").contains("Investigating &lt;b&gt;slow&lt;/b&gt; answers")
    );
    // Refused text: the API's 400, the message kept in the form, nothing posted.
    let (s, _, html) = env
        .post(
            &mut b,
            &format!("{page}/updates"),
            &[("csrf", &csrf), ("message", "bell \u{7} ring")],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("<p class=\"error\" role=\"alert\">message contains a control character"),
        "{html}"
    );
    assert_eq!(
        env.incident(&token, id).await["updates"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Resolve with a closing update.
    let (s, h, _) = env
        .post(
            &mut b,
            &format!("{page}/resolve"),
            &[("csrf", &csrf), ("message", "Fixed by a rollback")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], format!("{page}?done=resolved"));
    let inc = env.incident(&token, id).await;
    assert_eq!(inc["state"], "resolved", "{inc}");
    assert_eq!(inc["updates"][1]["message"], "Fixed by a rollback");
    let (_, _, list) = env.get(&mut b, "/admin/incidents").await;
    assert!(list.contains(&format!("data-incident=\"{id}\" data-status=\"resolved\"")));
    // Resolving again: the API's 409, shown on the page.
    let (s, _, html) = env
        .post(&mut b, &format!("{page}/resolve"), &[("csrf", &csrf)])
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(html.contains("is already resolved"), "{html}");

    // The audit rows are the API's: same events, same actor.
    let events: Vec<(String, Option<String>)> = env
        .audit("incident")
        .await
        .into_iter()
        .rev()
        .map(|e| (e.event_type, e.actor))
        .collect();
    let admin = Some("user:kubekuma/admin".to_string());
    assert_eq!(
        events,
        [
            ("acknowledged".to_string(), admin.clone()),
            ("updated".to_string(), admin.clone()),
            ("updated".to_string(), admin.clone()),
            ("resolved".to_string(), admin.clone()),
        ]
    );
}

#[tokio::test]
async fn a_silence_is_previewed_created_and_expired() {
    let env = start().await;
    let token = env.token("admin").await;
    let mut b = env.sign_in("admin").await;

    // The live preview's JSON.
    for (q, want) in [
        ("namespace=prod&labels=tier%3Dcritical", json!(["prod/api"])),
        ("namespace=prod&monitor=web", json!(["prod/web"])),
        ("namespace=prod", json!(["prod/api", "prod/web"])),
        ("namespace=prod&monitor=nope", json!([])),
    ] {
        let (s, _, j) = env
            .get(&mut b, &format!("/admin/silences/preview?{q}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{q}");
        assert_eq!(serde_json::from_str::<Value>(&j).unwrap(), want, "{q}");
    }
    let (s, _, j) = env
        .get(&mut b, "/admin/silences/preview?namespace=prod&labels=tier")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(j.contains("labels: \\\"tier\\\" is not key=value"), "{j}");

    // The catalog's silence is listed, without an Expire button.
    let (csrf, html) = env.csrf(&mut b, "/admin/silences").await;
    let row = inner(&html, "active-silences", "table");
    assert!(row.contains("data-silence=\"prod/catalog-sil\""), "{row}");
    assert!(!row.contains("/admin/silences/prod/catalog-sil/expire"));

    // The preview without JavaScript creates nothing.
    let fields = |preview: bool| {
        let mut f = vec![
            ("csrf", csrf.as_str()),
            ("namespace", "prod"),
            ("monitor", ""),
            ("labels", "tier=critical"),
            ("duration", "30"),
            ("reason", "db migration"),
        ];
        if preview {
            f.push(("preview", "1"));
        }
        f
    };
    let (s, _, html) = env.post(&mut b, "/admin/silences", &fields(true)).await;
    assert_eq!(s, StatusCode::OK);
    let preview = inner(&html, "silence-preview", "section");
    assert!(
        preview.contains("1 monitor.") && preview.contains("<li>prod/api</li>"),
        "{preview}"
    );
    assert!(
        html.contains("value=\"tier=critical\""),
        "the form keeps its values"
    );
    let (_, l) = env.api(Method::GET, "/api/v1/silences", &token, None).await;
    assert_eq!(l["total"], 1, "{l}");

    // A typo that would silence nothing is refused.
    let mut typo = fields(false);
    typo[3] = ("labels", "tier=critcal");
    let (s, _, html) = env.post(&mut b, "/admin/silences", &typo).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("would match no monitor"), "{html}");

    // A reason with a bidirectional override is refused by the API's check.
    let mut spoof = fields(false);
    spoof[5] = ("reason", "db \u{202e}noitargim");
    let (s, _, html) = env.post(&mut b, "/admin/silences", &spoof).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("reason contains a bidirectional control (U+202E)"),
        "{html}"
    );

    // Create it.
    let (s, h, _) = env.post(&mut b, "/admin/silences", &fields(false)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], "/admin/silences?done=silence_created");
    let (_, l) = env.api(Method::GET, "/api/v1/silences", &token, None).await;
    let created = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "api")
        .cloned()
        .unwrap_or_else(|| panic!("{l}"));
    assert_eq!(created["active"], true);
    assert_eq!(created["reason"], "db migration");
    assert_eq!(
        created["selector"],
        json!({"matchLabels": {"tier": "critical"}})
    );
    assert_eq!(created["createdBy"], "user:kubekuma/admin");
    let key = format!(
        "{}/{}",
        created["namespace"].as_str().unwrap(),
        created["name"].as_str().unwrap()
    );
    let (_, _, html) = env
        .get(&mut b, "/admin/silences?done=silence_created")
        .await;
    assert!(html.contains("Silence created."));
    assert!(html.contains(&format!("data-silence=\"{key}\" data-state=\"active\"")));

    // Expire it.
    let (s, h, _) = env
        .post(
            &mut b,
            &format!("/admin/silences/{key}/expire"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], "/admin/silences?done=silence_expired");
    let (_, l) = env.api(Method::GET, "/api/v1/silences", &token, None).await;
    let after = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "api")
        .cloned()
        .unwrap();
    assert_eq!(after["active"], false, "{after}");
    assert!(after["expiredAt"].is_string());
    let (_, _, html) = env.get(&mut b, "/admin/silences").await;
    assert!(html.contains(&format!("data-silence=\"{key}\" data-state=\"expired\"")));
    // The catalog's one cannot be expired here: the API's 409.
    let (s, _, html) = env
        .post(
            &mut b,
            "/admin/silences/prod/catalog-sil/expire",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(html.contains("comes from the catalog"), "{html}");

    let events: Vec<String> = env
        .audit("silence")
        .await
        .into_iter()
        .rev()
        .map(|e| format!("{} {} {:?}", e.event_type, e.resource_key, e.actor))
        .collect();
    assert_eq!(
        events,
        [
            format!("created {key} Some(\"user:kubekuma/admin\")"),
            format!("expired {key} Some(\"user:kubekuma/admin\")"),
        ]
    );

    // A principal of another namespace previews only its own.
    let mut alice = env.sign_in("alice").await;
    let (s, _, j) = env
        .get(&mut alice, "/admin/silences/preview?namespace=prod")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{j}");
    let (_, _, j) = env
        .get(&mut alice, "/admin/silences/preview?namespace=team-a")
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&j).unwrap(),
        json!(["team-a/db"])
    );
}

#[tokio::test]
async fn maintenance_windows_show_their_next_occurrences() {
    let env = start().await;
    let mut b = env.sign_in("admin").await;
    let before = Utc::now();
    let (s, _, html) = env.get(&mut b, "/admin/maintenance").await;
    assert_eq!(s, StatusCode::OK);
    let after = Utc::now();
    let start = html.find("data-window=\"prod/weekly\"").unwrap();
    let row = &html[start..start + html[start..].find("</tr>").unwrap()];
    assert!(row.contains("data-active=\"false\""), "{row}");
    assert!(
        row.contains("Sunday patching") && row.contains("1 monitor"),
        "{row}"
    );
    // The next three Sundays at 02:00 UTC, as the schedule computes them.
    let schedule = WindowSchedule::parse("0 2 * * SUN", chrono_tz::UTC).unwrap();
    let mut want = Vec::new();
    let mut at = before;
    for _ in 0..3 {
        let t = schedule.next_start_after(at).unwrap();
        want.push(t);
        at = t;
    }
    let _ = after;
    for t in want {
        let attr = format!(
            "datetime=\"{}\"",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        assert!(row.contains(&attr), "{attr} in {row}");
    }
    assert_eq!(count(row, "<li><time"), 3, "{row}");
    let start = html.find("data-window=\"team-a/always\"").unwrap();
    let row = &html[start..start + html[start..].find("</tr>").unwrap()];
    assert!(
        row.contains("data-active=\"true\"") && row.contains("in progress"),
        "{row}"
    );
    // Scoped: alice sees her namespace's window only.
    let mut alice = env.sign_in("alice").await;
    let (_, _, html) = env.get(&mut alice, "/admin/maintenance").await;
    assert!(html.contains("data-window=\"team-a/always\""));
    assert!(!html.contains("prod/weekly"));
}

#[tokio::test]
async fn deliveries_are_listed_and_a_test_reaches_a_real_receiver() {
    let env = start().await;
    let hook = ObjKey::new("prod", "hook");
    let delivery = |status: DeliveryStatus, error: Option<&str>| NewDelivery {
        incident_id: None,
        monitor: ObjKey::new("prod", "api"),
        policy: ObjKey::new("prod", "oncall"),
        provider: hook.clone(),
        provider_type: "webhook".into(),
        event_kind: "down".into(),
        dedupe_key: format!("k-{}", rand::random::<u32>()),
        status,
        error: error.map(str::to_string),
        detail: None,
        payload: json!({}),
    };
    env.store
        .record_deliveries(
            vec![
                delivery(DeliveryStatus::Failed, Some("rejected: HTTP 410 Gone")),
                delivery(DeliveryStatus::Deduped, None),
            ],
            None,
            Utc::now(),
        )
        .await
        .unwrap();

    let mut b = env.sign_in("admin").await;
    let (csrf, html) = env.csrf(&mut b, "/admin/notifications").await;
    let section = inner(&html, "provider-prod-hook", "section");
    assert!(
        html.contains("data-provider=\"prod/hook\"")
            && section.contains("data-outcome=\"failed\"")
            && section.contains("rejected: HTTP 410 Gone")
            && section.contains("data-outcome=\"deduped\""),
        "{section}"
    );
    assert!(section.contains(">Send test<"), "{section}");
    assert!(html.contains("data-provider=\"team-a/team-hook\""));

    // Send a test: the receiver gets it, the audit says so.
    let (s, h, _) = env
        .post(
            &mut b,
            "/admin/notifications/prod/hook/test",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        h[LOCATION],
        "/admin/notifications?done=test_sent#provider-prod-hook"
    );
    let seen = env.receiver.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, "/hook");
    assert_eq!(seen[0].1["kind"], "test", "{:?}", seen[0].1);
    let audit = env.audit("provider").await;
    assert_eq!(
        (
            audit[0].event_type.as_str(),
            audit[0].resource_key.as_str(),
            audit[0].actor.as_deref()
        ),
        ("test_sent", "prod/hook", Some("user:kubekuma/admin"))
    );

    // A failing provider: the error shows, its secret never does (page, API, audit).
    let (s, _, html) = env
        .post(
            &mut b,
            "/admin/notifications/prod/broken/test",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    let section = inner(&html, "provider-prod-broken", "section");
    assert!(
        section.contains(
            "<p class=\"error\" role=\"alert\">the test through prod/broken (webhook) failed"
        ),
        "{section}"
    );
    assert!(section.contains("500"), "{section}");
    assert!(
        !html.contains(HOOK_TOKEN),
        "the webhook's secret leaked: {html}"
    );
    let audit = env.audit("provider").await;
    assert_eq!(audit[0].event_type, "test_failed");
    assert!(!format!("{audit:?}").contains(HOOK_TOKEN));
    assert_eq!(env.receiver.seen().len(), 2);

    // The same through the JSON API.
    let token = env.token("admin").await;
    let (s, j) = env
        .api(
            Method::POST,
            "/api/v1/providers/prod/hook/test",
            &token,
            Some(json!({"title": "From CI", "message": "hello"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(
        (j["sent"].clone(), j["type"].clone()),
        (json!(true), json!("webhook"))
    );
    let seen = env.receiver.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].1["message"], "hello", "{:?}", seen[2].1);
    let (s, j) = env
        .api(
            Method::POST,
            "/api/v1/providers/prod/nope/test",
            &token,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{j}");
    let (s, j) = env
        .api(
            Method::GET,
            "/api/v1/deliveries?provider=prod/hook",
            &token,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["total"], 2, "{j}");
    assert_eq!(j["items"][0]["status"], "deduped", "newest first: {j}");
    assert_eq!(j["items"][1]["error"], "rejected: HTTP 410 Gone");
    // An editor reads deliveries but may not send (admins only, on the server).
    let editor = env.token("editor").await;
    let (s, _) = env
        .api(Method::GET, "/api/v1/deliveries", &editor, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = env
        .api(
            Method::POST,
            "/api/v1/providers/prod/hook/test",
            &editor,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(env.receiver.seen().len(), 3);
}

#[tokio::test]
async fn a_viewer_sees_no_write_button_and_every_write_is_refused() {
    let env = start().await;
    let id = env
        .store
        .open_incident("prod", "api", Utc::now(), None)
        .await
        .unwrap();
    let token = env.token("admin").await;
    let (s, j) = env
        .api(
            Method::POST,
            "/api/v1/silences",
            &token,
            json!({"namespace": "prod", "name": "keep-me", "durationMinutes": 60}).into(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{j}");

    for user in ["viewer", "editor"] {
        let mut b = env.sign_in(user).await;
        let viewer = user == "viewer";
        let (csrf, html) = env.csrf(&mut b, &format!("/admin/incidents/{id}")).await;
        assert_eq!(html.contains(">Acknowledge</button>"), !viewer, "{user}");
        assert_eq!(html.contains(">Post update</button>"), !viewer, "{user}");
        assert_eq!(html.contains(">Resolve</button>"), !viewer, "{user}");
        let (_, _, html) = env.get(&mut b, "/admin/silences").await;
        assert_eq!(html.contains(">Create silence</button>"), !viewer, "{user}");
        assert_eq!(
            html.contains("/admin/silences/prod/keep-me/expire"),
            !viewer
        );
        let (_, _, html) = env.get(&mut b, "/admin/notifications").await;
        assert!(!html.contains(">Send test<"), "{user}: admins only");
        assert!(
            !html.contains("href=\"/admin/audit\""),
            "{user}: no Audit in the nav"
        );
        let (s, _, html) = env.get(&mut b, "/admin/audit").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{user}");
        assert!(html.contains("role=\"alert\""));

        // Forged posts with the principal's own valid token.
        let mut writes: Vec<(String, Vec<(&str, &str)>)> = vec![(
            "/admin/notifications/prod/hook/test".to_string(),
            vec![("csrf", &csrf)],
        )];
        if viewer {
            writes.extend([
                (
                    format!("/admin/incidents/{id}/acknowledge"),
                    vec![("csrf", csrf.as_str())],
                ),
                (
                    format!("/admin/incidents/{id}/updates"),
                    vec![("csrf", csrf.as_str()), ("message", "forged")],
                ),
                (
                    format!("/admin/incidents/{id}/resolve"),
                    vec![("csrf", csrf.as_str())],
                ),
                (
                    "/admin/silences".to_string(),
                    vec![
                        ("csrf", csrf.as_str()),
                        ("namespace", "prod"),
                        ("duration", "5"),
                    ],
                ),
                (
                    "/admin/silences/prod/keep-me/expire".to_string(),
                    vec![("csrf", csrf.as_str())],
                ),
            ]);
        }
        for (path, fields) in &writes {
            let (s, _, html) = env.post(&mut b, path, fields).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{user} POST {path}: {html}");
        }
    }
    // Nothing changed.
    let inc = env.incident(&token, id).await;
    assert_eq!(
        (
            inc["acknowledged"].clone(),
            inc["state"].clone(),
            inc["updates"].clone()
        ),
        (json!(false), json!("down"), json!([]))
    );
    let (_, l) = env.api(Method::GET, "/api/v1/silences", &token, None).await;
    let api: Vec<&Value> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source"] == "api")
        .collect();
    assert_eq!(api.len(), 1, "{l}");
    assert_eq!(api[0]["active"], true);
    assert!(env.receiver.seen().is_empty());
    assert!(env.audit("incident").await.is_empty());
    assert!(env.audit("provider").await.is_empty());
}

#[tokio::test]
async fn the_audit_log_filters_and_pages() {
    let env = start().await;
    // A failed login, then 60 acknowledgements by two actors.
    let r = env
        .client
        .post(format!("{}/api/v1/auth/login", env.base))
        .json(&json!({"username": "admin", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for i in 0..60 {
        env.store
            .record_audit(AuditEvent {
                id: 0,
                resource_type: "incident".into(),
                resource_key: i.to_string(),
                event_type: "acknowledged".into(),
                actor: Some(if i % 3 == 0 {
                    "user:kubekuma/editor".into()
                } else {
                    "user:kubekuma/admin".into()
                }),
                details: Some(json!({"monitorId": "prod/api"})),
                changes_summary: Some("acknowledged: false → true".into()),
                timestamp: Utc::now() - Duration::seconds(100 - i),
            })
            .await
            .unwrap();
    }
    let mut b = env.sign_in("admin").await;
    let (s, _, html) = env.get(&mut b, "/admin/audit").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("href=\"/admin/audit\" aria-current=\"page\""),
        "{html}"
    );
    assert_eq!(count(&html, "class=\"audit-row\""), 50);
    assert!(html.contains("href=\"/admin/audit?page=2\""), "{html}");
    // Page 2: the rest (60 + the failed login + the sign-in = 62 events).
    let (_, _, html) = env.get(&mut b, "/admin/audit?page=2").await;
    assert_eq!(count(&html, "class=\"audit-row\""), 12, "{html}");
    assert!(!html.contains("page=3"));

    let (_, _, html) = env.get(&mut b, "/admin/audit?result=failed").await;
    assert_eq!(count(&html, "class=\"audit-row\""), 1, "{html}");
    assert!(html.contains("data-action=\"login_failed\" data-result=\"failed\""));
    let (_, _, html) = env
        .get(
            &mut b,
            "/admin/audit?actor=user%3Akubekuma%2Feditor&action=acknowledged&result=ok",
        )
        .await;
    assert_eq!(count(&html, "class=\"audit-row\""), 20, "{html}");
    assert!(!html.contains("user:kubekuma/admin</td>"));
    let (_, _, html) = env.get(&mut b, "/admin/audit?action=login").await;
    assert_eq!(
        count(&html, "class=\"audit-row\""),
        1,
        "the form's own sign-in"
    );
    let (s, _, html) = env.get(&mut b, "/admin/audit?result=maybe").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("result must be ok or failed"));

    // The JSON API answers the same, to admins of the home namespace only.
    let token = env.token("admin").await;
    let (s, j) = env
        .api(
            Method::GET,
            "/api/v1/audit?actor=user:kubekuma/editor&limit=5&offset=0",
            &token,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["items"].as_array().unwrap().len(), 5);
    assert_eq!(j["more"], true);
    assert_eq!(j["items"][0]["resourceKey"], "57", "newest first: {j}");
    for user in ["editor", "alice"] {
        let t = env.token(user).await;
        let (s, _) = env.api(Method::GET, "/api/v1/audit", &t, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{user}");
        let mut b = env.sign_in(user).await;
        let (s, _, _) = env.get(&mut b, "/admin/audit").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{user}");
    }
}
