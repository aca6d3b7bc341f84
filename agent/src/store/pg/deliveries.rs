//! The notification outbox and the alert gate's memory on PostgreSQL, as
//! `store/deliveries.rs`: the rows of one event and the gate state that admitted them
//! in one transaction.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::super::convert::{Fail, ms};
use super::super::deliveries::{
    Attempt, COLUMNS, Delivery, DeliveryStatus, GIVEN_UP_AFTER_ORPHANED, NewDelivery, ORPHAN_LIMIT,
    RawDelivery,
};
use super::{Pg, pg_text};
use crate::catalog::ObjKey;

fn raw(r: &Row) -> Result<RawDelivery, Fail> {
    Ok(RawDelivery {
        id: r.try_get(0)?,
        incident_id: r.try_get(1)?,
        names: [
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
            r.try_get(5)?,
            r.try_get(6)?,
            r.try_get(7)?,
        ],
        provider_type: r.try_get(8)?,
        event_kind: r.try_get(9)?,
        dedupe_key: r.try_get(10)?,
        status: r.try_get(11)?,
        attempts: r.try_get(12)?,
        next_attempt_at: r.try_get(13)?,
        last_attempt_at: r.try_get(14)?,
        last_error: r.try_get(15)?,
        detail: r.try_get(16)?,
        payload: r.try_get(17)?,
        created_at: r.try_get(18)?,
        claimed_by: r.try_get(19)?,
        claimed_until: r.try_get(20)?,
        orphaned: r.try_get(21)?,
    })
}

async fn query(pg: &Pg, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Delivery>, Fail> {
    let c = pg.client().await?;
    let rows = c.query(sql, args).await?;
    rows.iter().map(|r| raw(r)?.parse()).collect()
}

pub(crate) async fn record(
    pg: &Pg,
    deliveries: &[NewDelivery],
    gate_state: Option<&str>,
    now: i64,
    wall: i64,
) -> Result<Vec<i64>, Fail> {
    let mut c = pg.client().await?;
    let tx = c.transaction().await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO notification_deliveries
               (incident_id, monitor_namespace, monitor_name, policy_namespace, policy_name,
                provider_namespace, provider_name, provider_type, event_kind, dedupe_key,
                status, next_attempt_at, last_error, detail, payload, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16)
             RETURNING id",
        )
        .await?;
    let mut ids = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let pending = d.status == DeliveryStatus::Pending;
        // Due at once (by the wall clock, whatever time the event has).
        let due = pending.then(|| wall.min(now));
        let id: i64 = tx
            .query_one(
                &insert,
                &[
                    &d.incident_id,
                    &d.monitor.namespace,
                    &d.monitor.name,
                    &d.policy.namespace,
                    &d.policy.name,
                    &d.provider.namespace,
                    &d.provider.name,
                    &d.provider_type,
                    &d.event_kind,
                    &pg_text(&d.dedupe_key),
                    &d.status.as_str(),
                    &due,
                    &d.error.as_deref().map(pg_text),
                    &d.detail.as_deref().map(pg_text),
                    &d.payload.to_string(),
                    &now,
                ],
            )
            .await?
            .try_get(0)?;
        ids.push(id);
    }
    if let Some(state) = gate_state {
        tx.execute(
            "INSERT INTO alert_gate_state (id, state, updated_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            &[&pg_text(state), &now],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(ids)
}

pub(crate) async fn gate_state(pg: &Pg) -> Result<Option<String>, Fail> {
    let c = pg.client().await?;
    Ok(
        c.query_opt("SELECT state FROM alert_gate_state WHERE id = 1", &[])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?,
    )
}

pub(crate) async fn due(pg: &Pg, now: i64, limit: i64) -> Result<Vec<Delivery>, Fail> {
    query(
        pg,
        &format!(
            "SELECT {COLUMNS} FROM notification_deliveries
             WHERE status = 'pending' AND next_attempt_at <= $1
             ORDER BY next_attempt_at, id LIMIT $2"
        ),
        &[&now, &limit],
    )
    .await
}

/// `Store::claim_deliveries` in one statement: the rows are picked and locked with
/// `FOR UPDATE SKIP LOCKED` (a concurrent claim skips them, and a row claimed meanwhile
/// fails the re-check of the condition), then claimed or given up; the previous
/// claimant comes back beside each row.
pub(crate) async fn claim(
    pg: &Pg,
    now: i64,
    limit: i64,
    claimant: &str,
    until: i64,
) -> Result<Vec<Delivery>, Fail> {
    let c = pg.client().await?;
    // This claimant's own expired claim is renewed, not orphaned (as on SQLite).
    let expired = "(CASE WHEN previous IS NULL OR previous = $3::text THEN 0 ELSE 1 END)";
    let gone = format!("orphaned + {expired} >= $5::bigint");
    let sql = format!(
        "WITH picked AS (
           SELECT id AS pick_id, claimed_by AS previous FROM notification_deliveries
           WHERE status = 'pending' AND next_attempt_at <= $1
             AND (claimed_until IS NULL OR claimed_until <= $1)
           ORDER BY next_attempt_at, id LIMIT $2
           FOR UPDATE SKIP LOCKED)
         UPDATE notification_deliveries SET
           orphaned = orphaned + {expired},
           status = CASE WHEN {gone} THEN 'failed' ELSE status END,
           next_attempt_at = CASE WHEN {gone} THEN NULL ELSE next_attempt_at END,
           last_error = CASE WHEN {gone} THEN $6::text ELSE last_error END,
           claimed_by = CASE WHEN {gone} THEN NULL ELSE $3::text END,
           claimed_until = CASE WHEN {gone} THEN NULL ELSE $4::bigint END,
           updated_at = $1
         FROM picked WHERE id = pick_id
         RETURNING {COLUMNS}, CASE WHEN previous = $3::text THEN NULL ELSE previous END"
    );
    let rows = c
        .query(
            &sql,
            &[
                &now,
                &limit,
                &pg_text(claimant),
                &until,
                &ORPHAN_LIMIT,
                &GIVEN_UP_AFTER_ORPHANED,
            ],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut d = raw(r)?.parse()?;
        d.orphaned_from = r.try_get(22)?;
        out.push(d);
    }
    // RETURNING follows no order.
    out.sort_by_key(|d| (d.next_attempt_at, d.id));
    Ok(out)
}

pub(crate) async fn release(pg: &Pg, claimant: &str) -> Result<u64, Fail> {
    let c = pg.client().await?;
    Ok(c.execute(
        "UPDATE notification_deliveries SET claimed_by = NULL, claimed_until = NULL
         WHERE claimed_by = $1 AND status = 'pending'",
        &[&pg_text(claimant)],
    )
    .await?)
}

pub(crate) async fn release_one(pg: &Pg, id: i64, claimant: &str) -> Result<bool, Fail> {
    let c = pg.client().await?;
    let n = c
        .execute(
            "UPDATE notification_deliveries SET claimed_by = NULL, claimed_until = NULL
             WHERE id = $1 AND claimed_by = $2 AND status = 'pending'",
            &[&id, &pg_text(claimant)],
        )
        .await?;
    Ok(n > 0)
}

pub(crate) async fn last_sent(
    pg: &Pg,
    provider: &ObjKey,
    dedupe_key: &str,
    since: i64,
    except: i64,
) -> Result<Option<Delivery>, Fail> {
    Ok(query(
        pg,
        &format!(
            "SELECT {COLUMNS} FROM notification_deliveries
             WHERE provider_namespace = $1 AND provider_name = $2 AND dedupe_key = $3
               AND status = 'sent' AND last_attempt_at >= $4 AND id <> $5
             ORDER BY last_attempt_at DESC, id DESC LIMIT 1"
        ),
        &[
            &provider.namespace,
            &provider.name,
            &pg_text(dedupe_key),
            &since,
            &except,
        ],
    )
    .await?
    .pop())
}

pub(crate) async fn attempted(pg: &Pg, id: i64, now: i64, attempt: &Attempt) -> Result<(), Fail> {
    let c = pg.client().await?;
    match attempt {
        Attempt::Sent(detail) => {
            c.execute(
                "UPDATE notification_deliveries SET status = 'sent', attempts = attempts + 1,
                   next_attempt_at = NULL, last_attempt_at = $2, last_error = NULL,
                   detail = COALESCE(detail || '; ', '') || $3, updated_at = $2,
                   claimed_by = NULL, claimed_until = NULL, orphaned = 0
                 WHERE id = $1",
                &[&id, &now, &pg_text(detail)],
            )
            .await?
        }
        Attempt::Retry(error, next) => {
            c.execute(
                "UPDATE notification_deliveries SET attempts = attempts + 1,
                   next_attempt_at = $3, last_attempt_at = $2, last_error = $4, updated_at = $2,
                   claimed_by = NULL, claimed_until = NULL, orphaned = 0
                 WHERE id = $1",
                &[&id, &now, &ms(*next), &pg_text(error)],
            )
            .await?
        }
        Attempt::Failed(error) => {
            c.execute(
                "UPDATE notification_deliveries SET status = 'failed', attempts = attempts + 1,
                   next_attempt_at = NULL, last_attempt_at = $2, last_error = $3, updated_at = $2,
                   claimed_by = NULL, claimed_until = NULL, orphaned = 0
                 WHERE id = $1",
                &[&id, &now, &pg_text(error)],
            )
            .await?
        }
        Attempt::Deduped(note) => {
            c.execute(
                "UPDATE notification_deliveries SET status = 'deduped', next_attempt_at = NULL,
                   last_error = $3, detail = COALESCE(detail || '; ', '') || $3, updated_at = $2,
                   claimed_by = NULL, claimed_until = NULL
                 WHERE id = $1",
                &[&id, &now, &pg_text(note)],
            )
            .await?
        }
    };
    Ok(())
}

pub(crate) async fn since(pg: &Pg, since: i64) -> Result<Vec<Delivery>, Fail> {
    query(
        pg,
        &format!(
            "SELECT {COLUMNS} FROM notification_deliveries WHERE created_at >= $1
             ORDER BY created_at, id"
        ),
        &[&since],
    )
    .await
}

pub(crate) async fn last(pg: &Pg) -> Result<Vec<Delivery>, Fail> {
    query(
        pg,
        &format!(
            "SELECT {COLUMNS} FROM notification_deliveries d
             WHERE status IN ('sent', 'failed') AND id = (
               SELECT id FROM notification_deliveries e
               WHERE e.provider_namespace = d.provider_namespace
                 AND e.provider_name = d.provider_name
                 AND e.status IN ('sent', 'failed')
               ORDER BY e.last_attempt_at DESC NULLS LAST, e.id DESC LIMIT 1)
             ORDER BY provider_namespace, provider_name"
        ),
        &[],
    )
    .await
}

pub(crate) async fn recent(
    pg: &Pg,
    namespace: Option<String>,
    name: Option<String>,
    limit: i64,
) -> Result<Vec<Delivery>, Fail> {
    query(
        pg,
        &format!(
            "SELECT {COLUMNS} FROM notification_deliveries
             WHERE $1::text IS NULL OR (provider_namespace = $1 AND provider_name = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ),
        &[&namespace, &name, &limit],
    )
    .await
}
