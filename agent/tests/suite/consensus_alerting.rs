//! The home leader alerts on the consensus of locations: an agent started with
//! `runtime::run` at location `home` on the in-process S3 peer checks two TCP monitors
//! (`web`, `canary`) run at `home`, `eu` and `us` with a quorum of 2; the test writes
//! `eu`'s and `us`'s `results.json` itself (rewritten every second, as their agents
//! would) and a webhook receiver (hyper on 127.0.0.1) records every notification.
//! `canary`'s consensus alerts mark the points where the leader has decided after a
//! change (its down proves `web` is decided by consensus; its up proves a decision was
//! made after `home` saw `web` down).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kubekuma_agent::export::{ObjectTarget, open_store_with};
use kubekuma_agent::runtime::{self, AgentOptions};
use kubekuma_crds::MonitorState;
use kubekuma_crds::objects::{AgentResults, LocationResult, keys};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::common::s3::{self, S3Server};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The webhook receiver: every notification's JSON body, in arrival order.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let store = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let store = store.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            store.lock().unwrap().push(v);
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, seen }
    }

    /// The notifications about `monitor` going `state`.
    fn of(&self, monitor: &str, state: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["monitorName"] == monitor && v["currentState"] == state)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn locations(v: &Value) -> Vec<String> {
    v["locations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What the test's remote locations say, per location and monitor (`None`: the
/// location stopped writing).
type Remote = Arc<Mutex<BTreeMap<&'static str, Option<BTreeMap<&'static str, MonitorState>>>>>;

/// Write each remote location's `results.json` every second, checked now.
fn write_remotes(store: ObjectTarget, remote: Remote) {
    tokio::spawn(async move {
        loop {
            let now = Utc::now();
            let snapshot = remote.lock().unwrap().clone();
            for (location, monitors) in snapshot {
                let Some(monitors) = monitors else { continue };
                let agent = format!("{location}-1");
                let r = AgentResults {
                    layout: "v1".into(),
                    agent_id: agent.clone(),
                    location: location.into(),
                    generated_at: now,
                    monitors: monitors
                        .iter()
                        .map(|(m, s)| {
                            let r = LocationResult {
                                state: *s,
                                since: None,
                                checked_at: Some(now),
                                latency_ms: Some(20.0),
                                reason: None,
                            };
                            (format!("prod/{m}"), r)
                        })
                        .collect(),
                };
                let body = Bytes::from(serde_json::to_vec(&r).unwrap());
                store.put(&keys::results(&agent), body).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

fn manifests(web: u16, canary: u16, hooks: SocketAddr) -> String {
    let tcp = |name: &str, port: u16| {
        format!(
            "---\napiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\n\
             metadata: {{name: {name}, namespace: prod}}\n\
             spec:\n  type: tcp\n  schedule: {{intervalSeconds: 1, timeoutSeconds: 1, retries: 0}}\n\
             \x20 locations: [home, eu, us]\n  quorum: 2\n\
             \x20 target: {{tcp: {{host: 127.0.0.1, port: {port}}}}}\n"
        )
    };
    format!(
        "apiVersion: monitoring.kubekuma.io/v1\nkind: KubeKumaSettings\nmetadata: {{name: kubekuma}}\n\
         spec:\n  scheduler: {{minIntervalSeconds: 1, jitterPercent: 0}}\n  locations: {{staleAfterSeconds: 10}}\n\
         {}{}\
         ---\napiVersion: monitoring.kubekuma.io/v1\nkind: NotificationPolicy\nmetadata: {{name: all, namespace: prod}}\n\
         spec:\n  match: {{matchNamespaces: [prod]}}\n  routing: {{providers: [{{ref: {{name: hook}}}}]}}\n\
         ---\napiVersion: monitoring.kubekuma.io/v1\nkind: NotificationProvider\nmetadata: {{name: hook, namespace: prod}}\n\
         spec: {{type: webhook, config: {{webhook: {{url: \"http://{hooks}/hook\"}}}}}}\n",
        tcp("web", web),
        tcp("canary", canary),
    )
}

/// Quorum 2 of `home`, `eu`, `us`: `home` alone seeing `web` down sends nothing; `eu`
/// seeing it down too sends exactly one notification naming both; when `web` is back
/// at `home` and `eu` stops writing (its last word: down), `eu` turns stale, not down,
/// and the up names the fresh locations.
#[tokio::test]
async fn the_home_leader_alerts_on_the_quorum_of_locations() {
    use MonitorState::{Down, Up};
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hooks = Receiver::start().await;
    let web_target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web_port = web_target.local_addr().unwrap().port();
    let canary_target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let canary_port = canary_target.local_addr().unwrap().port();
    let folder = dir.path().join("manifests");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("m.yaml"),
        manifests(web_port, canary_port, hooks.addr),
    )
    .unwrap();

    let url = format!("s3://{}/shared", s3::BUCKET);
    let options: Vec<(String, String)> = server
        .options()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let refs: Vec<(&str, &str)> = options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let store = open_store_with(&url, &refs).unwrap();
    let opts = AgentOptions {
        config: vec![folder],
        store_url: Some(url.clone()),
        store_options: options.clone(),
        flush_interval: Duration::from_secs(3600),
        location: "home".into(),
        ..AgentOptions::new(
            "home-1",
            dir.path().join("data"),
            format!("127.0.0.1:{}", free_port()),
        )
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(opts, stop_rx));

    let home_sees = |monitor: &'static str, state: MonitorState| {
        let store = store.clone();
        async move {
            let Ok(Some(body)) = store.get(&keys::results("home-1")).await else {
                return false;
            };
            serde_json::from_slice::<AgentResults>(&body).is_ok_and(|r| {
                r.monitors
                    .get(&format!("prod/{monitor}"))
                    .is_some_and(|m| m.state == state)
            })
        }
    };
    wait_for("home to see both monitors up", || async {
        home_sees("web", Up).await && home_sees("canary", Up).await
    })
    .await;

    // eu and us see web up and the canary down: the canary's consensus is down.
    let remote: Remote = Arc::default();
    let both = |web: MonitorState, canary: MonitorState| {
        Some(BTreeMap::from([("web", web), ("canary", canary)]))
    };
    remote.lock().unwrap().insert("eu", both(Up, Down));
    remote.lock().unwrap().insert("us", both(Up, Down));
    write_remotes(store.clone(), remote.clone());
    wait_for("the canary's consensus down", || async {
        !hooks.of("canary", "down").is_empty()
    })
    .await;
    assert_eq!(locations(&hooks.of("canary", "down")[0]), ["eu", "us"]);

    // Only home loses web: degraded, no notification. The canary coming up everywhere
    // marks a decision made after home saw web down.
    drop(web_target);
    wait_for("home to see web down", || home_sees("web", Down)).await;
    remote.lock().unwrap().insert("eu", both(Up, Up));
    remote.lock().unwrap().insert("us", both(Up, Up));
    wait_for("the canary's consensus up", || async {
        !hooks.of("canary", "up").is_empty()
    })
    .await;
    assert!(
        hooks.of("web", "down").is_empty(),
        "one location seeing web down notified: {:?}",
        hooks.all()
    );

    // eu loses it too: the quorum of 2 agrees, one notification naming both.
    remote.lock().unwrap().insert("eu", both(Down, Up));
    wait_for("web's consensus down", || async {
        !hooks.of("web", "down").is_empty()
    })
    .await;
    let down = hooks.of("web", "down");
    assert_eq!(locations(&down[0]), ["eu", "home"], "{down:?}");

    // web is back at home; eu stops writing (its last word: down). While eu is fresh the
    // consensus is degraded (no up); once eu is stale it counts for nothing: up, naming
    // the fresh locations, eu named stale.
    let web_target = std::net::TcpListener::bind(("127.0.0.1", web_port)).unwrap();
    remote.lock().unwrap().insert("eu", None);
    wait_for("web's consensus up", || async {
        !hooks.of("web", "up").is_empty()
    })
    .await;
    let up = hooks.of("web", "up");
    assert_eq!(locations(&up[0]), ["home", "us"], "{up:?}");
    assert!(
        up[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stale: eu")),
        "{up:?}"
    );
    assert_eq!(
        hooks.of("web", "down").len(),
        1,
        "exactly one down: {:?}",
        hooks.all()
    );
    assert!(
        hooks.of("web", "flapping").is_empty(),
        "no per-location flapping alert: {:?}",
        hooks.all()
    );
    drop(web_target);
    drop(canary_target);
    stop.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
}
