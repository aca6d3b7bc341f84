//! Azurite, Microsoft's Azure Storage emulator (the npm package `azurite`, which
//! `tests/run` installs), as the Blob service peer for `az://` stores: one
//! `azurite-blob` process per test, on 127.0.0.1, keeping its data in a temporary folder,
//! with one account whose key is this file's (Azurite's `AZURITE_ACCOUNTS`), checking the
//! Shared Key signature of every request as Azure does.
//!
//! Clients reach it through a TCP relay on another port, which can be stopped (an
//! outage: connection refused, open connections cut) and started again on the same
//! port while Azurite and its data stay as they are. (Azurite itself keeps its metadata
//! in memory between periodic saves and takes about 20 s to shut down cleanly, so
//! restarting the process is no way to stage an outage.) The process is killed when the
//! [`Azurite`] is dropped.
//!
//! The binary is `azurite-blob` on `PATH`. When it is missing the tests fail, naming
//! `tests/run`, unless `KUBEKUMA_SKIP_AZURITE=1` is set, which skips them.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The storage account Azurite serves.
pub const ACCOUNT: &str = "kubekumatest";
/// Its key, base64 as Azure hands keys out (distinctive, so tests can search for leaks).
pub const KEY: &str = "a3ViZWt1bWEtYXp1cml0ZS10ZXN0LWtleS03ZDJmOWUxYw==";
/// How long Azurite may take to listen.
const START: Duration = Duration::from_secs(30);

/// A running Azurite Blob service, and the relay in front of it.
pub struct Azurite {
    child: Child,
    /// The relay's port: what clients connect to.
    port: u16,
    /// Azurite's own port.
    backend: u16,
    /// The relay's accept loop and connections, while it runs.
    relay: Option<JoinSet<()>>,
    conns: Arc<Mutex<JoinSet<()>>>,
    dir: tempfile::TempDir,
}

impl Azurite {
    /// Start Azurite on a free port over a new empty folder; `None` when it is missing
    /// and `KUBEKUMA_SKIP_AZURITE=1` says to skip.
    pub async fn start() -> Option<Azurite> {
        let found = Command::new("azurite-blob")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            if std::env::var("KUBEKUMA_SKIP_AZURITE").as_deref() == Ok("1") {
                eprintln!("skipped: azurite-blob is not on PATH (KUBEKUMA_SKIP_AZURITE=1)");
                return None;
            }
            panic!(
                "azurite-blob is not on PATH: run the tests through tests/run, which installs \
                 it (npm package azurite), or set KUBEKUMA_SKIP_AZURITE=1 to skip these tests"
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = free_port();
        let child = spawn(backend, dir.path()).await;
        let listener = super::s3::bind(([127, 0, 0, 1], 0).into());
        let port = listener.local_addr().expect("local addr").port();
        let mut azurite = Azurite {
            child,
            port,
            backend,
            relay: None,
            conns: Arc::default(),
            dir,
        };
        azurite.relay(listener);
        Some(azurite)
    }

    /// The account's endpoint, as `azure_storage_endpoint` takes it (path style, the
    /// account as the first segment, as Azurite serves it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// `open_store_with` options for this account (key, endpoint, plain HTTP).
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("azure_storage_account_name", ACCOUNT.to_string()),
            ("azure_storage_account_key", KEY.to_string()),
            ("azure_storage_endpoint", self.endpoint()),
            ("azure_allow_http", "true".to_string()),
        ]
    }

    /// Create a container (object_store writes blobs but never creates containers),
    /// through the Blob service's Create Container operation signed with Shared Key.
    pub async fn create_container(&self, name: &str) {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-12-02";
        // VERB and the eleven standard headers (all empty here), the x-ms- headers in
        // order, then the resource: the account, the path (whose first segment is the
        // account again in Azurite's path-style URLs) and the query.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
             /{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
        );
        let key = STANDARD.decode(KEY).expect("the key is base64");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(to_sign.as_bytes());
        let signature = STANDARD.encode(mac.finalize().into_bytes());
        let reply = reqwest::Client::new()
            .put(format!("{}/{name}?restype=container", self.endpoint()))
            .header("x-ms-date", &date)
            .header("x-ms-version", version)
            .header("authorization", format!("SharedKey {ACCOUNT}:{signature}"))
            .body("")
            .send()
            .await
            .expect("Azurite answers");
        let status = reply.status();
        let text = reply.text().await.unwrap_or_default();
        assert_eq!(status, 201, "create container {name}: {text}");
    }

    /// The folder Azurite keeps its data in.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stop the relay: new connections are refused and open ones are cut, until
    /// [`Azurite::resume`].
    pub async fn stop(&mut self) {
        super::s3::cut(self.relay.take(), &self.conns).await;
    }

    /// Start the relay again on the same port.
    pub async fn resume(&mut self) {
        self.stop().await;
        let listener = super::s3::bind(([127, 0, 0, 1], self.port).into());
        self.relay(listener);
    }

    /// Relay every connection accepted on `listener` to Azurite, byte for byte.
    fn relay(&mut self, listener: TcpListener) {
        let (backend, conns) = (self.backend, self.conns.clone());
        let mut relay = JoinSet::new();
        relay.spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let mut set = conns.lock().expect("connection set");
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", backend)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        self.relay = Some(relay);
    }
}

/// Start `azurite-blob` on `port` over `dir` and wait until it listens.
async fn spawn(port: u16, dir: &Path) -> Child {
    let mut child = Command::new("azurite-blob")
        .args(["--silent", "--loose", "--skipApiVersionCheck", "--blobHost"])
        .arg("127.0.0.1")
        .arg("--blobPort")
        .arg(port.to_string())
        .arg("--location")
        .arg(dir)
        .env("AZURITE_ACCOUNTS", format!("{ACCOUNT}:{KEY}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("azurite-blob starts");
    let started = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("azurite-blob exited ({status}) before listening: {err}");
        }
        if started.elapsed() > START {
            let _ = child.kill();
            panic!("azurite-blob did not listen on port {port} within {START:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Drop for Azurite {
    fn drop(&mut self) {
        // The data is thrown away with the folder: no need for Azurite's slow shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
