//! An in-process S3 server for tests: s3s-fs serving a temporary folder on
//! 127.0.0.1 with SigV4 checked against one access/secret key pair. It can be stopped
//! (listener and every open connection dropped, like an outage) and restarted on the
//! same port with the same data. [`bind`] and [`cut`] serve the other restartable peers too.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, RetryConfig};
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Access key id accepted by the server.
pub const ACCESS_KEY: &str = "KUMATESTACCESSKEY";
/// Secret key accepted by the server (distinctive, so tests can search for leaks).
pub const SECRET_KEY: &str = "kuma-test-secret-8f3a9c1e7b";
/// The bucket that exists on the server.
pub const BUCKET: &str = "kubekuma";
/// Region the clients sign for.
pub const REGION: &str = "us-east-1";

/// A running (or stopped) S3 server.
pub struct S3Server {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    service: S3Service,
    /// The accept loop, while serving.
    accept: Option<JoinSet<()>>,
    /// Open connections.
    conns: Arc<Mutex<JoinSet<()>>>,
}

impl S3Server {
    /// Serve a new empty folder (with [`BUCKET`] created) on 127.0.0.1:0.
    pub async fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join(BUCKET)).expect("bucket folder");
        let fs = s3s_fs::FileSystem::new(dir.path()).expect("s3s-fs");
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let listener = bind("127.0.0.1:0".parse().expect("addr"));
        let addr = listener.local_addr().expect("local addr");
        let mut server = S3Server {
            dir,
            addr,
            service,
            accept: None,
            conns: Arc::default(),
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut accept = JoinSet::new();
        let service = self.service.clone();
        let conns = self.conns.clone();
        accept.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                let mut set = conns.lock().expect("connection set");
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        self.accept = Some(accept);
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port, unchanged across restarts.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The folder holding the bucket's objects (`<dir>/<key>`).
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join(BUCKET)
    }

    /// Whether it is serving.
    pub fn running(&self) -> bool {
        self.accept.is_some()
    }

    /// Stop serving: the listener and every open connection are closed, so clients get
    /// connection errors (refused, or reset on a pooled connection).
    pub async fn stop(&mut self) {
        cut(self.accept.take(), &self.conns).await;
    }

    /// Serve again on the same port, with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = bind(self.addr);
        self.serve(listener);
    }

    /// `s3://kubekuma/<prefix>` options for `open_store_with`: this server, these keys.
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".into()),
            ("aws_virtual_hosted_style_request", "false".into()),
            ("aws_region", REGION.into()),
            ("aws_access_key_id", ACCESS_KEY.into()),
            ("aws_secret_access_key", SECRET_KEY.into()),
        ]
    }

    /// A store builder for this server and bucket with the given credentials, client
    /// retries off and short timeouts (the uploader under test does the retrying).
    pub fn builder_with(&self, access_key: &str, secret_key: &str) -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_virtual_hosted_style_request(false)
            .with_region(REGION)
            .with_bucket_name(BUCKET)
            .with_access_key_id(access_key)
            .with_secret_access_key(secret_key)
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(std::time::Duration::from_secs(5))
                    .with_timeout(std::time::Duration::from_secs(30)),
            )
            // After the client options, which would reset it.
            .with_allow_http(true)
    }

    /// [`Self::builder_with`] the right credentials.
    pub fn builder(&self) -> AmazonS3Builder {
        self.builder_with(ACCESS_KEY, SECRET_KEY)
    }
}

/// A listener on `addr` that can take the same port again right after a stop.
pub fn bind(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(addr).expect("bind");
    socket.listen(128).expect("listen")
}

/// Stop a server's accept loop, then cut its open connections (no new one can arrive
/// once the loop is gone).
pub async fn cut(
    accept: Option<tokio::task::JoinSet<()>>,
    conns: &std::sync::Mutex<tokio::task::JoinSet<()>>,
) {
    if let Some(mut accept) = accept {
        accept.abort_all();
        while accept.join_next().await.is_some() {}
    }
    let mut open = std::mem::take(&mut *conns.lock().expect("connection set"));
    open.abort_all();
    while open.join_next().await.is_some() {}
}
