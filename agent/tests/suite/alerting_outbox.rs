//! The alerting pipeline end to end on a real SQLite file: events → silences → policies
//! → gate → `notification_deliveries` → the delivery worker → webhook providers served
//! by an in-process hyper server (flaky, slow, refusing and healthy endpoints).
//! Covers retries with backoff, a slow provider not holding up the others, outcomes
//! recorded, suppression marking the incident, reminders, template fallbacks, and a
//! crash and restart with deliveries pending (sent once, dedupe remembered). The crash
//! and restart and the API silences also run on PostgreSQL, and so do the store's faults:
//! a notification held while the store refuses writes, API silences kept while
//! PostgreSQL is away, a send's outcome held while it is.

use std::collections::HashMap;
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
use kubekuma_agent::alerting::pipeline::{Alerter, Change};
use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::catalog::{ObjKey, Severity, Snapshot};
use kubekuma_agent::notify::event::EventKind;
use kubekuma_agent::store::Store;
use kubekuma_agent::store::deliveries::{Delivery, DeliveryStatus};
use kubekuma_crds::MonitorState;
use kubekuma_crds::results::FailureReason;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::common::backends::{Db, backends};

/// A webhook receiver: `/ok` answers 200, `/reject` 400, `/flaky` 500 for its first
/// `flaky_failures` requests and 200 after, `/slow` waits until `release` is notified.
struct Hooks {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    slow_arrived: Arc<Notify>,
    release: Arc<Notify>,
}

impl Hooks {
    async fn start(flaky_failures: usize) -> Hooks {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
        let slow_arrived = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (s, a, r) = (seen.clone(), slow_arrived.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (seen, arrived, release, counts) =
                    (s.clone(), a.clone(), r.clone(), counts.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (seen, arrived, release, counts) = (
                            seen.clone(),
                            arrived.clone(),
                            release.clone(),
                            counts.clone(),
                        );
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let json = serde_json::from_slice(&body).unwrap_or_default();
                            let n = {
                                let mut c = counts.lock().unwrap();
                                let n = c.entry(path.clone()).or_default();
                                *n += 1;
                                *n
                            };
                            let status = match path.as_str() {
                                "/reject" => 400,
                                "/flaky" if n <= flaky_failures => 500,
                                "/slow" => {
                                    arrived.notify_one();
                                    release.notified().await;
                                    200
                                }
                                _ => 200,
                            };
                            if status == 200 {
                                seen.lock().unwrap().push((path, json));
                            }
                            let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Hooks {
            addr,
            seen,
            slow_arrived,
            release,
        }
    }

    fn received(&self, path: &str) -> Vec<serde_json::Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, j)| j.clone())
            .collect()
    }
}

fn catalog(addr: SocketAddr, providers: &[&str], extra: &str) -> Snapshot {
    let mut text = String::from(
        r#"
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: api, namespace: prod, labels: {team: core}}
spec: {type: tcp, target: {tcp: {host: localhost, port: 1}}}
"#,
    );
    let refs: Vec<String> = providers
        .iter()
        .map(|p| format!("{{ref: {{name: {p}}}}}"))
        .collect();
    text.push_str(&format!(
        r#"---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationPolicy
metadata: {{name: all, namespace: prod}}
spec:
  match: {{matchNamespaces: [prod]}}
  routing:
    providers: [{}]
    dedupe: {{windowMinutes: 60}}
    resend: {{resendIntervalMinutes: 10}}
"#,
        refs.join(", ")
    ));
    for p in providers {
        text.push_str(&format!(
            r#"---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {{name: {p}, namespace: prod}}
spec: {{type: webhook, config: {{webhook: {{url: "http://{addr}/{p}"}}}}}}
"#
        ));
    }
    text.push_str(extra);
    let built = build(&[parse_text("alerting.yaml", &text)], None);
    let errors: Vec<_> = built
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    built.snapshot
}

fn options() -> WorkerOptions {
    WorkerOptions {
        base_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        poll: Duration::from_millis(20),
        max_attempts: 5,
        ..WorkerOptions::default()
    }
}

fn down() -> Change {
    Change {
        kind: EventKind::Down,
        previous: MonitorState::Up,
        current: MonitorState::Down,
        reason: Some("timeout".into()),
        message: Some("no answer within 5 s".into()),
        latency_ms: None,
        locations: Vec::new(),
    }
}

fn key() -> ObjKey {
    ObjKey::new("prod", "api")
}

struct Running {
    store: Store,
    alerter: Arc<Alerter>,
    catalog: watch::Sender<Arc<Snapshot>>,
    shutdown: watch::Sender<bool>,
    worker: tokio::task::JoinHandle<()>,
}

async fn start(store: Store, snap: Snapshot, worker: bool) -> Running {
    let wake = Arc::new(Notify::new());
    let alerter = Arc::new(
        Alerter::open(store.clone(), wake.clone(), None)
            .await
            .unwrap(),
    );
    let (catalog, rx) = watch::channel(Arc::new(snap));
    let (shutdown, stop) = watch::channel(false);
    let worker = if worker {
        tokio::spawn(DeliveryWorker::new(store.clone(), rx, wake, None, options()).run(stop))
    } else {
        tokio::spawn(async {})
    };
    Running {
        store,
        alerter,
        catalog,
        shutdown,
        worker,
    }
}

impl Running {
    async fn handle(&self, change: Change, incident: Option<i64>, at: DateTime<Utc>) -> usize {
        let snap = self.catalog.borrow().clone();
        let handled = self
            .alerter
            .handle(&snap, &key(), incident, change, at)
            .await;
        handled.deliveries.len()
    }

    async fn deliveries(&self) -> Vec<Delivery> {
        self.store
            .deliveries_since(DateTime::from_timestamp(0, 0).unwrap())
            .await
            .unwrap()
    }

    /// Wait until `pred` holds for the deliveries (at most 20 s).
    async fn until(&self, what: &str, pred: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        for _ in 0..1000 {
            let d = self.deliveries().await;
            if pred(&d) {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "timed out waiting for {what}: {:#?}",
            self.deliveries().await
        );
    }

    async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.worker.await;
        self.store.close().await.unwrap();
    }
}

fn status_of(d: &[Delivery], provider: &str) -> Option<DeliveryStatus> {
    d.iter()
        .find(|x| x.provider.name == provider)
        .map(|x| x.status)
}

#[tokio::test]
async fn retries_with_backoff_and_a_slow_provider_blocks_no_one() {
    let hooks = Hooks::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.db")).unwrap();
    let snap = catalog(hooks.addr, &["ok", "flaky", "slow", "reject"], "");
    let run = start(store, snap, true).await;
    assert_eq!(run.handle(down(), None, Utc::now()).await, 4);

    // The slow provider holds its request; the others finish meanwhile.
    hooks.slow_arrived.notified().await;
    let d = run
        .until("ok, flaky and reject to finish", |d| {
            status_of(d, "ok") == Some(DeliveryStatus::Sent)
                && status_of(d, "flaky") == Some(DeliveryStatus::Sent)
                && status_of(d, "reject") == Some(DeliveryStatus::Failed)
        })
        .await;
    assert_eq!(status_of(&d, "slow"), Some(DeliveryStatus::Pending));
    let by = |p: &str| d.iter().find(|x| x.provider.name == p).unwrap().clone();
    // Two 500s, then success: three attempts, the last error cleared.
    assert_eq!(by("flaky").attempts, 3);
    assert_eq!(by("flaky").last_error, None);
    assert_eq!(by("flaky").detail.as_deref(), Some("HTTP 200"));
    // A 400 is final at once.
    assert_eq!(by("reject").attempts, 1);
    assert!(
        by("reject").last_error.as_deref().unwrap().contains("400"),
        "{:?}",
        by("reject")
    );
    hooks.release.notify_one();
    let d = run
        .until("slow to be sent", |d| {
            status_of(d, "slow") == Some(DeliveryStatus::Sent)
        })
        .await;
    assert!(
        d.iter()
            .all(|x| x.event_kind == "down" && x.dedupe_key == "prod/api-down")
    );
    // Each healthy endpoint got the event once, as the spec's AlertEvent JSON.
    for p in ["/ok", "/flaky", "/slow"] {
        let got = hooks.received(p);
        assert_eq!(got.len(), 1, "{p}: {got:?}");
        assert_eq!(got[0]["monitorId"], "prod/api");
        assert_eq!(got[0]["kind"], "down");
        assert_eq!(got[0]["reason"], "timeout");
    }
    // The same event again within the dedupe window: recorded as deduped, not sent.
    assert_eq!(run.handle(down(), None, Utc::now()).await, 4);
    let d = run.deliveries().await;
    assert_eq!(
        d.iter()
            .filter(|x| x.status == DeliveryStatus::Deduped)
            .count(),
        4
    );
    run.stop().await;
}

#[tokio::test]
async fn temporary_failures_give_up_after_max_attempts() {
    let hooks = Hooks::start(usize::MAX).await;
    let store = Store::open_url("sqlite::memory:").unwrap();
    let run = start(store, catalog(hooks.addr, &["flaky"], ""), true).await;
    run.handle(down(), None, Utc::now()).await;
    let d = run
        .until("flaky to fail", |d| {
            status_of(d, "flaky") == Some(DeliveryStatus::Failed)
        })
        .await;
    assert_eq!(d[0].attempts, 5);
    let error = d[0].last_error.clone().unwrap();
    assert!(error.starts_with("gave up after 5 attempts"), "{error}");
    assert!(error.contains("500"), "{error}");
    run.stop().await;
}

#[tokio::test]
async fn crash_with_pending_deliveries_then_restart_sends_each_once() {
    // On every store backend: with PostgreSQL, the second life may be another replica.
    for backend in backends() {
        let hooks = Hooks::start(0).await;
        let db = Db::new(backend).await;
        let snap = catalog(hooks.addr, &["ok"], "");

        // First life: the event is recorded, then the process dies before the worker sent it
        // (no worker runs; the store is dropped without closing, as in a crash).
        {
            let run = start(db.open().await, snap.clone(), false).await;
            assert_eq!(run.handle(down(), None, Utc::now()).await, 1);
            assert_eq!(
                status_of(&run.deliveries().await, "ok"),
                Some(DeliveryStatus::Pending)
            );
            run.worker.abort();
            run.store.flush().await.unwrap();
        }
        assert!(hooks.received("/ok").is_empty());

        // Second life: the worker finds the pending row and sends it once.
        let run = start(db.open().await, snap, true).await;
        run.until("the pending delivery to be sent", |d| {
            status_of(d, "ok") == Some(DeliveryStatus::Sent)
        })
        .await;
        // The gate came back from the database: the same alert within the window is deduped.
        run.handle(down(), None, Utc::now()).await;
        let d = run.deliveries().await;
        assert_eq!(
            d.iter().map(|x| x.status).collect::<Vec<_>>(),
            vec![DeliveryStatus::Sent, DeliveryStatus::Deduped]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(hooks.received("/ok").len(), 1, "{db:?}");
        run.stop().await;
    }
}

#[tokio::test]
async fn a_silence_holds_notifications_back_and_marks_the_incident() {
    let hooks = Hooks::start(0).await;
    let store = Store::open_url("sqlite::memory:").unwrap();
    let silence = r#"---
apiVersion: monitoring.kubekuma.io/v1
kind: Silence
metadata: {name: deploy, namespace: prod}
spec: {startsAt: "2020-01-01T00:00:00Z", endsAt: "2100-01-01T00:00:00Z", reason: "planned deploy"}
"#;
    let run = start(store.clone(), catalog(hooks.addr, &["ok"], silence), true).await;
    let now = Utc::now();
    let id = store
        .open_incident("prod", "api", now, Some(FailureReason::Timeout))
        .await
        .unwrap();
    let snap = run.catalog.borrow().clone();
    let handled = run
        .alerter
        .handle(&snap, &key(), Some(id), down(), now)
        .await;
    let s = handled.suppressed.expect("suppressed");
    assert!(s.to_string().contains("planned deploy"), "{s}");
    assert!(handled.deliveries.is_empty());
    assert!(run.deliveries().await.is_empty());
    let incidents = store.open_incidents().await.unwrap();
    assert_eq!(incidents.len(), 1);
    assert!(incidents[0].suppressed);
    assert!(
        incidents[0]
            .suppress_reason
            .as_deref()
            .unwrap()
            .contains("planned deploy")
    );
    run.stop().await;
}

#[tokio::test]
async fn reminders_while_down_and_template_fallback() {
    let hooks = Hooks::start(0).await;
    let store = Store::open_url("sqlite::memory:").unwrap();
    let mut snap = catalog(hooks.addr, &["ok"], "");
    // A broken title template: the notification still goes, with the default title.
    let policy = snap.policies.get_mut(&ObjKey::new("prod", "all")).unwrap();
    policy.spec.formatting = Some(
        serde_json::from_value(serde_json::json!({
            "titleTemplate": "{{ .monitorName | nosuchfilter }}",
            "bodyTemplate": "{{ .monitorName }} is {{ .state | upper }}",
        }))
        .unwrap(),
    );
    let run = start(store, snap.clone(), true).await;
    let t0 = Utc::now();
    run.handle(down(), None, t0).await;
    // Not due before the resend interval (10 minutes), due after.
    assert_eq!(
        run.alerter
            .remind(&snap, t0 + chrono::Duration::minutes(9))
            .await,
        0
    );
    assert_eq!(
        run.alerter
            .remind(&snap, t0 + chrono::Duration::minutes(10))
            .await,
        1
    );
    let d = run
        .until("down and reminder sent", |d| {
            d.len() == 2 && d.iter().all(|x| x.status == DeliveryStatus::Sent)
        })
        .await;
    assert_eq!(d[1].event_kind, "reminder");
    // The template error is recorded beside the provider's answer.
    let detail = d[0].detail.clone().unwrap_or_default();
    assert!(detail.contains("spec.formatting.titleTemplate"), "{detail}");
    assert!(detail.ends_with("HTTP 200"), "{detail}");
    assert_eq!(d[0].payload["body"], "api is DOWN");
    assert_eq!(d[0].payload["title"], "[DOWN] prod/api");
    // Up again: no more reminders.
    let up = Change {
        kind: EventKind::Up,
        previous: MonitorState::Down,
        current: MonitorState::Up,
        reason: None,
        message: None,
        latency_ms: Some(12.0),
        locations: Vec::new(),
    };
    run.handle(up, None, t0 + chrono::Duration::minutes(11))
        .await;
    assert_eq!(
        run.alerter
            .remind(&snap, t0 + chrono::Duration::minutes(40))
            .await,
        0
    );
    run.stop().await;
}

/// The whole agent (`runtime::run`, folder mode): a TCP monitor whose port closes and
/// opens again notifies a webhook `down`, then `up`, through the outbox; the incident
/// the down opened is the one the deliveries point at.
#[tokio::test]
async fn a_running_agent_notifies_down_and_up() {
    use kubekuma_agent::runtime::{self, AgentOptions};
    let hooks = Hooks::start(0).await;
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target_port = target.local_addr().unwrap().port();
    drop(target);
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("manifests");
    std::fs::create_dir_all(&folder).unwrap();
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
  target: {{tcp: {{host: 127.0.0.1, port: {target_port}}}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationPolicy
metadata: {{name: all, namespace: prod}}
spec: {{match: {{matchNamespaces: [prod]}}, routing: {{providers: [{{ref: {{name: ok}}}}]}}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {{name: ok, namespace: prod}}
spec: {{type: webhook, config: {{webhook: {{url: "http://{}/ok"}}}}}}
"#,
            hooks.addr
        ),
    )
    .unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listen.local_addr().unwrap().port();
    drop(listen);
    let data = dir.path().join("data");
    let opts = AgentOptions {
        config: vec![folder],
        store_url: Some(format!("file://{}", dir.path().join("objects").display())),
        ..AgentOptions::new("alerts", data.clone(), format!("127.0.0.1:{port}"))
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(opts, stop_rx));
    let wait = |n: usize| {
        let hooks = &hooks;
        async move {
            for _ in 0..1500 {
                if hooks.received("/ok").len() >= n {
                    return hooks.received("/ok");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("fewer than {n} notifications: {:?}", hooks.received("/ok"));
        }
    };
    let got = wait(1).await;
    assert_eq!(got[0]["kind"], "down");
    assert_eq!(got[0]["monitorId"], "prod/api");
    assert_eq!(got[0]["previousState"], "pending");
    // The port opens: the monitor recovers and says so.
    let _target = tokio::net::TcpListener::bind(("127.0.0.1", target_port))
        .await
        .unwrap();
    let got = wait(2).await;
    assert_eq!(got[1]["kind"], "up");
    assert_eq!(got[1]["previousState"], "down");
    let _ = stop.send(true);
    task.await.unwrap().unwrap();

    let store = Store::open(&data.join("kubekuma.db")).unwrap();
    let rows = store
        .deliveries_since(DateTime::from_timestamp(0, 0).unwrap())
        .await
        .unwrap();
    let kinds: Vec<(&str, DeliveryStatus)> = rows
        .iter()
        .map(|d| (d.event_kind.as_str(), d.status))
        .collect();
    assert_eq!(
        kinds,
        vec![("down", DeliveryStatus::Sent), ("up", DeliveryStatus::Sent)]
    );
    let incident = rows[0]
        .incident_id
        .expect("the down delivery names its incident");
    assert_eq!(rows[1].incident_id, Some(incident));
    store.close().await.unwrap();
}

/// Certificate expiry: a check reporting fewer days than the policy's threshold
/// notifies once per change of the day count, through `process::process_with`.
#[tokio::test]
async fn expiring_certificates_notify_when_the_day_count_changes() {
    use kubekuma_agent::process::{Hooks as RuntimeHooks, process_with};
    use kubekuma_agent::schedule::{CheckDone, Limits, MonitorPlan, Scheduler};
    use kubekuma_agent::state::live::Live;
    use kubekuma_crds::results::{CertInfo, CheckOutcome};

    let hooks = Hooks::start(0).await;
    let snap = catalog(hooks.addr, &["ok"], "");
    let mut snap = snap;
    snap.policies
        .get_mut(&ObjKey::new("prod", "all"))
        .unwrap()
        .spec
        .triggers = Some(
        serde_json::from_value(
            serde_json::json!({"onCertExpiring": {"enabled": true, "daysThreshold": 14}}),
        )
        .unwrap(),
    );
    // Without a dedupe block every new day count is a new notification.
    snap.policies
        .get_mut(&ObjKey::new("prod", "all"))
        .unwrap()
        .spec
        .routing
        .as_mut()
        .unwrap()
        .dedupe = None;
    let store = Store::open_url("sqlite::memory:").unwrap();
    let run = start(store.clone(), snap.clone(), true).await;
    let (done_tx, _done_rx) = tokio::sync::mpsc::channel(8);
    let runner: kubekuma_agent::schedule::Runner =
        Arc::new(|_| Box::pin(async { CheckOutcome::up(1.0) }));
    let scheduler = Scheduler::spawn(runner, Limits::from_settings(&snap.effective), done_tx);
    let live = std::sync::Mutex::new(Live::default());
    let hooks_rt = RuntimeHooks {
        alerter: Some(run.alerter.clone()),
        catalog: Some(run.catalog.subscribe()),
        ..RuntimeHooks::default()
    };
    let monitor = snap.monitors[&key()].clone();
    let plan = Arc::new(MonitorPlan::new(
        key(),
        Arc::new(monitor.spec),
        snap.plans[&key()].clone(),
        &snap.effective,
    ));
    for days in [30, 13, 13, 12] {
        let mut outcome = CheckOutcome::up(5.0);
        outcome.cert = Some(CertInfo {
            expires_at: Utc::now() + chrono::Duration::days(days),
            days_left: days,
        });
        let done = CheckDone {
            plan: plan.clone(),
            outcome,
            started_at: Utc::now(),
            lateness: Duration::ZERO,
        };
        process_with(done, &store, &live, &scheduler, &hooks_rt).await;
    }
    let d = run
        .until("two certificate notices sent", |d| {
            d.len() == 2 && d.iter().all(|x| x.status == DeliveryStatus::Sent)
        })
        .await;
    assert!(d.iter().all(|x| x.event_kind == "certExpiring"));
    let days: Vec<i64> = hooks
        .received("/ok")
        .iter()
        .map(|j| j["daysLeft"].as_i64().unwrap())
        .collect();
    assert_eq!(days, vec![13, 12]);
    run.stop().await;
}

/// A silence created through the admin API (stored in SQLite, not in the catalog)
/// suppresses like a Silence resource; once expired it no longer does.
#[tokio::test]
async fn silences_created_through_the_api_are_honoured() {
    for backend in backends() {
        let hooks = Hooks::start(0).await;
        let db = Db::new(backend).await;
        let store = db.open().await;
        let run = start(store.clone(), catalog(hooks.addr, &["ok"], ""), true).await;
        let now = Utc::now();
        let spec: kubekuma_crds::SilenceSpec = serde_json::from_value(serde_json::json!({
            "startsAt": (now - chrono::Duration::minutes(1)).to_rfc3339(),
            "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
            "reason": "database migration",
            "selector": {"matchLabels": {"team": "core"}},
        }))
        .unwrap();
        let silence = ObjKey::new("prod", "migration");
        store
            .create_api_silence(&silence, &spec, "user:prod/ann", now)
            .await
            .unwrap();
        let snap = run.catalog.borrow().clone();
        let handled = run.alerter.handle(&snap, &key(), None, down(), now).await;
        let s = handled.suppressed.expect("suppressed by the API silence");
        assert!(s.to_string().contains("database migration"), "{s}");
        assert!(run.deliveries().await.is_empty());

        store.expire_api_silence(&silence, now).await.unwrap();
        let later = now + chrono::Duration::seconds(1);
        let handled = run.alerter.handle(&snap, &key(), None, down(), later).await;
        assert_eq!(handled.suppressed, None);
        assert_eq!(handled.deliveries.len(), 1, "{db:?}");
        run.stop().await;
    }
}

/// Issue 19 item 6: a notification the gate lets through while the store cannot take
/// writes (here: refusing them) is held, not lost (the gate has already counted it as
/// sent, so nothing would queue it again), and recorded and sent once the store takes
/// writes again (at the next reminder tick).
#[tokio::test]
async fn a_notification_while_the_store_refuses_writes_is_held_then_sent() {
    for backend in backends() {
        let hooks = Hooks::start(0).await;
        let db = Db::new(backend).await;
        let store = db.open().await;
        // The worker starts once the store takes writes again: on PostgreSQL a pooled
        // connection it held while `refuse_writes` was lifted would stay read-only.
        let mut run = start(store.clone(), catalog(hooks.addr, &["ok"], ""), false).await;
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let beat = |i: i64| kubekuma_crds::results::Heartbeat {
            namespace: "prod".into(),
            name: "api".into(),
            state: MonitorState::Down,
            latency_ms: None,
            reason: None,
            message: None,
            checked_at: t0 + chrono::Duration::seconds(i),
            attempts: 1,
        };
        store.refuse_writes(true).await.unwrap();
        store.record_heartbeat(beat(0)).unwrap();
        store.flush().await.expect_err("the store refuses writes");
        assert!(store.write_failure().is_some(), "{db:?}");

        let now = Utc::now();
        assert_eq!(run.handle(down(), None, now).await, 0, "{db:?}");
        assert!(run.deliveries().await.is_empty(), "{db:?}");

        store.refuse_writes(false).await.unwrap();
        let mut writable = false;
        for i in 1..300 {
            store.record_heartbeat(beat(i)).unwrap();
            if store.flush().await.is_ok() && store.write_failure().is_none() {
                writable = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(writable, "{db:?}: {:?}", store.write_failure());
        let snap = run.catalog.borrow().clone();
        run.alerter.remind(&snap, now).await;
        assert_eq!(run.deliveries().await.len(), 1, "{db:?}: recorded");
        run.worker = tokio::spawn(
            DeliveryWorker::new(
                store.clone(),
                run.catalog.subscribe(),
                Arc::new(Notify::new()),
                None,
                options(),
            )
            .run(run.shutdown.subscribe()),
        );
        let d = run
            .until("the held delivery to be sent", |d| {
                status_of(d, "ok") == Some(DeliveryStatus::Sent)
            })
            .await;
        assert_eq!(d.len(), 1, "{db:?}: {d:#?}");
        assert_eq!(hooks.received("/ok").len(), 1, "{db:?}");
        run.stop().await;
    }
}

/// Issue 19 item 6: the admin API's silences still hold while PostgreSQL is away (the
/// last ones read are used), so an outage of the database does not end a maintenance.
#[tokio::test]
async fn api_silences_hold_while_postgres_is_away() {
    if !crate::common::postgres::enabled() {
        return;
    }
    use crate::common::postgres::{PASSWORD, PrivateServer};
    let server = Arc::new(
        tokio::task::spawn_blocking(PrivateServer::start)
            .await
            .unwrap(),
    );
    let url = server.url("127.0.0.1", Some(PASSWORD), "sslmode=require");
    let store = Store::open_postgres(
        &url,
        &kubekuma_agent::store::pg::config::PasswordSource::default(),
    )
    .await
    .unwrap();
    let hooks = Hooks::start(0).await;
    let run = start(store.clone(), catalog(hooks.addr, &["ok"], ""), false).await;
    let now = Utc::now();
    let spec: kubekuma_crds::SilenceSpec = serde_json::from_value(serde_json::json!({
        "startsAt": (now - chrono::Duration::minutes(1)).to_rfc3339(),
        "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "reason": "database migration",
        "selector": {"matchLabels": {"team": "core"}},
    }))
    .unwrap();
    store
        .create_api_silence(
            &ObjKey::new("prod", "migration"),
            &spec,
            "user:prod/ann",
            now,
        )
        .await
        .unwrap();
    let snap = run.catalog.borrow().clone();
    let handled = run.alerter.handle(&snap, &key(), None, down(), now).await;
    assert!(handled.suppressed.is_some());

    let s = server.clone();
    tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
    let later = now + chrono::Duration::seconds(5);
    let handled = run.alerter.handle(&snap, &key(), None, down(), later).await;
    let s = handled
        .suppressed
        .expect("still suppressed while the database is away");
    assert!(s.to_string().contains("database migration"), "{s}");
    run.worker.abort();
}

/// Issue 19 item 6: PostgreSQL goes away while a notification is being sent (the
/// receiver has it): the outcome is held and written once the server is back, so the
/// row ends `sent` after one attempt instead of staying pending (and going again later).
#[tokio::test]
async fn a_send_whose_outcome_meets_a_lost_database_is_recorded_when_it_returns() {
    if !crate::common::postgres::enabled() {
        return;
    }
    use crate::common::postgres::{PASSWORD, PrivateServer};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let server = Arc::new(
        tokio::task::spawn_blocking(PrivateServer::start)
            .await
            .unwrap(),
    );
    let url = server.url("127.0.0.1", Some(PASSWORD), "sslmode=require");
    let store = Store::open_postgres(
        &url,
        &kubekuma_agent::store::pg::config::PasswordSource::default(),
    )
    .await
    .unwrap();
    // A receiver that stops the database before it answers its first request.
    let received = Arc::new(AtomicUsize::new(0));
    // Set once the server has stopped (the test resumes it only then: a start while
    // `pg_ctl stop` still waits would make that stop fail).
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (r, s, st) = (received.clone(), server.clone(), stopped.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (r, s, st) = (r.clone(), s.clone(), st.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let (r, s, st) = (r.clone(), s.clone(), st.clone());
                    async move {
                        if r.fetch_add(1, Ordering::SeqCst) == 0 {
                            tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
                            st.store(true, Ordering::SeqCst);
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
    let run = start(store.clone(), catalog(addr, &["ok"], ""), true).await;
    assert_eq!(run.handle(down(), None, Utc::now()).await, 1);
    for _ in 0..600 {
        if stopped.load(Ordering::SeqCst) && store.write_failure().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        store.write_failure().is_some(),
        "the lost database is reported"
    );
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.resume())
        .await
        .unwrap();
    let d = run
        .until("the outcome to be recorded", |d| {
            status_of(d, "ok") == Some(DeliveryStatus::Sent)
        })
        .await;
    assert_eq!(d[0].attempts, 1, "{d:#?}");
    assert_eq!(received.load(Ordering::SeqCst), 1, "sent once");
    run.stop().await;
}
