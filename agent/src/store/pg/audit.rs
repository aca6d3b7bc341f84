//! `audit_events` on PostgreSQL, as `store/audit.rs`.

use super::super::audit::{AuditEvent, AuditFilter, FAILED_PATTERN};
use super::super::convert::{Fail, json, ms, time};
use super::{Pg, pg_text};

pub(crate) async fn record(pg: &Pg, event: &AuditEvent) -> Result<i64, Fail> {
    let c = pg.client().await?;
    Ok(c.query_one(
        "INSERT INTO audit_events
           (resource_type, resource_key, event_type, actor, details, changes_summary, timestamp)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        &[
            &pg_text(&event.resource_type),
            &pg_text(&event.resource_key),
            &pg_text(&event.event_type),
            &event.actor.as_deref().map(pg_text),
            &event.details.as_ref().map(|d| d.to_string()),
            &event.changes_summary.as_deref().map(pg_text),
            &ms(event.timestamp),
        ],
    )
    .await?
    .try_get(0)?)
}

pub(crate) async fn newest(
    pg: &Pg,
    kind: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEvent>, Fail> {
    let c = pg.client().await?;
    let rows = c
        .query(
            "SELECT id, resource_type, resource_key, event_type, actor, details,
                    changes_summary, timestamp
             FROM audit_events WHERE $1::text IS NULL OR resource_type = $1
             ORDER BY timestamp DESC, id DESC LIMIT $2",
            &[&kind, &limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEvent {
                id: r.try_get(0)?,
                resource_type: r.try_get(1)?,
                resource_key: r.try_get(2)?,
                event_type: r.try_get(3)?,
                actor: r.try_get(4)?,
                details: json("audit_events.details", r.try_get(5)?)?,
                changes_summary: r.try_get(6)?,
                timestamp: time("audit_events.timestamp", r.try_get(7)?)?,
            })
        })
        .collect()
}

pub(crate) async fn find(
    pg: &Pg,
    filter: AuditFilter,
    failed: Option<i64>,
    limit: i64,
    offset: i64,
) -> Result<Vec<AuditEvent>, Fail> {
    let c = pg.client().await?;
    let failed = failed.map(|f| f == 1);
    let rows = c
        .query(
            "SELECT id, resource_type, resource_key, event_type, actor, details,
                    changes_summary, timestamp
             FROM audit_events
             WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR event_type = $2)
               AND ($3::boolean IS NULL OR (event_type LIKE $4 ESCAPE '\\') = $3)
             ORDER BY timestamp DESC, id DESC LIMIT $5 OFFSET $6",
            &[
                &filter.actor.as_deref().map(pg_text),
                &filter.action.as_deref().map(pg_text),
                &failed,
                &FAILED_PATTERN,
                &limit,
                &offset,
            ],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEvent {
                id: r.try_get(0)?,
                resource_type: r.try_get(1)?,
                resource_key: r.try_get(2)?,
                event_type: r.try_get(3)?,
                actor: r.try_get(4)?,
                details: json("audit_events.details", r.try_get(5)?)?,
                changes_summary: r.try_get(6)?,
                timestamp: time("audit_events.timestamp", r.try_get(7)?)?,
            })
        })
        .collect()
}
