//! Failover on one shared PostgreSQL with two real `kubekuma agent` processes (folder
//! mode, the same manifests, their own data folders): they elect a leader through the
//! database; the leader is killed with SIGKILL in the middle of an outage while a
//! notification is in flight; the standby takes over and continues from the shared state.
//! A webhook receiver (hyper on 127.0.0.1) records every notification.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kubekuma_agent::store::Store;
use kubekuma_agent::store::deliveries::DeliveryStatus;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::common::users::phc;
use crate::common::{call_api, postgres};

const SECRET: &str = "0123456789abcdef0123456789abcdef-failover";
const PASSWORD: &str = "ann-password-failover";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A notification as the receiver saw it.
#[derive(Clone, Debug)]
struct Arrival {
    monitor: String,
    state: String,
    /// Whether the receiver answered it (the first `down` of `api` it holds forever:
    /// the send in flight when the leader dies).
    answered: bool,
}

/// The webhook receiver: records each notification's monitor and state; holds the first
/// notification of `api` going down without answering.
struct Receiver {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    _stop: watch::Sender<bool>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
        let (stop, stop_rx) = watch::channel(false);
        let seen = arrivals.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let (seen, stop_rx) = (seen.clone(), stop_rx.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (seen, mut stop_rx) = (seen.clone(), stop_rx.clone());
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                            let (monitor, state) = (text("monitorName"), text("currentState"));
                            let hold = {
                                let mut seen = seen.lock().unwrap();
                                let first = monitor == "api"
                                    && state == "down"
                                    && !seen.iter().any(|a: &Arrival| a.monitor == "api");
                                seen.push(Arrival {
                                    monitor,
                                    state,
                                    answered: !first,
                                });
                                first
                            };
                            if hold {
                                let _ = stop_rx.wait_for(|s| *s).await;
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
            _stop: stop,
        }
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    fn count(&self, monitor: &str, state: &str) -> usize {
        self.arrivals()
            .iter()
            .filter(|a| a.monitor == monitor && a.state == state)
            .count()
    }
}

/// Two TCP monitors on `target` (`quiet` is silenced through the API during the test), a
/// push monitor with a generated token, a policy to the receiver and an admin user.
fn manifests(folder: &Path, target: u16, hooks: SocketAddr) {
    std::fs::create_dir_all(folder).unwrap();
    let tcp = |name: &str, team: &str| {
        format!(
            "---\napiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\n\
             metadata: {{name: {name}, namespace: prod, labels: {{team: {team}}}}}\n\
             spec:\n  type: tcp\n  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}\n\
             \x20 target: {{tcp: {{host: 127.0.0.1, port: {target}}}}}\n"
        )
    };
    let mut y = String::from(
        "apiVersion: monitoring.kubekuma.io/v1\nkind: KubeKumaSettings\nmetadata: {name: kubekuma}\n\
         spec:\n  scheduler: {minIntervalSeconds: 1, jitterPercent: 0}\n",
    );
    y.push_str(&tcp("api", "core"));
    y.push_str(&tcp("quiet", "batch"));
    y.push_str(&format!(
        "---\napiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: beat, namespace: prod}}\n\
         spec:\n  type: push\n  schedule: {{intervalSeconds: 300}}\n  target: {{push: {{}}}}\n\
         ---\napiVersion: monitoring.kubekuma.io/v1\nkind: NotificationPolicy\nmetadata: {{name: all, namespace: prod}}\n\
         spec:\n  match: {{matchNamespaces: [prod]}}\n  routing: {{providers: [{{ref: {{name: hook}}}}]}}\n\
         ---\napiVersion: monitoring.kubekuma.io/v1\nkind: NotificationProvider\nmetadata: {{name: hook, namespace: prod}}\n\
         spec: {{type: webhook, config: {{webhook: {{url: \"http://{hooks}/hook\"}}}}}}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: ann-pw, namespace: prod}}\nstringData:\n  hash: '{}'\n\
         ---\napiVersion: monitoring.kubekuma.io/v1\nkind: LocalUser\nmetadata: {{name: ann, namespace: prod}}\n\
         spec:\n  username: ann\n  role: admin\n  passwordHashSecretRef: {{name: ann-pw, key: hash}}\n",
        phc(PASSWORD)
    ));
    std::fs::write(folder.join("m.yaml"), y).unwrap();
}

fn agent(manifests: &Path, data: &Path, port: u16, url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .args(["agent", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(manifests)
        .arg("--data")
        .arg(data)
        .env("DATABASE_URL", url)
        .env("SESSION_SECRET", SECRET)
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// `/ready`'s role once the agent answers ready with one.
async fn role(client: &reqwest::Client, port: u16) -> Option<String> {
    let r = client
        .get(format!("http://127.0.0.1:{port}/ready"))
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["role"].as_str().map(str::to_string)
}

/// Wait (at most `limit`) until `port` reports `want`.
async fn wait_role(client: &reqwest::Client, port: u16, want: &str, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if role(client, port).await.as_deref() == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

/// Two agents on one PostgreSQL database. The leader (A) sees `api` and `quiet` go down,
/// opens their incidents, and sends `api`'s notification, which the receiver holds; an
/// admin's session, an API silence (for `quiet`), an acknowledgement and a public update
/// are made through A; A is killed with SIGKILL. The standby (B) then leads: the session
/// works there, the silence holds, the incident keeps its acknowledgement and update, the
/// push token still works, the held notification is re-sent exactly once and nothing
/// else repeats (no new `down`, no `up`); when the target comes back B sends one `up`.
#[tokio::test]
async fn the_standby_takes_over_without_losing_state() {
    if !postgres::enabled() {
        return;
    }
    let url = postgres::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let hooks = Receiver::start().await;
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target_port = target.local_addr().unwrap().port();
    let folder = dir.path().join("manifests");
    manifests(&folder, target_port, hooks.addr);
    let client = reqwest::Client::new();

    let (port_a, port_b) = (free_port(), free_port());
    let mut a = agent(&folder, &dir.path().join("a"), port_a, &url);
    assert!(
        wait_role(&client, port_a, "leader", Duration::from_secs(60)).await,
        "the first agent leads"
    );
    let mut b = agent(&folder, &dir.path().join("b"), port_b, &url);
    assert!(
        wait_role(&client, port_b, "standby", Duration::from_secs(60)).await,
        "the second agent stands by"
    );
    let (base_a, base_b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );
    // A load balancer's check that routes to the leader only.
    let leader_check = |base: &str| client.get(format!("{base}/ready?role=leader")).send();
    assert_eq!(leader_check(&base_a).await.unwrap().status(), 200);
    assert_eq!(leader_check(&base_b).await.unwrap().status(), 503);

    // A session, made on the leader.
    let (s, login) = call_api(
        &client,
        &base_a,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "ann", "password": PASSWORD})),
    )
    .await;
    assert_eq!(s, 200, "{login}");
    let token = login["token"].as_str().unwrap().to_string();

    // The push monitor's generated token works on the leader; the standby refuses pushes.
    let store = Store::connect(&url).await.unwrap();
    let mut push_token = None;
    for _ in 0..100 {
        push_token = store
            .push_rows()
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.name == "beat")
            .and_then(|r| r.generated_token);
        if push_token.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let push_token = push_token.expect("the leader generated a push token");
    let push = |base: &str| {
        client
            .get(format!("{base}/api/v1/push/{push_token}"))
            .send()
    };
    assert_eq!(push(&base_a).await.unwrap().status(), 200);
    assert_eq!(
        push(&base_b).await.unwrap().status(),
        503,
        "a standby sends pushes to the leader"
    );

    // Silence `quiet` through the API, on the leader.
    let (s, silence) = call_api(
        &client,
        &base_a,
        Method::POST,
        "/api/v1/silences",
        Some(&token),
        Some(
            json!({"namespace": "prod", "durationMinutes": 60, "reason": "batch window",
                    "selector": {"matchLabels": {"team": "batch"}}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{silence}");

    // The outage: `api` goes down, its notification is in flight (held by the receiver).
    drop(target);
    assert!(
        wait_until(Duration::from_secs(60), || hooks.count("api", "down") == 1).await,
        "the leader sends api's down notification: {:?}",
        hooks.arrivals()
    );
    let (s, list) = call_api(
        &client,
        &base_a,
        Method::GET,
        "/api/v1/incidents?state=open",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, 200, "{list}");
    let incident = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["monitorId"].as_str().is_some_and(|m| m.ends_with("api")))
        .unwrap_or_else(|| panic!("api's incident is open: {list}"))
        .clone();
    let id = incident["id"].as_i64().unwrap();
    for (path, body) in [
        ("acknowledge", json!({"note": "looking"})),
        ("updates", json!({"message": "We are restoring the API."})),
    ] {
        let (s, out) = call_api(
            &client,
            &base_a,
            Method::POST,
            &format!("/api/v1/incidents/{id}/{path}"),
            Some(&token),
            Some(body),
        )
        .await;
        assert!(s.is_success(), "{path}: {s} {out}");
    }

    // While the leader lives nobody else sends its notification (the standby sends
    // nothing; its worker would see the row pending within its 2 s poll).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        hooks.count("api", "down"),
        1,
        "only the leader sends: {:?}",
        hooks.arrivals()
    );

    // SIGKILL: no shutdown, no release of anything.
    a.start_kill().unwrap();
    let _ = a.wait().await;
    let killed = Instant::now();
    assert!(
        wait_role(&client, port_b, "leader", Duration::from_secs(60)).await,
        "the standby takes over"
    );
    eprintln!(
        "takeover after SIGKILL: {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(leader_check(&base_b).await.unwrap().status(), 200);

    // The session, the incident with its acknowledgement and update, the push token.
    let (s, me) = call_api(
        &client,
        &base_b,
        Method::GET,
        "/api/v1/auth/me",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, 200, "the session made on the old leader is valid: {me}");
    let (s, got) = call_api(
        &client,
        &base_b,
        Method::GET,
        "/api/v1/incidents?monitorId=prod/api",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, 200, "{got}");
    let got = got
        .as_array()
        .and_then(|l| l.iter().find(|i| i["id"] == id))
        .unwrap_or_else(|| panic!("incident {id} on the new leader: {got}"))
        .clone();
    assert_eq!(got["acknowledged"], true, "{got}");
    assert!(
        got["updates"].to_string().contains("restoring the API"),
        "{got}"
    );
    assert_eq!(got["state"], "down", "still open: {got}");
    let mut pushed = false;
    for _ in 0..50 {
        if push(&base_b).await.unwrap().status() == 200 {
            pushed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pushed, "the generated push token works on the new leader");

    // The delivery the old leader had in flight is re-sent once, by the new leader.
    assert!(
        wait_until(Duration::from_secs(120), || hooks.count("api", "down") == 2).await,
        "the in-flight notification is re-sent: {:?}",
        hooks.arrivals()
    );
    // The target comes back on the same port: one `up`, sent by the new leader.
    let back = std::net::TcpListener::bind(("127.0.0.1", target_port)).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || hooks.count("api", "up") == 1).await,
        "the new leader sends api's recovery: {:?}",
        hooks.arrivals()
    );
    // Give a repeat the time to show up before counting.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let all = hooks.arrivals();
    assert_eq!(hooks.count("api", "down"), 2, "held + one re-send: {all:?}");
    assert_eq!(hooks.count("api", "up"), 1, "{all:?}");
    assert_eq!(
        all.iter().filter(|a| a.monitor == "quiet").count(),
        0,
        "the API silence made on the old leader holds on the new one: {all:?}"
    );
    assert!(
        all.iter().all(|a| a.monitor == "api"),
        "nothing else was notified: {all:?}"
    );
    assert_eq!(all.iter().filter(|a| !a.answered).count(), 1, "{all:?}");
    let rows = store
        .deliveries_since(chrono::Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    let api_rows: Vec<_> = rows.iter().filter(|d| d.monitor.name == "api").collect();
    assert_eq!(api_rows.len(), 2, "one down row, one up row: {rows:?}");
    assert!(
        api_rows.iter().all(|d| d.status == DeliveryStatus::Sent),
        "{rows:?}"
    );
    drop(back);
    b.start_kill().unwrap();
    let _ = b.wait().await;
}
