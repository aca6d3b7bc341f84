//! Retention on PostgreSQL, as `store/retention.rs` and `Store::apply_retention`: short
//! transactions, one monitor and at most one day (or [`DELETE_BATCH`] rows) at a time,
//! so heartbeats keep being committed meanwhile.

use std::collections::BTreeMap;

use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::settings::DownsampleResolution;

use super::super::RetentionReport;
use super::super::convert::{Fail, days_ms};
use super::super::retention::{DELETE_BATCH, downsample_cutoff};
use super::super::rollups::{Acc, DAY_MS, HOUR_MS, RESOLUTION_DAY, RESOLUTION_HOUR, RollupRow};
use super::Pg;
use super::rollups::{self, Which};

/// Retention at `now` (unix ms) with `settings`, as `Store::apply_retention`.
pub(crate) async fn apply(
    pg: &Pg,
    now: i64,
    settings: &EffectiveSettings,
) -> Result<RetentionReport, Fail> {
    let keep_from = now.saturating_sub(days_ms(settings.heartbeats_days));
    let incidents_from = now.saturating_sub(days_ms(settings.incidents_days));
    let mut report = RetentionReport::default();
    let batch = u64::try_from(DELETE_BATCH).unwrap_or(u64::MAX);

    let monitors = rollups::monitors_in(&pg.client().await?, "heartbeats").await?;
    for (ns, name) in &monitors {
        loop {
            let n = expire_heartbeats(pg, ns, name, keep_from).await?;
            report.deleted_heartbeats += n;
            if n < batch {
                break;
            }
        }
    }
    for (ns, name) in rollups::monitors_in(&pg.client().await?, "heartbeat_rollups").await? {
        let c = pg.client().await?;
        let n = c
            .execute(
                "DELETE FROM heartbeat_rollups
                 WHERE monitor_namespace = $1 AND monitor_name = $2 AND bucket_start < $3",
                &[&ns, &name, &keep_from],
            )
            .await?;
        report.deleted_rollups += n;
    }
    report.deleted_incidents = pg
        .client()
        .await?
        .execute(
            "DELETE FROM incidents WHERE ended_at IS NOT NULL AND ended_at < $1",
            &[&incidents_from],
        )
        .await?;

    if settings.downsample_enabled {
        let resolution = settings.downsample_resolution;
        let cutoff = downsample_cutoff(now, days_ms(settings.downsample_after_days), resolution);
        let mut monitors = rollups::monitors_in(&pg.client().await?, "heartbeats").await?;
        if resolution == DownsampleResolution::Daily {
            // Hourly rows of earlier runs (or of the hourly resolution) become daily too.
            monitors.extend(rollups::monitors_in(&pg.client().await?, "heartbeat_rollups").await?);
            monitors.sort();
            monitors.dedup();
        }
        for (ns, name) in monitors {
            loop {
                let (raw, hours) = match resolution {
                    DownsampleResolution::Hourly => {
                        (downsample_batch(pg, &ns, &name, cutoff).await?, 0)
                    }
                    DownsampleResolution::Daily => {
                        downsample_day_batch(pg, &ns, &name, cutoff).await?
                    }
                };
                if raw == 0 && hours == 0 {
                    break;
                }
                report.downsampled_heartbeats += raw;
                report.merged_hourly_rollups += hours;
            }
        }
    }
    Ok(report)
}

/// Delete up to [`DELETE_BATCH`] raw heartbeats of one monitor older than `cutoff`.
async fn expire_heartbeats(pg: &Pg, ns: &str, name: &str, cutoff: i64) -> Result<u64, Fail> {
    let c = pg.client().await?;
    Ok(c.execute(
        "DELETE FROM heartbeats
         WHERE monitor_namespace = $1 AND monitor_name = $2 AND checked_at IN (
           SELECT checked_at FROM heartbeats
           WHERE monitor_namespace = $1 AND monitor_name = $2 AND checked_at < $3
           ORDER BY checked_at LIMIT $4)",
        &[&ns, &name, &cutoff, &DELETE_BATCH],
    )
    .await?)
}

/// Downsample the oldest day (at most) of one monitor's raw heartbeats older than
/// `cutoff` into hourly rows (merged into stored ones), in one transaction; returns how
/// many raw heartbeats it replaced.
async fn downsample_batch(pg: &Pg, ns: &str, name: &str, cutoff: i64) -> Result<u64, Fail> {
    let mut c = pg.client().await?;
    let tx = snapshot_transaction(&mut c).await?;
    let oldest: Option<i64> = tx
        .query_one(
            "SELECT MIN(checked_at) FROM heartbeats
             WHERE monitor_namespace = $1 AND monitor_name = $2 AND checked_at < $3",
            &[&ns, &name, &cutoff],
        )
        .await?
        .try_get(0)?;
    let Some(oldest) = oldest else {
        return Ok(0);
    };
    let from = oldest.div_euclid(HOUR_MS) * HOUR_MS;
    let to = from.saturating_add(DAY_MS).min(cutoff);
    let which = Which::One(ns, name);
    let (hours, n): (BTreeMap<i64, Acc>, u64) = rollups::raw_hours(&tx, &which, from, to).await?;
    let mut merged = hours;
    rollups::stored_into_existing(&tx, &which, from, to, &mut merged).await?;
    for (start, acc) in merged {
        put_row(&tx, ns, name, RESOLUTION_HOUR, start, &acc.into_row()).await?;
    }
    tx.execute(
        "DELETE FROM heartbeats
         WHERE monitor_namespace = $1 AND monitor_name = $2 AND checked_at >= $3
           AND checked_at < $4",
        &[&ns, &name, &from, &to],
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Downsample the oldest UTC day of one monitor before `cutoff` (a day boundary) into
/// one daily row, in one transaction: its raw heartbeats, its hourly rows and any daily
/// row already stored for it become that day's row; the raw heartbeats and hourly rows
/// are deleted. Returns how many raw heartbeats and hourly rows it replaced.
async fn downsample_day_batch(
    pg: &Pg,
    ns: &str,
    name: &str,
    cutoff: i64,
) -> Result<(u64, u64), Fail> {
    let mut c = pg.client().await?;
    let tx = snapshot_transaction(&mut c).await?;
    let oldest: Option<i64> = tx
        .query_one(
            "SELECT MIN(t) FROM (
               SELECT MIN(checked_at) AS t FROM heartbeats
               WHERE monitor_namespace = $1 AND monitor_name = $2 AND checked_at < $3
               UNION ALL
               SELECT MIN(bucket_start) AS t FROM heartbeat_rollups
               WHERE monitor_namespace = $1 AND monitor_name = $2 AND resolution = $4
                 AND bucket_start < $3) AS oldest",
            &[&ns, &name, &cutoff, &RESOLUTION_HOUR],
        )
        .await?
        .try_get(0)?;
    let Some(oldest) = oldest else {
        return Ok((0, 0));
    };
    let from = oldest.div_euclid(DAY_MS) * DAY_MS;
    let to = from.saturating_add(DAY_MS).min(cutoff);
    let which = Which::One(ns, name);
    let (acc, raw) = rollups::raw_whole(&tx, &which, from, to).await?;
    let mut acc = acc.unwrap_or_default();
    let hours = rollups::stored_rows(&tx, &which, &[RESOLUTION_HOUR], from, to).await?;
    for (_, _, row) in &hours {
        acc.add_row(row);
    }
    for (_, _, row) in rollups::stored_rows(&tx, &which, &[RESOLUTION_DAY], from, to).await? {
        acc.add_row(&row);
    }
    put_row(&tx, ns, name, RESOLUTION_DAY, from, &acc.into_row()).await?;
    tx.execute(
        "DELETE FROM heartbeats
         WHERE monitor_namespace = $1 AND monitor_name = $2 AND checked_at >= $3
           AND checked_at < $4",
        &[&ns, &name, &from, &to],
    )
    .await?;
    tx.execute(
        "DELETE FROM heartbeat_rollups
         WHERE monitor_namespace = $1 AND monitor_name = $2 AND resolution = $3
           AND bucket_start >= $4 AND bucket_start < $5",
        &[&ns, &name, &RESOLUTION_HOUR, &from, &to],
    )
    .await?;
    tx.commit().await?;
    Ok((raw, u64::try_from(hours.len()).unwrap_or(u64::MAX)))
}

/// A read-write transaction on one snapshot: a heartbeat committed meanwhile (by the
/// heartbeat task, on another connection) is neither counted nor deleted by it, and is
/// downsampled by a later run; under READ COMMITTED the DELETE would remove it uncounted.
async fn snapshot_transaction(
    c: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, Fail> {
    Ok(c.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?)
}

/// Write (replace) one row of `resolution`.
async fn put_row(
    tx: &deadpool_postgres::Transaction<'_>,
    ns: &str,
    name: &str,
    resolution: &str,
    start: i64,
    row: &RollupRow,
) -> Result<(), Fail> {
    let put = tx
        .prepare_cached(
            "INSERT INTO heartbeat_rollups
               (monitor_namespace, monitor_name, resolution, bucket_start, up, down, flapping,
                pending, paused, maintenance, latency_count, latency_min, latency_avg,
                latency_p95, latency_max)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (monitor_namespace, monitor_name, resolution, bucket_start) DO UPDATE SET
               up = excluded.up, down = excluded.down, flapping = excluded.flapping,
               pending = excluded.pending, paused = excluded.paused,
               maintenance = excluded.maintenance, latency_count = excluded.latency_count,
               latency_min = excluded.latency_min, latency_avg = excluded.latency_avg,
               latency_p95 = excluded.latency_p95, latency_max = excluded.latency_max",
        )
        .await?;
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    tx.execute(
        &put,
        &[
            &ns,
            &name,
            &resolution,
            &start,
            &i(row.up),
            &i(row.down),
            &i(row.flapping),
            &i(row.pending),
            &i(row.paused),
            &i(row.maintenance),
            &i(row.latency_count),
            &row.latency_min,
            &row.latency_avg,
            &row.latency_p95,
            &row.latency_max,
        ],
    )
    .await?;
    Ok(())
}
