//! The plan of a `push` monitor. A push monitor is not probed: it waits for pushes to
//! `/api/v1/push/<token>`, which only a running agent receives, and [`crate::push`]
//! evaluates its deadline from this plan (`kubekuma check` lists it as skipped).

use std::time::Duration;

use chrono::TimeDelta;
use kubekuma_crds::monitor::MonitorSpec;

use crate::findings::Sink;
use crate::rules::range;

/// Longest time between two evaluations of a push monitor's deadline.
const MAX_EVALUATION_INTERVAL: Duration = Duration::from_secs(60);

/// A `push` monitor's token, interval and grace, checked.
#[derive(Clone, PartialEq)]
pub struct PushPlan {
    /// The spec's token (8-128 letters, digits, `-` and `_`); `None`: one is generated.
    token: Option<String>,
    /// Time allowed between pushes: `target.push.intervalSeconds`, else the schedule's
    /// interval, else 60 s.
    interval: TimeDelta,
    /// Extra time after the interval before a push counts as missed.
    grace: TimeDelta,
}

impl std::fmt::Debug for PushPlan {
    /// The token is a credential: it never prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushPlan")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("interval", &self.interval)
            .field("grace", &self.grace)
            .finish()
    }
}

impl PushPlan {
    /// The token the spec sets, if any.
    pub fn spec_token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Interval and grace: `target.push.intervalSeconds` (default: the schedule's interval,
    /// else 60 s) and `target.push.graceSeconds` (default 0).
    pub fn timing(&self) -> (TimeDelta, TimeDelta) {
        (self.interval, self.grace)
    }

    /// How often the scheduler evaluates the deadline: the interval, at most a minute, so
    /// a missed deadline is noticed within a minute.
    pub fn evaluation_interval(&self) -> Duration {
        self.interval
            .to_std()
            .unwrap_or(MAX_EVALUATION_INTERVAL)
            .clamp(Duration::from_secs(1), MAX_EVALUATION_INTERVAL)
    }
}

/// The plan of a `push` monitor: `spec.target.push` checked.
pub(crate) fn plan(spec: &MonitorSpec, sink: &mut Sink<'_>) -> Option<PushPlan> {
    let p = spec.target.push.as_ref()?;
    if let Some(tok) = &p.token
        && (tok.len() < 8
            || tok.len() > 128
            || !tok
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        sink.error(
            "spec.target.push.token",
            format!(
                "must be 8-128 characters of letters, digits, '-' and '_', got {} characters",
                tok.chars().count()
            ),
        );
    }
    range(
        sink,
        "spec.target.push.intervalSeconds",
        p.interval_seconds,
        1,
        86_400 * 7,
    );
    range(
        sink,
        "spec.target.push.graceSeconds",
        p.grace_seconds,
        0,
        86_400,
    );
    let interval = p
        .interval_seconds
        .or_else(|| spec.schedule.as_ref().and_then(|s| s.interval_seconds))
        .unwrap_or(60)
        .max(1);
    let grace = p.grace_seconds.unwrap_or(0).max(0);
    Some(PushPlan {
        token: p.token.clone(),
        interval: TimeDelta::try_seconds(interval).unwrap_or(TimeDelta::MAX),
        grace: TimeDelta::try_seconds(grace).unwrap_or(TimeDelta::MAX),
    })
}
