//! The home leader's alerts from the consensus of locations: every [`REFRESH`] it reads
//! the other locations' `results.json` ([`Locations`]), adds its own location's live
//! state, decides each monitor's consensus ([`consensus::decide`]) and sends the
//! consensus transitions ([`transition`]) through the one [`Alerter`]. A monitor with
//! results from two locations or more is "by consensus": the local state machine's
//! down and up events for it are not sent ([`QuorumAlerts::by_consensus`], asked by
//! `crate::process`); a monitor seen by one location only alerts as before.
//!
//! Degraded (some locations, fewer than the quorum) never alerts: no policy asks for
//! per-location alerts yet. What was last alerted is kept in memory: a new leader starts
//! from nothing, and the gate's dedupe (saved in the store) absorbs a repeated down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kubekuma_crds::MonitorState;
use kubekuma_crds::store::ObjectTarget;
use tokio::sync::watch;

use super::consensus::{self, ConsensusState, LocationReport, Question};
use super::pipeline::{Alerter, Change};
use crate::catalog::{ObjKey, Snapshot};
use crate::export::locations::Locations;
use crate::notify::event::EventKind;
use crate::push::PushHub;
use crate::state::live::{Live, LiveMonitor};

/// How often the leader reads the locations and decides.
pub const REFRESH: Duration = Duration::from_secs(5);

/// A consensus transition that notifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumTransition {
    /// The quorum of fresh locations now sees it down.
    Down,
    /// It was alerted down and is now up.
    Up,
}

/// The transition of a monitor whose last alert said down (`alerted_down`) to the
/// consensus `now`: down once when the quorum sees it down, up once when it is up
/// again. Degraded, pending, unknown, paused and maintenance change nothing (a monitor
/// alerted down stays so until it is up).
pub fn transition(alerted_down: bool, now: ConsensusState) -> Option<QuorumTransition> {
    match (alerted_down, now) {
        (false, ConsensusState::Down) => Some(QuorumTransition::Down),
        (true, ConsensusState::Up) => Some(QuorumTransition::Up),
        _ => None,
    }
}

/// What the leader decided so far.
#[derive(Debug, Default)]
struct Decided {
    /// Monitors with results from two locations or more.
    by_consensus: BTreeSet<ObjKey>,
    /// Monitors whose last consensus alert said down.
    alerted_down: BTreeSet<ObjKey>,
}

/// The consensus alerting of the home leader (shared with `crate::process`).
#[derive(Debug)]
pub struct QuorumAlerts {
    agent_id: String,
    location: String,
    decided: Mutex<Decided>,
}

/// One consensus alert to send.
#[derive(Clone, Debug, PartialEq)]
pub struct QuorumEvent {
    /// The monitor.
    pub key: ObjKey,
    /// Down or up.
    pub transition: QuorumTransition,
    /// The decision behind it.
    pub consensus: consensus::Consensus,
}

impl QuorumAlerts {
    /// The consensus alerting of agent `agent_id` at `location`.
    pub fn new(agent_id: &str, location: &str) -> Self {
        QuorumAlerts {
            agent_id: agent_id.to_string(),
            location: location.to_string(),
            decided: Mutex::new(Decided::default()),
        }
    }

    fn decided(&self) -> std::sync::MutexGuard<'_, Decided> {
        self.decided.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether monitor `key`'s down and up alerts come from the consensus (it has
    /// results from two locations or more), not from the local state machine.
    pub fn by_consensus(&self, key: &ObjKey) -> bool {
        self.decided().by_consensus.contains(key)
    }

    /// Decide every monitor of `snap` from the other locations' results in `locations`
    /// and this agent's `live` view, at `now`; returns the alerts to send. The results
    /// of this agent's own location in the store are ignored: its live state speaks for
    /// it.
    pub fn decide(
        &self,
        snap: &Snapshot,
        locations: &Locations,
        live: &Live,
        now: DateTime<Utc>,
    ) -> Vec<QuorumEvent> {
        let latest = locations.latest();
        let mut by_consensus = BTreeSet::new();
        let mut events = Vec::new();
        let mut decided = self.decided();
        for plan in crate::schedule::plans(snap) {
            let key = &plan.key;
            let id = key.to_string();
            let mut results: BTreeMap<String, LocationReport> = latest
                .iter()
                .filter(|(loc, _)| **loc != self.location)
                .filter_map(|(loc, by_monitor)| {
                    by_monitor
                        .get(&id)
                        .filter(|s| s.agent_id != self.agent_id)
                        .map(|s| (loc.clone(), LocationReport::from(s)))
                })
                .collect();
            if let Some(m) = live.monitors.get(key)
                && (m.checked_at.is_some() || m.tracker.shown() != MonitorState::Pending)
            {
                results.insert(
                    self.location.clone(),
                    LocationReport {
                        state: m.tracker.shown(),
                        checked_at: m.checked_at,
                        reported_at: now,
                    },
                );
            }
            let expected: Vec<String> = if plan.locations.is_empty() {
                results.keys().cloned().collect()
            } else {
                plan.locations.clone()
            };
            let reporting = expected.iter().filter(|l| results.contains_key(*l)).count();
            if reporting < 2 {
                continue;
            }
            by_consensus.insert(key.clone());
            let c = consensus::decide(&Question {
                quorum: plan.quorum,
                locations: &expected,
                results: &results,
                stale_after: chrono::Duration::from_std(plan.stale_after)
                    .unwrap_or(chrono::Duration::MAX),
                paused: !plan.spec.enabled.unwrap_or(true),
                maintenance: false,
                now,
            });
            let was_down = decided.alerted_down.contains(key);
            if let Some(t) = transition(was_down, c.state) {
                match t {
                    QuorumTransition::Down => decided.alerted_down.insert(key.clone()),
                    QuorumTransition::Up => decided.alerted_down.remove(key),
                };
                events.push(QuorumEvent {
                    key: key.clone(),
                    transition: t,
                    consensus: c,
                });
            }
        }
        // A monitor no longer by consensus alerts from its state machine again.
        decided.alerted_down.retain(|k| by_consensus.contains(k));
        decided.by_consensus = by_consensus;
        events
    }

    /// Forget what was decided (this agent stopped leading): its local state machine
    /// alerts again until the next decision.
    fn forget(&self) {
        *self.decided() = Decided::default();
    }

    /// Send `event` through `alerter`.
    async fn send(
        &self,
        alerter: &Alerter,
        snap: &Snapshot,
        own: Option<&LiveMonitor>,
        event: QuorumEvent,
    ) {
        let (kind, previous, current) = match event.transition {
            QuorumTransition::Down => (EventKind::Down, MonitorState::Up, MonitorState::Down),
            QuorumTransition::Up => (EventKind::Up, MonitorState::Down, MonitorState::Up),
        };
        let c = &event.consensus;
        let change = Change {
            kind,
            previous,
            current,
            reason: own
                .filter(|_| c.down_at.contains(&self.location))
                .and_then(|m| m.reason.map(|r| r.as_str().to_string())),
            message: Some(c.describe()),
            latency_ms: own.and_then(|m| m.latency_ms),
            locations: match event.transition {
                QuorumTransition::Down => c.down_at.clone(),
                QuorumTransition::Up => c.up_at.clone(),
            },
        };
        let incident = own.and_then(|m| m.tracker.open_incident);
        tracing::info!(monitor = %event.key, consensus = %c.describe(), "consensus alert");
        alerter
            .handle(snap, &event.key, incident, change, Utc::now())
            .await;
    }

    /// Run until `shutdown`: every [`REFRESH`] while `hub` says this agent leads, read
    /// the locations from `source`, decide and send.
    pub async fn run(
        self: Arc<Self>,
        source: ObjectTarget,
        alerter: Arc<Alerter>,
        catalog: watch::Receiver<Arc<Snapshot>>,
        live: Arc<Mutex<Live>>,
        hub: Arc<PushHub>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut locations = Locations::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { return },
                _ = tick.tick() => {}
            }
            if !hub.leading() {
                self.forget();
                continue;
            }
            match locations.refresh(&source).await {
                Ok(r) => {
                    for (key, why) in &r.broken {
                        tracing::warn!(object = %key, error = %why, "unreadable location results; the previous ones are kept");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the locations' results; deciding from those last read");
                }
            }
            let snap = catalog.borrow().clone();
            let events: Vec<(QuorumEvent, Option<LiveMonitor>)> = {
                let Ok(l) = live.lock() else { return };
                self.decide(&snap, &locations, &l, Utc::now())
                    .into_iter()
                    .map(|e| {
                        let own = l.monitors.get(&e.key).cloned();
                        (e, own)
                    })
                    .collect()
            };
            for (event, own) in events {
                self.send(&alerter, &snap, own.as_ref(), event).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsensusState as C;
    use QuorumTransition as T;

    #[test]
    fn down_once_up_once_degraded_never() {
        let steps = [
            (C::Up, None),
            (C::Degraded, None),
            (C::Down, Some(T::Down)),
            (C::Down, None),
            (C::Degraded, None),
            (C::Unknown, None),
            (C::Up, Some(T::Up)),
            (C::Up, None),
            (C::Degraded, None),
            (C::Pending, None),
            (C::Down, Some(T::Down)),
            (C::Paused, None),
            (C::Maintenance, None),
            (C::Up, Some(T::Up)),
        ];
        let mut down = false;
        for (i, (state, want)) in steps.into_iter().enumerate() {
            let got = transition(down, state);
            assert_eq!(got, want, "step {i}: {state:?}");
            match got {
                Some(T::Down) => down = true,
                Some(T::Up) => down = false,
                None => {}
            }
        }
    }
}
