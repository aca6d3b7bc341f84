//! Urgent exports end to end: an agent started with `runtime::run` with a flush interval
//! of one hour exports a monitor going down anyway (the state change triggers a flush),
//! and a flapping storm of hundreds of changes over 12 s writes at most one urgent export per
//! `MIN_SPACING`. Monitors are push monitors pushed over HTTP on 127.0.0.1; the objects
//! go to a `file://` folder; writes are counted by the agent's metrics. The results seen
//! from the agent's location (`results.json`) go out with the state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubekuma_agent::export::urgent::MIN_SPACING;
use kubekuma_agent::metrics::Metrics;
use kubekuma_agent::runtime::{self, AgentOptions};
use kubekuma_crds::MonitorState;
use kubekuma_crds::objects::{AgentResults, AgentState, keys};
use tokio::sync::watch;

const SETTINGS: &str = "apiVersion: monitoring.kubekuma.io/v1
kind: KubeKumaSettings
metadata: {name: kubekuma}
spec:
  scheduler: {minIntervalSeconds: 1, jitterPercent: 0}
";

/// Push monitor `e2e/m<i>` (token `token(i)`), down at the first failed push.
fn monitor(i: usize) -> String {
    format!(
        "---\napiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: m{i}, namespace: e2e}}\nspec:\n  type: push\n  schedule: {{retries: 0}}\n  target:\n    push: {{token: {}, intervalSeconds: 3600}}\n",
        token(i)
    )
}

fn token(i: usize) -> String {
    format!("urgent-token-{i:04}-0123456789")
}

struct Agent {
    base: String,
    objects: PathBuf,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), runtime::RunError>>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
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

/// An agent on `count` push monitors, flushing periodically only every hour.
async fn start(dir: &Path, count: usize) -> Agent {
    let folder = dir.join("manifests");
    std::fs::create_dir_all(&folder).unwrap();
    let monitors: String = (0..count).map(monitor).collect();
    std::fs::write(folder.join("m.yaml"), format!("{SETTINGS}{monitors}")).unwrap();
    let port = free_port();
    let objects = dir.join("objects");
    let metrics = Arc::new(Metrics::new());
    let opts = AgentOptions {
        config: vec![folder],
        store_url: Some(format!("file://{}", objects.display())),
        flush_interval: Duration::from_secs(3600),
        metrics: Some(metrics.clone()),
        location: "lab".into(),
        ..AgentOptions::new("urgent", dir.join("data"), format!("127.0.0.1:{port}"))
    };
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(opts, stop_rx));
    let agent = Agent {
        base: format!("http://127.0.0.1:{port}"),
        objects,
        metrics,
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
    // The first periodic flush (at the start) is out.
    wait_for("the first export", || async {
        agent.exported().is_some() && agent.metrics.flush_counts("periodic").0 == 1
    })
    .await;
    agent
}

impl Agent {
    async fn push(&self, client: &reqwest::Client, i: usize, up: bool) {
        let status = if up { "up" } else { "down" };
        let url = format!("{}/api/v1/push/{}?status={status}", self.base, token(i));
        let r = client.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "push to m{i}");
    }

    /// The exported state.json.
    fn exported(&self) -> Option<AgentState> {
        let path = self.objects.join(keys::state("urgent"));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// The exported results.json.
    fn exported_results(&self) -> Option<AgentResults> {
        let path = self.objects.join(keys::results("urgent"));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn exported_state(&self, i: usize) -> Option<MonitorState> {
        self.exported()?
            .monitors
            .get(&format!("e2e/m{i}"))
            .map(|m| m.state)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_going_down_is_exported_without_waiting_for_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), 1).await;
    assert_eq!(agent.exported_state(0), Some(MonitorState::Pending));
    assert_eq!(
        agent.metrics.flush_counts("periodic").0,
        1,
        "the start's flush"
    );
    let client = reqwest::Client::new();
    agent.push(&client, 0, false).await;
    wait_for("state.json to say down", || async {
        agent.exported_state(0) == Some(MonitorState::Down)
    })
    .await;
    // The same export wrote the location's results: small, and naming the location.
    let state = agent.exported().unwrap();
    let results = agent.exported_results().expect("results.json is exported");
    assert_eq!(state.location.as_deref(), Some("lab"));
    assert_eq!(results.location, "lab");
    assert_eq!(results.generated_at, state.generated_at);
    let m0 = &results.monitors["e2e/m0"];
    assert_eq!(m0.state, MonitorState::Down);
    assert!(m0.checked_at.is_some());
    assert_eq!(
        agent.metrics.flush_counts("periodic").0,
        1,
        "no periodic flush within the hour"
    );
    assert!(agent.metrics.flush_counts("urgent").0 >= 1);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_storm_writes_at_most_one_urgent_export_per_spacing() {
    const MONITORS: usize = 60;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), MONITORS).await;
    let client = reqwest::Client::new();
    // Down, up, down, up, …: every monitor flaps for 12 s (hundreds of changes), and
    // ends up.
    let storm = Instant::now();
    let mut pushes = 0;
    let mut round = 0;
    while storm.elapsed() < Duration::from_secs(12) || round % 2 == 1 {
        for i in 0..MONITORS {
            agent.push(&client, i, round % 2 == 1).await;
            pushes += 1;
        }
        round += 1;
    }
    // The last state of every monitor (up, or flapping) reaches the object store.
    wait_for("the storm's end state exported", || async {
        (0..MONITORS).all(|i| {
            matches!(
                agent.exported_state(i),
                Some(MonitorState::Up | MonitorState::Flapping)
            )
        })
    })
    .await;
    let elapsed = started.elapsed();
    let (urgent, written) = agent.metrics.flush_counts("urgent");
    // One flush at most per MIN_SPACING since the start (the start's periodic flush
    // counts for the spacing), each writing at most the six objects.
    let cap = elapsed.as_secs() / MIN_SPACING.as_secs() + 1;
    // The figures BENCHMARKS.md quotes (run with --no-capture).
    eprintln!(
        "storm: {pushes} down/up pushes on {MONITORS} monitors, {urgent} urgent flushes writing {written} objects in {elapsed:?} (cap {cap})"
    );
    assert!(pushes >= 300, "{pushes} changes");
    assert!(urgent >= 1, "the storm was exported");
    assert!(
        urgent <= cap,
        "{urgent} urgent flushes in {elapsed:?} (cap {cap})"
    );
    assert!(
        written <= 6 * urgent,
        "{written} objects in {urgent} flushes"
    );
    assert_eq!(agent.metrics.flush_counts("periodic").0, 1);
    agent.stop().await;
}
