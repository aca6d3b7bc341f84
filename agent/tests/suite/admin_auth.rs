//! Authentication of the admin API: logins of LocalUsers (the original implementation's
//! compat user included), sessions, forged tokens, TOTP, API keys, rate limits, the
//! bounded argon2 work under a login flood, and the CLI's `hash-password` and
//! `api-key create` manifests loaded back through the folder catalog.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use kubekuma_agent::admin::auth::{
    Auth, AuthConfig, LoginLimits, Principal, PrincipalKind, api_key, jwt, password,
};
use kubekuma_agent::admin::error::Reply;
use kubekuma_agent::admin::roles::Role;
use kubekuma_agent::catalog::Snapshot;
use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::folder::FolderCatalog;
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::secrets::SecretValue;
use kubekuma_agent::store::Store;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::backends::{Backend, Db, backends};

const SECRET: &str = "an-hs256-key-for-tests-that-is-long-enough";

/// The client address of requests authenticated directly (not through the listener).
const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 99));

struct Env {
    auth: Arc<Auth>,
    catalog: watch::Sender<Arc<Snapshot>>,
    store: Store,
    _dir: tempfile::TempDir,
    /// The database of a store opened by [`env_on`].
    _db: Option<Db>,
}

fn config(limits: LoginLimits) -> AuthConfig {
    AuthConfig {
        session_secret: SECRET.as_bytes().to_vec(),
        max_age: Duration::from_secs(604_800),
        home_namespace: "kubekuma".into(),
        limits,
    }
}

fn env_with(snapshot: Snapshot, config: AuthConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kubekuma.db")).unwrap();
    let (catalog, rx) = watch::channel(Arc::new(snapshot));
    Env {
        auth: Arc::new(Auth::new(config, store.clone(), rx)),
        catalog,
        store,
        _dir: dir,
        _db: None,
    }
}

/// The same environment on a store of `backend` (the store parts of these tests run
/// on SQLite and PostgreSQL).
async fn env_on(backend: Backend, snapshot: Snapshot) -> Env {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let (catalog, rx) = watch::channel(Arc::new(snapshot));
    Env {
        auth: Arc::new(Auth::new(config(LoginLimits::default()), store.clone(), rx)),
        catalog,
        store,
        _dir: tempfile::tempdir().unwrap(),
        _db: Some(db),
    }
}

fn env(snapshot: Snapshot) -> Env {
    env_with(snapshot, config(LoginLimits::default()))
}

/// The catalog of manifest files, as folder mode reads them.
fn folder_snapshot(paths: &[PathBuf]) -> Snapshot {
    FolderCatalog::new(paths.to_vec()).load().snapshot
}

/// The catalog of a manifest text.
fn snapshot(yaml: &str) -> Snapshot {
    build(&[parse_text("auth.yaml", yaml)], None).snapshot
}

/// A cheap hash (the cost is read from the PHC string, so tests need not pay 64 MB).
fn cheap_hash(secret: &str) -> String {
    password::hash_with(secret.as_bytes(), 1024, 1, 1).unwrap()
}

fn user_yaml(ns: &str, name: &str, username: &str, role: &str, pw: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-pw, namespace: {ns}}}\n\
         stringData: {{hash: '{hash}'}}\n---\n\
         apiVersion: monitoring.kubekuma.io/v1\nkind: LocalUser\n\
         metadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  username: {username}\n  role: {role}\n  passwordHashSecretRef: {{name: {name}-pw, key: hash}}\n{extra}---\n",
        hash = cheap_hash(pw)
    )
}

/// An ApiKey with the key's public ID (`spec.keyId`) and its hash.
fn key_yaml(ns: &str, name: &str, role: &str, key: &str, extra: &str) -> String {
    let id = api_key::key_id(key).unwrap();
    legacy_key_yaml(ns, name, role, key, &format!("  keyId: '{id}'\n{extra}"))
}

/// An ApiKey without `spec.keyId` (as written before key IDs) and its hash.
fn legacy_key_yaml(ns: &str, name: &str, role: &str, key: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-hash, namespace: {ns}}}\n\
         stringData: {{keyHash: '{hash}'}}\n---\n\
         apiVersion: monitoring.kubekuma.io/v1\nkind: ApiKey\n\
         metadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  name: {name} key\n  role: {role}\n  keyHashSecretRef: {{name: {name}-hash, key: keyHash}}\n{extra}---\n",
        hash = cheap_hash(key)
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn login_body(username: &str, password: &str) -> Vec<u8> {
    json!({"username": username, "password": password})
        .to_string()
        .into_bytes()
}

async fn parts(r: Reply) -> (StatusCode, HeaderMap, Value) {
    let (head, body) = r.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (head.status, head.headers, value)
}

async fn login(e: &Env, username: &str, password: &str) -> (StatusCode, HeaderMap, Value) {
    parts(
        e.auth
            .login(
                &HeaderMap::new(),
                &login_body(username, password),
                ip("192.0.2.10"),
            )
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

fn cookie(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("theme=dark; token={token}; other=1")).unwrap(),
    );
    h
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn compat_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat/test-resources.yaml")
}

/// The original implementation's test user (Secret `admin-password` with its argon2id hash,
/// LocalUser `default/admin`), read by the folder catalog, logs in with `test1234`; the
/// cookie carries the spec's attributes; wrong passwords and unknown users get the same
/// answer.
#[tokio::test]
async fn compat_admin_logs_in_through_the_folder_catalog() {
    let snap = folder_snapshot(&[compat_file()]);
    assert_eq!(snap.local_users.len(), 1);
    let e = env(snap);

    let (status, headers, body) = login(&e, "admin", "test1234").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(
        body["user"],
        json!({"id": "default/admin", "username": "admin", "role": "admin"})
    );
    let token = body["token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3);
    let set_cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert_eq!(
        set_cookie,
        format!("token={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=604800")
    );
    assert!(!body.to_string().contains("argon2"));

    // Behind an HTTPS proxy the cookie is Secure.
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    let (status, headers, _) = parts(
        e.auth
            .login(&h, &login_body("admin", "test1234"), ip("192.0.2.11"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );

    let (status, headers, wrong) = login(&e, "admin", "test12345").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&wrong), "invalid_credentials");
    assert!(headers.get(header::SET_COOKIE).is_none());
    let (status, _, unknown) = login(&e, "nobody", "test1234").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown, wrong, "unknown users look like wrong passwords");

    for bad in [
        &b"not json"[..],
        br#"{"username":"admin"}"#,
        br#"{"username":"","password":"x"}"#,
    ] {
        let (status, _, body) =
            parts(e.auth.login(&HeaderMap::new(), bad, ip("192.0.2.12")).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(code(&body), "bad_request");
    }
}

/// A session authenticates by cookie and by Bearer; /me reports no previous login for a
/// first login; logout revokes it, after which the same token is refused.
#[tokio::test]
async fn sessions_me_and_logout() {
    for backend in backends() {
        let e = env_on(
            backend,
            snapshot(&user_yaml(
                "team",
                "ann",
                "ann",
                "editor",
                "ann-password",
                "",
            )),
        )
        .await;
        let (status, _, body) = login(&e, "ann", "ann-password").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let token = body["token"].as_str().unwrap().to_string();
        assert_eq!(e.store.session_count().await.unwrap(), 1);

        let by_cookie = e.auth.authenticate(&cookie(&token), PEER).await.unwrap();
        let by_bearer = e.auth.authenticate(&bearer(&token), PEER).await.unwrap();
        assert_eq!(by_cookie, by_bearer);
        assert_eq!(by_cookie.id, "team/ann");
        assert_eq!(by_cookie.role, Role::Editor);
        assert_eq!(by_cookie.namespace, "team");
        assert!(!by_cookie.all_namespaces);
        assert!(matches!(by_cookie.kind, PrincipalKind::Session(_)));
        assert_eq!(by_cookie.actor(), "user:team/ann");

        let (status, _, me) = parts(e.auth.me(&by_cookie).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["id"], "team/ann");
        assert_eq!(me["username"], "ann");
        assert_eq!(me["role"], "editor");
        assert_eq!(me["namespace"], "team");
        assert_eq!(
            me["lastLoginAt"],
            Value::Null,
            "the first login has none before it"
        );

        let (status, headers, out) = parts(e.auth.logout(&by_cookie).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(out, json!({"success": true}));
        let cleared = headers[header::SET_COOKIE].to_str().unwrap();
        assert!(cleared.starts_with("token=;") && cleared.contains("Max-Age=0"));
        for h in [cookie(&token), bearer(&token)] {
            let err = e.auth.authenticate(&h, PEER).await.unwrap_err();
            assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(e.store.session_count().await.unwrap(), 0);

        // No credentials at all.
        let err = e
            .auth
            .authenticate(&HeaderMap::new(), PEER)
            .await
            .unwrap_err();
        assert_eq!(err.code, "unauthorized");
    }
}

/// Tokens that are expired, tampered with, `alg: none`, of another algorithm or signed
/// with another secret are refused, as is the session of a user since removed.
#[tokio::test]
async fn forged_and_expired_tokens_are_refused() {
    let yaml = user_yaml("kubekuma", "root", "root", "admin", "pw-root-1", "");
    let mut cfg = config(LoginLimits::default());
    cfg.max_age = Duration::from_secs(1);
    let e = env_with(snapshot(&yaml), cfg);
    let (status, headers, body) = login(&e, "root", "pw-root-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=1")
    );
    let token = body["token"].as_str().unwrap().to_string();
    let p = e.auth.authenticate(&bearer(&token), PEER).await.unwrap();
    assert!(p.all_namespaces);

    let [head, payload, sig] = <[&str; 3]>::try_from(token.split('.').collect::<Vec<_>>()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], "kubekuma/root");
    assert_eq!(claims["username"], "root");
    assert_eq!(claims["role"], "admin");
    assert!(claims["sessionId"].is_string() && claims["iat"].is_i64() && claims["exp"].is_i64());

    let mut forged = Vec::new();
    // Tampered signature.
    let flipped = if sig.ends_with('A') { "B" } else { "A" };
    forged.push(format!(
        "{head}.{payload}.{}{flipped}",
        &sig[..sig.len() - 1]
    ));
    // Tampered payload (role), original signature.
    let mut c2 = claims.clone();
    c2["role"] = json!("viewer");
    let p2 = URL_SAFE_NO_PAD.encode(c2.to_string());
    forged.push(format!("{head}.{p2}.{sig}"));
    // alg: none.
    let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    forged.push(format!("{none}.{payload}."));
    forged.push(format!("{none}.{payload}.{sig}"));
    // RS256 header over the same payload.
    let rs = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    forged.push(format!("{rs}.{payload}.{sig}"));
    // Another secret, same claims.
    forged.push(
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-of-32-bytes-or-more"),
        )
        .unwrap(),
    );
    // HS512 with the right secret.
    forged.push(
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap(),
    );
    // Right secret and algorithm, but no session row behind it.
    let mut c3 = claims.clone();
    c3["sessionId"] = json!("00000000-0000-4000-8000-000000000000");
    forged.push(
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &c3,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap(),
    );
    forged.push("garbage".into());
    for t in &forged {
        for h in [bearer(t), cookie(t)] {
            let err = e.auth.authenticate(&h, PEER).await.unwrap_err();
            assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{t}");
            assert!(!err.message.contains(t.as_str()));
        }
    }

    // Expired (max age 1 s, no leeway).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = e
        .auth
        .authenticate(&bearer(&token), PEER)
        .await
        .unwrap_err();
    assert_eq!(err.status, StatusCode::UNAUTHORIZED);
    assert!(jwt::verify(&token, SECRET.as_bytes()).is_err());

    // A live session of a user that is then removed from the catalog.
    let mut cfg = config(LoginLimits::default());
    cfg.max_age = Duration::from_secs(600);
    let e = env_with(snapshot(&yaml), cfg);
    let (_, _, body) = login(&e, "root", "pw-root-1").await;
    let token = body["token"].as_str().unwrap().to_string();
    assert!(e.auth.authenticate(&bearer(&token), PEER).await.is_ok());
    e.catalog.send_replace(Arc::new(Snapshot::default()));
    assert!(e.auth.authenticate(&bearer(&token), PEER).await.is_err());
}

fn totp_for(secret_b32: &str) -> totp_rs::Totp {
    let bytes = totp_rs::Secret::try_from_base32(secret_b32)
        .unwrap()
        .as_bytes()
        .to_vec();
    totp_rs::Builder::new().with_secret(bytes).build().unwrap()
}

/// TOTP: required and optional users need a code (401 `mfa_required` without one,
/// `invalid_totp` for a wrong or replayed one); optional users without a secret log in with
/// the password; required users without a usable secret are refused with a clear error.
#[tokio::test]
async fn totp_required_optional_and_wrong_codes() {
    let secret_b32 = totp_rs::Secret::from(b"a twenty-byte secret".to_vec()).to_base32();
    let totp_secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: mfa, namespace: team}}\n\
         stringData: {{totpSecret: '{secret_b32}'}}\n---\n"
    );
    let with_secret = "  mfa:\n    mode: {MODE}\n    totpSecretRef: {name: mfa, key: totpSecret}\n";
    let yaml = [
        totp_secret,
        user_yaml(
            "team",
            "req",
            "req",
            "viewer",
            "pw-req-1",
            &with_secret.replace("{MODE}", "required"),
        ),
        user_yaml(
            "team",
            "opt",
            "opt",
            "viewer",
            "pw-opt-1",
            &with_secret.replace("{MODE}", "optional"),
        ),
        user_yaml(
            "team",
            "plain",
            "plain",
            "viewer",
            "pw-plain-1",
            "  mfa: {mode: optional}\n",
        ),
        user_yaml(
            "team",
            "broken",
            "broken",
            "viewer",
            "pw-broken-1",
            "  mfa:\n    mode: required\n    totpSecretRef: {name: missing, key: totpSecret}\n",
        ),
    ]
    .concat();
    let snap = snapshot(&yaml);
    assert_eq!(snap.local_users.len(), 4);
    let e = env(snap);
    let totp = totp_for(&secret_b32);

    for user in ["req", "opt"] {
        let pw = format!("pw-{user}-1");
        let (status, h, body) = login(&e, user, &pw).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{user}: {body}");
        assert_eq!(code(&body), "mfa_required");
        assert!(h.get(header::SET_COOKIE).is_none());

        let now = totp.generate_current().to_string();
        let wrong = format!("{:06}", (now.parse::<u32>().unwrap() + 1) % 1_000_000);
        let b = json!({"username": user, "password": pw, "totp": wrong}).to_string();
        let (status, _, body) = parts(
            e.auth
                .login(&HeaderMap::new(), b.as_bytes(), ip("192.0.2.20"))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(code(&body), "invalid_totp");

        // A right code with a wrong password is still a wrong password.
        let b = json!({"username": user, "password": "nope", "totp": now}).to_string();
        let (_, _, body) = parts(
            e.auth
                .login(&HeaderMap::new(), b.as_bytes(), ip("192.0.2.20"))
                .await,
        )
        .await;
        assert_eq!(code(&body), "invalid_credentials");
    }
    // Both users share the secret; each accepts the current code once.
    let now = totp.generate_current().to_string();
    for user in ["req", "opt"] {
        let b =
            json!({"username": user, "password": format!("pw-{user}-1"), "totp": now}).to_string();
        let (status, _, body) = parts(
            e.auth
                .login(&HeaderMap::new(), b.as_bytes(), ip("192.0.2.21"))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{user}: {body}");
        // Replayed.
        let (status, _, body) = parts(
            e.auth
                .login(&HeaderMap::new(), b.as_bytes(), ip("192.0.2.21"))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(code(&body), "invalid_totp");
    }
    let (status, _, body) = login(&e, "plain", "pw-plain-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = login(&e, "broken", "pw-broken-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "mfa_unavailable");
    assert!(body["error"]["message"].as_str().unwrap().contains("TOTP"));
}

/// Disabled users cannot log in, and their live sessions stop working when they are
/// disabled. Two users with the same username log in as neither.
#[tokio::test]
async fn disabled_and_ambiguous_users_are_refused() {
    let active = user_yaml("team", "eve", "eve", "viewer", "pw-eve-1", "");
    let yaml = [
        active.clone(),
        user_yaml(
            "team",
            "off",
            "off",
            "viewer",
            "pw-off-1",
            "  disabled: true\n",
        ),
        user_yaml("a", "twin", "twin", "viewer", "pw-twin-1", ""),
    ]
    .concat();
    // The catalog itself rejects the second user of a username; were two to get through
    // anyway, neither logs in.
    let mut snap = snapshot(&yaml);
    let other = snapshot(&user_yaml("b", "twin", "twin", "viewer", "pw-twin-1", ""));
    let (key, user) = other.local_users.iter().next().unwrap();
    snap.local_users.insert(key.clone(), user.clone());
    let hash = other
        .secrets
        .get("b", "twin-pw", "hash")
        .unwrap()
        .expose()
        .to_vec();
    snap.secrets.insert(
        "b",
        "twin-pw",
        [("hash".to_string(), SecretValue::new(hash))].into(),
    );
    assert_eq!(snap.local_users.len(), 4);
    let e = env(snap);
    let (status, _, body) = login(&e, "off", "pw-off-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "user_disabled");
    let (status, _, body) = login(&e, "off", "wrong").await;
    assert_eq!(code(&body), "invalid_credentials", "{status}");
    let (status, _, body) = login(&e, "twin", "pw-twin-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "invalid_credentials");

    let (status, _, body) = login(&e, "eve", "pw-eve-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    assert!(e.auth.authenticate(&cookie(&token), PEER).await.is_ok());
    let disabled = active.replace(
        "passwordHashSecretRef",
        "disabled: true\n  passwordHashSecretRef",
    );
    e.catalog.send_replace(Arc::new(snapshot(&disabled)));
    let err = e
        .auth
        .authenticate(&cookie(&token), PEER)
        .await
        .unwrap_err();
    assert_eq!(err.status, StatusCode::UNAUTHORIZED);
}

/// API keys: a good key authenticates (argon2 once, then from the cache); wrong, malformed,
/// disabled and expired keys are refused; a key whose ApiKey expires or is disabled later
/// is refused even though it is cached; its last use is recorded.
#[tokio::test]
async fn api_keys() {
    let good = api_key::generate(false);
    let test_key = api_key::generate(true);
    let expired = api_key::generate(false);
    let disabled = api_key::generate(false);
    let good_yaml = key_yaml("ops", "deployer", "editor", &good, "");
    let yaml = [
        good_yaml.clone(),
        legacy_key_yaml("kubekuma", "ci", "viewer", &test_key, ""),
        key_yaml(
            "ops",
            "old",
            "admin",
            &expired,
            "  expiresAt: 2020-01-01T00:00:00Z\n",
        ),
        key_yaml("ops", "off", "admin", &disabled, "  disabled: true\n"),
    ]
    .concat();
    let snap = snapshot(&yaml);
    assert_eq!(snap.api_keys.len(), 4);
    let e = env(snap);

    let p: Principal = e.auth.authenticate(&bearer(&good), PEER).await.unwrap();
    assert_eq!(p.id, "ops/deployer");
    assert_eq!(p.username, "deployer key");
    assert_eq!(p.role, Role::Editor);
    assert_eq!(p.kind, PrincipalKind::ApiKey);
    assert!(!p.all_namespaces && p.sees_namespace("ops") && !p.sees_namespace("prod"));
    assert_eq!(p.actor(), "apikey:ops/deployer");
    let runs = e.auth.argon2_runs();
    for _ in 0..5 {
        assert_eq!(e.auth.authenticate(&bearer(&good), PEER).await.unwrap(), p);
    }
    assert_eq!(
        e.auth.argon2_runs(),
        runs,
        "verified keys come from the cache"
    );
    let (status, _, me) = parts(e.auth.me(&p).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], "ops/deployer");
    assert_eq!(me["role"], "editor");
    assert!(e.auth.last_key_use("ops/deployer").await.is_some());

    // A key of the home namespace acts on every namespace.
    let ci = e.auth.authenticate(&bearer(&test_key), PEER).await.unwrap();
    assert!(ci.all_namespaces && ci.role == Role::Viewer);

    let wrong = api_key::generate(false);
    for k in [
        wrong.as_str(),
        "kk_live_short",
        &good[..good.len() - 1],
        disabled.as_str(),
        expired.as_str(),
    ] {
        let err = e.auth.authenticate(&bearer(k), PEER).await.unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{k}");
    }
    // A key is only accepted as Bearer, never as a cookie.
    assert!(e.auth.authenticate(&cookie(&good), PEER).await.is_err());

    // The good key's ApiKey expires: refused with key_expired although cached.
    let expiring = good_yaml.replace(
        "keyHashSecretRef",
        "expiresAt: 2021-01-01T00:00:00Z\n  keyHashSecretRef",
    );
    e.catalog.send_replace(Arc::new(snapshot(&expiring)));
    let err = e.auth.authenticate(&bearer(&good), PEER).await.unwrap_err();
    assert_eq!(
        (err.status, err.code),
        (StatusCode::UNAUTHORIZED, "key_expired")
    );
    // Disabled.
    let off = good_yaml.replace("keyHashSecretRef", "disabled: true\n  keyHashSecretRef");
    e.catalog.send_replace(Arc::new(snapshot(&off)));
    let err = e.auth.authenticate(&bearer(&good), PEER).await.unwrap_err();
    assert_eq!(err.status, StatusCode::UNAUTHORIZED);
    // Its Secret changes to another key's hash: the old key stops working.
    let other = api_key::generate(false);
    e.catalog.send_replace(Arc::new(snapshot(&key_yaml(
        "ops", "deployer", "editor", &other, "",
    ))));
    assert!(e.auth.authenticate(&bearer(&good), PEER).await.is_err());
    assert!(e.auth.authenticate(&bearer(&other), PEER).await.is_ok());
    // Logout is for sessions.
    let (status, _, _) = parts(e.auth.logout(&p).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A login of `user` with `pw` from the address `from`, as its reply's parts.
async fn attempt(e: &Env, user: &str, pw: &str, from: &str) -> (StatusCode, HeaderMap, Value) {
    parts(
        e.auth
            .login(&HeaderMap::new(), &login_body(user, pw), ip(from))
            .await,
    )
    .await
}

/// Logins are limited per client address (another address is not affected), failed
/// logins per username and address (five wrong passwords from one address never lock the
/// user out of another), and by a generous budget per username that refuses only
/// addresses that failed for it; 429 with Retry-After.
#[tokio::test]
async fn rate_limits_per_address_and_per_username() {
    let yaml = user_yaml("team", "kim", "kim", "viewer", "pw-kim-1", "");
    let limits = LoginLimits {
        per_address: 3,
        username_failures: 100,
        ..LoginLimits::default()
    };
    let e = env_with(snapshot(&yaml), config(limits));
    for _ in 0..3 {
        let (status, _, _) = attempt(&e, "kim", "wrong", "198.51.100.1").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, body) = attempt(&e, "kim", "pw-kim-1", "198.51.100.1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(&body), "rate_limited");
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    let (status, _, _) = attempt(&e, "kim", "pw-kim-1", "198.51.100.2").await;
    assert_eq!(status, StatusCode::OK);
    // Successful logins do not use up an address's attempts.
    for _ in 0..5 {
        let (status, _, _) = attempt(&e, "kim", "pw-kim-1", "198.51.100.3").await;
        assert_eq!(status, StatusCode::OK);
    }

    // Failures count per username and address: an attacker's address that used up its
    // budget for kim does not lock kim out from her own address.
    let limits = LoginLimits {
        per_address: 100,
        username_failures: 2,
        ..LoginLimits::default()
    };
    let e = env_with(snapshot(&yaml), config(limits));
    let attacker = "203.0.113.1";
    for i in 0..2 {
        let (status, _, _) = attempt(&e, "kim", "wrong", attacker).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let (status, headers, body) = attempt(&e, "kim", "pw-kim-1", attacker).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(code(&body), "rate_limited");
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    let (status, _, body) = attempt(&e, "kim", "pw-kim-1", "203.0.113.2").await;
    assert_eq!(status, StatusCode::OK, "kim from her own address: {body}");
    // Kim's failures from her address end with her successful login.
    let (status, _, _) = attempt(&e, "kim", "wrong", "203.0.113.2").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = attempt(&e, "kim", "pw-kim-1", "203.0.113.2").await;
    assert_eq!(status, StatusCode::OK);
    // Other usernames from the attacker's address are not affected.
    let (status, _, body) = attempt(&e, "someone", "x", attacker).await;
    assert_eq!(code(&body), "invalid_credentials", "{status}");

    // The generous budget per username across addresses: once used up, it refuses the
    // addresses that failed for kim, never one that has not.
    let limits = LoginLimits {
        per_address: 100,
        username_failures: 100,
        username_global_failures: 3,
        ..LoginLimits::default()
    };
    let e = env_with(snapshot(&yaml), config(limits));
    for from in ["198.18.0.1", "198.18.0.2", "198.18.0.3"] {
        let (status, _, _) = attempt(&e, "kim", "wrong", from).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{from}");
    }
    let (status, headers, body) = attempt(&e, "kim", "wrong", "198.18.0.1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    let (status, _, body) = attempt(&e, "kim", "pw-kim-1", "198.18.0.2").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let (status, _, body) = attempt(&e, "kim", "pw-kim-1", "198.18.0.9").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an address that never failed: {body}"
    );
    let (status, _, body) = attempt(&e, "kim", "wrong", "198.18.0.10").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

/// 40 concurrent logins against the spec-cost hash (64 MB each): never more than two
/// argon2 computations at once, the overflow answered 503 `busy` at once, and the agent
/// keeps working afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_flood_is_bounded() {
    let limits = LoginLimits {
        per_address: 10_000,
        username_failures: 10_000,
        ..LoginLimits::default()
    };
    let e = env_with(folder_snapshot(&[compat_file()]), config(limits));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let auth = e.auth.clone();
            tokio::spawn(async move {
                let pw = if i % 2 == 0 {
                    "test1234"
                } else {
                    "wrong-password"
                };
                let started = std::time::Instant::now();
                let r = auth
                    .login(
                        &HeaderMap::new(),
                        &login_body("admin", pw),
                        ip("192.0.2.50"),
                    )
                    .await;
                let (status, headers, body) = parts(r).await;
                (status, headers, body, started.elapsed())
            })
        })
        .collect();
    let mut busy = 0;
    let mut answered = 0;
    for t in tasks {
        let (status, headers, body, took) = t.await.unwrap();
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(code(&body), "busy");
                assert!(headers.contains_key(header::RETRY_AFTER));
                assert!(
                    took < Duration::from_secs(2),
                    "busy answers come at once: {took:?}"
                );
                busy += 1;
            }
            StatusCode::OK | StatusCode::UNAUTHORIZED => answered += 1,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(busy > 0, "some logins must be refused as busy");
    assert!(answered >= 2, "{answered}");
    assert_eq!(answered + busy, 40);
    assert!(
        e.auth.argon2_high_water() <= 2,
        "high water {}",
        e.auth.argon2_high_water()
    );
    assert!(e.auth.argon2_high_water() >= 1);
    let (status, _, body) = login(&e, "admin", "test1234").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn kubekuma() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
}

fn run_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = kubekuma()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `kubekuma api-key create` and `kubekuma hash-password` print manifests that the folder
/// catalog reads and that then authenticate (the key) and log in (the password).
#[tokio::test]
async fn cli_manifests_authenticate() {
    let help = kubekuma().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("hash-password") && help.contains("api-key"),
        "{help}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = kubekuma()
        .args([
            "api-key",
            "create",
            "--name",
            "CI bot",
            "--role",
            "editor",
            "--namespace",
            "ops",
            "--expires",
            "30d",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stderr.contains("store it now; it is not shown again"),
        "{stderr}"
    );
    let key = stderr
        .split_whitespace()
        .find(|w| w.starts_with("kk_live_"))
        .unwrap()
        .to_string();
    assert!(api_key::well_formed(&key));
    assert!(
        !stdout.contains(&key),
        "the key itself is never in the manifests"
    );
    assert!(
        stdout.contains("$argon2id$v=19$m=65536,t=3,p=4$"),
        "{stdout}"
    );
    assert!(stdout.contains("kind: ApiKey") && stdout.contains("expiresAt:"));
    std::fs::write(dir.path().join("key.yaml"), &stdout).unwrap();

    let out = run_with_stdin(
        &[
            "hash-password",
            "--username",
            "bob@example.com",
            "--namespace",
            "ops",
            "--role",
            "viewer",
        ],
        "correct horse battery\nsecond line ignored\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains("correct horse"));
    assert!(
        stdout.contains("passwordHash:") && stdout.contains("kind: LocalUser"),
        "{stdout}"
    );
    std::fs::write(dir.path().join("user.yaml"), &stdout).unwrap();

    let out = run_with_stdin(&["hash-password"], "\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    let out = kubekuma()
        .args([
            "api-key",
            "create",
            "--name",
            "x",
            "--role",
            "editor",
            "--expires",
            "soon",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let built = FolderCatalog::new(vec![dir.path().to_path_buf()]).load();
    assert!(built.findings.is_empty(), "{:?}", built.findings);
    let snap = built.snapshot;
    assert_eq!((snap.api_keys.len(), snap.local_users.len()), (1, 1));
    let e = env(snap);
    let p = e.auth.authenticate(&bearer(&key), PEER).await.unwrap();
    assert_eq!(
        (p.id.as_str(), p.role, p.username.as_str()),
        ("ops/ci-bot", Role::Editor, "CI bot")
    );
    let (status, _, body) = login(&e, "bob@example.com", "correct horse battery").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["role"], "viewer");
    assert_eq!(body["user"]["id"], "ops/bob-example-com");
}

/// `kubekuma agent` refuses to start without SESSION_SECRET or with a short one.
#[test]
fn agent_requires_a_session_secret() {
    let dir = tempfile::tempdir().unwrap();
    let run = |secret: Option<&str>| {
        let mut cmd = kubekuma();
        cmd.args(["agent", "--listen", "127.0.0.1:0", "--config"])
            .arg(dir.path())
            .arg("--data")
            .arg(dir.path().join("data"))
            .env_remove("SESSION_SECRET");
        if let Some(s) = secret {
            cmd.env("SESSION_SECRET", s);
        }
        cmd.output().unwrap()
    };
    let out = run(None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SESSION_SECRET is required"));
    let out = run(Some("too-short"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at least 32 bytes") && !err.contains("too-short"),
        "{err}"
    );
}

/// Through the real listener: login, /me by cookie and by Bearer, the Secure cookie behind
/// an HTTPS proxy, logout, and the same token refused afterwards.
#[tokio::test]
async fn over_http() {
    use kubekuma_agent::admin::{self, AdminContext, Api, Health};
    use kubekuma_agent::metrics::Metrics;
    use kubekuma_agent::state::live::Live;

    let e = env(folder_snapshot(&[compat_file()]));
    let api = Api::new(Arc::new(Health::default())).with_admin(AdminContext {
        store: e.store.clone(),
        live: Arc::new(std::sync::Mutex::new(Live::default())),
        catalog: e.catalog.subscribe(),
        auth: e.auth.clone(),
        metrics: Arc::new(Metrics::new()),
    });
    let (stop, stop_rx) = watch::channel(false);
    let (addr, _task) = admin::serve("127.0.0.1:0", Arc::new(api), stop_rx)
        .await
        .unwrap();
    let base = format!("http://{addr}/api/v1/auth");
    let client = reqwest::Client::new();

    let r = client
        .post(format!("{base}/login"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"username": "admin", "password": "test1234"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let set_cookie = r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Strict")
            && set_cookie.contains("Path=/")
            && set_cookie.ends_with("; Secure"),
        "{set_cookie}"
    );
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    assert!(set_cookie.starts_with(&format!("token={token};")));

    let me = |by_cookie: bool| {
        let req = client.get(format!("{base}/me"));
        let req = if by_cookie {
            req.header(header::COOKIE, format!("token={token}"))
        } else {
            req.bearer_auth(&token)
        };
        async move {
            let r = req.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for by_cookie in [true, false] {
        let (status, body) = me(by_cookie).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["id"], "default/admin");
        assert_eq!(body["namespace"], "default");
        assert!(body.get("lastLoginAt").is_some(), "{body}");
    }
    // A write by cookie: JSON, as every cookie-authenticated write must be (CSRF).
    let r = client
        .post(format!("{base}/logout"))
        .header(header::COOKIE, format!("token={token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    for by_cookie in [true, false] {
        let (status, body) = me(by_cookie).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let r = client
        .post(format!("{base}/login"))
        .json(&json!({"username": "admin", "password": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("invalid_credentials") && !text.contains("argon2"),
        "{text}"
    );
    stop.send(true).unwrap();
}

/// Through the real listener, two logins: `auth/me` shows the login before the session's
/// own (null after the first login, the first login's time after the second), while the
/// user's last login (what the LocalUser's `status.lastLoginAt` shows) is the latest.
#[tokio::test]
async fn me_shows_the_previous_login_over_http() {
    use kubekuma_agent::admin::{self, AdminContext, Api, Health};
    use kubekuma_agent::metrics::Metrics;
    use kubekuma_agent::state::live::Live;
    use kubekuma_agent::store::AuthActivity;

    let e = env(folder_snapshot(&[compat_file()]));
    let api = Api::new(Arc::new(Health::default())).with_admin(AdminContext {
        store: e.store.clone(),
        live: Arc::new(std::sync::Mutex::new(Live::default())),
        catalog: e.catalog.subscribe(),
        auth: e.auth.clone(),
        metrics: Arc::new(Metrics::new()),
    });
    let (stop, stop_rx) = watch::channel(false);
    let (addr, _task) = admin::serve("127.0.0.1:0", Arc::new(api), stop_rx)
        .await
        .unwrap();
    let base = format!("http://{addr}/api/v1/auth");
    let client = reqwest::Client::new();
    let log_in = || async {
        let r = client
            .post(format!("{base}/login"))
            .json(&json!({"username": "admin", "password": "test1234"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    };
    let me = |token: String| {
        let req = client.get(format!("{base}/me")).bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()["lastLoginAt"].clone()
        }
    };
    let user_last = || async {
        e.store
            .auth_activity(AuthActivity::UserLogin, "default/admin")
            .await
            .unwrap()
            .unwrap()
    };
    let secs =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let first = log_in().await;
    assert_eq!(me(first.clone()).await, Value::Null, "first login");
    let first_at = user_last().await;

    let second = log_in().await;
    let second_at = user_last().await;
    assert!(second_at > first_at, "the user's last login is the latest");
    assert_eq!(me(second.clone()).await, json!(secs(first_at)));
    // Asking again does not move it, and the first session still has none before it.
    assert_eq!(me(second).await, json!(secs(first_at)));
    assert_eq!(me(first).await, Value::Null);
    stop.send(true).unwrap();
}

/// Key IDs: a presented key is looked up by its public ID before any hash is computed.
/// Unknown IDs cost no argon2, from any number of clients; a known ID with the wrong
/// rest costs one, against that key's hash only; a valid key one, then none (cache).
/// Failed attempts are limited per client (429 with Retry-After before any lookup), and
/// a limited client's already verified key is still answered from the cache.
#[tokio::test]
async fn key_ids_spare_argon2_and_failures_are_limited_per_client() {
    let good = api_key::generate(false);
    let fresh = api_key::generate(true);
    let yaml = [
        key_yaml("ops", "a", "editor", &good, ""),
        key_yaml("kubekuma", "b", "viewer", &fresh, ""),
    ]
    .concat();
    let limits = LoginLimits {
        api_key_failures: 3,
        ..LoginLimits::default()
    };
    let e = env_with(snapshot(&yaml), config(limits));
    for i in 0..50 {
        let err = e
            .auth
            .authenticate(
                &bearer(&api_key::generate(i % 2 == 0)),
                ip(&format!("198.51.100.{i}")),
            )
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(e.auth.argon2_runs(), 0, "unknown key IDs cost no argon2");
    // The right ID with the wrong rest: one argon2, against that key's hash only.
    let forged = format!("{}{}", &good[..20], &api_key::generate(false)[20..]);
    assert_eq!(api_key::key_id(&forged), api_key::key_id(&good));
    let err = e
        .auth
        .authenticate(&bearer(&forged), ip("198.51.100.200"))
        .await
        .unwrap_err();
    assert_eq!(err.status, StatusCode::UNAUTHORIZED);
    assert_eq!(e.auth.argon2_runs(), 1);
    // The valid key: one argon2, then from the cache.
    for _ in 0..5 {
        let p = e
            .auth
            .authenticate(&bearer(&good), ip("198.51.100.201"))
            .await
            .unwrap();
        assert_eq!(p.id, "ops/a");
    }
    assert_eq!(e.auth.argon2_runs(), 2);

    // One client's failures: three, then 429 before any lookup, for any new key.
    let flooder = ip("203.0.113.66");
    for _ in 0..3 {
        let err = e
            .auth
            .authenticate(&bearer(&api_key::generate(false)), flooder)
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
    }
    for k in [api_key::generate(false), fresh.clone(), "kk_live_x".into()] {
        let err = e.auth.authenticate(&bearer(&k), flooder).await.unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        assert!(
            err.retry_after.is_some_and(|s| (1..=60).contains(&s)),
            "{err:?}"
        );
    }
    // ... but its verified key is answered from the cache, and other clients are served.
    assert!(e.auth.authenticate(&bearer(&good), flooder).await.is_ok());
    let runs = e.auth.argon2_runs();
    let p = e
        .auth
        .authenticate(&bearer(&fresh), ip("203.0.113.67"))
        .await
        .unwrap();
    assert_eq!(p.id, "kubekuma/b");
    assert_eq!(e.auth.argon2_runs(), runs + 1);
    // A valid key gives its try back: a client's own successes never use up its budget.
    let e = env_with(
        snapshot(&yaml),
        config(LoginLimits {
            api_key_failures: 1,
            ..LoginLimits::default()
        }),
    );
    let client = ip("192.0.2.77");
    assert!(e.auth.authenticate(&bearer(&good), client).await.is_ok());
    assert!(e.auth.authenticate(&bearer(&fresh), client).await.is_ok());
    assert!(
        e.auth
            .authenticate(&bearer(&api_key::generate(false)), client)
            .await
            .is_err()
    );
    let err = e
        .auth
        .authenticate(&bearer(&api_key::generate(false)), client)
        .await
        .unwrap_err();
    assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
}

/// Older ApiKeys without `spec.keyId` still authenticate (checked in turn, as before key
/// IDs), and validation says so on `spec.keyId`; a malformed or repeated key ID is an
/// error naming the field.
#[tokio::test]
async fn keys_without_an_id_still_work_and_are_reported() {
    let legacy = api_key::generate(false);
    let modern = api_key::generate(false);
    let yaml = [
        legacy_key_yaml("ops", "old", "viewer", &legacy, ""),
        key_yaml("ops", "new", "viewer", &modern, ""),
    ]
    .concat();
    let built = build(&[parse_text("auth.yaml", &yaml)], None);
    let on_key_id: Vec<_> = built
        .findings
        .iter()
        .filter(|f| f.path == "spec.keyId")
        .collect();
    assert_eq!(on_key_id.len(), 1, "{:?}", built.findings);
    assert_eq!(
        on_key_id[0].severity,
        kubekuma_agent::catalog::Severity::Warning
    );
    assert!(
        on_key_id[0].to_string().contains("ApiKey ops/old"),
        "{}",
        on_key_id[0]
    );
    let e = env(built.snapshot);
    let p = e.auth.authenticate(&bearer(&legacy), PEER).await.unwrap();
    assert_eq!(p.id, "ops/old");
    // An unknown ID falls back to the keys without one (one argon2 each), never to the
    // others.
    let runs = e.auth.argon2_runs();
    assert!(
        e.auth
            .authenticate(&bearer(&api_key::generate(false)), PEER)
            .await
            .is_err()
    );
    assert_eq!(e.auth.argon2_runs(), runs + 1);

    let bad = key_yaml("ops", "typo", "viewer", &modern, "").replace(
        &format!("keyId: '{}'", api_key::key_id(&modern).unwrap()),
        "keyId: 'short'",
    );
    let twice = [
        key_yaml("ops", "first", "viewer", &modern, ""),
        key_yaml("dev", "second", "viewer", &modern, ""),
    ]
    .concat();
    for (yaml, want, kept) in [
        (bad, "must be the key's first 12 characters", 0),
        (twice, "already used by", 1),
    ] {
        let built = build(&[parse_text("auth.yaml", &yaml)], None);
        let errors: Vec<String> = built
            .findings
            .iter()
            .filter(|f| f.severity == kubekuma_agent::catalog::Severity::Error)
            .map(|f| f.to_string())
            .collect();
        assert!(
            errors
                .iter()
                .any(|f| f.contains("spec.keyId") && f.contains(want)),
            "{errors:?}"
        );
        assert_eq!(built.snapshot.api_keys.len(), kept, "{errors:?}");
    }
}

/// The key flood through the real listener: twelve clients (each its own loopback
/// address) send unknown `kk_live_` keys while a new valid key (spec-cost argon2 hash) is
/// presented from another address. The valid key gets 200, never 503 or 429; the flood
/// gets only 401 and 429; exactly one argon2 ran. After a restart (a fresh `Auth`, empty
/// cache) the same holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_flood_never_starves_a_valid_key() {
    use kubekuma_agent::admin::{self, AdminContext, Api, Health};
    use kubekuma_agent::metrics::Metrics;
    use kubekuma_agent::state::live::Live;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let good = api_key::generate(false);
    let other = api_key::generate(false);
    let spec_hash = |k: &str| password::hash_spec(k.as_bytes()).unwrap();
    let yaml = [&good, &other]
        .iter()
        .enumerate()
        .map(|(i, k)| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: k{i}, namespace: ops}}\n\
                 stringData: {{keyHash: '{}'}}\n---\n\
                 apiVersion: monitoring.kubekuma.io/v1\nkind: ApiKey\n\
                 metadata: {{name: k{i}, namespace: ops}}\n\
                 spec:\n  name: k{i}\n  role: viewer\n  keyId: '{}'\n  keyHashSecretRef: {{name: k{i}, key: keyHash}}\n---\n",
                spec_hash(k),
                api_key::key_id(k).unwrap()
            )
        })
        .collect::<String>();
    let e = env(snapshot(&yaml));
    assert_eq!(e.catalog.borrow().api_keys.len(), 2);

    for round in ["first start", "after a restart"] {
        let auth = Arc::new(Auth::new(
            config(LoginLimits::default()),
            e.store.clone(),
            e.catalog.subscribe(),
        ));
        let api = Api::new(Arc::new(Health::default())).with_admin(AdminContext {
            store: e.store.clone(),
            live: Arc::new(std::sync::Mutex::new(Live::default())),
            catalog: e.catalog.subscribe(),
            auth: auth.clone(),
            metrics: Arc::new(Metrics::new()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let (addr, _task) = admin::serve("127.0.0.1:0", Arc::new(api), stop_rx)
            .await
            .unwrap();
        let url = format!("http://{addr}/api/v1/auth/me");
        let answered = Arc::new(AtomicUsize::new(0));
        let flood: Vec<_> = (0..12u8)
            .map(|c| {
                let (url, answered) = (url.clone(), answered.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .local_address(IpAddr::from([127, 0, 0, 10 + c]))
                        .build()
                        .unwrap();
                    let mut statuses = Vec::new();
                    for _ in 0..30 {
                        let r = client
                            .get(&url)
                            .bearer_auth(api_key::generate(false))
                            .send()
                            .await
                            .unwrap();
                        statuses.push(r.status());
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    statuses
                })
            })
            .collect();
        while answered.load(Ordering::SeqCst) < 24 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let client = reqwest::Client::builder()
            .local_address(IpAddr::from([127, 0, 0, 200]))
            .build()
            .unwrap();
        let r = client.get(&url).bearer_auth(&good).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "{round}: {body}");
        assert_eq!(body["id"], "ops/k0");
        let mut seen = std::collections::BTreeMap::new();
        for t in flood {
            for s in t.await.unwrap() {
                *seen.entry(s.as_u16()).or_insert(0) += 1;
            }
        }
        assert!(
            seen.keys().all(|s| *s == 401 || *s == 429),
            "{round}: {seen:?}"
        );
        assert!(
            seen.contains_key(&429),
            "{round}: each client is limited: {seen:?}"
        );
        assert_eq!(
            auth.argon2_runs(),
            1,
            "{round}: one argon2, for the valid key"
        );
        // The verified key keeps answering from the cache.
        let r = client.get(&url).bearer_auth(&good).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(auth.argon2_runs(), 1);
        stop.send(true).unwrap();
    }
}
