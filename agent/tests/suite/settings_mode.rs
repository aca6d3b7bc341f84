//! KubeKumaSettings switches of the admin API, through the real listener
//! (`admin::serve` on 127.0.0.1 + reqwest) with a catalog the test changes:
//! `spec.auth.mode: disabled` (reads without login, every write refused) and
//! `spec.mode.gitOpsReadOnly` (writes of desired state refused, operations allowed).

use std::sync::{Arc, Mutex};

use kubekuma_agent::admin::auth::{Auth, AuthConfig};
use kubekuma_agent::admin::{self, AdminContext, Api, Health};
use kubekuma_agent::catalog::Snapshot;
use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::metrics::Metrics;
use kubekuma_agent::state::live::Live;
use kubekuma_agent::store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

const SECRET: &str = "0123456789abcdef0123456789abcdef-settings-mode";

fn phc(password: &str) -> String {
    kubekuma_agent::admin::auth::password::hash_with(password.as_bytes(), 1024, 1, 1).unwrap()
}

fn manifests() -> String {
    let mut y = String::new();
    for (name, ns, role) in [
        ("admin", "kubekuma", "admin"),
        ("alice", "team-a", "editor"),
    ] {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-pw, namespace: {ns}}}\nstringData:\n  hash: '{}'\n\
             ---\napiVersion: monitoring.kubekuma.io/v1\nkind: LocalUser\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  username: {name}\n  role: {role}\n  passwordHashSecretRef: {{name: {name}-pw, key: hash}}\n",
            phc(&format!("pw-{name}"))
        ));
    }
    y.push_str(
        "---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: api, namespace: prod}
spec:
  type: tcp
  target:
    tcp: {host: api.internal, port: 443}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: db, namespace: team-a}
spec:
  type: tcp
  target:
    tcp: {host: db.internal, port: 5432}
",
    );
    y
}

fn settings(spec: &str) -> String {
    format!(
        "---\napiVersion: monitoring.kubekuma.io/v1\nkind: KubeKumaSettings\n\
         metadata: {{name: settings}}\nspec:\n{spec}"
    )
}

fn snapshot(extra: &str) -> Arc<Snapshot> {
    let built = build(&[parse_text("all.yaml", &(manifests() + extra))], None);
    let errors: Vec<String> = built
        .findings
        .iter()
        .filter(|f| f.severity == kubekuma_agent::catalog::Severity::Error)
        .map(|f| f.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    Arc::new(built.snapshot)
}

struct Env {
    base: String,
    client: reqwest::Client,
    catalog: watch::Sender<Arc<Snapshot>>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (catalog_tx, catalog) = watch::channel(snapshot(""));
    let store = Store::open(&dir.path().join("kubekuma.db")).unwrap();
    let mut config = AuthConfig::load(Some(SECRET), dir.path()).unwrap();
    config.home_namespace = "kubekuma".into();
    let auth = Arc::new(Auth::new(config, store.clone(), catalog.clone()));
    let health = Arc::new(Health::default());
    health.set_ready(true);
    let api = Api::new(health).with_admin(AdminContext {
        store,
        live: Arc::new(Mutex::new(Live::default())),
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
        client: reqwest::Client::new(),
        catalog: catalog_tx,
        _stop: stop,
        _dir: dir,
    }
}

impl Env {
    fn set(&self, extra: &str) {
        self.catalog.send(snapshot(extra)).unwrap();
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

    async fn login(&self, user: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": user, "password": format!("pw-{user}")})),
        )
        .await
    }

    async fn token(&self, user: &str) -> String {
        let (status, body) = self.login(user).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_string()
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn silence() -> Value {
    json!({"namespace": "prod", "name": "deploy", "durationMinutes": 30, "reason": "deploy"})
}

/// `spec.auth.mode: disabled`: reads answer without login, as a viewer of every
/// namespace; login, logout and every write answer 403 `auth_disabled` (with or without a
/// token issued before the switch). Back in `local` mode, reads need a login again.
#[tokio::test]
async fn auth_mode_disabled_serves_reads_and_refuses_writes() {
    let e = start().await;
    let token = e.token("admin").await;
    let (status, _) = e.call(Method::GET, "/api/v1/monitors", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "local mode needs a login");

    e.set(&settings("  auth:\n    mode: disabled\n"));
    let (status, body) = e.call(Method::GET, "/api/v1/monitors", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("\"api\"") && text.contains("\"db\""),
        "every namespace: {text}"
    );
    let (status, me) = e.call(Method::GET, "/api/v1/auth/me", None, None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["role"], "viewer");
    for path in ["/api/v1/incidents", "/api/v1/silences"] {
        let (status, body) = e.call(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }

    let (status, body) = e.login("admin").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "auth_disabled");
    assert!(body.to_string().contains("auth.mode is disabled"), "{body}");
    let writes: [(Method, &str, Option<Value>); 6] = [
        (Method::POST, "/api/v1/silences", Some(silence())),
        (Method::DELETE, "/api/v1/silences/prod/deploy", None),
        (
            Method::POST,
            "/api/v1/incidents/1/acknowledge",
            Some(json!({})),
        ),
        (
            Method::POST,
            "/api/v1/incidents/1/updates",
            Some(json!({"message": "x"})),
        ),
        (Method::POST, "/api/v1/incidents/1/resolve", Some(json!({}))),
        (Method::POST, "/api/v1/auth/logout", Some(json!({}))),
    ];
    for (method, path, body) in writes {
        for t in [None, Some(token.as_str())] {
            let (status, got) = e.call(method.clone(), path, t, body.clone()).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {got}");
            assert_eq!(code(&got), "auth_disabled", "{method} {path}");
            assert!(
                got["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("writes are refused: auth.mode is disabled"),
                "{got}"
            );
        }
    }

    e.set("");
    let (status, _) = e.call(Method::GET, "/api/v1/monitors", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = e
        .call(Method::GET, "/api/v1/monitors", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// `spec.mode.gitOpsReadOnly: true`: creating and expiring silences through the API
/// answer 403 `gitops_read_only` naming the setting, for an admin too; incident
/// operations still reach their handlers (404 for an incident that does not exist, not
/// 403). Turned off, the same silence is created.
#[tokio::test]
async fn git_ops_read_only_refuses_desired_state_writes() {
    let e = start().await;
    let token = e.token("admin").await;
    e.set(&settings("  mode:\n    gitOpsReadOnly: true\n"));

    let (status, body) = e
        .call(
            Method::POST,
            "/api/v1/silences",
            Some(&token),
            Some(silence()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "gitops_read_only");
    assert!(
        body.to_string().contains("spec.mode.gitOpsReadOnly"),
        "{body}"
    );
    let (status, body) = e
        .call(
            Method::DELETE,
            "/api/v1/silences/prod/deploy",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "gitops_read_only");

    for (path, body) in [
        ("/api/v1/incidents/999/acknowledge", json!({})),
        (
            "/api/v1/incidents/999/updates",
            json!({"message": "looking"}),
        ),
        ("/api/v1/incidents/999/resolve", json!({})),
    ] {
        let (status, got) = e.call(Method::POST, path, Some(&token), Some(body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {got}");
    }
    let (status, body) = e
        .call(Method::GET, "/api/v1/silences", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The OpenAPI document marks the routes.
    let (_, doc) = e
        .call(Method::GET, "/api/v1/openapi.json", Some(&token), None)
        .await;
    assert_eq!(
        doc["paths"]["/api/v1/silences"]["post"]["x-kubekuma-changes-desired-state"],
        true
    );
    assert_eq!(
        doc["paths"]["/api/v1/incidents/{id}/resolve"]["post"]["x-kubekuma-changes-desired-state"],
        false
    );

    e.set("");
    let (status, body) = e
        .call(
            Method::POST,
            "/api/v1/silences",
            Some(&token),
            Some(silence()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
