//! The monitor state machine: pending until the first result, down only after retries
//! and grace, flapping when it changes state too often, paused when disabled. Pure:
//! the caller passes the time and acts on the returned transition (heartbeat, incident).
//! [`live`] holds every running monitor's machine and last result.

pub mod live;

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use kubekuma_crds::MonitorState;

/// How a monitor turns failures into states, from its spec and the settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatePolicy {
    /// Failed attempts tolerated before the monitor may be declared down.
    pub retries: u32,
    /// How long failures must persist before the monitor is down.
    pub grace: Duration,
    /// Delay before retrying a failed attempt.
    pub retry_interval: Duration,
    /// Flapping detection: state changes within `window` that mean flapping.
    pub flapping: Option<(Duration, u32)>,
}

/// What one result did to the monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing visible changed.
    None,
    /// The monitor is down now (open an incident).
    WentDown,
    /// The monitor is up again after being down (close the incident).
    WentUp,
    /// The first result arrived and it is up.
    FirstUp,
}

/// The outcome of feeding one result to the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The state to show and record for this result.
    pub state: MonitorState,
    /// Up/down transition of the underlying state.
    pub transition: Transition,
    /// Flapping started (`Some(true)`) or ended (`Some(false)`) with this result.
    pub flapping_changed: Option<bool>,
    /// Retry the check after this delay instead of waiting for the next interval.
    pub retry_in: Option<Duration>,
    /// Attempts counted for this result (1 + failures so far, while failing).
    pub attempts: u32,
}

/// Per-monitor state, kept across catalog reloads and persisted in SQLite.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracker {
    /// Underlying state: pending, up or down (flapping and paused are overlays).
    pub base: MonitorState,
    /// Currently flapping.
    pub flapping: bool,
    /// Disabled.
    pub paused: bool,
    /// When the shown state began.
    pub since: Option<DateTime<Utc>>,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
    /// First failure of the current run of failures.
    pub first_failure_at: Option<DateTime<Utc>>,
    /// Times of recent up/down changes (for flapping).
    pub changes: VecDeque<DateTime<Utc>>,
    /// Open incident, if down.
    pub open_incident: Option<i64>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            base: MonitorState::Pending,
            flapping: false,
            paused: false,
            since: None,
            consecutive_failures: 0,
            first_failure_at: None,
            changes: VecDeque::new(),
            open_incident: None,
        }
    }
}

impl Tracker {
    /// The state to show.
    pub fn shown(&self) -> MonitorState {
        if self.paused {
            MonitorState::Paused
        } else if self.flapping {
            MonitorState::Flapping
        } else {
            self.base
        }
    }

    /// Pause or resume. Returns true when the shown state changed.
    pub fn set_paused(&mut self, paused: bool, now: DateTime<Utc>) -> bool {
        if self.paused == paused {
            return false;
        }
        self.paused = paused;
        self.since = Some(now);
        if !paused {
            // Resumed: results start afresh.
            self.consecutive_failures = 0;
            self.first_failure_at = None;
        }
        true
    }

    /// An operator resolved incident `id` while the monitor may still be down: if it is
    /// this tracker's open incident, forget it and start afresh from pending, so that a
    /// later failure (after retries and grace) opens a new incident. Returns whether it
    /// re-armed.
    pub fn rearm_after_resolve(&mut self, id: i64, now: DateTime<Utc>) -> bool {
        if self.open_incident != Some(id) {
            return false;
        }
        self.open_incident = None;
        if self.base == MonitorState::Down {
            self.base = MonitorState::Pending;
            self.since = Some(now);
        }
        self.consecutive_failures = 0;
        self.first_failure_at = None;
        true
    }

    /// Feed the result of one attempt.
    pub fn observe(&mut self, up: bool, now: DateTime<Utc>, p: &StatePolicy) -> Observed {
        let before_shown = self.shown();
        let mut transition = Transition::None;
        let mut retry_in = None;
        let attempts;
        if up {
            attempts = self.consecutive_failures + 1;
            self.consecutive_failures = 0;
            self.first_failure_at = None;
            match self.base {
                MonitorState::Down => {
                    self.base = MonitorState::Up;
                    self.changes.push_back(now);
                    transition = Transition::WentUp;
                }
                MonitorState::Pending => {
                    self.base = MonitorState::Up;
                    transition = Transition::FirstUp;
                }
                _ => self.base = MonitorState::Up,
            }
        } else {
            self.consecutive_failures += 1;
            attempts = self.consecutive_failures;
            let first = *self.first_failure_at.get_or_insert(now);
            let retries_spent = self.consecutive_failures > p.retries;
            let grace_over = now - first >= p.grace;
            if self.base != MonitorState::Down {
                if retries_spent && grace_over {
                    self.base = MonitorState::Down;
                    self.changes.push_back(now);
                    transition = Transition::WentDown;
                } else {
                    retry_in = Some(p.retry_interval);
                }
            }
        }
        // Flapping: too many up/down changes within the window.
        let mut flapping_changed = None;
        if let Some((window, threshold)) = p.flapping {
            while self.changes.front().is_some_and(|t| now - *t > window) {
                self.changes.pop_front();
            }
            let flapping = self.changes.len() as u32 >= threshold;
            if flapping != self.flapping {
                self.flapping = flapping;
                flapping_changed = Some(flapping);
            }
        } else {
            self.changes.clear();
            self.flapping = false;
        }
        let mut state = self.shown();
        // A failed attempt that has not (yet) made the monitor down is recorded as
        // pending, so retries do not count as up in uptime figures.
        if !up && self.base != MonitorState::Down && !self.flapping && !self.paused {
            state = MonitorState::Pending;
        }
        if self.shown() != before_shown || self.since.is_none() {
            self.since = Some(now);
        }
        Observed {
            state,
            transition,
            flapping_changed,
            retry_in,
            attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolving_by_hand_rearms_so_a_later_failure_goes_down_again() {
        let p = policy(0, 0);
        let mut tr = Tracker::default();
        assert_eq!(tr.observe(false, t(0), &p).transition, Transition::WentDown);
        tr.open_incident = Some(7);
        // Still down: without re-arming, failures never transition again.
        assert_eq!(tr.observe(false, t(1), &p).transition, Transition::None);
        assert!(!tr.rearm_after_resolve(8, t(2)), "another incident");
        assert!(tr.rearm_after_resolve(7, t(2)));
        assert_eq!(tr.open_incident, None);
        assert_eq!(tr.observe(false, t(3), &p).transition, Transition::WentDown);
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default()
    }

    fn policy(retries: u32, grace: i64) -> StatePolicy {
        StatePolicy {
            retries,
            grace: Duration::seconds(grace),
            retry_interval: Duration::seconds(5),
            flapping: Some((Duration::minutes(10), 3)),
        }
    }

    #[test]
    fn pending_until_first_result_then_up() {
        let mut tr = Tracker::default();
        assert_eq!(tr.shown(), MonitorState::Pending);
        let o = tr.observe(true, t(0), &policy(0, 0));
        assert_eq!(
            (o.state, o.transition),
            (MonitorState::Up, Transition::FirstUp)
        );
    }

    #[test]
    fn down_only_after_retries_and_grace() {
        let p = policy(2, 20);
        let mut tr = Tracker::default();
        tr.observe(true, t(0), &p);
        let a = tr.observe(false, t(30), &p);
        assert_eq!(
            (a.state, a.retry_in, a.attempts),
            (MonitorState::Pending, Some(Duration::seconds(5)), 1)
        );
        let b = tr.observe(false, t(35), &p);
        assert_eq!(b.transition, Transition::None);
        // Retries spent (3 failures > 2 retries) but only 10 s of the 20 s grace passed.
        let c = tr.observe(false, t(40), &p);
        assert_eq!(
            (c.state, c.transition),
            (MonitorState::Pending, Transition::None)
        );
        let d = tr.observe(false, t(50), &p);
        assert_eq!(
            (d.state, d.transition, d.attempts),
            (MonitorState::Down, Transition::WentDown, 4)
        );
        assert_eq!(d.retry_in, None);
        let e = tr.observe(false, t(60), &p);
        assert_eq!(
            (e.state, e.transition),
            (MonitorState::Down, Transition::None)
        );
        let f = tr.observe(true, t(90), &p);
        assert_eq!(
            (f.state, f.transition),
            (MonitorState::Up, Transition::WentUp)
        );
    }

    #[test]
    fn a_single_failure_with_retries_does_not_go_down() {
        let p = policy(1, 0);
        let mut tr = Tracker::default();
        tr.observe(true, t(0), &p);
        tr.observe(false, t(30), &p);
        let o = tr.observe(true, t(35), &p);
        assert_eq!(
            (o.state, o.transition),
            (MonitorState::Up, Transition::None)
        );
        assert_eq!(
            tr.since,
            Some(t(0)),
            "a retry that recovered does not reset `since`"
        );
    }

    #[test]
    fn flapping_when_changing_too_often_and_back() {
        let p = policy(0, 0);
        let mut tr = Tracker::default();
        tr.observe(true, t(0), &p);
        tr.observe(false, t(60), &p); // change 1
        tr.observe(true, t(120), &p); // change 2
        let o = tr.observe(false, t(180), &p); // change 3 → flapping
        assert_eq!(
            (o.state, o.flapping_changed),
            (MonitorState::Flapping, Some(true))
        );
        assert_eq!(
            o.transition,
            Transition::WentDown,
            "incidents still follow up/down"
        );
        // Quiet for longer than the window: flapping ends, the underlying state shows.
        let o = tr.observe(false, t(180 + 11 * 60), &p);
        assert_eq!(
            (o.state, o.flapping_changed),
            (MonitorState::Down, Some(false))
        );
    }

    #[test]
    fn paused_overrides_everything() {
        let mut tr = Tracker::default();
        assert!(tr.set_paused(true, t(0)));
        assert_eq!(tr.shown(), MonitorState::Paused);
        assert!(!tr.set_paused(true, t(1)));
        assert!(tr.set_paused(false, t(2)));
        assert_eq!(tr.shown(), MonitorState::Pending);
    }
}
