//! Whether a monitor's notifications are held back now: an active Silence or an
//! occurrence of a MaintenanceWindow that selects it. Only notifications: checks run and
//! incidents open as usual; the caller marks them suppressed with the reason.
//!
//! - A silence is active from `startsAt` (inclusive) to `endsAt` (exclusive).
//! - A maintenance window occurrence starts at each start of its schedule (see
//!   [`WindowSchedule`]; RRULE local times are read in `timezone`) and lasts
//!   `durationMinutes` of elapsed time. A one-off window is an RRULE with a DTSTART and
//!   `COUNT=1`.
//! - Daylight saving: a start time that does not exist that day (02:30 when the clocks
//!   jump from 02:00 to 03:00) is read with the UTC offset before the jump, so the
//!   window starts at 03:30 summer time (the instant 02:30 winter time would be); a start
//!   that exists twice (02:30 when the clocks go back) is the first one, in summer time.
//!   This is RFC 5545's rule for DATE-TIME values, and what `rrule` does.
//! - With several active, a maintenance window is reported before a silence; within a
//!   kind, the first by namespace/name.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use kubekuma_crds::{MaintenanceWindow, MaintenanceWindowSpec, Monitor, Silence, SilenceSpec};

use crate::catalog::schedule_expr::WindowSchedule;
use crate::catalog::selector::MonitorMatcher;
use crate::catalog::{ObjKey, Snapshot};

/// What holds notifications back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuppressionKind {
    /// A Silence.
    Silence,
    /// A MaintenanceWindow.
    Maintenance,
}

impl SuppressionKind {
    /// `silence` or `maintenance`.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionKind::Silence => "silence",
            SuppressionKind::Maintenance => "maintenance",
        }
    }
}

/// An active suppression of a monitor's notifications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suppression {
    /// Silence or maintenance.
    pub kind: SuppressionKind,
    /// The Silence or MaintenanceWindow.
    pub name: ObjKey,
    /// Its `reason` / `description`, or a generic text.
    pub reason: String,
    /// Start of the silence or of the current window occurrence.
    pub since: DateTime<Utc>,
    /// When it ends.
    pub until: DateTime<Utc>,
}

impl fmt::Display for Suppression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind.as_str(), self.name, self.reason)
    }
}

/// The silences and maintenance windows of a snapshot, schedules parsed once.
#[derive(Clone, Debug, Default)]
pub struct Suppressor {
    silences: Vec<(ObjKey, SilenceSpec)>,
    windows: Vec<(ObjKey, MaintenanceWindowSpec, Option<WindowSchedule>)>,
}

impl Suppressor {
    /// From the given resources.
    pub fn new(
        silences: &BTreeMap<ObjKey, Silence>,
        windows: &BTreeMap<ObjKey, MaintenanceWindow>,
    ) -> Self {
        Suppressor {
            silences: silences
                .iter()
                .map(|(k, s)| (k.clone(), s.spec.clone()))
                .collect(),
            windows: windows
                .iter()
                .map(|(k, w)| (k.clone(), w.spec.clone(), schedule(&w.spec)))
                .collect(),
        }
    }

    /// Also honour `extra` silences (those created through the admin API).
    pub fn with_silences(mut self, extra: impl IntoIterator<Item = (ObjKey, Silence)>) -> Self {
        self.silences
            .extend(extra.into_iter().map(|(k, s)| (k, s.spec)));
        self
    }

    /// From a snapshot's silences and maintenance windows.
    pub fn from_snapshot(s: &Snapshot) -> Self {
        Suppressor::new(&s.silences, &s.maintenance_windows)
    }

    /// What suppresses notifications of monitor `key` at `now`, if anything.
    pub fn suppressed(
        &self,
        key: &ObjKey,
        monitor: &Monitor,
        now: DateTime<Utc>,
    ) -> Option<Suppression> {
        let windows = self.windows.iter().filter_map(|(wk, spec, sched)| {
            let (start, end) = occurrence(spec, sched.as_ref()?, now)?;
            selects(spec.selector.as_ref(), wk, key, monitor).then(|| Suppression {
                kind: SuppressionKind::Maintenance,
                name: wk.clone(),
                reason: spec
                    .description
                    .clone()
                    .unwrap_or_else(|| format!("maintenance window {wk}")),
                since: start,
                until: end,
            })
        });
        let silences = self.silences.iter().filter_map(|(sk, spec)| {
            let active = spec.starts_at <= now && now < spec.ends_at;
            (active && selects(spec.selector.as_ref(), sk, key, monitor)).then(|| Suppression {
                kind: SuppressionKind::Silence,
                name: sk.clone(),
                reason: spec
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("silenced by {sk}")),
                since: spec.starts_at,
                until: spec.ends_at,
            })
        });
        windows.chain(silences).next()
    }
}

fn selects(
    selector: Option<&kubekuma_crds::common::MonitorSelector>,
    own: &ObjKey,
    key: &ObjKey,
    monitor: &Monitor,
) -> bool {
    MonitorMatcher::new(selector, &own.namespace).matches(key, monitor)
}

/// The parsed schedule of a window (validation rejects ones that do not parse).
pub fn schedule(spec: &MaintenanceWindowSpec) -> Option<WindowSchedule> {
    let tz = match &spec.timezone {
        Some(name) => name.parse::<chrono_tz::Tz>().ok()?,
        None => chrono_tz::UTC,
    };
    WindowSchedule::parse(&spec.schedule, tz).ok()
}

/// The occurrence of the window in progress at `now`: `[start, end)`.
pub fn occurrence(
    spec: &MaintenanceWindowSpec,
    schedule: &WindowSchedule,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let duration = Duration::minutes(spec.duration_minutes.max(0));
    let start = schedule.active_start(now, duration)?;
    Some((start, start + duration))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::schedule_expr::utc;
    use pretty_assertions::assert_eq;

    fn monitor(ns: &str, name: &str, team: &str) -> (ObjKey, Monitor) {
        let m: Monitor = serde_yaml_ng::from_str(&format!(
            "{{apiVersion: monitoring.kubekuma.io/v1, kind: Monitor, metadata: {{name: {name}, namespace: {ns}, labels: {{team: {team}}}}}, spec: {{type: tcp, target: {{tcp: {{host: h, port: 1}}}}}}}}"
        ))
        .unwrap();
        (ObjKey::new(ns, name), m)
    }

    fn resource<T: serde::de::DeserializeOwned>(
        kind: &str,
        ns: &str,
        name: &str,
        spec: &str,
    ) -> (ObjKey, T) {
        let yaml = format!(
            "{{apiVersion: monitoring.kubekuma.io/v1, kind: {kind}, metadata: {{name: {name}, namespace: {ns}}}, spec: {spec}}}"
        );
        (
            ObjKey::new(ns, name),
            serde_yaml_ng::from_str(&yaml).unwrap(),
        )
    }

    #[test]
    fn silences_active_expired_and_not_matching() {
        let silences: BTreeMap<ObjKey, Silence> = [
            resource("Silence", "prod", "deploy", "{startsAt: '2026-05-01T10:00:00Z', endsAt: '2026-05-01T11:00:00Z', reason: rollout, selector: {matchLabels: {team: a}}}"),
            resource("Silence", "prod", "old", "{startsAt: '2026-04-01T10:00:00Z', endsAt: '2026-04-01T11:00:00Z'}"),
            resource("Silence", "dev", "all", "{startsAt: '2026-05-01T10:00:00Z', endsAt: '2026-05-01T12:00:00Z'}"),
        ]
        .into_iter()
        .collect();
        let s = Suppressor::new(&silences, &BTreeMap::new());
        let (ka, a) = monitor("prod", "api", "a");
        let (kb, b) = monitor("prod", "web", "b");
        let (kd, d) = monitor("dev", "api", "b");
        let got = s.suppressed(&ka, &a, utc(2026, 5, 1, 10, 30)).unwrap();
        assert_eq!(
            (
                got.kind,
                got.name.to_string(),
                got.reason.as_str(),
                got.until
            ),
            (
                SuppressionKind::Silence,
                "prod/deploy".into(),
                "rollout",
                utc(2026, 5, 1, 11, 0)
            )
        );
        // Not yet, ended (end exclusive), label does not match, expired one ignored.
        assert_eq!(s.suppressed(&ka, &a, utc(2026, 5, 1, 9, 59)), None);
        assert_eq!(s.suppressed(&ka, &a, utc(2026, 5, 1, 11, 0)), None);
        assert_eq!(s.suppressed(&kb, &b, utc(2026, 5, 1, 10, 30)), None);
        assert_eq!(
            s.suppressed(&kb, &b, utc(2026, 4, 1, 10, 30))
                .unwrap()
                .reason,
            "silenced by prod/old"
        );
        assert_eq!(s.suppressed(&kb, &b, utc(2026, 4, 1, 11, 30)), None);
        // No selector: its own namespace only.
        assert_eq!(
            s.suppressed(&kd, &d, utc(2026, 5, 1, 11, 30))
                .unwrap()
                .name
                .to_string(),
            "dev/all"
        );
        assert_eq!(s.suppressed(&kb, &b, utc(2026, 5, 1, 11, 30)), None);
    }

    #[test]
    fn maintenance_window_across_daylight_saving_changes() {
        let windows: BTreeMap<ObjKey, MaintenanceWindow> = [resource(
            "MaintenanceWindow",
            "prod",
            "nightly",
            "{schedule: 'FREQ=DAILY;BYHOUR=2;BYMINUTE=30', durationMinutes: 60, timezone: Europe/Berlin, description: backups}",
        )]
        .into_iter()
        .collect();
        let s = Suppressor::new(&BTreeMap::new(), &windows);
        let (k, m) = monitor("prod", "db", "a");
        let window = |y, mo, d, h, mi| {
            s.suppressed(&k, &m, utc(y, mo, d, h, mi))
                .map(|x| (x.since, x.until))
        };
        // (day, expected window in UTC): 02:30-03:30 local.
        let cases = [
            // CET (UTC+1).
            ((2026, 3, 28), (1, 30)),
            // 2026-03-29: 02:30 does not exist; read with the offset before the jump:
            // 01:30 UTC = 03:30 CEST.
            ((2026, 3, 29), (1, 30)),
            // CEST (UTC+2).
            ((2026, 3, 30), (0, 30)),
            ((2026, 10, 24), (0, 30)),
            // 2026-10-25: 02:30 happens twice; the first (CEST) one: 00:30 UTC.
            ((2026, 10, 25), (0, 30)),
            ((2026, 10, 26), (1, 30)),
        ];
        for ((y, mo, d), (h, mi)) in cases {
            let start = utc(y, mo, d, h, mi);
            let end = start + Duration::minutes(60);
            let day = format!("{y}-{mo}-{d}");
            assert_eq!(window(y, mo, d, h, mi), Some((start, end)), "{day} start");
            let last = end - Duration::seconds(1);
            assert_eq!(
                s.suppressed(&k, &m, last).map(|x| x.since),
                Some(start),
                "{day} last second"
            );
            assert_eq!(s.suppressed(&k, &m, end), None, "{day} end");
            assert_eq!(
                s.suppressed(&k, &m, start - Duration::seconds(1)),
                None,
                "{day} before"
            );
        }
        // The second 02:30 of 2026-10-25 (01:30 UTC, CET) is not a window.
        assert_eq!(window(2026, 10, 25, 1, 30), None);
        assert_eq!(
            s.suppressed(&k, &m, utc(2026, 3, 28, 2, 0)).unwrap().reason,
            "backups"
        );
        // Another namespace is not selected.
        let (ko, o) = monitor("dev", "db", "a");
        assert_eq!(s.suppressed(&ko, &o, utc(2026, 3, 28, 2, 0)), None);
    }

    #[test]
    fn one_off_window_and_precedence() {
        let windows: BTreeMap<ObjKey, MaintenanceWindow> = [resource(
            "MaintenanceWindow",
            "prod",
            "migration",
            "{schedule: \"DTSTART;TZID=Europe/Berlin:20260601T220000\\nRRULE:FREQ=DAILY;COUNT=1\", durationMinutes: 120}",
        )]
        .into_iter()
        .collect();
        let silences: BTreeMap<ObjKey, Silence> = [resource(
            "Silence",
            "prod",
            "s",
            "{startsAt: '2026-06-01T00:00:00Z', endsAt: '2026-06-03T00:00:00Z'}",
        )]
        .into_iter()
        .collect();
        let s = Suppressor::new(&silences, &windows);
        let (k, m) = monitor("prod", "db", "a");
        // 22:00 CEST = 20:00 UTC; maintenance is reported before the silence.
        let got = s.suppressed(&k, &m, utc(2026, 6, 1, 21, 0)).unwrap();
        assert_eq!(
            (got.kind, got.until),
            (SuppressionKind::Maintenance, utc(2026, 6, 1, 22, 0))
        );
        assert_eq!(
            got.to_string(),
            "maintenance prod/migration: maintenance window prod/migration"
        );
        let next_day = s.suppressed(&k, &m, utc(2026, 6, 2, 21, 0)).unwrap();
        assert_eq!(next_day.kind, SuppressionKind::Silence);
    }
}
