//! A real OpenID provider: the npm package `oidc-provider` (8.x, which `tests/run`
//! installs) run by Node with `agent/tests/peers/oidc-provider.mjs`, one process per test
//! on 127.0.0.1, with one confidential client and the accounts a test gives (each with a
//! `groups` claim), PKCE required and the package's development login and consent forms.
//!
//! The package is found in `KUBEKUMA_OIDC_PROVIDER` (its folder), else beside a
//! `node_modules/.bin` folder on `PATH` (where `tests/run` puts the test peers), else in
//! `${XDG_CACHE_HOME:-~/.cache}/kubekuma-test-peers/node_modules`. When it (or `node`) is
//! missing the tests fail, naming `tests/run`, unless `KUBEKUMA_SKIP_OIDC=1` is set, which
//! skips them. The process is killed when the [`OidcProvider`] is dropped.
//!
//! [`OidcProvider::start_behind_relay`] puts an HTTP relay in front of it, which is then
//! the issuer (every URL the provider hands out points at the relay): a man in the middle
//! that can change the ID token of the token endpoint's answers ([`Tamper`]).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// How long the provider may take to listen.
const START: Duration = Duration::from_secs(30);

/// The one client registered at the provider.
pub const CLIENT_ID: &str = "kubekuma-test";
/// Its secret (distinctive, so tests can search for leaks).
pub const CLIENT_SECRET: &str = "oidc-client-secret-5f1d9c7a2b";

/// A running provider.
pub struct OidcProvider {
    child: Child,
    port: u16,
    /// The relay's port and what it does to ID tokens, when there is one.
    relay: Option<(u16, Arc<Mutex<Option<Tamper>>>)>,
}

/// What the relay does to the `id_token` of the token endpoint's answer.
#[derive(Clone, Debug)]
pub enum Tamper {
    /// Set these claims (values) in the payload, keeping the header and signature.
    Claims(serde_json::Value),
    /// Replace the header by `{"alg":"none"}`, set these claims and drop the signature.
    AlgNone(serde_json::Value),
    /// Change one character of the signature.
    Signature,
    /// Leave the ID token, hand out another access token (a substituted one).
    AccessToken(String),
}

/// The installed `oidc-provider` package's folder, if any.
fn package() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KUBEKUMA_OIDC_PROVIDER") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.ends_with("node_modules/.bin"))
        .filter_map(|d| d.parent().map(|m| m.join("oidc-provider")));
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("kubekuma-test-peers/node_modules/oidc-provider"));
    on_path
        .chain(cache)
        .find(|p| p.join("package.json").is_file())
}

impl OidcProvider {
    /// Start the provider on a free port for a client whose callback is `redirect_uri`,
    /// with `accounts` (`{"<login>": {"email": …, "groups": […]}}`); `None` when it is
    /// missing and `KUBEKUMA_SKIP_OIDC=1` says to skip.
    pub async fn start(redirect_uri: &str, accounts: &serde_json::Value) -> Option<OidcProvider> {
        Self::spawn(redirect_uri, accounts, None, false).await
    }

    /// [`OidcProvider::start`] with claims beyond `sub` only at the UserInfo endpoint,
    /// not in the ID token.
    pub async fn start_with_groups_in_userinfo(
        redirect_uri: &str,
        accounts: &serde_json::Value,
    ) -> Option<OidcProvider> {
        Self::spawn(redirect_uri, accounts, None, true).await
    }

    /// [`OidcProvider::start`] behind a relay that is the issuer.
    pub async fn start_behind_relay(
        redirect_uri: &str,
        accounts: &serde_json::Value,
    ) -> Option<OidcProvider> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_port = listener.local_addr().unwrap().port();
        let mut provider = Self::spawn(redirect_uri, accounts, Some(relay_port), false).await?;
        let tamper = Arc::new(Mutex::new(None));
        tokio::spawn(relay(listener, provider.port, tamper.clone()));
        provider.relay = Some((relay_port, tamper));
        Some(provider)
    }

    /// From now on, change ID tokens so (`None`: pass them on).
    pub fn tamper(&self, t: Option<Tamper>) {
        let (_, tamper) = self.relay.as_ref().expect("a relay");
        *tamper.lock().unwrap() = t;
    }

    async fn spawn(
        redirect_uri: &str,
        accounts: &serde_json::Value,
        relay_port: Option<u16>,
        groups_in_userinfo: bool,
    ) -> Option<OidcProvider> {
        let node = Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let Some(package) = package().filter(|_| node) else {
            if std::env::var("KUBEKUMA_SKIP_OIDC").as_deref() == Ok("1") {
                eprintln!(
                    "skipped: node or the oidc-provider package is missing (KUBEKUMA_SKIP_OIDC=1)"
                );
                return None;
            }
            panic!(
                "node or the npm package oidc-provider is missing: run the tests through \
                 tests/run, which installs it, or set KUBEKUMA_OIDC_PROVIDER to its folder, \
                 or KUBEKUMA_SKIP_OIDC=1 to skip these tests"
            );
        };
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc-provider.mjs");
        let port = free_port();
        let mut child = Command::new("node")
            .arg(&script)
            .env("OIDC_PROVIDER_MODULE", &package)
            .env("PORT", port.to_string())
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URI", redirect_uri)
            .env("ACCOUNTS", accounts.to_string())
            .env(
                "GROUPS_IN_USERINFO",
                if groups_in_userinfo { "1" } else { "0" },
            )
            .env(
                "ISSUER",
                relay_port
                    .map(|p| format!("http://127.0.0.1:{p}"))
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some(OidcProvider {
                    child,
                    port,
                    relay: None,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("oidc-provider exited ({status}) before listening: {err}");
            }
            if started.elapsed() > START {
                let _ = child.kill();
                panic!("oidc-provider did not listen on port {port} within {START:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The issuer URL.
    pub fn issuer(&self) -> String {
        let port = self.relay.as_ref().map_or(self.port, |(p, _)| *p);
        format!("http://127.0.0.1:{port}")
    }
}

/// Forward every request to the provider on `backend` (which builds its URLs from
/// `X-Forwarded-Host`), changing ID tokens as `tamper` says.
async fn relay(listener: TcpListener, backend: u16, tamper: Arc<Mutex<Option<Tamper>>>) {
    let front = listener.local_addr().unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let client = client.clone();
        let tamper = tamper.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let client = client.clone();
            let tamper = tamper.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut headers = parts.headers.clone();
                headers.remove(http::header::HOST);
                headers.insert("x-forwarded-host", front.to_string().parse().unwrap());
                headers.insert("x-forwarded-proto", "http".parse().unwrap());
                let r = client
                    .request(
                        parts.method.clone(),
                        format!("http://127.0.0.1:{backend}{path}"),
                    )
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let headers = r.headers().clone();
                let mut bytes = r.bytes().await.unwrap();
                let t = tamper.lock().unwrap().clone();
                if let Some(t) = t
                    && parts.uri.path() == "/token"
                {
                    bytes = tamper_token(&bytes, &t);
                }
                let mut out = hyper::Response::new(Full::new(bytes));
                *out.status_mut() = status;
                for (k, v) in &headers {
                    if k != http::header::CONTENT_LENGTH && k != http::header::TRANSFER_ENCODING {
                        out.headers_mut().append(k, v.clone());
                    }
                }
                Ok::<_, std::convert::Infallible>(out)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The token endpoint's answer with its `id_token` changed.
fn tamper_token(body: &[u8], t: &Tamper) -> Bytes {
    let mut answer: serde_json::Value = serde_json::from_slice(body).unwrap();
    if let Tamper::AccessToken(other) = t {
        answer["access_token"] = serde_json::Value::String(other.clone());
        return Bytes::from(answer.to_string());
    }
    let Some(token) = answer["id_token"].as_str() else {
        return Bytes::copy_from_slice(body);
    };
    let parts: Vec<&str> = token.split('.').collect();
    let with_claims = |claims: &serde_json::Value| {
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        for (k, v) in claims.as_object().unwrap() {
            payload[k] = v.clone();
        }
        URL_SAFE_NO_PAD.encode(payload.to_string())
    };
    let changed = match t {
        Tamper::Claims(c) => format!("{}.{}.{}", parts[0], with_claims(c), parts[2]),
        Tamper::AlgNone(c) => format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            with_claims(c)
        ),
        Tamper::AccessToken(_) => unreachable!(),
        Tamper::Signature => {
            // The first character: all its bits are the signature's (the last one's
            // low bits are padding).
            let first = if parts[2].starts_with('A') { "B" } else { "A" };
            format!("{}.{}.{first}{}", parts[0], parts[1], &parts[2][1..])
        }
    };
    answer["id_token"] = serde_json::Value::String(changed);
    Bytes::from(answer.to_string())
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
