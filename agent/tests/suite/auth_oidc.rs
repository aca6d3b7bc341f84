//! `auth.mode: oidc` against a real OpenID provider (`oidc-provider` from npm, see
//! `common/oidc_provider.rs`): the whole browser flow through the agent's listener
//! (login → the provider's login and consent forms → callback → session), groups mapped
//! to roles, sessions of the same kind as local logins (me, Bearer, logout), and the
//! attacks: ID tokens changed on the way (claims, `alg: none`, signature, a swapped
//! access token), a wrong `state`, a forged or expired login cookie, a replayed code, a
//! user in no mapped group, a provider's refusal, an open redirect through `next`,
//! password logins while the mode is oidc, an unreachable provider, an endless discovery
//! document; groups from UserInfo when the ID token has none.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{StatusCode, header};
use kubekuma_agent::admin::auth::oidc::{CALLBACK_PATH, FLOW_COOKIE, LOGIN_PATH};
use kubekuma_agent::admin::auth::{Auth, AuthConfig, LoginLimits, password};
use kubekuma_agent::admin::{self, AdminContext, Api, Health};
use kubekuma_agent::catalog::Snapshot;
use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::metrics::Metrics;
use kubekuma_agent::state::live::Live;
use kubekuma_agent::store::Store;
use serde_json::{Value, json};
use tokio::sync::watch;
use url::Url;

use crate::common::oidc_provider::{CLIENT_ID, CLIENT_SECRET, OidcProvider, Tamper, free_port};

const SECRET: &str = "an-hs256-key-for-oidc-tests-that-is-long-enough";

/// The agent's listener with an in-process Auth over a catalog the test replaces.
struct Agent {
    addr: SocketAddr,
    catalog: watch::Sender<Arc<Snapshot>>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Agent {
    async fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kubekuma.db")).unwrap();
        let (catalog, rx) = watch::channel(Arc::new(Snapshot::default()));
        let config = AuthConfig {
            session_secret: SECRET.as_bytes().to_vec(),
            max_age: std::time::Duration::from_secs(3600),
            home_namespace: "kubekuma".into(),
            limits: LoginLimits::default(),
        };
        let auth = Arc::new(Auth::new(config, store.clone(), rx));
        let api = Api::new(Arc::new(Health::default())).with_admin(AdminContext {
            store,
            live: Arc::new(std::sync::Mutex::new(Live::default())),
            catalog: catalog.subscribe(),
            auth,
            metrics: Arc::new(Metrics::new()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let (addr, _task) = admin::serve("127.0.0.1:0", Arc::new(api), stop_rx)
            .await
            .unwrap();
        Agent {
            addr,
            catalog,
            _stop: stop,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn redirect_url(&self) -> String {
        self.url(CALLBACK_PATH)
    }

    /// Replace the catalog with settings of `auth.mode: oidc` for `issuer` (plus
    /// `extra_auth` lines under `spec.auth`) and a LocalUser `local` (password `pw12345678`).
    fn configure(&self, issuer: &str, mode: &str, extra_auth: &str) {
        self.configure_with(
            issuer,
            mode,
            extra_auth,
            "[{group: ops, role: editor}, {group: platform-admins, role: admin}, \
             {group: watchers, role: viewer}]",
        );
    }

    /// [`Agent::configure`] in oidc mode with another `roleMapping`.
    fn configure_mapping(&self, issuer: &str, mapping: &str) {
        self.configure_with(issuer, "oidc", "", mapping);
    }

    fn configure_with(&self, issuer: &str, mode: &str, extra_auth: &str, mapping: &str) {
        let hash = password::hash_with(b"pw12345678", 1024, 1, 1).unwrap();
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: oidc-client, namespace: kubekuma}}\n\
             stringData: {{secret: '{CLIENT_SECRET}'}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: local-pw, namespace: kubekuma}}\n\
             stringData: {{hash: '{hash}'}}\n---\n\
             apiVersion: monitoring.kubekuma.io/v1\nkind: LocalUser\n\
             metadata: {{name: local, namespace: kubekuma}}\n\
             spec: {{username: local, role: admin, passwordHashSecretRef: {{name: local-pw, key: hash}}}}\n---\n\
             apiVersion: monitoring.kubekuma.io/v1\nkind: KubeKumaSettings\nmetadata: {{name: settings}}\n\
             spec:\n  auth:\n    mode: {mode}\n{extra_auth}    oidc:\n      issuer: '{issuer}'\n      clientId: {CLIENT_ID}\n\
             \x20     clientSecretRef: {{name: oidc-client, key: secret}}\n\
             \x20     redirectUrl: '{redirect}'\n\
             \x20     scopes: [openid, profile, email, groups]\n\
             \x20     roleMapping: {mapping}\n",
            redirect = self.redirect_url(),
        );
        let built = build(&[parse_text("oidc.yaml", &yaml)], None);
        assert!(
            built.snapshot.settings.is_some(),
            "settings refused: {:?}",
            built.findings
        );
        self.catalog.send_replace(Arc::new(built.snapshot));
    }
}

/// The accounts of the provider.
fn accounts() -> Value {
    json!({
        "alice": {"email": "alice@example.com", "groups": ["ops", "platform-admins"]},
        "bob": {"email": "bob@example.com", "groups": ["ops"]},
        "carol": {"email": "carol@example.com", "groups": ["watchers"]},
        "mallory": {"email": "mallory@example.com", "groups": ["contractors"]},
    })
}

/// The agent and the provider, set up for each other; `None` when the provider is
/// missing and the tests are told to skip.
async fn setup() -> Option<(Agent, OidcProvider)> {
    let agent = Agent::start().await;
    let provider = OidcProvider::start(&agent.redirect_url(), &accounts()).await?;
    agent.configure(&provider.issuer(), "oidc", "");
    Some((agent, provider))
}

/// A browser: a cookie jar, redirects followed by hand.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A client without cookies or redirects (for requests a test puts together itself).
fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()[header::LOCATION].to_str().unwrap().to_string()
}

/// The `name` cookie set by `r`, if any (its value).
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// A login started: the provider's authorization URL and the flow cookie.
struct Started {
    authorize: String,
    cookie: String,
}

/// A refusal with this status and error code, and no session cookie; its body.
async fn refused(r: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status, "{code}");
    assert!(set_cookie(&r, "token").is_none(), "no session for {code}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(!body.to_string().contains(CLIENT_SECRET));
    body
}

/// `GET /api/v1/auth/oidc/login` in `browser`.
async fn start_login(browser: &reqwest::Client, agent: &Agent, query: &str) -> Started {
    let r = browser
        .get(agent.url(&format!("{LOGIN_PATH}{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    let cookie = set_cookie(&r, FLOW_COOKIE).expect("the login cookie");
    let set = r.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    Started {
        authorize: location(&r),
        cookie,
    }
}

/// Walk from the provider's authorization URL through its login form (as `login`) and
/// consent form to the redirect back to the agent; the callback URL (not yet visited).
async fn at_provider(browser: &reqwest::Client, authorize: &str, login: &str) -> Url {
    let mut url = Url::parse(authorize).unwrap();
    let mut form: Option<Vec<(&str, String)>> = None;
    for _ in 0..20 {
        let r = match form.take() {
            Some(fields) => {
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
                    .finish();
                browser
                    .post(url.clone())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
            }
            None => browser.get(url.clone()).send().await.unwrap(),
        };
        if r.status().is_redirection() {
            let next = url.join(&location(&r)).unwrap();
            if next.path() == CALLBACK_PATH {
                return next;
            }
            url = next;
            continue;
        }
        let status = r.status();
        let html = r.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{url}: {html}");
        let action = between(&html, "action=\"", "\"").expect("a form");
        let prompt = between(&html, "name=\"prompt\" value=\"", "\"").expect("a prompt");
        form = Some(match prompt {
            "login" => vec![
                ("prompt", "login".into()),
                ("login", login.into()),
                ("password", "any".into()),
            ],
            "consent" => vec![("prompt", "consent".into())],
            other => panic!("unexpected prompt {other}: {html}"),
        });
        url = url.join(action).unwrap();
    }
    panic!("the provider never sent the browser back");
}

/// A whole login of `login` in a fresh browser: the callback's reply.
async fn log_in(agent: &Agent, login: &str) -> (reqwest::Client, reqwest::Response) {
    let b = browser();
    let started = start_login(&b, agent, "").await;
    let callback = at_provider(&b, &started.authorize, login).await;
    let r = b.get(callback).send().await.unwrap();
    (b, r)
}

async fn me(client: &reqwest::Client, agent: &Agent, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = client.get(agent.url("/api/v1/auth/me"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

/// Groups map to the highest role; the session is a session like a local one: the
/// `token` cookie with the same attributes, `auth/me` by cookie and by Bearer, logout.
#[tokio::test]
async fn login_through_the_provider() {
    let Some((agent, provider)) = setup().await else {
        return;
    };
    for (login, role) in [("alice", "admin"), ("bob", "editor"), ("carol", "viewer")] {
        let (b, r) = log_in(&agent, login).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{login}");
        assert_eq!(location(&r), "/", "{login}");
        let cookies: Vec<&str> = r
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let session = cookies
            .iter()
            .find(|c| c.starts_with("token="))
            .expect("a session cookie");
        assert!(
            session.contains("HttpOnly") && session.contains("SameSite=Strict"),
            "{session}"
        );
        assert!(
            cookies
                .iter()
                .any(|c| c.starts_with(&format!("{FLOW_COOKIE}=;")) && c.contains("Max-Age=0")),
            "the login cookie is cleared: {cookies:?}"
        );
        let token = set_cookie(&r, "token").unwrap();

        // By the cookie the browser keeps, and by Bearer.
        let (s, by_cookie) = me(&b, &agent, None).await;
        assert_eq!(s, StatusCode::OK, "{by_cookie}");
        assert_eq!(by_cookie["role"], role, "{login}: {by_cookie}");
        assert_eq!(by_cookie["username"], login);
        assert_eq!(by_cookie["id"], format!("oidc:{login}"));
        assert_eq!(by_cookie["authSource"], "oidc");
        assert_eq!(by_cookie["namespace"], "kubekuma");
        let (s, by_bearer) = me(&plain(), &agent, Some(&token)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(by_bearer["role"], role);

        // The role table applies: a viewer may not create silences.
        let r = plain()
            .post(agent.url("/api/v1/silences"))
            .bearer_auth(&token)
            .json(&json!({"namespace": "kubekuma", "durationMinutes": 5}))
            .send()
            .await
            .unwrap();
        if role == "viewer" {
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
        } else {
            assert_ne!(r.status(), StatusCode::FORBIDDEN, "{role}");
            assert_ne!(r.status(), StatusCode::UNAUTHORIZED, "{role}");
        }

        // Logout ends it, as for a local session.
        let r = plain()
            .post(agent.url("/api/v1/auth/logout"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let (s, _) = me(&plain(), &agent, Some(&token)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }

    // `next` brings the browser back where it was.
    let b = browser();
    let started = start_login(&b, &agent, "?next=%2Fincidents%3Fstate%3Dopen").await;
    let callback = at_provider(&b, &started.authorize, "bob").await;
    let r = b.get(callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/incidents?state=open");

    // A mapping that no longer gives a session's role ends the session (carol's viewer
    // role), not the others (alice's admin).
    let (_, r) = log_in(&agent, "carol").await;
    let carol = set_cookie(&r, "token").unwrap();
    let (_, r) = log_in(&agent, "alice").await;
    let alice = set_cookie(&r, "token").unwrap();
    assert_eq!(me(&plain(), &agent, Some(&carol)).await.0, StatusCode::OK);
    agent.configure_mapping(
        &provider.issuer(),
        "[{group: platform-admins, role: admin}]",
    );
    assert_eq!(
        me(&plain(), &agent, Some(&carol)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&plain(), &agent, Some(&alice)).await.0, StatusCode::OK);

    // Once the mode is no longer oidc, OIDC sessions end.
    let (_, r) = log_in(&agent, "alice").await;
    let token = set_cookie(&r, "token").unwrap();
    assert_eq!(me(&plain(), &agent, Some(&token)).await.0, StatusCode::OK);
    agent.configure(&provider.issuer(), "local", "");
    assert_eq!(
        me(&plain(), &agent, Some(&token)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// Callbacks that must not log anyone in: each is refused with a clear error and sets
/// no session cookie.
#[tokio::test]
async fn forged_and_stale_callbacks_are_refused() {
    let Some((agent, _provider)) = setup().await else {
        return;
    };
    let callback_with = |callback: &Url, cookie: &str, state: Option<&str>| {
        let mut url = callback.clone();
        if let Some(state) = state {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "state" {
                        state.to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        let req = plain().get(url);
        if cookie.is_empty() {
            req
        } else {
            req.header(header::COOKIE, format!("{FLOW_COOKIE}={cookie}"))
        }
    };

    let b = browser();
    let started = start_login(&b, &agent, "").await;
    let callback = at_provider(&b, &started.authorize, "alice").await;
    let state = callback
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();

    // A wrong state (a login started elsewhere, or a forged link).
    let r = callback_with(&callback, &started.cookie, Some("forged-state"))
        .send()
        .await
        .unwrap();
    let body = refused(r, StatusCode::BAD_REQUEST, "bad_request").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("state"),
        "{body}"
    );

    // No login cookie at all (a callback link sent to someone else).
    let r = callback_with(&callback, "", None).send().await.unwrap();
    refused(r, StatusCode::BAD_REQUEST, "bad_request").await;

    // A forged cookie: the payload changed to carry the attacker's state, the signature not.
    let parts: Vec<&str> = started.cookie.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["state"] = json!("attacker-state");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    let r = callback_with(&callback, &forged, Some("attacker-state"))
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::BAD_REQUEST, "bad_request").await;

    // An expired one (signed with the right key, but its ten minutes are over).
    let mut stale: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    stale["exp"] = json!(chrono::Utc::now().timestamp() - 1);
    let stale = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &stale,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let r = callback_with(&callback, &stale, None).send().await.unwrap();
    let body = refused(r, StatusCode::BAD_REQUEST, "bad_request").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    // The checks come before the exchange: the real callback still works once …
    let r = callback_with(&callback, &started.cookie, Some(&state))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&r, "token").is_some());
    // … and only once: the provider refuses a replayed code.
    let r = callback_with(&callback, &started.cookie, None)
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::BAD_GATEWAY, "oidc_exchange_failed").await;

    // A user in no mapped group.
    let (_, r) = log_in(&agent, "mallory").await;
    let body = refused(r, StatusCode::FORBIDDEN, "oidc_no_role").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("roleMapping"),
        "{body}"
    );

    // The provider's refusal, passed on.
    let b = browser();
    let started = start_login(&b, &agent, "").await;
    let authorize = Url::parse(&started.authorize).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut denied = Url::parse(&agent.redirect_url()).unwrap();
    denied
        .query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("state", &state);
    let r = callback_with(&denied, &started.cookie, None)
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::FORBIDDEN, "oidc_refused").await;

    // `next` never leads to another host.
    for next in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
    ] {
        let mut url = Url::parse(&agent.url(LOGIN_PATH)).unwrap();
        url.query_pairs_mut().append_pair("next", next);
        let r = plain().get(url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{next}");
        assert!(r.headers().get(header::LOCATION).is_none());
    }
}

/// With `auth.mode: oidc`, password logins are refused unless `auth.local.enabled` is
/// explicitly true.
#[tokio::test]
async fn password_logins_under_oidc() {
    let agent = Agent::start().await;
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let login = || async {
        plain()
            .post(agent.url("/api/v1/auth/login"))
            .json(&json!({"username": "local", "password": "pw12345678"}))
            .send()
            .await
            .unwrap()
    };
    agent.configure(&issuer, "oidc", "");
    let r = login().await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "local_login_disabled", "{body}");
    agent.configure(&issuer, "oidc", "    local: {enabled: true}\n");
    let r = login().await;
    assert_eq!(r.status(), StatusCode::OK);
    let token = set_cookie(&r, "token").unwrap();
    let (_, me) = me(&plain(), &agent, Some(&token)).await;
    assert_eq!(me["authSource"], "local");
}

/// An issuer that does not answer: the OIDC login says so (503 naming the provider),
/// everything else of the listener keeps working.
#[tokio::test]
async fn unreachable_provider() {
    let agent = Agent::start().await;
    let issuer = format!("http://127.0.0.1:{}", free_port());
    agent.configure(&issuer, "oidc", "");
    let r = plain().get(agent.url(LOGIN_PATH)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().get(header::RETRY_AFTER).is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "oidc_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&issuer), "{message}");
    let r = plain().get(agent.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A man in the middle between the agent and the provider changes the ID token: raised
/// groups with the signature kept, `alg: none`, a broken signature; or swaps the access
/// token (which UserInfo would be asked with) for another. Each is refused
/// (502, no session); the same relay passing tokens on unchanged logs in.
#[tokio::test]
async fn tampered_id_tokens_are_refused() {
    let agent = Agent::start().await;
    let Some(provider) = OidcProvider::start_behind_relay(&agent.redirect_url(), &accounts()).await
    else {
        return;
    };
    agent.configure(&provider.issuer(), "oidc", "");
    let raise = json!({"groups": ["platform-admins"]});
    for tamper in [
        Tamper::Claims(raise.clone()),
        Tamper::AlgNone(raise.clone()),
        Tamper::Signature,
    ] {
        provider.tamper(Some(tamper.clone()));
        let (_, r) = log_in(&agent, "mallory").await;
        let body = refused(r, StatusCode::BAD_GATEWAY, "oidc_invalid_token").await;
        let message = body["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(message.contains("signature"), "{tamper:?}: {body}");
    }
    // An access token that is not the one the ID token names in `at_hash`.
    provider.tamper(Some(Tamper::AccessToken("substituted-access-token".into())));
    let (_, r) = log_in(&agent, "alice").await;
    let body = refused(r, StatusCode::BAD_GATEWAY, "oidc_invalid_token").await;
    assert!(body.to_string().contains("at_hash"), "{body}");

    provider.tamper(None);
    let (b, r) = log_in(&agent, "alice").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (s, me) = me(&b, &agent, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["role"], "admin");
}

/// A provider that keeps groups (and names) out of the ID token, as the spec's default
/// and Okta do: the groups come from its UserInfo endpoint, and still map to roles.
#[tokio::test]
async fn groups_from_userinfo() {
    let agent = Agent::start().await;
    let Some(provider) =
        OidcProvider::start_with_groups_in_userinfo(&agent.redirect_url(), &accounts()).await
    else {
        return;
    };
    agent.configure(&provider.issuer(), "oidc", "");
    for (login, role) in [("alice", "admin"), ("carol", "viewer")] {
        let (b, r) = log_in(&agent, login).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{login}");
        let (s, me) = me(&b, &agent, None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(me["role"], role, "{me}");
        assert_eq!(me["id"], format!("oidc:{login}"));
    }
    let (_, r) = log_in(&agent, "mallory").await;
    refused(r, StatusCode::FORBIDDEN, "oidc_no_role").await;
}

/// An issuer whose discovery document never ends (chunk after chunk): the agent stops
/// reading at its bound and refuses the login, naming the cause.
#[tokio::test]
async fn endless_discovery_document() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 65536, " ".repeat(65536));
                // Until the agent hangs up (at most 64 MiB, so a bug cannot run forever).
                for _ in 0..1024 {
                    if s.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let agent = Agent::start().await;
    agent.configure(&issuer, "oidc", "");
    let r = plain().get(agent.url(LOGIN_PATH)).send().await.unwrap();
    let body = refused(r, StatusCode::SERVICE_UNAVAILABLE, "oidc_unavailable").await;
    assert!(body.to_string().contains("exceeds"), "{body}");
}
