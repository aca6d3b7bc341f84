//! Export to object storage against real peers: a local folder, memory, and an
//! in-process S3 server (s3s-fs) that checks signatures and can be stopped and
//! restarted on the same port. Covers round trips through `open_store`, the uploader's
//! outage behaviour and catch-up, agents sharing a bucket, wrong credentials, and the
//! public catalog never carrying targets or secrets.

use crate::common::{Outage, s3};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{NaiveDate, TimeZone, Utc};
use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::catalog::{Severity, Snapshot};
use kubekuma_agent::export::{
    Backoff, MemoryOutbox, ObjectTarget, Outbox, Uploader, open_store, open_store_with,
    public_catalog,
};
use kubekuma_crds::objects::{AgentCatalog, keys};
use s3::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY};

/// `open_store_with` options for `server`, borrowed as the function wants them.
fn opts(server: &S3Server) -> Vec<(&'static str, String)> {
    server.options()
}

fn open_s3(server: &S3Server, url: &str) -> ObjectTarget {
    let o = opts(server);
    let refs: Vec<(&str, &str)> = o.iter().map(|(k, v)| (*k, v.as_str())).collect();
    open_store_with(url, &refs).expect("open s3 target")
}

/// A target on `server` built explicitly with the builder (no URL, no environment).
fn built_s3(server: &S3Server, prefix: &str) -> ObjectTarget {
    let store = server.builder().build().expect("s3 store");
    ObjectTarget::new(Arc::new(store), prefix).expect("target")
}

/// Quick retries, so outage tests do not sleep for long (the policy itself is the same).
pub(crate) fn fast_backoff() -> Backoff {
    Backoff {
        tries: 3,
        first_backoff: Duration::from_millis(20),
        factor: 4,
    }
}

/// Bodies that are not text: every byte value, and a larger pseudo-random one.
pub(crate) fn bodies() -> Vec<(String, Vec<u8>)> {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    vec![
        (keys::catalog("edge-1"), br#"{"layout":"v1"}"#.to_vec()),
        (keys::state("edge-1"), all_bytes),
        (
            keys::hourly("edge-1", NaiveDate::from_ymd_opt(2024, 5, 1).unwrap()),
            big,
        ),
        (keys::daily("edge-1", 2024, 5), b"{}".to_vec()),
        (keys::incidents("edge-1", 2024, 5), Vec::new()),
    ]
}

pub(crate) async fn round_trip(t: &ObjectTarget) {
    let key = keys::state("a");
    assert_eq!(t.get(&key).await.unwrap(), None, "{t}: missing is None");
    t.put(&key, Bytes::from_static(b"one")).await.unwrap();
    t.put(&key, Bytes::from_static(b"two")).await.unwrap();
    t.put(&keys::catalog("a"), Bytes::from_static(b"cat"))
        .await
        .unwrap();
    t.put(&keys::catalog("ab"), Bytes::from_static(b"other"))
        .await
        .unwrap();
    assert_eq!(t.get(&key).await.unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(
        t.list(&keys::agent("a")).await.unwrap(),
        vec![keys::catalog("a"), keys::state("a")],
        "{t}: listing is per agent, on whole segments"
    );
    assert_eq!(t.list("").await.unwrap().len(), 3);
}

#[tokio::test]
async fn file_memory_and_s3_round_trip() {
    let dir = tempfile::tempdir().unwrap();

    // file:// creates the folder; keys are files under it.
    let folder = dir.path().join("objects/nested");
    let t = open_store(&format!("file://{}", folder.display())).unwrap();
    round_trip(&t).await;
    assert_eq!(
        std::fs::read(folder.join(keys::state("a"))).unwrap(),
        b"two"
    );

    // A plain path works the same.
    let plain = dir.path().join("plain");
    let t = open_store(plain.to_str().unwrap()).unwrap();
    round_trip(&t).await;
    assert!(plain.join(keys::catalog("ab")).is_file());

    // memory:// keeps the URL path as prefix.
    let t = open_store("memory:///some/prefix").unwrap();
    assert_eq!(t.prefix(), "some/prefix");
    round_trip(&t).await;

    // s3:// through the URL (endpoint and keys as options, not process env).
    let server = S3Server::start().await;
    let t = open_s3(&server, &format!("s3://{BUCKET}/site/objects"));
    assert_eq!(t.url(), format!("s3://{BUCKET}/site/objects"));
    round_trip(&t).await;
    assert_eq!(
        std::fs::read(
            server
                .bucket_dir()
                .join("site/objects")
                .join(keys::state("a"))
        )
        .unwrap(),
        b"two",
        "the object is in the bucket under the URL's prefix"
    );

    // And through an explicitly built store (another prefix of the same bucket).
    let t = built_s3(&server, "built");
    round_trip(&t).await;
    assert!(
        server
            .bucket_dir()
            .join("built")
            .join(keys::state("a"))
            .is_file()
    );
}

#[tokio::test]
async fn unknown_schemes_and_bad_urls_are_errors_without_credentials() {
    let e = open_store("ftp://me:pa55word-xyz@host/p")
        .unwrap_err()
        .to_string();
    assert!(e.contains("ftp://host/p") && !e.contains("pa55word"), "{e}");
    let e = open_store("file://remote-host/x").unwrap_err().to_string();
    assert!(e.contains("file:///") || e.contains("absolute"), "{e}");
    let e = open_store("").unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
}

#[tokio::test]
async fn uploader_drains_the_outbox_to_s3_byte_for_byte() {
    let server = S3Server::start().await;
    let target = built_s3(&server, "kuma");
    let (up, outbox) = drain_bodies(&target).await;
    for (k, b) in bodies() {
        let on_disk = std::fs::read(server.bucket_dir().join("kuma").join(&k)).unwrap();
        assert_eq!(on_disk, b, "{k} on the server's disk");
    }
    // Nothing pending: a drain does nothing.
    assert_eq!(up.drain(&outbox).await, Default::default());
}

/// Drain [`bodies`] to `target` three at a time: all are uploaded and read back byte for
/// byte. Returns the uploader and the (empty) outbox.
pub(crate) async fn drain_bodies(target: &ObjectTarget) -> (Uploader, MemoryOutbox) {
    let outbox = MemoryOutbox::new();
    for (k, b) in bodies() {
        outbox.put(&k, b);
    }
    let up = Uploader::new(target.clone()).with_concurrency(3);
    let r = up.drain(&outbox).await;
    assert_eq!(
        (r.uploaded, r.failed, r.last_error.as_deref()),
        (5, 0, None)
    );
    assert!(outbox.is_empty());
    for (k, b) in bodies() {
        let got = target.get(&k).await.unwrap().expect("object exists");
        assert_eq!(got.as_ref(), b.as_slice(), "{k} through {target}");
    }
    (up, outbox)
}

#[tokio::test]
async fn outage_keeps_everything_pending_and_a_restart_catches_up() {
    let mut server = S3Server::start().await;
    let port = server.port();
    let target = built_s3(&server, "");
    outage_and_catch_up(&mut server, &target, SECRET_KEY).await;
    assert_eq!(server.port(), port);
}

/// The uploader through an outage of `server`, which `target` writes to: nothing is lost
/// while it is away (the error is reported, without `secret`), and everything, the
/// newest state included, is uploaded once it is back.
pub(crate) async fn outage_and_catch_up(
    server: &mut impl Outage,
    target: &ObjectTarget,
    secret: &str,
) {
    let up = Uploader::new(target.clone()).with_backoff(fast_backoff());
    let outbox = MemoryOutbox::new();

    // A first upload, so the client holds a pooled connection when the server dies.
    outbox.put(&keys::state("edge-1"), b"before".to_vec());
    assert_eq!(up.drain(&outbox).await.uploaded, 1);

    server.stop().await;
    for (k, b) in bodies() {
        outbox.put(&k, b);
    }
    let before = outbox.keys();
    let r = up.drain(&outbox).await;
    assert_eq!(r.uploaded, 0, "{r:?}");
    assert_eq!(r.failed, 5, "{r:?}");
    let err = r.last_error.expect("the error is reported");
    assert!(err.contains("put") && err.contains(target.url()), "{err}");
    assert!(!err.contains(secret), "{err}");
    assert_eq!(outbox.keys(), before, "nothing is lost");

    // A second failing drain changes nothing either; meanwhile a newer state is queued.
    assert_eq!(up.drain(&outbox).await.uploaded, 0);
    outbox.put(&keys::state("edge-1"), b"newest".to_vec());
    assert_eq!(outbox.len(), 5);

    server.resume().await;
    let r = up.drain(&outbox).await;
    assert_eq!(
        (r.uploaded, r.failed, r.last_error.as_deref()),
        (5, 0, None)
    );
    assert!(outbox.is_empty());
    for (k, b) in bodies() {
        let want = if k == keys::state("edge-1") {
            b"newest".to_vec()
        } else {
            b
        };
        assert_eq!(
            target.get(&k).await.unwrap().unwrap().as_ref(),
            want.as_slice(),
            "{k}"
        );
    }
}

#[tokio::test]
async fn run_loop_uploads_and_stops_with_a_final_drain() {
    let server = S3Server::start().await;
    let target = built_s3(&server, "");
    let up = Uploader::new(target.clone());
    let outbox = MemoryOutbox::new();
    outbox.put(&keys::state("edge-1"), b"s".to_vec());
    // The shutdown signal is already complete: run still drains once before returning.
    let r = up.run(&outbox, Duration::from_secs(3600), async {}).await;
    assert_eq!(r.uploaded, 1);
    assert!(outbox.is_empty());
    assert!(target.get(&keys::state("edge-1")).await.unwrap().is_some());

    // Periodic drains pick up what is queued later.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let outbox = Arc::new(MemoryOutbox::new());
    let task = {
        let (up, outbox) = (up.clone(), outbox.clone());
        tokio::spawn(async move {
            up.run(outbox.as_ref(), Duration::from_millis(20), async {
                let _ = rx.await;
            })
            .await
        })
    };
    outbox.put(&keys::catalog("edge-1"), b"c".to_vec());
    while !outbox.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = tx.send(());
    let r = task.await.unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        target
            .get(&keys::catalog("edge-1"))
            .await
            .unwrap()
            .as_deref(),
        Some(&b"c"[..])
    );
}

#[tokio::test]
async fn two_agents_share_a_bucket_without_overwriting_each_other() {
    let server = S3Server::start().await;
    let url = format!("s3://{BUCKET}/shared");
    let day = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
    let mut uploaded = Vec::new();
    for agent in ["edge-eu", "edge-us"] {
        let up = Uploader::new(open_s3(&server, &url));
        let outbox = MemoryOutbox::new();
        for key in [
            keys::catalog(agent),
            keys::state(agent),
            keys::hourly(agent, day),
        ] {
            outbox.put(&key, format!("{agent}:{key}").into_bytes());
            uploaded.push(key);
        }
        let r = up.drain(&outbox).await;
        assert_eq!((r.uploaded, r.failed), (3, 0), "{agent}: {r:?}");
    }
    let t = open_s3(&server, &url);
    let mut all = t.list(&keys::agents()).await.unwrap();
    all.sort();
    uploaded.sort();
    assert_eq!(all, uploaded);
    assert_eq!(t.list(&keys::agent("edge-eu")).await.unwrap().len(), 3);
    for key in &uploaded {
        let agent = if key.contains("/edge-eu/") {
            "edge-eu"
        } else {
            "edge-us"
        };
        let body = t.get(key).await.unwrap().unwrap();
        assert_eq!(body.as_ref(), format!("{agent}:{key}").as_bytes());
    }
}

#[tokio::test]
async fn wrong_credentials_fail_without_revealing_the_secret() {
    let server = S3Server::start().await;
    let wrong_secret = "wrong-secret-5d1c0ffee9";

    // A store built by hand: the error from the server must not carry the secret.
    let store = server
        .builder_with(ACCESS_KEY, wrong_secret)
        .build()
        .unwrap();
    let target = ObjectTarget::new(Arc::new(store), "").unwrap();
    // Through the URL: the secret given as an option.
    let via_url = open_store_with(
        &format!("s3://{BUCKET}/p"),
        &[
            ("aws_endpoint", server.endpoint().as_str()),
            ("aws_allow_http", "true"),
            ("aws_region", s3::REGION),
            ("aws_access_key_id", ACCESS_KEY),
            ("aws_secret_access_key", wrong_secret),
        ],
    )
    .unwrap();
    for t in [target, via_url] {
        let err = rejected_upload(&t).await;
        assert!(
            err.contains("403") || err.contains("Forbidden") || err.contains("Signature"),
            "{err}"
        );
        assert!(!err.contains(wrong_secret), "{err}");
        assert!(!err.contains(SECRET_KEY), "{err}");
        assert!(!format!("{t:?}").contains(wrong_secret));
    }
    // Nothing was written.
    assert!(built_s3(&server, "").list("").await.unwrap().is_empty());
}

/// Upload one object to `t`, which must refuse it: the object stays pending, and the
/// error is returned.
pub(crate) async fn rejected_upload(t: &ObjectTarget) -> String {
    let outbox = MemoryOutbox::new();
    outbox.put(&keys::state("edge-1"), b"x".to_vec());
    let r = Uploader::new(t.clone())
        .with_backoff(fast_backoff())
        .drain(&outbox)
        .await;
    assert_eq!((r.uploaded, r.failed), (0, 1), "{r:?}");
    assert_eq!(outbox.len(), 1, "stays pending");
    r.last_error.expect("the error is reported")
}

/// Distinctive strings in targets, headers, bodies, hosts and secrets.
const LEAKS: &[&str] = &[
    "leak-http-host.example",
    "leak-path-segment",
    "LeakHeaderValue",
    "X-Leak-Header",
    "leak-body-text",
    "leak-secret-name",
    "leak-secret-key",
    "SuperSecretLeakValue",
    "leak-keyword-word",
    "leak-json-host.example",
    "leak-tcp-host.example",
    "leak-dns-name.example",
    "10.9.8.7",
    "leak-ping-host.example",
    "leak-ws-host.example",
    "LeakWsHeader",
    "leak-push-token",
    "leak-steam-host.example",
    "leak-k8s-deployment",
    "leak-docker-container",
    "leak-docker-engine",
    // Not the page's host: a published page exposed through an Ingress is public on it
    // (DNS names it), and the site server needs it (asserted below).
    "leak-tls-secret",
    "leak-annotation-value",
    "leak-policy-ref",
];

const LEAKY_MANIFESTS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: leak-secret-name, namespace: prod}
stringData:
  leak-secret-key: SuperSecretLeakValue
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: api, namespace: prod, labels: {tier: critical}}
spec:
  type: http
  description: Public API
  schedule: {intervalSeconds: 30}
  target:
    http:
      url: https://leak-http-host.example/leak-path-segment?token=${SECRET:leak-secret-name:leak-secret-key}
      method: POST
      headers:
        X-Leak-Header: LeakHeaderValue ${SECRET:leak-secret-name:leak-secret-key}
      body: '{"leak-body-text": true}'
  annotations: {runbook: leak-annotation-value}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: kw, namespace: prod}
spec:
  type: keyword
  target:
    keyword: {url: "https://leak-http-host.example/kw", keyword: leak-keyword-word}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: jq, namespace: prod}
spec:
  type: jsonQuery
  target:
    jsonQuery: {url: "https://leak-json-host.example/", query: "$.status", expected: ok}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: db, namespace: prod}
spec:
  type: tcp
  target: {tcp: {host: leak-tcp-host.example, port: 5432}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: dns, namespace: prod}
spec:
  type: dns
  target: {dns: {domain: leak-dns-name.example, server: "10.9.8.7"}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: ping, namespace: prod}
spec:
  type: ping
  target: {ping: {host: leak-ping-host.example}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: ws, namespace: prod}
spec:
  type: websocket
  target:
    websocket:
      url: wss://leak-ws-host.example/socket
      headers: {Authorization: LeakWsHeader}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: cron, namespace: prod}
spec:
  type: push
  target: {push: {token: leak-push-token}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: game, namespace: prod}
spec:
  type: steam
  target: {steam: {host: leak-steam-host.example}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: deploy, namespace: prod}
spec:
  type: kubernetes
  target: {kubernetes: {apiVersion: apps/v1, kind: Deployment, name: leak-k8s-deployment}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: box, namespace: prod}
spec:
  type: docker
  target: {docker: {container: leak-docker-container, engine: "tcp://leak-docker-engine:2375"}}
  alerting: {policyRef: {name: leak-policy-ref}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {name: public, namespace: prod}
spec:
  slug: status
  title: Acme Status
  published: true
  exposure: {mode: ingress, hosts: [leak-page-host.example], tls: {secretName: leak-tls-secret}}
  groups:
    - name: Services
      monitors:
        - ref: {name: api}
          displayName: The API
        - ref: {name: db}
  badges: {enabled: true}
---
apiVersion: monitoring.kubekuma.io/v1
kind: MaintenanceWindow
metadata: {name: sunday, namespace: prod}
spec:
  schedule: "0 2 * * SUN"
  durationMinutes: 90
  description: Weekly maintenance
  selector:
    matchLabels: {tier: critical}
"#;

fn leaky_snapshot() -> Snapshot {
    let built = build(&[parse_text("leaky.yaml", LEAKY_MANIFESTS)], None);
    let errors: Vec<String> = built
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.to_string())
        .collect();
    assert!(errors.is_empty(), "fixture must be valid: {errors:#?}");
    built.snapshot
}

#[tokio::test]
async fn the_public_catalog_never_contains_targets_or_secrets() {
    let snap = leaky_snapshot();
    assert_eq!(
        snap.monitors.len(),
        11,
        "every monitor of the fixture is loaded"
    );
    // The snapshot really carries every distinctive string, so copying a wrong field
    // into the catalog would make this test fail.
    let mut everything = serde_json::to_string(&snap.monitors.values().collect::<Vec<_>>())
        .unwrap()
        + &serde_json::to_string(&snap.status_pages.values().collect::<Vec<_>>()).unwrap();
    let secret = snap
        .secrets
        .get("prod", "leak-secret-name", "leak-secret-key")
        .expect("secret loaded");
    everything.push_str(&secret.expose_str());
    for leak in LEAKS {
        assert!(everything.contains(leak), "fixture lacks {leak}");
    }

    let now = Utc.with_ymd_and_hms(2024, 5, 5, 2, 30, 0).unwrap(); // a Sunday, in the window
    let catalog = public_catalog(&snap, "edge-1", now);
    let json = serde_json::to_string_pretty(&catalog).unwrap();
    for leak in LEAKS {
        assert!(
            !json.contains(leak),
            "{leak} leaked into the catalog:\n{json}"
        );
    }
    // The public facts are there.
    assert_eq!(catalog.monitors.len(), 11);
    let api = catalog.monitors.iter().find(|m| m.name == "api").unwrap();
    assert_eq!(
        (api.description.as_deref(), api.interval_seconds),
        (Some("Public API"), 30)
    );
    assert_eq!(catalog.pages.len(), 1);
    assert_eq!(catalog.pages[0].hosts, ["leak-page-host.example"]);
    assert_eq!(
        catalog.pages[0].groups[0].monitors[0]
            .display_name
            .as_deref(),
        Some("The API")
    );
    let w = &catalog.maintenance[0];
    assert_eq!(w.monitors, ["prod/api"]);
    assert_eq!(
        w.active_since,
        Some(Utc.with_ymd_and_hms(2024, 5, 5, 2, 0, 0).unwrap())
    );
    assert_eq!(
        w.next_start,
        Some(Utc.with_ymd_and_hms(2024, 5, 12, 2, 0, 0).unwrap())
    );

    // Uploaded and read back, it parses as the contract type.
    let server = S3Server::start().await;
    let target = built_s3(&server, "");
    let outbox = MemoryOutbox::new();
    outbox.put(
        &keys::catalog("edge-1"),
        serde_json::to_vec(&catalog).unwrap(),
    );
    assert!(Uploader::new(target.clone()).drain(&outbox).await.ok());
    let back = target.get(&keys::catalog("edge-1")).await.unwrap().unwrap();
    let parsed: AgentCatalog = serde_json::from_slice(&back).unwrap();
    assert_eq!(parsed, catalog);
}

/// The trait is usable through a generic bound (as the SQLite outbox will be).
#[tokio::test]
async fn outbox_versions_protect_newer_bodies() {
    async fn done_all<O: Outbox>(o: &O) {
        for p in o.pending(100).await.unwrap() {
            o.done(&p.key, p.version).await.unwrap();
        }
    }
    let o = MemoryOutbox::new();
    let v1 = o.put("a", b"1".to_vec());
    let pending = o.pending(10).await.unwrap();
    let v2 = o.put("a", b"2".to_vec());
    assert!(v2 > v1);
    o.done("a", pending[0].version).await.unwrap();
    assert_eq!(o.pending(10).await.unwrap()[0].body, b"2");
    done_all(&o).await;
    assert!(o.is_empty());
}
