//! The store's smaller records against every backend (SQLite and PostgreSQL): sessions
//! and logins, API silences, push monitors' tokens, the notification outbox with the
//! alert gate's state, audit events, incidents by ID and filter, and text PostgreSQL
//! cannot hold (NUL) in a heartbeat batch.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use kubekuma_agent::catalog::ObjKey;
use kubekuma_agent::store::deliveries::{Attempt, DeliveryStatus, NewDelivery};
use kubekuma_agent::store::{
    AuditEvent, AuthActivity, CreateSilence, IncidentFilter, SessionRow, StoreError,
};
use kubekuma_crds::results::Heartbeat;
use kubekuma_crds::{MonitorState, SilenceSpec};
use pretty_assertions::assert_eq;
use serde_json::json;

use crate::common::backends::{Db, backends};

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn session(id: &str, user: &str, hash: &str, created: DateTime<Utc>) -> SessionRow {
    SessionRow {
        id: id.into(),
        user_id: user.into(),
        username: "ann".into(),
        role: "editor".into(),
        token_hash: hash.into(),
        created_at: created,
        expires_at: created + TimeDelta::hours(12),
        ip_address: Some("192.0.2.7".into()),
        user_agent: Some("curl/8".into()),
    }
}

#[tokio::test]
async fn sessions_logins_and_key_use() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let t0 = at(2024, 10, 1, 8, 0, 0);
        let user = "prod/ann";

        let first = session("s1", user, "aa11", t0);
        assert_eq!(store.insert_session(first.clone()).await.unwrap(), None);
        let second = session("s2", user, "bb22", t0 + TimeDelta::hours(1));
        assert_eq!(
            store.insert_session(second.clone()).await.unwrap(),
            Some(t0),
            "{db:?}: the second login's previous login is the first"
        );
        assert_eq!(store.session_previous_login("s1").await.unwrap(), None);
        assert_eq!(store.session_previous_login("s2").await.unwrap(), Some(t0));
        assert_eq!(store.session_previous_login("nope").await.unwrap(), None);
        assert_eq!(
            store
                .auth_activity(AuthActivity::UserLogin, user)
                .await
                .unwrap(),
            Some(t0 + TimeDelta::hours(1))
        );
        // The same session ID twice is refused.
        assert!(store.insert_session(first.clone()).await.is_err(), "{db:?}");

        // Live while not expired and not revoked.
        let now = t0 + TimeDelta::hours(2);
        assert_eq!(
            store.live_session("aa11", now).await.unwrap(),
            Some(first.clone())
        );
        assert_eq!(
            store
                .live_session("aa11", t0 + TimeDelta::hours(12))
                .await
                .unwrap(),
            None,
            "{db:?}: expired at expires_at"
        );
        assert!(store.delete_session("s1").await.unwrap());
        assert!(!store.delete_session("s1").await.unwrap());
        assert_eq!(store.live_session("aa11", now).await.unwrap(), None);
        assert_eq!(store.session_count().await.unwrap(), 1);
        assert_eq!(
            store
                .purge_expired_sessions(t0 + TimeDelta::hours(13))
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.session_count().await.unwrap(), 0);

        // Key use: an earlier time never replaces a later one.
        let key = "prod/ci";
        assert_eq!(
            store
                .auth_activity(AuthActivity::ApiKeyUse, key)
                .await
                .unwrap(),
            None
        );
        store
            .record_auth_activity(AuthActivity::ApiKeyUse, key, t0 + TimeDelta::minutes(5))
            .await
            .unwrap();
        store
            .record_auth_activity(AuthActivity::ApiKeyUse, key, t0)
            .await
            .unwrap();
        assert_eq!(
            store
                .auth_activity(AuthActivity::ApiKeyUse, key)
                .await
                .unwrap(),
            Some(t0 + TimeDelta::minutes(5)),
            "{db:?}"
        );
        store.close().await.unwrap();
    }
}

fn silence(starts: DateTime<Utc>, ends: DateTime<Utc>, reason: &str) -> SilenceSpec {
    SilenceSpec {
        starts_at: starts,
        ends_at: ends,
        reason: Some(reason.into()),
        created_by: None,
        selector: None,
    }
}

#[tokio::test]
async fn api_silences_are_created_once_expired_and_kept() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let now = at(2024, 11, 5, 12, 0, 0);
        let key = ObjKey::new("prod", "deploy");
        let spec = silence(now, now + TimeDelta::hours(1), "deploy");
        assert_eq!(
            store
                .create_api_silence(&key, &spec, "user:prod/ann", now)
                .await
                .unwrap(),
            CreateSilence::Created
        );
        let other = silence(now, now + TimeDelta::hours(2), "other");
        assert_eq!(
            store
                .create_api_silence(&key, &other, "user:prod/bob", now)
                .await
                .unwrap(),
            CreateSilence::Exists,
            "{db:?}: one in effect is kept"
        );
        let later = ObjKey::new("prod", "later");
        store
            .create_api_silence(
                &later,
                &silence(now + TimeDelta::days(1), now + TimeDelta::days(2), "later"),
                "apikey:prod/ci",
                now,
            )
            .await
            .unwrap();

        let all = store.api_silences().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].key.clone(), all[0].spec.clone()),
            (key.clone(), spec)
        );
        assert_eq!(all[0].created_by.as_deref(), Some("user:prod/ann"));
        assert_eq!(all[0].created_at, now);
        let active = store.active_api_silences(now).await.unwrap();
        assert_eq!(
            active.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            vec![key.clone()]
        );
        assert_eq!(
            active[0].1.metadata.namespace.as_deref(),
            Some("prod"),
            "{db:?}"
        );

        let t1 = now + TimeDelta::minutes(10);
        assert!(store.expire_api_silence(&key, t1).await.unwrap());
        assert!(!store.expire_api_silence(&key, t1).await.unwrap());
        assert!(store.active_api_silences(t1).await.unwrap().is_empty());
        let kept = store.api_silences().await.unwrap();
        assert_eq!(kept[0].expired_at, Some(t1), "{db:?}: the history stays");
        // An expired one is replaced by a new one of the same name.
        assert_eq!(
            store
                .create_api_silence(&key, &other, "user:prod/bob", t1)
                .await
                .unwrap(),
            CreateSilence::Created
        );
        let replaced = store.api_silences().await.unwrap();
        assert_eq!(replaced[0].spec.reason.as_deref(), Some("other"));
        assert_eq!(replaced[0].expired_at, None);
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn push_rows_keep_the_token_and_the_latest_push() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let t0 = at(2024, 12, 1, 0, 0, 0);
        store
            .save_push_token("prod", "cron", "tok-8f2e")
            .await
            .unwrap();
        store
            .save_push_seen("prod", "cron", t0 + TimeDelta::minutes(5))
            .await
            .unwrap();
        store.save_push_seen("prod", "cron", t0).await.unwrap();
        store.save_push_seen("prod", "seen-only", t0).await.unwrap();
        let rows = store.push_rows().await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].generated_token.as_deref(), Some("tok-8f2e"));
        assert_eq!(
            rows[0].last_push_at,
            Some(t0 + TimeDelta::minutes(5)),
            "{db:?}: an earlier push never replaces a later one"
        );
        assert!(!format!("{:?}", rows[0]).contains("tok-8f2e"));
        assert_eq!(rows[1].generated_token, None);
        assert!(store.delete_push_row("prod", "cron").await.unwrap());
        assert!(!store.delete_push_row("prod", "cron").await.unwrap());
        assert_eq!(store.push_rows().await.unwrap().len(), 1);
        store.close().await.unwrap();
    }
}

fn delivery(provider: &str, status: DeliveryStatus, incident: Option<i64>) -> NewDelivery {
    NewDelivery {
        incident_id: incident,
        monitor: ObjKey::new("prod", "api"),
        policy: ObjKey::new("prod", "oncall"),
        provider: ObjKey::new("prod", provider),
        provider_type: "slack".into(),
        event_kind: "down".into(),
        dedupe_key: "prod/api:down".into(),
        status,
        error: (status != DeliveryStatus::Pending).then(|| "deduped within 5m".into()),
        detail: None,
        payload: json!({"title": "api is down", "body": "timed out", "n": [1, 2]}),
    }
}

#[tokio::test]
async fn deliveries_with_the_gate_state_then_attempts() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let t0 = at(2025, 1, 10, 9, 0, 0);
        let incident = store.open_incident("prod", "api", t0, None).await.unwrap();
        let ids = store
            .record_deliveries(
                vec![
                    delivery("slack", DeliveryStatus::Pending, Some(incident)),
                    delivery("mail", DeliveryStatus::Pending, Some(incident)),
                    delivery("pager", DeliveryStatus::Deduped, Some(incident)),
                ],
                Some(r#"{"sent":{"prod/api:down":1}}"#.into()),
                t0,
            )
            .await
            .unwrap();
        assert_eq!(ids.len(), 3);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{db:?}: {ids:?}");
        assert_eq!(
            store.load_gate_state().await.unwrap().as_deref(),
            Some(r#"{"sent":{"prod/api:down":1}}"#)
        );
        // Without a new gate state the saved one stays.
        store
            .record_deliveries(vec![], None, t0 + TimeDelta::seconds(1))
            .await
            .unwrap();
        assert!(store.load_gate_state().await.unwrap().is_some());

        let due = store.due_deliveries(t0, 10).await.unwrap();
        assert_eq!(
            due.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![ids[0], ids[1]],
            "{db:?}: pending ones, oldest first"
        );
        assert_eq!(
            due[0].payload,
            delivery("slack", DeliveryStatus::Pending, None).payload
        );
        assert_eq!(due[0].incident_id, Some(incident));
        assert_eq!(due[0].provider, ObjKey::new("prod", "slack"));
        assert_eq!(due[0].attempts, 0);
        assert_eq!(store.due_deliveries(t0, 1).await.unwrap().len(), 1);

        let t1 = t0 + TimeDelta::seconds(30);
        store
            .delivery_attempted(
                ids[0],
                t1,
                Attempt::Retry("503 from slack".into(), t1 + TimeDelta::minutes(1)),
            )
            .await
            .unwrap();
        store
            .delivery_attempted(ids[1], t1, Attempt::Sent("250 ok".into()))
            .await
            .unwrap();
        assert!(store.due_deliveries(t1, 10).await.unwrap().is_empty());
        let retried = store
            .due_deliveries(t1 + TimeDelta::minutes(1), 10)
            .await
            .unwrap();
        assert_eq!(retried.len(), 1);
        assert_eq!(retried[0].attempts, 1);
        assert_eq!(retried[0].last_error.as_deref(), Some("503 from slack"));
        let t2 = t1 + TimeDelta::minutes(2);
        store
            .delivery_attempted(ids[0], t2, Attempt::Failed("410 gone".into()))
            .await
            .unwrap();

        let all = store.deliveries_since(t0).await.unwrap();
        let statuses: Vec<_> = all.iter().map(|d| (d.id, d.status, d.attempts)).collect();
        assert_eq!(
            statuses,
            vec![
                (ids[0], DeliveryStatus::Failed, 2),
                (ids[1], DeliveryStatus::Sent, 1),
                (ids[2], DeliveryStatus::Deduped, 0),
            ],
            "{db:?}"
        );
        assert_eq!(all[1].detail.as_deref(), Some("250 ok"));
        assert_eq!(all[2].last_error.as_deref(), Some("deduped within 5m"));
        assert!(
            store
                .deliveries_since(t0 + TimeDelta::seconds(1))
                .await
                .unwrap()
                .is_empty()
        );
        let last = store.last_deliveries().await.unwrap();
        assert_eq!(
            last.iter()
                .map(|d| (d.provider.name.as_str(), d.status))
                .collect::<Vec<_>>(),
            vec![
                ("mail", DeliveryStatus::Sent),
                ("slack", DeliveryStatus::Failed)
            ]
        );

        // Deleting the incident (retention) keeps the deliveries, without the link.
        store
            .close_incident(incident, t0 + TimeDelta::minutes(3))
            .await
            .unwrap();
        let settings = kubekuma_crds::EffectiveSettings {
            incidents_days: 1,
            ..Default::default()
        };
        let report = store
            .apply_retention(t0 + TimeDelta::days(3), &settings)
            .await
            .unwrap();
        assert_eq!(report.deleted_incidents, 1);
        let kept = store.deliveries_since(t0).await.unwrap();
        assert_eq!(kept.len(), 3);
        assert!(kept.iter().all(|d| d.incident_id.is_none()), "{db:?}");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn audit_events_newest_first() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let t0 = at(2025, 2, 1, 0, 0, 0);
        let event = |kind: &str, key: &str, minutes: i64| AuditEvent {
            id: 0,
            resource_type: kind.into(),
            resource_key: key.into(),
            event_type: "acknowledged".into(),
            actor: Some("user:prod/ann".into()),
            details: Some(json!({"message": "on it", "nested": {"a": [1, 2]}})),
            changes_summary: Some("acknowledged incident".into()),
            timestamp: t0 + TimeDelta::minutes(minutes),
        };
        let a = store.record_audit(event("incident", "1", 0)).await.unwrap();
        let b = store
            .record_audit(event("silence", "prod/x", 1))
            .await
            .unwrap();
        let mut anonymous = event("session", "prod/ann", 2);
        anonymous.actor = None;
        anonymous.details = None;
        let c = store.record_audit(anonymous.clone()).await.unwrap();
        assert!(a < b && b < c);

        let newest = store.audit_events(None, 2).await.unwrap();
        assert_eq!(
            newest.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![c, b],
            "{db:?}"
        );
        assert_eq!(newest[0], AuditEvent { id: c, ..anonymous });
        let incidents = store.audit_events(Some("incident"), 10).await.unwrap();
        assert_eq!(
            incidents,
            vec![AuditEvent {
                id: a,
                ..event("incident", "1", 0)
            }]
        );
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn incidents_by_id_and_filter() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let t0 = at(2025, 3, 1, 0, 0, 0);
        let a = store.open_incident("prod", "api", t0, None).await.unwrap();
        let b = store
            .open_incident("prod", "web", t0 + TimeDelta::hours(1), None)
            .await
            .unwrap();
        let c = store
            .open_incident("prod", "api", t0 + TimeDelta::hours(2), None)
            .await
            .unwrap();
        store
            .close_incident(a, t0 + TimeDelta::minutes(30))
            .await
            .unwrap();
        store
            .add_incident_update(c, t0 + TimeDelta::hours(3), "looking")
            .await
            .unwrap();

        let one = store.incident(c).await.unwrap().unwrap();
        assert_eq!(one.updates.len(), 1);
        assert_eq!(store.incident(9_999).await.unwrap(), None);

        let ids = |v: Vec<kubekuma_crds::results::Incident>| {
            v.into_iter().map(|i| i.id).collect::<Vec<_>>()
        };
        let find = |f: IncidentFilter| store.find_incidents(f);
        assert_eq!(
            ids(find(IncidentFilter::default()).await.unwrap()),
            vec![a, b, c]
        );
        let api = IncidentFilter {
            monitor: Some(("prod".into(), "api".into())),
            ..Default::default()
        };
        assert_eq!(ids(find(api.clone()).await.unwrap()), vec![a, c], "{db:?}");
        let open_api = IncidentFilter {
            open: Some(true),
            ..api.clone()
        };
        assert_eq!(ids(find(open_api).await.unwrap()), vec![c], "{db:?}");
        let resolved = IncidentFilter {
            open: Some(false),
            ..Default::default()
        };
        assert_eq!(ids(find(resolved).await.unwrap()), vec![a], "{db:?}");
        let window = IncidentFilter {
            since: Some(t0 + TimeDelta::minutes(30)),
            until: Some(t0 + TimeDelta::hours(2)),
            ..Default::default()
        };
        assert_eq!(ids(find(window).await.unwrap()), vec![b], "{db:?}");
        store.close().await.unwrap();
    }
}

/// A target's body may put a NUL into a heartbeat's message. PostgreSQL refuses NUL in
/// text: the character is replaced (U+FFFD) instead of losing the whole batch.
#[tokio::test]
async fn a_nul_in_a_message_does_not_lose_the_batch() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let t0 = at(2025, 4, 1, 0, 0, 0);
        for i in 0..10 {
            store
                .record_heartbeat(Heartbeat {
                    namespace: "prod".into(),
                    name: "api".into(),
                    state: MonitorState::Down,
                    latency_ms: None,
                    reason: None,
                    message: Some(format!("body: a\0b {i}")),
                    checked_at: t0 + TimeDelta::seconds(i),
                    attempts: 1,
                })
                .unwrap();
        }
        store.flush().await.unwrap();
        let got = store
            .heartbeats("prod", "api", DateTime::UNIX_EPOCH, 100)
            .await
            .unwrap();
        assert_eq!(got.len(), 10, "{db:?}");
        let message = got[0].message.clone().unwrap();
        assert!(
            message == "body: a\0b 9" || message == "body: a\u{FFFD}b 9",
            "{db:?}: {message:?}"
        );
        store.close().await.unwrap();
    }
}

/// Every operation on a closed store fails with `Closed`, on either backend.
#[tokio::test]
async fn a_closed_store_refuses_everything() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        store.close().await.unwrap();
        store.close().await.unwrap();
        assert!(
            matches!(store.flush().await, Err(StoreError::Closed { .. })),
            "{db:?}"
        );
        assert!(matches!(
            store.open_incidents().await,
            Err(StoreError::Closed { .. })
        ));
        assert!(matches!(
            store.outbox_put("k", vec![1]).await,
            Err(StoreError::Closed { .. })
        ));
    }
}

/// A write runs after every heartbeat queued before it, on either backend: once it has
/// returned, a read sees those heartbeats without a flush.
#[tokio::test]
async fn a_write_runs_after_the_heartbeats_queued_before_it() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let t0 = at(2025, 5, 1, 0, 0, 0);
        for i in 0..300 {
            store
                .record_heartbeat(Heartbeat {
                    namespace: "prod".into(),
                    name: "api".into(),
                    state: MonitorState::Up,
                    latency_ms: Some(5.0),
                    reason: None,
                    message: None,
                    checked_at: t0 + TimeDelta::seconds(i),
                    attempts: 1,
                })
                .unwrap();
        }
        store.open_incident("prod", "api", t0, None).await.unwrap();
        let seen = store
            .heartbeats("prod", "api", DateTime::UNIX_EPOCH, 1000)
            .await
            .unwrap();
        assert_eq!(seen.len(), 300, "{db:?}");
        store.close().await.unwrap();
    }
}
