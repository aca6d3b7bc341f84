//! What a notification is about: the spec's AlertEvent (a monitor went down, came up,
//! started flapping, still is down, or its certificate expires) and its kind. Templates
//! render it; policies route it; webhooks send it as JSON.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use kubekuma_crds::{Monitor, MonitorState};
use serde::{Deserialize, Serialize};

/// What happened to the monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum EventKind {
    /// It went down.
    Down,
    /// It came back up.
    Up,
    /// It started flapping.
    Flapping,
    /// Its certificate expires in `days_left` days.
    CertExpiring {
        /// Whole days until expiry.
        days_left: i64,
    },
    /// It is still down (resend interval).
    Reminder,
}

impl EventKind {
    /// The name used in templates, `notifyOn` and the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Down => "down",
            EventKind::Up => "up",
            EventKind::Flapping => "flapping",
            EventKind::CertExpiring { .. } => "certExpiring",
            EventKind::Reminder => "reminder",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spec's AlertEvent plus its `kind` (and `daysLeft` for certificates); serializes
/// to the spec's camelCase JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertEvent {
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// `namespace/name`.
    pub monitor_id: String,
    /// The monitor's namespace.
    pub monitor_namespace: String,
    /// The monitor's name.
    pub monitor_name: String,
    /// State before the event.
    pub previous_state: MonitorState,
    /// State after the event.
    pub current_state: MonitorState,
    /// Failure reason (`timeout`, `dns`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The check's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Latency of the check that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Whether the state changed (down, up, flapping) rather than a reminder or notice.
    pub is_state_change: bool,
    /// The monitor's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The monitor's `spec.annotations`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The locations that see the change, when several locations run the monitor (the
    /// consensus: those seeing it down, or up again); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
}

impl AlertEvent {
    /// An event about `monitor` (`namespace/name`; labels and annotations copied); reason,
    /// message and latency are left for the caller.
    pub fn new(
        kind: EventKind,
        namespace: &str,
        name: &str,
        monitor: &Monitor,
        previous_state: MonitorState,
        current_state: MonitorState,
        timestamp: DateTime<Utc>,
    ) -> Self {
        AlertEvent {
            kind,
            monitor_id: format!("{namespace}/{name}"),
            monitor_namespace: namespace.to_string(),
            monitor_name: name.to_string(),
            previous_state,
            current_state,
            reason: None,
            message: None,
            latency_ms: None,
            timestamp,
            is_state_change: matches!(kind, EventKind::Down | EventKind::Up | EventKind::Flapping),
            labels: monitor.metadata.labels.clone().unwrap_or_default(),
            annotations: monitor.spec.annotations.clone(),
            locations: Vec::new(),
        }
    }
}
