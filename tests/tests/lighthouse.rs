//! Lighthouse (from npm, installed by `tests/run`) audits a status page of the default
//! theme in the system's Chromium: the page is built by the builder from the results of
//! real checks and served by the agent's listener, as `kubekuma up` serves it, and every
//! run must score full marks in accessibility, best practices and SEO, and in
//! performance (see [`PERFORMANCE_FLOOR`]): mobile and desktop, light and dark.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kubekuma_agent::runtime::{self, AgentOptions};
use kubekuma_builder::RenderOptions;
use serde_json::Value;

use common::{chromium, free_port, wait_for};

/// The performance score every run must reach. Lighthouse simulates a throttled device
/// from the trace (`--throttling-method=simulate`, its default), so the score hardly
/// depends on the machine: it was 1.0 in each of 18 runs while this test was written,
/// with the two cores busy (load average 10), but under that load the mobile speed index
/// went from 0.9 s to 2.1 s (its audit from 1 to 0.99). So performance is held to 0.9,
/// which the page meets with a wide margin, and the three deterministic categories to
/// exactly 1.
const PERFORMANCE_FLOOR: f64 = 0.9;

/// Longest one Lighthouse run may take before the test fails (a hung browser).
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// An HTTP server on 127.0.0.1 answering 200 to everything: the target of the `up`
/// monitor.
async fn target() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

/// The `lighthouse` command: on `PATH`, else where `tests/run` installs it.
fn lighthouse() -> Option<PathBuf> {
    let peers = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|c| c.join("kubekuma-test-peers/node_modules/.bin/lighthouse"));
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("lighthouse"))
            .find(|b| b.is_file())
    });
    on_path.or(peers.filter(|p| p.is_file()))
}

/// One Lighthouse run.
struct Run {
    /// What is audited, for messages and the report's file name.
    name: &'static str,
    /// The page, relative to the site root.
    path: &'static str,
    /// Extra Lighthouse options (the preset).
    options: &'static [&'static str],
    /// Extra Chromium flags (the colour scheme).
    chrome: &'static [&'static str],
}

/// Runs Lighthouse on `url`; its report as JSON, also kept in the test's temporary
/// folder (`lighthouse-<name>.json`) for a look after a failure.
async fn audit(bin: &Path, chrome: &str, run: &Run, url: &str) -> Value {
    let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "lighthouse-{}.json",
        run.name.replace([' ', ','], "-")
    ));
    let _ = std::fs::remove_file(&report);
    let profile = tempfile::tempdir().unwrap();
    let mut flags = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    flags.extend(run.chrome);
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg(url)
        .arg("--output=json")
        .arg(format!("--output-path={}", report.display()))
        .arg("--quiet")
        .arg("--throttling-method=simulate")
        .arg(format!("--chrome-flags={}", flags.join(" ")))
        .args(run.options)
        .env("CHROME_PATH", chrome)
        // chrome-launcher makes its profile under TMPDIR; one per run, removed after.
        .env("TMPDIR", profile.path())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("lighthouse ({}) ran longer than {RUN_LIMIT:?}", run.name))
        .expect("lighthouse runs");
    assert!(
        out.status.success(),
        "lighthouse ({}) failed: {}\n{}",
        run.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("lighthouse wrote its report");
    serde_json::from_str(&text).unwrap()
}

/// Each category's score, and the audits that cost points: id, title, score,
/// explanation and details, as Lighthouse gives them.
fn scores(report: &Value) -> (Vec<(String, f64)>, Vec<String>) {
    let mut scores = Vec::new();
    let mut failing = Vec::new();
    for (id, cat) in report["categories"].as_object().unwrap() {
        scores.push((id.clone(), cat["score"].as_f64().unwrap_or(0.0)));
        for r in cat["auditRefs"].as_array().unwrap() {
            let audit = &report["audits"][r["id"].as_str().unwrap()];
            let weighted = r["weight"].as_f64().unwrap_or(0.0) > 0.0;
            if weighted && audit["score"].as_f64().is_some_and(|s| s < 1.0) {
                let details = serde_json::to_string_pretty(&audit["details"]).unwrap();
                failing.push(format!(
                    "{id}: {} ({}) score {}: {}\n{}",
                    audit["id"].as_str().unwrap_or_default(),
                    audit["title"].as_str().unwrap_or_default(),
                    audit["score"],
                    audit["explanation"].as_str().unwrap_or_default(),
                    &details[..details.len().min(4000)]
                ));
            }
        }
    }
    (scores, failing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_theme_scores_full_marks_in_lighthouse() {
    if std::env::var_os("KUBEKUMA_SKIP_BROWSER").is_some() {
        eprintln!("KUBEKUMA_SKIP_BROWSER is set: Lighthouse is not run");
        return;
    }
    let chrome = chromium().expect(
        "chromium is needed for this test (tests/run installs Debian's chromium; \
         set KUBEKUMA_SKIP_BROWSER=1 to skip)",
    );
    let bin = lighthouse().expect(
        "lighthouse is needed for this test (tests/run installs it from npm into \
         ~/.cache/kubekuma-test-peers; set KUBEKUMA_SKIP_BROWSER=1 to skip)",
    );

    let port = target().await;
    let closed = free_port();
    let listen_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    // Two pages of the default theme: one with the default accent, one with the demo's
    // lighter one (which needs the builder's readable link colour); both offer the dark
    // variant. Badges on, one monitor up and one down with its incident, so every part
    // of the page is audited.
    let mut yaml = format!(
        r#"apiVersion: monitoring.kubekuma.io/v1
kind: KubeKumaSettings
metadata: {{name: kubekuma}}
spec:
  scheduler: {{minIntervalSeconds: 1, jitterPercent: 0}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: api, namespace: site}}
spec:
  type: http
  description: The public API
  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}
  target:
    http: {{url: "http://127.0.0.1:{port}/"}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: db, namespace: site}}
spec:
  type: tcp
  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}
  target:
    tcp: {{host: 127.0.0.1, port: {closed}}}
"#
    );
    for (slug, accent) in [("public", ""), ("branded", "#3B82F6")] {
        let theme = if accent.is_empty() {
            String::new()
        } else {
            format!(
                "\n  content:\n    branding:\n      theme: {{primaryColor: \"{accent}\", darkMode: true}}"
            )
        };
        yaml.push_str(&format!(
            r#"---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {{name: {slug}, namespace: site}}
spec:
  slug: {slug}
  title: Example Status
  published: true
  badges: {{enabled: true, scope: all}}{theme}
  groups:
    - name: Services
      monitors:
        - ref: {{name: api}}
          displayName: Public API
        - ref: {{name: db}}
          displayName: Database
"#
        ));
    }
    std::fs::write(manifests.join("all.yaml"), yaml).unwrap();
    let data = dir.path().join("data");
    let site = data.join("site");
    let opts = AgentOptions {
        config: vec![manifests],
        flush_interval: Duration::from_millis(500),
        site_dir: Some(site.clone()),
        ..AgentOptions::new(
            "lighthouse",
            data.clone(),
            format!("127.0.0.1:{listen_port}"),
        )
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(runtime::run(opts, stop_rx));

    // The builder as `kubekuma up` runs it, with the site's public URL so that it
    // publishes a sitemap and robots.txt names it.
    let base = format!("http://127.0.0.1:{listen_port}/");
    let objects = data.join("objects");
    let (builder_stop_tx, builder) = common::spawn_builder(
        objects,
        site.clone(),
        RenderOptions {
            base_url: base.clone(),
            ..Default::default()
        },
    );

    for slug in ["public", "branded"] {
        let status = site.join(slug).join("status.json");
        wait_for("api up and db down on the built pages", || {
            let status = status.clone();
            async move {
                let Ok(text) = std::fs::read_to_string(&status) else {
                    return false;
                };
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                let monitors = &v["groups"][0]["monitors"];
                monitors[0]["status"] == "up" && monitors[1]["status"] == "down"
            }
        })
        .await;
    }
    // The pages stay as audited: no rebuild in the middle of a run.
    let _ = builder_stop_tx.send(true);
    builder.join().unwrap();

    // The root files browsers and crawlers ask for, from the agent's listener.
    let http = reqwest::Client::new();
    let robots = http.get(format!("{base}robots.txt")).send().await.unwrap();
    assert_eq!(robots.status(), 200);
    assert_eq!(
        robots.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        robots.text().await.unwrap(),
        format!("User-agent: *\nAllow: /\n\nSitemap: {base}sitemap.xml\n")
    );
    let icon = http.get(format!("{base}favicon.ico")).send().await.unwrap();
    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["content-type"], "image/x-icon");
    assert!(icon.bytes().await.unwrap().starts_with(&[0, 0, 1, 0]));
    let sitemap = http.get(format!("{base}sitemap.xml")).send().await.unwrap();
    assert_eq!(sitemap.status(), 200);
    let sitemap = sitemap.text().await.unwrap();
    for page in ["", "public/", "branded/"] {
        assert!(
            sitemap.contains(&format!("<loc>{base}{page}</loc>")),
            "{sitemap}"
        );
    }

    // Chromium's colour scheme for the dark runs: the page follows
    // `prefers-color-scheme`, which Blink's preferredColorScheme setting (0 = dark)
    // decides.
    const DARK: &[&str] = &["--blink-settings=preferredColorScheme=0"];
    let runs = [
        Run {
            name: "mobile",
            path: "public/",
            options: &[],
            chrome: &[],
        },
        Run {
            name: "desktop",
            path: "public/",
            options: &["--preset=desktop"],
            chrome: &[],
        },
        Run {
            name: "mobile, dark",
            path: "public/",
            options: &[],
            chrome: DARK,
        },
        Run {
            name: "mobile, accent",
            path: "branded/",
            options: &[],
            chrome: &[],
        },
        Run {
            name: "mobile, accent, dark",
            path: "branded/",
            options: &[],
            chrome: DARK,
        },
        Run {
            name: "mobile, index",
            path: "",
            options: &[],
            chrome: &[],
        },
    ];
    let mut problems = Vec::new();
    for run in &runs {
        let report = audit(&bin, &chrome, run, &format!("{base}{}", run.path)).await;
        if let Some(e) = report["runtimeError"]["message"].as_str() {
            problems.push(format!(
                "{}: Lighthouse could not audit the page: {e}",
                run.name
            ));
            continue;
        }
        let (scores, failing) = scores(&report);
        eprintln!("lighthouse {}: {scores:?}", run.name);
        assert_eq!(scores.len(), 4, "{}: {scores:?}", run.name);
        for (category, score) in &scores {
            let floor = if category == "performance" {
                PERFORMANCE_FLOOR
            } else {
                1.0
            };
            if *score < floor {
                problems.push(format!(
                    "{}: {category} scored {score} (at least {floor} wanted); the audits that cost points:\n{}",
                    run.name,
                    failing
                        .iter()
                        .filter(|f| f.starts_with(&format!("{category}:")))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));

    let _ = stop_tx.send(true);
    agent.await.unwrap().unwrap();
}
