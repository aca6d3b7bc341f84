//! Push monitors end to end: an agent started with `runtime::run` on a folder of
//! manifests, pushed to over HTTP on 127.0.0.1 (`/api/v1/push/<token>`), observed through
//! its SQLite database and its exported objects; and the push hub's pieces on their own
//! (generated tokens in the live view and kept by the store, on SQLite and PostgreSQL; a
//! miss overtaken by a push).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use kubekuma_agent::catalog::ObjKey;
use kubekuma_agent::checks::Plan;
use kubekuma_agent::push::{PushError, PushHub, Report};
use kubekuma_agent::runtime::{self, AgentOptions};
use kubekuma_agent::schedule::{CheckDone, MonitorPlan};
use kubekuma_agent::state::live::Live;
use kubekuma_agent::store::Store;
use kubekuma_agent::sync;
use kubekuma_crds::objects::{AgentState, keys};
use kubekuma_crds::{EffectiveSettings, MonitorSpec};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, watch};

use crate::common::backends::{Db, backends};

const SETTINGS: &str = "apiVersion: monitoring.kubekuma.io/v1
kind: KubeKumaSettings
metadata: {name: kubekuma}
spec:
  scheduler: {minIntervalSeconds: 1, jitterPercent: 0}
";

/// A push monitor in namespace `e2e`; `push` is the flow mapping of `target.push`.
fn monitor(name: &str, push: &str) -> String {
    format!(
        "---\napiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: {name}, namespace: e2e}}\nspec:\n  type: push\n  target:\n    push: {push}\n"
    )
}

struct Agent {
    base: String,
    db: PathBuf,
    objects: PathBuf,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), runtime::RunError>>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Start an agent on the manifests in `dir` (written when given), its data in `dir`.
async fn start(dir: &Path, manifests: Option<&str>) -> Agent {
    let folder = dir.join("manifests");
    if let Some(m) = manifests {
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("m.yaml"), format!("{SETTINGS}{m}")).unwrap();
    }
    let port = free_port();
    let data = dir.join("data");
    let objects = dir.join("objects");
    let opts = AgentOptions {
        config: vec![folder],
        store_url: Some(format!("file://{}", objects.display())),
        flush_interval: Duration::from_millis(200),
        ..AgentOptions::new("push", data.clone(), format!("127.0.0.1:{port}"))
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(opts, stop_rx));
    let agent = Agent {
        base: format!("http://127.0.0.1:{port}"),
        db: data.join("kubekuma.db"),
        objects,
        stop,
        task,
    };
    let client = reqwest::Client::new();
    let ready = format!("{}/ready", agent.base);
    wait_for("the agent to be ready", || {
        let (client, ready) = (client.clone(), ready.clone());
        async move {
            client
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    agent
}

impl Agent {
    async fn push(&self, method: reqwest::Method, token: &str, query: &str) -> reqwest::Response {
        let url = format!("{}/api/v1/push/{token}{query}", self.base);
        reqwest::Client::new()
            .request(method, url)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, token: &str, query: &str) -> (u16, serde_json::Value) {
        let r = self.push(reqwest::Method::GET, token, query).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    fn heartbeats(&self, name: &str) -> Vec<Beat> {
        heartbeats(&self.db, name)
    }

    /// The state of `e2e/<name>` in the exported state.json.
    fn exported(&self, name: &str) -> Option<kubekuma_crds::objects::MonitorNow> {
        let path = self.objects.join(keys::state("push"));
        let s: AgentState = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        s.monitors.get(&format!("e2e/{name}")).cloned()
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Beat {
    state: String,
    reason: Option<String>,
    message: Option<String>,
    latency_ms: Option<f64>,
}

fn read_only(db: &Path) -> Option<Connection> {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()
}

/// Heartbeats of `e2e/<name>`, oldest first.
fn heartbeats(db: &Path, name: &str) -> Vec<Beat> {
    let Some(c) = read_only(db) else {
        return vec![];
    };
    let Ok(mut st) = c.prepare(
        "SELECT state, reason, message, latency_ms FROM heartbeats
         WHERE monitor_namespace = 'e2e' AND monitor_name = ?1 ORDER BY checked_at",
    ) else {
        return vec![];
    };
    st.query_map([name], |r| {
        Ok(Beat {
            state: r.get(0)?,
            reason: r.get(1)?,
            message: r.get(2)?,
            latency_ms: r.get(3)?,
        })
    })
    .map(|rows| rows.filter_map(Result::ok).collect())
    .unwrap_or_default()
}

/// The generated token stored for `e2e/<name>`.
fn stored_token(db: &Path, name: &str) -> Option<String> {
    read_only(db)?
        .query_row(
            "SELECT generated_token FROM push_monitors
             WHERE monitor_namespace = 'e2e' AND monitor_name = ?1",
            [name],
            |r| r.get(0),
        )
        .ok()?
}

/// `(reason, open)` of the incidents of `e2e/<name>`, oldest first.
fn incidents(db: &Path, name: &str) -> Vec<(Option<String>, bool)> {
    let Some(c) = read_only(db) else {
        return vec![];
    };
    let Ok(mut st) = c.prepare(
        "SELECT reason, ended_at IS NULL FROM incidents
         WHERE monitor_namespace = 'e2e' AND monitor_name = ?1 ORDER BY id",
    ) else {
        return vec![];
    };
    st.query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const BACKUP: &str = "{token: backup-token-0123456789, intervalSeconds: 300}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_the_spec_token_marks_the_monitor_up() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), Some(&monitor("backup", BACKUP))).await;
    assert!(
        agent.heartbeats("backup").is_empty(),
        "nothing before a push"
    );

    let (status, body) = agent.get("backup-token-0123456789", "").await;
    assert_eq!((status, body), (200, serde_json::json!({"ok": true})));
    wait_for("an up heartbeat", || async {
        agent.heartbeats("backup")
            == vec![Beat {
                state: "up".into(),
                reason: None,
                message: None,
                latency_ms: None,
            }]
    })
    .await;
    wait_for("up in the exported state", || async {
        agent
            .exported("backup")
            .is_some_and(|m| m.state.as_str() == "up")
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_status_down_records_down_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), Some(&monitor("backup", BACKUP))).await;

    let r = agent
        .push(
            reqwest::Method::POST,
            "backup-token-0123456789",
            "?status=down&msg=disk%20full%0Aon%20%2Fvar",
        )
        .await;
    assert_eq!(r.status(), 200);
    wait_for("a down heartbeat with the message", || async {
        agent.heartbeats("backup").last().is_some_and(|b| {
            b.state == "down"
                && b.reason.as_deref() == Some("unhealthy")
                && b.message.as_deref() == Some("disk full\\non /var")
        })
    })
    .await;
    wait_for("an open incident", || async {
        incidents(&agent.db, "backup") == vec![(Some("unhealthy".into()), true)]
    })
    .await;

    let (status, _) = agent
        .get("backup-token-0123456789", "?status=up&msg=OK")
        .await;
    assert_eq!(status, 200);
    wait_for("up again, the incident closed", || async {
        agent
            .heartbeats("backup")
            .last()
            .is_some_and(|b| b.state == "up" && b.message.as_deref() == Some("OK"))
            && incidents(&agent.db, "backup") == vec![(Some("unhealthy".into()), false)]
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_sets_the_latency() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), Some(&monitor("backup", BACKUP))).await;

    let (status, _) = agent
        .get("backup-token-0123456789", "?status=up&msg=OK&ping=123.5")
        .await;
    assert_eq!(status, 200);
    wait_for(
        "the latency in the heartbeat and the exported state",
        || async {
            agent
                .heartbeats("backup")
                .last()
                .is_some_and(|b| b.latency_ms == Some(123.5))
                && agent
                    .exported("backup")
                    .is_some_and(|m| m.latency_ms == Some(123.5))
        },
    )
    .await;
    let (status, body) = agent.get("backup-token-0123456789", "?ping=fast").await;
    assert_eq!(
        (status, body),
        (
            400,
            serde_json::json!({"ok": false, "msg": "ping must be a number of milliseconds"})
        )
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_token_is_stored_and_the_same_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), Some(&monitor("gen", "{intervalSeconds: 300}"))).await;
    let token = stored_token(&agent.db, "gen").expect("a generated token");
    assert!(token.len() >= 32, "{} characters", token.len());
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "url-safe"
    );
    assert_eq!(agent.get(&token, "").await.0, 200);
    wait_for("the push recorded", || async {
        agent.heartbeats("gen").len() == 1
    })
    .await;
    wait_for("an export", || async { agent.exported("gen").is_some() }).await;
    let objects = agent.objects.clone();
    agent.stop().await;

    let agent = start(dir.path(), None).await;
    assert_eq!(
        stored_token(&agent.db, "gen").as_deref(),
        Some(token.as_str())
    );
    assert_eq!(agent.get(&token, "").await.0, 200);
    wait_for("the push after the restart recorded", || async {
        agent.heartbeats("gen").len() == 2
    })
    .await;
    agent.stop().await;

    // A token is a credential: no exported object contains it.
    let mut files = vec![objects];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            assert!(!text.contains(&token), "{} holds the token", p.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_get_404_then_429() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), Some(&monitor("backup", BACKUP))).await;

    let r = agent
        .push(reqwest::Method::PUT, "backup-token-0123456789", "")
        .await;
    assert_eq!(r.status(), 405);
    for i in 0..10 {
        let (status, body) = agent.get(&format!("guess-{i:04}-aaaaaaaa"), "").await;
        assert_eq!(
            (status, body),
            (
                404,
                serde_json::json!({"ok": false, "msg": "Monitor not found or not active."})
            ),
            "guess {i}"
        );
    }
    let r = agent
        .push(reqwest::Method::GET, "guess-0010-aaaaaaaa", "")
        .await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&retry_after), "Retry-After {retry_after}");
    // While limited, the client learns nothing, not even about a valid token.
    let r = agent
        .push(reqwest::Method::GET, "backup-token-0123456789", "")
        .await;
    assert_eq!(r.status(), 429);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_push_within_interval_and_grace_is_a_missed_down() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = "{token: quiet-token-0123456789, intervalSeconds: 1, graceSeconds: 1}";
    let agent = start(dir.path(), Some(&monitor("quiet", quiet))).await;

    // The second miss may show as flapping (down, up, down within the flapping window).
    let missed = |beats: &[Beat], tail: &str| {
        beats.iter().any(|b| {
            (b.state == "down" || b.state == "flapping")
                && b.reason.as_deref() == Some("missed")
                && b.message.as_deref().is_some_and(|m| {
                    m.starts_with("no push within 2s (interval 1s + grace 1s); ")
                        && m.contains(tail)
                })
        })
    };
    wait_for("a missed down", || async {
        missed(&agent.heartbeats("quiet"), "no push received since ")
    })
    .await;
    wait_for("an open incident with reason missed", || async {
        incidents(&agent.db, "quiet") == vec![(Some("missed".into()), true)]
            && agent
                .exported("quiet")
                .is_some_and(|m| m.state.as_str() == "down")
    })
    .await;

    // A push ends it; without further pushes it is missed again, naming the last push.
    assert_eq!(agent.get("quiet-token-0123456789", "").await.0, 200);
    wait_for("up, the incident closed", || async {
        incidents(&agent.db, "quiet") == vec![(Some("missed".into()), false)]
    })
    .await;
    wait_for("missed again after the push", || async {
        missed(&agent.heartbeats("quiet"), "; last push ")
            && incidents(&agent.db, "quiet").len() == 2
    })
    .await;
    agent.stop().await;
}

fn plan(name: &str, push: &str) -> MonitorPlan {
    let spec: MonitorSpec =
        serde_yaml_ng::from_str(&format!("type: push\ntarget:\n  push: {push}\n")).unwrap();
    let check = Plan::of("e2e", &spec).unwrap();
    MonitorPlan::new(
        ObjKey::new("e2e", name),
        Arc::new(spec),
        Arc::new(check),
        &EffectiveSettings::default(),
    )
}

#[tokio::test]
async fn generated_tokens_reach_the_live_view_and_stay() {
    let store = Store::open_url("sqlite::memory:").unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let hub = PushHub::new(store.clone(), tx);
    let live = Mutex::new(Live::default());
    let plans = [
        plan("gen", "{}"),
        plan("named", "{token: named-token-0123456789}"),
    ];
    sync::sync_push(&hub, &plans, &live).await;
    let token_of = |name: &str| {
        live.lock()
            .unwrap()
            .monitors
            .get(&ObjKey::new("e2e", name))
            .and_then(|m| m.push_token.clone())
    };
    let token = token_of("gen").expect("a generated token in the live view");
    assert_eq!(token.expose().len(), 43);
    assert!(!format!("{:?}", live.lock().unwrap()).contains(token.expose()));
    assert_eq!(token_of("named"), None, "a spec token is not the status's");

    // A catalog reload keeps it; pushes with either token reach the processor.
    sync::sync_push(&hub, &plans, &live).await;
    assert_eq!(token_of("gen"), Some(token.clone()));
    let up = Report::parse(None).unwrap();
    let key = hub.receive(token.expose(), &up, Utc::now()).await.unwrap();
    assert_eq!(key, ObjKey::new("e2e", "gen"));
    let done = rx.recv().await.unwrap();
    assert!(done.outcome.up && hub.should_record(&done));
    hub.receive("named-token-0123456789", &up, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        hub.receive("named-token-012345678", &up, Utc::now()).await,
        Err(PushError::NotFound)
    );

    // A removed monitor's token is forgotten; one added again gets a new token.
    sync::sync_push(&hub, &plans[1..], &live).await;
    assert_eq!(
        hub.receive(token.expose(), &up, Utc::now()).await,
        Err(PushError::NotFound)
    );
    sync::sync_push(&hub, &plans, &live).await;
    assert_ne!(token_of("gen"), Some(token));
}

/// A generated token lives in the store: another agent on the same database (a
/// restart, or with PostgreSQL a standby taking over) serves the same push URL.
#[tokio::test]
async fn a_generated_token_survives_a_new_agent_on_the_same_store() {
    for backend in backends() {
        let db = Db::new(backend).await;
        let plans = [plan("gen", "{}")];
        let token_in = |live: &Mutex<Live>| {
            live.lock()
                .unwrap()
                .monitors
                .get(&ObjKey::new("e2e", "gen"))
                .and_then(|m| m.push_token.clone())
                .expect("a generated token")
        };
        let first = {
            let store = db.open().await;
            let (tx, _rx) = mpsc::channel(16);
            let hub = PushHub::new(store.clone(), tx);
            let live = Mutex::new(Live::default());
            sync::sync_push(&hub, &plans, &live).await;
            store.close().await.unwrap();
            token_in(&live)
        };
        let store = db.open().await;
        let (tx, mut rx) = mpsc::channel(16);
        let hub = PushHub::new(store.clone(), tx);
        let live = Mutex::new(Live::default());
        sync::sync_push(&hub, &plans, &live).await;
        assert_eq!(token_in(&live), first, "{db:?}");
        let up = Report::parse(None).unwrap();
        let key = hub.receive(first.expose(), &up, Utc::now()).await.unwrap();
        assert_eq!(key, ObjKey::new("e2e", "gen"));
        assert!(rx.recv().await.unwrap().outcome.up);
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_miss_overtaken_by_a_push_is_not_recorded() {
    let store = Store::open_url("sqlite::memory:").unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let hub = PushHub::new(store, tx);
    let plans = [plan(
        "late",
        "{token: late-token-0123456789, intervalSeconds: 60}",
    )];
    let started = Utc::now() - chrono::TimeDelta::hours(1);
    hub.apply(&plans, started).await;
    let key = ObjKey::new("e2e", "late");

    let now = Utc::now();
    let outcome = hub.evaluate(&key, now);
    assert_eq!(
        outcome.reason,
        Some(kubekuma_crds::results::FailureReason::Missed)
    );
    let missed = CheckDone {
        plan: Arc::new(plans[0].clone()),
        outcome,
        started_at: now,
        lateness: Duration::ZERO,
    };
    assert!(hub.should_record(&missed));
    // Evaluated again at once: nothing new to record (one miss per interval).
    let again = hub.evaluate(&key, now);
    assert!(again.metadata.contains_key(kubekuma_agent::push::NOT_DUE));

    // The push arrives after the evaluation but before its result was processed.
    hub.receive(
        "late-token-0123456789",
        &Report::parse(None).unwrap(),
        now + chrono::TimeDelta::milliseconds(5),
    )
    .await
    .unwrap();
    assert!(rx.recv().await.unwrap().outcome.up);
    assert!(!hub.should_record(&missed));
}
