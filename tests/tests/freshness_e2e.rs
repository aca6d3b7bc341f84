//! Freshness end to end, as the cluster runs it: the agent (`kubekuma agent`, cluster
//! defaults: `--flush-interval 60`) and the watching builder (`kubekuma build --watch`,
//! default `--interval`) run as two separate processes sharing an S3 bucket (s3s-fs, a
//! real S3 implementation checking request signatures, served by this test process and
//! configured through the usual `AWS_*` variables, as in a cluster); a TCP target this test controls (a listener on 127.0.0.1) stops answering
//! (its port closes), and the test measures the time until the published `status.json`
//! and the page's HTML say the monitor is down. The monitor checks every 10 s with the
//! default retries. Nothing asserts a duration: the figures are printed (run with
//! `--no-capture`) and kept in BENCHMARKS.md. CI runs one outage;
//! `KUBEKUMA_FRESHNESS_OUTAGES=5` runs more for the benchmark.
//!
//! The two processes are this test binary run again with `KUBEKUMA_E2E_CHILD` set: the
//! `child_process` entry then runs `kubekuma_agent::cli::run` on the given arguments,
//! exactly what the `kubekuma` binary's `main` does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../../agent/tests/suite/common/s3.rs"]
mod s3;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use common::free_port;

/// Arguments for the child process, separated by this character.
const SEP: char = '\u{1f}';
const CHILD_ENV: &str = "KUBEKUMA_E2E_CHILD";

/// Not a test of its own: the entry of the child processes (does nothing without
/// `KUBEKUMA_E2E_CHILD`).
#[test]
fn child_process() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let _ = kubekuma_agent::cli::init_logging();
    let argv = std::iter::once("kubekuma").chain(args.split(SEP));
    let code = kubekuma_agent::cli::run(kubekuma_agent::cli::Cli::parse_from(argv));
    // The child ends with the command (killed by the parent normally).
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

/// A child process running `kubekuma ARGS`; killed when dropped.
struct Proc(Child);

impl Proc {
    fn start(args: &[&str], log: &Path, env: &[(String, String)]) -> Proc {
        let exe = std::env::current_exe().unwrap();
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(exe)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args([
                "child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, args.join(&SEP.to_string()))
            .env(
                "SESSION_SECRET",
                "freshness-e2e-session-secret-0123456789abcdef",
            )
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc(child)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const MANIFESTS: &str = "apiVersion: monitoring.kubekuma.io/v1
kind: KubeKumaSettings
metadata: {name: kubekuma}
spec:
  # Flapping detection off: with it, the third state change within 10 minutes shows the
  # monitor as flapping instead of down, and the outages follow each other closely.
  scheduler: {minIntervalSeconds: 10, flapping: {enabled: false}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {name: fresh, namespace: e2e}
spec:
  slug: fresh
  title: Freshness
  published: true
  groups:
    - name: Target
      monitors:
        - ref: {name: target}
";

fn monitor(port: u16) -> String {
    format!(
        "---\napiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: target, namespace: e2e}}\nspec:\n  type: tcp\n  schedule: {{intervalSeconds: 10, timeoutSeconds: 5}}\n  target:\n    tcp: {{host: 127.0.0.1, port: {port}}}\n"
    )
}

/// The TCP target: accepts and closes connections while open.
struct Target {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Target {
    async fn open(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.task = Some(tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        }));
    }

    /// Stop answering: the listener goes, connections are refused.
    async fn close(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

/// The monitor's status in the published `status.json`, and whether the page's HTML
/// shows it as `state`.
fn published(site: &Path) -> (Option<String>, String) {
    let json = std::fs::read(site.join("fresh/status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["groups"][0]["monitors"][0]["status"]
                .as_str()
                .map(String::from)
        });
    let html = std::fs::read_to_string(site.join("fresh/index.html")).unwrap_or_default();
    (json, html)
}

fn html_says(html: &str, state: &str) -> bool {
    html.contains(&format!("class=\"monitor state-{state}\""))
}

/// Wait (at most 3 minutes) until the site says `state`; the seconds until status.json
/// and the HTML said so.
async fn until_published(site: &Path, state: &str, since: Instant) -> (f64, f64) {
    let (mut json_at, mut html_at) = (None, None);
    let deadline = since + Duration::from_secs(180);
    while json_at.is_none() || html_at.is_none() {
        assert!(
            Instant::now() < deadline,
            "the site never said {state}: {:?}",
            published(site).0
        );
        let (json, html) = published(site);
        if json_at.is_none() && json.as_deref() == Some(state) {
            json_at = Some(since.elapsed().as_secs_f64());
        }
        if html_at.is_none() && html_says(&html, state) {
            html_at = Some(since.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (json_at.unwrap_or_default(), html_at.unwrap_or_default())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_reaches_the_published_site_through_the_agent_and_the_watching_builder() {
    let outages: usize = std::env::var("KUBEKUMA_FRESHNESS_OUTAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();
    let (config, data, site) = (
        dir.path().join("manifests"),
        dir.path().join("data"),
        dir.path().join("site"),
    );
    std::fs::create_dir_all(&config).unwrap();
    // The bucket: the agent writes, the builder reads, both through `AWS_*` variables.
    let bucket = s3::S3Server::start().await;
    let aws: Vec<(String, String)> = bucket
        .options()
        .into_iter()
        .map(|(k, v)| (k.to_uppercase(), v))
        .collect();
    let mut target = Target {
        port: free_port(),
        task: None,
    };
    target.open().await;
    std::fs::write(
        config.join("m.yaml"),
        format!("{MANIFESTS}{}", monitor(target.port)),
    )
    .unwrap();
    let store = format!("s3://{}/fresh", s3::BUCKET);
    let listen = format!("127.0.0.1:{}", free_port());
    let _agent = Proc::start(
        &[
            "agent",
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--store",
            &store,
            "--agent-id",
            "fresh",
            "--flush-interval",
            "60",
            "--listen",
            &listen,
        ],
        &dir.path().join("agent.log"),
        &aws,
    );
    let _builder = Proc::start(
        &[
            "build",
            "--source",
            &store,
            "--out",
            site.to_str().unwrap(),
            "--watch",
            "--no-png",
        ],
        &dir.path().join("builder.log"),
        &aws,
    );
    until_published(&site, "up", Instant::now()).await;
    let (mut json, mut html) = (Vec::new(), Vec::new());
    for n in 0..outages {
        target.close().await;
        let (j, h) = until_published(&site, "down", Instant::now()).await;
        eprintln!("outage {n}: status.json said down after {j:.1} s, the page after {h:.1} s");
        json.push(j);
        html.push(h);
        target.open().await;
        until_published(&site, "up", Instant::now()).await;
    }
    json.sort_by(f64::total_cmp);
    html.sort_by(f64::total_cmp);
    eprintln!(
        "freshness over {outages} outage(s): status.json p50 {:.1} s max {:.1} s; page p50 {:.1} s max {:.1} s",
        percentile(&json, 0.5),
        json[json.len() - 1],
        percentile(&html, 0.5),
        html[html.len() - 1],
    );
    target.close().await;
}
