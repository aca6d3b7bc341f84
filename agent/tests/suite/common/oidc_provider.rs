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
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some(OidcProvider { child, port });
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
        format!("http://127.0.0.1:{}", self.port)
    }
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
