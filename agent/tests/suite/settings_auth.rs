//! The `spec.auth` settings of KubeKumaSettings, honoured by the admin API's
//! authentication: `local.sessionMaxAgeSeconds` (the JWT, the cookie and the sessions
//! row), `apiKeys.enabled` and `apiKeys.maxPerUser`, `local.enabled` and `mode`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use kubekuma_agent::admin::auth::{Auth, AuthConfig, LoginLimits, jwt, password};
use kubekuma_agent::admin::error::Reply;
use kubekuma_agent::catalog::Snapshot;
use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::store::Store;
use serde_json::{Value, json};
use tokio::sync::watch;

const SECRET: &str = "an-hs256-key-for-settings-tests-long-enough";

struct Env {
    auth: Arc<Auth>,
    store: Store,
    _catalog: watch::Sender<Arc<Snapshot>>,
    _dir: tempfile::TempDir,
}

fn env(yaml: &str) -> Env {
    let built = build(&[parse_text("settings.yaml", yaml)], None);
    let errors: Vec<String> = built
        .findings
        .iter()
        .filter(|f| f.severity == kubekuma_agent::catalog::Severity::Error)
        .map(|f| f.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kubekuma.db")).unwrap();
    let (tx, rx) = watch::channel(Arc::new(built.snapshot));
    let config = AuthConfig {
        session_secret: SECRET.as_bytes().to_vec(),
        max_age: Duration::from_secs(604_800),
        home_namespace: "kubekuma".into(),
        limits: LoginLimits::default(),
    };
    Env {
        auth: Arc::new(Auth::new(config, store.clone(), rx)),
        store,
        _catalog: tx,
        _dir: dir,
    }
}

fn cheap_hash(secret: &str) -> String {
    password::hash_with(secret.as_bytes(), 1024, 1, 1).unwrap()
}

fn settings_yaml(spec: &str) -> String {
    format!(
        "apiVersion: monitoring.kubekuma.io/v1\nkind: KubeKumaSettings\n\
         metadata: {{name: settings, namespace: kubekuma}}\nspec:\n{spec}---\n"
    )
}

fn user_yaml(ns: &str, name: &str, role: &str, pw: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-pw, namespace: {ns}}}\n\
         stringData: {{hash: '{hash}'}}\n---\n\
         apiVersion: monitoring.kubekuma.io/v1\nkind: LocalUser\n\
         metadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  username: {name}\n  role: {role}\n  passwordHashSecretRef: {{name: {name}-pw, key: hash}}\n---\n",
        hash = cheap_hash(pw)
    )
}

async fn parts(r: Reply) -> (StatusCode, HeaderMap, Value) {
    let (head, body) = r.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (head.status, head.headers, value)
}

fn peer() -> IpAddr {
    "192.0.2.10".parse().unwrap()
}

async fn login(e: &Env, username: &str, password: &str) -> (StatusCode, HeaderMap, Value) {
    let body = json!({"username": username, "password": password}).to_string();
    parts(
        e.auth
            .login(&HeaderMap::new(), body.as_bytes(), peer())
            .await,
    )
    .await
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

/// `spec.auth.local.sessionMaxAgeSeconds` is the session's lifetime: the JWT's `exp`, the
/// cookie's `Max-Age` and the sessions row's expiry (the row is gone for a clock past it).
#[tokio::test]
async fn session_max_age_setting_sets_jwt_cookie_and_row() {
    let yaml = settings_yaml("  auth:\n    local:\n      sessionMaxAgeSeconds: 120\n")
        + &user_yaml("kubekuma", "ann", "admin", "ann-password");
    let e = env(&yaml);
    let before = chrono::Utc::now();
    let (status, headers, body) = login(&e, "ann", "ann-password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap().to_string();

    let claims = jwt::verify(&token, SECRET.as_bytes()).unwrap();
    assert_eq!(claims.exp - claims.iat, 120, "JWT lifetime");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("; Max-Age=120"), "{cookie}");

    let hash = jwt::sha256_hex(&token);
    let soon = before + chrono::Duration::seconds(100);
    assert!(e.store.live_session(&hash, soon).await.unwrap().is_some());
    let row = e.store.live_session(&hash, before).await.unwrap().unwrap();
    assert_eq!((row.expires_at - row.created_at).num_seconds(), 120);
    let later = before + chrono::Duration::seconds(130);
    assert!(
        e.store.live_session(&hash, later).await.unwrap().is_none(),
        "the sessions row expires with the setting"
    );
    assert!(e.auth.authenticate(&bearer(&token), peer()).await.is_ok());

    // Without the setting: SESSION_MAX_AGE's value (here the 7-day default).
    let e = env(&user_yaml("kubekuma", "ann", "admin", "ann-password"));
    let (status, headers, body) = login(&e, "ann", "ann-password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claims = jwt::verify(body["token"].as_str().unwrap(), SECRET.as_bytes()).unwrap();
    assert_eq!(claims.exp - claims.iat, 604_800);
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("; Max-Age=604800"), "{cookie}");
}
