//! `spec.retention.downsample` in the store: `resolution: daily` turns old heartbeats (and
//! the hourly rollups of earlier runs) into one row per UTC day that every reader (daily
//! bars, uptime windows) reads back with the same counts; `enabled: false` leaves raw
//! heartbeats alone. On every backend (SQLite and PostgreSQL).

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use kubekuma_agent::store::Store;
use kubekuma_crds::objects::Rollup;
use kubekuma_crds::results::Heartbeat;
use kubekuma_crds::settings::DownsampleResolution;
use kubekuma_crds::{EffectiveSettings, KubeKumaSettingsSpec, MonitorState};

use crate::common::backends::{Db, backends};

const DAY_MS: i64 = 86_400_000;

fn hb(name: &str, state: MonitorState, latency: Option<f64>, t: DateTime<Utc>) -> Heartbeat {
    Heartbeat {
        namespace: "prod".into(),
        name: name.into(),
        state,
        latency_ms: latency,
        reason: None,
        message: None,
        checked_at: t,
        attempts: 1,
    }
}

fn counts(r: &Rollup) -> [u32; 6] {
    [r.up, r.down, r.flapping, r.pending, r.paused, r.maintenance]
}

async fn count(db: &Db, sql: &str, arg: i64) -> i64 {
    db.int(sql, &[arg]).await
}

/// The settings of a KubeKumaSettings spec written as a user writes it.
fn settings(retention: serde_json::Value) -> EffectiveSettings {
    let spec: KubeKumaSettingsSpec =
        serde_json::from_value(serde_json::json!({"retention": retention})).unwrap();
    spec.effective()
}

/// Ten days of heartbeats every 10 minutes for two monitors, ending at `now`.
async fn filled(db: &Db, now: DateTime<Utc>) -> Store {
    let store = db.open().await;
    let mut t = now - TimeDelta::days(10);
    let mut i = 0i64;
    while t < now {
        for name in ["api", "web"] {
            let state = match i {
                i if i % 7 == 0 => MonitorState::Down,
                i if i % 11 == 0 => MonitorState::Flapping,
                _ => MonitorState::Up,
            };
            store
                .record_heartbeat(hb(name, state, Some((i * 37 % 200) as f64), t))
                .unwrap();
            i += 1;
        }
        t += TimeDelta::minutes(10);
    }
    store.flush().await.unwrap();
    store
}

/// Hourly rows from a first run (after 5 days), then `resolution: daily` after 3 days:
/// everything before the UTC day of now-3d is one `day` row per day (no raw heartbeats,
/// no hourly rows left there), recent data stays raw; daily bars, whole-range and
/// window rollups read the same counts as before; a second run has nothing to do.
#[tokio::test]
async fn daily_resolution_keeps_counts_and_merges_hourly_rows() {
    for db in backends() {
        let db = Db::new(db).await;
        let now = Utc.with_ymd_and_hms(2024, 3, 20, 12, 30, 0).unwrap();
        let store = filled(&db, now).await;
        let (from, to) = (now - TimeDelta::days(11), now + TimeDelta::hours(1));
        let daily_before = store.daily_rollups(from, to).await.unwrap();
        let whole_before = store.rollup("prod", "api", from, to).await.unwrap();
        // A window starting at a UTC day boundary is exact at daily resolution too.
        let window_from = Utc.with_ymd_and_hms(2024, 3, 13, 0, 0, 0).unwrap();
        let window_before = store.rollup("prod", "web", window_from, now).await.unwrap();

        let hourly = settings(serde_json::json!({"downsample": {"afterDays": 5}}));
        assert_eq!(hourly.downsample_resolution, DownsampleResolution::Hourly);
        let first = store.apply_retention(now, &hourly).await.unwrap();
        assert!(first.downsampled_heartbeats > 0);
        let hour_rows = count(
            &db,
            "SELECT COUNT(*) FROM heartbeat_rollups \
             WHERE resolution = 'hour' AND bucket_start >= $1",
            0,
        )
        .await;
        assert!(hour_rows > 0);

        let daily =
            settings(serde_json::json!({"downsample": {"afterDays": 3, "resolution": "daily"}}));
        assert_eq!(daily.downsample_resolution, DownsampleResolution::Daily);
        let report = store.apply_retention(now, &daily).await.unwrap();
        assert_eq!(report.merged_hourly_rollups, hour_rows as u64);
        assert!(report.downsampled_heartbeats > 0);

        let cutoff = (now - TimeDelta::days(3))
            .timestamp_millis()
            .div_euclid(DAY_MS)
            * DAY_MS;
        let before_cutoff = async |sql: &str| count(&db, sql, cutoff).await;
        assert_eq!(
            before_cutoff("SELECT COUNT(*) FROM heartbeats WHERE checked_at < $1").await,
            0
        );
        assert_eq!(
            before_cutoff(
                "SELECT COUNT(*) FROM heartbeat_rollups \
             WHERE resolution = 'hour' AND bucket_start < $1"
            )
            .await,
            0
        );
        let first_day = (now - TimeDelta::days(10))
            .timestamp_millis()
            .div_euclid(DAY_MS)
            * DAY_MS;
        let days = (cutoff - first_day) / DAY_MS;
        assert_eq!(
            before_cutoff(
                "SELECT COUNT(*) FROM heartbeat_rollups \
             WHERE resolution = 'day' AND bucket_start < $1 \
             AND bucket_start % 86400000 = 0"
            )
            .await,
            days * 2,
            "one row per monitor and UTC day"
        );
        assert!(
            before_cutoff("SELECT COUNT(*) FROM heartbeats WHERE checked_at >= $1").await > 0,
            "recent heartbeats stay raw"
        );

        let daily_after = store.daily_rollups(from, to).await.unwrap();
        assert_eq!(daily_after.len(), daily_before.len());
        for (m, days) in &daily_before {
            assert_eq!(daily_after[m].len(), days.len(), "{m}");
            for (d, before) in days {
                assert_eq!(counts(&daily_after[m][d]), counts(before), "{m} on {d}");
            }
        }
        let whole_after = store.rollup("prod", "api", from, to).await.unwrap();
        assert_eq!(counts(&whole_after), counts(&whole_before));
        assert_eq!(whole_after.uptime_percent(), whole_before.uptime_percent());
        let window_after = store.rollup("prod", "web", window_from, now).await.unwrap();
        assert_eq!(counts(&window_after), counts(&window_before));

        // Hourly buckets leave daily rows out (an hour cannot hold a day); recent hours stay.
        let hours = store.hourly_rollups(from, to).await.unwrap();
        assert!(
            hours["prod/api"].keys().all(|h| *h >= cutoff),
            "no daily row in an hour"
        );
        assert!(hours["prod/api"].keys().any(|h| *h >= cutoff));

        let again = store.apply_retention(now, &daily).await.unwrap();
        assert_eq!(again, Default::default());

        // Retention expires daily rows like hourly ones.
        let later = now + TimeDelta::days(30);
        let expire =
            settings(serde_json::json!({"heartbeatsDays": 5, "downsample": {"enabled": false}}));
        let gone = store.apply_retention(later, &expire).await.unwrap();
        assert!(gone.deleted_rollups >= (days * 2) as u64);
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM heartbeat_rollups \
             WHERE resolution = 'day' AND bucket_start < $1",
                cutoff
            )
            .await,
            0
        );
        store.close().await.unwrap();
    }
}

/// `downsample.enabled: false`: old heartbeats stay raw, whatever the resolution.
#[tokio::test]
async fn downsampling_turned_off_keeps_raw_heartbeats() {
    for db in backends() {
        let db = Db::new(db).await;
        let now = Utc.with_ymd_and_hms(2024, 3, 20, 12, 30, 0).unwrap();
        let store = filled(&db, now).await;
        let raw_before = count(
            &db,
            "SELECT COUNT(*) FROM heartbeats WHERE checked_at > $1",
            0,
        )
        .await;
        let off = settings(serde_json::json!({
            "downsample": {"enabled": false, "afterDays": 1, "resolution": "daily"}
        }));
        assert!(!off.downsample_enabled);
        let report = store.apply_retention(now, &off).await.unwrap();
        assert_eq!(report, Default::default());
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM heartbeats WHERE checked_at > $1",
                0
            )
            .await,
            raw_before
        );
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM heartbeat_rollups WHERE bucket_start > $1",
                0
            )
            .await,
            0
        );
        store.close().await.unwrap();
    }
}
