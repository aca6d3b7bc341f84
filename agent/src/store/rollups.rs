//! Rollups: counts by state and latency statistics per monitor and time bucket, from raw
//! heartbeats and from downsampled hourly or daily rows alike.
//!
//! A stored row counts wholly in the bucket (or range) its start falls in, so a range's
//! edge is as precise as the rows it meets (an hour, or a UTC day where heartbeats became
//! daily rows). Buckets shorter than a day (hourly charts) leave daily rows out: an hour
//! cannot hold a day; those days are older than `downsample.afterDays` anyway.
//!
//! Latency statistics describe up and flapping results that carry a latency (a timeout's
//! latency says nothing about the service). The 95th percentile uses the nearest-rank
//! method: the value at rank ⌈0.95·n⌉ of the sorted latencies, so p95 of 1..=100 is 95.
//! Raw latencies give an exact p95; a bucket built from downsampled rows takes the
//! largest p95 among them (an upper estimate, like `Rollup::merge`).

use std::collections::BTreeMap;

use kubekuma_crds::MonitorState;
use kubekuma_crds::objects::{LatencyPoint, Rollup};
use rusqlite::{Connection, params};

use super::convert::{Fail, count, parse_enum, time};

/// One hour in milliseconds.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// One UTC day in milliseconds.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Resolution of hourly rows.
pub(crate) const RESOLUTION_HOUR: &str = "hour";
/// Resolution of daily rows (UTC days).
pub(crate) const RESOLUTION_DAY: &str = "day";

/// How results are grouped in time.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Buckets {
    /// One bucket for the whole range, keyed by its start.
    Whole,
    /// Buckets of this many milliseconds, aligned to the unix epoch.
    Every(i64),
}

impl Buckets {
    fn start(self, range_from: i64, t: i64) -> i64 {
        match self {
            Buckets::Whole => range_from,
            Buckets::Every(size) => t.div_euclid(size) * size,
        }
    }
}

/// A rollup being built.
#[derive(Clone, Debug, Default)]
pub(crate) struct Acc {
    pub(crate) up: u64,
    pub(crate) down: u64,
    pub(crate) flapping: u64,
    pub(crate) pending: u64,
    pub(crate) paused: u64,
    pub(crate) maintenance: u64,
    pub(crate) latency_count: u64,
    latency_sum: f64,
    latency_min: Option<f64>,
    latency_max: Option<f64>,
    /// p95 of latencies already folded in (downsampled rows, sealed raw runs).
    sealed_p95: Option<f64>,
    /// Raw latencies not yet folded into `sealed_p95`.
    raw: Vec<f64>,
}

impl Acc {
    /// Count one raw result.
    pub(crate) fn add_raw(&mut self, state: MonitorState, latency_ms: Option<f64>) {
        match state {
            MonitorState::Up => self.up += 1,
            MonitorState::Down => self.down += 1,
            MonitorState::Pending => self.pending += 1,
            MonitorState::Flapping => self.flapping += 1,
            MonitorState::Paused => self.paused += 1,
        }
        if let (MonitorState::Up | MonitorState::Flapping, Some(l)) = (state, latency_ms)
            && l.is_finite()
        {
            self.latency_count += 1;
            self.latency_sum += l;
            self.latency_min = Some(self.latency_min.map_or(l, |m| m.min(l)));
            self.latency_max = Some(self.latency_max.map_or(l, |m| m.max(l)));
            self.raw.push(l);
        }
    }

    /// Fold in a stored rollup row.
    pub(crate) fn add_row(&mut self, row: &RollupRow) {
        self.up += row.up;
        self.down += row.down;
        self.flapping += row.flapping;
        self.pending += row.pending;
        self.paused += row.paused;
        self.maintenance += row.maintenance;
        if row.latency_count > 0 {
            self.latency_count += row.latency_count;
            // Exact: the row's sum is its mean times its count.
            self.latency_sum += row.latency_avg.unwrap_or(0.0) * row.latency_count as f64;
        }
        self.latency_min = max_or_min(self.latency_min, row.latency_min, f64::min);
        self.latency_max = max_or_min(self.latency_max, row.latency_max, f64::max);
        self.sealed_p95 = max_or_min(self.sealed_p95, row.latency_p95, f64::max);
    }

    /// Fold the raw latencies collected so far into the p95 (frees them).
    pub(crate) fn seal(&mut self) {
        if self.raw.is_empty() {
            return;
        }
        let p = p95(&mut self.raw);
        self.sealed_p95 = max_or_min(self.sealed_p95, p, f64::max);
        self.raw = Vec::new();
    }

    /// The row to store.
    pub(crate) fn into_row(mut self) -> RollupRow {
        self.seal();
        RollupRow {
            up: self.up,
            down: self.down,
            flapping: self.flapping,
            pending: self.pending,
            paused: self.paused,
            maintenance: self.maintenance,
            latency_count: self.latency_count,
            latency_min: self.latency_min,
            latency_avg: (self.latency_count > 0)
                .then(|| self.latency_sum / self.latency_count as f64),
            latency_p95: self.sealed_p95,
            latency_max: self.latency_max,
        }
    }

    /// The published rollup.
    pub(crate) fn into_rollup(self) -> Rollup {
        let row = self.into_row();
        let c = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Rollup {
            up: c(row.up),
            down: c(row.down),
            flapping: c(row.flapping),
            pending: c(row.pending),
            paused: c(row.paused),
            maintenance: c(row.maintenance),
            latency_min: row.latency_min,
            latency_avg: row.latency_avg,
            latency_p95: row.latency_p95,
            latency_max: row.latency_max,
        }
    }
}

fn max_or_min(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// Nearest-rank 95th percentile (sorts `values`).
pub(crate) fn p95(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let rank = (n * 95).div_ceil(100).max(1);
    values.get(rank - 1).copied()
}

/// A row of `heartbeat_rollups`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RollupRow {
    pub(crate) up: u64,
    pub(crate) down: u64,
    pub(crate) flapping: u64,
    pub(crate) pending: u64,
    pub(crate) paused: u64,
    pub(crate) maintenance: u64,
    pub(crate) latency_count: u64,
    pub(crate) latency_min: Option<f64>,
    pub(crate) latency_avg: Option<f64>,
    pub(crate) latency_p95: Option<f64>,
    pub(crate) latency_max: Option<f64>,
}

const ROLLUP_COLUMNS: &str = "bucket_start, up, down, flapping, pending, paused, maintenance, \
     latency_count, latency_min, latency_avg, latency_p95, latency_max";

fn read_rollup_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, [i64; 7], [Option<f64>; 4])> {
    Ok((
        r.get(0)?,
        [
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ],
        [r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?],
    ))
}

fn rollup_row(counts: [i64; 7], lat: [Option<f64>; 4]) -> Result<RollupRow, Fail> {
    let c = |v: i64| count("heartbeat_rollups", v).map(u64::from);
    Ok(RollupRow {
        up: c(counts[0])?,
        down: c(counts[1])?,
        flapping: c(counts[2])?,
        pending: c(counts[3])?,
        paused: c(counts[4])?,
        maintenance: c(counts[5])?,
        latency_count: c(counts[6])?,
        latency_min: lat[0],
        latency_avg: lat[1],
        latency_p95: lat[2],
        latency_max: lat[3],
    })
}

/// Stored rows of one monitor of `resolution` with `bucket_start` in `[from, to)`.
pub(crate) fn stored_rows_of(
    conn: &Connection,
    ns: &str,
    name: &str,
    resolution: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, RollupRow)>, Fail> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {ROLLUP_COLUMNS} FROM heartbeat_rollups
         WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND resolution = ?3
           AND bucket_start >= ?4 AND bucket_start < ?5
         ORDER BY bucket_start"
    ))?;
    let rows = st.query_map(params![ns, name, resolution, from, to], read_rollup_row)?;
    let mut out = Vec::new();
    for row in rows {
        let (start, counts, lat) = row?;
        out.push((start, rollup_row(counts, lat)?));
    }
    Ok(out)
}

/// Stored rows of one monitor, hourly and daily, with `bucket_start` in `[from, to)`.
pub(crate) fn stored_rows(
    conn: &Connection,
    ns: &str,
    name: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, RollupRow)>, Fail> {
    let mut rows = stored_rows_of(conn, ns, name, RESOLUTION_HOUR, from, to)?;
    rows.extend(stored_rows_of(conn, ns, name, RESOLUTION_DAY, from, to)?);
    Ok(rows)
}

/// Write (replace) one row of `resolution`.
pub(crate) fn put_row(
    conn: &Connection,
    ns: &str,
    name: &str,
    resolution: &str,
    start: i64,
    row: &RollupRow,
) -> Result<(), Fail> {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO heartbeat_rollups
           (monitor_namespace, monitor_name, resolution, {ROLLUP_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    ))?
    .execute(params![
        ns,
        name,
        resolution,
        start,
        i(row.up),
        i(row.down),
        i(row.flapping),
        i(row.pending),
        i(row.paused),
        i(row.maintenance),
        i(row.latency_count),
        row.latency_min,
        row.latency_avg,
        row.latency_p95,
        row.latency_max,
    ])?;
    Ok(())
}

/// Stream raw heartbeats of one monitor in `[from, to)`, oldest first, into buckets.
/// Each bucket's raw latencies are sealed into its p95 when the stream leaves it, so at
/// most one bucket's latencies are held at a time.
pub(crate) fn raw_into(
    conn: &Connection,
    ns: &str,
    name: &str,
    from: i64,
    to: i64,
    buckets: Buckets,
    out: &mut BTreeMap<i64, Acc>,
) -> Result<u64, Fail> {
    let mut st = conn.prepare_cached(
        "SELECT checked_at, state, latency_ms FROM heartbeats
         WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND checked_at >= ?3 AND checked_at < ?4
         ORDER BY checked_at",
    )?;
    let mut rows = st.query(params![ns, name, from, to])?;
    let mut current: Option<(i64, Acc)> = None;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let t: i64 = r.get(0)?;
        let state: String = r.get(1)?;
        let latency: Option<f64> = r.get(2)?;
        let state: MonitorState = parse_enum("heartbeats.state", &state)?;
        let start = buckets.start(from, t);
        match &mut current {
            Some((s, acc)) if *s == start => acc.add_raw(state, latency),
            _ => {
                if let Some((s, acc)) = current.take() {
                    settle(out, s, acc);
                }
                let mut acc = Acc::default();
                acc.add_raw(state, latency);
                current = Some((start, acc));
            }
        }
        n += 1;
    }
    if let Some((s, acc)) = current {
        settle(out, s, acc);
    }
    Ok(n)
}

fn settle(out: &mut BTreeMap<i64, Acc>, start: i64, mut acc: Acc) {
    acc.seal();
    let slot = out.entry(start).or_default();
    let row = acc.into_row();
    slot.add_row(&row);
}

/// Rollups of one monitor over `[from, to)`: raw heartbeats plus hourly and daily rows
/// whose bucket starts in the range (daily rows only in buckets of a day or more).
pub(crate) fn monitor_rollups(
    conn: &Connection,
    ns: &str,
    name: &str,
    from: i64,
    to: i64,
    buckets: Buckets,
) -> Result<BTreeMap<i64, Rollup>, Fail> {
    let mut acc: BTreeMap<i64, Acc> = BTreeMap::new();
    // Buckets shorter than a day cannot hold a daily row: those days are not shown.
    let rows = match buckets {
        Buckets::Every(size) if size < DAY_MS => {
            stored_rows_of(conn, ns, name, RESOLUTION_HOUR, from, to)?
        }
        Buckets::Whole | Buckets::Every(_) => stored_rows(conn, ns, name, from, to)?,
    };
    for (start, row) in rows {
        acc.entry(buckets.start(from, start))
            .or_default()
            .add_row(&row);
    }
    raw_into(conn, ns, name, from, to, buckets, &mut acc)?;
    Ok(acc.into_iter().map(|(k, a)| (k, a.into_rollup())).collect())
}

/// Every monitor with rows in `table` (which must have a key starting with
/// `monitor_namespace, monitor_name`), found by skipping through the index.
pub(crate) fn monitors_in(conn: &Connection, table: &str) -> Result<Vec<(String, String)>, Fail> {
    let mut first = conn.prepare_cached(&format!(
        "SELECT monitor_namespace, monitor_name FROM {table}
         ORDER BY monitor_namespace, monitor_name LIMIT 1"
    ))?;
    let mut next = conn.prepare_cached(&format!(
        "SELECT monitor_namespace, monitor_name FROM {table}
         WHERE (monitor_namespace, monitor_name) > (?1, ?2)
         ORDER BY monitor_namespace, monitor_name LIMIT 1"
    ))?;
    let pair = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?));
    let mut out = Vec::new();
    let mut cursor = first.query_map([], pair)?.next().transpose()?;
    while let Some((ns, name)) = cursor {
        cursor = next
            .query_map(params![ns, name], pair)?
            .next()
            .transpose()?;
        out.push((ns, name));
    }
    Ok(out)
}

/// Every monitor with raw heartbeats or rollups.
pub(crate) fn all_monitors(conn: &Connection) -> Result<Vec<(String, String)>, Fail> {
    let mut all = monitors_in(conn, "heartbeats")?;
    all.extend(monitors_in(conn, "heartbeat_rollups")?);
    all.sort();
    all.dedup();
    Ok(all)
}

/// Average latency of up and flapping results per bucket, from raw heartbeats.
pub(crate) fn recent_latency(
    conn: &Connection,
    ns: &str,
    name: &str,
    since: i64,
    bucket_ms: i64,
) -> Result<Vec<LatencyPoint>, Fail> {
    let mut st = conn.prepare_cached(
        "SELECT (checked_at - ((checked_at % ?4) + ?4) % ?4) AS bucket, AVG(latency_ms)
         FROM heartbeats
         WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND checked_at >= ?3
           AND state IN ('up', 'flapping') AND latency_ms IS NOT NULL
         GROUP BY bucket ORDER BY bucket",
    )?;
    let rows = st.query_map(params![ns, name, since, bucket_ms], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (at, avg) = row?;
        out.push(LatencyPoint {
            at: time("heartbeats.checked_at", at)?,
            ms: avg,
        });
    }
    Ok(out)
}
