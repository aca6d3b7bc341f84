//! Issue 19 item 6 with the real `kubekuma` binary on PostgreSQL: the server lost while
//! the agent runs (`/ready` 503 naming the database, never its password; the process
//! stays up; once the server is back, ready again with every heartbeat and the state
//! changes of the outage recorded), and the faults at start (server unreachable, a
//! schema newer than the binary): one clear line and a non-zero exit.

use std::convert::Infallible;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use kubekuma_agent::store::Store;
use kubekuma_agent::store::pg::config::PasswordSource;
use kubekuma_agent::store::pg::migrations::MIGRATIONS;
use kubekuma_crds::MonitorState;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpListener;

use crate::common::postgres::{self, PASSWORD, PrivateServer};

/// An HTTP target (hyper) that answers 200 while `up` holds, else 500.
async fn target(up: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let up = up.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let status = if up.load(Ordering::SeqCst) { 200 } else { 500 };
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `/ready`'s status and body (`None`: no answer).
async fn ready(client: &reqwest::Client, port: u16) -> Option<(u16, String)> {
    let r = client
        .get(format!("http://127.0.0.1:{port}/ready"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

/// Poll `/ready` (100 ms apart, at most `tries`) until `want` holds for its answer.
async fn ready_until(
    client: &reqwest::Client,
    port: u16,
    tries: u32,
    want: impl Fn(u16) -> bool,
) -> Option<(u16, String)> {
    let mut last = None;
    for _ in 0..tries {
        last = ready(client, port).await;
        if let Some((status, _)) = &last
            && want(*status)
        {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/ready never answered as wanted; last answer: {last:?}");
}

#[tokio::test]
async fn the_agent_keeps_results_while_postgres_is_down() {
    if !postgres::enabled() {
        return;
    }
    let server = Arc::new(
        tokio::task::spawn_blocking(PrivateServer::start)
            .await
            .unwrap(),
    );
    let url = server.url("127.0.0.1", Some(PASSWORD), "sslmode=require");
    let up = Arc::new(AtomicBool::new(true));
    let target_port = target(up.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("all.yaml"),
        format!(
            "apiVersion: monitoring.kubekuma.io/v1
kind: KubeKumaSettings
metadata: {{name: kubekuma}}
spec:
  scheduler: {{minIntervalSeconds: 1, jitterPercent: 0}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: web, namespace: prod}}
spec:
  type: http
  schedule: {{intervalSeconds: 1, timeoutSeconds: 1, retries: 0}}
  target: {{http: {{url: 'http://127.0.0.1:{target_port}/'}}}}
"
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .args([
            "agent",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&manifests)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("DATABASE_URL", &url)
        .env("SESSION_SECRET", "0123456789abcdef0123456789abcdef-test")
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Keep the log (and never let a full pipe stall the agent).
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log2.lock().unwrap().push(line);
        }
    });
    let client = reqwest::Client::new();
    let reader = Store::open_postgres(&url, &PasswordSource::default())
        .await
        .unwrap();
    let since = Utc::now() - chrono::Duration::minutes(1);
    ready_until(&client, port, 600, |s| s == 200).await;
    let mut seen = 0;
    for _ in 0..300 {
        seen = reader
            .heartbeats("prod", "web", since, 100)
            .await
            .unwrap()
            .len();
        if seen >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen >= 2, "no heartbeats before the outage");

    // The outage: the server stops; meanwhile the target fails, comes back, fails again.
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
    let outage_start = Utc::now();
    up.store(false, Ordering::SeqCst);
    let (status, body) = ready_until(&client, port, 300, |s| s == 503).await.unwrap();
    assert_eq!(status, 503);
    assert!(
        body.contains("database") && body.contains(&format!("127.0.0.1:{}", server.port)),
        "the reason names the database: {body}"
    );
    assert!(!body.contains(PASSWORD), "the password leaked: {body}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Still the same process, still not ready: no exit, no restart.
    assert!(child.try_wait().unwrap().is_none(), "the agent exited");
    let (status, _) = ready(&client, port).await.expect("the agent answers");
    assert_eq!(status, 503, "ready while the database is down");
    let outage_end = Utc::now();

    let s = server.clone();
    tokio::task::spawn_blocking(move || s.resume())
        .await
        .unwrap();
    // Ready again once the kept heartbeats are in (the writer retries with backoff).
    ready_until(&client, port, 900, |s| s == 200).await;
    assert!(child.try_wait().unwrap().is_none(), "the agent exited");
    // The next result writes what was held (two incidents, the state).
    let mut incidents = Vec::new();
    let mut states = Vec::new();
    for _ in 0..300 {
        incidents = reader.incidents_between(since, Utc::now()).await.unwrap();
        states = reader.load_monitor_states().await.unwrap();
        if incidents.len() >= 2
            && states
                .iter()
                .any(|s| s.name == "web" && s.open_incident_id.is_some())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
    let log = log.lock().unwrap().join("\n");
    assert!(!log.contains(PASSWORD), "the password is in the log");

    // Every check of the outage has its heartbeat: no gap of more than a few intervals
    // (the monitor checks every second) from before the outage to after it.
    let mut beats = reader
        .heartbeats("prod", "web", since, 10_000)
        .await
        .unwrap();
    beats.sort_by_key(|h| h.checked_at);
    let during: Vec<_> = beats
        .iter()
        .filter(|h| h.checked_at > outage_start && h.checked_at < outage_end)
        .collect();
    let outage_secs = (outage_end - outage_start).num_seconds();
    assert!(
        during.len() as i64 >= outage_secs - 3,
        "{} heartbeats stored for an outage of {outage_secs} s",
        during.len()
    );
    let gaps: Vec<_> = beats
        .windows(2)
        .map(|w| (w[1].checked_at - w[0].checked_at, w[0].checked_at))
        .filter(|(gap, at)| {
            *gap > chrono::Duration::milliseconds(3500)
                && *at > outage_start - chrono::Duration::seconds(2)
        })
        .collect();
    assert!(
        gaps.is_empty(),
        "heartbeats lost around the outage: {gaps:?}"
    );
    assert!(
        during.iter().any(|h| h.state == MonitorState::Down)
            && during.iter().any(|h| h.state == MonitorState::Up),
        "the outage's results are stored as they were"
    );

    // The state changes of the outage: one incident opened and closed during it, one
    // opened during it and still open, and the saved state is down (flapping) with that
    // incident.
    let in_outage = |t: DateTime<Utc>| t > outage_start && t < outage_end;
    let mut web: Vec<_> = incidents.iter().filter(|i| i.name == "web").collect();
    web.sort_by_key(|i| i.started_at);
    assert_eq!(web.len(), 2, "{incidents:?}\n{log}");
    assert!(in_outage(web[0].started_at), "{web:?}");
    assert!(web[0].ended_at.is_some_and(in_outage), "{web:?}");
    assert!(in_outage(web[1].started_at), "{web:?}");
    assert_eq!(web[1].ended_at, None, "{web:?}");
    let state = states
        .iter()
        .find(|s| s.namespace == "prod" && s.name == "web")
        .expect("the monitor's state row");
    // Down, shown as flapping after three changes within the default window.
    assert!(
        matches!(state.state, MonitorState::Down | MonitorState::Flapping),
        "{state:?}"
    );
    assert_eq!(state.open_incident_id, Some(web[1].id), "{state:?}");
    reader.close().await.unwrap();
}

/// Run `kubekuma agent` with `DATABASE_URL` until it exits (at most a minute); its
/// exit code and stderr.
async fn agent_exits(url: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .args(["agent", "--listen", "127.0.0.1:0", "--config"])
        .arg(&manifests)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("DATABASE_URL", url)
        .env("SESSION_SECRET", "0123456789abcdef0123456789abcdef-test")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Bounded (not timed): the connect timeout is 10 s; a start that retries forever
    // would never end.
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the agent neither started nor exited: does it retry forever?")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one line of stderr naming `needle`, checked to be a sentence, not a Debug dump.
fn one_line<'a>(stderr: &'a str, needle: &str) -> &'a str {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "one line names {needle}:\n{stderr}");
    let line = lines[0];
    for dump in ["{ ", "Error {", "kind:", "Some(", "\\n"] {
        assert!(!line.contains(dump), "a Debug dump: {line}");
    }
    line
}

#[tokio::test]
async fn an_unreachable_database_at_start_is_one_clear_error_and_exit() {
    let port = free_port();
    let url = format!("postgres://kk:{PASSWORD}@127.0.0.1:{port}/kkdb?sslmode=disable");
    let (code, stderr) = agent_exits(&url).await;
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    let line = one_line(&stderr, &format!("127.0.0.1:{port}/kkdb"));
    assert!(line.to_lowercase().contains("refused"), "the cause: {line}");
    assert!(!stderr.contains(PASSWORD), "the password leaked: {stderr}");
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_refuses_to_start() {
    if !postgres::enabled() {
        return;
    }
    let url = postgres::fresh_database().await;
    let store = Store::open_postgres(&url, &PasswordSource::default())
        .await
        .unwrap();
    store.close().await.unwrap();
    let known = MIGRATIONS.len() as i64;
    let newer = known + 5;
    let client = postgres::connect(&url).await.unwrap();
    client
        .execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)",
            &[&newer],
        )
        .await
        .unwrap();
    let (code, stderr) = agent_exits(&url).await;
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    let line = one_line(&stderr, "newer");
    assert!(
        line.contains(&format!("schema version {newer}")) && line.contains(&known.to_string()),
        "says which versions: {line}"
    );
    // Nothing was changed: the newer version is still the last.
    let last: i64 = client
        .query_one("SELECT MAX(version)::BIGINT FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, newer);
}
