//! The `spec.auth` settings of KubeKumaSettings, honoured by the admin API's
//! authentication: `local.sessionMaxAgeSeconds` (the JWT, the cookie and the sessions
//! row), `apiKeys.enabled` and `apiKeys.maxPerUser`, `local.enabled` and `mode`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use kubekuma_agent::admin::auth::{Auth, AuthConfig, LoginLimits, api_key, jwt, password};
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
    let (e, findings) = env_findings(yaml);
    let errors: Vec<&String> = findings.iter().filter(|f| f.starts_with("error")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    e
}

/// The environment of a manifest text, and its findings as `validate` prints them
/// (`error: …` / `warning: …`).
fn env_findings(yaml: &str) -> (Env, Vec<String>) {
    let built = build(&[parse_text("settings.yaml", yaml)], None);
    let findings: Vec<String> = built
        .findings
        .iter()
        .map(|f| {
            let level = match f.severity {
                kubekuma_agent::catalog::Severity::Error => "error",
                _ => "warning",
            };
            format!("{level}: {f}")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kubekuma.db")).unwrap();
    let (tx, rx) = watch::channel(Arc::new(built.snapshot));
    let config = AuthConfig {
        session_secret: SECRET.as_bytes().to_vec(),
        max_age: Duration::from_secs(604_800),
        home_namespace: "kubekuma".into(),
        limits: LoginLimits::default(),
    };
    let env = Env {
        auth: Arc::new(Auth::new(config, store.clone(), rx)),
        store,
        _catalog: tx,
        _dir: dir,
    };
    (env, findings)
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

/// An ApiKey `name` in `ns` for `key`, with `extra` metadata lines (labels) and spec lines.
fn key_yaml(ns: &str, name: &str, key: &str, labels: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-hash, namespace: {ns}}}\n\
         stringData: {{keyHash: '{hash}'}}\n---\n\
         apiVersion: monitoring.kubekuma.io/v1\nkind: ApiKey\n\
         metadata:\n  name: {name}\n  namespace: {ns}\n{labels}\
         spec:\n  name: {name} key\n  role: editor\n  keyId: '{id}'\n  keyHashSecretRef: {{name: {name}-hash, key: keyHash}}\n{extra}---\n",
        hash = cheap_hash(key),
        id = api_key::key_id(key).unwrap(),
    )
}

fn owned_by(user: &str) -> String {
    format!("  labels: {{monitoring.kubekuma.io/owner: {user}}}\n")
}

/// `spec.auth.apiKeys.enabled: false`: a valid key is refused at authentication with a
/// message naming the setting, and every ApiKey carries a warning saying so. With the
/// default (true) the same key authenticates.
#[tokio::test]
async fn api_keys_disabled_by_settings_are_refused() {
    let key = api_key::generate(false);
    let keys = key_yaml("kubekuma", "ci", &key, "", "");
    let e = env(&keys);
    let p = e.auth.authenticate(&bearer(&key), peer()).await.unwrap();
    assert_eq!(p.id, "kubekuma/ci");

    let yaml = settings_yaml("  auth:\n    apiKeys:\n      enabled: false\n") + &keys;
    let (e, findings) = env_findings(&yaml);
    let err = e
        .auth
        .authenticate(&bearer(&key), peer())
        .await
        .unwrap_err();
    assert_eq!(err.status, StatusCode::UNAUTHORIZED);
    assert_eq!(err.code, "api_keys_disabled");
    assert!(
        err.message.contains("spec.auth.apiKeys.enabled"),
        "{}",
        err.message
    );
    assert!(
        findings.iter().any(|f| f.starts_with("warning")
            && f.contains("kubekuma/ci")
            && f.contains("spec.auth.apiKeys.enabled is false")),
        "{findings:#?}"
    );
    assert!(
        !findings.iter().any(|f| f.starts_with("error")),
        "{findings:#?}"
    );
}

/// `spec.auth.apiKeys.maxPerUser: 2`: of one owner's keys (the owner label), ordered by
/// creation then name, the third is an error naming the field and the limit and does not
/// authenticate; a disabled key does not count, another owner and the namespace's keys
/// without an owner have limits of their own.
#[tokio::test]
async fn api_keys_beyond_max_per_user_are_refused() {
    let keys: Vec<String> = (0..6).map(|_| api_key::generate(false)).collect();
    let yaml = settings_yaml("  auth:\n    apiKeys:\n      maxPerUser: 2\n")
        + &key_yaml("team", "ann-a", &keys[0], &owned_by("ann"), "")
        + &key_yaml(
            "team",
            "ann-b",
            &keys[1],
            &owned_by("ann"),
            "  disabled: true\n",
        )
        + &key_yaml("team", "ann-c", &keys[2], &owned_by("ann"), "")
        + &key_yaml("team", "ann-d", &keys[3], &owned_by("ann"), "")
        + &key_yaml("team", "bob-a", &keys[4], &owned_by("bob"), "")
        + &key_yaml("team", "shared", &keys[5], "", "");
    let (e, findings) = env_findings(&yaml);
    let errors: Vec<&String> = findings.iter().filter(|f| f.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{findings:#?}");
    assert!(errors[0].contains("team/ann-d"), "{}", errors[0]);
    assert!(
        errors[0].contains("spec.auth.apiKeys.maxPerUser"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains("already has 2 API keys"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("\"ann\""), "{}", errors[0]);

    for (i, ok) in [(0, true), (2, true), (3, false), (4, true), (5, true)] {
        let got = e.auth.authenticate(&bearer(&keys[i]), peer()).await;
        assert_eq!(got.is_ok(), ok, "key {i}: {got:?}");
    }
    let err = e
        .auth
        .authenticate(&bearer(&keys[3]), peer())
        .await
        .unwrap_err();
    assert_eq!(err.status, StatusCode::UNAUTHORIZED);

    // The default limit is 5.
    let mut yaml = String::new();
    let many: Vec<String> = (0..6).map(|_| api_key::generate(true)).collect();
    for (i, k) in many.iter().enumerate() {
        yaml += &key_yaml("team", &format!("k{i}"), k, &owned_by("ann"), "");
    }
    let (e, findings) = env_findings(&yaml);
    let errors: Vec<&String> = findings.iter().filter(|f| f.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{findings:#?}");
    assert!(
        errors[0].contains("team/k5") && errors[0].contains("already has 5"),
        "{}",
        errors[0]
    );
    assert!(
        e.auth
            .authenticate(&bearer(&many[5]), peer())
            .await
            .is_err()
    );
    assert!(e.auth.authenticate(&bearer(&many[4]), peer()).await.is_ok());
}

/// `spec.auth.local.enabled: false`: a LocalUser's password login is refused with 403
/// `local_login_disabled` naming the setting (whatever the password), and sessions from
/// before the switch are refused too until it is turned back on.
#[tokio::test]
async fn local_login_disabled_refuses_logins_and_sessions() {
    let users = user_yaml("kubekuma", "ann", "admin", "ann-password");
    let off = settings_yaml("  auth:\n    local:\n      enabled: false\n") + &users;
    let e = env(&users);
    let (status, _, body) = login(&e, "ann", "ann-password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    assert!(e.auth.authenticate(&bearer(&token), peer()).await.is_ok());

    let snapshot = |yaml: &str| Arc::new(build(&[parse_text("s.yaml", yaml)], None).snapshot);
    e._catalog.send(snapshot(&off)).unwrap();
    for pw in ["ann-password", "wrong"] {
        let (status, headers, body) = login(&e, "ann", pw).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "local_login_disabled");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("spec.auth.local.enabled"), "{msg}");
        assert!(headers.get(header::SET_COOKIE).is_none());
    }
    let err = e
        .auth
        .authenticate(&bearer(&token), peer())
        .await
        .unwrap_err();
    assert_eq!(err.status, StatusCode::FORBIDDEN);
    assert_eq!(err.code, "local_login_disabled");

    // Turned back on, the session (still live in the table) works again.
    e._catalog.send(snapshot(&users)).unwrap();
    assert!(e.auth.authenticate(&bearer(&token), peer()).await.is_ok());
}

/// `kubekuma api-key create --owner ann` writes the owner label that `maxPerUser` counts
/// by: with `maxPerUser: 1`, the second of ann's keys is refused; a bad owner is refused
/// by the CLI.
#[tokio::test]
async fn cli_owner_label_counts_for_max_per_user() {
    let create = |name: &str, owner: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
            .args(["api-key", "create", "--name", name, "--role", "viewer"])
            .args(["--namespace", "team", "--owner", owner])
            .output()
            .unwrap()
    };
    let mut yaml = settings_yaml("  auth:\n    apiKeys:\n      maxPerUser: 1\n");
    let mut keys = Vec::new();
    for name in ["bot-a", "bot-b"] {
        let out = create(name, "ann");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            stdout.contains("monitoring.kubekuma.io/owner: \"ann\""),
            "{stdout}"
        );
        yaml += &stdout;
        yaml += "---\n";
        let stderr = String::from_utf8(out.stderr).unwrap();
        keys.push(
            stderr
                .split_whitespace()
                .find(|w| w.starts_with("kk_live_"))
                .unwrap()
                .to_string(),
        );
    }
    let (e, findings) = env_findings(&yaml);
    let errors: Vec<&String> = findings.iter().filter(|f| f.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{findings:#?}");
    assert!(
        errors[0].contains("team/bot-b") && errors[0].contains("maxPerUser"),
        "{}",
        errors[0]
    );
    assert!(e.auth.authenticate(&bearer(&keys[0]), peer()).await.is_ok());
    assert!(
        e.auth
            .authenticate(&bearer(&keys[1]), peer())
            .await
            .is_err()
    );

    let bad = create("bot-c", "not a label");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--owner"));
}
