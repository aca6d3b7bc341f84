//! The live view: the current, in-memory state of every running monitor (its state
//! machine and last result). Results write it; the exported state, the admin API, the
//! status writer and the metrics read it. A push monitor's generated [`Token`] is kept
//! here too, for its status.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use kubekuma_crds::results::{CertInfo, FailureReason};

use super::Tracker;
use crate::catalog::ObjKey;

/// The current, in-memory view of every monitor (published in `state.json`).
#[derive(Debug, Default)]
pub struct Live {
    /// By monitor.
    pub monitors: HashMap<ObjKey, LiveMonitor>,
}

/// The current view of one monitor.
#[derive(Clone, Debug, Default)]
pub struct LiveMonitor {
    /// State machine.
    pub tracker: Tracker,
    /// Last check.
    pub checked_at: Option<DateTime<Utc>>,
    /// Latency of the last check.
    pub latency_ms: Option<f64>,
    /// Last failure reason.
    pub reason: Option<FailureReason>,
    /// Message of the last check (free of secrets).
    pub message: Option<String>,
    /// Attempts of the last check, retries included.
    pub attempts: u32,
    /// Certificate of the last check.
    pub cert: Option<CertInfo>,
    /// The generated token of a push monitor without `spec.target.push.token` (for its
    /// status; a credential: never exported or logged).
    pub push_token: Option<Token>,
    /// The certificate's days left when a `certExpiring` event last went out.
    pub cert_days_notified: Option<i64>,
    /// Incident writes the store could not take yet (the database unreachable or
    /// unwritable), oldest first, at most [`MAX_HELD_INCIDENTS`]: written in order once
    /// it takes writes again.
    pub held_incidents: VecDeque<HeldIncident>,
    /// The saved monitor state is behind [`Self::tracker`] (a save failed or was held
    /// back): it is saved at the next result the store can take.
    pub state_unsaved: bool,
}

/// Most incident writes held per monitor while the store cannot take them (a flapping
/// monitor during a long outage); beyond it the oldest is dropped, with an error.
pub const MAX_HELD_INCIDENTS: usize = 64;

/// An incident the store has not recorded yet: to open (`id: None`) and perhaps close
/// already, or an open one (`id`) to close.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldIncident {
    /// The incident's ID once opened in the store.
    pub id: Option<i64>,
    /// When the monitor went down.
    pub opened_at: DateTime<Utc>,
    /// Why it went down.
    pub reason: Option<FailureReason>,
    /// When it came up again, if it has.
    pub closed_at: Option<DateTime<Utc>>,
}

/// A push token: a credential, so it never prints ([`Token::expose`] reads it).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub(crate) String);

impl Token {
    /// A new random token: 32 bytes from the thread's CSPRNG, base64url without padding
    /// (43 characters of letters, digits, `-` and `_`, as a spec token may be).
    pub fn generate() -> Token {
        use base64::Engine as _;
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Token(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The token itself, for the status and the push URL.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Token {
    fn from(s: String) -> Self {
        Token(s)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}
