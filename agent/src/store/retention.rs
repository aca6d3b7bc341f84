//! Retention steps, each one short transaction on the writer thread so queued heartbeats
//! are committed between them: expire old rows, and downsample old raw heartbeats into
//! hourly rollups (merged into any row already stored for the same hour).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::convert::Fail;
use super::rollups::{self, Acc, Buckets, DAY_MS, HOUR_MS, RESOLUTION_HOUR};

/// Most raw heartbeats deleted per transaction when expiring.
pub(crate) const DELETE_BATCH: i64 = 10_000;

/// Delete up to [`DELETE_BATCH`] raw heartbeats of one monitor older than `cutoff`.
pub(crate) fn expire_heartbeats(
    conn: &mut Connection,
    ns: &str,
    name: &str,
    cutoff: i64,
) -> Result<u64, Fail> {
    // The inner SELECT walks the primary key; the DELETE then hits the same keys.
    let n = conn.execute(
        "DELETE FROM heartbeats
         WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND checked_at IN (
           SELECT checked_at FROM heartbeats
           WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND checked_at < ?3
           ORDER BY checked_at LIMIT ?4)",
        params![ns, name, cutoff, DELETE_BATCH],
    )?;
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

/// Delete hourly rollups of one monitor whose bucket starts before `cutoff`.
pub(crate) fn expire_rollups(
    conn: &mut Connection,
    ns: &str,
    name: &str,
    cutoff: i64,
) -> Result<u64, Fail> {
    let n = conn.execute(
        "DELETE FROM heartbeat_rollups
         WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND resolution = ?3 AND bucket_start < ?4",
        params![ns, name, RESOLUTION_HOUR, cutoff],
    )?;
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

/// Delete closed incidents that ended before `cutoff` (their updates and deliveries go
/// with them; a monitor state pointing at one loses the pointer).
pub(crate) fn expire_incidents(conn: &mut Connection, cutoff: i64) -> Result<u64, Fail> {
    let n = conn.execute(
        "DELETE FROM incidents WHERE ended_at IS NOT NULL AND ended_at < ?1",
        [cutoff],
    )?;
    Ok(u64::try_from(n).unwrap_or(u64::MAX))
}

/// Downsample the oldest day (at most) of one monitor's raw heartbeats older than
/// `cutoff` (an hour boundary) into hourly rows, in one transaction. Returns how many
/// raw heartbeats it replaced; 0 means nothing is left to downsample.
pub(crate) fn downsample_batch(
    conn: &mut Connection,
    ns: &str,
    name: &str,
    cutoff: i64,
) -> Result<u64, Fail> {
    let tx = conn.transaction()?;
    let oldest: Option<i64> = tx
        .query_row(
            "SELECT MIN(checked_at) FROM heartbeats
             WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND checked_at < ?3",
            params![ns, name, cutoff],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let Some(oldest) = oldest else {
        return Ok(0);
    };
    let from = oldest.div_euclid(HOUR_MS) * HOUR_MS;
    let to = from.saturating_add(DAY_MS).min(cutoff);
    let mut hours: BTreeMap<i64, Acc> = BTreeMap::new();
    let n = rollups::raw_into(&tx, ns, name, from, to, Buckets::Every(HOUR_MS), &mut hours)?;
    let stored = rollups::stored_rows(&tx, ns, name, from, to)?;
    for (start, row) in stored {
        if let Some(acc) = hours.get_mut(&start) {
            acc.add_row(&row);
        }
    }
    for (start, acc) in hours {
        rollups::put_row(&tx, ns, name, start, &acc.into_row())?;
    }
    tx.execute(
        "DELETE FROM heartbeats
         WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND checked_at >= ?3 AND checked_at < ?4",
        params![ns, name, from, to],
    )?;
    tx.commit()?;
    Ok(n)
}
