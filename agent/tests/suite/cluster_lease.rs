//! Leader election with a Lease: acquiring, one leader among replicas, handing over on
//! shutdown, expiry after a crash, stepping down without the API server, and conflicts.
//!
//! No real API server can run here, so these run against the fake that speaks the real
//! protocol (`common::fake_kube`), with short real durations and generous waits.

use crate::common::fake_kube::FakeKube;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use kubekuma_agent::cluster::lease::{LeaderElector, Leadership, LeaseConfig};
use kubekuma_agent::cluster::role::{ROLE_LABEL, follow};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

const NS: &str = "kubekuma";
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/kubekuma/leases/kubekuma-agent";
const WAIT: Duration = Duration::from_secs(20);

/// Lease 2 s, renew deadline 1.2 s, retry 200 ms.
fn quick(identity: &str) -> LeaseConfig {
    timings(identity, 2000, 1200, 200)
}

fn timings(identity: &str, lease_ms: u64, renew_ms: u64, retry_ms: u64) -> LeaseConfig {
    LeaseConfig {
        identity: identity.into(),
        lease_duration: Duration::from_millis(lease_ms),
        renew_deadline: Duration::from_millis(renew_ms),
        retry_period: Duration::from_millis(retry_ms),
        ..LeaseConfig::new(NS)
    }
}

/// One agent replica's election.
struct Replica {
    leadership: Leadership,
    shutdown: watch::Sender<bool>,
}

impl Replica {
    fn start(client: kube::Client, config: LeaseConfig) -> Replica {
        let (shutdown, rx) = watch::channel(false);
        let elector = LeaderElector::new(client, config).expect("valid config");
        Replica {
            leadership: elector.spawn(rx),
            shutdown,
        }
    }

    fn leads(&self) -> bool {
        *self.leadership.is_leader.borrow()
    }

    /// Ask for shutdown and wait until the task has ended (and released the Lease).
    async fn stop(self) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(WAIT, self.leadership.task)
            .await
            .expect("the elector ends after shutdown")
            .expect("the elector does not panic");
    }
}

/// Poll `cond` every 20 ms until it holds; panic after `timeout`.
async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lease(fake: &FakeKube) -> Value {
    fake.get_object(
        "coordination.k8s.io/v1",
        "Lease",
        Some(NS),
        "kubekuma-agent",
    )
    .expect("the lease exists")
}

fn holder(fake: &FakeKube) -> Option<String> {
    let l = lease(fake);
    let h = l["spec"]["holderIdentity"].as_str().unwrap_or_default();
    (!h.is_empty()).then(|| h.to_string())
}

/// Which of the replicas lead right now.
fn leaders<'a>(replicas: &[(&'a str, &Replica)]) -> Vec<&'a str> {
    replicas
        .iter()
        .filter(|(_, r)| r.leads())
        .map(|(name, _)| *name)
        .collect()
}

/// Sample both replicas every 10 ms until `stop` is set; true when both ever led at once.
fn watch_for_two_leaders(
    a: watch::Receiver<bool>,
    b: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        let mut both = false;
        while !stop.load(Ordering::Relaxed) {
            both |= *a.borrow() && *b.borrow();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        both
    })
}

/// A single replica creates the Lease and holds it, renews it, and releases it on shutdown.
#[tokio::test]
async fn a_single_replica_acquires_renews_and_releases() {
    let fake = FakeKube::start().await;
    let a = Replica::start(fake.client(), quick("agent-a"));
    wait_for("agent-a leads", WAIT, || a.leads()).await;

    let l = lease(&fake);
    assert_eq!(l["spec"]["holderIdentity"], "agent-a");
    assert_eq!(l["spec"]["leaseDurationSeconds"], 2);
    assert_eq!(l["spec"]["leaseTransitions"], 0);
    assert!(l["spec"]["acquireTime"].is_string(), "{l}");
    let first_renew = l["spec"]["renewTime"].clone();
    assert!(first_renew.is_string(), "{l}");
    wait_for("the lease is renewed", WAIT, || {
        lease(&fake)["spec"]["renewTime"] != first_renew
    })
    .await;
    let renewed = lease(&fake);
    assert_eq!(renewed["spec"]["acquireTime"], l["spec"]["acquireTime"]);
    assert_eq!(renewed["spec"]["leaseTransitions"], 0);
    assert!(a.leads());

    let is_leader = a.leadership.is_leader.clone();
    a.stop().await;
    assert!(!*is_leader.borrow());
    let released = lease(&fake);
    assert_eq!(holder(&fake), None, "{released}");
    assert_eq!(released["spec"]["leaseDurationSeconds"], 1);
}

/// With two replicas exactly one leads at every sample, and it is the Lease's holder.
#[tokio::test]
async fn two_replicas_have_exactly_one_leader() {
    let fake = FakeKube::start().await;
    // Started together, both try to create the Lease: one gets 409 AlreadyExists.
    let a = Replica::start(fake.client(), timings("agent-a", 6000, 4000, 200));
    let b = Replica::start(fake.client(), timings("agent-b", 6000, 4000, 200));
    let both = [("agent-a", &a), ("agent-b", &b)];
    wait_for("one replica leads", WAIT, || !leaders(&both).is_empty()).await;

    let sampling = Instant::now() + Duration::from_secs(3);
    while Instant::now() < sampling {
        let now = leaders(&both);
        assert_eq!(now.len(), 1, "leaders: {now:?}");
        assert_eq!(holder(&fake).as_deref(), Some(now[0]));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!a.leadership.task.is_finished() && !b.leadership.task.is_finished());
    a.stop().await;
    b.stop().await;
}

/// A leader that shuts down releases the Lease and the standby takes over at once: with a
/// 30 s lease, waiting for it to expire would exceed the wait.
#[tokio::test]
async fn shutdown_hands_over_to_the_standby_at_once() {
    let fake = FakeKube::start().await;
    let a = Replica::start(fake.client(), timings("agent-a", 30_000, 20_000, 200));
    wait_for("agent-a leads", WAIT, || a.leads()).await;
    let b = Replica::start(fake.client(), timings("agent-b", 30_000, 20_000, 200));
    // Let the standby see the held Lease first.
    wait_for("agent-b reads the lease", WAIT, || {
        fake.requests()
            .iter()
            .filter(|r| r.method == Method::GET)
            .count()
            >= 2
    })
    .await;
    assert!(!b.leads());

    a.stop().await;
    wait_for("agent-b leads", Duration::from_secs(15), || b.leads()).await;
    let l = lease(&fake);
    assert_eq!(l["spec"]["holderIdentity"], "agent-b");
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    assert_eq!(l["spec"]["leaseDurationSeconds"], 30);
    b.stop().await;
}

/// A leader killed without releasing: the standby waits for the Lease to expire, then
/// takes it, counting a transition and setting a new acquireTime.
#[tokio::test]
async fn the_standby_takes_over_when_the_leader_dies() {
    let fake = FakeKube::start().await;
    let a = Replica::start(fake.client(), quick("agent-a"));
    wait_for("agent-a leads", WAIT, || a.leads()).await;
    let acquired_by_a = lease(&fake)["spec"]["acquireTime"].clone();
    let b = Replica::start(fake.client(), quick("agent-b"));
    let standby_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < standby_until {
        assert!(!b.leads(), "agent-b leads while agent-a renews");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    a.leadership.task.abort();
    wait_for("agent-b leads", WAIT, || b.leads()).await;
    let l = lease(&fake);
    assert_eq!(l["spec"]["holderIdentity"], "agent-b");
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    assert_ne!(l["spec"]["acquireTime"], acquired_by_a);
    b.stop().await;
}

/// When the API server goes away the leader steps down, and nobody leads until it is back;
/// then one of the two leads again.
#[tokio::test]
async fn the_leader_steps_down_without_the_api_server() {
    let mut fake = FakeKube::start().await;
    let a = Replica::start(fake.client(), quick("agent-a"));
    let b = Replica::start(fake.client(), quick("agent-b"));
    let both = [("agent-a", &a), ("agent-b", &b)];
    wait_for("one replica leads", WAIT, || leaders(&both).len() == 1).await;

    fake.stop().await;
    wait_for("the leader steps down", WAIT, || leaders(&both).is_empty()).await;
    let down_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < down_until {
        assert_eq!(leaders(&both), Vec::<&str>::new());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fake.restart().await;
    wait_for("one replica leads again", WAIT, || {
        leaders(&both).len() == 1
    })
    .await;
    let now = leaders(&both);
    assert_eq!(holder(&fake).as_deref(), Some(now[0]));
    a.stop().await;
    b.stop().await;
}

/// A TCP proxy to the fake, which [`Proxy::cut`] takes down: one replica loses the API
/// server while the other still reaches it.
struct Proxy {
    addr: SocketAddr,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Proxy {
    async fn start(to: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let conns = tasks.clone();
        tasks.lock().expect("lock").spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.lock().expect("lock").spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { addr, tasks }
    }

    fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().expect("url");
        kube::Client::try_from(kube::Config::new(url)).expect("client")
    }

    /// Close the listener and every connection.
    fn cut(&self) {
        self.tasks.lock().expect("lock").abort_all();
    }
}

/// The leader alone loses the API server: it steps down before the standby, which still
/// reaches the server, sees the Lease expire and takes over; never two leaders at once.
#[tokio::test]
async fn a_partitioned_leader_steps_down_before_the_standby_takes_over() {
    let fake = FakeKube::start().await;
    let to = fake
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let proxy = Proxy::start(to).await;
    let a = Replica::start(proxy.client(), quick("agent-a"));
    wait_for("agent-a leads", WAIT, || a.leads()).await;
    let b = Replica::start(fake.client(), quick("agent-b"));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = watch_for_two_leaders(
        a.leadership.is_leader.clone(),
        b.leadership.is_leader.clone(),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.leads() && !b.leads());

    proxy.cut();
    wait_for("agent-b leads", WAIT, || b.leads()).await;
    assert!(!a.leads());
    stop.store(true, Ordering::Relaxed);
    assert!(
        !sampler.await.expect("sampler"),
        "both replicas led at once"
    );
    let l = lease(&fake);
    assert_eq!(l["spec"]["holderIdentity"], "agent-b");
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    a.leadership.task.abort();
    b.stop().await;
}

/// Someone else bumps the Lease's resourceVersion: the leader's next renewal gets
/// `409 Conflict`, it reads the Lease again and renews, keeping the other writer's change.
#[tokio::test]
async fn a_concurrent_update_is_a_conflict_not_a_failure() {
    let fake = FakeKube::start().await;
    let a = Replica::start(fake.client(), quick("agent-a"));
    wait_for("agent-a leads", WAIT, || a.leads()).await;

    let before = fake.requests().len();
    let mut bumped = lease(&fake);
    bumped["metadata"]["labels"] = json!({ "bumped": "yes" });
    let bumped = fake.put_object(bumped);
    let bumped_rv: u64 = bumped["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .expect("resourceVersion");
    wait_for("the lease is renewed after the bump", WAIT, || {
        let rv = lease(&fake)["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        rv.and_then(|rv| rv.parse::<u64>().ok())
            .is_some_and(|rv| rv > bumped_rv)
    })
    .await;

    // The leader writes without reading while it holds the Lease, so a read means a
    // renewal was refused.
    let after = fake.requests()[before..].to_vec();
    let renewal = after
        .iter()
        .position(|r| r.method == Method::PUT && r.path == LEASE_PATH);
    let reread = after
        .iter()
        .position(|r| r.method == Method::GET && r.path == LEASE_PATH);
    assert!(renewal.is_some() && reread > renewal, "{after:#?}");
    let l = lease(&fake);
    assert_eq!(l["metadata"]["labels"]["bumped"], "yes");
    assert_eq!(l["spec"]["holderIdentity"], "agent-a");
    assert!(a.leads() && !a.leadership.task.is_finished());
    a.stop().await;
}

/// Another holder writes the Lease over the leader's: the leader steps down at its next
/// renewal, and takes the Lease back only once that record has expired.
#[tokio::test]
async fn the_leader_yields_to_another_holder() {
    let fake = FakeKube::start().await;
    let a = Replica::start(fake.client(), quick("agent-a"));
    wait_for("agent-a leads", WAIT, || a.leads()).await;

    let mut taken = lease(&fake);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    taken["spec"] = json!({
        "holderIdentity": "intruder", "leaseDurationSeconds": 2, "leaseTransitions": 5,
        "acquireTime": now, "renewTime": now,
    });
    fake.put_object(taken);
    wait_for("agent-a steps down", WAIT, || !a.leads()).await;
    assert_eq!(holder(&fake).as_deref(), Some("intruder"));

    wait_for("agent-a leads again", WAIT, || a.leads()).await;
    let l = lease(&fake);
    assert_eq!(l["spec"]["holderIdentity"], "agent-a");
    assert_eq!(l["spec"]["leaseTransitions"], 6);
    a.stop().await;
}

fn role_of(fake: &FakeKube, pod: &str) -> Option<String> {
    let p = fake.get_object("v1", "Pod", Some(NS), pod)?;
    p["metadata"]["labels"][ROLE_LABEL]
        .as_str()
        .map(str::to_string)
}

/// Each replica labels its own Pod with its role (the agent Service selects the leader),
/// the labels follow a handover, and a replica that stops marks its Pod `standby`.
#[tokio::test]
async fn each_pod_carries_its_role_and_the_labels_follow_a_handover() {
    let fake = FakeKube::start().await;
    for pod in ["agent-a", "agent-b"] {
        fake.put_object(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": NS, "labels": {"app.kubernetes.io/name": "kubekuma"}},
            "spec": {"containers": [{"name": "agent", "image": "kubekuma"}]},
        }));
    }
    let a = Replica::start(fake.client(), timings("agent-a", 30_000, 20_000, 200));
    wait_for("agent-a leads", WAIT, || a.leads()).await;
    let b = Replica::start(fake.client(), timings("agent-b", 30_000, 20_000, 200));
    let mut roles = Vec::new();
    for (pod, r) in [("agent-a", &a), ("agent-b", &b)] {
        let (tx, rx) = watch::channel(false);
        roles.push((
            tx,
            tokio::spawn(follow(
                fake.client(),
                NS,
                pod,
                r.leadership.is_leader.clone(),
                rx,
                Duration::from_millis(100),
            )),
        ));
    }
    wait_for("agent-a is labelled leader, agent-b standby", WAIT, || {
        role_of(&fake, "agent-a").as_deref() == Some("leader")
            && role_of(&fake, "agent-b").as_deref() == Some("standby")
    })
    .await;
    // Other labels are kept.
    let pod = fake.get_object("v1", "Pod", Some(NS), "agent-a").unwrap();
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/name"],
        "kubekuma"
    );

    // agent-a shuts down: its role task marks it standby, the election hands over.
    let (a_role, a_task) = roles.remove(0);
    a_role.send_replace(true);
    a_task.await.unwrap();
    a.stop().await;
    wait_for("agent-b is labelled leader, agent-a standby", WAIT, || {
        role_of(&fake, "agent-a").as_deref() == Some("standby")
            && role_of(&fake, "agent-b").as_deref() == Some("leader")
    })
    .await;
    let (b_role, b_task) = roles.remove(0);
    b_role.send_replace(true);
    b_task.await.unwrap();
    assert_eq!(role_of(&fake, "agent-b").as_deref(), Some("standby"));
    b.stop().await;
}
