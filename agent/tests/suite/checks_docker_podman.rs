//! The `docker` check against a real engine: podman's Docker-compatible API service.
//!
//! The peer is `podman system service --time=0` (`common/podman.rs`), started by the test
//! on a unix socket in a temporary folder and, for the `tcp://` and `http://` forms, on
//! 127.0.0.1, over a podman state kept entirely in that folder (`CONTAINERS_CONF` and
//! `CONTAINERS_STORAGE_CONF` name its graph root, run root, libpod tmp dir and file
//! locks), so neither the machine's containers nor a concurrent run of this test see
//! each other. The containers are made with the podman CLI from a busybox image imported
//! from a tarball (no registry, no network; `--network none` by configuration).
//!
//! The configuration works for root on hosts like the one the tests run on:
//! `runtime = "runc"` because crun fails on cgroup v1 (hybrid) hosts;
//! `cgroup_manager = "cgroupfs"` because no systemd runs; `default_ulimits` of at most
//! 1024 open files and processes (and never above this process's hard limits) because
//! podman as root otherwise asks for 1048576, which the runtime cannot set without
//! CAP_SYS_RESOURCE. Health checks use `--health-interval disable` (no systemd timers)
//! and are run with `podman healthcheck run`, which makes their state deterministic.
//!
//! What podman cannot reproduce on demand (a restarting or dead container, one killed for
//! running out of memory, an engine that errs, hangs or sends garbage, a proxy's 404)
//! stays with the fake engine in `checks_docker.rs`.
//!
//! Without `podman` on PATH the test fails; set `KUBEKUMA_SKIP_PODMAN=1` to skip it.

use crate::common::podman::{self, Podman};

use std::sync::Arc;
use std::time::Duration;

use kubekuma_agent::checks::{self, CheckContext};
use kubekuma_agent::secrets::SecretStore;
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};

fn spec(engine: &str, container: &str, extra: &str) -> MonitorSpec {
    // JSON strings are YAML strings: any path or name goes in quoted and escaped.
    let engine = serde_json::to_string(engine).unwrap();
    let container = serde_json::to_string(container).unwrap();
    serde_yaml_ng::from_str(&format!(
        "type: docker\ntarget:\n  docker: {{container: {container}, engine: {engine}}}\n{extra}"
    ))
    .unwrap()
}

async fn run(engine: &str, container: &str, extra: &str) -> CheckOutcome {
    let ctx = CheckContext::new(
        EffectiveSettings::default(),
        Arc::new(SecretStore::default()),
    );
    let spec = spec(engine, container, extra);
    checks::run_spec(&ctx, "ns", &spec, Duration::from_secs(10)).await
}

const REQUIRE_HEALTHY: &str = "successCriteria:\n  docker: {requireHealthy: true}\n";

/// Health check options: run only by `podman healthcheck run`, one failure is unhealthy.
fn health(cmd: &str) -> [&str; 6] {
    [
        "--health-cmd",
        cmd,
        "--health-interval",
        "disable",
        "--health-retries",
        "1",
    ]
}

fn message(o: &CheckOutcome) -> &str {
    o.message.as_deref().unwrap_or("")
}

#[track_caller]
fn assert_down(o: &CheckOutcome, expected: &str) {
    assert!(!o.up, "{o:?}");
    assert_eq!(o.reason, Some(FailureReason::Unhealthy), "{o:?}");
    assert_eq!(message(o), expected, "{o:?}");
}

#[tokio::test]
async fn container_states_and_health_from_podman() {
    let Some(mut podman) = Podman::start() else {
        eprintln!("skipped: KUBEKUMA_SKIP_PODMAN is set");
        return;
    };
    let engine = podman.engine.clone();
    let sleep = ["sleep", "1000"];

    // Running, no health check: podman reports `Health: {"Status": ""}`.
    let id = podman.run("web", &[], &sleep);
    let o = run(&engine, "web", "").await;
    assert!(o.up, "{o:?}\n{}", podman.service_logs());
    assert_eq!(o.reason, None);
    assert_eq!(message(&o), "running (no healthcheck)");
    assert_eq!(o.metadata["containerName"], "web");
    assert_eq!(o.metadata["containerId"], id[..12]);
    assert_eq!(o.metadata["status"], "running");
    assert_eq!(o.metadata["image"], podman::IMAGE);
    assert!(!o.metadata.contains_key("health"), "{o:?}");
    assert!(!o.metadata.contains_key("exitCode"), "{o:?}");
    let o = run(&engine, "web", REQUIRE_HEALTHY).await;
    assert_down(
        &o,
        "container web is running but has no healthcheck, and requireHealthy is true",
    );
    // An ID prefix, the leading `/` of the engine's Name, and a bare socket path.
    let bare = podman.socket.display().to_string();
    for (engine, name) in [(&engine, &id[..12]), (&engine, "/web"), (&bare, "web")] {
        let o = run(engine, name, "").await;
        assert!(o.up, "{engine} {name}: {o:?}");
        assert_eq!(o.metadata["containerName"], "web");
    }

    // Exited with a code, created and never started, paused.
    podman.run("job", &[], &["sh", "-c", "exit 3"]);
    assert_eq!(podman.ok(&["wait", "job"]), "3");
    podman.ok(&["create", "--name", "fresh", podman::IMAGE, "sleep", "1000"]);
    podman.run("frozen", &[], &sleep);
    podman.ok(&["pause", "frozen"]);
    let o = run(&engine, "job", "").await;
    assert_down(&o, "container job is exited (exit code 3)");
    assert_eq!(o.metadata["exitCode"], 3);
    assert_eq!(o.metadata["status"], "exited");
    let o = run(&engine, "fresh", "").await;
    assert_down(&o, "container fresh is created (not started)");
    let o = run(&engine, "frozen", "").await;
    assert_down(&o, "container frozen is paused");
    // A command that cannot start: podman 4.3 leaves the container `created`, without
    // the `State.Error` Docker would report (the fake covers that one).
    let failed = podman.output(&[
        "run",
        "--detach",
        "--name",
        "broken",
        podman::IMAGE,
        "/nope",
    ]);
    assert!(!failed.status.success(), "{failed:?}");
    let o = run(&engine, "broken", "").await;
    assert!(!o.up, "{o:?}");
    assert_eq!(o.reason, Some(FailureReason::Unhealthy), "{o:?}");
    assert!(message(&o).starts_with("container broken is "), "{o:?}");

    // A health check that passes: `starting` until it first runs, then `healthy`.
    podman.run("db", &health("true"), &sleep);
    let o = run(&engine, "db", "").await;
    assert!(o.up, "{o:?}");
    assert_eq!(message(&o), "running, health check starting");
    assert_eq!(o.metadata["health"], "starting");
    let o = run(&engine, "db", REQUIRE_HEALTHY).await;
    assert_down(
        &o,
        "container db is running but its health check is still starting, and requireHealthy is true",
    );
    podman.ok(&["healthcheck", "run", "db"]);
    for extra in ["", REQUIRE_HEALTHY] {
        let o = run(&engine, "db", extra).await;
        assert!(o.up, "{o:?}");
        assert_eq!(message(&o), "running, healthy");
        assert_eq!(o.metadata["health"], "healthy");
    }

    // A health check that fails once, with one retry allowed: unhealthy.
    podman.run("sick", &health("echo no answer; exit 2"), &sleep);
    let failed = podman.output(&["healthcheck", "run", "sick"]);
    assert!(!failed.status.success(), "{failed:?}");
    for extra in ["", REQUIRE_HEALTHY] {
        let o = run(&engine, "sick", extra).await;
        assert!(!o.up, "{o:?}");
        assert_eq!(o.reason, Some(FailureReason::Unhealthy), "{o:?}");
        // Podman (4.3) records exit code 1 for any failing check, not the command's own.
        let msg = message(&o);
        assert!(
            msg.starts_with(
                "container sick is unhealthy after 1 failed health check; last check exited "
            ),
            "{msg}"
        );
        assert!(msg.ends_with(": no answer"), "{msg}");
        assert_eq!(o.metadata["health"], "unhealthy");
    }

    // No such container: podman's 404 reads "no container with name or ID ... found".
    let o = run(&engine, "ghost", "").await;
    assert_down(&o, &format!("no such container \"ghost\" on {engine}"));

    // The same engine over TCP, as tcp:// and as http://.
    let tcp = podman.serve_tcp();
    let addr = tcp.strip_prefix("tcp://").unwrap();
    for engine in [tcp.clone(), format!("http://{addr}")] {
        let o = run(&engine, "db", "").await;
        assert!(o.up, "{engine}: {o:?}");
        assert_eq!(message(&o), "running, healthy");
        let o = run(&engine, "job", "").await;
        assert_down(&o, "container job is exited (exit code 3)");
        let o = run(&engine, "ghost", "").await;
        assert_down(&o, &format!("no such container \"ghost\" on {engine}"));
    }
}
