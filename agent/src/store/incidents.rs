//! Incidents and their public updates: SQL for the writer (open, close, suppress,
//! acknowledge, update) and for readers (by time range, open ones).

use std::collections::BTreeMap;

use kubekuma_crds::results::{FailureReason, Incident, IncidentUpdate};
use rusqlite::{Connection, OptionalExtension, params};

use super::convert::{Fail, parse_opt_enum, time};

/// Insert an open incident; returns its ID.
pub(crate) fn open(
    conn: &Connection,
    ns: &str,
    name: &str,
    started_at: i64,
    reason: Option<FailureReason>,
    now: i64,
) -> Result<i64, Fail> {
    conn.execute(
        "INSERT INTO incidents
           (monitor_namespace, monitor_name, state, started_at, reason, created_at, updated_at)
         VALUES (?1, ?2, 'down', ?3, ?4, ?5, ?5)",
        params![ns, name, started_at, reason.map(FailureReason::as_str), now],
    )?;
    Ok(conn.last_insert_rowid())
}

fn exists(conn: &Connection, id: i64) -> Result<(), Fail> {
    conn.query_row("SELECT 1 FROM incidents WHERE id = ?1", [id], |_| Ok(()))
        .optional()?
        .ok_or(Fail::IncidentNotFound(id))
}

/// Close an open incident at `ended_at` (duration in whole seconds). Closing a closed
/// incident changes nothing.
pub(crate) fn close(conn: &Connection, id: i64, ended_at: i64, now: i64) -> Result<(), Fail> {
    let n = conn.execute(
        "UPDATE incidents
         SET state = 'up', ended_at = ?2, duration = MAX(0, (?2 - started_at) / 1000), updated_at = ?3
         WHERE id = ?1 AND ended_at IS NULL",
        params![id, ended_at, now],
    )?;
    if n == 0 {
        exists(conn, id)?;
    }
    Ok(())
}

/// Mark an incident's notifications as suppressed, with why.
pub(crate) fn set_suppressed(
    conn: &Connection,
    id: i64,
    reason: &str,
    now: i64,
) -> Result<(), Fail> {
    let n = conn.execute(
        "UPDATE incidents SET suppressed = 1, suppress_reason = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, reason, now],
    )?;
    if n == 0 {
        return Err(Fail::IncidentNotFound(id));
    }
    Ok(())
}

/// Record an operator's acknowledgement.
pub(crate) fn acknowledge(
    conn: &Connection,
    id: i64,
    by: &str,
    at: i64,
    now: i64,
) -> Result<(), Fail> {
    let n = conn.execute(
        "UPDATE incidents
         SET acknowledged = 1, acknowledged_by = ?2, acknowledged_at = ?3, updated_at = ?4
         WHERE id = ?1",
        params![id, by, at, now],
    )?;
    if n == 0 {
        return Err(Fail::IncidentNotFound(id));
    }
    Ok(())
}

/// Add a public update.
pub(crate) fn add_update(
    conn: &mut Connection,
    id: i64,
    at: i64,
    message: &str,
    now: i64,
) -> Result<(), Fail> {
    let tx = conn.transaction()?;
    let n = tx.execute(
        "UPDATE incidents SET updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    if n == 0 {
        return Err(Fail::IncidentNotFound(id));
    }
    tx.execute(
        "INSERT INTO incident_updates (incident_id, at, message) VALUES (?1, ?2, ?3)",
        params![id, at, message],
    )?;
    tx.commit()?;
    Ok(())
}

/// Incidents that started in `[from, to)` or started before `to` and are still open,
/// oldest first, with their updates.
pub(crate) fn between(conn: &Connection, from: i64, to: i64) -> Result<Vec<Incident>, Fail> {
    load(
        conn,
        "(started_at >= ?1 AND started_at < ?2) OR (ended_at IS NULL AND started_at < ?2)",
        &[&from, &to],
    )
}

/// Open incidents, oldest first, with their updates.
pub(crate) fn open_list(conn: &Connection) -> Result<Vec<Incident>, Fail> {
    load(conn, "ended_at IS NULL", &[])
}

type RawIncident = (
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    bool,
    Option<String>,
    bool,
);

pub(super) fn load(
    conn: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Incident>, Fail> {
    // One snapshot for the incidents and their updates.
    let tx = conn.unchecked_transaction()?;
    let mut st = tx.prepare(&format!(
        "SELECT id, monitor_namespace, monitor_name, started_at, ended_at, duration, reason,
                suppressed, suppress_reason, acknowledged
         FROM incidents WHERE {filter} ORDER BY started_at, id"
    ))?;
    let raw: Vec<RawIncident> = st
        .query_map(args, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut updates: BTreeMap<i64, Vec<IncidentUpdate>> = BTreeMap::new();
    {
        let mut st = tx.prepare(&format!(
            "SELECT incident_id, at, message FROM incident_updates
             WHERE incident_id IN (SELECT id FROM incidents WHERE {filter})
             ORDER BY incident_id, at, id"
        ))?;
        let rows = st.query_map(args, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (id, at, message) = row?;
            updates.entry(id).or_default().push(IncidentUpdate {
                at: time("incident_updates.at", at)?,
                message,
            });
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    for (id, namespace, name, started, ended, duration, reason, suppressed, why, acked) in raw {
        out.push(Incident {
            id,
            namespace,
            name,
            started_at: time("incidents.started_at", started)?,
            ended_at: ended.map(|t| time("incidents.ended_at", t)).transpose()?,
            duration_seconds: duration,
            reason: parse_opt_enum("incidents.reason", reason)?,
            suppressed,
            suppress_reason: why,
            acknowledged: acked,
            updates: updates.remove(&id).unwrap_or_default(),
        });
    }
    Ok(out)
}
