//! Rollups on PostgreSQL, as `store/rollups.rs`: counts by state and latency statistics
//! per monitor and bucket, from raw heartbeats (aggregated by the server: one round
//! trip for every monitor; `percentile_disc(0.95)` is the same nearest-rank p95 as
//! SQLite's) and from downsampled hourly rows, merged with the same [`Acc`]. Also the
//! raw heartbeat queries (a monitor's latest, recent latency).

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use kubekuma_crds::objects::{LatencyPoint, Rollup};
use kubekuma_crds::results::Heartbeat;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::super::convert::{Fail, count, parse_enum, parse_opt_enum, time};
use super::super::rollups::{
    Acc, Buckets, DAY_MS, HOUR_MS, RESOLUTION_DAY, RESOLUTION_HOUR, RollupRow,
};
use super::Pg;

/// Monitors with rows in `table`, found by skipping through its primary key (a loose
/// index scan: one probe per monitor, in one statement).
pub(crate) fn monitors_sql(table: &str) -> String {
    format!(
        "WITH RECURSIVE m (ns, name) AS (
           (SELECT monitor_namespace, monitor_name FROM {table}
            ORDER BY monitor_namespace, monitor_name LIMIT 1)
           UNION ALL
           SELECT n.monitor_namespace, n.monitor_name FROM m CROSS JOIN LATERAL (
             SELECT monitor_namespace, monitor_name FROM {table}
             WHERE (monitor_namespace, monitor_name) > (m.ns, m.name)
             ORDER BY monitor_namespace, monitor_name LIMIT 1) n
         )"
    )
}

/// Every monitor with rows in `table` (`heartbeats` or `heartbeat_rollups`).
pub(crate) async fn monitors_in(
    c: &impl GenericClient,
    table: &str,
) -> Result<Vec<(String, String)>, Fail> {
    let rows = c
        .query(
            &format!("{} SELECT ns, name FROM m", monitors_sql(table)),
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Which monitors a rollup query covers.
#[derive(Clone, Copy)]
pub(crate) enum Which<'a> {
    /// One monitor.
    One(&'a str, &'a str),
    /// Every monitor with data.
    All,
}

type ByMonitor = BTreeMap<(String, String), BTreeMap<i64, Acc>>;

/// Rollups over `[from, to)` in `buckets`: stored hourly rows whose bucket starts in
/// the range, plus raw heartbeats checked in it.
pub(crate) async fn collect(
    c: &impl GenericClient,
    which: &Which<'_>,
    from: i64,
    to: i64,
    buckets: Buckets,
) -> Result<ByMonitor, Fail> {
    let mut out = ByMonitor::new();
    stored_into(c, which, from, to, buckets, &mut out).await?;
    raw_into(c, which, from, to, buckets, &mut out).await?;
    Ok(out)
}

/// The `m (ns, name)` CTE over `table`; for one monitor, its namespace and name are
/// parameters `$first` and `$first + 1` (pushed by [`push_monitor`]).
fn monitors_of(which: &Which<'_>, table: &str, first: usize) -> String {
    match which {
        Which::All => monitors_sql(table),
        Which::One(..) => format!(
            "WITH m (ns, name) AS (SELECT ${first}::text, ${}::text)",
            first + 1
        ),
    }
}

fn push_monitor<'a>(which: &'a Which<'a>, args: &mut Vec<&'a (dyn ToSql + Sync)>) {
    if let Which::One(ns, name) = which {
        args.push(ns);
        args.push(name);
    }
}

fn size_of(buckets: Buckets) -> i64 {
    match buckets {
        Buckets::Whole => 0,
        Buckets::Every(size) => size,
    }
}

/// Stored rows of `resolutions` with `bucket_start` in `[from, to)`.
pub(crate) async fn stored_rows(
    c: &impl GenericClient,
    which: &Which<'_>,
    resolutions: &[&str],
    from: i64,
    to: i64,
) -> Result<Vec<((String, String), i64, RollupRow)>, Fail> {
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&from, &to, &resolutions];
    push_monitor(which, &mut args);
    let m = monitors_of(which, "heartbeat_rollups", 4);
    let rows = c
        .query(
            &format!(
                "{m} SELECT m.ns, m.name, r.bucket_start, r.up, r.down, r.flapping, r.pending,
                        r.paused, r.maintenance, r.latency_count, r.latency_min, r.latency_avg,
                        r.latency_p95, r.latency_max
                 FROM m CROSS JOIN LATERAL (
                   SELECT * FROM heartbeat_rollups h
                   WHERE h.monitor_namespace = m.ns AND h.monitor_name = m.name
                     AND h.resolution = ANY($3::text[]) AND h.bucket_start >= $1::bigint
                     AND h.bucket_start < $2::bigint) r
                 ORDER BY 1, 2, 3"
            ),
            &args,
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                (r.try_get(0)?, r.try_get(1)?),
                r.try_get(2)?,
                rollup_row(r, 3)?,
            ))
        })
        .collect()
}

async fn stored_into(
    c: &impl GenericClient,
    which: &Which<'_>,
    from: i64,
    to: i64,
    buckets: Buckets,
    out: &mut ByMonitor,
) -> Result<(), Fail> {
    // Buckets shorter than a day cannot hold a daily row: those days are not shown.
    let resolutions: &[&str] = match buckets {
        Buckets::Every(size) if size < DAY_MS => &[RESOLUTION_HOUR],
        Buckets::Whole | Buckets::Every(_) => &[RESOLUTION_HOUR, RESOLUTION_DAY],
    };
    for (key, start, row) in stored_rows(c, which, resolutions, from, to).await? {
        let bucket = match buckets {
            Buckets::Whole => from,
            Buckets::Every(size) => start.div_euclid(size) * size,
        };
        out.entry(key)
            .or_default()
            .entry(bucket)
            .or_default()
            .add_row(&row);
    }
    Ok(())
}

/// A `RollupRow` from 11 columns starting at `at` (7 counts, then min, avg, p95, max).
fn rollup_row(r: &Row, at: usize) -> Result<RollupRow, Fail> {
    let c = |i: usize| -> Result<u64, Fail> {
        let v: i64 = r.try_get(at + i)?;
        Ok(u64::from(count("heartbeat_rollups", v)?))
    };
    Ok(RollupRow {
        up: c(0)?,
        down: c(1)?,
        flapping: c(2)?,
        pending: c(3)?,
        paused: c(4)?,
        maintenance: c(5)?,
        latency_count: c(6)?,
        latency_min: r.try_get(at + 7)?,
        latency_avg: r.try_get(at + 8)?,
        latency_p95: r.try_get(at + 9)?,
        latency_max: r.try_get(at + 10)?,
    })
}

async fn raw_into(
    c: &impl GenericClient,
    which: &Which<'_>,
    from: i64,
    to: i64,
    buckets: Buckets,
    out: &mut ByMonitor,
) -> Result<u64, Fail> {
    let size = size_of(buckets);
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&from, &to, &size];
    push_monitor(which, &mut args);
    let m = monitors_of(which, "heartbeats", 4);
    // A latency counts when the result is up or flapping and the value is finite.
    let lat = "h.state IN ('up', 'flapping') AND h.latency_ms IS NOT NULL \
               AND h.latency_ms NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)";
    let rows = c
        .query(
            &format!(
                "{m} SELECT m.ns, m.name, a.* FROM m CROSS JOIN LATERAL (
                   SELECT CASE WHEN $3::bigint = 0 THEN $1::bigint
                               ELSE h.checked_at - mod(mod(h.checked_at, $3) + $3, $3) END AS bucket,
                          count(*) FILTER (WHERE h.state = 'up'),
                          count(*) FILTER (WHERE h.state = 'down'),
                          count(*) FILTER (WHERE h.state = 'flapping'),
                          count(*) FILTER (WHERE h.state = 'pending'),
                          count(*) FILTER (WHERE h.state = 'paused'),
                          0::bigint,
                          count(*) FILTER (WHERE {lat}),
                          min(h.latency_ms) FILTER (WHERE {lat}),
                          sum(h.latency_ms) FILTER (WHERE {lat}),
                          percentile_disc(0.95) WITHIN GROUP (ORDER BY h.latency_ms)
                            FILTER (WHERE {lat}),
                          max(h.latency_ms) FILTER (WHERE {lat}),
                          count(*)
                   FROM heartbeats h
                   WHERE h.monitor_namespace = m.ns AND h.monitor_name = m.name
                     AND h.checked_at >= $1 AND h.checked_at < $2
                   GROUP BY 1) a
                 ORDER BY 1, 2, 3"
            ),
            &args,
        )
        .await?;
    let mut n = 0u64;
    for r in rows {
        let bucket: i64 = r.try_get(2)?;
        let mut row = rollup_row(&r, 3)?;
        // Column 11 is the sum: the mean is what a row stores.
        let sum: Option<f64> = row.latency_avg;
        row.latency_avg = match (sum, row.latency_count) {
            (Some(s), c) if c > 0 => Some(s / c as f64),
            _ => None,
        };
        let total: i64 = r.try_get(14)?;
        n += u64::try_from(total).unwrap_or(0);
        let key = (r.try_get(0)?, r.try_get(1)?);
        out.entry(key)
            .or_default()
            .entry(bucket)
            .or_default()
            .add_row(&row);
    }
    Ok(n)
}

/// Hourly accumulators of one monitor's raw heartbeats in `[from, to)`, and how many
/// heartbeats they hold.
pub(crate) async fn raw_hours(
    c: &impl GenericClient,
    which: &Which<'_>,
    from: i64,
    to: i64,
) -> Result<(BTreeMap<i64, Acc>, u64), Fail> {
    let mut out = ByMonitor::new();
    let n = raw_into(c, which, from, to, Buckets::Every(HOUR_MS), &mut out).await?;
    Ok((out.pop_first().map(|(_, b)| b).unwrap_or_default(), n))
}

/// Fold one monitor's stored hourly rows in `[from, to)` into the hours of `hours`
/// that exist (downsampling merges into rows already stored for the same hour).
pub(crate) async fn stored_into_existing(
    c: &impl GenericClient,
    which: &Which<'_>,
    from: i64,
    to: i64,
    hours: &mut BTreeMap<i64, Acc>,
) -> Result<(), Fail> {
    for (_, start, row) in stored_rows(c, which, &[RESOLUTION_HOUR], from, to).await? {
        if let Some(acc) = hours.get_mut(&start) {
            acc.add_row(&row);
        }
    }
    Ok(())
}

/// One accumulator of one monitor's raw heartbeats in `[from, to)`, keyed by `from`,
/// and how many heartbeats it holds.
pub(crate) async fn raw_whole(
    c: &impl GenericClient,
    which: &Which<'_>,
    from: i64,
    to: i64,
) -> Result<(Option<Acc>, u64), Fail> {
    let mut out = ByMonitor::new();
    let n = raw_into(c, which, from, to, Buckets::Whole, &mut out).await?;
    Ok((out.pop_first().and_then(|(_, mut b)| b.remove(&from)), n))
}

/// Rollups of one monitor over `[from, to)` in `buckets`.
pub(crate) async fn monitor_rollups(
    pg: &Pg,
    ns: &str,
    name: &str,
    from: i64,
    to: i64,
    buckets: Buckets,
) -> Result<BTreeMap<i64, Rollup>, Fail> {
    let mut c = pg.client().await?;
    let tx = snapshot(&mut c).await?;
    let mut all = collect(&tx, &Which::One(ns, name), from, to, buckets).await?;
    tx.commit().await?;
    Ok(all
        .pop_first()
        .map(|(_, b)| b.into_iter().map(|(k, a)| (k, a.into_rollup())).collect())
        .unwrap_or_default())
}

/// Rollups of every monitor in buckets of `size` ms, by `namespace/name`.
pub(crate) async fn all_rollups(
    pg: &Pg,
    from: i64,
    to: i64,
    size: i64,
) -> Result<BTreeMap<String, BTreeMap<i64, Rollup>>, Fail> {
    let mut c = pg.client().await?;
    let tx = snapshot(&mut c).await?;
    let all = collect(&tx, &Which::All, from, to, Buckets::Every(size)).await?;
    tx.commit().await?;
    Ok(all
        .into_iter()
        .filter(|(_, b)| !b.is_empty())
        .map(|((ns, name), b)| {
            (
                kubekuma_crds::objects::monitor_key(&ns, &name),
                b.into_iter().map(|(k, a)| (k, a.into_rollup())).collect(),
            )
        })
        .collect())
}

/// A read-only transaction that sees one snapshot.
async fn snapshot(
    c: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, Fail> {
    Ok(c.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// Average latency of up and flapping results per bucket, from raw heartbeats.
pub(crate) async fn recent_latency(
    pg: &Pg,
    ns: &str,
    name: &str,
    since: i64,
    bucket_ms: i64,
) -> Result<Vec<LatencyPoint>, Fail> {
    let c = pg.client().await?;
    let rows = c
        .query(
            "SELECT checked_at - mod(mod(checked_at, $4) + $4, $4) AS bucket, AVG(latency_ms)
             FROM heartbeats
             WHERE monitor_namespace = $1 AND monitor_name = $2 AND checked_at >= $3
               AND state IN ('up', 'flapping') AND latency_ms IS NOT NULL
             GROUP BY bucket ORDER BY bucket",
            &[&ns, &name, &since, &bucket_ms],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(LatencyPoint {
                at: time("heartbeats.checked_at", r.try_get(0)?)?,
                ms: r.try_get(1)?,
            })
        })
        .collect()
}

/// Heartbeats of one monitor checked at or after `since`, newest first.
pub(crate) async fn heartbeats(
    pg: &Pg,
    ns: &str,
    name: &str,
    since: i64,
    limit: i64,
) -> Result<Vec<Heartbeat>, Fail> {
    let c = pg.client().await?;
    let st = c
        .prepare_cached(
            "SELECT checked_at, state, latency_ms, reason, message, attempts FROM heartbeats
             WHERE monitor_namespace = $1 AND monitor_name = $2 AND checked_at >= $3
             ORDER BY checked_at DESC LIMIT $4",
        )
        .await?;
    let rows = c.query(&st, &[&ns, &name, &since, &limit]).await?;
    rows.iter()
        .map(|r| {
            let state: String = r.try_get(1)?;
            Ok(Heartbeat {
                namespace: ns.to_string(),
                name: name.to_string(),
                state: parse_enum("heartbeats.state", &state)?,
                latency_ms: r.try_get(2)?,
                reason: parse_opt_enum("heartbeats.reason", r.try_get(3)?)?,
                message: r.try_get(4)?,
                checked_at: time("heartbeats.checked_at", r.try_get(0)?)?,
                attempts: count("heartbeats.attempts", r.try_get(5)?)?,
            })
        })
        .collect()
}
