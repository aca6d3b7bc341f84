//! The object-store layout: the data contract between agents (writers) and the builder
//! (reader). Everything here is public by construction — monitor targets, headers,
//! messages and secrets never enter these types.
//!
//! Layout version 1, under an optional prefix of the bucket URL:
//!
//! | key | type | written |
//! |---|---|---|
//! | `v1/agents/<agent>/catalog.json` | [`AgentCatalog`] | when the public catalog changes |
//! | `v1/agents/<agent>/state.json` | [`AgentState`] | every flush |
//! | `v1/agents/<agent>/results.json` | [`AgentResults`] | every flush (with `state.json`) |
//! | `v1/agents/<agent>/hourly/<YYYY-MM-DD>.json` | [`HourlyDay`] | every flush (the current day) |
//! | `v1/agents/<agent>/daily/<YYYY-MM>.json` | [`DailyMonth`] | every flush (the current month) |
//! | `v1/agents/<agent>/incidents/<YYYY-MM>.json` | [`IncidentMonth`] | when an incident of that month changes |
//!
//! A flush (periodic or urgent) writes at most six objects whatever the number of
//! monitors — `state.json` and `results.json` every time, the hourly and daily rollups
//! when they changed, the catalog and the month's incidents when they changed — so PUTs
//! per agent per day depend only on the flush interval and the urgent pacing. Objects are whole documents,
//! rewritten idempotently; several agents share a bucket under their own `<agent>`.
//! Within layout version 1 changes are additive: readers ignore unknown fields, and
//! `crds/tests/objects_compat.rs` keeps sample payloads that must still parse.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::monitor::{MonitorState, MonitorType};
use crate::results::{FailureReason, Incident};
use crate::status_page::{BadgeScope, Branding};

/// The layout version this crate reads and writes.
pub const LAYOUT: &str = "v1";

/// Object keys of layout version 1.
pub mod keys {
    use chrono::NaiveDate;

    /// Prefix under which every agent writes.
    pub fn agents() -> String {
        format!("{}/agents/", super::LAYOUT)
    }
    /// Prefix of one agent.
    pub fn agent(agent: &str) -> String {
        format!("{}/agents/{agent}/", super::LAYOUT)
    }
    /// The public catalog of one agent.
    pub fn catalog(agent: &str) -> String {
        format!("{}catalog.json", agent_prefix(agent))
    }
    /// Current state of every monitor of one agent.
    pub fn state(agent: &str) -> String {
        format!("{}state.json", agent_prefix(agent))
    }
    /// The latest result of every monitor of one agent, with its location.
    pub fn results(agent: &str) -> String {
        format!("{}results.json", agent_prefix(agent))
    }
    /// Hourly rollups of one UTC day.
    pub fn hourly(agent: &str, day: NaiveDate) -> String {
        format!(
            "{}hourly/{}.json",
            agent_prefix(agent),
            day.format("%Y-%m-%d")
        )
    }
    /// Daily rollups of one UTC month.
    pub fn daily(agent: &str, year: i32, month: u32) -> String {
        format!("{}daily/{year:04}-{month:02}.json", agent_prefix(agent))
    }
    /// Incidents that started in one UTC month.
    pub fn incidents(agent: &str, year: i32, month: u32) -> String {
        format!("{}incidents/{year:04}-{month:02}.json", agent_prefix(agent))
    }
    fn agent_prefix(id: &str) -> String {
        agent(id)
    }
}

/// `<namespace>/<name>`, the key of a monitor in every object.
pub fn monitor_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// What an agent publishes about its monitors and status pages.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentCatalog {
    /// Always [`LAYOUT`].
    pub layout: String,
    /// The writing agent.
    pub agent_id: String,
    /// The writing agent's location (`--location`); absent from agents before locations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// When this version was written.
    pub generated_at: DateTime<Utc>,
    /// Every status page (published or not; the builder renders published ones).
    #[serde(default)]
    pub pages: Vec<PublicPage>,
    /// Public facts of every monitor the agent runs.
    #[serde(default)]
    pub monitors: Vec<PublicMonitor>,
    /// Maintenance windows, with their next occurrence.
    #[serde(default)]
    pub maintenance: Vec<PublicMaintenance>,
    /// Silences in effect or to come (Silence resources and those created through the
    /// admin API): notifications held back, checks still running.
    #[serde(default)]
    pub silences: Vec<PublicSilence>,
}

/// A silence as shown publicly.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublicSilence {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Why (the silence's `reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// Monitors it covers, as `namespace/name`.
    #[serde(default)]
    pub monitors: Vec<String>,
}

/// Public facts of a monitor: never its target, headers or secrets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublicMonitor {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Monitor type.
    #[serde(rename = "type")]
    pub type_: MonitorType,
    /// Public description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Check interval, seconds.
    pub interval_seconds: i64,
}

/// A status page as the builder needs it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublicPage {
    /// Namespace of the StatusPage.
    pub namespace: String,
    /// Name of the StatusPage.
    pub name: String,
    /// URL slug.
    pub slug: String,
    /// Title.
    pub title: String,
    /// Whether it is rendered.
    pub published: bool,
    /// Introductory text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Logo, favicon, colours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branding: Option<Branding>,
    /// Groups in display order.
    #[serde(default)]
    pub groups: Vec<PublicGroup>,
    /// Badges enabled, and which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badges: Option<BadgeScope>,
    /// Host names the page is served on through an Ingress (`spec.exposure.mode:
    /// ingress`, published pages only, lowercased; a host another page holds is left
    /// out). Public: DNS names them. The builder publishes them for the site server
    /// ([`SiteHosts`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// The site's host names, as the builder publishes them beside its manifest
/// (`.kubekuma/hosts.json`) for `kubekuma serve`: a request whose `Host` is one of them
/// is answered with that page's files (`/` is the page).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SiteHosts {
    /// Host name (lowercase) → the slug of the page served on it.
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, String>,
}

/// A group of a page.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublicGroup {
    /// Heading.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Monitors in display order.
    #[serde(default)]
    pub monitors: Vec<PublicPageMonitor>,
}

/// A monitor as listed on a page.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublicPageMonitor {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Name shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A maintenance window as shown publicly.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PublicMaintenance {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Public text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Start of the occurrence in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_since: Option<DateTime<Utc>>,
    /// Start of the next occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start: Option<DateTime<Utc>>,
    /// Length of each occurrence, minutes.
    pub duration_minutes: i64,
    /// Monitors it covers, as `namespace/name`.
    #[serde(default)]
    pub monitors: Vec<String>,
}

/// Current state of every monitor of an agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// Always [`LAYOUT`].
    pub layout: String,
    /// The writing agent.
    pub agent_id: String,
    /// The writing agent's location (`--location`); absent from agents before locations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// When this version was written (the time of the data).
    pub generated_at: DateTime<Utc>,
    /// By `namespace/name`.
    #[serde(default)]
    pub monitors: BTreeMap<String, MonitorNow>,
}

/// The latest result of every monitor of one agent, seen from its location: the small
/// object the consensus reads (no latency series, no messages). Written with
/// `state.json` on every flush and urgent export.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentResults {
    /// Always [`LAYOUT`].
    pub layout: String,
    /// The writing agent.
    pub agent_id: String,
    /// The writing agent's location (`--location`).
    pub location: String,
    /// When this version was written (the time of the data).
    pub generated_at: DateTime<Utc>,
    /// By `namespace/name`.
    #[serde(default)]
    pub monitors: BTreeMap<String, LocationResult>,
}

/// One monitor's latest result at one location.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocationResult {
    /// State at this location.
    pub state: MonitorState,
    /// Since when it is in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<DateTime<Utc>>,
    /// Latency of the last check, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Classified reason of the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
}

impl AgentResults {
    /// The results of an agent at `location`: `state.json` without its series, messages
    /// and maintenance.
    pub fn of_state(state: &AgentState, location: &str) -> Self {
        AgentResults {
            layout: state.layout.clone(),
            agent_id: state.agent_id.clone(),
            location: location.to_string(),
            generated_at: state.generated_at,
            monitors: state
                .monitors
                .iter()
                .map(|(k, m)| {
                    let r = LocationResult {
                        state: m.state,
                        since: m.since,
                        checked_at: m.checked_at,
                        latency_ms: m.latency_ms,
                        reason: m.reason,
                    };
                    (k.clone(), r)
                })
                .collect(),
        }
    }
}

/// The state of one monitor now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitorNow {
    /// Current state.
    pub state: MonitorState,
    /// Since when it is in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<DateTime<Utc>>,
    /// Latency of the last check, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Classified reason of the last failure (no message: messages may name targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// Days until the TLS certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_days_left: Option<i64>,
    /// Inside an active maintenance window.
    #[serde(default)]
    pub maintenance: bool,
    /// Latency of recent checks: up to 144 points (10-minute averages over 24 hours).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<LatencyPoint>,
}

/// One point of a latency series.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencyPoint {
    /// Start of the bucket.
    pub at: DateTime<Utc>,
    /// Average latency, ms.
    pub ms: f64,
}

/// Counts by state and latency statistics over a period.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Rollup {
    /// Up results.
    pub up: u32,
    /// Down results.
    pub down: u32,
    /// Flapping results.
    #[serde(default)]
    pub flapping: u32,
    /// Pending results.
    #[serde(default)]
    pub pending: u32,
    /// Paused results.
    #[serde(default)]
    pub paused: u32,
    /// Results inside maintenance windows (not counted as down for uptime).
    #[serde(default)]
    pub maintenance: u32,
    /// Fastest latency, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_min: Option<f64>,
    /// Mean latency, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_avg: Option<f64>,
    /// 95th percentile latency, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95: Option<f64>,
    /// Slowest latency, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_max: Option<f64>,
}

impl Rollup {
    /// Uptime in percent over up and down results (flapping counts as up, pending,
    /// paused and maintenance do not count); `None` with no such result.
    pub fn uptime_percent(&self) -> Option<f64> {
        let good = f64::from(self.up + self.flapping);
        let total = good + f64::from(self.down);
        (total > 0.0).then(|| good * 100.0 / total)
    }

    /// Add another rollup's counts (latency percentiles are approximated by the max
    /// of the parts' p95, the mean is weighted by checks with latency).
    pub fn merge(&mut self, o: &Rollup) {
        let n_self = f64::from(self.up + self.flapping);
        let n_o = f64::from(o.up + o.flapping);
        self.latency_avg = match (self.latency_avg, o.latency_avg) {
            (Some(a), Some(b)) if n_self + n_o > 0.0 => {
                Some((a * n_self + b * n_o) / (n_self + n_o))
            }
            (a, b) => a.or(b),
        };
        self.latency_min = opt(self.latency_min, o.latency_min, f64::min);
        self.latency_max = opt(self.latency_max, o.latency_max, f64::max);
        self.latency_p95 = opt(self.latency_p95, o.latency_p95, f64::max);
        self.up += o.up;
        self.down += o.down;
        self.flapping += o.flapping;
        self.pending += o.pending;
        self.paused += o.paused;
        self.maintenance += o.maintenance;
    }
}

fn opt(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// Hourly rollups of one UTC day, for every monitor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HourlyDay {
    /// Always [`LAYOUT`].
    pub layout: String,
    /// The writing agent.
    pub agent_id: String,
    /// The day.
    pub day: NaiveDate,
    /// By `namespace/name`, then hour of day (0-23).
    #[serde(default)]
    pub monitors: BTreeMap<String, BTreeMap<u8, Rollup>>,
}

/// Daily rollups of one UTC month, for every monitor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DailyMonth {
    /// Always [`LAYOUT`].
    pub layout: String,
    /// The writing agent.
    pub agent_id: String,
    /// `YYYY-MM`.
    pub month: String,
    /// By `namespace/name`, then day of month (1-31).
    #[serde(default)]
    pub monitors: BTreeMap<String, BTreeMap<u8, Rollup>>,
}

/// Incidents that started in one UTC month.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncidentMonth {
    /// Always [`LAYOUT`].
    pub layout: String,
    /// The writing agent.
    pub agent_id: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Oldest first.
    #[serde(default)]
    pub incidents: Vec<Incident>,
}
