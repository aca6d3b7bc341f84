//! The consensus of several locations: one monitor's state from each location's latest
//! result and its quorum. Pure: the results, the rule and the clock are passed in. The
//! design of the whole feature (who reads what, who alerts) is in `CONSENSUS.md` beside
//! this file.
//!
//! The rule, for the locations that should run a monitor:
//! - a location is **stale** when it has no result, or its latest result (the last check,
//!   or the time it reported when it has not checked yet) is older than the stale bound:
//!   a stale location is neither up nor down, and is not counted;
//! - the other locations are **fresh**; `of` is their number and `needed` the quorum of
//!   them ([`QuorumRule::needed`]): a quorum larger than the fresh locations needs all of
//!   them, and never fewer than one;
//! - **down** when at least `needed` fresh locations see it down; **degraded** when some
//!   do but fewer; **up** when none do and at least one sees it up (flapping counts as up);
//!   **pending** when every fresh location is still pending; **unknown** when no location
//!   is fresh;
//! - a paused monitor is **paused** and one in an active maintenance window is
//!   **maintenance**, whatever the locations say (their lists are still filled in).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use kubekuma_crds::MonitorState;
use kubekuma_crds::monitor::QuorumRule;

/// One location's latest result of a monitor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LocationReport {
    /// The state the location's agent shows.
    pub state: MonitorState,
    /// Its last check, if it ran one.
    pub checked_at: Option<DateTime<Utc>>,
    /// When the location's agent wrote this result (its `results.json`'s `generatedAt`).
    pub reported_at: DateTime<Utc>,
}

impl From<&crate::export::locations::Seen> for LocationReport {
    fn from(s: &crate::export::locations::Seen) -> Self {
        LocationReport {
            state: s.result.state,
            checked_at: s.result.checked_at,
            reported_at: s.generated_at,
        }
    }
}

impl LocationReport {
    /// The time this result speaks for: the last check, else the report.
    fn as_of(&self) -> DateTime<Utc> {
        self.checked_at.unwrap_or(self.reported_at)
    }
}

/// What the consensus of one monitor is asked.
#[derive(Clone, Debug)]
pub struct Question<'a> {
    /// The monitor's quorum.
    pub quorum: QuorumRule,
    /// The locations that should run it: its `spec.locations`, or every location that
    /// reports when it lists none.
    pub locations: &'a [String],
    /// The latest result of each location (others than `locations` are ignored).
    pub results: &'a BTreeMap<String, LocationReport>,
    /// A result older than this is stale.
    pub stale_after: Duration,
    /// The monitor is disabled.
    pub paused: bool,
    /// The monitor is inside an active maintenance window.
    pub maintenance: bool,
    /// The time of the decision.
    pub now: DateTime<Utc>,
}

/// The state of a monitor across its locations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsensusState {
    /// No fresh location sees it down, at least one sees it up.
    Up,
    /// At least the quorum of fresh locations sees it down.
    Down,
    /// Some fresh locations see it down, fewer than the quorum.
    Degraded,
    /// Every fresh location is still waiting for its first result.
    Pending,
    /// No location is fresh.
    Unknown,
    /// Inside an active maintenance window.
    Maintenance,
    /// Disabled.
    Paused,
}

impl ConsensusState {
    /// The state's name as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsensusState::Up => "up",
            ConsensusState::Down => "down",
            ConsensusState::Degraded => "degraded",
            ConsensusState::Pending => "pending",
            ConsensusState::Unknown => "unknown",
            ConsensusState::Maintenance => "maintenance",
            ConsensusState::Paused => "paused",
        }
    }
}

/// The decision, with the locations behind it (each in name order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consensus {
    /// The state across locations.
    pub state: ConsensusState,
    /// Fresh locations that see it down.
    pub down_at: Vec<String>,
    /// Fresh locations that see it up (or flapping).
    pub up_at: Vec<String>,
    /// Fresh locations without a verdict yet (pending, or paused at that location).
    pub pending_at: Vec<String>,
    /// Locations that should run it but have no fresh result.
    pub stale: Vec<String>,
    /// Fresh locations that must see it down for `down` (at least 1).
    pub needed: usize,
    /// Fresh locations (`down_at + up_at + pending_at`).
    pub of: usize,
}

impl Consensus {
    /// A short public description: "down in 2 of 3 locations", "degraded in 1 of 3
    /// locations", "up in 3 locations", with the stale ones named apart.
    pub fn describe(&self) -> String {
        let plural = |n: usize| if n == 1 { "location" } else { "locations" };
        let mut s = match self.state {
            ConsensusState::Down | ConsensusState::Degraded => format!(
                "{} in {} of {} {}",
                self.state.as_str(),
                self.down_at.len(),
                self.of,
                plural(self.of)
            ),
            ConsensusState::Up => {
                format!("up in {} {}", self.up_at.len(), plural(self.up_at.len()))
            }
            other => other.as_str().to_string(),
        };
        if !self.stale.is_empty() {
            s.push_str(&format!(
                " ({} stale: {})",
                self.stale.len(),
                self.stale.join(", ")
            ));
        }
        s
    }
}

/// Decide the state of one monitor across its locations (see the module's rule).
pub fn decide(q: &Question<'_>) -> Consensus {
    let bound = q.now - q.stale_after;
    let expected: BTreeSet<&str> = q.locations.iter().map(String::as_str).collect();
    let (mut down_at, mut up_at, mut pending_at, mut stale) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for loc in expected {
        let list = match q.results.get(loc) {
            Some(r) if r.as_of() >= bound => match r.state {
                MonitorState::Down => &mut down_at,
                MonitorState::Up | MonitorState::Flapping => &mut up_at,
                MonitorState::Pending | MonitorState::Paused => &mut pending_at,
            },
            _ => &mut stale,
        };
        list.push(loc.to_string());
    }
    let of = down_at.len() + up_at.len() + pending_at.len();
    let needed = q.quorum.needed(of);
    let state = if q.paused {
        ConsensusState::Paused
    } else if q.maintenance {
        ConsensusState::Maintenance
    } else if of == 0 {
        ConsensusState::Unknown
    } else if down_at.len() >= needed {
        ConsensusState::Down
    } else if !down_at.is_empty() {
        ConsensusState::Degraded
    } else if !up_at.is_empty() {
        ConsensusState::Up
    } else {
        ConsensusState::Pending
    };
    Consensus {
        state,
        down_at,
        up_at,
        pending_at,
        stale,
        needed,
        of,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsensusState as C;
    use MonitorState as S;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    /// `(location, state, age of the last check in seconds)`; age `None`: no result.
    type Row = (&'static str, S, Option<i64>);

    /// `(what, quorum, rows, expected state, needed, of)`.
    type Case = (&'static str, QuorumRule, &'static [Row], C, usize, usize);

    fn run(quorum: QuorumRule, rows: &[Row], paused: bool, maintenance: bool) -> Consensus {
        let locations: Vec<String> = rows.iter().map(|r| r.0.to_string()).collect();
        let results = rows
            .iter()
            .filter_map(|&(l, state, age)| {
                age.map(|a| {
                    let at = now() - Duration::seconds(a);
                    (
                        l.to_string(),
                        LocationReport {
                            state,
                            checked_at: Some(at),
                            reported_at: at,
                        },
                    )
                })
            })
            .collect();
        decide(&Question {
            quorum,
            locations: &locations,
            results: &results,
            stale_after: Duration::seconds(210),
            paused,
            maintenance,
            now: now(),
        })
    }

    fn names(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn table() {
        use QuorumRule::{Count, Majority, Percent};
        let cases: &[Case] = &[
            (
                "all up",
                Majority,
                &[
                    ("a", S::Up, Some(5)),
                    ("b", S::Up, Some(5)),
                    ("c", S::Up, Some(5)),
                ],
                C::Up,
                2,
                3,
            ),
            (
                "one of three down: degraded, no alert",
                Majority,
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Up, Some(5)),
                    ("c", S::Up, Some(5)),
                ],
                C::Degraded,
                2,
                3,
            ),
            (
                "two of three down: majority",
                Majority,
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Down, Some(5)),
                    ("c", S::Up, Some(5)),
                ],
                C::Down,
                2,
                3,
            ),
            (
                "majority of four is three",
                Majority,
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Down, Some(5)),
                    ("c", S::Up, Some(5)),
                    ("d", S::Up, Some(5)),
                ],
                C::Degraded,
                3,
                4,
            ),
            (
                "a stale location is not counted as down",
                Majority,
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Up, Some(5)),
                    ("c", S::Down, Some(600)),
                ],
                C::Degraded,
                2,
                2,
            ),
            (
                "a location without a result is stale",
                Count(2),
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Down, None),
                    ("c", S::Up, Some(5)),
                ],
                C::Degraded,
                2,
                2,
            ),
            (
                "stale ones drop out: one fresh down of one fresh is the majority",
                Majority,
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Up, Some(211)),
                    ("c", S::Up, None),
                ],
                C::Down,
                1,
                1,
            ),
            (
                "count larger than the fresh locations needs all of them",
                Count(3),
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Down, Some(5)),
                    ("c", S::Up, None),
                ],
                C::Down,
                2,
                2,
            ),
            (
                "count larger than the fresh locations, one still up",
                Count(5),
                &[("a", S::Down, Some(5)), ("b", S::Up, Some(5))],
                C::Degraded,
                2,
                2,
            ),
            (
                "count 1: any location down is down",
                Count(1),
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Up, Some(5)),
                    ("c", S::Up, Some(5)),
                ],
                C::Down,
                1,
                3,
            ),
            (
                "50% of three rounds up to two",
                Percent(50),
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Up, Some(5)),
                    ("c", S::Up, Some(5)),
                ],
                C::Degraded,
                2,
                3,
            ),
            (
                "50% of four is two",
                Percent(50),
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Down, Some(5)),
                    ("c", S::Up, Some(5)),
                    ("d", S::Up, Some(5)),
                ],
                C::Down,
                2,
                4,
            ),
            (
                "1% is at least one location",
                Percent(1),
                &[("a", S::Up, Some(5)), ("b", S::Down, Some(5))],
                C::Down,
                1,
                2,
            ),
            (
                "100% needs every fresh location",
                Percent(100),
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Down, Some(5)),
                    ("c", S::Up, Some(5)),
                ],
                C::Degraded,
                3,
                3,
            ),
            (
                "no fresh location: unknown, never down",
                Majority,
                &[("a", S::Down, Some(600)), ("b", S::Down, None)],
                C::Unknown,
                1,
                0,
            ),
            (
                "no location at all: unknown",
                Majority,
                &[],
                C::Unknown,
                1,
                0,
            ),
            (
                "pending locations count among the fresh ones",
                Majority,
                &[
                    ("a", S::Down, Some(5)),
                    ("b", S::Pending, Some(5)),
                    ("c", S::Pending, Some(5)),
                ],
                C::Degraded,
                2,
                3,
            ),
            (
                "every fresh location pending",
                Majority,
                &[("a", S::Pending, Some(5)), ("b", S::Pending, Some(5))],
                C::Pending,
                2,
                2,
            ),
            (
                "flapping counts as up",
                Majority,
                &[("a", S::Flapping, Some(5)), ("b", S::Up, Some(5))],
                C::Up,
                2,
                2,
            ),
            (
                "exactly at the stale bound is still fresh",
                Count(1),
                &[("a", S::Down, Some(210))],
                C::Down,
                1,
                1,
            ),
        ];
        for (what, quorum, rows, state, needed, of) in cases {
            let c = run(*quorum, rows, false, false);
            assert_eq!(
                (c.state, c.needed, c.of),
                (*state, *needed, *of),
                "{what}: {c:?}"
            );
        }
    }

    #[test]
    fn the_lists_name_the_locations() {
        let c = run(
            QuorumRule::Majority,
            &[
                ("us-east", S::Up, Some(5)),
                ("eu-west", S::Down, Some(5)),
                ("ap-south", S::Down, Some(900)),
                ("home", S::Pending, Some(1)),
            ],
            false,
            false,
        );
        assert_eq!(names(&c.down_at), ["eu-west"]);
        assert_eq!(names(&c.up_at), ["us-east"]);
        assert_eq!(names(&c.pending_at), ["home"]);
        assert_eq!(names(&c.stale), ["ap-south"]);
        assert_eq!(
            c.describe(),
            "degraded in 1 of 3 locations (1 stale: ap-south)"
        );
    }

    #[test]
    fn paused_and_maintenance_pass_through() {
        let rows: &[Row] = &[("a", S::Down, Some(5)), ("b", S::Down, Some(5))];
        let c = run(QuorumRule::Majority, rows, true, false);
        assert_eq!(c.state, C::Paused);
        assert_eq!(names(&c.down_at), ["a", "b"]);
        assert_eq!(
            run(QuorumRule::Majority, rows, false, true).state,
            C::Maintenance
        );
        assert_eq!(run(QuorumRule::Majority, rows, false, false).state, C::Down);
    }

    #[test]
    fn results_of_unlisted_locations_are_ignored() {
        let at = now();
        let report = |state| LocationReport {
            state,
            checked_at: Some(at),
            reported_at: at,
        };
        let results = BTreeMap::from([
            ("a".to_string(), report(S::Up)),
            ("x".to_string(), report(S::Down)),
            ("y".to_string(), report(S::Down)),
        ]);
        let locations = vec!["a".to_string(), "a".to_string()];
        let c = decide(&Question {
            quorum: QuorumRule::Count(1),
            locations: &locations,
            results: &results,
            stale_after: Duration::seconds(60),
            paused: false,
            maintenance: false,
            now: at,
        });
        assert_eq!((c.state, c.of), (C::Up, 1));
    }

    #[test]
    fn a_location_that_reports_but_stopped_checking_is_stale() {
        let at = now();
        let results = BTreeMap::from([(
            "a".to_string(),
            LocationReport {
                state: S::Down,
                checked_at: Some(at - Duration::hours(1)),
                reported_at: at,
            },
        )]);
        let locations = vec!["a".to_string()];
        let c = decide(&Question {
            quorum: QuorumRule::Majority,
            locations: &locations,
            results: &results,
            stale_after: Duration::seconds(210),
            paused: false,
            maintenance: false,
            now: at,
        });
        assert_eq!(c.state, C::Unknown);
        assert_eq!(names(&c.stale), ["a"]);
    }

    #[test]
    fn a_location_not_checked_yet_is_fresh_by_its_report() {
        let at = now();
        let results = BTreeMap::from([(
            "a".to_string(),
            LocationReport {
                state: S::Pending,
                checked_at: None,
                reported_at: at,
            },
        )]);
        let locations = vec!["a".to_string()];
        let c = decide(&Question {
            quorum: QuorumRule::Majority,
            locations: &locations,
            results: &results,
            stale_after: Duration::seconds(210),
            paused: false,
            maintenance: false,
            now: at,
        });
        assert_eq!(c.state, C::Pending);
    }

    fn state() -> impl Strategy<Value = S> {
        prop_oneof![
            Just(S::Up),
            Just(S::Down),
            Just(S::Pending),
            Just(S::Flapping),
            Just(S::Paused)
        ]
    }

    fn quorum() -> impl Strategy<Value = QuorumRule> {
        prop_oneof![
            Just(QuorumRule::Majority),
            (1u32..40).prop_map(QuorumRule::Count),
            (1u32..=100).prop_map(QuorumRule::Percent),
        ]
    }

    proptest! {
        #[test]
        fn never_down_with_fewer_down_locations_than_the_quorum(
            q in quorum(),
            rows in proptest::collection::vec((state(), proptest::option::of(0i64..400)), 0..33),
        ) {
            let names: Vec<String> = (0..rows.len()).map(|i| format!("l{i}")).collect();
            let results = rows
                .iter()
                .zip(&names)
                .filter_map(|((s, age), l)| {
                    age.map(|a| {
                        let at = now() - Duration::seconds(a);
                        (l.clone(), LocationReport { state: *s, checked_at: Some(at), reported_at: at })
                    })
                })
                .collect();
            let c = decide(&Question {
                quorum: q,
                locations: &names,
                results: &results,
                stale_after: Duration::seconds(210),
                paused: false,
                maintenance: false,
                now: now(),
            });
            let d = c.down_at.len();
            // Every location is in exactly one list.
            prop_assert_eq!(d + c.up_at.len() + c.pending_at.len() + c.stale.len(), names.len());
            prop_assert_eq!(c.of, names.len() - c.stale.len());
            // Stale locations are never down.
            let fresh_down = rows
                .iter()
                .filter(|(s, age)| *s == S::Down && age.is_some_and(|a| a <= 210))
                .count();
            prop_assert_eq!(d, fresh_down);
            // The quorum asked for, as a count of the fresh locations, capped at them.
            let asked = match q {
                QuorumRule::Majority => c.of / 2 + 1,
                QuorumRule::Count(n) => n as usize,
                QuorumRule::Percent(p) => (c.of * p as usize).div_ceil(100),
            };
            prop_assert!(c.needed >= 1);
            if c.state == C::Down {
                prop_assert!(d >= 1);
                prop_assert!(d >= c.needed);
                prop_assert!(d >= asked || d == c.of, "down with {} of {} fresh, asked {}", d, c.of, asked);
            } else {
                prop_assert!(d < c.needed || c.of == 0);
            }
            if c.state == C::Unknown {
                prop_assert_eq!(c.of, 0);
            }
        }
    }
}
