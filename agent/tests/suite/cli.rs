//! The `kubekuma` binary as a user runs it: `validate`, `check`, `crds` and `notify test`, with their
//! output and exit codes. `check` runs against a real hyper server on 127.0.0.1.

use std::convert::Infallible;
use std::process::Command;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn kubekuma() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubekuma"))
}

#[test]
fn validate_prints_findings_and_fails_on_errors() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/invalid/monitors.yaml"
    );
    let out = kubekuma().args(["validate", fixture]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("doc 3 Monitor production/api-health: spec.schedule.intervalSeconds: must be at least 10 (KubeKumaSettings spec.scheduler.minIntervalSeconds), got 5"), "{stdout}");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");
    let ok = kubekuma()
        .args(["validate", "--strict", examples])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

#[test]
fn crds_prints_every_kind() {
    let out = kubekuma().arg("crds").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("kind: CustomResourceDefinition").count(), 10);
    assert_eq!(text, kubekuma_crds::crdgen::all_crds_yaml());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_runs_each_monitor_once_and_prints_a_table() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                    if req.uri().path() == "/broken" {
                        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let m = |name: &str, target: String| {
        format!(
            "apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: {name}, namespace: ops}}\nspec:\n  type: {target}\n---\n"
        )
    };
    let text = [
        m(
            "web",
            format!("http\n  target:\n    http: {{url: \"http://127.0.0.1:{port}/\"}}"),
        ),
        m(
            "broken",
            format!("http\n  target:\n    http: {{url: \"http://127.0.0.1:{port}/broken\"}}"),
        ),
        m(
            "db",
            format!("tcp\n  target:\n    tcp: {{host: 127.0.0.1, port: {closed}}}"),
        ),
    ]
    .concat();
    std::fs::write(dir.path().join("m.yaml"), text).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        kubekuma()
            .args(["check", dir.path().to_str().unwrap()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("MONITOR"), "{stdout}");
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .copied()
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("ops/web ").contains(" up "), "{stdout}");
    assert!(
        row("ops/broken").contains(" down ") && row("ops/broken").contains("status: HTTP 500"),
        "{stdout}"
    );
    assert!(
        row("ops/db").contains(" down ") && row("ops/db").contains("connect"),
        "{stdout}"
    );
}

/// `notify test` sends one message through a provider of the manifests — here a webhook
/// whose URL is in a Secret — to a real hyper server, and reports the outcome; an unknown
/// provider and a failing endpoint give clear errors without the secret URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_sends_through_a_provider() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                        if path.contains("broken") {
                            *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
                        }
                        let _ = tx.send((path, body.to_vec()));
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let manifests = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: hooks, namespace: ops}}\nstringData:\n  good: http://127.0.0.1:{port}/hook/s3cr3t-path\n  bad: http://127.0.0.1:{port}/broken/s3cr3t-path\n---\n\
         apiVersion: monitoring.kubekuma.io/v1\nkind: NotificationProvider\nmetadata: {{name: hook, namespace: ops}}\nspec:\n  type: webhook\n  config:\n    webhook:\n      urlSecretRef: {{name: hooks, key: good}}\n---\n\
         apiVersion: monitoring.kubekuma.io/v1\nkind: NotificationProvider\nmetadata: {{name: broken, namespace: ops}}\nspec:\n  type: webhook\n  config:\n    webhook:\n      urlSecretRef: {{name: hooks, key: bad}}\n"
    );
    std::fs::write(dir.path().join("providers.yaml"), manifests).unwrap();
    let config = dir.path().to_str().unwrap().to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || kubekuma().args(args).output().unwrap())
    };

    let out = run(vec![
        "notify".into(),
        "test".into(),
        "ops/hook".into(),
        "--config".into(),
        config.clone(),
        "--message".into(),
        "hello from the test".into(),
    ])
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sent through ops/hook (webhook)"),
        "{stdout}"
    );
    let (path, body) = rx.recv().await.unwrap();
    assert_eq!(path, "/hook/s3cr3t-path");
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["message"], "hello from the test");
    assert_eq!(event["kind"], "test");

    let out = run(vec![
        "notify".into(),
        "test".into(),
        "broken".into(),
        "--config".into(),
        config.clone(),
    ])
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ops/broken (webhook) failed"), "{stderr}");
    assert!(
        !stderr.contains("s3cr3t"),
        "the secret URL leaked: {stderr}"
    );

    let out = run(vec![
        "notify".into(),
        "test".into(),
        "nope".into(),
        "--config".into(),
        config,
    ])
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no valid NotificationProvider nope") && stderr.contains("ops/hook"),
        "{stderr}"
    );
}

/// `kubekuma up` on the demo: the demo admin's password is written once to the data
/// folder (never printed), and it logs in to the admin API served beside the site.
#[tokio::test]
async fn up_creates_a_demo_admin_that_can_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path())
        .env_remove("SESSION_SECRET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..600 {
        if client
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "kubekuma up did not start");
    let password = std::fs::read_to_string(dir.path().join("demo-admin-password")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("demo-admin-password"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let login = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let body: serde_json::Value = login.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let monitors: serde_json::Value = client
        .get(format!("{base}/api/v1/monitors"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(monitors["total"].as_u64().unwrap() >= 3, "{monitors}");
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let printed =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("demo-admin-password"), "{printed}");
    assert!(
        !printed.contains(password.trim()),
        "the password was printed"
    );
}
