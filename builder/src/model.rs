//! From agents' objects to what a page shows: pure functions of [`Inputs`] and a clock.
//!
//! Several agents may report the same monitor (several locations): their rollups are
//! added up, the current state is the worst of theirs, and each location's state is
//! kept for display. Everything here is public by construction — the inputs carry no
//! targets, headers or secrets.
//!
//! An agent whose state is more than [`RETIRED_AFTER`] older than the newest agent's has
//! stopped reporting: the agent pod that led before a failover (each replica writes under
//! its own pod name), or a location that went away. Its history still counts, but its
//! current states do not, and its open incidents are shown as ended at its last report
//! (the agent that took over opens its own incident if the monitor is still down).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Timelike, Utc};
use kubekuma_crds::monitor::{MonitorState, MonitorType};
use kubekuma_crds::objects::{
    DailyMonth, HourlyDay, IncidentMonth, LatencyPoint, MonitorNow, PublicMaintenance,
    PublicMonitor, PublicPage, PublicSilence, Rollup,
};
use kubekuma_crds::results::{FailureReason, Incident};
use kubekuma_crds::status_page::{BadgeScope, OverallStatus, Shown};
use serde::Serialize;

use crate::source::{AgentData, HISTORY_DAYS, Inputs};

/// Width of the 24-hour response-time chart, in SVG user units (two per 10 minutes).
pub const CHART_WIDTH: f64 = 288.0;
/// Height of the chart.
pub const CHART_HEIGHT: f64 = 48.0;
/// Accent colour when a page sets none (or an invalid one).
pub const DEFAULT_ACCENT: &str = "#2563eb";
/// How much older than the newest agent's state an agent's state may be before the agent
/// counts as retired (15 flushes at the default interval of 60 s).
pub const RETIRED_AFTER: Duration = Duration::minutes(15);

/// Everything the builder renders: the published pages.
#[derive(Serialize, Clone, Debug)]
pub struct Site {
    /// Published pages, in slug order.
    pub pages: Vec<PageView>,
    /// The time of the data (RFC 3339, seconds).
    pub data_time: String,
    /// Problems met while reading the inputs or building the model.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// One status page.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct PageView {
    /// URL slug: the page lives at `<slug>/`.
    pub slug: String,
    /// Title.
    pub title: String,
    /// Introductory text.
    pub description: Option<String>,
    /// Namespace of the StatusPage resource.
    pub namespace: String,
    /// Name of the StatusPage resource.
    pub name: String,
    /// `operational`, `degraded`, `partialOutage`, `majorOutage` or `maintenance`.
    pub overall: OverallStatus,
    /// The banner's sentence.
    pub overall_text: &'static str,
    /// Logo, favicon and colours.
    pub branding: BrandingView,
    /// Groups in the order of the spec.
    pub groups: Vec<GroupView>,
    /// Open incidents, newest first.
    pub active_incidents: Vec<IncidentView>,
    /// Incidents that ended within the history window, newest first.
    pub past_incidents: Vec<IncidentView>,
    /// Maintenance in progress or coming within a week.
    pub maintenance: Vec<MaintenanceView>,
    /// Silences of the page's monitors in effect or coming within a week: their
    /// notifications are held back (checks still run).
    pub silences: Vec<SilenceView>,
    /// `all`, `page` or none.
    pub badges: Option<&'static str>,
    /// The time of the data (RFC 3339).
    pub data_time: String,
    /// Days of history shown.
    pub history_days: i64,
    /// More than one agent reports monitors of this page.
    pub multi_location: bool,
    /// Host names the page is served on through an Ingress (the site server answers
    /// them with this page).
    pub hosts: Vec<String>,
}

impl PageView {
    /// Drops from every text the page shows what [`crate::text::dropped`] names
    /// (controls, bidirectional overrides, zero-width characters), so that pages, feeds,
    /// badges and JSON display fields never carry them, whatever the agents wrote.
    fn clean_text(&mut self) {
        use crate::text::{clean, clean_opt};
        clean(&mut self.title);
        clean_opt(&mut self.description);
        clean_opt(&mut self.branding.logo);
        clean_opt(&mut self.branding.favicon);
        for g in &mut self.groups {
            clean(&mut g.name);
            clean_opt(&mut g.description);
            for m in &mut g.monitors {
                clean(&mut m.display_name);
                clean_opt(&mut m.description);
                clean(&mut m.chart.label);
                for l in &mut m.locations {
                    clean(&mut l.agent);
                }
            }
        }
        for i in self
            .active_incidents
            .iter_mut()
            .chain(self.past_incidents.iter_mut())
        {
            clean(&mut i.id);
            clean(&mut i.monitor_name);
            clean(&mut i.title);
            clean_opt(&mut i.location);
            for u in &mut i.updates {
                clean(&mut u.message);
            }
        }
        for mw in &mut self.maintenance {
            clean(&mut mw.name);
            clean_opt(&mut mw.description);
        }
        for s in &mut self.silences {
            clean(&mut s.name);
            clean_opt(&mut s.reason);
        }
    }

    /// Every monitor of the page, in display order.
    pub fn monitors(&self) -> impl Iterator<Item = &MonitorView> {
        self.groups.iter().flat_map(|g| g.monitors.iter())
    }
}

/// Branding after validation.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct BrandingView {
    /// Logo location as given (an asset path once the builder has fetched it).
    pub logo: Option<String>,
    /// Favicon location as given (an asset path once fetched).
    pub favicon: Option<String>,
    /// Accent colour, a valid `#rgb`/`#rrggbb`.
    pub accent: String,
    /// Offer a dark variant following `prefers-color-scheme`.
    pub dark_mode: bool,
}

/// A group of monitors.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct GroupView {
    /// Heading.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Monitors in the order of the spec.
    pub monitors: Vec<MonitorView>,
}

/// One monitor as a page shows it.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MonitorView {
    /// `namespace/name`.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Name shown.
    pub display_name: String,
    /// Public description.
    pub description: Option<String>,
    /// Monitor type (`http`, `dns`, …).
    #[serde(rename = "type")]
    pub type_: Option<MonitorType>,
    /// `up`, `down`, `pending`, `flapping`, `paused` or `maintenance`.
    pub state: &'static str,
    /// The state in words.
    pub state_text: &'static str,
    /// Since when (RFC 3339).
    pub since: Option<String>,
    /// Last check (RFC 3339).
    pub checked_at: Option<String>,
    /// Latency of the last check, whole ms.
    pub latency_ms: Option<i64>,
    /// Classified reason of the current failure, in words.
    pub reason_text: Option<&'static str>,
    /// Days until the TLS certificate expires.
    pub cert_days_left: Option<i64>,
    /// Uptime over 24h / 7d / 30d / 90d.
    pub uptime: UptimeView,
    /// One bar per day, oldest first (shared with the [`ModelCache`] while the
    /// monitor's history and the hour stay the same).
    pub days: Shared<Vec<DayView>>,
    /// The 24-hour response-time chart.
    pub chart: ChartView,
    /// Per-location states, when more than one agent reports this monitor.
    pub locations: Vec<LocationView>,
}

/// Uptime percentages; `None` when there is no result in the period.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct UptimeView {
    /// Last 24 hours.
    pub d1: Option<f64>,
    /// Last 7 days.
    pub d7: Option<f64>,
    /// Last 30 days.
    pub d30: Option<f64>,
    /// Last 90 days.
    pub d90: Option<f64>,
}

impl UptimeView {
    /// The value for 1, 7, 30 or 90 days.
    pub fn for_days(&self, days: u32) -> Option<f64> {
        match days {
            1 => self.d1,
            7 => self.d7,
            30 => self.d30,
            _ => self.d90,
        }
    }
}

/// One day of the history strip.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct DayView {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Uptime that day.
    pub uptime: Option<f64>,
    /// `ok`, `minor`, `major`, `down`, `maintenance` or `none` (no data).
    pub level: &'static str,
    /// Incidents that started that day.
    pub incidents: usize,
    /// The text equivalent of the bar.
    pub label: String,
}

/// The response-time chart as SVG geometry.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct ChartView {
    /// Path data of the line (`M x y L …`), empty without points.
    pub path: String,
    /// Number of points.
    pub points: usize,
    /// Fastest, mean and slowest latency, whole ms.
    pub min_ms: Option<i64>,
    /// Mean latency.
    pub avg_ms: Option<i64>,
    /// Slowest latency.
    pub max_ms: Option<i64>,
    /// Top of the scale, ms.
    pub scale_ms: i64,
    /// Text alternative.
    pub label: String,
    /// Width in user units.
    pub width: f64,
    /// Height in user units.
    pub height: f64,
}

/// One agent's view of a monitor.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct LocationView {
    /// The agent id.
    pub agent: String,
    /// Its state.
    pub state: &'static str,
}

/// An incident as shown.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct IncidentView {
    /// Stable id: `<agent>-<id>`.
    pub id: String,
    /// `namespace/name` of the monitor.
    pub monitor: String,
    /// Display name of the monitor.
    pub monitor_name: String,
    /// Headline.
    pub title: String,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339), none while open.
    pub ended_at: Option<String>,
    /// Length in words, once closed.
    pub duration_text: Option<String>,
    /// The classified cause in words.
    pub reason_text: Option<&'static str>,
    /// Public updates, oldest first.
    pub updates: Vec<UpdateView>,
    /// Still open.
    pub active: bool,
    /// Reporting agent, when the page has several.
    pub location: Option<String>,
}

/// A public incident update.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct UpdateView {
    /// When (RFC 3339).
    pub at: String,
    /// The text.
    pub message: String,
}

/// Maintenance as shown.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MaintenanceView {
    /// Name of the window.
    pub name: String,
    /// Public text.
    pub description: Option<String>,
    /// In progress.
    pub active: bool,
    /// Start of the occurrence shown (RFC 3339).
    pub starts_at: Option<String>,
    /// End of the occurrence shown (RFC 3339).
    pub ends_at: Option<String>,
}

/// A silence as shown.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct SilenceView {
    /// Name of the silence.
    pub name: String,
    /// Why, as its author wrote.
    pub reason: Option<String>,
    /// In effect now.
    pub active: bool,
    /// Start (RFC 3339).
    pub starts_at: String,
    /// End (RFC 3339).
    pub ends_at: String,
}

/// Per-monitor facts merged over agents, for one build.
#[derive(Default)]
struct Merged<'a> {
    /// From the newest catalog that has the monitor.
    facts: Option<&'a PublicMonitor>,
    facts_at: Option<DateTime<Utc>>,
    now: Vec<(&'a str, &'a MonitorNow)>,
}

/// One monitor's history merged over agents: what only the agents' history objects (and
/// which agents are retired) decide.
#[derive(Default)]
struct History {
    hourly: BTreeMap<(NaiveDate, u8), Rollup>,
    daily: BTreeMap<NaiveDate, Rollup>,
    /// By reporting agent, with the open incidents of retired agents ended at their last
    /// report.
    incidents: Vec<(String, Incident)>,
}

/// The history objects of one agent a merge came from, compared by identity: the
/// [`crate::source::ReadCache`] hands an unchanged object over as the same `Arc`.
#[derive(Clone)]
struct HistorySource {
    agent: String,
    retired: Option<DateTime<Utc>>,
    hourly: Vec<(NaiveDate, Arc<HourlyDay>)>,
    daily: Vec<(String, Arc<DailyMonth>)>,
    incidents: Vec<(String, Arc<IncidentMonth>)>,
}

impl HistorySource {
    fn of(agent: &AgentData, retired: Option<DateTime<Utc>>) -> HistorySource {
        HistorySource {
            agent: agent.id.clone(),
            retired,
            hourly: agent.hourly.iter().map(|(k, v)| (*k, v.clone())).collect(),
            daily: agent
                .daily
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            incidents: agent
                .incidents
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl PartialEq for HistorySource {
    fn eq(&self, o: &Self) -> bool {
        fn same<K: PartialEq, V>(a: &[(K, Arc<V>)], b: &[(K, Arc<V>)]) -> bool {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ka, va), (kb, vb))| ka == kb && Arc::ptr_eq(va, vb))
        }
        self.agent == o.agent
            && self.retired == o.retired
            && same(&self.hourly, &o.hourly)
            && same(&self.daily, &o.daily)
            && same(&self.incidents, &o.incidents)
    }
}

/// What a builder keeps of its last model so that the next one merges and summarises
/// only what changed: every monitor's merged history while the agents' history objects
/// are the same ones, and every monitor's uptime and day strip while, besides, the hour
/// is the same (the windows they measure move by the hour). A fresh builder (and
/// [`site`]) starts without one.
#[derive(Default)]
pub struct ModelCache {
    /// What the merged history came from.
    sources: Vec<HistorySource>,
    /// By monitor key.
    history: HashMap<String, History>,
    /// Warnings of the merge, by agent (in the order of `sources`).
    warnings: Vec<Vec<String>>,
    /// The hour (`now` truncated) `summaries` were measured at.
    hour: Option<(NaiveDate, u32)>,
    /// By monitor key: uptime windows and the day strip.
    summaries: HashMap<String, Summary>,
    /// By monitor key: the response-time chart and what it was drawn from.
    charts: HashMap<String, CachedChart>,
}

/// A response-time chart and what it was drawn from: the clock and the recent latencies
/// of each agent's state.
struct CachedChart {
    now: DateTime<Utc>,
    recent: Vec<Vec<LatencyPoint>>,
    chart: ChartView,
}

impl CachedChart {
    /// Whether this chart was drawn from `states` at `now`.
    fn drawn_from(&self, states: &[(&str, &MonitorNow)], now: DateTime<Utc>) -> bool {
        self.now == now
            && self.recent.len() == states.len()
            && self
                .recent
                .iter()
                .zip(states)
                .all(|(r, (_, n))| *r == n.recent)
    }
}

/// A monitor's uptime windows and day strip, from its history at some hour.
#[derive(Clone)]
struct Summary {
    uptime: UptimeView,
    days: Shared<Vec<DayView>>,
}

/// A part of the model built once and shared (between builds by the [`ModelCache`]):
/// serialised as the value it holds, and equal to another when it is the same one or
/// holds an equal value.
#[derive(Clone, Debug)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    /// `v`, shared.
    pub fn new(v: T) -> Self {
        Shared(Arc::new(v))
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0) || *self.0 == *o.0
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A day of the history strip: the date, as `Nov 26, 2026` and as `2026-11-26`.
type DayText = (NaiveDate, String, String);

/// Build the site model. `now` is the clock windows are measured against; callers pass
/// the time of the data so that a rebuild of unchanged inputs gives the same output.
pub fn site(inputs: &Inputs, now: DateTime<Utc>) -> Site {
    site_cached(inputs, now, &mut ModelCache::default())
}

/// [`site`], taking from `cache` what the last model of the same builder computed from
/// the same history, and leaving there what this one computed.
pub fn site_cached(inputs: &Inputs, now: DateTime<Utc>, cache: &mut ModelCache) -> Site {
    let mut warnings = inputs.warnings.clone();
    let mut monitors: BTreeMap<String, Merged<'_>> = BTreeMap::new();
    // Pages: the newest catalog's version of each (namespace, name).
    let mut pages: BTreeMap<(String, String), (DateTime<Utc>, &PublicPage)> = BTreeMap::new();
    let mut maintenance: BTreeMap<(String, String), &PublicMaintenance> = BTreeMap::new();
    let mut silences: BTreeMap<(String, String), &PublicSilence> = BTreeMap::new();

    let newest_state = inputs
        .agents
        .iter()
        .filter_map(|a| a.state.as_ref().map(|s| s.generated_at))
        .max();
    // When each agent stopped reporting, if it did.
    let retired: Vec<Option<DateTime<Utc>>> = inputs
        .agents
        .iter()
        .map(|agent| match (&agent.state, newest_state) {
            (Some(state), Some(newest)) if state.generated_at + RETIRED_AFTER < newest => {
                Some(state.generated_at)
            }
            _ => None,
        })
        .collect();
    let sources: Vec<HistorySource> = inputs
        .agents
        .iter()
        .zip(&retired)
        .map(|(a, r)| HistorySource::of(a, *r))
        .collect();
    if cache.sources != sources {
        let (history, merge_warnings) = merge_history(inputs, &retired);
        *cache = ModelCache {
            sources,
            history,
            warnings: merge_warnings,
            charts: std::mem::take(&mut cache.charts),
            ..ModelCache::default()
        };
    }
    let hour = (now.date_naive(), now.hour());
    if cache.hour != Some(hour) {
        cache.summaries.clear();
        cache.hour = Some(hour);
    }
    let history = &cache.history;

    for ((agent, retired), agent_warnings) in
        inputs.agents.iter().zip(&retired).zip(&cache.warnings)
    {
        let at = agent.catalog.generated_at;
        if let (Some(state), Some(newest)) = (retired.and(agent.state.as_ref()), newest_state) {
            warnings.push(format!(
                "agent {}: its last state ({}) is more than {} minutes older than the \
                 newest agent's ({}): its current states are left out and its open \
                 incidents end at its last report",
                agent.id,
                rfc3339(state.generated_at),
                RETIRED_AFTER.num_minutes(),
                rfc3339(newest)
            ));
        }
        for p in &agent.catalog.pages {
            let k = (p.namespace.clone(), p.name.clone());
            if pages.get(&k).is_none_or(|(t, _)| *t < at) {
                pages.insert(k, (at, p));
            }
        }
        for m in &agent.catalog.maintenance {
            maintenance.insert((m.namespace.clone(), m.name.clone()), m);
        }
        for s in &agent.catalog.silences {
            silences.insert((s.namespace.clone(), s.name.clone()), s);
        }
        for m in &agent.catalog.monitors {
            let e = monitors
                .entry(monitor_key(&m.namespace, &m.name))
                .or_default();
            if e.facts_at.is_none_or(|t| t < at) {
                e.facts = Some(m);
                e.facts_at = Some(at);
            }
        }
        if let Some(state) = agent.state.as_ref().filter(|_| retired.is_none()) {
            for (k, now) in &state.monitors {
                monitors
                    .entry(k.clone())
                    .or_default()
                    .now
                    .push((&agent.id, now));
            }
        }
        warnings.extend(agent_warnings.iter().cloned());
    }

    let data_time = rfc3339(now);
    let mut slugs = BTreeSet::new();
    let mut published = Vec::new();
    for ((ns, name), (_, page)) in &pages {
        if !page.published {
            continue;
        }
        if !slugs.insert(page.slug.clone()) {
            warnings.push(format!(
                "StatusPage {ns}/{name}: slug {:?} is already used by another page; skipped",
                page.slug
            ));
            continue;
        }
        published.push(*page);
    }
    // The days of the history strip with their texts, formatted once for all monitors.
    let today = now.date_naive();
    let days: Vec<DayText> = (0..HISTORY_DAYS)
        .rev()
        .map(|back| {
            let date = today - Duration::days(back);
            (
                date,
                date.format("%b %-d, %Y").to_string(),
                date.format("%Y-%m-%d").to_string(),
            )
        })
        .collect();
    // Pages are independent: computed on all cores.
    let (summaries, charts) = (&cache.summaries, &cache.charts);
    let mut views = crate::par::par_map(&published, |page| {
        let mut view = page_view(
            page,
            (&monitors, history, summaries, charts),
            (&maintenance, &silences),
            now,
            &data_time,
            &days,
        );
        view.clean_text();
        view
    });
    views.sort_by(|a, b| a.slug.cmp(&b.slug));
    let mut kept = HashMap::new();
    let mut old_charts = std::mem::take(&mut cache.charts);
    let mut kept_charts = HashMap::new();
    for m in views.iter().flat_map(|p| p.monitors()) {
        if kept.contains_key(&m.key) {
            continue;
        }
        let summary = Summary {
            uptime: m.uptime.clone(),
            days: m.days.clone(),
        };
        kept.insert(m.key.clone(), summary);
        let states = monitors
            .get(&m.key)
            .map(|e| e.now.as_slice())
            .unwrap_or(&[]);
        let cached = match old_charts.remove(&m.key) {
            Some(c) if c.drawn_from(states, now) => c,
            _ => CachedChart {
                now,
                recent: states.iter().map(|(_, n)| n.recent.clone()).collect(),
                // As cleaned: cleaning it again changes nothing.
                chart: m.chart.clone(),
            },
        };
        kept_charts.insert(m.key.clone(), cached);
    }
    cache.summaries = kept;
    cache.charts = kept_charts;
    Site {
        pages: views,
        data_time,
        warnings,
    }
}

/// Every monitor's history merged over agents (in agent order), and the warnings of each
/// agent's merge.
fn merge_history(
    inputs: &Inputs,
    retired: &[Option<DateTime<Utc>>],
) -> (HashMap<String, History>, Vec<Vec<String>>) {
    let mut monitors: HashMap<String, History> = HashMap::new();
    let mut warnings = Vec::new();
    for (agent, retired) in inputs.agents.iter().zip(retired) {
        let mut agent_warnings = Vec::new();
        for (day, h) in &agent.hourly {
            for (k, hours) in &h.monitors {
                let e = monitors.entry(k.clone()).or_default();
                for (hour, r) in hours {
                    e.hourly.entry((*day, *hour)).or_default().merge(r);
                }
            }
        }
        for d in agent.daily.values() {
            let Some((y, m)) = parse_month(&d.month) else {
                agent_warnings.push(format!(
                    "agent {}: daily rollups with a malformed month {:?} ignored",
                    agent.id, d.month
                ));
                continue;
            };
            for (k, days) in &d.monitors {
                let e = monitors.entry(k.clone()).or_default();
                for (dom, r) in days {
                    if let Some(date) = NaiveDate::from_ymd_opt(y, m, u32::from(*dom)) {
                        e.daily.entry(date).or_default().merge(r);
                    }
                }
            }
        }
        for month in agent.incidents.values() {
            for i in &month.incidents {
                let i = match retired {
                    Some(last) if i.ended_at.is_none() => Incident {
                        ended_at: Some((*last).max(i.started_at)),
                        ..i.clone()
                    },
                    _ => i.clone(),
                };
                monitors
                    .entry(monitor_key(&i.namespace, &i.name))
                    .or_default()
                    .incidents
                    .push((agent.id.clone(), i));
            }
        }
        warnings.push(agent_warnings);
    }
    (monitors, warnings)
}

/// `YYYY-MM` as (year, month).
fn parse_month(s: &str) -> Option<(i32, u32)> {
    let (y, m) = s.split_once('-')?;
    let (y, m) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then_some((y, m))
}

/// Maintenance windows and silences by (namespace, name).
type Notices<'a> = (
    &'a BTreeMap<(String, String), &'a PublicMaintenance>,
    &'a BTreeMap<(String, String), &'a PublicSilence>,
);

/// What page views are made of: this build's merged states and facts, the merged
/// histories, and the summaries of the last build at this hour.
type Parts<'a, 'b> = (
    &'a BTreeMap<String, Merged<'b>>,
    &'a HashMap<String, History>,
    &'a HashMap<String, Summary>,
    &'a HashMap<String, CachedChart>,
);

fn page_view(
    page: &PublicPage,
    (monitors, history, summaries, charts): Parts<'_, '_>,
    (maintenance, silences): Notices<'_>,
    now: DateTime<Utc>,
    data_time: &str,
    days: &[DayText],
) -> PageView {
    let empty = Merged::default();
    let no_history = History::default();
    let mut agents_seen = BTreeSet::new();
    for g in &page.groups {
        for m in &g.monitors {
            if let Some(e) = monitors.get(&monitor_key(&m.namespace, &m.name)) {
                agents_seen.extend(e.now.iter().map(|(a, _)| *a));
            }
        }
    }
    let multi_location = agents_seen.len() > 1;

    let mut groups = Vec::new();
    let mut active_incidents = Vec::new();
    let mut past_incidents = Vec::new();
    let history_start = now - Duration::days(HISTORY_DAYS);
    for g in &page.groups {
        let mut views = Vec::new();
        for m in &g.monitors {
            let key = monitor_key(&m.namespace, &m.name);
            let merged = monitors.get(&key).unwrap_or(&empty);
            let past = history.get(&key).unwrap_or(&no_history);
            let display = m.display_name.clone().unwrap_or_else(|| m.name.clone());
            for (agent, inc) in &past.incidents {
                let view = incident_view(agent, inc, &key, &display, multi_location);
                if inc.ended_at.is_none() {
                    active_incidents.push((inc.started_at, view));
                } else if inc.ended_at.is_some_and(|e| e >= history_start) {
                    past_incidents.push((inc.started_at, view));
                }
            }
            let summary = match summaries.get(&key) {
                Some(s) => s.clone(),
                None => summary(past, now, days),
            };
            let chart = match charts.get(&key) {
                Some(c) if c.drawn_from(&merged.now, now) => c.chart.clone(),
                _ => chart(&merged.now, now),
            };
            views.push(monitor_view(&key, m, display, merged, (summary, chart)));
        }
        groups.push(GroupView {
            name: g.name.clone(),
            description: g.description.clone(),
            monitors: views,
        });
    }
    active_incidents.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    past_incidents.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));

    let page_monitors: BTreeSet<String> = page
        .groups
        .iter()
        .flat_map(|g| {
            g.monitors
                .iter()
                .map(|m| monitor_key(&m.namespace, &m.name))
        })
        .collect();
    let mut notices = Vec::new();
    for mw in maintenance.values() {
        if !mw.monitors.is_empty() && !mw.monitors.iter().any(|m| page_monitors.contains(m)) {
            continue;
        }
        let length = Duration::minutes(mw.duration_minutes.max(0));
        if let Some(start) = mw.active_since {
            notices.push(MaintenanceView {
                name: mw.name.clone(),
                description: mw.description.clone(),
                active: true,
                starts_at: Some(rfc3339(start)),
                ends_at: Some(rfc3339(start + length)),
            });
        } else if let Some(start) = mw.next_start.filter(|s| *s <= now + Duration::days(7)) {
            notices.push(MaintenanceView {
                name: mw.name.clone(),
                description: mw.description.clone(),
                active: false,
                starts_at: Some(rfc3339(start)),
                ends_at: Some(rfc3339(start + length)),
            });
        }
    }

    let silenced: Vec<SilenceView> = silences
        .values()
        .filter(|s| s.monitors.iter().any(|m| page_monitors.contains(m)))
        .filter(|s| s.ends_at > now && s.starts_at <= now + Duration::days(7))
        .map(|s| SilenceView {
            name: s.name.clone(),
            reason: s.reason.clone(),
            active: s.starts_at <= now,
            starts_at: rfc3339(s.starts_at),
            ends_at: rfc3339(s.ends_at),
        })
        .collect();

    let overall = overall(groups.iter().flat_map(|g| g.monitors.iter()));
    let branding = page.branding.clone().unwrap_or_default();
    PageView {
        slug: page.slug.clone(),
        title: page.title.clone(),
        description: page.description.clone(),
        namespace: page.namespace.clone(),
        name: page.name.clone(),
        overall,
        overall_text: overall_text(overall),
        branding: BrandingView {
            logo: branding.logo_url.clone(),
            favicon: branding.favicon_url.clone(),
            accent: branding
                .accent()
                .filter(|c| valid_color(c))
                .unwrap_or(DEFAULT_ACCENT)
                .to_string(),
            dark_mode: branding
                .theme
                .as_ref()
                .and_then(|t| t.dark_mode)
                .unwrap_or(true),
        },
        groups,
        active_incidents: active_incidents.into_iter().map(|(_, v)| v).collect(),
        past_incidents: past_incidents.into_iter().map(|(_, v)| v).collect(),
        maintenance: notices,
        silences: silenced,
        badges: page.badges.map(|b| match b {
            BadgeScope::All => "all",
            BadgeScope::Page => "page",
        }),
        data_time: data_time.to_string(),
        history_days: HISTORY_DAYS,
        multi_location,
        hosts: page.hosts.clone(),
    }
}

/// A monitor's uptime windows and day strip from its merged history, measured at `now`.
fn summary(history: &History, now: DateTime<Utc>, days: &[DayText]) -> Summary {
    let today = now.date_naive();

    // 24 hours: the current hour and the 23 before it.
    let mut d1 = Rollup::default();
    for back in 0..24 {
        let t = now - Duration::hours(back);
        if let Some(r) = history
            .hourly
            .get(&(t.date_naive(), u8::try_from(t.hour()).unwrap_or(0)))
        {
            d1.merge(r);
        }
    }
    let sum_days = |n: i64| {
        let mut r = Rollup::default();
        for back in 0..n {
            if let Some(x) = history.daily.get(&(today - Duration::days(back))) {
                r.merge(x);
            }
        }
        r.uptime_percent()
    };
    let uptime = UptimeView {
        d1: d1.uptime_percent().or_else(|| sum_days(1)),
        d7: sum_days(7),
        d30: sum_days(30),
        d90: sum_days(HISTORY_DAYS),
    };

    let mut incidents_by_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
    for (_, i) in &history.incidents {
        *incidents_by_day
            .entry(i.started_at.date_naive())
            .or_default() += 1;
    }
    let days = days
        .iter()
        .map(|(date, long, iso)| {
            let date = *date;
            let rollup = history.daily.get(&date);
            let uptime = rollup.and_then(Rollup::uptime_percent);
            let incidents = incidents_by_day.get(&date).copied().unwrap_or(0);
            let level = match (uptime, rollup) {
                (Some(u), _) => uptime_level(u),
                (None, Some(r)) if r.maintenance > 0 => "maintenance",
                _ => "none",
            };
            let mut label = format!("{long}: ");
            label.push_str(&match (uptime, level) {
                (Some(u), _) => format!("{} uptime", percent_text(u)),
                (None, "maintenance") => "maintenance".to_string(),
                _ => "no data".to_string(),
            });
            match incidents {
                0 => {}
                1 => label.push_str(", 1 incident"),
                n => label.push_str(&format!(", {n} incidents")),
            }
            DayView {
                date: iso.clone(),
                uptime: uptime.map(round2),
                level,
                incidents,
                label,
            }
        })
        .collect();

    Summary {
        uptime: UptimeView {
            d1: uptime.d1.map(round2),
            d7: uptime.d7.map(round2),
            d30: uptime.d30.map(round2),
            d90: uptime.d90.map(round2),
        },
        days: Shared::new(days),
    }
}

fn monitor_view(
    key: &str,
    m: &kubekuma_crds::objects::PublicPageMonitor,
    display: String,
    merged: &Merged<'_>,
    (Summary { uptime, days }, chart): (Summary, ChartView),
) -> MonitorView {
    // The worst state over agents; maintenance when any agent says so and none is down.
    let worst = merged
        .now
        .iter()
        .map(|(_, n)| n)
        .max_by_key(|n| severity(n.state));
    let maintenance = merged.now.iter().any(|(_, n)| n.maintenance);
    let state = match worst {
        None => "pending",
        Some(n) if maintenance && n.state != MonitorState::Down => "maintenance",
        Some(n) => n.state.as_str(),
    };
    let locations = if merged.now.len() > 1 {
        merged
            .now
            .iter()
            .map(|(a, n)| LocationView {
                agent: (*a).to_string(),
                state: if n.maintenance && n.state != MonitorState::Down {
                    "maintenance"
                } else {
                    n.state.as_str()
                },
            })
            .collect()
    } else {
        Vec::new()
    };

    MonitorView {
        key: key.to_string(),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        display_name: display,
        description: merged.facts.and_then(|f| f.description.clone()),
        type_: merged.facts.map(|f| f.type_),
        state,
        state_text: state_text(state),
        since: worst.and_then(|n| n.since).map(rfc3339),
        checked_at: worst.and_then(|n| n.checked_at).map(rfc3339),
        latency_ms: worst.and_then(|n| n.latency_ms).map(|l| l.round() as i64),
        reason_text: worst
            .filter(|n| n.state == MonitorState::Down)
            .and_then(|n| n.reason)
            .map(reason_text),
        cert_days_left: merged
            .now
            .iter()
            .filter_map(|(_, n)| n.cert_days_left)
            .min(),
        uptime,
        days,
        chart,
        locations,
    }
}

/// The response-time line of the last 24 hours; points of several agents at the same
/// time are averaged; gaps of more than 20 minutes break the line.
fn chart(now_states: &[(&str, &MonitorNow)], now: DateTime<Utc>) -> ChartView {
    let start = now - Duration::hours(24);
    let mut buckets: BTreeMap<DateTime<Utc>, (f64, u32)> = BTreeMap::new();
    for (_, n) in now_states {
        for LatencyPoint { at, ms } in &n.recent {
            if *at >= start && *at <= now && ms.is_finite() && *ms >= 0.0 {
                let e = buckets.entry(*at).or_default();
                e.0 += ms;
                e.1 += 1;
            }
        }
    }
    let points: Vec<(DateTime<Utc>, f64)> = buckets
        .into_iter()
        .map(|(at, (sum, n))| (at, sum / f64::from(n)))
        .collect();
    let mut view = ChartView {
        width: CHART_WIDTH,
        height: CHART_HEIGHT,
        points: points.len(),
        ..Default::default()
    };
    if points.is_empty() {
        view.label = "Response time over the last 24 hours: no data".into();
        return view;
    }
    let min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let avg = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
    let scale = nice_ceiling(max);
    // Runs of points no more than 20 minutes apart are joined by lines; a gap starts a
    // new run. A run of one point gets a 1-unit stroke (5 minutes), or it would not show.
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut prev: Option<DateTime<Utc>> = None;
    for (at, ms) in &points {
        let x = (*at - start).num_seconds() as f64 / 86_400.0 * CHART_WIDTH;
        let y = CHART_HEIGHT - (ms / scale as f64) * (CHART_HEIGHT - 2.0) - 1.0;
        match (prev, runs.last_mut()) {
            (Some(p), Some(run)) if (*at - p) <= Duration::minutes(20) => run.push((x, y)),
            _ => runs.push(vec![(x, y)]),
        }
        prev = Some(*at);
    }
    let mut d = String::new();
    for run in &runs {
        for (i, (x, y)) in run.iter().enumerate() {
            if !d.is_empty() {
                d.push(' ');
            }
            let cmd = if i == 0 { 'M' } else { 'L' };
            d.push_str(&format!("{cmd}{x:.1} {y:.1}"));
        }
        if let [(x, _)] = run.as_slice() {
            d.push_str(if x + 1.0 <= CHART_WIDTH {
                " h1"
            } else {
                " h-1"
            });
        }
    }
    view.path = d;
    view.min_ms = Some(min.round() as i64);
    view.avg_ms = Some(avg.round() as i64);
    view.max_ms = Some(max.round() as i64);
    view.scale_ms = scale;
    view.label = format!(
        "Response time over the last 24 hours: average {} ms, fastest {} ms, slowest {} ms",
        avg.round(),
        min.round(),
        max.round()
    );
    view
}

/// The smallest of 1, 2, 5 × 10ⁿ at or above `v` (at least 10 ms).
fn nice_ceiling(v: f64) -> i64 {
    let mut step = 10i64;
    loop {
        for m in [1, 2, 5] {
            if (step * m) as f64 >= v {
                return step * m;
            }
        }
        step *= 10;
        if step > 1_000_000_000 {
            return step;
        }
    }
}

fn incident_view(
    agent: &str,
    inc: &Incident,
    key: &str,
    display: &str,
    multi_location: bool,
) -> IncidentView {
    let title = match inc.ended_at {
        None => format!("{display} is down"),
        Some(_) => format!("{display} was down"),
    };
    IncidentView {
        id: format!("{agent}-{}", inc.id),
        monitor: key.to_string(),
        monitor_name: display.to_string(),
        title,
        started_at: rfc3339(inc.started_at),
        ended_at: inc.ended_at.map(rfc3339),
        duration_text: inc
            .ended_at
            .map(|e| duration_text((e - inc.started_at).num_seconds())),
        reason_text: inc.reason.map(reason_text),
        updates: inc
            .updates
            .iter()
            .map(|u| UpdateView {
                at: rfc3339(u.at),
                message: u.message.clone(),
            })
            .collect(),
        active: inc.ended_at.is_none(),
        location: multi_location.then(|| agent.to_string()),
    }
}

/// The page's overall status from its monitors' states (the rule is [`OverallStatus::of`]).
pub fn overall<'a>(monitors: impl Iterator<Item = &'a MonitorView>) -> OverallStatus {
    OverallStatus::of(monitors.filter_map(|m| match m.state {
        "up" => Some(Shown::State(MonitorState::Up)),
        "down" => Some(Shown::State(MonitorState::Down)),
        "flapping" => Some(Shown::State(MonitorState::Flapping)),
        "maintenance" => Some(Shown::Maintenance),
        _ => None,
    }))
}

/// The banner's sentence.
pub fn overall_text(o: OverallStatus) -> &'static str {
    match o {
        OverallStatus::Operational => "All systems operational",
        OverallStatus::Degraded => "Degraded performance",
        OverallStatus::PartialOutage => "Partial outage",
        OverallStatus::MajorOutage => "Major outage",
        OverallStatus::Maintenance => "Under maintenance",
    }
}

/// The name of an overall status as in `status.json`.
pub fn overall_name(o: OverallStatus) -> &'static str {
    match o {
        OverallStatus::Operational => "operational",
        OverallStatus::Degraded => "degraded",
        OverallStatus::PartialOutage => "partialOutage",
        OverallStatus::MajorOutage => "majorOutage",
        OverallStatus::Maintenance => "maintenance",
    }
}

fn severity(s: MonitorState) -> u8 {
    match s {
        MonitorState::Paused => 0,
        MonitorState::Up => 1,
        MonitorState::Pending => 2,
        MonitorState::Flapping => 3,
        MonitorState::Down => 4,
    }
}

fn state_text(state: &str) -> &'static str {
    match state {
        "up" => "Operational",
        "down" => "Down",
        "flapping" => "Unstable",
        "paused" => "Paused",
        "maintenance" => "Maintenance",
        _ => "No data yet",
    }
}

/// A failure reason in words fit for a public page.
pub fn reason_text(r: FailureReason) -> &'static str {
    match r {
        FailureReason::Dns => "name did not resolve",
        FailureReason::DnsServfail => "DNS server failure",
        FailureReason::Connect => "connection failed",
        FailureReason::Tls => "TLS error",
        FailureReason::Timeout => "timed out",
        FailureReason::Status => "unexpected response status",
        FailureReason::Assertion => "response did not meet expectations",
        FailureReason::Body => "unexpected response content",
        FailureReason::Protocol => "protocol error",
        FailureReason::Missed => "heartbeat missed",
        FailureReason::Unhealthy => "reported unhealthy",
        FailureReason::Config => "check misconfigured",
    }
}

/// The level of a day's bar.
pub fn uptime_level(u: f64) -> &'static str {
    if u >= 99.9 {
        "ok"
    } else if u >= 99.0 {
        "minor"
    } else if u >= 95.0 {
        "major"
    } else {
        "down"
    }
}

/// `99.95%`, `100%`, `97.3%`: two decimals at most, no trailing zeros.
pub fn percent_text(u: f64) -> String {
    let s = format!("{:.2}", round2(u));
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Rounded to two decimals, never up to 100 from below (99.996 stays 99.99).
pub fn round2(u: f64) -> f64 {
    let r = (u * 100.0).round() / 100.0;
    if r >= 100.0 && u < 100.0 { 99.99 } else { r }
}

/// `3h 12m`, `45s`, `2d 4h`.
pub fn duration_text(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// RFC 3339 with seconds, `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `namespace/name`.
pub fn monitor_key(ns: &str, name: &str) -> String {
    kubekuma_crds::objects::monitor_key(ns, name)
}

/// `#rgb` or `#rrggbb`.
pub fn valid_color(c: &str) -> bool {
    let Some(hex) = c.strip_prefix('#') else {
        return false;
    };
    (hex.len() == 3 || hex.len() == 6) && hex.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_read_naturally() {
        assert_eq!(percent_text(100.0), "100%");
        assert_eq!(percent_text(99.95), "99.95%");
        assert_eq!(percent_text(97.3), "97.3%");
        assert_eq!(percent_text(99.999), "99.99%");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(45), "45s");
        assert_eq!(duration_text(3 * 3600 + 12 * 60), "3h 12m");
        assert_eq!(duration_text(2 * 86_400 + 4 * 3600 + 5), "2d 4h");
    }

    #[test]
    fn chart_joins_close_points_and_shows_lone_ones() {
        let now: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
        let point = |minutes_ago: i64, ms: f64| LatencyPoint {
            at: now - Duration::minutes(minutes_ago),
            ms,
        };
        let state = MonitorNow {
            state: MonitorState::Up,
            since: None,
            checked_at: None,
            latency_ms: None,
            reason: None,
            cert_days_left: None,
            maintenance: false,
            // A lone point 12 hours ago, a gap, then two points 10 minutes apart, and a
            // lone point in the last bucket (drawn leftwards, inside the chart).
            recent: vec![
                point(720, 20.0),
                point(120, 10.0),
                point(110, 10.0),
                point(0, 10.0),
            ],
        };
        let view = chart(&[("a", &state)], now);
        assert_eq!(view.points, 4);
        assert_eq!(
            view.path, "M144.0 1.0 h1 M264.0 24.0 L266.0 24.0 M288.0 24.0 h-1",
            "{view:?}"
        );
    }

    #[test]
    fn chart_scale_is_round() {
        assert_eq!(nice_ceiling(3.0), 10);
        assert_eq!(nice_ceiling(11.0), 20);
        assert_eq!(nice_ceiling(180.0), 200);
        assert_eq!(nice_ceiling(201.0), 500);
    }

    #[test]
    fn colours_are_checked() {
        assert!(valid_color("#3B82F6"));
        assert!(valid_color("#fff"));
        assert!(!valid_color("red"));
        assert!(!valid_color("#12345g"));
        assert!(!valid_color("#fff;background:url(x)"));
    }
}
