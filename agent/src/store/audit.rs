//! `audit_events`: who changed what through the admin API (logins, incident
//! acknowledgements, updates and resolutions, silences). Details are JSON without secrets.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::convert::{json, ms, time};
use super::{Store, StoreError};

/// Whether an audit event records something that was done (`ok`) or refused (`failed`):
/// refused events are the `…_failed` ones (`login_failed`, `test_failed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditResult {
    /// Done.
    Ok,
    /// Refused or failed.
    Failed,
}

impl AuditResult {
    /// The result of an event type.
    pub fn of(event_type: &str) -> AuditResult {
        if event_type.ends_with("_failed") {
            AuditResult::Failed
        } else {
            AuditResult::Ok
        }
    }

    /// `ok` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Ok => "ok",
            AuditResult::Failed => "failed",
        }
    }
}

/// Which audit events [`Store::find_audit`] returns; every given criterion must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Exactly this actor (`user:<id>`, `apikey:<id>`).
    pub actor: Option<String>,
    /// Exactly this event type (`acknowledged`, `login`, …).
    pub action: Option<String>,
    /// Only done or only refused events (see [`AuditResult`]).
    pub result: Option<AuditResult>,
}

/// The `LIKE` pattern of refused event types (`_` escaped with `\`).
pub(crate) const FAILED_PATTERN: &str = "%\\_failed";

/// One audit record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// Row ID (ignored when recording).
    pub id: i64,
    /// `incident`, `silence`, `session`, …
    pub resource_type: String,
    /// The resource's key (`42`, `namespace/name`, a user ID).
    pub resource_key: String,
    /// `acknowledged`, `updated`, `resolved`, `created`, `expired`, `login`, …
    pub event_type: String,
    /// `user:<id>`, `apikey:<id>`, or `None` for anonymous (failed logins).
    pub actor: Option<String>,
    /// What happened, as JSON (never a secret).
    pub details: Option<serde_json::Value>,
    /// A one-line summary of the change.
    pub changes_summary: Option<String>,
    /// When.
    pub timestamp: DateTime<Utc>,
}

impl Store {
    /// Record an audit event; returns its ID.
    pub async fn record_audit(&self, event: AuditEvent) -> Result<i64, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.write(super::pg::audit::record(pg, &event)).await;
        }
        self.write(move |c| {
            c.execute(
                "INSERT INTO audit_events
                   (resource_type, resource_key, event_type, actor, details, changes_summary, timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    event.resource_type,
                    event.resource_key,
                    event.event_type,
                    event.actor,
                    event.details.map(|d| d.to_string()),
                    event.changes_summary,
                    ms(event.timestamp),
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// The newest `limit` audit events (of `resource_type` when given), newest first.
    pub async fn audit_events(
        &self,
        resource_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let kind = resource_type.map(str::to_string);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(super::pg::audit::newest(pg, kind.as_deref(), limit))
                .await;
        }
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, resource_type, resource_key, event_type, actor, details,
                        changes_summary, timestamp
                 FROM audit_events WHERE ?1 IS NULL OR resource_type = ?1
                 ORDER BY timestamp DESC, id DESC LIMIT ?2",
            )?;
            let raw: Vec<Raw> = st
                .query_map(params![kind, limit], raw_row)?
                .collect::<rusqlite::Result<_>>()?;
            raw.into_iter().map(parse_raw).collect()
        })
        .await
    }

    /// One page of the audit events matching `filter`, newest first: at most `limit`
    /// after skipping `offset`, and whether more follow.
    pub async fn find_audit(
        &self,
        filter: AuditFilter,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<AuditEvent>, bool), StoreError> {
        // One more than asked tells whether another page follows.
        let take = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let skip = i64::try_from(offset).unwrap_or(i64::MAX);
        let result = filter.result.map(|r| i64::from(r == AuditResult::Failed));
        let mut found = if let Some(pg) = self.pg_open()? {
            pg.read(super::pg::audit::find(pg, filter, result, take, skip))
                .await?
        } else {
            self.read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, resource_type, resource_key, event_type, actor, details,
                            changes_summary, timestamp
                     FROM audit_events
                     WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR event_type = ?2)
                       AND (?3 IS NULL OR (event_type LIKE ?4 ESCAPE '\\') = (?3 = 1))
                     ORDER BY timestamp DESC, id DESC LIMIT ?5 OFFSET ?6",
                )?;
                let raw: Vec<Raw> = st
                    .query_map(
                        params![
                            filter.actor,
                            filter.action,
                            result,
                            FAILED_PATTERN,
                            take,
                            skip
                        ],
                        raw_row,
                    )?
                    .collect::<rusqlite::Result<_>>()?;
                raw.into_iter().map(parse_raw).collect()
            })
            .await?
        };
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more))
    }
}

type Raw = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn parse_raw(
    (id, rt, rk, et, actor, details, summary, t): Raw,
) -> Result<AuditEvent, super::convert::Fail> {
    Ok(AuditEvent {
        id,
        resource_type: rt,
        resource_key: rk,
        event_type: et,
        actor,
        details: json("audit_events.details", details)?,
        changes_summary: summary,
        timestamp: time("audit_events.timestamp", t)?,
    })
}
