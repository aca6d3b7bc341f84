//! `kubekuma up` under a large build: the agent and its site builder as `up` runs them
//! (`cli::run_with_builder`), with a thousand generated monitors in the object store the
//! builder reads. The first build is held while it renders (its observer waits for the
//! test), and meanwhile the agent answers `GET /health` and applies a manifest edit
//! through to its next flush; then the build is let go and finishes. The order is shown
//! by state, not by timing: the build is known to be rendering and not finished while
//! the agent answers.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use kubekuma_agent::runtime::AgentOptions;
use kubekuma_builder::bench::{BuildBench, generate};
use kubekuma_builder::{BuildOptions, BuildPhase, Builder, RenderOptions, Theme};
use kubekuma_crds::objects::{AgentState, keys};

use common::{free_port, wait_for};

fn monitor_yaml(name: &str, port: u16) -> String {
    format!(
        "apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: {name}, namespace: e2e}}\n\
         spec:\n  type: tcp\n  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}\n  \
         target:\n    tcp: {{host: 127.0.0.1, port: {port}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_answers_and_reloads_while_a_large_build_renders() {
    let closed = free_port();
    let listen_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("settings.yaml"),
        "apiVersion: monitoring.kubekuma.io/v1\nkind: KubeKumaSettings\nmetadata: {name: kubekuma}\n\
         spec:\n  scheduler: {minIntervalSeconds: 1, jitterPercent: 0}\n",
    )
    .unwrap();
    std::fs::write(manifests.join("a.yaml"), monitor_yaml("a", closed)).unwrap();
    let data = dir.path().join("data");
    let objects = data.join("objects");
    let site = data.join("site");
    std::fs::create_dir_all(&objects).unwrap();

    // A large dataset of another agent in the store the builder reads.
    let source = kubekuma_crds::store::open_store(objects.to_str().unwrap()).unwrap();
    let bench = BuildBench {
        monitors: 1000,
        days: 90,
        png: false,
    };
    for (key, body) in generate(&bench, Utc::now()) {
        source.put(&key, Bytes::from(body)).await.unwrap();
    }

    // The first build tells the test when it renders, then waits to be let go.
    let (rendering_tx, mut rendering) = tokio::sync::mpsc::unbounded_channel();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(Some(held));
    let out = kubekuma_crds::store::open_store(site.to_str().unwrap()).unwrap();
    let opts = BuildOptions {
        render: RenderOptions {
            png_badges: false,
            ..Default::default()
        },
        now: None,
        fetch_branding: false,
    };
    let builder = Builder::new(source, out, Theme::default_theme().unwrap(), opts)
        .unwrap()
        .with_observer(move |phase| {
            if phase != BuildPhase::Render {
                return;
            }
            let first = held.lock().unwrap().take();
            if let Some(held) = first {
                let _ = rendering_tx.send(());
                // Bounded, so that a failed test does not hang the process.
                let _ = held.recv_timeout(Duration::from_secs(120));
            }
        });

    let opts = AgentOptions {
        config: vec![manifests.clone()],
        flush_interval: Duration::from_millis(500),
        site_dir: Some(site.clone()),
        ..AgentOptions::new("up", data.clone(), format!("127.0.0.1:{listen_port}"))
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let up = tokio::spawn(kubekuma_agent::cli::run_with_builder(
        opts, builder, stop_rx,
    ));

    // The build has read the 1,000 monitors and is rendering.
    rendering.recv().await.expect("the first build renders");
    let manifest = site.join(".kubekuma/manifest.json");

    // The agent answers its health check...
    let base = format!("http://127.0.0.1:{listen_port}");
    let http = reqwest::Client::new();
    wait_for("GET /health answered", || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;

    // ...and a monitor added to the folder is checked and reaches its next flush.
    std::fs::write(manifests.join("b.yaml"), monitor_yaml("b", closed)).unwrap();
    let state_file = objects.join(keys::state("up"));
    wait_for("monitor b in the agent's flushed state", || {
        let state_file = state_file.clone();
        async move {
            std::fs::read(&state_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<AgentState>(&b).ok())
                .is_some_and(|s| s.monitors.contains_key("e2e/b"))
        }
    })
    .await;
    assert!(
        !manifest.exists(),
        "the first build is still rendering, so nothing is published yet"
    );

    // Let the build go: it finishes and the site is served.
    release.send(()).unwrap();
    wait_for("the first build published", || {
        let manifest = manifest.clone();
        async move { manifest.exists() }
    })
    .await;
    assert!(site.join("page-0/status.json").exists());
    let page = http
        .get(format!("{base}/page-0/status.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    stop_tx.send(true).unwrap();
    up.await.unwrap().unwrap();
}
