//! Delivery claims against every backend (SQLite and PostgreSQL): claimants never share
//! a row (on PostgreSQL two stores claiming at once), an expired claim makes an orphan
//! once and a second expiry gives the row up, and a recorded attempt or a release ends
//! a claim.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use kubekuma_agent::catalog::ObjKey;
use kubekuma_agent::store::Store;
use kubekuma_agent::store::deliveries::{
    Attempt, Delivery, DeliveryStatus, GIVEN_UP_AFTER_ORPHANED, NewDelivery,
};
use pretty_assertions::assert_eq;
use serde_json::json;

use crate::common::backends::{Backend, Db, backends};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn pending(provider: &str, key: &str) -> NewDelivery {
    NewDelivery {
        incident_id: None,
        monitor: ObjKey::new("prod", "api"),
        policy: ObjKey::new("prod", "oncall"),
        provider: ObjKey::new("prod", provider),
        provider_type: "webhook".into(),
        event_kind: "down".into(),
        dedupe_key: key.into(),
        status: DeliveryStatus::Pending,
        error: None,
        detail: None,
        payload: json!({"route": {"dedupeWindowMinutes": 60}, "title": "api is down"}),
    }
}

async fn row(store: &Store, id: i64) -> Delivery {
    store
        .deliveries_since(DateTime::from_timestamp(0, 0).unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == id)
        .unwrap()
}

fn ids(rows: &[Delivery]) -> Vec<i64> {
    rows.iter().map(|d| d.id).collect()
}

const CLAIM: Duration = Duration::from_secs(30);

/// Claim everything due for `claimant`, a few rows at a time, until nothing is left.
async fn claim_all(store: Store, claimant: &'static str, at: DateTime<Utc>) -> Vec<i64> {
    let mut got = Vec::new();
    loop {
        let rows = store
            .claim_deliveries(at, 7, claimant, CLAIM)
            .await
            .unwrap();
        if rows.is_empty() {
            return got;
        }
        for d in &rows {
            assert_eq!(d.claimed_by.as_deref(), Some(claimant));
            assert_eq!(d.orphaned, 0);
        }
        got.extend(ids(&rows));
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_claimants_never_get_the_same_row() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let mut all = Vec::new();
        for chunk in 0..4 {
            let rows = (0..50)
                .map(|i| pending("hook", &format!("k{chunk}-{i}")))
                .collect();
            all.extend(store.record_deliveries(rows, None, t0()).await.unwrap());
        }
        // On PostgreSQL a second store on the same database, as a second agent has.
        let other = match db.backend {
            Backend::Postgres => db.open().await,
            Backend::Sqlite => store.clone(),
        };
        let at = t0() + TimeDelta::seconds(1);
        let (a, b) = tokio::join!(
            tokio::spawn(claim_all(store.clone(), "a", at)),
            tokio::spawn(claim_all(other.clone(), "b", at)),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let (sa, sb): (HashSet<i64>, HashSet<i64>) =
            (a.iter().copied().collect(), b.iter().copied().collect());
        assert_eq!(sa.len(), a.len(), "{db:?}: a row twice to one claimant");
        assert!(sa.is_disjoint(&sb), "{db:?}: {:?}", sa.intersection(&sb));
        let mut both: Vec<i64> = a.into_iter().chain(b).collect();
        both.sort();
        assert_eq!(both, all, "{db:?}: every due row claimed once");
        // Held: nobody gets them again before the claims expire.
        assert!(
            store
                .claim_deliveries(at + TimeDelta::seconds(29), 500, "c", CLAIM)
                .await
                .unwrap()
                .is_empty(),
            "{db:?}"
        );

        // One after the other, too: the second gets only what the first left.
        let first = store
            .claim_deliveries(at + TimeDelta::seconds(31), 120, "c", CLAIM)
            .await
            .unwrap();
        let second = other
            .claim_deliveries(at + TimeDelta::seconds(31), 500, "d", CLAIM)
            .await
            .unwrap();
        assert_eq!(
            (first.len(), second.len()),
            (120, 80),
            "{db:?}: the expired claims taken again"
        );
        assert!(
            ids(&first)
                .iter()
                .collect::<HashSet<_>>()
                .is_disjoint(&ids(&second).iter().collect())
        );
        assert!(
            first.windows(2).all(|w| w[0].id < w[1].id),
            "{db:?}: oldest first"
        );
        if db.backend == Backend::Postgres {
            other.close().await.unwrap();
        }
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn an_expired_claim_is_taken_as_an_orphan_once_then_given_up() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let id = store
            .record_deliveries(vec![pending("hook", "prod/api:down")], None, t0())
            .await
            .unwrap()[0];

        let a = store.claim_deliveries(t0(), 10, "a", CLAIM).await.unwrap();
        assert_eq!(ids(&a), vec![id], "{db:?}");
        assert_eq!(a[0].claimed_by.as_deref(), Some("a"));
        assert_eq!(a[0].claimed_until, Some(t0() + TimeDelta::seconds(30)));
        assert_eq!((a[0].orphaned, a[0].orphaned_from.clone()), (0, None));
        // Live: nobody else takes it.
        let t = t0() + TimeDelta::seconds(29);
        assert!(
            store
                .claim_deliveries(t, 10, "b", CLAIM)
                .await
                .unwrap()
                .is_empty()
        );

        // Expired: `a` stopped mid-send; `b` takes it as an orphan.
        let t = t0() + TimeDelta::seconds(30);
        let b = store.claim_deliveries(t, 10, "b", CLAIM).await.unwrap();
        assert_eq!(ids(&b), vec![id], "{db:?}");
        assert_eq!(b[0].orphaned, 1);
        assert_eq!(b[0].orphaned_from.as_deref(), Some("a"));
        assert_eq!(b[0].claimed_by.as_deref(), Some("b"));
        assert_eq!(b[0].status, DeliveryStatus::Pending);

        // `b` stops mid-send too: not sent a third time.
        let t = t + TimeDelta::seconds(30);
        assert!(
            store
                .claim_deliveries(t, 10, "c", CLAIM)
                .await
                .unwrap()
                .is_empty()
        );
        let given_up = row(&store, id).await;
        assert_eq!(given_up.status, DeliveryStatus::Failed, "{db:?}");
        assert_eq!(
            given_up.last_error.as_deref(),
            Some(GIVEN_UP_AFTER_ORPHANED)
        );
        assert_eq!(
            (
                given_up.claimed_by,
                given_up.claimed_until,
                given_up.orphaned
            ),
            (None, None, 2)
        );
        assert_eq!((given_up.attempts, given_up.next_attempt_at), (0, None));
        assert!(
            store
                .claim_deliveries(t + TimeDelta::hours(1), 10, "c", CLAIM)
                .await
                .unwrap()
                .is_empty()
        );
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn attempts_and_releases_end_claims() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let ids_ = store
            .record_deliveries(
                vec![pending("hook", "one"), pending("hook", "two")],
                None,
                t0(),
            )
            .await
            .unwrap();
        let (one, two) = (ids_[0], ids_[1]);
        assert_eq!(
            ids(&store.claim_deliveries(t0(), 10, "a", CLAIM).await.unwrap()),
            vec![one, two]
        );

        // A recorded attempt ends the claim: the retry is due for anyone, not an orphan.
        let retry_at = t0() + TimeDelta::seconds(10);
        store
            .delivery_attempted(one, t0(), Attempt::Retry("503".into(), retry_at))
            .await
            .unwrap();
        let r = row(&store, one).await;
        assert_eq!((r.claimed_by, r.claimed_until), (None, None), "{db:?}");
        let b = store
            .claim_deliveries(retry_at, 10, "b", CLAIM)
            .await
            .unwrap();
        assert_eq!(ids(&b), vec![one], "{db:?}: `two` still held by `a`");
        assert_eq!((b[0].orphaned, b[0].orphaned_from.clone()), (0, None));

        // A clean shutdown releases its claims: due again at once, not orphans.
        assert_eq!(store.release_claims("a").await.unwrap(), 1, "{db:?}");
        let b = store
            .claim_deliveries(retry_at + TimeDelta::seconds(1), 10, "b", CLAIM)
            .await
            .unwrap();
        assert_eq!(ids(&b), vec![two]);
        assert_eq!((b[0].orphaned, b[0].orphaned_from.clone()), (0, None));
        assert_eq!(store.release_claims("b").await.unwrap(), 2);
        assert_eq!(store.release_claims("b").await.unwrap(), 0);

        // The claimant's own expired claim is renewed, not orphaned.
        let t = t0() + TimeDelta::minutes(5);
        store.claim_deliveries(t, 10, "c", CLAIM).await.unwrap();
        let again = store
            .claim_deliveries(t + TimeDelta::minutes(1), 10, "c", CLAIM)
            .await
            .unwrap();
        assert_eq!(ids(&again), vec![two, one], "{db:?}: by due time");
        assert!(
            again
                .iter()
                .all(|d| d.orphaned == 0 && d.orphaned_from.is_none())
        );

        // An orphan whose re-send got an outcome (a retry) starts counting afresh.
        let t = t + TimeDelta::minutes(2);
        let orphans = store.claim_deliveries(t, 10, "d", CLAIM).await.unwrap();
        assert!(
            orphans.iter().all(|d| d.orphaned == 1),
            "{db:?}: {orphans:#?}"
        );
        store
            .delivery_attempted(one, t, Attempt::Retry("timeout".into(), t))
            .await
            .unwrap();
        assert_eq!(row(&store, one).await.orphaned, 0);
        let t = t + TimeDelta::minutes(1);
        let e = store.claim_deliveries(t, 10, "e", CLAIM).await.unwrap();
        assert_eq!(
            ids(&e),
            vec![one],
            "{db:?}: `two` given up, `one` due afresh"
        );
        assert_eq!((e[0].orphaned, e[0].orphaned_from.clone()), (0, None));
        assert_eq!(row(&store, two).await.status, DeliveryStatus::Failed);
        let t = t + TimeDelta::minutes(1);
        let f = store.claim_deliveries(t, 10, "f", CLAIM).await.unwrap();
        assert_eq!(
            ids(&f),
            vec![one],
            "{db:?}: an orphan once more, not given up"
        );
        assert_eq!(f[0].orphaned, 1);
        assert_eq!(f[0].orphaned_from.as_deref(), Some("e"));

        // Deduped: recorded with its note, the claim ended, nothing left to send.
        store
            .delivery_attempted(
                one,
                t,
                Attempt::Deduped("sent at 12:00 (delivery 9)".into()),
            )
            .await
            .unwrap();
        let d = row(&store, one).await;
        assert_eq!(d.status, DeliveryStatus::Deduped, "{db:?}");
        assert_eq!(d.last_error.as_deref(), Some("sent at 12:00 (delivery 9)"));
        assert_eq!(d.detail.as_deref(), Some("sent at 12:00 (delivery 9)"));
        assert_eq!((d.claimed_by, d.next_attempt_at), (None, None));
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn the_last_send_of_a_dedupe_key() {
    for db in backends() {
        let db = Db::new(db).await;
        let store = db.open().await;
        let ids_ = store
            .record_deliveries(
                vec![
                    pending("hook", "k"),
                    pending("hook", "k"),
                    pending("other", "k"),
                    pending("hook", "x"),
                ],
                None,
                t0(),
            )
            .await
            .unwrap();
        for (i, id) in ids_.iter().enumerate() {
            let at = t0() + TimeDelta::minutes(i as i64);
            store
                .delivery_attempted(*id, at, Attempt::Sent("200".into()))
                .await
                .unwrap();
        }
        let hook = ObjKey::new("prod", "hook");
        let found = store.last_sent(&hook, "k", t0(), 0).await.unwrap().unwrap();
        assert_eq!(
            found.id, ids_[1],
            "{db:?}: the latest of this provider and key"
        );
        let found = store
            .last_sent(&hook, "k", t0(), ids_[1])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, ids_[0], "{db:?}: the excepted row left out");
        let since = t0() + TimeDelta::minutes(2);
        assert_eq!(store.last_sent(&hook, "k", since, 0).await.unwrap(), None);
        store.close().await.unwrap();
    }
}
