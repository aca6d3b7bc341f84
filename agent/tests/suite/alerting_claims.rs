//! The delivery worker's claims against a webhook receiver served by hyper on
//! 127.0.0.1: a worker killed mid-send (its task aborted, no cleanup) leaves a claim that
//! another worker takes once it expires and sends exactly once; an orphan whose dedupe
//! key already went out within the window is recorded `deduped`, not sent; and
//! `run_when` claims nothing while inactive. On every store backend (on PostgreSQL the
//! second worker has a store of its own, as another replica has).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kubekuma_agent::alerting::outbox::{DeliveryWorker, WorkerOptions};
use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::catalog::{ObjKey, Severity, Snapshot};
use kubekuma_agent::store::Store;
use kubekuma_agent::store::deliveries::{Attempt, Delivery, DeliveryStatus, NewDelivery};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::common::backends::{Backend, Db, backends};

/// A webhook receiver that records every request on arrival and, while `hold` is true,
/// never answers.
struct Receiver {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<serde_json::Value>>>,
    hold: watch::Sender<bool>,
}

impl Receiver {
    async fn start(hold: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let (hold, held) = watch::channel(hold);
        let seen = arrivals.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (seen, held) = (seen.clone(), held.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (seen, mut held) = (seen.clone(), held.clone());
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            seen.lock()
                                .unwrap()
                                .push(serde_json::from_slice(&body).unwrap_or_default());
                            let _ = held.wait_for(|h| !*h).await;
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
            hold,
        }
    }

    fn arrived(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }
}

fn catalog(addr: SocketAddr) -> watch::Receiver<Arc<Snapshot>> {
    let text = format!(
        r#"
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {{name: hook, namespace: prod}}
spec: {{type: webhook, config: {{webhook: {{url: "http://{addr}/hook"}}}}}}
"#
    );
    let built = build(&[parse_text("providers.yaml", &text)], None);
    let errors: Vec<_> = built
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    watch::channel(Arc::new(built.snapshot)).1
}

fn hook() -> ObjKey {
    ObjKey::new("prod", "hook")
}

/// A pending notification to `hook` with a 60-minute dedupe window in its route.
fn pending(key: &str) -> NewDelivery {
    NewDelivery {
        incident_id: None,
        monitor: ObjKey::new("prod", "api"),
        policy: ObjKey::new("prod", "oncall"),
        provider: hook(),
        provider_type: "webhook".into(),
        event_kind: "down".into(),
        dedupe_key: key.into(),
        status: DeliveryStatus::Pending,
        error: None,
        detail: None,
        payload: json!({
            "route": {"dedupeWindowMinutes": 60, "dedupeKey": key},
            "title": "api is down",
            "body": "no answer within 5 s",
        }),
    }
}

fn options(claimant: &str, claim_for: Duration) -> WorkerOptions {
    WorkerOptions {
        poll: Duration::from_millis(20),
        claimant: claimant.into(),
        claim_for,
        ..WorkerOptions::default()
    }
}

struct Worker {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn(store: &Store, addr: SocketAddr, options: WorkerOptions) -> Worker {
    let (shutdown, stop) = watch::channel(false);
    let worker = DeliveryWorker::new(
        store.clone(),
        catalog(addr),
        Arc::new(Notify::new()),
        None,
        options,
    );
    Worker {
        shutdown,
        task: tokio::spawn(worker.run(stop)),
    }
}

impl Worker {
    async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.task.await.unwrap();
    }
}

async fn delivery(store: &Store, id: i64) -> Delivery {
    store
        .deliveries_since(DateTime::from_timestamp(0, 0).unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == id)
        .unwrap()
}

/// Wait until `pred` holds for delivery `id` (at most 30 s).
async fn until(store: &Store, id: i64, what: &str, pred: impl Fn(&Delivery) -> bool) -> Delivery {
    for _ in 0..1500 {
        let d = delivery(store, id).await;
        if pred(&d) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "timed out waiting for {what}: {:#?}",
        delivery(store, id).await
    );
}

/// Wait until the receiver has seen `n` requests (at most 30 s).
async fn arrivals(receiver: &Receiver, n: usize) {
    for _ in 0..1500 {
        if receiver.arrived() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} requests arrived, not {n}", receiver.arrived());
}

/// The store a second agent uses: its own on PostgreSQL, the same one on SQLite (one
/// agent per file).
async fn second(db: &Db, first: &Store) -> Store {
    match db.backend {
        Backend::Postgres => db.open().await,
        Backend::Sqlite => first.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_off_by_a_kill_is_sent_exactly_once_more_after_the_claim_expires() {
    for backend in backends() {
        let receiver = Receiver::start(true).await;
        let db = Db::new(backend).await;
        let store = db.open().await;
        let id = store
            .record_deliveries(vec![pending("prod/api:down")], None, Utc::now())
            .await
            .unwrap()[0];

        // Worker A claims the row and sends; the receiver never answers; A is killed
        // mid-send (its task aborted: no shutdown, no release, no outcome written).
        let a = spawn(&store, receiver.addr, options("a", Duration::from_secs(3)));
        arrivals(&receiver, 1).await;
        a.task.abort();
        assert!(a.task.await.unwrap_err().is_cancelled());
        let held = delivery(&store, id).await;
        assert_eq!(
            (held.status, held.attempts, held.claimed_by.as_deref()),
            (DeliveryStatus::Pending, 0, Some("a")),
            "{db:?}"
        );

        // Worker B (another claimant) takes it once A's claim expires and sends it once.
        receiver.hold.send_replace(false);
        let other = second(&db, &store).await;
        let b = spawn(&other, receiver.addr, options("b", Duration::from_secs(60)));
        let sent = until(&store, id, "the orphan sent by b", |d| {
            d.status == DeliveryStatus::Sent
        })
        .await;
        assert_eq!(sent.attempts, 1, "{db:?}: {sent:#?}");
        assert_eq!((sent.claimed_by, sent.claimed_until), (None, None));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            receiver.arrived(),
            2,
            "{db:?}: a's cut-off send and b's, no more"
        );
        let arrivals = receiver.arrivals.lock().unwrap().clone();
        assert_eq!(arrivals[0], arrivals[1], "the same notification");
        b.stop().await;
        if db.backend == Backend::Postgres {
            other.close().await.unwrap();
        }
        store.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_whose_key_went_out_within_the_window_is_deduped_not_sent() {
    for backend in backends() {
        let receiver = Receiver::start(false).await;
        let db = Db::new(backend).await;
        let store = db.open().await;
        // The same key went to the same provider a minute ago.
        let earlier = store
            .record_deliveries(
                vec![pending("prod/api:down")],
                None,
                Utc::now() - chrono::Duration::minutes(2),
            )
            .await
            .unwrap()[0];
        let sent_at = Utc::now() - chrono::Duration::minutes(1);
        store
            .delivery_attempted(earlier, sent_at, Attempt::Sent("200".into()))
            .await
            .unwrap();
        // A pending row of that key whose sender died mid-send: its claim expires at once.
        let id = store
            .record_deliveries(vec![pending("prod/api:down")], None, Utc::now())
            .await
            .unwrap()[0];
        let dead = store
            .claim_deliveries(Utc::now(), 10, "dead", Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(dead.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);
        tokio::time::sleep(Duration::from_millis(5)).await;

        let other = second(&db, &store).await;
        let b = spawn(&other, receiver.addr, options("b", Duration::from_secs(60)));
        let deduped = until(&store, id, "the orphan deduped", |d| {
            d.status != DeliveryStatus::Pending
        })
        .await;
        assert_eq!(
            deduped.status,
            DeliveryStatus::Deduped,
            "{db:?}: {deduped:#?}"
        );
        let note = deduped.last_error.clone().unwrap();
        assert!(
            note.contains(&format!("(delivery {earlier})")) && note.contains("dedupe window"),
            "{note}"
        );
        assert_eq!((deduped.attempts, deduped.claimed_by), (0, None));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.arrived(), 0, "{db:?}: nothing sent");
        b.stop().await;
        if db.backend == Backend::Postgres {
            other.close().await.unwrap();
        }
        store.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_worker_claims_nothing_until_it_turns_active() {
    let receiver = Receiver::start(false).await;
    let db = Db::new(Backend::Sqlite).await;
    let store = db.open().await;
    let (active_tx, active) = watch::channel(false);
    let (shutdown, stop) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let worker = DeliveryWorker::new(
        store.clone(),
        catalog(receiver.addr),
        wake.clone(),
        None,
        options("standby", Duration::from_secs(60)),
    );
    let task = tokio::spawn(worker.run_when(active, stop));

    let first = store
        .record_deliveries(vec![pending("one")], None, Utc::now())
        .await
        .unwrap()[0];
    wake.notify_one();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = delivery(&store, first).await;
    assert_eq!(
        (idle.status, idle.claimed_by.as_deref(), receiver.arrived()),
        (DeliveryStatus::Pending, None, 0),
        "inactive: nothing claimed, nothing sent"
    );

    active_tx.send_replace(true);
    until(&store, first, "sent once active", |d| {
        d.status == DeliveryStatus::Sent
    })
    .await;
    assert_eq!(receiver.arrived(), 1);

    // Inactive again (the role lost): new rows wait.
    active_tx.send_replace(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = store
        .record_deliveries(vec![pending("two")], None, Utc::now())
        .await
        .unwrap()[0];
    wake.notify_one();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        delivery(&store, second).await.status,
        DeliveryStatus::Pending
    );
    assert_eq!(receiver.arrived(), 1);

    let _ = shutdown.send(true);
    task.await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_waiting_for_their_provider_are_released_when_the_worker_turns_inactive() {
    let receiver = Receiver::start(true).await;
    let db = Db::new(Backend::Sqlite).await;
    let store = db.open().await;
    let ids = store
        .record_deliveries(vec![pending("one"), pending("two")], None, Utc::now())
        .await
        .unwrap();
    let (active_tx, active) = watch::channel(true);
    let (shutdown, stop) = watch::channel(false);
    let worker = DeliveryWorker::new(
        store.clone(),
        catalog(receiver.addr),
        Arc::new(Notify::new()),
        None,
        WorkerOptions {
            per_provider: 1,
            ..options("leader", Duration::from_secs(60))
        },
    );
    let task = tokio::spawn(worker.run_when(active, stop));

    // Both claimed; the first is in flight (held by the receiver), the second waits
    // for the provider.
    arrivals(&receiver, 1).await;
    for id in &ids {
        until(&store, *id, "claimed", |d| {
            d.claimed_by.as_deref() == Some("leader")
        })
        .await;
    }
    // The role is lost: the send in progress finishes, the waiting one is left.
    active_tx.send_replace(false);
    receiver.hold.send_replace(false);
    // Which of the two was in flight is the scheduler's choice: one is sent, the other
    // released unsent.
    let mut settled = Vec::new();
    for _ in 0..1500 {
        settled = Vec::new();
        for id in &ids {
            settled.push(delivery(&store, *id).await);
        }
        let sent = settled
            .iter()
            .filter(|d| d.status == DeliveryStatus::Sent)
            .count();
        if sent == 1 && settled.iter().all(|d| d.claimed_by.is_none()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (sent, left): (Vec<_>, Vec<_>) = settled
        .iter()
        .partition(|d| d.status == DeliveryStatus::Sent);
    assert_eq!(sent.len(), 1, "the send in flight finished: {settled:#?}");
    assert_eq!(sent[0].claimed_by, None);
    assert_eq!(
        (
            left[0].status,
            left[0].attempts,
            left[0].claimed_by.as_deref()
        ),
        (DeliveryStatus::Pending, 0, None),
        "the waiting row released: {settled:#?}"
    );
    assert_eq!(receiver.arrived(), 1, "the waiting row not sent");

    let _ = shutdown.send(true);
    task.await.unwrap();
    store.close().await.unwrap();
}
