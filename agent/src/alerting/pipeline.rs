//! From a monitor's state change to rows in the delivery outbox:
//! event → silences and maintenance windows → policies ([`route`]) → the [`Gate`]
//! (dedupe, rate limit, reminders) → templates → `notification_deliveries`.
//!
//! Suppression holds back notifications only: the check ran, the heartbeat and the
//! incident are recorded, and the incident is marked suppressed with the reason.
//! The gate's state is saved in the same transaction as the rows it let through
//! ([`Store::record_deliveries`]), so a restart neither forgets a send (and sends it
//! again within the dedupe window) nor loses one.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kubekuma_crds::{MonitorState, Silence};
use tokio::sync::{Mutex, Notify};

use super::policy::{Decision, Gate, GateState, Route, route};
use super::suppress::{Suppression, Suppressor};
use crate::catalog::{ObjKey, Snapshot};
use crate::metrics::Metrics;
use crate::notify::event::{AlertEvent, EventKind};
use crate::notify::template::render_message;
use crate::store::deliveries::{DeliveryStatus, NewDelivery};
use crate::store::{Store, StoreError};

/// A state change of one monitor, as the runtime sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// What happened.
    pub kind: EventKind,
    /// State before.
    pub previous: MonitorState,
    /// State after.
    pub current: MonitorState,
    /// Failure reason of the check.
    pub reason: Option<String>,
    /// The check's message.
    pub message: Option<String>,
    /// The check's latency.
    pub latency_ms: Option<f64>,
    /// The locations that see it (a consensus event: down at, or up at); empty for a
    /// monitor seen by one location.
    pub locations: Vec<String>,
}

/// What [`Alerter::handle`] did with an event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Handled {
    /// The silence or window that held the notifications back.
    pub suppressed: Option<Suppression>,
    /// The recorded deliveries: row ID, provider, status.
    pub deliveries: Vec<(i64, ObjKey, DeliveryStatus)>,
}

/// Turns events into outbox rows; the [`super::outbox::DeliveryWorker`] sends them.
pub struct Alerter {
    store: Store,
    gate: Mutex<Gate>,
    wake: Arc<Notify>,
    metrics: Option<Arc<Metrics>>,
    /// Deliveries the store could not take yet (each batch with its time), oldest
    /// first, at most [`MAX_HELD_DELIVERIES`] rows: recorded in order, with the gate's
    /// state then, by the next save the store takes (an event or the reminder tick).
    /// Only touched while the gate is locked.
    held: std::sync::Mutex<VecDeque<(Vec<NewDelivery>, DateTime<Utc>)>>,
    /// The admin API's silences as last read, used while the store cannot be read (a
    /// silence must not lapse because the database is away).
    last_silences: std::sync::Mutex<Vec<(ObjKey, Silence)>>,
}

/// Most delivery rows held in memory while the store cannot take them; beyond it the
/// oldest are dropped, with an error.
pub const MAX_HELD_DELIVERIES: usize = 10_000;

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter").finish_non_exhaustive()
    }
}

/// The gate with the state saved in `store` (a fresh one when none or unreadable).
async fn load_gate(store: &Store) -> Result<Gate, StoreError> {
    Ok(match store.load_gate_state().await? {
        Some(json) => match serde_json::from_str::<GateState>(&json) {
            Ok(state) => Gate::from_state(state),
            Err(e) => {
                tracing::warn!(error = %e, "saved alert gate state unreadable; starting without dedupe history");
                Gate::new()
            }
        },
        None => Gate::new(),
    })
}

impl Alerter {
    /// An alerter on `store`, with the gate state an earlier run saved; `wake` is
    /// notified when a delivery is queued.
    pub async fn open(
        store: Store,
        wake: Arc<Notify>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Alerter, StoreError> {
        let gate = Mutex::new(load_gate(&store).await?);
        Ok(Alerter {
            store,
            gate,
            wake,
            metrics,
            held: std::sync::Mutex::new(VecDeque::new()),
            last_silences: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Read the gate's state again from the store: a standby taking over continues from
    /// what the leader before it admitted (dedupe windows, rate limits, reminders).
    /// Notifications this agent held while it could not reach the store are dropped: they
    /// came from its own view, and the leader before it decided from the shared one.
    pub async fn reload_gate(&self) -> Result<(), StoreError> {
        let gate = load_gate(&self.store).await?;
        *self.gate.lock().await = gate;
        let dropped = std::mem::take(&mut *self.held.lock().unwrap_or_else(|p| p.into_inner()));
        if !dropped.is_empty() {
            tracing::warn!(
                batches = dropped.len(),
                "taking over: dropped notifications held from this agent's earlier view"
            );
        }
        Ok(())
    }

    /// What the gate remembers now.
    pub async fn gate_state(&self) -> GateState {
        self.gate.lock().await.state().clone()
    }

    /// The silences in force besides the catalog's: those created through the admin API.
    async fn suppressor(&self, snap: &Snapshot, now: DateTime<Utc>) -> Suppressor {
        let extra = match self.store.active_api_silences(now).await {
            Ok(extra) => {
                *self.last_silences.lock().unwrap_or_else(|p| p.into_inner()) = extra.clone();
                extra
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the admin API's silences; using those last read");
                self.last_silences
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            }
        };
        Suppressor::from_snapshot(snap).with_silences(extra)
    }

    /// Handle a state change of monitor `key` (its open incident is `incident`).
    pub async fn handle(
        &self,
        snap: &Snapshot,
        key: &ObjKey,
        incident: Option<i64>,
        change: Change,
        at: DateTime<Utc>,
    ) -> Handled {
        let Some(monitor) = snap.monitors.get(key) else {
            return Handled::default();
        };
        let mut event = AlertEvent::new(
            change.kind,
            &key.namespace,
            &key.name,
            monitor,
            change.previous,
            change.current,
            at,
        );
        event.reason = change.reason;
        event.message = change.message;
        event.latency_ms = change.latency_ms;
        event.locations = change.locations;

        if let Some(s) = self.suppressor(snap, at).await.suppressed(key, monitor, at) {
            tracing::info!(monitor = %key, event = %event.kind, suppressed_by = %s, "notification suppressed");
            if let Some(id) = incident
                && event.kind == EventKind::Down
                && let Err(e) = self.store.set_incident_suppressed(id, &s.to_string()).await
            {
                tracing::error!(monitor = %key, error = %e, "cannot mark the incident suppressed");
            }
            if event.kind == EventKind::Up {
                // No reminders for a monitor that is up again, suppressed or not.
                let mut gate = self.gate.lock().await;
                gate.resolved(key);
                self.save(&gate, Vec::new(), at).await;
            }
            return Handled {
                suppressed: Some(s),
                deliveries: Vec::new(),
            };
        }
        let routes = enabled_routes(snap, route(&event, key, monitor, &snap.policies));
        let mut gate = self.gate.lock().await;
        let decisions = gate.admit(&event, &routes, at);
        let rows = self.rows(snap, &event, &routes, &decisions, incident);
        let deliveries = self.save(&gate, rows, at).await;
        Handled {
            suppressed: None,
            deliveries,
        }
    }

    /// Queue the reminders due at `at` (resend interval while a monitor stays down).
    pub async fn remind(&self, snap: &Snapshot, at: DateTime<Utc>) -> usize {
        let suppressor = self.suppressor(snap, at).await;
        let mut gate = self.gate.lock().await;
        if self.held_rows() > 0 {
            // Deliveries held while the store was away go now if it takes them.
            self.save(&gate, Vec::new(), at).await;
        }
        let mut queued = 0;
        for (r, event) in gate.reminders_due(at) {
            let key = r.monitor.key();
            let Some(monitor) = snap.monitors.get(&key) else {
                gate.resolved(&key);
                continue;
            };
            if suppressor.suppressed(&key, monitor, at).is_some() {
                continue;
            }
            let routes = enabled_routes(snap, vec![r]);
            let decisions = gate.admit(&event, &routes, at);
            let rows = self.rows(snap, &event, &routes, &decisions, None);
            queued += self.save(&gate, rows, at).await.len();
        }
        queued
    }

    fn rows(
        &self,
        snap: &Snapshot,
        event: &AlertEvent,
        routes: &[Route],
        decisions: &[Decision],
        incident: Option<i64>,
    ) -> Vec<NewDelivery> {
        routes
            .iter()
            .zip(decisions)
            .map(|(r, d)| {
                let provider = snap.providers.get(&r.provider.key());
                let formatting = snap
                    .policies
                    .get(&r.policy.key())
                    .and_then(|p| p.spec.formatting.as_ref());
                let rendered = render_message(formatting, event);
                let mut notes: Vec<String> = rendered.errors.iter().map(|e| e.to_string()).collect();
                for e in &rendered.errors {
                    tracing::warn!(policy = %r.policy, error = %e, "template failed; the default text was used");
                }
                if let Some(e) = &r.dedupe_key_error {
                    tracing::warn!(policy = %r.policy, error = %e, "dedupe key template failed; the default key was used");
                    notes.push(format!("spec.routing.dedupe.key: {e}"));
                }
                let (status, error) = match (d, provider) {
                    (Decision::Send, Some(_)) => (DeliveryStatus::Pending, None),
                    (Decision::Send, None) => (
                        DeliveryStatus::Failed,
                        Some(format!("NotificationProvider {} not found", r.provider)),
                    ),
                    (Decision::Deduped { sent_at }, _) => (
                        DeliveryStatus::Deduped,
                        Some(format!(
                            "same dedupe key sent to this provider at {}",
                            sent_at.to_rfc3339()
                        )),
                    ),
                    (Decision::RateLimited { until }, _) => (
                        DeliveryStatus::RateLimited,
                        Some(format!("rate limited until {}", until.to_rfc3339())),
                    ),
                };
                NewDelivery {
                    incident_id: incident,
                    monitor: r.monitor.key(),
                    policy: r.policy.key(),
                    provider: r.provider.key(),
                    provider_type: provider
                        .map(|p| p.spec.type_.as_str().to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    event_kind: event.kind.as_str().to_string(),
                    dedupe_key: r.dedupe_key.clone(),
                    status,
                    error,
                    detail: (!notes.is_empty()).then(|| notes.join("; ")),
                    payload: serde_json::json!({
                        "route": r,
                        "event": event,
                        "title": rendered.title,
                        "body": rendered.body,
                    }),
                }
            })
            .collect()
    }

    /// Delivery rows held now.
    fn held_rows(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(rows, _)| rows.len().max(1))
            .sum()
    }

    /// Record `rows` with the gate's state (the caller holds the gate's lock); wake the
    /// worker when something is to send. Held batches go first, in order; while the
    /// store cannot take writes (or a held batch still fails) the rows are held too, so
    /// a notification the gate let through is never lost to an outage (bounded).
    async fn save(
        &self,
        gate: &Gate,
        rows: Vec<NewDelivery>,
        at: DateTime<Utc>,
    ) -> Vec<(i64, ObjKey, DeliveryStatus)> {
        let state = match serde_json::to_string(gate.state()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize the alert gate");
                None
            }
        };
        let mut held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|p| p.into_inner()));
        let mut recorded = Vec::new();
        if self.store.write_failure().is_none() {
            while let Some((batch, batch_at)) = held.front() {
                match self.record(batch.clone(), state.clone(), *batch_at).await {
                    Ok(_) => {
                        let n = batch.len();
                        held.pop_front();
                        if n > 0 {
                            tracing::warn!(deliveries = n, "held notifications recorded");
                        }
                    }
                    Err(e) if self.store.write_failure().is_none() => {
                        // Not an outage: the same rows would fail again.
                        tracing::error!(error = %e, deliveries = batch.len(), "cannot record held notifications");
                        held.pop_front();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record held notifications; retried later");
                        break;
                    }
                }
            }
            if held.is_empty() {
                match self.record(rows.clone(), state, at).await {
                    Ok(ids) => recorded = ids,
                    Err(e) if self.store.write_failure().is_none() => {
                        // Not an outage: the same rows would fail again.
                        tracing::error!(error = %e, deliveries = rows.len(), "cannot record notifications");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, deliveries = rows.len(), "cannot record notifications; held and retried");
                        held.push_back((rows, at));
                    }
                }
            } else if !rows.is_empty() {
                held.push_back((rows, at));
            }
        } else if !rows.is_empty() || held.is_empty() {
            // An empty batch still carries the gate's state to save.
            tracing::warn!(
                deliveries = rows.len(),
                "store not writable: notifications held until it is"
            );
            held.push_back((rows, at));
        }
        let mut total: usize = held.iter().map(|(r, _)| r.len()).sum();
        while total > MAX_HELD_DELIVERIES {
            let Some((dropped, batch_at)) = held.pop_front() else {
                break;
            };
            total -= dropped.len();
            tracing::error!(deliveries = dropped.len(), at = %batch_at, "store not writable too long: held notifications dropped beyond the bound");
        }
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = held;
        recorded
    }

    /// One `record_deliveries`, with the metrics and the worker's wake-up.
    async fn record(
        &self,
        rows: Vec<NewDelivery>,
        state: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<Vec<(i64, ObjKey, DeliveryStatus)>, StoreError> {
        let summary: Vec<(ObjKey, DeliveryStatus, String)> = rows
            .iter()
            .map(|r| (r.provider.clone(), r.status, r.provider_type.clone()))
            .collect();
        let ids = self.store.record_deliveries(rows, state, at).await?;
        let mut pending = false;
        for (_, status, provider_type) in &summary {
            pending |= *status == DeliveryStatus::Pending;
            if let Some(m) = &self.metrics
                && *status != DeliveryStatus::Pending
            {
                m.delivery(provider_type, status.as_str());
            }
        }
        if pending {
            self.wake.notify_one();
        }
        Ok(ids
            .into_iter()
            .zip(summary)
            .map(|(id, (p, s, _))| (id, p, s))
            .collect())
    }
}

/// Routes to providers that exist and are enabled (a missing one is kept: its row
/// records the failure); disabled providers get nothing.
fn enabled_routes(snap: &Snapshot, routes: Vec<Route>) -> Vec<Route> {
    routes
        .into_iter()
        .filter(|r| {
            snap.providers
                .get(&r.provider.key())
                .is_none_or(|p| p.spec.enabled.unwrap_or(true))
        })
        .collect()
}
