//! Retention steps, each one short transaction on the writer thread so queued heartbeats
//! are committed between them: expire old rows, and downsample old raw heartbeats into
//! hourly or daily rollups (merged into any row already stored for the same bucket; daily
//! rows also take in the hourly rows of their day).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::convert::Fail;
use kubekuma_crds::settings::DownsampleResolution;

use super::rollups::{self, Acc, Buckets, DAY_MS, HOUR_MS, RESOLUTION_DAY, RESOLUTION_HOUR};

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

/// Delete rollups (hourly and daily) of one monitor whose bucket starts before `cutoff`.
pub(crate) fn expire_rollups(
    conn: &mut Connection,
    ns: &str,
    name: &str,
    cutoff: i64,
) -> Result<u64, Fail> {
    let n = conn.execute(
        "DELETE FROM heartbeat_rollups
         WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND bucket_start < ?3",
        params![ns, name, cutoff],
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
    let stored = rollups::stored_rows_of(&tx, ns, name, RESOLUTION_HOUR, from, to)?;
    for (start, row) in stored {
        if let Some(acc) = hours.get_mut(&start) {
            acc.add_row(&row);
        }
    }
    for (start, acc) in hours {
        rollups::put_row(&tx, ns, name, RESOLUTION_HOUR, start, &acc.into_row())?;
    }
    tx.execute(
        "DELETE FROM heartbeats
         WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND checked_at >= ?3 AND checked_at < ?4",
        params![ns, name, from, to],
    )?;
    tx.commit()?;
    Ok(n)
}

/// Where downsampling of `resolution` stops: `now - after` rounded down to the hour, or
/// for daily rows to the UTC day (a day becomes one row only once all of it is old).
pub(crate) fn downsample_cutoff(now: i64, after_ms: i64, resolution: DownsampleResolution) -> i64 {
    let size = match resolution {
        DownsampleResolution::Hourly => HOUR_MS,
        DownsampleResolution::Daily => DAY_MS,
    };
    now.saturating_sub(after_ms).div_euclid(size) * size
}

/// Downsample the oldest UTC day of one monitor before `cutoff` (a day boundary) into
/// one daily row, in one transaction: its raw heartbeats, its hourly rows and any daily
/// row already stored for it become that day's row; the raw heartbeats and hourly rows
/// are deleted. Returns how many raw heartbeats and how many hourly rows it replaced;
/// both 0 means nothing is left to downsample.
pub(crate) fn downsample_day_batch(
    conn: &mut Connection,
    ns: &str,
    name: &str,
    cutoff: i64,
) -> Result<(u64, u64), Fail> {
    let tx = conn.transaction()?;
    let oldest: Option<i64> = tx
        .query_row(
            "SELECT MIN(t) FROM (
               SELECT MIN(checked_at) AS t FROM heartbeats
               WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND checked_at < ?3
               UNION ALL
               SELECT MIN(bucket_start) AS t FROM heartbeat_rollups
               WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND resolution = ?4
                 AND bucket_start < ?3)",
            params![ns, name, cutoff, RESOLUTION_HOUR],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let Some(oldest) = oldest else {
        return Ok((0, 0));
    };
    let from = oldest.div_euclid(DAY_MS) * DAY_MS;
    let to = from.saturating_add(DAY_MS).min(cutoff);
    let mut day: BTreeMap<i64, Acc> = BTreeMap::new();
    let raw = rollups::raw_into(&tx, ns, name, from, to, Buckets::Whole, &mut day)?;
    let acc = day.entry(from).or_default();
    let hours = rollups::stored_rows_of(&tx, ns, name, RESOLUTION_HOUR, from, to)?;
    for (_, row) in &hours {
        acc.add_row(row);
    }
    for (_, row) in rollups::stored_rows_of(&tx, ns, name, RESOLUTION_DAY, from, to)? {
        acc.add_row(&row);
    }
    if let Some(acc) = day.remove(&from) {
        rollups::put_row(&tx, ns, name, RESOLUTION_DAY, from, &acc.into_row())?;
    }
    tx.execute(
        "DELETE FROM heartbeats
         WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND checked_at >= ?3 AND checked_at < ?4",
        params![ns, name, from, to],
    )?;
    tx.execute(
        "DELETE FROM heartbeat_rollups
         WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND resolution = ?3
           AND bucket_start >= ?4 AND bucket_start < ?5",
        params![ns, name, RESOLUTION_HOUR, from, to],
    )?;
    tx.commit()?;
    Ok((raw, u64::try_from(hours.len()).unwrap_or(u64::MAX)))
}
