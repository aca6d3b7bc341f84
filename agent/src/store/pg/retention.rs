//! Retention on PostgreSQL, as `store/retention.rs` and `Store::apply_retention`: short
//! transactions, one monitor and at most one day (or [`DELETE_BATCH`] rows) at a time,
//! so heartbeats keep being committed meanwhile.

use std::collections::BTreeMap;

use super::super::RetentionReport;
use super::super::convert::{Fail, days_ms};
use super::super::retention::DELETE_BATCH;
use super::super::rollups::{Acc, DAY_MS, HOUR_MS, RESOLUTION_HOUR};
use super::Pg;
use super::rollups::{self, Which};

/// Retention at `now` (unix ms) with the given settings.
pub(crate) async fn apply(
    pg: &Pg,
    now: i64,
    heartbeats_days: i64,
    incidents_days: i64,
    downsample_after_days: Option<i64>,
) -> Result<RetentionReport, Fail> {
    let keep_from = now.saturating_sub(days_ms(heartbeats_days));
    let incidents_from = now.saturating_sub(days_ms(incidents_days));
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
                 WHERE monitor_namespace = $1 AND monitor_name = $2 AND resolution = $3
                   AND bucket_start < $4",
                &[&ns, &name, &RESOLUTION_HOUR, &keep_from],
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

    if let Some(after) = downsample_after_days {
        let cutoff = now.saturating_sub(days_ms(after)).div_euclid(HOUR_MS) * HOUR_MS;
        for (ns, name) in rollups::monitors_in(&pg.client().await?, "heartbeats").await? {
            loop {
                let n = downsample_batch(pg, &ns, &name, cutoff).await?;
                if n == 0 {
                    break;
                }
                report.downsampled_heartbeats += n;
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
    let tx = c.transaction().await?;
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
    for (start, acc) in merged {
        let row = acc.into_row();
        tx.execute(
            &put,
            &[
                &ns,
                &name,
                &RESOLUTION_HOUR,
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
