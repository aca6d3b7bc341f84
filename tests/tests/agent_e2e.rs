//! The agent end to end: a folder of manifests → scheduler → HTTP and TCP checks against
//! a real hyper server on 127.0.0.1 → state machine → SQLite → an S3 server (s3s-fs, a
//! real S3 implementation that checks request signatures). The object store goes away
//! while the target fails, comes back, and the agent catches up without losing the
//! incident. Nothing in the bucket may name a target.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "../../agent/tests/suite/common/s3.rs"]
mod s3;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{Datelike, Utc};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kubekuma_agent::runtime::{self, AgentOptions};
use kubekuma_crds::objects::{AgentCatalog, AgentState, IncidentMonth, keys};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;

use common::wait_for;

async fn target(healthy: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let healthy = healthy.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let ok = healthy.load(Ordering::SeqCst);
                    async move {
                        let mut r =
                            hyper::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                        if !ok {
                            *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

async fn get_json<T: serde::de::DeserializeOwned>(store: &dyn ObjectStore, key: &str) -> Option<T> {
    let r = store.get(&object_store::path::Path::from(key)).await.ok()?;
    serde_json::from_slice(&r.bytes().await.ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_ships_results_and_catches_up_after_an_outage() {
    let healthy = Arc::new(AtomicBool::new(true));
    let port = target(healthy.clone()).await;
    let mut server = s3::S3Server::start().await;
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
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: api, namespace: e2e}}
spec:
  type: http
  description: The API
  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}
  target:
    http: {{url: "http://127.0.0.1:{port}/health"}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: port, namespace: e2e}}
spec:
  type: tcp
  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}
  target:
    tcp: {{host: 127.0.0.1, port: {port}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {{name: public, namespace: e2e}}
spec:
  slug: public
  title: E2E status
  published: true
  groups:
    - name: Everything
      monitors:
        - ref: {{name: api}}
        - ref: {{name: port}}
"#
        ),
    )
    .unwrap();
    let opts = AgentOptions {
        config: vec![manifests],
        store_url: Some(format!("s3://{}/", s3::BUCKET)),
        store_options: server
            .options()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        flush_interval: Duration::from_millis(500),
        ..AgentOptions::new("e2e", dir.path().join("data"), "127.0.0.1:0".to_string())
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(runtime::run(opts, stop_rx));
    let bucket: Arc<dyn ObjectStore> = Arc::new(server.builder().build().unwrap());

    let state_key = keys::state("e2e");
    let state_of = |name: &'static str| {
        let bucket = bucket.clone();
        let key = state_key.clone();
        async move {
            get_json::<AgentState>(bucket.as_ref(), &key)
                .await
                .and_then(|s| {
                    s.monitors
                        .get(&format!("e2e/{name}"))
                        .map(|m| m.state.as_str().to_string())
                })
        }
    };
    wait_for("both monitors up in state.json", || async {
        state_of("api").await.as_deref() == Some("up")
            && state_of("port").await.as_deref() == Some("up")
    })
    .await;
    let catalog: AgentCatalog = get_json(bucket.as_ref(), &keys::catalog("e2e"))
        .await
        .unwrap();
    assert_eq!(catalog.pages[0].slug, "public");
    assert_eq!(catalog.pages[0].groups[0].monitors.len(), 2);
    assert_eq!(
        catalog
            .monitors
            .iter()
            .find(|m| m.name == "api")
            .unwrap()
            .description
            .as_deref(),
        Some("The API")
    );

    // Outage of the object store while the target fails.
    server.stop().await;
    healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.restart().await;

    let now = Utc::now();
    let incidents_key = keys::incidents("e2e", now.year(), now.month());
    wait_for(
        "the incident and the down state after the store came back",
        || async {
            let open = get_json::<IncidentMonth>(bucket.as_ref(), &incidents_key)
                .await
                .is_some_and(|m| {
                    m.incidents
                        .iter()
                        .any(|i| i.name == "api" && i.ended_at.is_none())
                });
            open && state_of("api").await.as_deref() == Some("down")
        },
    )
    .await;
    assert_eq!(
        state_of("port").await.as_deref(),
        Some("up"),
        "TCP connect still works"
    );

    healthy.store(true, Ordering::SeqCst);
    wait_for("the incident closed", || async {
        get_json::<IncidentMonth>(bucket.as_ref(), &incidents_key)
            .await
            .is_some_and(|m| {
                m.incidents.iter().any(|i| {
                    i.name == "api" && i.ended_at.is_some() && i.duration_seconds.is_some()
                })
            })
    })
    .await;

    // Public objects only: no target, host or port anywhere in the bucket.
    let listed: Vec<_> = futures::StreamExt::collect::<Vec<_>>(bucket.list(None)).await;
    assert!(
        listed.len() >= 5,
        "catalog, state, hourly, daily, incidents: {listed:?}"
    );
    for meta in listed {
        let meta = meta.unwrap();
        let body = bucket
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("127.0.0.1") && !text.contains(&format!(":{port}")),
            "{} leaks a target",
            meta.location
        );
        assert!(
            meta.location.as_ref().starts_with("v1/agents/e2e/"),
            "{}",
            meta.location
        );
    }

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

fn monitor_yaml(name: &str, port: u16, enabled: bool) -> String {
    format!(
        "apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: {name}, namespace: e2e}}\nspec:\n  enabled: {enabled}\n  type: http\n  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}\n  target:\n    http: {{url: \"http://127.0.0.1:{port}/{name}\"}}\n---\n"
    )
}

/// Catalog edits take effect without a restart: a new monitor starts, a disabled one is
/// paused, a deleted one disappears and its open incident is closed; a restarted agent
/// keeps the state it had (the incident of a still-down monitor stays open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_edits_apply_live_and_state_survives_a_restart() {
    let healthy = Arc::new(AtomicBool::new(false));
    let port = target(healthy.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let settings = "apiVersion: monitoring.kubekuma.io/v1\nkind: KubeKumaSettings\nmetadata: {name: k}\nspec:\n  scheduler: {minIntervalSeconds: 1, jitterPercent: 0}\n---\n";
    let file = manifests.join("m.yaml");
    std::fs::write(
        &file,
        format!("{settings}{}", monitor_yaml("a", port, true)),
    )
    .unwrap();
    let objects = dir.path().join("objects");
    let opts = AgentOptions {
        config: vec![manifests.clone()],
        store_url: Some(format!("file://{}", objects.display())),
        flush_interval: Duration::from_millis(300),
        ..AgentOptions::new("edit", dir.path().join("data"), "127.0.0.1:0".to_string())
    };
    let state = |name: &'static str| {
        let path = objects.join(keys::state("edit"));
        async move {
            let s: AgentState = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
            s.monitors
                .get(&format!("e2e/{name}"))
                .map(|m| m.state.as_str().to_string())
        }
    };
    let incidents = || {
        let now = Utc::now();
        let path = objects.join(keys::incidents("edit", now.year(), now.month()));
        async move {
            std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<IncidentMonth>(&b).ok())
                .map(|m| m.incidents)
                .unwrap_or_default()
        }
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(runtime::run(opts.clone(), stop_rx));
    wait_for("a down", || async {
        state("a").await.as_deref() == Some("down")
    })
    .await;

    // Add b, then disable it; delete a (down, with an open incident).
    std::fs::write(
        &file,
        format!(
            "{settings}{}{}",
            monitor_yaml("a", port, true),
            monitor_yaml("b", port, true)
        ),
    )
    .unwrap();
    wait_for("b checked", || async {
        state("b").await.as_deref() == Some("down")
    })
    .await;
    std::fs::write(
        &file,
        format!("{settings}{}", monitor_yaml("b", port, false)),
    )
    .unwrap();
    wait_for("b paused, a gone", || async {
        state("b").await.as_deref() == Some("paused") && state("a").await.is_none()
    })
    .await;
    wait_for("a's incident closed", || async {
        incidents()
            .await
            .iter()
            .any(|i| i.name == "a" && i.ended_at.is_some())
    })
    .await;

    // Re-enable b; it goes down again and stays down across a restart.
    std::fs::write(
        &file,
        format!("{settings}{}", monitor_yaml("b", port, true)),
    )
    .unwrap();
    wait_for("b down again with an open incident", || async {
        state("b").await.as_deref() == Some("down")
            && incidents()
                .await
                .iter()
                .any(|i| i.name == "b" && i.ended_at.is_none())
    })
    .await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let open_before: Vec<i64> = incidents()
        .await
        .iter()
        .filter(|i| i.ended_at.is_none())
        .map(|i| i.id)
        .collect();
    assert_eq!(open_before.len(), 1);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(runtime::run(opts, stop_rx));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open_after: Vec<i64> = incidents()
        .await
        .iter()
        .filter(|i| i.ended_at.is_none())
        .map(|i| i.id)
        .collect();
    assert_eq!(
        open_after, open_before,
        "no second incident after a restart while down"
    );
    healthy.store(true, Ordering::SeqCst);
    wait_for("b up, incident closed", || async {
        state("b").await.as_deref() == Some("up")
            && incidents().await.iter().all(|i| i.ended_at.is_some())
    })
    .await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
