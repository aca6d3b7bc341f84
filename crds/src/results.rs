//! Check results, heartbeats and incidents: what checkers produce and what the agent
//! stores and ships.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::monitor::MonitorState;

/// Why a check failed. Every failure carries one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum FailureReason {
    /// The host name did not resolve (or DNS answered NXDOMAIN).
    Dns,
    /// DNS answered SERVFAIL or another server error.
    DnsServfail,
    /// The connection was refused or reset, or the network is unreachable.
    Connect,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// No answer within the timeout.
    Timeout,
    /// Unexpected HTTP status code.
    Status,
    /// A success criterion was not met (latency, content type, expected value).
    Assertion,
    /// The response body could not be read or did not match.
    Body,
    /// The peer spoke the protocol wrongly (malformed reply).
    Protocol,
    /// No push arrived in time.
    Missed,
    /// The monitored resource reports itself unhealthy (Kubernetes, Docker).
    Unhealthy,
    /// The check could not be configured (an unresolvable secret reference, …).
    Config,
}

impl FailureReason {
    /// The reason's name as stored, shown and used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Dns => "dns",
            FailureReason::DnsServfail => "dnsServfail",
            FailureReason::Connect => "connect",
            FailureReason::Tls => "tls",
            FailureReason::Timeout => "timeout",
            FailureReason::Status => "status",
            FailureReason::Assertion => "assertion",
            FailureReason::Body => "body",
            FailureReason::Protocol => "protocol",
            FailureReason::Missed => "missed",
            FailureReason::Unhealthy => "unhealthy",
            FailureReason::Config => "config",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The leaf certificate of a TLS peer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    /// `notAfter` of the leaf certificate.
    pub expires_at: DateTime<Utc>,
    /// Whole days from the check to expiry (negative when expired).
    pub days_left: i64,
}

/// The result of one attempt of a check. A down target is a result, not an error.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckOutcome {
    /// Whether every success criterion held.
    pub up: bool,
    /// Time the attempt took, in milliseconds.
    pub latency_ms: f64,
    /// Why it failed (always set when `up` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// Human-readable details, free of secrets and of credentials in URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// TLS certificate of the peer, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<CertInfo>,
    /// Type-specific facts (status code, resolved addresses, packet loss, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl CheckOutcome {
    /// A successful attempt.
    pub fn up(latency_ms: f64) -> Self {
        CheckOutcome {
            up: true,
            latency_ms,
            reason: None,
            message: None,
            cert: None,
            metadata: BTreeMap::new(),
        }
    }

    /// A failed attempt with its reason and message.
    pub fn down(latency_ms: f64, reason: FailureReason, message: impl Into<String>) -> Self {
        CheckOutcome {
            up: false,
            latency_ms,
            reason: Some(reason),
            message: Some(message.into()),
            cert: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Add a metadata entry.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key.to_string(), value.into());
        self
    }
}

/// One stored check result of a monitor (after retries and the state machine).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// Monitor namespace.
    pub namespace: String,
    /// Monitor name.
    pub name: String,
    /// State after this result.
    pub state: MonitorState,
    /// Latency of the last attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// Human-readable details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the check ran.
    pub checked_at: DateTime<Utc>,
    /// Attempts used, retries included.
    pub attempts: u32,
}

/// A public update on an incident (shown on status pages and in feeds).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IncidentUpdate {
    /// When it was posted.
    pub at: DateTime<Utc>,
    /// The text.
    pub message: String,
}

/// A period during which a monitor was down.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// Agent-local ID.
    pub id: i64,
    /// Monitor namespace.
    pub namespace: String,
    /// Monitor name.
    pub name: String,
    /// When the monitor went down.
    pub started_at: DateTime<Utc>,
    /// When it came back; open while absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Length in seconds, once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// Reason of the failure that opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// Notifications were suppressed (silence, maintenance window).
    #[serde(default)]
    pub suppressed: bool,
    /// Why they were suppressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress_reason: Option<String>,
    /// Acknowledged by an operator.
    #[serde(default)]
    pub acknowledged: bool,
    /// Public updates, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<IncidentUpdate>,
}
