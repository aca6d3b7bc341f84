//! The `docker` check against a fake Docker engine (`common/docker_engine.rs`). The fake
//! implements the Engine API's wire protocol — HTTP/1.1 on a unix socket or on
//! 127.0.0.1, engine-shaped `ContainerInspect` documents and `{"message": …}` errors —
//! and bollard talks to it as to a real engine.
//!
//! The check against a real engine, podman's Docker-compatible API service, is in
//! `checks_docker_podman.rs`. The fake stays for what podman cannot reproduce on demand:
//! a restarting container, one killed for running out of memory or that failed to start
//! with an error, Docker's own document shapes (no `Health` without a health check,
//! `Running` true while paused, a health log of several entries, non-zero health exit
//! codes as the command returned them), and an engine that answers 500, a proxy's 404,
//! garbage or nothing at all.

use crate::common::docker_engine;

use std::sync::Arc;
use std::time::Duration;

use docker_engine::{Container, FakeEngine, Misbehave};
use kubekuma_agent::checks::{self, CheckContext};
use kubekuma_agent::secrets::SecretStore;
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};

fn spec(engine: Option<&str>, container: &str, extra: &str) -> MonitorSpec {
    // JSON strings are YAML strings: any path or name goes in quoted and escaped.
    let engine = engine
        .map(|e| format!(", engine: {}", serde_json::to_string(e).unwrap()))
        .unwrap_or_default();
    let container = serde_json::to_string(container).unwrap();
    serde_yaml_ng::from_str(&format!(
        "type: docker\ntarget:\n  docker: {{container: {container}{engine}}}\n{extra}"
    ))
    .unwrap()
}

async fn run_for(engine: &str, container: &str, extra: &str, timeout: Duration) -> CheckOutcome {
    let ctx = CheckContext::new(
        EffectiveSettings::default(),
        Arc::new(SecretStore::default()),
    );
    checks::run_spec(&ctx, "ns", &spec(Some(engine), container, extra), timeout).await
}

async fn run(engine: &str, container: &str, extra: &str) -> CheckOutcome {
    run_for(engine, container, extra, Duration::from_secs(5)).await
}

const REQUIRE_HEALTHY: &str = "successCriteria:\n  docker: {requireHealthy: true}\n";

fn message(o: &CheckOutcome) -> &str {
    o.message.as_deref().unwrap_or("")
}

/// The inspect paths the fake saw, without the optional `/v1.NN` prefix.
fn inspect_paths(fake: &FakeEngine) -> Vec<String> {
    fake.seen()
        .iter()
        .map(|s| {
            assert_eq!(s.method, "GET", "{s:?}");
            let t = s.target.as_str();
            let unversioned = match t.strip_prefix("/v") {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
                    &rest[rest.find('/').unwrap()..]
                }
                _ => t,
            };
            unversioned.to_string()
        })
        .collect()
}

#[tokio::test]
async fn running_and_healthy_is_up() {
    let db = Container::running("db").with_health(
        "healthy",
        &[
            (1, "no response\n"),
            (0, "/var/run/postgresql:5432 - accepting connections\n"),
        ],
    );
    let id = db.id.clone();
    let fake = docker_engine::unix(vec![db]).await;
    let o = run(&fake.engine, "db", "").await;
    assert!(o.up, "{o:?}");
    assert_eq!(o.reason, None);
    assert_eq!(message(&o), "running, healthy");
    assert_eq!(o.metadata["containerName"], "db");
    assert_eq!(o.metadata["containerId"], id[..12]);
    assert_eq!(o.metadata["status"], "running");
    assert_eq!(o.metadata["health"], "healthy");
    assert_eq!(o.metadata["image"], "postgres:17");
    assert!(!o.metadata.contains_key("exitCode"), "{o:?}");
    assert_eq!(inspect_paths(&fake), ["/containers/db/json"]);
}

#[tokio::test]
async fn running_without_healthcheck_is_up_unless_health_is_required() {
    let fake = docker_engine::unix(vec![Container::running("cache")]).await;
    let o = run(&fake.engine, "cache", "").await;
    assert!(o.up, "{o:?}");
    assert_eq!(message(&o), "running (no healthcheck)");
    assert!(!o.metadata.contains_key("health"), "{o:?}");

    let o = run(&fake.engine, "cache", REQUIRE_HEALTHY).await;
    assert!(!o.up);
    assert_eq!(o.reason, Some(FailureReason::Unhealthy), "{o:?}");
    assert_eq!(
        message(&o),
        "container cache is running but has no healthcheck, and requireHealthy is true"
    );
    // requireHealthy: false is the default.
    let o = run(
        &fake.engine,
        "cache",
        "successCriteria:\n  docker: {requireHealthy: false}\n",
    )
    .await;
    assert!(o.up, "{o:?}");
}

#[tokio::test]
async fn unhealthy_is_down_with_an_excerpt_of_the_last_check_output() {
    let long = format!(
        "FATAL:\tdatabase \"app\" does not exist\r\n\x1b[31m{}",
        "x".repeat(400)
    );
    let db = Container::running("db").with_health(
        "unhealthy",
        &[
            (0, "accepting connections"),
            (1, "no response"),
            (1, "no response"),
            (2, &long),
        ],
    );
    let fake = docker_engine::unix(vec![db]).await;
    for extra in ["", REQUIRE_HEALTHY] {
        let o = run(&fake.engine, "db", extra).await;
        assert!(!o.up);
        assert_eq!(o.reason, Some(FailureReason::Unhealthy), "{o:?}");
        let msg = message(&o);
        let expected_start = "container db is unhealthy after 3 failed health checks; \
             last check exited 2: FATAL:\\tdatabase \"app\" does not exist\\r\\n\\x1b[31mxxx";
        assert!(msg.starts_with(expected_start), "{msg}");
        assert!(msg.ends_with("xx…"), "{msg}");
        assert!(!msg.contains('\x1b') && !msg.contains('\n'), "{msg}");
        assert!(msg.chars().count() < 320, "{msg}");
        assert_eq!(o.metadata["health"], "unhealthy");
    }
}

#[tokio::test]
async fn stopped_paused_and_restarting_are_down_with_the_state() {
    let mut oom = Container::exited("worker", 137);
    oom.oom_killed = true;
    let mut failed = Container::exited("broken", 128);
    failed.error = "failed to create task for container: exec: \"/app\": permission denied".into();
    let fake = docker_engine::unix(vec![
        Container::exited("db", 1),
        oom,
        failed,
        Container::running("frozen").in_status("paused"),
        Container::exited("flappy", 1).in_status("restarting"),
        Container::running("fresh").in_status("created"),
    ])
    .await;
    let cases = [
        ("db", "container db is exited (exit code 1)"),
        (
            "worker",
            "container worker is exited (exit code 137, killed for running out of memory)",
        ),
        (
            "broken",
            "container broken is exited (exit code 128): failed to create task for container: exec: \"/app\": permission denied",
        ),
        ("frozen", "container frozen is paused"),
        ("flappy", "container flappy is restarting (exit code 1)"),
        ("fresh", "container fresh is created (not started)"),
    ];
    for (name, expected) in cases {
        let o = run(&fake.engine, name, "").await;
        assert!(!o.up, "{name}: {o:?}");
        assert_eq!(o.reason, Some(FailureReason::Unhealthy), "{name}: {o:?}");
        assert_eq!(message(&o), expected);
    }
    let o = run(&fake.engine, "db", "").await;
    assert_eq!(o.metadata["exitCode"], 1);
    assert_eq!(o.metadata["status"], "exited");
}

#[tokio::test]
async fn a_starting_health_check_is_down_only_when_health_is_required() {
    let web = Container::running("web").with_health("starting", &[]);
    let fake = docker_engine::unix(vec![web]).await;
    let o = run(&fake.engine, "web", "").await;
    assert!(o.up, "{o:?}");
    assert_eq!(message(&o), "running, health check starting");
    let o = run(&fake.engine, "web", REQUIRE_HEALTHY).await;
    assert!(!o.up);
    assert_eq!(o.reason, Some(FailureReason::Unhealthy));
    assert_eq!(
        message(&o),
        "container web is running but its health check is still starting, and requireHealthy is true"
    );
}

#[tokio::test]
async fn an_unknown_container_is_down_as_no_such_container() {
    let fake = docker_engine::unix(vec![Container::running("db")]).await;
    let o = run(&fake.engine, "ghost", "").await;
    assert!(!o.up);
    assert_eq!(o.reason, Some(FailureReason::Unhealthy), "{o:?}");
    assert_eq!(
        message(&o),
        format!("no such container \"ghost\" on {}", fake.engine)
    );
    assert_eq!(inspect_paths(&fake), ["/containers/ghost/json"]);
}

#[tokio::test]
async fn an_unreachable_engine_is_a_connect_failure_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.sock");
    for engine in [
        format!("unix://{}", missing.display()),
        missing.display().to_string(),
    ] {
        let o = run(&engine, "db", "").await;
        assert_eq!(o.reason, Some(FailureReason::Connect), "{o:?}");
        assert_eq!(
            message(&o),
            format!(
                "cannot reach the Docker engine at unix://{}: no such socket",
                missing.display()
            )
        );
    }

    // A socket file nobody listens on any more (the engine stopped).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let engine = format!("unix://{}", stale.display());
    let o = run(&engine, "db", "").await;
    assert_eq!(o.reason, Some(FailureReason::Connect), "{o:?}");
    assert_eq!(
        message(&o),
        format!("cannot reach the Docker engine at {engine}: connection refused")
    );

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let engine = format!("tcp://{closed}");
    let o = run(&engine, "db", "").await;
    assert_eq!(o.reason, Some(FailureReason::Connect), "{o:?}");
    assert_eq!(
        message(&o),
        format!("cannot reach the Docker engine at {engine}: connection refused")
    );
}

#[tokio::test]
async fn tcp_http_and_bare_socket_path_engines() {
    let tcp = docker_engine::tcp(vec![Container::running("db").with_health("healthy", &[])]).await;
    let addr = tcp.engine.strip_prefix("tcp://").unwrap().to_string();
    for engine in [tcp.engine.clone(), format!("http://{addr}")] {
        let o = run(&engine, "db", "").await;
        assert!(o.up, "{engine}: {o:?}");
        assert_eq!(message(&o), "running, healthy");
    }
    let seen = tcp.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|s| s.host == addr), "{seen:?}");
    assert_eq!(
        inspect_paths(&tcp),
        ["/containers/db/json", "/containers/db/json"]
    );

    let unix = docker_engine::unix(vec![Container::exited("db", 3)]).await;
    let path = unix.socket.as_ref().unwrap().display().to_string();
    let o = run(&path, "db", "").await;
    assert_eq!(o.reason, Some(FailureReason::Unhealthy), "{o:?}");
    assert_eq!(message(&o), "container db is exited (exit code 3)");
    assert_eq!(unix.seen().len(), 1);
}

#[tokio::test]
async fn the_container_name_is_escaped_into_one_path_segment() {
    let odd = "odd name?#%/x";
    let db = Container::running("db");
    let id = db.id.clone();
    let fake = docker_engine::unix(vec![Container::running(odd), db]).await;
    let o = run(&fake.engine, odd, "").await;
    assert!(o.up, "{o:?}");
    assert_eq!(o.metadata["containerName"], odd);
    // The leading `/` of `docker inspect`'s Name, and an ID prefix, find the container.
    let o = run(&fake.engine, "/db", "").await;
    assert!(o.up, "{o:?}");
    let o = run(&fake.engine, &id[..12], "").await;
    assert!(o.up, "{o:?}");
    assert_eq!(o.metadata["containerName"], "db");
    assert_eq!(
        inspect_paths(&fake),
        [
            "/containers/odd%20name%3F%23%25%2Fx/json".to_string(),
            "/containers/db/json".to_string(),
            format!("/containers/{}/json", &id[..12]),
        ]
    );
}

#[tokio::test]
async fn engine_errors_garbage_and_silence() {
    let fake = docker_engine::unix(vec![
        Container::running("busy").misbehaving(Misbehave::ServerError),
        Container::running("proxied").misbehaving(Misbehave::Garbage),
        Container::running("stuck").misbehaving(Misbehave::Hang),
        Container::running("behind").misbehaving(Misbehave::ProxyNotFound),
    ])
    .await;
    let o = run(&fake.engine, "busy", "").await;
    assert_eq!(o.reason, Some(FailureReason::Status), "{o:?}");
    assert_eq!(
        message(&o),
        format!(
            "the Docker engine at {} answered 500: Error response from daemon: failed to get container state: context deadline exceeded",
            fake.engine
        )
    );
    // A 404 that is not the engine's "No such container" is not a missing container.
    let o = run(&fake.engine, "behind", "").await;
    assert_eq!(o.reason, Some(FailureReason::Status), "{o:?}");
    assert_eq!(
        message(&o),
        format!(
            "the Docker engine at {} answered 404: page not found",
            fake.engine
        )
    );
    let o = run(&fake.engine, "proxied", "").await;
    assert_eq!(o.reason, Some(FailureReason::Protocol), "{o:?}");
    assert!(
        message(&o).starts_with(&format!(
            "the Docker engine at {} sent a container description that does not parse",
            fake.engine
        )),
        "{o:?}"
    );
    let o = run_for(&fake.engine, "stuck", "", Duration::from_millis(600)).await;
    assert_eq!(o.reason, Some(FailureReason::Timeout), "{o:?}");
    assert_eq!(
        message(&o),
        format!(
            "no answer from the Docker engine at {} within 600ms",
            fake.engine
        )
    );
}

#[tokio::test]
async fn engine_addresses_that_cannot_work_are_config() {
    // The first three do not pass the monitor's rules (their plan is refused); the others
    // do, and the check refuses them (`checks::docker`'s unit tests hold its messages).
    let cases = [
        (
            "https://docker.example:2376",
            "spec.target.docker.engine: must be unix:///path/to/docker.sock",
        ),
        (
            "ssh://me@docker.example",
            "(TLS engines are not supported), got \"ssh://me@docker.example\"",
        ),
        (
            "docker.example:2375",
            "spec.target.docker.engine: must be unix:///path/to/docker.sock",
        ),
        (
            "tcp://admin:hunter2@docker.example:2375",
            "credentials in the engine address",
        ),
        ("http://docker.example:2375/v1.45", "without a path"),
    ];
    for (engine, expected) in cases {
        let o = run(engine, "db", "").await;
        assert_eq!(o.reason, Some(FailureReason::Config), "{engine}: {o:?}");
        assert!(message(&o).contains(expected), "{engine}: {o:?}");
        assert!(!message(&o).contains("hunter2"), "{o:?}");
    }
}
