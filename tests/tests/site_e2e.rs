//! Agent → object store → builder → site, end to end on one machine, the way
//! `kubekuma up` runs them: results of real checks against a local hyper server reach the
//! status page, the page is served on the agent's port, targets and secrets never reach
//! the site, and headless Chromium (Debian's `chromium`, installed by `tests/run`) opens
//! the page without console errors and with its bars, banner and scripts working.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kubekuma_agent::runtime::{self, AgentOptions};
use kubekuma_builder::RenderOptions;

use common::{chromium, free_port, wait_for};

const SECRET: &str = "s3cr3t-t0ken-value";

async fn target() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"{\"ok\":true}",
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn chromium_run(bin: &str, profile: &Path, extra: &[&str], url: &str) -> std::process::Output {
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    cmd.args(extra).arg(url);
    cmd.output().expect("chromium runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_is_built_from_real_results_served_and_renders_in_chromium() {
    let port = target().await;
    let closed = free_port();
    let listen_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("all.yaml"),
        format!(
            r#"apiVersion: monitoring.kubekuma.io/v1
kind: KubeKumaSettings
metadata: {{name: kubekuma}}
spec:
  scheduler: {{minIntervalSeconds: 1, jitterPercent: 0}}
---
apiVersion: v1
kind: Secret
metadata: {{name: api-token, namespace: site}}
stringData: {{token: {SECRET}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: api, namespace: site}}
spec:
  type: http
  description: "<script>alert(1)</script>"
  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}
  target:
    http:
      url: "http://127.0.0.1:{port}/very-secret-path?token=${{SECRET:api-token:token}}"
      headers: {{Authorization: "Bearer ${{SECRET:api-token:token}}"}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: db, namespace: site}}
spec:
  type: tcp
  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}
  target:
    tcp: {{host: 127.0.0.1, port: {closed}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {{name: public, namespace: site}}
spec:
  slug: public
  title: Site E2E
  published: true
  badges: {{enabled: true}}
  groups:
    - name: Services
      monitors:
        - ref: {{name: api}}
        - ref: {{name: db}}
"#
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let site = data.join("site");
    let opts = AgentOptions {
        config: vec![manifests],
        flush_interval: Duration::from_millis(500),
        site_dir: Some(site.clone()),
        ..AgentOptions::new("site", data.clone(), format!("127.0.0.1:{listen_port}"))
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(runtime::run(opts, stop_rx.clone()));

    // The builder, as `kubekuma up` runs it, with a tiny staleness threshold so the
    // browser shows the stale-data notice (proving the page's script ran).
    let objects = data.join("objects");
    let (builder_stop_tx, builder) = common::spawn_builder(
        objects,
        site.clone(),
        RenderOptions {
            stale_after_seconds: 1,
            ..Default::default()
        },
    );

    let status = site.join("public/status.json");
    wait_for("api up and db down on the built site", || {
        let status = status.clone();
        async move {
            let Ok(text) = std::fs::read_to_string(&status) else {
                return false;
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let monitors = &v["groups"][0]["monitors"];
            monitors[0]["status"] == "up" && monitors[1]["status"] == "down"
        }
    })
    .await;

    // Nothing of the targets or the Secret reaches the site.
    let mut files = Vec::new();
    all_files(&site, &mut files);
    assert!(files.len() > 20, "{files:?}");
    for f in &files {
        let body = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        for leak in [
            SECRET,
            "very-secret-path",
            &format!("127.0.0.1:{port}"),
            &format!(":{closed}"),
        ] {
            assert!(!body.contains(leak), "{} contains {leak}", f.display());
        }
    }

    // Served on the agent's port next to its own endpoints.
    let base = format!("http://127.0.0.1:{listen_port}");
    let http = reqwest::Client::new();
    let page = http.get(format!("{base}/public/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"));
    let badge = http
        .get(format!("{base}/public/badges/site/db/status.svg"))
        .send()
        .await
        .unwrap();
    assert_eq!(badge.headers()["content-type"], "image/svg+xml");
    assert!(badge.text().await.unwrap().contains(">down<"));
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let hidden = http
        .get(format!("{base}/.kubekuma/manifest.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);

    // Headless Chromium. The builder stops first and the data is left to age past the
    // 1 s threshold, so the page's script must reveal the stale-data notice.
    let _ = builder_stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if std::env::var_os("KUBEKUMA_SKIP_BROWSER").is_none() {
        let bin = chromium().expect(
            "chromium is needed for this test (tests/run installs Debian's chromium; \
             set KUBEKUMA_SKIP_BROWSER=1 to skip)",
        );
        let profile = tempfile::tempdir().unwrap();
        let url = format!("{base}/public/");
        let out = chromium_run(&bin, profile.path(), &["--dump-dom"], &url);
        let dom = String::from_utf8_lossy(&out.stdout);
        let log = String::from_utf8_lossy(&out.stderr);
        let console_errors: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("CONSOLE")
                    && (l.contains("Uncaught") || l.contains("Error") || l.contains("Refused"))
            })
            .collect();
        assert!(
            console_errors.is_empty(),
            "console errors: {console_errors:#?}"
        );
        assert!(dom.contains("class=\"banner state-"), "no banner in {dom}");
        assert_eq!(dom.matches("class=\"bar lvl-").count(), 2 * 90, "bars");
        assert!(
            dom.contains("id=\"stale\" class=\"notice stale\" role=\"status\">"),
            "the script did not reveal the stale-data notice"
        );
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
        let _ = std::fs::remove_file(&shot);
        let profile = tempfile::tempdir().unwrap();
        chromium_run(
            &bin,
            profile.path(),
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1024,1400",
            ],
            &url,
        );
        let png = std::fs::read(&shot).expect("screenshot written");
        assert!(png.starts_with(b"\x89PNG"));
        eprintln!("screenshot: {}", shot.display());
    }

    let _ = stop_tx.send(true);
    agent.await.unwrap().unwrap();
    builder.join().unwrap();
}
