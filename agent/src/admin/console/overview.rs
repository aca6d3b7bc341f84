//! The overview (`GET /admin/`, `/admin/monitors`) and its data for console.js
//! (`GET /admin/monitors.json`): every monitor the principal sees, grouped by namespace,
//! with state, reason, last check, 24 h and 30 d uptime (the store's rollups) and a
//! latency sparkline (recent heartbeats); filters by namespace, type, state, label and
//! text; counts by state; 100 rows a page. States and filters come from the catalog and
//! the live view (cheap for every monitor); uptime and sparklines are read only for the
//! rows of the page.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt as _;
use http::StatusCode;
use kubekuma_builder::twins::round2;
use kubekuma_crds::{MonitorState, MonitorType};
use minijinja::context;
use serde::Serialize;

use super::{Reply, Session, json_reply, ser};
use crate::admin::routes::monitors::shown_state;

/// Rows per page.
pub const PAGE_SIZE: usize = 100;

/// How many heartbeats a sparkline draws at most.
pub const SPARK_POINTS: usize = 30;

/// The states the console shows, in the order of the counts.
pub const STATES: [&str; 7] = [
    "down",
    "degraded",
    "pending",
    "maintenance",
    "paused",
    "up",
    "unknown",
];

/// The console's name of a monitor's state: the tracker's, `degraded` for flapping,
/// `maintenance` inside an active maintenance window (unless paused), `unknown` for an
/// enabled monitor the live view does not hold.
pub fn console_state(state: MonitorState, known: bool, in_maintenance: bool) -> &'static str {
    match state {
        MonitorState::Paused => "paused",
        _ if in_maintenance => "maintenance",
        _ if !known => "unknown",
        MonitorState::Up => "up",
        MonitorState::Down => "down",
        MonitorState::Pending => "pending",
        MonitorState::Flapping => "degraded",
    }
}

/// The overview's filters, from the query.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Filter {
    /// `ns`: one namespace.
    pub ns: String,
    /// `type`: one monitor type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `state`: one of [`STATES`].
    pub state: String,
    /// `label`: `k=v` (several with commas), all must match.
    pub label: String,
    /// `q`: text in the namespace, name or description (case-insensitive).
    pub q: String,
    /// `page`: 1-based.
    pub page: usize,
}

impl Filter {
    /// Read the filters from a query; an unknown type or state or a label that is not
    /// `k=v` is an error naming the parameter.
    pub fn parse(pairs: &[(String, String)]) -> Result<Filter, String> {
        let mut f = Filter {
            page: 1,
            ..Filter::default()
        };
        for (k, v) in pairs {
            let v = v.trim();
            match k.as_str() {
                "ns" => f.ns = v.to_string(),
                "type" => f.type_ = v.to_string(),
                "state" => f.state = v.to_string(),
                "label" => f.label = v.to_string(),
                "q" => f.q = v.chars().take(200).collect(),
                "page" if !v.is_empty() => {
                    f.page = v
                        .parse::<usize>()
                        .ok()
                        .filter(|p| *p >= 1)
                        .ok_or_else(|| format!("page: {v:?} is not a page number"))?;
                }
                _ => {}
            }
        }
        if !f.type_.is_empty() && !MonitorType::ALL.iter().any(|t| t.as_str() == f.type_) {
            return Err(format!("type: unknown monitor type {:?}", f.type_));
        }
        if !f.state.is_empty() && !STATES.contains(&f.state.as_str()) {
            return Err(format!("state: unknown state {:?}", f.state));
        }
        f.labels()?;
        Ok(f)
    }

    /// The label filter's pairs.
    pub fn labels(&self) -> Result<Vec<(String, String)>, String> {
        crate::admin::routes::monitors::label_pairs(&self.label)
            .map_err(|p| format!("label: {p:?} is not key=value"))
    }

    /// The query of these filters on another page (empty values left out).
    pub fn query(&self, page: usize) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("ns", &self.ns),
            ("type", &self.type_),
            ("state", &self.state),
            ("label", &self.label),
            ("q", &self.q),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        if page > 1 {
            q.append_pair("page", &page.to_string());
        }
        q.finish()
    }
}

/// One monitor as the overview lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `namespace/name`.
    pub key: String,
    /// Namespace.
    pub ns: String,
    /// Name.
    pub name: String,
    /// The monitor's console page.
    pub href: String,
    /// Monitor type.
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// Console state (see [`console_state`]).
    pub state: &'static str,
    /// Failure reason of the last check.
    pub reason: Option<&'static str>,
    /// Message of the last check.
    pub message: Option<String>,
    /// When it was last checked (RFC 3339).
    #[serde(rename = "lastCheck")]
    pub last_check: Option<String>,
    /// "12 s ago" for the page.
    #[serde(rename = "lastCheckText")]
    pub last_check_text: String,
    /// Uptime over 24 h, percent.
    #[serde(rename = "uptime24h")]
    pub uptime_24h: Option<f64>,
    /// Uptime over 30 days, percent.
    #[serde(rename = "uptime30d")]
    pub uptime_30d: Option<f64>,
    /// Latencies of recent checks, oldest first (ms).
    pub sparkline: Vec<f64>,
    /// The sparkline's polyline points (`x,y …`) in a 100×24 box.
    #[serde(rename = "sparkPoints")]
    pub spark_points: String,
}

/// What the overview shows: one page of rows, counts and the filters' choices.
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    /// Counts by state of the monitors matching every filter but the state.
    pub counts: BTreeMap<&'static str, usize>,
    /// Monitors matching every filter.
    pub total: usize,
    /// This page (1-based).
    pub page: usize,
    /// Pages.
    pub pages: usize,
    /// This page's rows, in namespace/name order.
    pub rows: Vec<Row>,
}

/// "12 s ago", "5 min ago", "3 h ago", "2 d ago".
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

/// Polyline points of latencies in a `w`×`h` box (the y axis from 0 to the maximum; one
/// point draws a flat line).
pub fn spark_points(values: &[f64], w: f64, h: f64) -> String {
    if values.is_empty() {
        return String::new();
    }
    let max = values.iter().copied().fold(0.0_f64, f64::max).max(1.0);
    let n = values.len();
    let step = if n > 1 { w / (n - 1) as f64 } else { 0.0 };
    let mut out = String::new();
    let pad = 1.0;
    for (i, v) in values.iter().enumerate() {
        let x = if n > 1 { i as f64 * step } else { w };
        let y = pad + (h - 2.0 * pad) * (1.0 - v / max);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("{x:.1},{y:.1}"));
        if n == 1 {
            out.push_str(&format!(" 0,{y:.1}"));
        }
    }
    out
}

/// The rows matching `f` that `s` may see (all pages), with the counts by state of the
/// rows matching all filters but the state, and the namespaces the principal sees.
fn matching(s: &Session<'_>, f: &Filter) -> (Vec<Row>, BTreeMap<&'static str, usize>, Vec<String>) {
    let now = Utc::now();
    let snapshot = s.ctx().catalog.borrow().clone();
    let maintenance = crate::export::catalog::in_maintenance(&snapshot, now);
    let labels = f.labels().unwrap_or_default();
    let q = f.q.to_lowercase();
    let mut counts: BTreeMap<&'static str, usize> = STATES.iter().map(|s| (*s, 0)).collect();
    let mut namespaces = BTreeSet::new();
    let mut rows = Vec::new();
    let live = s.ctx().live.lock().unwrap_or_else(|p| p.into_inner());
    for (k, m) in &snapshot.monitors {
        if !s.principal.sees_namespace(&k.namespace) {
            continue;
        }
        namespaces.insert(k.namespace.clone());
        if (!f.ns.is_empty() && f.ns != k.namespace)
            || (!f.type_.is_empty() && m.spec.type_.as_str() != f.type_)
        {
            continue;
        }
        if !labels.is_empty() {
            let have = m.metadata.labels.as_ref();
            if !labels
                .iter()
                .all(|(lk, lv)| have.and_then(|l| l.get(lk)) == Some(lv))
            {
                continue;
            }
        }
        if !q.is_empty() {
            let hit = k.namespace.to_lowercase().contains(&q)
                || k.name.to_lowercase().contains(&q)
                || m.spec
                    .description
                    .as_deref()
                    .is_some_and(|d| d.to_lowercase().contains(&q));
            if !hit {
                continue;
            }
        }
        let l = live.monitors.get(k);
        let state = console_state(
            shown_state(m, l),
            l.is_some() || !m.spec.is_enabled(),
            maintenance.contains(k),
        );
        *counts.entry(state).or_default() += 1;
        if !f.state.is_empty() && f.state != state {
            continue;
        }
        rows.push(Row {
            key: k.to_string(),
            ns: k.namespace.clone(),
            name: k.name.clone(),
            href: super::monitor_href(&k.namespace, &k.name),
            type_: m.spec.type_.as_str(),
            state,
            reason: l.and_then(|l| l.reason).map(|r| r.as_str()),
            message: l.and_then(|l| l.message.clone()),
            last_check: l
                .and_then(|l| l.checked_at)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            last_check_text: l
                .and_then(|l| l.checked_at)
                .map_or_else(|| "never".to_string(), |t| ago(t, now)),
            uptime_24h: None,
            uptime_30d: None,
            sparkline: Vec::new(),
            spark_points: String::new(),
        });
    }
    (rows, counts, namespaces.into_iter().collect())
}

/// Uptime over 24 h and 30 d and the recent latencies (oldest first) of one monitor.
async fn row_data(
    store: crate::store::Store,
    ns: String,
    name: String,
    now: DateTime<Utc>,
) -> (Option<f64>, Option<f64>, Vec<f64>) {
    let mut up = [None, None];
    for (slot, days) in up.iter_mut().zip([1, 30]) {
        *slot = store
            .rollup(&ns, &name, now - Duration::days(days), now)
            .await
            .ok()
            .and_then(|r| r.uptime_percent())
            .map(round2);
    }
    let mut spark: Vec<f64> = store
        .heartbeats(&ns, &name, now - Duration::hours(24), SPARK_POINTS)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|h| h.latency_ms)
        .map(|ms| (ms * 10.0).round() / 10.0)
        .collect();
    spark.reverse();
    (up[0], up[1], spark)
}

/// Uptime and sparkline of the rows of one page, read from the store a few at a time.
async fn fill(s: &Session<'_>, rows: &mut [Row]) {
    let store = s.ctx().store.clone();
    let now = Utc::now();
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.ns.clone(), r.name.clone()))
        .collect();
    let filled: Vec<(Option<f64>, Option<f64>, Vec<f64>)> = futures::stream::iter(keys)
        .map(|(ns, name)| row_data(store.clone(), ns, name, now))
        .buffered(8)
        .collect()
        .await;
    for (row, (day, month, spark)) in rows.iter_mut().zip(filled) {
        row.uptime_24h = day;
        row.uptime_30d = month;
        row.spark_points = spark_points(&spark, 100.0, 24.0);
        row.sparkline = spark;
    }
}

/// One page of the overview for `f`.
async fn build(s: &Session<'_>, f: &Filter) -> (Overview, Vec<String>) {
    let (mut rows, counts, namespaces) = matching(s, f);
    let total = rows.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = f.page.min(pages);
    let start = (page - 1) * PAGE_SIZE;
    let mut shown: Vec<Row> = rows.drain(..).skip(start).take(PAGE_SIZE).collect();
    fill(s, &mut shown).await;
    (
        Overview {
            counts,
            total,
            page,
            pages,
            rows: shown,
        },
        namespaces,
    )
}

/// `GET /admin/` and `/admin/monitors`: the overview page.
pub async fn page(s: &Session<'_>) -> Reply {
    let (filter, error) = match Filter::parse(&s.r.query()) {
        Ok(f) => (f, None),
        Err(e) => (
            Filter {
                page: 1,
                ..Filter::default()
            },
            Some(e),
        ),
    };
    let (o, namespaces) = build(s, &filter).await;
    // Rows grouped by namespace, in order.
    let mut groups: Vec<(String, Vec<Row>)> = Vec::new();
    for r in &o.rows {
        match groups.last_mut() {
            Some((ns, rows)) if *ns == r.ns => rows.push(r.clone()),
            _ => groups.push((r.ns.clone(), vec![r.clone()])),
        }
    }
    let groups: Vec<_> = groups
        .into_iter()
        .map(|(ns, rows)| context! { ns => ns, rows => ser(rows) })
        .collect();
    let counts: Vec<_> = STATES
        .iter()
        .map(|st| {
            let mut f = filter.clone();
            f.state = (*st).to_string();
            context! {
                state => *st,
                count => o.counts.get(st).copied().unwrap_or(0),
                href => format!("/admin/?{}", f.query(1)),
                current => filter.state == *st,
            }
        })
        .collect();
    let mut all_states = filter.clone();
    all_states.state.clear();
    let types: Vec<&str> = MonitorType::ALL.iter().map(|t| t.as_str()).collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    s.render(
        "overview.html",
        status,
        context! {
            error => error,
            filter => ser(&filter),
            groups => groups,
            counts => counts,
            all_states_href => format!("/admin/?{}", all_states.query(1)),
            all_count => o.counts.values().sum::<usize>(),
            total => o.total,
            page => o.page,
            pages => o.pages,
            prev_href => (o.page > 1).then(|| format!("/admin/?{}", filter.query(o.page - 1))),
            next_href => (o.page < o.pages).then(|| format!("/admin/?{}", filter.query(o.page + 1))),
            namespaces => namespaces,
            types => types,
            states => STATES,
            json_href => format!("/admin/monitors.json?{}", filter.query(o.page)),
        },
    )
}

/// `GET /admin/monitors.json?…`: the same page as JSON
/// `{counts, total, page, pages, rows: [{key, state, reason, lastCheck, uptime24h,
/// uptime30d, sparkline, …}]}` (400 `{error}` for a bad filter).
pub async fn json(s: &Session<'_>) -> Reply {
    match Filter::parse(&s.r.query()) {
        Ok(f) => {
            let (o, _) = build(s, &f).await;
            json_reply(&o)
        }
        Err(e) => crate::admin::error::ApiError::bad_request(e).into_reply(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let f = Filter::parse(&q(&[("ns", "prod"), ("state", "down"), ("page", "3")]))
            .unwrap_or_default();
        assert_eq!(
            (f.ns.as_str(), f.state.as_str(), f.page),
            ("prod", "down", 3)
        );
        assert_eq!(f.query(2), "ns=prod&state=down&page=2");
        for bad in [
            q(&[("state", "sideways")]),
            q(&[("type", "gopher")]),
            q(&[("label", "novalue")]),
            q(&[("page", "0")]),
        ] {
            assert!(Filter::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn states_and_sparklines() {
        assert_eq!(
            console_state(MonitorState::Flapping, true, false),
            "degraded"
        );
        assert_eq!(console_state(MonitorState::Down, true, true), "maintenance");
        assert_eq!(console_state(MonitorState::Paused, true, true), "paused");
        assert_eq!(
            console_state(MonitorState::Pending, false, false),
            "unknown"
        );
        assert_eq!(spark_points(&[], 100.0, 24.0), "");
        assert_eq!(
            spark_points(&[10.0, 20.0], 100.0, 24.0),
            "0.0,12.0 100.0,1.0"
        );
    }
}
