//! Incidents and their public updates on PostgreSQL, as `store/incidents.rs` and
//! `store/incident_query.rs`: open, close, suppress, acknowledge, update; by time
//! range, open ones, one by ID, filtered.

use std::collections::BTreeMap;

use kubekuma_crds::results::{FailureReason, Incident, IncidentUpdate};
use tokio_postgres::types::ToSql;

use super::super::convert::{Fail, parse_opt_enum, time};
use super::super::incident_query::IncidentFilter;
use super::{Pg, pg_text};
use crate::store::convert::ms;

/// Insert an open incident; returns its ID.
pub(crate) async fn open(
    pg: &Pg,
    ns: &str,
    name: &str,
    started_at: i64,
    reason: Option<FailureReason>,
    now: i64,
) -> Result<i64, Fail> {
    let c = pg.client().await?;
    let st = c
        .prepare_cached(
            "INSERT INTO incidents
               (monitor_namespace, monitor_name, state, started_at, reason, created_at, updated_at)
             VALUES ($1, $2, 'down', $3, $4, $5, $5) RETURNING id",
        )
        .await?;
    Ok(c.query_one(
        &st,
        &[
            &ns,
            &name,
            &started_at,
            &reason.map(FailureReason::as_str),
            &now,
        ],
    )
    .await?
    .try_get(0)?)
}

async fn exists(c: &tokio_postgres::Client, id: i64) -> Result<(), Fail> {
    c.query_opt("SELECT 1 FROM incidents WHERE id = $1", &[&id])
        .await?
        .map(|_| ())
        .ok_or(Fail::IncidentNotFound(id))
}

/// Close an open incident (duration in whole seconds); closing a closed one changes
/// nothing.
pub(crate) async fn close(pg: &Pg, id: i64, ended_at: i64, now: i64) -> Result<(), Fail> {
    let c = pg.client().await?;
    let n = c
        .execute(
            "UPDATE incidents
             SET state = 'up', ended_at = $2, duration = GREATEST(0, ($2 - started_at) / 1000),
                 updated_at = $3
             WHERE id = $1 AND ended_at IS NULL",
            &[&id, &ended_at, &now],
        )
        .await?;
    if n == 0 {
        exists(&c, id).await?;
    }
    Ok(())
}

pub(crate) async fn set_suppressed(pg: &Pg, id: i64, reason: &str, now: i64) -> Result<(), Fail> {
    let c = pg.client().await?;
    let n = c
        .execute(
            "UPDATE incidents SET suppressed = TRUE, suppress_reason = $2, updated_at = $3
             WHERE id = $1",
            &[&id, &pg_text(reason), &now],
        )
        .await?;
    if n == 0 {
        return Err(Fail::IncidentNotFound(id));
    }
    Ok(())
}

pub(crate) async fn acknowledge(pg: &Pg, id: i64, by: &str, at: i64, now: i64) -> Result<(), Fail> {
    let c = pg.client().await?;
    let n = c
        .execute(
            "UPDATE incidents
             SET acknowledged = TRUE, acknowledged_by = $2, acknowledged_at = $3, updated_at = $4
             WHERE id = $1",
            &[&id, &pg_text(by), &at, &now],
        )
        .await?;
    if n == 0 {
        return Err(Fail::IncidentNotFound(id));
    }
    Ok(())
}

pub(crate) async fn add_update(
    pg: &Pg,
    id: i64,
    at: i64,
    message: &str,
    now: i64,
) -> Result<(), Fail> {
    let mut c = pg.client().await?;
    let tx = c.transaction().await?;
    let n = tx
        .execute(
            "UPDATE incidents SET updated_at = $2 WHERE id = $1",
            &[&id, &now],
        )
        .await?;
    if n == 0 {
        return Err(Fail::IncidentNotFound(id));
    }
    tx.execute(
        "INSERT INTO incident_updates (incident_id, at, message) VALUES ($1, $2, $3)",
        &[&id, &at, &pg_text(message)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Incidents that started in `[from, to)` or before `to` and are still open.
pub(crate) async fn between(pg: &Pg, from: i64, to: i64) -> Result<Vec<Incident>, Fail> {
    load(
        pg,
        "(started_at >= $1 AND started_at < $2) OR (ended_at IS NULL AND started_at < $2)",
        &[&from, &to],
    )
    .await
}

/// Open incidents.
pub(crate) async fn open_list(pg: &Pg) -> Result<Vec<Incident>, Fail> {
    load(pg, "ended_at IS NULL", &[]).await
}

/// One incident.
pub(crate) async fn by_id(pg: &Pg, id: i64) -> Result<Option<Incident>, Fail> {
    Ok(load(pg, "id = $1", &[&id]).await?.into_iter().next())
}

/// Incidents matching a filter.
pub(crate) async fn find(pg: &Pg, filter: &IncidentFilter) -> Result<Vec<Incident>, Fail> {
    let (ns, name) = filter.monitor.clone().unzip();
    let since = filter.since.map(ms);
    let until = filter.until.map(ms);
    load(
        pg,
        "($1::text IS NULL OR (monitor_namespace = $1 AND monitor_name = $2))
         AND ($3::boolean IS NULL OR ($3 AND ended_at IS NULL) OR (NOT $3 AND ended_at IS NOT NULL))
         AND ($4::bigint IS NULL OR started_at >= $4)
         AND ($5::bigint IS NULL OR started_at < $5)",
        &[&ns, &name, &filter.open, &since, &until],
    )
    .await
}

/// Incidents matching `filter` (SQL over `incidents`), oldest first, with their
/// updates, read in one snapshot.
async fn load(pg: &Pg, filter: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Incident>, Fail> {
    let mut c = pg.client().await?;
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let rows = tx
        .query(
            &format!(
                "SELECT id, monitor_namespace, monitor_name, started_at, ended_at, duration,
                        reason, suppressed, suppress_reason, acknowledged
                 FROM incidents WHERE {filter} ORDER BY started_at, id"
            ),
            args,
        )
        .await?;
    let mut updates: BTreeMap<i64, Vec<IncidentUpdate>> = BTreeMap::new();
    for r in tx
        .query(
            &format!(
                "SELECT incident_id, at, message FROM incident_updates
                 WHERE incident_id IN (SELECT id FROM incidents WHERE {filter})
                 ORDER BY incident_id, at, id"
            ),
            args,
        )
        .await?
    {
        updates
            .entry(r.try_get(0)?)
            .or_default()
            .push(IncidentUpdate {
                at: time("incident_updates.at", r.try_get(1)?)?,
                message: r.try_get(2)?,
            });
    }
    tx.commit().await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.try_get(0)?;
        let ended: Option<i64> = r.try_get(4)?;
        out.push(Incident {
            id,
            namespace: r.try_get(1)?,
            name: r.try_get(2)?,
            started_at: time("incidents.started_at", r.try_get(3)?)?,
            ended_at: ended.map(|t| time("incidents.ended_at", t)).transpose()?,
            duration_seconds: r.try_get(5)?,
            reason: parse_opt_enum("incidents.reason", r.try_get(6)?)?,
            suppressed: r.try_get(7)?,
            suppress_reason: r.try_get(8)?,
            acknowledged: r.try_get(9)?,
            updates: updates.remove(&id).unwrap_or_default(),
        });
    }
    Ok(out)
}
