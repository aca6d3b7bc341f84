//! A fake Docker engine for tests: the Engine API's HTTP protocol served by hyper on a
//! unix socket in a temporary folder, or on 127.0.0.1. It answers the few endpoints a
//! client needs, with documents shaped like the ones the engine sends (Engine API
//! `ContainerInspect`, `SystemPing`, `SystemVersion`, and `{"message": ...}` error
//! bodies).
//!
//! A real engine, podman's API service (`podman.rs`), is tested in
//! `checks_docker_podman.rs`. This fake covers what podman cannot produce on demand:
//! restarting, OOM-killed and failed-to-start containers, Docker's document shapes, and
//! an engine that errs (500), sits behind a proxy that answers 404, sends garbage or
//! hangs.
//!
//! Like the engine's router, every route is served both with and without a `/v1.NN`
//! version prefix. Containers are found by name (with or without the leading `/`), full
//! ID or unique ID prefix, after percent-decoding the path segment; every request's
//! method and raw path is logged.
#![allow(dead_code)]

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The API version the fake reports (Docker 27.3).
pub const API_VERSION: &str = "1.47";

/// What one container looks like to the fake.
#[derive(Clone, Debug)]
pub struct Container {
    /// Name without the leading `/`.
    pub name: String,
    /// 64 hex digits.
    pub id: String,
    /// `running`, `exited`, `paused`, `restarting`, `created`, `dead`.
    pub status: String,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// `State.Error`.
    pub error: String,
    /// Killed for running out of memory.
    pub oom_killed: bool,
    /// `Some(["CMD-SHELL", ...])` when the image or run configured a health check.
    pub healthcheck: Option<Vec<String>>,
    /// `State.Health.Status`: `starting`, `healthy`, `unhealthy`.
    pub health: Option<String>,
    /// `State.Health.Log`: (exit code, output), oldest first.
    pub health_log: Vec<(i64, String)>,
    /// How the fake misbehaves for this container.
    pub misbehave: Misbehave,
}

/// A way for the fake to answer badly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehave {
    /// Answer like the engine.
    No,
    /// Never answer the inspect request.
    Hang,
    /// Answer 500 with an engine error body.
    ServerError,
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Answer 404 like a proxy in front of the engine that does not know the path.
    ProxyNotFound,
}

impl Container {
    /// A running container without a health check.
    pub fn running(name: &str) -> Self {
        Container {
            name: name.into(),
            id: fake_id(name),
            status: "running".into(),
            exit_code: 0,
            error: String::new(),
            oom_killed: false,
            healthcheck: None,
            health: None,
            health_log: Vec::new(),
            misbehave: Misbehave::No,
        }
    }

    /// A running container with a health check in this state and this log.
    pub fn with_health(mut self, status: &str, log: &[(i64, &str)]) -> Self {
        self.healthcheck = Some(vec![
            "CMD-SHELL".into(),
            "pg_isready -U postgres || exit 1".into(),
        ]);
        self.health = Some(status.into());
        self.health_log = log.iter().map(|(c, o)| (*c, o.to_string())).collect();
        self
    }

    /// A container that stopped with this code.
    pub fn exited(name: &str, exit_code: i64) -> Self {
        Container {
            status: "exited".into(),
            exit_code,
            ..Container::running(name)
        }
    }

    /// The same container in another `State.Status`.
    pub fn in_status(mut self, status: &str) -> Self {
        self.status = status.into();
        self
    }

    /// The same container misbehaving.
    pub fn misbehaving(mut self, how: Misbehave) -> Self {
        self.misbehave = how;
        self
    }

    /// The `GET /containers/{id}/json` document, as the engine writes it.
    pub fn inspect(&self) -> Value {
        let running = matches!(self.status.as_str(), "running" | "paused" | "restarting");
        let failing = self
            .health_log
            .iter()
            .rev()
            .take_while(|(code, _)| *code != 0)
            .count();
        let log: Vec<Value> = self
            .health_log
            .iter()
            .enumerate()
            .map(|(i, (code, output))| {
                json!({
                    "Start": format!("2026-11-26T10:0{i}:00.100358735Z"),
                    "End": format!("2026-11-26T10:0{i}:00.241860921Z"),
                    "ExitCode": code,
                    "Output": output,
                })
            })
            .collect();
        let mut state = json!({
            "Status": self.status,
            "Running": running,
            "Paused": self.status == "paused",
            "Restarting": self.status == "restarting",
            "OOMKilled": self.oom_killed,
            "Dead": self.status == "dead",
            "Pid": if running { 4242 } else { 0 },
            "ExitCode": self.exit_code,
            "Error": self.error,
            "StartedAt": "2026-11-26T09:58:12.417239412Z",
            "FinishedAt": if running { "0001-01-01T00:00:00Z" } else { "2026-11-26T10:03:40.012938871Z" },
        });
        if let Some(h) = &self.health {
            state["Health"] = json!({"Status": h, "FailingStreak": failing, "Log": log});
        }
        let mut config = json!({
            "Hostname": &self.id[..12],
            "Domainname": "",
            "User": "",
            "AttachStdin": false,
            "AttachStdout": true,
            "AttachStderr": true,
            "ExposedPorts": {"5432/tcp": {}},
            "Tty": false,
            "OpenStdin": false,
            "StdinOnce": false,
            "Env": ["POSTGRES_PASSWORD_FILE=/run/secrets/pg", "PGDATA=/var/lib/postgresql/data"],
            "Cmd": ["postgres"],
            "Image": "postgres:17",
            "Volumes": {"/var/lib/postgresql/data": {}},
            "WorkingDir": "",
            "Entrypoint": ["docker-entrypoint.sh"],
            "OnBuild": null,
            "Labels": {"com.docker.compose.service": self.name},
            "StopSignal": "SIGINT",
        });
        if let Some(test) = &self.healthcheck {
            config["Healthcheck"] = json!({
                "Test": test,
                "Interval": 10_000_000_000i64,
                "Timeout": 5_000_000_000i64,
                "Retries": 3,
            });
        }
        let host_config = json!({
            "Binds": ["pgdata:/var/lib/postgresql/data"],
            "ContainerIDFile": "",
            "LogConfig": {"Type": "json-file", "Config": {}},
            "NetworkMode": "bridge",
            "PortBindings": {"5432/tcp": [{"HostIp": "", "HostPort": "5432"}]},
            "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
            "AutoRemove": false,
            "VolumeDriver": "",
            "VolumesFrom": null,
            "CapAdd": null,
            "CapDrop": null,
            "CgroupnsMode": "private",
            "Dns": [],
            "DnsOptions": [],
            "DnsSearch": [],
            "ExtraHosts": null,
            "IpcMode": "private",
            "Privileged": false,
            "PublishAllPorts": false,
            "ReadonlyRootfs": false,
            "ShmSize": 67_108_864,
            "Runtime": "runc",
            "Isolation": "",
            "Memory": 0,
            "NanoCpus": 0,
            "OomKillDisable": null,
            "PidsLimit": null,
            "MaskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore"],
            "ReadonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq"]
        });
        let network_settings = json!({
            "Bridge": "",
            "SandboxID": "6f1a6bd0d1c1b2b9d93b6ec3e1bfc1e0b5d0a7a4e4c1f5d2b8a9c0e1f2a3b4c5",
            "SandboxKey": "/var/run/docker/netns/6f1a6bd0d1c1",
            "Ports": {"5432/tcp": [{"HostIp": "0.0.0.0", "HostPort": "5432"}]},
            "Networks": {
                "bridge": {
                    "IPAMConfig": null,
                    "Links": null,
                    "Aliases": null,
                    "MacAddress": "02:42:ac:11:00:02",
                    "NetworkID": "3f6b4b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a",
                    "EndpointID": "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b",
                    "Gateway": "172.17.0.1",
                    "IPAddress": if running { "172.17.0.2" } else { "" },
                    "IPPrefixLen": 16,
                    "IPv6Gateway": "",
                    "GlobalIPv6Address": "",
                    "GlobalIPv6PrefixLen": 0,
                    "DNSNames": null
                }
            }
        });
        json!({
            "Id": self.id,
            "Created": "2026-11-26T09:58:11.822733054Z",
            "Path": "docker-entrypoint.sh",
            "Args": ["postgres"],
            "State": state,
            "Image": "sha256:8ae2d1b27b3c7a6c2b9b0b8b0b5c3b2a1f6e9d8c7b6a5f4e3d2c1b0a9f8e7d6c",
            "ResolvConfPath": format!("/var/lib/docker/containers/{}/resolv.conf", self.id),
            "HostnamePath": format!("/var/lib/docker/containers/{}/hostname", self.id),
            "HostsPath": format!("/var/lib/docker/containers/{}/hosts", self.id),
            "LogPath": format!("/var/lib/docker/containers/{0}/{0}-json.log", self.id),
            "Name": format!("/{}", self.name),
            "RestartCount": 0,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "docker-default",
            "ExecIDs": null,
            "HostConfig": host_config,
            "GraphDriver": {
                "Data": {
                    "MergedDir": format!("/var/lib/docker/overlay2/{}/merged", self.id),
                    "UpperDir": format!("/var/lib/docker/overlay2/{}/diff", self.id),
                    "WorkDir": format!("/var/lib/docker/overlay2/{}/work", self.id)
                },
                "Name": "overlay2"
            },
            "Mounts": [{
                "Type": "volume",
                "Name": "pgdata",
                "Source": "/var/lib/docker/volumes/pgdata/_data",
                "Destination": "/var/lib/postgresql/data",
                "Driver": "local",
                "Mode": "z",
                "RW": true,
                "Propagation": ""
            }],
            "Config": config,
            "NetworkSettings": network_settings,
        })
    }
}

/// A stable 64-hex-digit ID derived from a name.
fn fake_id(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    for round in 0u64..4 {
        for b in name.bytes().chain(round.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// `GET`, ...
    pub method: String,
    /// The raw path and query, as sent (still percent-encoded).
    pub target: String,
    /// The `Host` header.
    pub host: String,
}

/// Where a fake engine listens and what it saw.
pub struct FakeEngine {
    /// `unix:///…/docker.sock` or `tcp://127.0.0.1:port`.
    pub engine: String,
    /// The socket path, for unix engines.
    pub socket: Option<PathBuf>,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dir: Option<tempfile::TempDir>,
}

impl FakeEngine {
    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type Containers = Arc<Vec<Container>>;

/// Serve these containers on a unix socket in a new temporary folder.
pub async fn unix(containers: Vec<Container>) -> FakeEngine {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (containers, seen2): (Containers, _) = (Arc::new(containers), seen.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(
                TokioIo::new(stream),
                containers.clone(),
                seen2.clone(),
            ));
        }
    });
    FakeEngine {
        engine: format!("unix://{}", socket.display()),
        socket: Some(socket),
        seen,
        _dir: Some(dir),
    }
}

/// Serve these containers on 127.0.0.1 (an engine started with `-H tcp://…`).
pub async fn tcp(containers: Vec<Container>) -> FakeEngine {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (containers, seen2): (Containers, _) = (Arc::new(containers), seen.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(
                TokioIo::new(stream),
                containers.clone(),
                seen2.clone(),
            ));
        }
    });
    FakeEngine {
        engine: format!("tcp://{addr}"),
        socket: None,
        seen,
        _dir: None,
    }
}

async fn serve_connection<S>(io: TokioIo<S>, containers: Containers, seen: Arc<Mutex<Vec<Seen>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let (containers, seen) = (containers.clone(), seen.clone());
        async move { Ok::<_, Infallible>(route(req, &containers, &seen).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("api-version", API_VERSION)
        .header("docker-experimental", "false")
        .header("ostype", "linux")
        .header("server", "Docker/27.3.1 (linux)")
        .body(Full::new(body.into()))
        .unwrap()
}

fn json_reply(status: u16, v: &Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string(v).unwrap();
    text.push('\n');
    reply(status, "application/json", text)
}

fn error_reply(status: u16, message: &str) -> Response<Full<Bytes>> {
    json_reply(status, &json!({ "message": message }))
}

/// `%XX` decoding of one path segment; `None` when malformed.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The path without a `/v1.NN` prefix.
fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v")
        && let Some(slash) = rest.find('/')
    {
        let version = &rest[..slash];
        let ok = version
            .split_once('.')
            .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
        if ok {
            return &rest[slash..];
        }
    }
    path
}

fn find<'a>(containers: &'a [Container], wanted: &str) -> Option<&'a Container> {
    let name = wanted.strip_prefix('/').unwrap_or(wanted);
    if let Some(c) = containers.iter().find(|c| c.name == name || c.id == wanted) {
        return Some(c);
    }
    let by_prefix: Vec<_> = containers
        .iter()
        .filter(|c| !wanted.is_empty() && c.id.starts_with(wanted))
        .collect();
    (by_prefix.len() == 1).then(|| by_prefix[0])
}

async fn route(
    req: Request<Incoming>,
    containers: &[Container],
    seen: &Mutex<Vec<Seen>>,
) -> Response<Full<Bytes>> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        target: target.clone(),
        host: req
            .headers()
            .get("host")
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default(),
    });
    let path = strip_version(req.uri().path());
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = req.method() == hyper::Method::GET || req.method() == hyper::Method::HEAD;
    match (get, parts.as_slice()) {
        (true, ["_ping"]) => reply(200, "text/plain; charset=utf-8", "OK"),
        (true, ["version"]) => json_reply(
            200,
            &json!({
                "Platform": {"Name": "Docker Engine - Community"},
                "Version": "27.3.1",
                "ApiVersion": API_VERSION,
                "MinAPIVersion": "1.24",
                "GitCommit": "41ca978",
                "GoVersion": "go1.22.7",
                "Os": "linux",
                "Arch": "amd64",
                "KernelVersion": "6.8.0-48-generic",
                "BuildTime": "2024-09-20T11:41:00.000000000+00:00"
            }),
        ),
        (true, ["containers", segment, "json"]) => {
            let Some(wanted) = percent_decode(segment) else {
                return error_reply(400, "invalid container name encoding");
            };
            let Some(c) = find(containers, &wanted) else {
                return error_reply(404, &format!("No such container: {wanted}"));
            };
            match c.misbehave {
                Misbehave::No => json_reply(200, &c.inspect()),
                Misbehave::Hang => {
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                Misbehave::ServerError => error_reply(
                    500,
                    "Error response from daemon: failed to get container state: context deadline exceeded",
                ),
                Misbehave::Garbage => reply(200, "application/json", "<html>proxy error</html>"),
                Misbehave::ProxyNotFound => error_reply(404, "page not found"),
            }
        }
        _ => error_reply(404, "page not found"),
    }
}
