//! Reading every location's results (`export::locations::Locations`) from the in-process
//! S3 peer: only changed `results.json` objects are fetched, replicas of one location
//! resolve to the newest result per monitor, a broken object keeps the agent's previous
//! results, and an agent whose object is gone drops out.

use crate::common::s3::{self, S3Server};

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use kubekuma_agent::alerting::consensus::{self, ConsensusState, LocationReport, Question};
use kubekuma_agent::export::locations::Locations;
use kubekuma_agent::export::{ObjectTarget, open_store_with};
use kubekuma_crds::MonitorState;
use kubekuma_crds::monitor::QuorumRule;
use kubekuma_crds::objects::{AgentResults, LocationResult, keys};

fn open(server: &S3Server) -> ObjectTarget {
    let o = server.options();
    let refs: Vec<(&str, &str)> = o.iter().map(|(k, v)| (*k, v.as_str())).collect();
    open_store_with(&format!("s3://{}/shared", s3::BUCKET), &refs).expect("open s3 target")
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

fn results(agent: &str, location: &str, at: i64, monitors: &[(&str, MonitorState)]) -> Bytes {
    let r = AgentResults {
        layout: "v1".into(),
        agent_id: agent.into(),
        location: location.into(),
        generated_at: t(at),
        monitors: monitors
            .iter()
            .map(|(m, s)| {
                let r = LocationResult {
                    state: *s,
                    since: None,
                    checked_at: Some(t(at - 1)),
                    latency_ms: Some(12.5),
                    reason: None,
                };
                (m.to_string(), r)
            })
            .collect(),
    };
    Bytes::from(serde_json::to_vec(&r).unwrap())
}

#[tokio::test]
async fn locations_are_read_incrementally_and_replicas_resolve_to_the_newest() {
    use MonitorState::{Down, Up};
    let server = S3Server::start().await;
    let store = open(&server);
    let put = |agent: &'static str, body: Bytes| {
        let store = store.clone();
        async move { store.put(&keys::results(agent), body).await.unwrap() }
    };
    // Two replicas at eu-west (the newer one has only web), one agent at us-east, one
    // broken object, and objects that are not results.
    put(
        "eu-1",
        results("eu-1", "eu-west", 10, &[("p/web", Up), ("p/db", Down)]),
    )
    .await;
    put("eu-2", results("eu-2", "eu-west", 20, &[("p/web", Down)])).await;
    put(
        "us-1",
        results("us-1", "us-east", 15, &[("p/web", Down), ("p/db", Up)]),
    )
    .await;
    put("bad", Bytes::from_static(b"{not json")).await;
    store
        .put(&keys::state("eu-1"), Bytes::from_static(b"{}"))
        .await
        .unwrap();
    store
        .put("v1/agents/eu-1/old/results.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();

    let mut loc = Locations::new();
    let r = loc.refresh(&store).await.unwrap();
    assert_eq!(r.fetched, 4, "{r:?}");
    assert_eq!(r.broken.len(), 1, "{r:?}");
    assert_eq!(r.broken[0].0, keys::results("bad"));
    assert_eq!(loc.requests, (1, 4));
    assert_eq!(loc.names(), ["eu-west", "us-east"]);

    let latest = loc.latest();
    let eu = &latest["eu-west"];
    assert_eq!(eu["p/web"].agent_id, "eu-2", "the newest replica wins");
    assert_eq!(eu["p/web"].result.state, Down);
    assert_eq!(
        eu["p/db"].agent_id, "eu-1",
        "the only replica with the monitor"
    );
    assert_eq!(latest["us-east"]["p/web"].result.state, Down);

    // What the consensus makes of it: web down at both locations, db at one of two.
    let locations = loc.names();
    let decide = |monitor: &str| {
        let reports = latest
            .iter()
            .filter_map(|(l, m)| m.get(monitor).map(|s| (l.clone(), LocationReport::from(s))))
            .collect();
        consensus::decide(&Question {
            quorum: QuorumRule::Majority,
            locations: &locations,
            results: &reports,
            stale_after: Duration::seconds(210),
            paused: false,
            maintenance: false,
            now: t(30),
        })
    };
    assert_eq!(decide("p/web").state, ConsensusState::Down);
    assert_eq!(decide("p/db").state, ConsensusState::Degraded);

    // Nothing changed: one listing, no GET.
    let r = loc.refresh(&store).await.unwrap();
    assert_eq!((r.fetched, r.broken.len()), (0, 0), "{r:?}");
    assert_eq!(loc.requests, (2, 4));

    // eu-1 writes again, newer than eu-2: only it is fetched, and it now wins web. The
    // broken object is repaired; us-1's object is gone.
    put(
        "eu-1",
        results("eu-1", "eu-west", 30, &[("p/web", Up), ("p/db", Up)]),
    )
    .await;
    put("bad", results("bad", "ap-south", 31, &[("p/web", Up)])).await;
    store.delete(&keys::results("us-1")).await.unwrap();
    let r = loc.refresh(&store).await.unwrap();
    assert_eq!(r.fetched, 2, "{r:?}");
    assert!(r.broken.is_empty(), "{r:?}");
    assert_eq!(r.gone, ["us-1"]);
    assert_eq!(loc.requests, (3, 6));
    let latest = loc.latest();
    assert_eq!(latest["eu-west"]["p/web"].agent_id, "eu-1");
    assert_eq!(latest["eu-west"]["p/web"].result.state, Up);
    assert!(!latest.contains_key("us-east"));
    assert_eq!(loc.names(), ["ap-south", "eu-west"]);

    // An object that breaks keeps the agent's previous results.
    put("eu-1", Bytes::from_static(b"[]")).await;
    let r = loc.refresh(&store).await.unwrap();
    assert_eq!(r.broken.len(), 1, "{r:?}");
    assert_eq!(loc.latest()["eu-west"]["p/db"].result.state, Up);

    // An object under another agent's name is refused, not merged.
    put("eu-3", results("eu-1", "eu-west", 99, &[("p/web", Down)])).await;
    let r = loc.refresh(&store).await.unwrap();
    assert!(
        r.broken[0].1.contains("found under agent \"eu-3\""),
        "{r:?}"
    );
    assert_eq!(loc.latest()["eu-west"]["p/web"].result.state, Up);
}

#[tokio::test]
async fn an_unreachable_store_is_an_error_and_keeps_what_was_read() {
    let mut server = S3Server::start().await;
    let store = open(&server);
    store
        .put(
            &keys::results("a"),
            results("a", "home", 1, &[("p/web", MonitorState::Up)]),
        )
        .await
        .unwrap();
    let mut loc = Locations::new();
    loc.refresh(&store).await.unwrap();
    server.stop().await;
    let err = loc.refresh(&store).await.unwrap_err().to_string();
    assert!(err.contains("list"), "{err}");
    assert!(!err.contains(s3::SECRET_KEY), "{err}");
    assert_eq!(loc.names(), ["home"]);
}
