//! The SQLite store against real database files in a temporary folder: migrations, WAL,
//! batched heartbeats, incidents, monitor state, crd cache, outbox, rollups, retention,
//! `DATABASE_URL` parsing, readers beside a busy writer, and bytes per heartbeat.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use crate::common::backends::{Db, backends};
use kubekuma_agent::store::{
    CrdCacheEntry, DatabaseLocation, MonitorStateRow, Store, StoreError, parse_database_url,
};
use kubekuma_crds::objects::Rollup;
use kubekuma_crds::results::{FailureReason, Heartbeat};
use kubekuma_crds::{EffectiveSettings, MonitorState};
use pretty_assertions::assert_eq;
use serde_json::json;

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(0).unwrap()
}

fn hb(
    ns: &str,
    name: &str,
    state: MonitorState,
    latency: Option<f64>,
    t: DateTime<Utc>,
) -> Heartbeat {
    let down = state == MonitorState::Down;
    Heartbeat {
        namespace: ns.to_string(),
        name: name.to_string(),
        state,
        latency_ms: latency,
        reason: down.then_some(FailureReason::Timeout),
        message: down.then(|| "timed out after 10s".to_string()),
        checked_at: t,
        attempts: if down { 3 } else { 1 },
    }
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data").join("kubekuma.db")
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn counts(r: &Rollup) -> [u32; 6] {
    [r.up, r.down, r.flapping, r.pending, r.paused, r.maintenance]
}

fn close_to(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
        (a, b) => a == b,
    }
}

#[tokio::test]
async fn migrations_apply_once_and_reopening_is_a_no_op() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        store.close().await.unwrap();

        let versions = "SELECT version FROM schema_migrations ORDER BY version";
        let applied = "SELECT applied_at FROM schema_migrations ORDER BY version";
        let first = (db.ints(versions, &[]).await, db.ints(applied, &[]).await);
        assert_eq!(
            first.0,
            (1..=db.migrations() as i64).map(Some).collect::<Vec<_>>(),
            "{db:?}"
        );

        let tables = db.tables().await;
        for t in [
            "audit_events",
            "crd_cache",
            "export_outbox",
            "heartbeat_rollups",
            "heartbeats",
            "incident_updates",
            "incidents",
            "maintenance_windows",
            "monitor_state",
            "notification_deliveries",
            "schema_migrations",
            "sessions",
            "silences",
            "push_monitors",
            "alert_gate_state",
            "api_silences",
            "auth_activity",
        ] {
            assert!(
                tables.contains(&t.to_string()),
                "{db:?}: missing table {t} in {tables:?}"
            );
        }

        // Reopening applies nothing: same versions, same application times.
        let store = db.open().await;
        store.close().await.unwrap();
        assert_eq!(
            (db.ints(versions, &[]).await, db.ints(applied, &[]).await),
            first
        );

        // A database from a newer agent is refused, naming the database.
        db.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)",
            &[],
        )
        .await
        .unwrap();
        let err = db.try_open().await.err().unwrap();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 999, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&db.name()), "{err}");
    }
}

#[tokio::test]
async fn wal_is_on_and_folders_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("kuma.db");
    let store = Store::open(&path).unwrap();
    store
        .record_heartbeat(hb(
            "ns",
            "m",
            MonitorState::Up,
            Some(1.0),
            at(2024, 1, 1, 0, 0, 0),
        ))
        .unwrap();
    store.flush().await.unwrap();
    assert!(path.exists());
    let mode: String = raw(&path)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    store.close().await.unwrap();
    assert!(matches!(
        store.record_heartbeat(hb(
            "ns",
            "m",
            MonitorState::Up,
            None,
            at(2024, 1, 1, 0, 0, 1)
        )),
        Err(StoreError::Closed { .. })
    ));
}

#[tokio::test]
async fn ten_thousand_batched_heartbeats_land_after_flush() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let t0 = at(2024, 5, 1, 0, 0, 0);
        let mut sent: BTreeMap<&str, Vec<Heartbeat>> = BTreeMap::new();
        for i in 0..10_000i64 {
            let name = if i % 2 == 0 { "even" } else { "odd" };
            let state = if i % 10 == 3 {
                MonitorState::Down
            } else {
                MonitorState::Up
            };
            let h = hb(
                "prod",
                name,
                state,
                Some(10.0 + (i % 97) as f64 / 8.0),
                t0 + TimeDelta::seconds(i),
            );
            sent.entry(name).or_default().push(h.clone());
            store.record_heartbeat(h).unwrap();
        }
        store.flush().await.unwrap();
        assert_eq!(store.heartbeats_written(), 10_000);
        let batches = store.heartbeat_batches();
        assert!(
            (10..100).contains(&batches),
            "{db:?}: committed in {batches} batches"
        );

        for (name, mut expected) in sent {
            let got = store
                .heartbeats("prod", name, epoch(), 100_000)
                .await
                .unwrap();
            expected.reverse();
            assert_eq!(got.len(), 5_000);
            assert_eq!(
                got, expected,
                "{db:?} {name}: newest first, every field back"
            );
        }
        // `since` and `limit`.
        let since = t0 + TimeDelta::seconds(9_990);
        let recent = store.heartbeats("prod", "even", since, 100).await.unwrap();
        assert_eq!(recent.len(), 5);
        assert!(recent.windows(2).all(|w| w[0].checked_at > w[1].checked_at));
        assert_eq!(
            store
                .heartbeats("prod", "even", epoch(), 3)
                .await
                .unwrap()
                .len(),
            3
        );
        assert!(
            store
                .heartbeats("prod", "none", epoch(), 3)
                .await
                .unwrap()
                .is_empty()
        );
        // A second result in the same millisecond replaces the first, also within
        // one batch.
        let twice = at(2024, 5, 2, 0, 0, 0);
        store
            .record_heartbeat(hb("prod", "dup", MonitorState::Up, Some(1.0), twice))
            .unwrap();
        store
            .record_heartbeat(hb("prod", "dup", MonitorState::Down, None, twice))
            .unwrap();
        store.flush().await.unwrap();
        let dup = store.heartbeats("prod", "dup", epoch(), 10).await.unwrap();
        assert_eq!(dup.len(), 1, "{db:?}");
        assert_eq!(dup[0].state, MonitorState::Down, "{db:?}");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn incidents_open_close_updates_ack_and_suppression() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let t0 = at(2024, 6, 1, 10, 0, 0);

        let old = store
            .open_incident("prod", "db", t0 - TimeDelta::days(3), None)
            .await
            .unwrap();
        let id = store
            .open_incident("prod", "api", t0, Some(FailureReason::Timeout))
            .await
            .unwrap();
        assert_ne!(old, id);
        let open = store.open_incidents().await.unwrap();
        assert_eq!(open.iter().map(|i| i.id).collect::<Vec<_>>(), vec![old, id]);

        store
            .add_incident_update(id, t0 + TimeDelta::minutes(5), "investigating")
            .await
            .unwrap();
        store
            .add_incident_update(id, t0 + TimeDelta::minutes(1), "we are aware")
            .await
            .unwrap();
        store
            .acknowledge_incident(id, "alice", t0 + TimeDelta::minutes(2))
            .await
            .unwrap();
        store
            .set_incident_suppressed(id, "silence prod/deploy")
            .await
            .unwrap();
        store
            .close_incident(id, t0 + TimeDelta::milliseconds(125_900))
            .await
            .unwrap();
        // Closing again changes nothing.
        store
            .close_incident(id, t0 + TimeDelta::hours(5))
            .await
            .unwrap();

        let got = store
            .incidents_between(t0 - TimeDelta::hours(1), t0 + TimeDelta::hours(1))
            .await
            .unwrap();
        // The old one started before the range but is still open: included.
        assert_eq!(got.iter().map(|i| i.id).collect::<Vec<_>>(), vec![old, id]);
        let inc = &got[1];
        assert_eq!(inc.namespace, "prod");
        assert_eq!(inc.name, "api");
        assert_eq!(inc.started_at, t0);
        assert_eq!(inc.ended_at, Some(t0 + TimeDelta::milliseconds(125_900)));
        assert_eq!(inc.duration_seconds, Some(125));
        assert_eq!(inc.reason, Some(FailureReason::Timeout));
        assert!(inc.acknowledged);
        assert!(inc.suppressed);
        assert_eq!(inc.suppress_reason.as_deref(), Some("silence prod/deploy"));
        let updates: Vec<&str> = inc.updates.iter().map(|u| u.message.as_str()).collect();
        assert_eq!(updates, vec!["we are aware", "investigating"]);

        let by = db
            .text("SELECT acknowledged_by FROM incidents WHERE id = $1", &[id])
            .await;
        let ack_at = db
            .int("SELECT acknowledged_at FROM incidents WHERE id = $1", &[id])
            .await;
        assert_eq!(
            (by.as_str(), ack_at),
            ("alice", (t0 + TimeDelta::minutes(2)).timestamp_millis())
        );

        let open = store.open_incidents().await.unwrap();
        assert_eq!(open.iter().map(|i| i.id).collect::<Vec<_>>(), vec![old]);
        // A closed incident outside the range is not listed.
        let later = store
            .incidents_between(t0 + TimeDelta::hours(1), t0 + TimeDelta::hours(2))
            .await
            .unwrap();
        assert_eq!(later.iter().map(|i| i.id).collect::<Vec<_>>(), vec![old]);

        let err = store.close_incident(9_999, t0).await.unwrap_err();
        assert!(matches!(
            err,
            StoreError::IncidentNotFound { id: 9_999, .. }
        ));
        assert!(
            err.to_string().contains("incident 9999 not found in"),
            "{err}"
        );
        assert!(err.to_string().contains(&db.name()), "{err}");
        assert!(store.add_incident_update(9_999, t0, "x").await.is_err());
        assert!(store.acknowledge_incident(9_999, "bob", t0).await.is_err());
        // Identities are never reused: a deleted incident's ID is not handed out again.
        let next = store.open_incident("prod", "x", t0, None).await.unwrap();
        assert!(next > id, "{db:?}");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn monitor_state_survives_a_restart() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let t0 = at(2024, 7, 1, 0, 0, 0);
        let incident = store.open_incident("prod", "api", t0, None).await.unwrap();
        let rows = vec![
            MonitorStateRow {
                namespace: "prod".into(),
                name: "api".into(),
                state: MonitorState::Down,
                since: Some(t0),
                last_checked_at: Some(t0 + TimeDelta::seconds(30)),
                consecutive_failures: 4,
                open_incident_id: Some(incident),
                cert_expires_at: Some(at(2025, 1, 1, 0, 0, 0)),
            },
            MonitorStateRow {
                namespace: "prod".into(),
                name: "web".into(),
                state: MonitorState::Pending,
                since: None,
                last_checked_at: None,
                consecutive_failures: 0,
                open_incident_id: None,
                cert_expires_at: None,
            },
        ];
        for r in &rows {
            store.save_monitor_state(r.clone()).await.unwrap();
        }
        let mut web = rows[1].clone();
        web.state = MonitorState::Up;
        web.since = Some(t0);
        store.save_monitor_state(web.clone()).await.unwrap();
        store.close().await.unwrap();

        let store = db.open().await;
        assert_eq!(
            store.load_monitor_states().await.unwrap(),
            vec![rows[0].clone(), web]
        );
        assert!(store.delete_monitor_state("prod", "web").await.unwrap());
        assert!(!store.delete_monitor_state("prod", "web").await.unwrap());
        assert_eq!(
            store.load_monitor_states().await.unwrap(),
            vec![rows[0].clone()]
        );

        // Foreign keys are on: a state cannot point at a missing incident.
        let mut bad = rows[0].clone();
        bad.open_incident_id = Some(424_242);
        assert!(store.save_monitor_state(bad).await.is_err(), "{db:?}");
        store.close().await.unwrap();
    }
}

fn entry(kind: &str, name: &str, generation: i64) -> CrdCacheEntry {
    CrdCacheEntry {
        kind: kind.into(),
        api_version: "monitoring.kubekuma.io/v1".into(),
        namespace: "prod".into(),
        name: name.into(),
        generation,
        resource_version: Some(format!("{generation}00")),
        spec: json!({"type": "http", "target": {"http": {"url": "https://example.com"}}}),
        status: None,
        labels: json!({"team": "platform"}),
        annotations: json!({}),
    }
}

#[tokio::test]
async fn crd_cache_refuses_secrets_and_keeps_tombstones() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;

        for kind in ["Secret", "secret"] {
            let mut secret = entry(kind, "api-token", 1);
            secret.api_version = "v1".into();
            secret.spec = json!({"data": {"token": "c2VjcmV0"}});
            let err = store.upsert_crd_cache(secret).await.unwrap_err();
            assert!(matches!(err, StoreError::SecretRefused { .. }));
            assert!(
                err.to_string()
                    .starts_with("refusing to cache secret prod/api-token in "),
                "{err}"
            );
        }
        assert!(
            store
                .crd_cache_entry("Secret", "prod", "api-token")
                .await
                .unwrap()
                .is_none()
        );
        // The table refuses them too.
        assert!(
            db.execute(
                "INSERT INTO crd_cache (kind, api_version, namespace, name, created_at, updated_at)
             VALUES ('Secret', 'v1', 'prod', 'x', 0, 0)",
                &[],
            )
            .await
            .is_err(),
            "{db:?}"
        );

        store
            .upsert_crd_cache(entry("Monitor", "api", 1))
            .await
            .unwrap();
        let first = store
            .crd_cache_entry("Monitor", "prod", "api")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.entry, entry("Monitor", "api", 1));
        assert_eq!(first.deleted_at, None);

        store
            .upsert_crd_cache(entry("Monitor", "api", 2))
            .await
            .unwrap();
        let gone = at(2024, 8, 1, 0, 0, 0);
        assert!(
            store
                .mark_crd_deleted("Monitor", "prod", "api", gone)
                .await
                .unwrap()
        );
        assert!(
            !store
                .mark_crd_deleted("Monitor", "prod", "nope", gone)
                .await
                .unwrap()
        );
        let deleted = store
            .crd_cache_entry("Monitor", "prod", "api")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(deleted.entry.generation, 2);
        assert_eq!(deleted.deleted_at, Some(gone));
        assert_eq!(deleted.created_at, first.created_at);

        store
            .upsert_crd_cache(entry("Monitor", "api", 3))
            .await
            .unwrap();
        let back = store
            .crd_cache_entry("Monitor", "prod", "api")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.entry.generation, 3);
        assert_eq!(back.deleted_at, None);
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn outbox_keeps_only_the_latest_body_and_a_newer_body_survives_done() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;

        let v1 = store
            .outbox_put("v1/agents/a/state.json", b"one".to_vec())
            .await
            .unwrap();
        let other = store
            .outbox_put("v1/agents/a/catalog.json", b"cat".to_vec())
            .await
            .unwrap();
        let pending = store.outbox_pending(10).await.unwrap();
        assert_eq!(
            pending,
            vec![
                ("v1/agents/a/state.json".to_string(), b"one".to_vec(), v1),
                (
                    "v1/agents/a/catalog.json".to_string(),
                    b"cat".to_vec(),
                    other
                ),
            ]
        );
        assert_eq!(store.outbox_pending(1).await.unwrap().len(), 1);

        // The uploader took (state.json, v1); a newer body is queued while it uploads.
        let v2 = store
            .outbox_put("v1/agents/a/state.json", b"two".to_vec())
            .await
            .unwrap();
        assert!(v2 > v1);
        assert!(
            !store
                .outbox_done("v1/agents/a/state.json", v1)
                .await
                .unwrap()
        );
        let pending = store.outbox_pending(10).await.unwrap();
        assert_eq!(
            pending[0],
            ("v1/agents/a/state.json".to_string(), b"two".to_vec(), v2)
        );
        assert_eq!(pending.len(), 2, "replaced, not added");

        assert!(
            store
                .outbox_done("v1/agents/a/state.json", v2)
                .await
                .unwrap()
        );
        assert!(
            store
                .outbox_done("v1/agents/a/catalog.json", other)
                .await
                .unwrap()
        );
        assert!(store.outbox_pending(10).await.unwrap().is_empty());

        // Queued again after upload: a fresh version, never one seen before.
        let v3 = store
            .outbox_put("v1/agents/a/state.json", b"three".to_vec())
            .await
            .unwrap();
        assert!(v3 > v2, "{db:?}");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn rollups_of_known_data() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let h0 = at(2024, 9, 2, 10, 0, 0);
        let h1 = h0 + TimeDelta::hours(1);
        let mut t = h0;
        let mut put = |state, latency| {
            store
                .record_heartbeat(hb("prod", "api", state, latency, t))
                .unwrap();
            t += TimeDelta::seconds(20);
        };
        for ms in 1..=100 {
            put(MonitorState::Up, Some(f64::from(ms)));
        }
        for _ in 0..5 {
            put(MonitorState::Down, Some(10_000.0)); // failures' latency is not service latency
        }
        for _ in 0..3 {
            put(MonitorState::Pending, None);
        }
        put(MonitorState::Paused, None);
        for i in 0..10 {
            store
                .record_heartbeat(hb(
                    "prod",
                    "api",
                    MonitorState::Up,
                    Some(200.0),
                    h1 + TimeDelta::minutes(i),
                ))
                .unwrap();
        }
        store
            .record_heartbeat(hb("prod", "web", MonitorState::Flapping, Some(7.0), h1))
            .unwrap();
        store.flush().await.unwrap();

        let first_hour = store.rollup("prod", "api", h0, h1).await.unwrap();
        assert_eq!(
            first_hour,
            Rollup {
                up: 100,
                down: 5,
                flapping: 0,
                pending: 3,
                paused: 1,
                maintenance: 0,
                latency_min: Some(1.0),
                latency_avg: Some(50.5),
                // Nearest rank: the ⌈0.95·100⌉ = 95th smallest of 1..=100.
                latency_p95: Some(95.0),
                latency_max: Some(100.0),
            }
        );
        assert!(close_to(
            first_hour.uptime_percent(),
            Some(100.0 * 100.0 / 105.0)
        ));

        let hourly = store
            .hourly_rollups(h0 - TimeDelta::hours(1), h1 + TimeDelta::hours(1))
            .await
            .unwrap();
        assert_eq!(
            hourly.keys().collect::<Vec<_>>(),
            vec!["prod/api", "prod/web"]
        );
        let api = &hourly["prod/api"];
        assert_eq!(
            api.keys().copied().collect::<Vec<_>>(),
            vec![h0.timestamp_millis(), h1.timestamp_millis()]
        );
        assert_eq!(api[&h0.timestamp_millis()], first_hour);
        assert_eq!(counts(&api[&h1.timestamp_millis()]), [10, 0, 0, 0, 0, 0]);
        assert_eq!(api[&h1.timestamp_millis()].latency_p95, Some(200.0));
        assert_eq!(hourly["prod/web"][&h1.timestamp_millis()].flapping, 1);

        let day = at(2024, 9, 2, 0, 0, 0);
        let daily = store
            .daily_rollups(day, day + TimeDelta::days(1))
            .await
            .unwrap();
        let d = &daily["prod/api"][&day.timestamp_millis()];
        assert_eq!(counts(d), [110, 5, 0, 3, 1, 0]);
        // 110 latencies: rank ⌈104.5⌉ = 105 falls among the ten 200s.
        assert_eq!(d.latency_p95, Some(200.0));
        assert!(close_to(d.latency_avg, Some((5050.0 + 2000.0) / 110.0)));

        let points = store
            .recent_latency("prod", "api", h0, TimeDelta::hours(1))
            .await
            .unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].at, points[0].ms), (h0, 50.5));
        assert_eq!((points[1].at, points[1].ms), (h1, 200.0));
        assert!(
            store
                .recent_latency("prod", "api", h0, TimeDelta::zero())
                .await
                .is_err()
        );
        assert_eq!(
            store.rollup("prod", "none", h0, h1).await.unwrap(),
            Rollup::default()
        );
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn retention_downsamples_exactly_and_expires_old_data() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let now = at(2024, 3, 20, 12, 30, 0);
        let start = now - TimeDelta::days(10);
        let monitors = ["api", "web"];
        let mut n = 0i64;
        let mut t = start;
        while t < now {
            for (k, name) in monitors.iter().enumerate() {
                let i = n + k as i64;
                let state = match i {
                    i if i % 7 == 0 => MonitorState::Down,
                    i if i % 13 == 0 => MonitorState::Pending,
                    i if i % 17 == 0 => MonitorState::Flapping,
                    _ => MonitorState::Up,
                };
                let latency =
                    (state != MonitorState::Pending).then(|| (i * 37 % 200) as f64 + 0.25);
                store
                    .record_heartbeat(hb("prod", name, state, latency, t))
                    .unwrap();
            }
            n += 1;
            t += TimeDelta::minutes(10);
        }
        store.flush().await.unwrap();
        let closed_old = store
            .open_incident("prod", "api", now - TimeDelta::days(401), None)
            .await
            .unwrap();
        store
            .close_incident(closed_old, now - TimeDelta::days(400))
            .await
            .unwrap();
        store
            .add_incident_update(closed_old, now - TimeDelta::days(400), "fixed")
            .await
            .unwrap();
        let closed_recent = store
            .open_incident("prod", "api", now - TimeDelta::days(11), None)
            .await
            .unwrap();
        store
            .close_incident(closed_recent, now - TimeDelta::days(10))
            .await
            .unwrap();
        let still_open = store
            .open_incident("prod", "web", now - TimeDelta::days(500), None)
            .await
            .unwrap();

        let (from, to) = (start - TimeDelta::days(1), now + TimeDelta::hours(1));
        let hourly_before = store.hourly_rollups(from, to).await.unwrap();
        let daily_before = store.daily_rollups(from, to).await.unwrap();
        let whole_before: Vec<Rollup> = {
            let mut v = Vec::new();
            for m in monitors {
                v.push(store.rollup("prod", m, from, to).await.unwrap());
            }
            v
        };

        let cutoff = {
            let c = (now - TimeDelta::days(3)).timestamp_millis();
            c - c.rem_euclid(3_600_000)
        };
        let old_raw = db
            .int(
                "SELECT COUNT(*) FROM heartbeats WHERE checked_at < $1",
                &[cutoff],
            )
            .await;
        let old_hours = db
        .int(
            "SELECT COUNT(*) FROM (SELECT DISTINCT monitor_name, checked_at / 3600000 FROM heartbeats WHERE checked_at < $1) AS h",
            &[cutoff],
        )
        .await;
        assert!(old_raw > 1_000);

        let settings = EffectiveSettings {
            heartbeats_days: 90,
            incidents_days: 365,
            downsample_enabled: true,
            downsample_after_days: 3,
            ..EffectiveSettings::default()
        };
        let report = store.apply_retention(now, &settings).await.unwrap();
        assert_eq!(report.downsampled_heartbeats, old_raw as u64);
        assert_eq!(report.deleted_heartbeats, 0);
        assert_eq!(report.deleted_rollups, 0);
        assert_eq!(report.deleted_incidents, 1);
        assert_eq!(
            db.int(
                "SELECT COUNT(*) FROM heartbeats WHERE checked_at < $1",
                &[cutoff]
            )
            .await,
            0
        );
        assert_eq!(
            db.int(
                "SELECT COUNT(*) FROM heartbeat_rollups WHERE bucket_start < $1",
                &[cutoff]
            )
            .await,
            old_hours
        );
        let updates = db.int("SELECT COUNT(*) FROM incident_updates", &[]).await;
        assert_eq!(updates, 0, "updates go with their incident");

        // Every hour, raw or downsampled, reads back the same: counts exactly, latency
        // statistics too (whole hours were downsampled, so even p95 is exact).
        let hourly_after = store.hourly_rollups(from, to).await.unwrap();
        assert_eq!(hourly_after.len(), hourly_before.len());
        for (m, hours) in &hourly_before {
            assert_eq!(hourly_after[m].len(), hours.len());
            for (h, before) in hours {
                let after = &hourly_after[m][h];
                assert_eq!(counts(after), counts(before), "{m} at {h}");
                assert!(
                    close_to(after.latency_avg, before.latency_avg),
                    "{m} at {h}"
                );
                assert_eq!(
                    (after.latency_min, after.latency_p95, after.latency_max),
                    (before.latency_min, before.latency_p95, before.latency_max)
                );
            }
        }
        let daily_after = store.daily_rollups(from, to).await.unwrap();
        for (m, days) in &daily_before {
            for (d, before) in days {
                assert_eq!(counts(&daily_after[m][d]), counts(before));
            }
        }
        for (k, m) in monitors.iter().enumerate() {
            let after = store.rollup("prod", m, from, to).await.unwrap();
            assert_eq!(counts(&after), counts(&whole_before[k]));
            assert_eq!(
                after.uptime_percent(),
                whole_before[k].uptime_percent(),
                "uptime of {m}"
            );
            assert!(close_to(after.latency_avg, whole_before[k].latency_avg));
        }

        // Nothing left to downsample; a late heartbeat in a downsampled hour is merged.
        let again = store.apply_retention(now, &settings).await.unwrap();
        assert_eq!(again, Default::default());
        let late_at = start + TimeDelta::minutes(5);
        let hour = late_at.timestamp_millis() - late_at.timestamp_millis().rem_euclid(3_600_000);
        store
            .record_heartbeat(hb("prod", "api", MonitorState::Down, None, late_at))
            .unwrap();
        store.flush().await.unwrap();
        let merged = store.apply_retention(now, &settings).await.unwrap();
        assert_eq!(merged.downsampled_heartbeats, 1);
        let hourly = store.hourly_rollups(from, to).await.unwrap();
        let mut expected = counts(&hourly_before["prod/api"][&hour]);
        expected[1] += 1;
        assert_eq!(counts(&hourly["prod/api"][&hour]), expected);

        // Eight days later with ten days of retention: everything before now-2d goes.
        let later = now + TimeDelta::days(8);
        let keep_from = (now - TimeDelta::days(2)).timestamp_millis();
        let expiring = db
            .int(
                "SELECT COUNT(*) FROM heartbeats WHERE checked_at < $1",
                &[keep_from],
            )
            .await;
        let rollup_rows = db.int("SELECT COUNT(*) FROM heartbeat_rollups", &[]).await;
        let expire = EffectiveSettings {
            heartbeats_days: 10,
            incidents_days: 365,
            downsample_enabled: false,
            ..EffectiveSettings::default()
        };
        let report = store.apply_retention(later, &expire).await.unwrap();
        assert_eq!(
            report,
            kubekuma_agent::store::RetentionReport {
                deleted_heartbeats: expiring as u64,
                downsampled_heartbeats: 0,
                deleted_rollups: rollup_rows as u64,
                deleted_incidents: 0,
                merged_hourly_rollups: 0,
            }
        );
        let left = db.int("SELECT MIN(checked_at) FROM heartbeats", &[]).await;
        assert!(left >= keep_from);
        let ids: Vec<i64> = store
            .incidents_between(epoch(), later)
            .await
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, vec![still_open, closed_recent], "{db:?}");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn database_url_forms() {
    let file = |p: &str| Ok(DatabaseLocation::File(PathBuf::from(p)));
    assert_eq!(
        parse_database_url("sqlite:/var/lib/kubekuma/db.sqlite").map_err(|e| e.to_string()),
        file("/var/lib/kubekuma/db.sqlite")
    );
    assert_eq!(
        parse_database_url("sqlite:data/kuma.db").map_err(|e| e.to_string()),
        file("data/kuma.db")
    );
    assert_eq!(
        parse_database_url("sqlite:///abs/kuma.db").map_err(|e| e.to_string()),
        file("/abs/kuma.db")
    );
    assert_eq!(
        parse_database_url("sqlite://rel/kuma.db").map_err(|e| e.to_string()),
        file("rel/kuma.db")
    );
    assert_eq!(
        parse_database_url("SQLite:x.db").map_err(|e| e.to_string()),
        file("x.db")
    );
    assert_eq!(
        parse_database_url("sqlite::memory:").unwrap(),
        DatabaseLocation::Memory
    );
    assert_eq!(
        parse_database_url("sqlite://:memory:").unwrap(),
        DatabaseLocation::Memory
    );
    assert!(matches!(
        parse_database_url("sqlite:"),
        Err(StoreError::EmptyPath)
    ));

    let err = Store::open_url("postgres://kuma:hunter2@db:5432/kuma")
        .err()
        .unwrap();
    let msg = err.to_string();
    assert_eq!(
        msg,
        "unsupported database url scheme \"postgres\": use sqlite:PATH, sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DATABASE"
    );
    assert!(!msg.contains("hunter2"));
    assert!(matches!(
        parse_database_url("/just/a/path.db"),
        Err(StoreError::UnsupportedUrl { .. })
    ));

    // A file URL opens (creating folders), an in-memory one works end to end.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x").join("kuma.db");
    let store = Store::open_url(&format!("sqlite:{}", path.display())).unwrap();
    store.close().await.unwrap();
    assert!(path.exists());

    let mem = Store::open_url("sqlite::memory:").unwrap();
    assert_eq!(mem.path(), ":memory:");
    let t0 = at(2024, 1, 1, 0, 0, 0);
    mem.record_heartbeat(hb("ns", "m", MonitorState::Up, Some(3.0), t0))
        .unwrap();
    mem.flush().await.unwrap();
    assert_eq!(
        mem.heartbeats("ns", "m", epoch(), 10).await.unwrap().len(),
        1
    );
    let id = mem.open_incident("ns", "m", t0, None).await.unwrap();
    assert_eq!(mem.open_incidents().await.unwrap()[0].id, id);
    // Two in-memory stores are separate databases.
    let other = Store::open_url("sqlite::memory:").unwrap();
    assert!(
        other
            .heartbeats("ns", "m", epoch(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_are_not_blocked_by_writers() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open(&path).unwrap();
    let t0 = at(2024, 2, 1, 0, 0, 0);
    store
        .record_heartbeat(hb("ns", "m", MonitorState::Up, Some(1.0), t0))
        .unwrap();
    store.flush().await.unwrap();

    // Another connection holds the write lock with uncommitted rows: reads still
    // answer, from the last committed state.
    let mut other = raw(&path);
    let tx = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    tx.execute(
        "INSERT INTO heartbeats (monitor_namespace, monitor_name, checked_at, state) VALUES ('ns', 'm', ?1, 'down')",
        [t0.timestamp_millis() + 1],
    )
    .unwrap();
    let seen = store.heartbeats("ns", "m", epoch(), 10).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        store
            .rollup("ns", "m", epoch(), t0 + TimeDelta::days(1))
            .await
            .unwrap()
            .up,
        1
    );
    tx.rollback().unwrap();

    // Our writer commits 100k heartbeats; reads keep completing meanwhile.
    for i in 0..100_000i64 {
        store
            .record_heartbeat(hb(
                "ns",
                "big",
                MonitorState::Up,
                Some(2.5),
                t0 + TimeDelta::milliseconds(i * 10),
            ))
            .unwrap();
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.flush().await })
    };
    let mut reads_while_writing = 0;
    while !writer.is_finished() {
        let got = store.heartbeats("ns", "m", epoch(), 10).await.unwrap();
        assert_eq!(got.len(), 1);
        if !writer.is_finished() {
            reads_while_writing += 1;
        }
    }
    writer.await.unwrap().unwrap();
    println!("{reads_while_writing} reads completed while the writer committed 100000 heartbeats");
    assert!(reads_while_writing > 0);
    assert_eq!(
        store
            .heartbeats("ns", "big", epoch(), 200_000)
            .await
            .unwrap()
            .len(),
        100_000
    );
}

#[tokio::test]
async fn bytes_per_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&db(&dir)).unwrap();
    let empty = store.database_bytes().await.unwrap();
    let t0 = at(2024, 4, 1, 0, 0, 0);
    // 50 monitors with realistic names, every 30 s, 2% failures with a message,
    // latencies with fractions (stored as 8-byte reals).
    const N: i64 = 100_000;
    for i in 0..N {
        let m = i % 50;
        let t = t0 + TimeDelta::seconds(30 * (i / 50)) + TimeDelta::milliseconds(m * 7);
        let down = i % 47 == 0;
        let state = if down {
            MonitorState::Down
        } else {
            MonitorState::Up
        };
        let latency = 20.0 + (i * 7919 % 18_000) as f64 / 100.0;
        store
            .record_heartbeat(hb(
                "production",
                &format!("api-health-{m:02}"),
                state,
                Some(latency),
                t,
            ))
            .unwrap();
    }
    store.flush().await.unwrap();
    assert_eq!(store.heartbeats_written(), N as u64);
    let total = store.database_bytes().await.unwrap();
    let per = total as f64 / N as f64;
    let net = (total - empty) as f64 / N as f64;
    println!(
        "bytes per heartbeat: {per:.1} ({total} bytes for {N} heartbeats via page_count*page_size; \
         {net:.1} without the empty schema's {empty} bytes)"
    );
    assert!(per < 100.0, "{per} bytes per heartbeat");
}

/// Whether this process runs as root (permissions do not stop root: use `chattr +i`).
fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Make `path` unwritable for this process: `chattr +i` as root (ext4 and most local
/// file systems), else permissions (0444 for a file, 0555 for a folder). Returns a guard
/// that makes it writable again.
struct Unwritable(PathBuf, bool);

impl Unwritable {
    fn new(path: &Path) -> Option<Unwritable> {
        use std::os::unix::fs::PermissionsExt as _;
        if is_root() {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            // Without chattr support (another file system) the case cannot be staged.
            return ok.then(|| Unwritable(path.to_path_buf(), true));
        }
        let mode = if path.is_dir() { 0o555 } else { 0o444 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).ok()?;
        Some(Unwritable(path.to_path_buf(), false))
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt as _;
        if self.1 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        } else {
            let mode = if self.0.is_dir() { 0o755 } else { 0o644 };
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(mode));
        }
    }
}

/// Item 10 of issue 17: a read-only database fails at open, naming the path and the
/// cause, instead of running and losing every batch.
#[tokio::test]
async fn a_read_only_database_fails_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let store = Store::open(&path).unwrap();
    store.close().await.unwrap();
    // The WAL files are gone after a clean close; the file itself is read-only.
    let Some(_guard) = Unwritable::new(&path) else {
        eprintln!(
            "cannot make {} unwritable here: case skipped",
            path.display()
        );
        return;
    };
    let err = Store::open(&path)
        .err()
        .expect("a read-only database must not open");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("not writable"),
        "{text}"
    );
}

/// Item 10 of issue 17: a new database in a folder without write permission fails at
/// open with the path and cause.
#[tokio::test]
async fn a_database_in_an_unwritable_folder_fails_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ro");
    std::fs::create_dir_all(&folder).unwrap();
    let Some(_guard) = Unwritable::new(&folder) else {
        eprintln!(
            "cannot make {} unwritable here: case skipped",
            folder.display()
        );
        return;
    };
    let path = folder.join("kubekuma.db");
    let err = Store::open(&path).err().expect("must not open");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
}

/// Item 10 of issue 17: a database that stops accepting writes while the agent runs
/// (the writer's connection refuses writes, as SQLite does for a read-only database)
/// reports why through `write_failure` (readiness), and the heartbeats are kept and
/// committed once it accepts writes again: nothing is lost.
#[tokio::test]
async fn heartbeats_are_kept_while_the_database_refuses_writes() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        store
            .record_heartbeat(hb("ns", "a", MonitorState::Up, Some(1.0), epoch()))
            .unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.write_failure(), None);

        store.refuse_writes(true).await.unwrap();
        for i in 1..=250 {
            store
                .record_heartbeat(hb(
                    "ns",
                    "a",
                    MonitorState::Up,
                    Some(1.0),
                    epoch() + TimeDelta::seconds(i),
                ))
                .unwrap();
        }
        let err = store
            .flush()
            .await
            .expect_err("the batch cannot be committed");
        assert!(err.to_string().contains("kept, retrying"), "{err}");
        let failure = store.write_failure().expect("the failure is reported");
        assert!(
            failure.contains("not writable")
                && (failure.contains("readonly") || failure.contains("read-only")),
            "{db:?}: {failure}"
        );
        // Readiness says so.
        let health = kubekuma_agent::admin::Health::default();
        health.set_ready(true);
        health.set_problem(store.write_failure());
        let ready =
            kubekuma_agent::admin::handle(&http::Request::get("/ready").body(()).unwrap(), &health);
        assert_eq!(ready.status(), http::StatusCode::SERVICE_UNAVAILABLE);

        store.refuse_writes(false).await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.write_failure(), None);
        assert_eq!(store.heartbeats_written(), 251, "every heartbeat stored");
        let stored = store
            .heartbeats("ns", "a", DateTime::UNIX_EPOCH, 1000)
            .await
            .unwrap();
        assert_eq!(stored.len(), 251, "{db:?}");
        store.close().await.unwrap();
    }
}
