//! Kube mode: the catalog read through watchers, and status written back. No real API
//! server can run here, so every test runs against `FakeKube`, a fake that speaks the
//! real protocol (list with resourceVersion, watch streams, BOOKMARK, 410 Gone after a
//! compaction, the status subresource).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::catalog::{ObjKey, ResourceId, Severity, Snapshot};
use kubekuma_agent::cluster::catalog::{KubeCatalog, KubeWatch};
use kubekuma_agent::cluster::status::{StatusOptions, StatusWriter};
use kubekuma_agent::runtime::{self, AgentOptions, CatalogSource, KubeMode};
use kubekuma_agent::state::live::Live;
use kubekuma_agent::store::Store;
use kubekuma_crds::Kind;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::fake_kube::FakeKube;

const WAIT: Duration = Duration::from_secs(30);

const API: &str = "monitoring.kubekuma.io/v1";

/// Store a manifest written as YAML, as `kubectl apply` would leave it.
fn put(fake: &FakeKube, yaml: &str) -> Value {
    let v: Value = serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    fake.put_object(v)
}

/// A tcp monitor `ns/name` against `port`, every second.
fn tcp_monitor(ns: &str, name: &str, port: u32) -> String {
    format!(
        "apiVersion: {API}\nkind: Monitor\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  type: tcp\n  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}\n  \
         target: {{tcp: {{host: 127.0.0.1, port: {port}}}}}\n"
    )
}

const SETTINGS: &str = "apiVersion: monitoring.kubekuma.io/v1
kind: KubeKumaSettings
metadata: {name: kubekuma}
spec:
  scheduler: {minIntervalSeconds: 1, jitterPercent: 0}
";

/// Wait until `check` holds, polling.
async fn until(what: &str, check: impl FnMut() -> bool) {
    until_shown(what, check, String::new).await
}

/// [`until`], showing `state` when it times out.
async fn until_shown(what: &str, mut check: impl FnMut() -> bool, state: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn monitors(w: &KubeWatch) -> BTreeSet<String> {
    w.snapshots
        .borrow()
        .monitors
        .keys()
        .map(ObjKey::to_string)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn start(fake: &FakeKube, namespaces: &[&str]) -> KubeWatch {
    let ns = namespaces.iter().map(|s| s.to_string()).collect();
    KubeCatalog::new(fake.client(), ns).watch(|_| {}).await
}

/// The status of an object in the fake.
fn status(fake: &FakeKube, kind: &str, ns: &str, name: &str) -> Value {
    let obj = fake.get_object(API, kind, Some(ns), name);
    obj.map(|o| o["status"].clone()).unwrap_or(Value::Null)
}

fn condition(status: &Value, type_: &str) -> Value {
    let conds = status["conditions"].as_array().cloned().unwrap_or_default();
    conds
        .into_iter()
        .find(|c| c["type"] == type_)
        .unwrap_or(Value::Null)
}

/// PATCH requests to the status of `plural/name`.
fn status_patches(fake: &FakeKube, plural: &str, name: &str) -> usize {
    let suffix = format!("/{plural}/{name}/status");
    let requests = fake.requests();
    let patches = requests.iter().filter(|r| r.method == Method::PATCH);
    patches.filter(|r| r.path.ends_with(&suffix)).count()
}

/// Objects created, modified and deleted in the API server appear in, change in and
/// disappear from the snapshot; each one's findings name it as their origin.
#[tokio::test]
async fn objects_follow_the_api_server() {
    let fake = FakeKube::start().await;
    put(&fake, SETTINGS);
    put(&fake, &tcp_monitor("prod", "a", 1));
    let w = start(&fake, &[]).await;
    assert_eq!(monitors(&w), set(&["prod/a"]));
    assert_eq!(w.snapshots.borrow().effective.min_interval_seconds, 1);
    let id = ResourceId::new(Kind::Monitor, "prod", "a");
    assert_eq!(w.snapshots.borrow().origins[&id].file, "Monitor prod/a");

    put(&fake, &tcp_monitor("dev", "b", 2));
    until("b to appear", || monitors(&w) == set(&["dev/b", "prod/a"])).await;

    put(&fake, &tcp_monitor("prod", "a", 3));
    let port = |w: &KubeWatch| {
        let snap = w.snapshots.borrow();
        let m = snap.monitors.get(&ObjKey::new("prod", "a")).cloned();
        m.and_then(|m| m.spec.target.tcp).map(|t| t.port)
    };
    until("a's new port", || port(&w) == Some(3)).await;

    assert!(fake.delete_object(API, "Monitor", Some("prod"), "a"));
    until("a to disappear", || monitors(&w) == set(&["dev/b"])).await;
}

/// A Secret referenced by a monitor resolves as in folder mode: missing first (a
/// warning), then created, then its value in the snapshot's secret store.
#[tokio::test]
async fn referenced_secret_resolves() {
    let fake = FakeKube::start().await;
    put(
        &fake,
        "apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: api, namespace: prod}
spec:
  type: http
  target:
    http:
      url: https://api.example.com/health
      headers: {Authorization: 'Bearer ${SECRET:api-token:token}'}
",
    );
    let w = start(&fake, &[]).await;
    let missing = |w: &KubeWatch| {
        w.findings
            .borrow()
            .iter()
            .any(|f| f.path.ends_with("headers.Authorization") && f.severity == Severity::Warning)
    };
    assert!(missing(&w), "{:?}", w.findings.borrow());
    put(
        &fake,
        "apiVersion: v1
kind: Secret
metadata: {name: api-token, namespace: prod}
type: Opaque
data: {token: czNjcjN0}
",
    );
    until("the secret", || !missing(&w)).await;
    let snap = w.snapshots.borrow().clone();
    let value = snap.secrets.get("prod", "api-token", "token").unwrap();
    assert_eq!(value.expose(), b"s3cr3t");
    // Never printed, even by the snapshot's Debug.
    assert!(!format!("{snap:?}").contains("s3cr3t"));
}

/// `KUBEKUMA_WATCH_NAMESPACES` restricts the watchers to the listed namespaces (the cluster-scoped
/// settings are still read); nothing is listed or watched cluster-wide.
#[tokio::test]
async fn namespace_restriction() {
    let fake = FakeKube::start().await;
    put(&fake, SETTINGS);
    put(&fake, &tcp_monitor("prod", "a", 1));
    put(&fake, &tcp_monitor("dev", "b", 1));
    put(&fake, &tcp_monitor("stage", "c", 1));
    let w = start(&fake, &["prod", "stage"]).await;
    assert_eq!(monitors(&w), set(&["prod/a", "stage/c"]));
    assert_eq!(w.snapshots.borrow().effective.min_interval_seconds, 1);
    put(&fake, &tcp_monitor("dev", "d", 1));
    put(&fake, &tcp_monitor("prod", "e", 1));
    until("prod/e", || monitors(&w).contains("prod/e")).await;
    assert!(!monitors(&w).contains("dev/d"));
    let requests = fake.requests();
    let cluster_wide = requests.iter().filter(|r| {
        r.path == "/apis/monitoring.kubekuma.io/v1/monitors" || r.path == "/api/v1/secrets"
    });
    assert_eq!(cluster_wide.count(), 0);
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/api/v1/namespaces/stage/secrets")
    );
}

/// After a compaction the watchers' resourceVersion is gone: the watch gets 410 Gone and
/// lists again. Changes made meanwhile arrive, and the snapshot is never emptied.
#[tokio::test]
async fn gone_relists_and_loses_nothing() {
    let mut fake = FakeKube::start().await;
    put(&fake, SETTINGS);
    put(&fake, &tcp_monitor("prod", "a", 1));
    put(&fake, &tcp_monitor("prod", "b", 1));
    let w = start(&fake, &[]).await;
    let mut snaps = w.snapshots.clone();
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while snaps.changed().await.is_ok() {
                let n = snaps.borrow_and_update().monitors.len();
                seen.lock().unwrap().push(n);
            }
        })
    };
    let lists_before = lists_of_monitors(&fake);
    fake.stop().await;
    put(&fake, &tcp_monitor("prod", "c", 1));
    assert!(fake.delete_object(API, "Monitor", Some("prod"), "a"));
    fake.compact();
    fake.restart().await;
    until("the changes made while away", || {
        monitors(&w) == set(&["prod/b", "prod/c"])
    })
    .await;
    assert!(
        lists_of_monitors(&fake) > lists_before,
        "no new list after 410"
    );
    recorder.abort();
    assert!(seen.lock().unwrap().iter().all(|n| *n >= 2), "{seen:?}");
}

/// LIST requests of Monitors (GETs of the collection that are not watches).
fn lists_of_monitors(fake: &FakeKube) -> usize {
    let requests = fake.requests();
    let lists = requests.iter().filter(|r| {
        r.method == Method::GET
            && r.path == "/apis/monitoring.kubekuma.io/v1/monitors"
            && !r.query.contains("watch=true")
    });
    lists.count()
}

/// With the API server gone the last good snapshot stays; when it is back the watchers
/// resume and new changes arrive.
#[tokio::test]
async fn api_server_outage_keeps_the_snapshot() {
    let mut fake = FakeKube::start().await;
    put(&fake, SETTINGS);
    put(&fake, &tcp_monitor("prod", "a", 1));
    let w = start(&fake, &[]).await;
    let before: Arc<Snapshot> = w.snapshots.borrow().clone();
    fake.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(*w.snapshots.borrow(), before);
    fake.restart().await;
    put(&fake, &tcp_monitor("prod", "b", 1));
    until("b after the outage", || {
        monitors(&w) == set(&["prod/a", "prod/b"])
    })
    .await;
}

/// An object the typed model cannot even decode (a string interval) still reaches
/// validation: its finding is the one `kubekuma validate` prints for the same manifest.
#[tokio::test]
async fn undecodable_object_reaches_validation() {
    let fake = FakeKube::start().await;
    let bad = "apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: bad, namespace: prod}
spec:
  type: tcp
  schedule: {intervalSeconds: often}
  target: {tcp: {host: 127.0.0.1, port: 1}}
";
    put(&fake, bad);
    let w = start(&fake, &[]).await;
    assert!(w.snapshots.borrow().monitors.is_empty());
    let expected = build(&[parse_text("bad.yaml", bad)], None).findings;
    let got = w.findings.borrow().clone();
    let strip = |fs: &[kubekuma_agent::catalog::Finding]| -> Vec<(String, String)> {
        let errors = fs.iter().filter(|f| f.severity == Severity::Error);
        errors
            .map(|f| (f.path.clone(), f.message.clone()))
            .collect()
    };
    assert_eq!(strip(&got), strip(&expected));
    assert_eq!(strip(&got)[0].0, "spec.schedule.intervalSeconds");
}

/// The whole agent in kube mode: a bad Monitor gets `Valid=False` with the validate
/// message while a good one runs against a local TCP listener and gets `Valid=True`,
/// `Ready=True`, its last result and uptime; other kinds get their status too.
#[tokio::test]
async fn agent_writes_status_in_kube_mode() {
    let fake = FakeKube::start().await;
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port() as u32;
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = target.accept().await {
            drop(s);
        }
    });
    put(&fake, SETTINGS);
    put(&fake, &tcp_monitor("prod", "good", port));
    let bad = tcp_monitor("prod", "bad", 99_999);
    put(&fake, &bad);
    put(
        &fake,
        "apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {name: page, namespace: prod}
spec:
  slug: status
  title: Status
  published: true
  groups: [{name: All, monitors: [{ref: {name: good}}]}]
",
    );
    let dir = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listen.local_addr().unwrap();
    drop(listen);
    let opts = AgentOptions {
        store_url: Some(format!("file://{}", dir.path().join("objects").display())),
        flush_interval: Duration::from_millis(300),
        ..AgentOptions::new("kube", dir.path().join("data"), addr.to_string())
    };
    let mode = KubeMode {
        client: fake.client(),
        namespaces: vec![],
        status: StatusOptions {
            interval: Duration::from_millis(500),
            max_per_second: 100,
            site_url: Some("https://status.example.com/".into()),
            ..Default::default()
        },
        is_leader: watch::channel(true).1,
    };
    let (stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(runtime::run_with(opts, CatalogSource::Kube(mode), stop_rx));

    // What `kubekuma validate` prints for the same manifests.
    let manifests = format!("{SETTINGS}---\n{bad}");
    let expected = build(&[parse_text("m.yaml", &manifests)], None).findings;
    let expected: Vec<String> = expected
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{}: {}", f.path, f.message))
        .collect();
    until("bad's Valid=False", || {
        condition(&status(&fake, "Monitor", "prod", "bad"), "Valid")["status"] == "False"
    })
    .await;
    let bad_status = status(&fake, "Monitor", "prod", "bad");
    let valid = condition(&bad_status, "Valid");
    assert_eq!(valid["reason"], "ValidationFailed");
    assert_eq!(valid["message"], expected.join("; "));
    assert_eq!(condition(&bad_status, "Ready")["status"], "False");
    assert_eq!(bad_status["observedGeneration"], 1);

    until_shown(
        "good's Ready=True and uptime",
        || {
            let s = status(&fake, "Monitor", "prod", "good");
            condition(&s, "Ready")["status"] == "True" && s["uptime"]["last24h"] == json!(100.0)
        },
        || status(&fake, "Monitor", "prod", "good").to_string(),
    )
    .await;
    let good = status(&fake, "Monitor", "prod", "good");
    assert_eq!(condition(&good, "Valid")["status"], "True");
    assert_eq!(good["lastResult"]["state"], "up");
    assert!(good["lastResult"]["latencyMs"].is_i64(), "{good}");
    assert!(good["lastResult"]["checkedAt"].is_string(), "{good}");
    assert!(good["nextRunAt"].is_string(), "{good}");

    until("the page's status", || {
        status(&fake, "StatusPage", "prod", "page")["overallStatus"] == "operational"
    })
    .await;
    let page = status(&fake, "StatusPage", "prod", "page");
    assert_eq!(page["monitorCount"], 1);
    assert_eq!(page["publishedUrl"], "https://status.example.com/status/");
    assert_eq!(condition(&page, "Valid")["status"], "True");

    // Fixing the bad monitor makes it valid and running.
    put(&fake, &tcp_monitor("prod", "bad", port));
    until("bad fixed and up", || {
        let s = status(&fake, "Monitor", "prod", "bad");
        condition(&s, "Valid")["status"] == "True" && condition(&s, "Ready")["status"] == "True"
    })
    .await;
    assert_eq!(
        status(&fake, "Monitor", "prod", "bad")["observedGeneration"],
        2
    );

    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    server.abort();
}

/// Status is patched only when it changes: an unchanged provider and a paused monitor
/// are written once over several rounds; a spec change (new generation) writes again.
/// Nothing is written while the replica is not the leader.
#[tokio::test]
async fn status_is_patched_only_on_change() {
    let fake = FakeKube::start().await;
    put(&fake, SETTINGS);
    put(
        &fake,
        "apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {name: hook, namespace: prod}
spec: {type: webhook, config: {webhook: {url: 'https://hooks.example.com/x'}}}
",
    );
    let paused = format!("{}  enabled: false\n", tcp_monitor("prod", "off", 1));
    put(&fake, &paused);
    let w = start(&fake, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.db")).unwrap();
    let live = Arc::new(Mutex::new(Live::default()));
    let mut writer = StatusWriter::new(
        fake.client(),
        w.objects.clone(),
        w.snapshots.clone(),
        w.findings.clone(),
        live,
        store,
        StatusOptions {
            interval: Duration::from_secs(1),
            max_per_second: 100,
            site_url: None,
            ..Default::default()
        },
    );
    // The provider, the monitor and the settings.
    assert_eq!(writer.round(true).await, 3);
    for _ in 0..3 {
        assert_eq!(writer.round(true).await, 0);
    }
    assert_eq!(status_patches(&fake, "notificationproviders", "hook"), 1);
    assert_eq!(status_patches(&fake, "monitors", "off"), 1);
    let off = status(&fake, "Monitor", "prod", "off");
    assert_eq!(condition(&off, "Ready")["reason"], "Paused");
    assert_eq!(off["lastResult"]["state"], "paused");

    put(
        &fake,
        "apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {name: hook, namespace: prod}
spec: {type: webhook, config: {webhook: {url: 'https://hooks.example.com/y'}}}
",
    );
    until("generation 2 in the watchers", || {
        w.objects
            .get(Kind::NotificationProvider, "prod", "hook")
            .is_some_and(|o| o.metadata.generation == Some(2))
    })
    .await;
    assert_eq!(writer.round(false).await, 1);
    assert_eq!(status_patches(&fake, "notificationproviders", "hook"), 2);
    let hook = status(&fake, "NotificationProvider", "prod", "hook");
    assert_eq!(hook["observedGeneration"], 2);

    // A standby writes nothing; a new leader starts from the server's status.
    let (leader_tx, is_leader) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(writer.run(is_leader, stop_rx));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let patches = fake
        .requests()
        .iter()
        .filter(|r| r.method == Method::PATCH)
        .count();
    assert_eq!(patches, 4, "a standby wrote status");
    fake.delete_object(API, "Monitor", Some("prod"), "off");
    put(&fake, &tcp_monitor("prod", "on", 1));
    leader_tx.send(true).unwrap();
    until("the leader's write", || {
        condition(&status(&fake, "Monitor", "prod", "on"), "Valid")["status"] == "True"
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(status_patches(&fake, "notificationproviders", "hook"), 2);
}

/// `kubekuma agent` without `--config`, outside a cluster and without `KUBECONFIG`, says
/// how to choose a mode.
#[test]
fn agent_without_a_catalog_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .args(["agent", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("SESSION_SECRET", "a-session-secret-of-at-least-32-bytes")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--config PATH") && err.contains("KUBECONFIG"),
        "{err}"
    );
}

/// `kubekuma agent` with `KUBECONFIG` set (here naming the fake) and no `--config` runs in
/// kube mode, limited to `KUBEKUMA_WATCH_NAMESPACES` (`KUBE_NAMESPACE` is the home, not
/// a filter), and writes status.
#[tokio::test]
async fn agent_binary_picks_kube_mode_from_kubeconfig() {
    let fake = FakeKube::start().await;
    put(&fake, SETTINGS);
    put(&fake, &tcp_monitor("prod", "m", 1));
    put(&fake, &tcp_monitor("dev", "other", 1));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters: [{{name: fake, cluster: {{server: '{}'}}}}]\n\
         users: [{{name: fake, user: {{}}}}]\n\
         contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\n",
        fake.url()
    );
    std::fs::write(&kubeconfig, config).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .args(["agent", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .env("SESSION_SECRET", "a-session-secret-of-at-least-32-bytes")
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBEKUMA_WATCH_NAMESPACES", "prod")
        .env("KUBE_NAMESPACE", "kubekuma")
        .env("KUBEKUMA_STATUS_INTERVAL", "1")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    until("the monitor's status", || {
        condition(&status(&fake, "Monitor", "prod", "m"), "Valid")["status"] == "True"
    })
    .await;
    assert_eq!(status(&fake, "Monitor", "dev", "other"), Value::Null);
    child.kill().await.unwrap();
}

/// The spec's Deployment sets `KUBE_NAMESPACE` to the Pod's namespace: that is the
/// agent's home, and without `KUBEKUMA_WATCH_NAMESPACES` every namespace is watched
/// (before, `KUBE_NAMESPACE` silently limited the watch to the agent's namespace).
#[tokio::test]
async fn agent_binary_with_the_spec_kube_namespace_watches_all_namespaces() {
    let fake = FakeKube::start().await;
    put(&fake, SETTINGS);
    put(&fake, &tcp_monitor("prod", "m", 1));
    put(&fake, &tcp_monitor("dev", "other", 1));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters: [{{name: fake, cluster: {{server: '{}'}}}}]\n\
         users: [{{name: fake, user: {{}}}}]\n\
         contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\n",
        fake.url()
    );
    std::fs::write(&kubeconfig, config).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .args(["agent", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .env("SESSION_SECRET", "a-session-secret-of-at-least-32-bytes")
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBE_NAMESPACE", "prod")
        .env_remove("KUBEKUMA_WATCH_NAMESPACES")
        .env("KUBEKUMA_STATUS_INTERVAL", "1")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for (ns, name) in [("prod", "m"), ("dev", "other")] {
        until("the status of both namespaces' monitors", || {
            condition(&status(&fake, "Monitor", ns, name), "Valid")["status"] == "True"
        })
        .await;
    }
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path == "/apis/monitoring.kubekuma.io/v1/monitors"),
        "no cluster-wide watch of monitors"
    );
    child.kill().await.unwrap();
}

/// A comma-separated `KUBE_NAMESPACE` (its old meaning: the namespaces to watch) is
/// refused at start, pointing at `KUBEKUMA_WATCH_NAMESPACES`.
#[tokio::test]
async fn agent_binary_refuses_a_list_in_kube_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .args(["agent", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .env("SESSION_SECRET", "a-session-secret-of-at-least-32-bytes")
        .env("KUBECONFIG", dir.path().join("absent"))
        .env("KUBE_NAMESPACE", "prod,dev")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KUBE_NAMESPACE"), "{err}");
    assert!(err.contains("KUBEKUMA_WATCH_NAMESPACES"), "{err}");
}

/// Patches are capped at `max_per_second` × the interval per round; what is left waits
/// for the next round, and every object gets its turn.
#[tokio::test]
async fn patches_are_rate_limited() {
    let fake = FakeKube::start().await;
    for i in 0..5 {
        put(
            &fake,
            &format!(
                "apiVersion: {API}\nkind: NotificationProvider\nmetadata: {{name: p{i}, namespace: prod}}\n\
                 spec: {{type: webhook, config: {{webhook: {{url: 'https://hooks.example.com/{i}'}}}}}}\n"
            ),
        );
    }
    let w = start(&fake, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut writer = StatusWriter::new(
        fake.client(),
        w.objects.clone(),
        w.snapshots.clone(),
        w.findings.clone(),
        Arc::new(Mutex::new(Live::default())),
        Store::open(&dir.path().join("k.db")).unwrap(),
        StatusOptions {
            interval: Duration::from_secs(1),
            max_per_second: 2,
            site_url: None,
            ..Default::default()
        },
    );
    let started = tokio::time::Instant::now();
    let mut rounds = Vec::new();
    for _ in 0..4 {
        rounds.push(writer.round(true).await);
    }
    assert_eq!(rounds, [2, 2, 1, 0]);
    // Two patches a second: at least one pause of half a second in each full round.
    assert!(started.elapsed() >= Duration::from_millis(1000));
    for i in 0..5 {
        let name = format!("p{i}");
        assert_eq!(status_patches(&fake, "notificationproviders", &name), 1);
    }
}

/// A standby keeps the catalog but runs no checks and exports nothing; `/ready` says it
/// stands by (and is ready, so a PodDisruptionBudget counts it). When it becomes the
/// leader it schedules the checks and exports; when it stops leading it stops again.
#[tokio::test]
async fn only_the_leader_runs_checks() {
    let fake = FakeKube::start().await;
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port() as u32;
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = {
        let connections = connections.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = target.accept().await {
                connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        })
    };
    put(&fake, SETTINGS);
    put(&fake, &tcp_monitor("prod", "web", port));
    let dir = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listen.local_addr().unwrap();
    drop(listen);
    let objects = dir.path().join("objects");
    let opts = AgentOptions {
        store_url: Some(format!("file://{}", objects.display())),
        flush_interval: Duration::from_millis(200),
        ..AgentOptions::new("standby", dir.path().join("data"), addr.to_string())
    };
    let (lead, is_leader) = watch::channel(false);
    let mode = KubeMode {
        client: fake.client(),
        namespaces: vec![],
        status: StatusOptions {
            interval: Duration::from_millis(300),
            max_per_second: 100,
            site_url: None,
            ..Default::default()
        },
        is_leader,
    };
    let (stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(runtime::run_with(opts, CatalogSource::Kube(mode), stop_rx));
    let ready = || async {
        let r = reqwest::get(format!("http://{addr}/ready")).await.ok()?;
        let code = r.status().as_u16();
        Some((code, r.json::<Value>().await.ok()?))
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let body = loop {
        if let Some((200, body)) = ready().await {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["role"], "standby", "{body}");
    // Several intervals of the monitor: no check, no export, no status.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(!objects.join("v1").exists(), "a standby exported objects");
    assert_eq!(status_patches(&fake, "monitors", "web"), 0);

    lead.send_replace(true);
    until("the leader checks", || {
        connections.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;
    until("the leader exports", || objects.join("v1").exists()).await;
    until("the leader writes status", || {
        condition(&status(&fake, "Monitor", "prod", "web"), "Ready")["status"] == "True"
    })
    .await;
    assert_eq!(ready().await.unwrap().1["role"], "leader");

    lead.send_replace(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = connections.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        after,
        "checks went on after stepping down"
    );
    assert_eq!(ready().await.unwrap().1["role"], "standby");

    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    server.abort();
}
