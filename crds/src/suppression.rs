//! `Silence` and `MaintenanceWindow`: when notifications are held back (checks still run).

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, MonitorSelector};

/// A one-off suppression of notifications for the selected monitors.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "monitoring.kubekuma.io",
    version = "v1",
    kind = "Silence",
    namespaced,
    status = "SilenceStatus",
    shortname = "ksil",
    category = "kubekuma",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Starts","type":"date","jsonPath":".spec.startsAt"}"#,
    printcolumn = r#"{"name":"Ends","type":"date","jsonPath":".spec.endsAt"}"#,
    printcolumn = r#"{"name":"Active","type":"boolean","jsonPath":".status.active"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".spec.reason"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SilenceSpec {
    /// Start (RFC 3339).
    pub starts_at: DateTime<Utc>,
    /// End (RFC 3339), after the start.
    pub ends_at: DateTime<Utc>,
    /// Why; recorded on suppressed incidents. At most 4096 characters; line breaks
    /// allowed, no other control, zero-width or bidirectional override characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who created it: at most 200 characters, no control, zero-width or bidirectional
    /// override characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Which monitors (`match` is accepted too). Empty: every monitor in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "match")]
    pub selector: Option<MonitorSelector>,
}

/// What the agent reports about a silence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SilenceStatus {
    /// The `metadata.generation` the agent last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Whether it is in effect now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// A recurring maintenance period: notifications suppressed, status pages say "maintenance".
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "monitoring.kubekuma.io",
    version = "v1",
    kind = "MaintenanceWindow",
    namespaced,
    status = "MaintenanceWindowStatus",
    shortname = "kmw",
    category = "kubekuma",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Minutes","type":"integer","jsonPath":".spec.durationMinutes"}"#,
    printcolumn = r#"{"name":"Next","type":"date","jsonPath":".status.nextOccurrenceAt"}"#,
    printcolumn = r#"{"name":"Active","type":"boolean","jsonPath":".status.active"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindowSpec {
    /// An RFC 5545 RRULE (optionally with `DTSTART;TZID=…`), or a five-field cron expression.
    pub schedule: String,
    /// Length of each occurrence in minutes.
    pub duration_minutes: i64,
    /// IANA time zone the schedule is read in (e.g. `Europe/Berlin`). Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Public text shown on status pages during the window: at most 4096 characters;
    /// line breaks allowed, no other control, zero-width or bidirectional override
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Which monitors (`match` is accepted too). Empty: every monitor in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "match")]
    pub selector: Option<MonitorSelector>,
}

/// What the agent reports about a maintenance window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindowStatus {
    /// The `metadata.generation` the agent last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Start of the next occurrence (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_occurrence_at: Option<String>,
    /// Whether an occurrence is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}
