//! What happens to a finished check: the state machine observes it, incidents open and
//! close, the heartbeat is recorded, the live view and the saved monitor state follow,
//! and state changes and expiring certificates go to the alerter.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use kubekuma_crds::MonitorType;
use kubekuma_crds::results::Heartbeat;
use tokio::sync::watch;

use crate::alerting::pipeline::{Alerter, Change};
use crate::alerting::policy::events_of;
use crate::alerting::quorum::QuorumAlerts;
use crate::catalog::{ObjKey, Snapshot};
use crate::export::urgent::Changes;
use crate::metrics::Metrics;
use crate::notify::event::EventKind;
use crate::push::PushHub;
use crate::schedule::{CheckDone, Scheduler};
use crate::state::live::{HeldIncident, Live, MAX_HELD_INCIDENTS};
use crate::state::{Tracker, Transition};
use crate::store::{MonitorStateRow, Store};

/// Feed one finished check to the state machine, the store and the live view.
pub async fn process(done: CheckDone, store: &Store, live: &Mutex<Live>, scheduler: &Scheduler) {
    process_with(done, store, live, scheduler, &Hooks::default()).await
}

/// What else hears about finished checks.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Told when the state machine wants a push monitor retried.
    pub push: Option<Arc<PushHub>>,
    /// Turns state changes and expiring certificates into notifications.
    pub alerter: Option<Arc<Alerter>>,
    /// The current catalog (the alerter needs the monitor, policies and providers).
    pub catalog: Option<watch::Receiver<Arc<Snapshot>>>,
    /// Counts checks.
    pub metrics: Option<Arc<Metrics>>,
    /// Told when the monitor's public state changed (an urgent export).
    pub changes: Option<Arc<Changes>>,
    /// The consensus of locations: a monitor it decides gets its down and up alerts
    /// from there, not from this agent's state machine.
    pub quorum: Option<Arc<QuorumAlerts>>,
}

/// [`process`] with [`Hooks`].
pub async fn process_with(
    done: CheckDone,
    store: &Store,
    live: &Mutex<Live>,
    scheduler: &Scheduler,
    hooks: &Hooks,
) {
    let push = hooks.push.as_deref();
    let key = done.plan.key.clone();
    let now = done.started_at;
    if let Some(m) = &hooks.metrics
        && done.plan.spec.type_ != MonitorType::Push
    {
        let secs = done.outcome.latency_ms / 1000.0;
        m.check_finished(
            done.plan.spec.type_,
            done.outcome.up,
            if secs.is_finite() { secs.max(0.0) } else { 0.0 },
        );
    }
    let (mut tracker, cert_notified, mut held, unsaved) = live
        .lock()
        .ok()
        .and_then(|l| {
            l.monitors.get(&key).map(|m| {
                (
                    m.tracker.clone(),
                    m.cert_days_notified,
                    m.held_incidents.clone(),
                    m.state_unsaved,
                )
            })
        })
        .unwrap_or_default();
    let shown_before = tracker.shown();
    let obs = tracker.observe(done.outcome.up, now, &done.plan.policy);
    let mut incident_of_event = tracker.open_incident;
    match obs.transition {
        Transition::WentDown => {
            // Queued behind any incident write still held, and written below when
            // the store takes writes.
            if let Some(last) = held.back_mut()
                && last.closed_at.is_none()
            {
                last.closed_at = Some(now);
            }
            held.push_back(HeldIncident {
                id: None,
                opened_at: now,
                reason: done.outcome.reason,
                closed_at: None,
            });
            tracing::warn!(
                monitor = %key,
                reason = done.outcome.reason.map(|r| r.as_str()).unwrap_or("unknown"),
                // Not `message`: that is the event's own text, and JSON logs would carry
                // the key twice.
                detail = done.outcome.message.as_deref().unwrap_or(""),
                "monitor down"
            );
        }
        Transition::WentUp => {
            incident_of_event = tracker.open_incident;
            if let Some(id) = tracker.open_incident.take() {
                held.push_back(HeldIncident {
                    id: Some(id),
                    opened_at: now,
                    reason: None,
                    closed_at: Some(now),
                });
            } else if let Some(last) = held.back_mut()
                && last.closed_at.is_none()
            {
                // Opened while the store was unreachable and not written yet.
                last.closed_at = Some(now);
            }
            tracing::info!(monitor = %key, "monitor up again");
        }
        Transition::FirstUp | Transition::None => {}
    }
    // Nothing is tried while the store reports that it cannot take writes (each try
    // could wait for a connection); the heartbeat writer retries meanwhile and clears
    // that report, and the next result writes what is held, in order.
    let writable = store.write_failure().is_none();
    if writable {
        write_held(store, &key, &mut held, &mut tracker).await;
    }
    while held.len() > MAX_HELD_INCIDENTS {
        if let Some(lost) = held.pop_front() {
            tracing::error!(monitor = %key, opened_at = %lost.opened_at, "store unreachable too long: an incident write was dropped beyond the bound");
        }
    }
    if obs.transition == Transition::WentDown {
        incident_of_event = tracker.open_incident;
    }
    if let Some(d) = obs.retry_in
        && let Ok(d) = d.to_std()
    {
        scheduler.retry(key.clone(), d);
        if let Some(hub) = push
            && done.plan.spec.type_ == MonitorType::Push
            && let Some(at) = obs.retry_in.map(|r| now + r)
        {
            hub.retry(&key, at);
        }
    }
    // Unknown latency (a push without `ping`, a missed push) is NaN: recorded as none.
    let latency = Some(done.outcome.latency_ms).filter(|l| l.is_finite());
    let recorded = store.record_heartbeat(Heartbeat {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        state: obs.state,
        latency_ms: latency,
        reason: done.outcome.reason,
        message: done.outcome.message.clone(),
        checked_at: now,
        attempts: obs.attempts,
    });
    if let Err(e) = recorded {
        tracing::error!(monitor = %key, error = %e, "cannot record heartbeat");
    }
    // Events: the state machine's transitions, and a certificate's days left whenever
    // that number changes (the policies' `onCertExpiring.daysThreshold` decide).
    let mut kinds = events_of(&obs);
    if hooks.quorum.as_ref().is_some_and(|q| q.by_consensus(&key)) {
        // Several locations report it: the consensus sends its down and up (and one
        // location's flapping is not an alert).
        kinds.retain(|k| !matches!(k, EventKind::Down | EventKind::Up | EventKind::Flapping));
    }
    let cert_days = done.outcome.cert.as_ref().map(|c| c.days_left);
    if let Some(days) = cert_days
        && cert_notified != Some(days)
    {
        kinds.push(EventKind::CertExpiring { days_left: days });
    }
    let changed = {
        let Ok(mut l) = live.lock() else { return };
        let prev = l.monitors.get(&key).map(|m| m.tracker.clone());
        let entry = l.monitors.entry(key.clone()).or_default();
        entry.tracker = tracker.clone();
        entry.checked_at = Some(now);
        entry.latency_ms = latency;
        entry.reason = done.outcome.reason;
        entry.message = done.outcome.message.clone();
        entry.attempts = obs.attempts;
        if done.outcome.cert.is_some() {
            entry.cert = done.outcome.cert.clone();
        }
        if cert_days.is_some() {
            entry.cert_days_notified = cert_days;
        }
        entry.held_incidents = held;
        prev.as_ref() != Some(&tracker)
    };
    if let (Some(alerter), Some(catalog)) = (&hooks.alerter, &hooks.catalog)
        && !kinds.is_empty()
    {
        let snap = catalog.borrow().clone();
        for kind in kinds {
            let change = Change {
                kind,
                previous: shown_before,
                current: obs.state,
                reason: done.outcome.reason.map(|r| r.as_str().to_string()),
                message: done.outcome.message.clone(),
                latency_ms: latency,
                locations: Vec::new(),
            };
            alerter
                .handle(&snap, &key, incident_of_event, change, now)
                .await;
        }
    }
    // What the public state shows changed (down, up, flapping, first result, an incident
    // opened or closed): export it at once.
    if let Some(changes) = &hooks.changes
        && (tracker.shown() != shown_before
            || obs.transition != Transition::None
            || obs.flapping_changed.is_some())
    {
        changes.signal();
    }
    if changed || unsaved {
        // A state the store could not take is saved with a later result (the row
        // holds the tracker as it is then), so no change stays unrecorded.
        // (`saved` is also true for a save given up: it is not retried.)
        let saved = if writable && store.write_failure().is_none() {
            let row = state_row(&key, &tracker, now);
            match store.save_monitor_state(row).await {
                Ok(()) => true,
                Err(e) if give_up(store) => {
                    tracing::error!(monitor = %key, error = %e, "cannot save monitor state");
                    true
                }
                Err(e) => {
                    tracing::error!(monitor = %key, error = %e, "cannot save monitor state; saved with a later result");
                    false
                }
            }
        } else {
            false
        };
        if let Ok(mut l) = live.lock()
            && let Some(m) = l.monitors.get_mut(&key)
        {
            m.state_unsaved = !saved;
        }
    }
}

/// Whether a write that just failed is not to be held: the store does not report
/// that it cannot take writes (unreachable, read-only, full), so the same write would
/// fail again (an error of that statement), as before holding existed.
fn give_up(store: &Store) -> bool {
    store.write_failure().is_none()
}

/// Write the incident changes held for one monitor, oldest first, until one fails (it
/// stays first, for the next result). An incident opened while the monitor is still
/// down becomes the tracker's open incident.
async fn write_held(
    store: &Store,
    key: &ObjKey,
    held: &mut VecDeque<HeldIncident>,
    tracker: &mut Tracker,
) {
    while let Some(h) = held.front_mut() {
        let id = match h.id {
            Some(id) => id,
            None => match store
                .open_incident(&key.namespace, &key.name, h.opened_at, h.reason)
                .await
            {
                Ok(id) => {
                    h.id = Some(id);
                    id
                }
                Err(e) => {
                    if give_up(store) {
                        tracing::error!(monitor = %key, error = %e, "cannot open incident");
                        held.pop_front();
                        continue;
                    }
                    tracing::error!(monitor = %key, error = %e, "cannot open incident; held and retried with a later result");
                    return;
                }
            },
        };
        match h.closed_at {
            None => {
                // Still down: the tracker closes it when the monitor comes up.
                tracker.open_incident = Some(id);
            }
            Some(at) => {
                if let Err(e) = store.close_incident(id, at).await {
                    if give_up(store) {
                        tracing::error!(monitor = %key, incident = id, error = %e, "cannot close incident");
                        held.pop_front();
                        continue;
                    }
                    tracing::error!(monitor = %key, incident = id, error = %e, "cannot close incident; held and retried with a later result");
                    return;
                }
            }
        }
        held.pop_front();
    }
}

pub(crate) fn state_row(key: &ObjKey, t: &Tracker, now: DateTime<Utc>) -> MonitorStateRow {
    MonitorStateRow {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        state: t.shown(),
        since: t.since,
        last_checked_at: Some(now),
        consecutive_failures: t.consecutive_failures,
        open_incident_id: t.open_incident,
        cert_expires_at: None,
    }
}
