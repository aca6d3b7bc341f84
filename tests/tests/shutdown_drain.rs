//! The bounded delivery drain at shutdown, through the whole agent (`runtime::run`,
//! folder mode) and a slow webhook receiver (hyper on 127.0.0.1): a notification in
//! flight when the agent is told to stop finishes within the shutdown grace (received
//! once, its row `sent`); one slower than the grace is abandoned, stays `pending` in the
//! outbox with its claim released, and is sent once by the next start.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::DateTime;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kubekuma_agent::catalog::ObjKey;
use kubekuma_agent::runtime::{self, AgentOptions};
use kubekuma_agent::store::Store;
use kubekuma_agent::store::deliveries::{Delivery, DeliveryStatus};
use tokio::net::TcpListener;
use tokio::sync::watch;

use common::{free_port, wait_for};

/// A webhook receiver. `/slow` answers once `release_slow` turns true; `/stuck` answers
/// only from phase 2 on (the agent's second run). Every arrival is recorded with the
/// phase it arrived in.
struct Receiver {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<(String, u32)>>>,
    phase: watch::Sender<u32>,
    release_slow: watch::Sender<bool>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
        let (phase, phase_rx) = watch::channel(1u32);
        let (release_slow, release_rx) = watch::channel(false);
        let seen = arrivals.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (seen, phase_rx, release_rx) =
                    (seen.clone(), phase_rx.clone(), release_rx.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (seen, mut phase_rx, mut release_rx) =
                            (seen.clone(), phase_rx.clone(), release_rx.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let _ = req.into_body().collect().await;
                            let phase = *phase_rx.borrow();
                            seen.lock().unwrap().push((path.clone(), phase));
                            match path.as_str() {
                                "/slow" => {
                                    let _ = release_rx.wait_for(|r| *r).await;
                                }
                                "/stuck" => {
                                    let _ = phase_rx.wait_for(|p| *p >= 2).await;
                                }
                                _ => {}
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            arrivals,
            phase,
            release_slow,
        }
    }

    /// How many requests reached `path` in `phase`.
    fn arrived(&self, path: &str, phase: u32) -> usize {
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, ph)| p == path && *ph == phase)
            .count()
    }
}

fn manifests(folder: &Path, hooks: SocketAddr) {
    let closed = free_port();
    std::fs::create_dir_all(folder).unwrap();
    std::fs::write(
        folder.join("m.yaml"),
        format!(
            r#"
apiVersion: monitoring.kubekuma.io/v1
kind: KubeKumaSettings
metadata: {{name: kubekuma}}
spec:
  scheduler: {{minIntervalSeconds: 1, jitterPercent: 0}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: api, namespace: prod}}
spec:
  type: tcp
  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}
  target: {{tcp: {{host: 127.0.0.1, port: {closed}}}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationPolicy
metadata: {{name: all, namespace: prod}}
spec:
  match: {{matchNamespaces: [prod]}}
  routing: {{providers: [{{ref: {{name: slow}}}}, {{ref: {{name: stuck}}}}]}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {{name: slow, namespace: prod}}
spec: {{type: webhook, config: {{webhook: {{url: "http://{hooks}/slow"}}}}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {{name: stuck, namespace: prod}}
spec: {{type: webhook, config: {{webhook: {{url: "http://{hooks}/stuck"}}}}}}
"#
        ),
    )
    .unwrap();
}

fn options(dir: &Path, grace: Duration) -> AgentOptions {
    AgentOptions {
        config: vec![dir.join("manifests")],
        store_url: Some(format!("file://{}", dir.join("objects").display())),
        shutdown_grace: grace,
        ..AgentOptions::new(
            "drain",
            dir.join("data"),
            format!("127.0.0.1:{}", free_port()),
        )
    }
}

/// The deliveries of the stopped agent's database, by provider name.
async fn deliveries(dir: &Path) -> Vec<Delivery> {
    let store = Store::open(&dir.join("data").join("kubekuma.db")).unwrap();
    let rows = store
        .deliveries_since(DateTime::from_timestamp(0, 0).unwrap())
        .await
        .unwrap();
    store.close().await.unwrap();
    rows
}

fn of<'a>(rows: &'a [Delivery], provider: &str) -> &'a Delivery {
    let key = ObjKey::new("prod", provider);
    let mine: Vec<&Delivery> = rows.iter().filter(|d| d.provider == key).collect();
    assert_eq!(mine.len(), 1, "one delivery to {provider}: {rows:#?}");
    mine[0]
}

/// Stop the agent; it must stop at all (within the grace and a generous margin).
async fn stop(
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), runtime::RunError>>,
) {
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("the agent stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_flight_get_a_bounded_grace_and_the_rest_are_sent_after_restart() {
    let hooks = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    manifests(&dir.path().join("manifests"), hooks.addr);

    // Run 1: the monitor goes down; both notifications reach their receivers, which hold
    // them. Then the agent is told to stop.
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(
        options(dir.path(), Duration::from_secs(5)),
        stop_rx,
    ));
    wait_for("both notifications in flight", || async {
        hooks.arrived("/slow", 1) == 1 && hooks.arrived("/stuck", 1) == 1
    })
    .await;
    let _ = stop_tx.send(true);
    // The agent is draining now: `/slow` answers within the grace, `/stuck` never does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    hooks.release_slow.send_replace(true);
    stop(stop_tx, task).await;

    let rows = deliveries(dir.path()).await;
    let slow = of(&rows, "slow");
    assert_eq!(slow.status, DeliveryStatus::Sent, "{slow:#?}");
    assert_eq!(slow.attempts, 1);
    assert_eq!(slow.event_kind, "down");
    let stuck = of(&rows, "stuck");
    assert_eq!(
        (stuck.status, stuck.attempts),
        (DeliveryStatus::Pending, 0),
        "abandoned after the grace, kept for the next start: {stuck:#?}"
    );
    assert_eq!(
        (&stuck.claimed_by, stuck.claimed_until),
        (&None, None),
        "its claim released, so the next start sends it at once"
    );

    // Run 2: the receiver answers at once now; the next start sends what was left.
    hooks.phase.send_replace(2);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(
        options(dir.path(), Duration::from_secs(5)),
        stop_rx,
    ));
    wait_for(
        "the abandoned notification sent after the restart",
        || async { hooks.arrived("/stuck", 2) >= 1 },
    )
    .await;
    stop(stop_tx, task).await;

    let rows = deliveries(dir.path()).await;
    let stuck = of(&rows, "stuck");
    assert_eq!((stuck.status, stuck.attempts), (DeliveryStatus::Sent, 1));
    assert_eq!(of(&rows, "slow").status, DeliveryStatus::Sent);
    assert_eq!(hooks.arrived("/stuck", 2), 1, "sent once after the restart");
    assert_eq!(hooks.arrived("/slow", 1) + hooks.arrived("/slow", 2), 1);
}
