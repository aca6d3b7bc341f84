//! The `kubekuma` binary as a user runs it: `validate`, `check`, `crds` and `notify test`, with their
//! output and exit codes. `check` runs against real peers on 127.0.0.1: hyper servers, the
//! hickory-server zone, a tungstenite server, a Steam responder and the fake Kubernetes API
//! server (reached through a kubeconfig), the ones the per-type tests start.

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

/// A Monitor manifest in namespace `ops`: `spec` is the YAML under `spec:`, indented by 2.
fn monitor(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: {name}, namespace: ops}}\nspec:\n{spec}---\n"
    )
}

/// A kubeconfig whose current context is the fake API server at `url`, without credentials.
fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{url}\"}}\n\
         contexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: default}}\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
    )
}

/// `kubekuma check` on a folder with one monitor of every type but docker (tested on its
/// own against a fake engine) and http/tcp (above): each one against the peer its
/// per-type test uses, the kubernetes one through a kubeconfig naming the fake API
/// server. Every row is up and shows the checker's details; the push monitor is skipped,
/// not down, and the exit code is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_runs_every_monitor_type_and_skips_push() {
    let http = crate::checks_keyword_json::server().await;
    let dns = crate::checks_dns::zone_server().await;
    let tcp = crate::checks_ping::listening_port().await;
    let ws = crate::checks_websocket::server(None).await;
    let steam = crate::checks_steam::responder("ok").await;
    let kube = crate::common::fake_kube::FakeKube::start().await;
    kube.put_object(crate::checks_kubernetes::deployment("api", 3, 3, 1, 1));

    let dir = tempfile::tempdir().unwrap();
    let text = [
        monitor(
            "shop",
            &format!(
                "  type: keyword\n  target:\n    keyword: {{url: \"http://127.0.0.1:{http}/html\", keyword: Welcome}}\n"
            ),
        ),
        monitor(
            "status",
            &format!(
                "  type: jsonQuery\n  target:\n    jsonQuery: {{url: \"http://127.0.0.1:{http}/json\", query: $.status, expected: degraded}}\n"
            ),
        ),
        monitor(
            "www",
            &format!(
                "  type: dns\n  target:\n    dns: {{domain: www.example.test, recordType: A, server: \"{dns}\"}}\n"
            ),
        ),
        monitor(
            "loopback",
            &format!(
                "  type: ping\n  target:\n    ping: {{host: 127.0.0.1, count: 2, tcpFallback: {tcp}}}\n"
            ),
        ),
        monitor(
            "socket",
            &format!(
                "  type: websocket\n  target:\n    websocket: {{url: \"ws://127.0.0.1:{ws}/socket\", message: ping, expectedResponse: 'echo: ping'}}\n"
            ),
        ),
        monitor(
            "game",
            &format!("  type: steam\n  target:\n    steam: {{host: 127.0.0.1, port: {steam}}}\n"),
        ),
        monitor(
            "api",
            "  type: kubernetes\n  target:\n    kubernetes: {apiVersion: apps/v1, kind: Deployment, namespace: prod, name: api}\n",
        ),
        monitor(
            "backup",
            "  type: push\n  target:\n    push: {token: nightly-backup-3f9a7c2e, intervalSeconds: 86400}\n",
        ),
    ]
    .concat();
    std::fs::write(dir.path().join("monitors.yaml"), text).unwrap();
    let kubeconfig_path = dir.path().join("kubeconfig.yaml");
    std::fs::write(&kubeconfig_path, kubeconfig(&kube.url())).unwrap();
    let manifests = dir.path().join("monitors.yaml");
    let out = tokio::task::spawn_blocking(move || {
        kubekuma()
            .arg("check")
            .arg(&manifests)
            .env("KUBECONFIG", &kubeconfig_path)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let shown = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("MONITOR") && lines[0].ends_with("MESSAGE"),
        "{shown}"
    );
    assert_eq!(lines.len(), 9, "a header and 8 rows: {shown}");
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("ops/{name} ")))
            .copied()
            .unwrap_or_else(|| panic!("no row for ops/{name}: {shown}"))
            .to_string()
    };
    let up = |name: &str, ty: &str, parts: &[&str]| {
        let r = row(name);
        assert!(r.contains(&format!(" {ty} ")), "{r}\n{shown}");
        assert!(r.contains(" up "), "{name} is not up: {r}\n{shown}");
        for p in parts {
            assert!(r.contains(p), "{name}: {r:?} lacks {p:?}\n{shown}");
        }
    };
    up("shop", "keyword", &["HTTP 200"]);
    up("status", "jsonQuery", &["HTTP 200"]);
    up("www", "dns", &["A 192.0.2.10, 192.0.2.11"]);
    up("socket", "websocket", &[]);
    // From the checker's message, or else from its metadata (name, map, players).
    up(
        "game",
        "steam",
        &["KubeKuma Test Server", "de_dust2", "7/24 players (2 bots)"],
    );
    up("api", "kubernetes", &["3/3 replicas available"]);
    // The round trip over ICMP where this host allows it, else the TCP fallback.
    let ping = row("loopback");
    up("loopback", "ping", &[]);
    assert!(
        (ping.contains("2/2 replies") && ping.contains("rtt min/avg/max"))
            || (ping.contains("ICMP not permitted here")
                && ping.contains(&format!("TCP connect to port {tcp} instead"))
                && ping.contains("connected to 127.0.0.1")),
        "{ping}\n{shown}"
    );
    let push = row("backup");
    assert!(
        push.contains(" push ") && push.contains(" skipped ") && push.contains(" - "),
        "{push}\n{shown}"
    );
    assert!(
        push.ends_with(
            "push monitors are checked by the running agent (POST/GET /api/v1/push/<token>)"
        ),
        "{push}\n{shown}"
    );
    assert!(
        !push.contains("nightly-backup-3f9a7c2e"),
        "the push token was printed: {push}"
    );
    assert!(
        stderr.contains("7 monitors checked: 7 up, 0 down; 1 monitor skipped"),
        "{shown}"
    );
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        kube.requests()
            .iter()
            .any(|r| r.path == "/apis/apps/v1/namespaces/prod/deployments/api"),
        "the kubernetes check did not reach the fake API server"
    );
}

/// A folder of nothing but push monitors: every row skipped, exit 0; with a down monitor
/// beside it the exit code is 1 and the push monitor is still only skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_skips_push_monitors_without_failing() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let push = monitor("heartbeat", "  type: push\n  target:\n    push: {}\n");
    std::fs::write(dir.path().join("push.yaml"), &push).unwrap();
    let run = |path: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || kubekuma().arg("check").arg(path).output().unwrap())
    };
    let out = run(dir.path().join("push.yaml")).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(
        rows[0].starts_with("ops/heartbeat") && rows[0].contains(" skipped "),
        "{stdout}"
    );

    let down = monitor(
        "db",
        &format!("  type: tcp\n  target:\n    tcp: {{host: 127.0.0.1, port: {closed}}}\n"),
    );
    std::fs::write(dir.path().join("both.yaml"), push + &down).unwrap();
    let out = run(dir.path().join("both.yaml")).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("ops/heartbeat").contains(" skipped "), "{stdout}");
    assert!(row("ops/db").contains(" down "), "{stdout}");
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
            .get(format!("{base}/ready"))
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

/// Item 10 of issue 17: `kubekuma agent` with a database it cannot write exits non-zero
/// at once, naming the database and the cause (instead of running, ready, and losing
/// every batch). As root the file is made immutable (`chattr +i`), else read-only.
#[test]
fn agent_with_a_read_only_database_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("kubekuma.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE t (x INTEGER);").unwrap();
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let locked = if root {
        Command::new("chattr")
            .arg("+i")
            .arg(&db)
            .status()
            .is_ok_and(|s| s.success())
    } else {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).is_ok()
            && std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).is_ok()
    };
    if !locked {
        eprintln!("cannot make {} read-only here: case skipped", db.display());
        return;
    }
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("m.yaml"),
        monitor(
            "api",
            "  type: tcp\n  target:\n    tcp: {host: 127.0.0.1, port: 9}\n",
        ),
    )
    .unwrap();
    let out = kubekuma()
        .args(["agent", "--listen", "127.0.0.1:0", "--config"])
        .arg(&manifests)
        .arg("--data")
        .arg(&data)
        .env_remove("DATABASE_URL")
        .env(
            "SESSION_SECRET",
            "0123456789abcdef0123456789abcdef-cli-tests",
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must stop by itself; one that keeps running is killed and the test fails.
    let mut child = out;
    let mut exited = false;
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    if root {
        let _ = Command::new("chattr").arg("-i").arg(&db).status();
    } else {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755));
        let _ = std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644));
    }
    let printed =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(exited, "the agent kept running: {printed}");
    assert!(!out.status.success(), "{printed}");
    assert!(
        printed.contains(&db.display().to_string()) && printed.contains("not writable"),
        "{printed}"
    );
}

/// Runs `cmd` to its end, failing the test if it is still running after a generous
/// deadline (a runaway render or parse would otherwise hang the suite).
fn output_within(cmd: &mut Command, secs: u64) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Issue 17, item 2: a nested loop and an output-amplifying template used to hang
/// `validate` and grow its memory; now each is refused with a finding naming the field,
/// and the valid resources beside them still count.
#[test]
fn validate_refuses_runaway_templates() {
    let dir = tempfile::tempdir().unwrap();
    let nested = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
    let amplifying =
        "{% for a in range(100000) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}";
    let yaml = format!(
        r#"apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: db, namespace: prod}}
spec: {{type: tcp, target: {{tcp: {{host: db.internal, port: 5432}}}}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {{name: hook, namespace: prod}}
spec:
  type: webhook
  webhook:
    url: https://hooks.example.com/x
    bodyTemplate: '{nested}'
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationPolicy
metadata: {{name: loops, namespace: prod}}
spec:
  routing: {{providers: [{{ref: {{name: hook}}}}]}}
  formatting:
    titleTemplate: '{nested}'
    bodyTemplate: '{amplifying}'
"#
    );
    std::fs::write(dir.path().join("m.yaml"), yaml).unwrap();
    let out = output_within(kubekuma().arg("validate").arg(dir.path()), 120);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for want in [
        "doc 2 NotificationProvider prod/hook: spec.webhook.bodyTemplate: template uses more than 50000 steps",
        "doc 3 NotificationPolicy prod/loops: spec.formatting.titleTemplate: template uses more than 50000 steps",
        "doc 3 NotificationPolicy prod/loops: spec.formatting.bodyTemplate: template renders more than 65536 bytes",
        "1 resource valid (1 monitor)",
    ] {
        assert!(stdout.contains(want), "{want}\n{stdout}");
    }
}

/// Issue 17, item 10: a mistyped or unreadable `--config` is an error at start (the agent
/// used to run, ready, with no monitors), for `agent` and `validate` alike.
#[test]
fn a_config_path_that_cannot_be_read_stops_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("manifets");
    let not_a_dir = dir.path().join("file.yaml");
    std::fs::write(&not_a_dir, "").unwrap();
    let below_a_file = not_a_dir.join("monitors");
    for (path, cause) in [
        (&missing, "No such file or directory"),
        (&below_a_file, "Not a directory"),
    ] {
        let out = output_within(kubekuma().arg("validate").arg(path), 60);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let want = format!("cannot read the manifests at {}: {cause}", path.display());
        assert!(stderr.contains(&want), "{stderr}");

        let out = output_within(
            kubekuma()
                .args(["agent", "--listen", "127.0.0.1:0", "--config"])
                .arg(path)
                .arg("--data")
                .arg(dir.path().join("data"))
                .env("SESSION_SECRET", "0123456789abcdef0123456789abcdef0123"),
            60,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(&want), "{stderr}");
    }
}
