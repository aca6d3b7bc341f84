//! Alert events and NotificationPolicy routing: which providers an event goes to, and
//! the [`Gate`] that dedupes, rate limits and schedules reminders. Pure: the caller
//! passes the clock.
//!
//! Semantics (the spec and the CRD docs, where they speak):
//! - Every policy whose `match` selects the monitor applies (the Monitor's
//!   `alerting.policyRef` exists to pick one "instead of every matching one"). Policies
//!   are evaluated in `priority` order, lower first (default 100), ties by
//!   namespace/name. When several policies reach the same provider, the first one wins,
//!   so a provider hears about an event once.
//! - `policyRef` names a policy in the monitor's namespace and selects it whatever its
//!   `match` says; an unknown name routes nowhere (validation reports it).
//! - Triggers default to `onDown`/`onUp` on, `onFlapping` off, `onCertExpiring` off with
//!   `daysThreshold` 14 (fires when fewer days remain). Reminders count as `onDown`.
//!   The monitor's `notifyOn` filters on top (reminders count as `down`).
//! - Provider references without a namespace point into the policy's namespace.
//! - The dedupe key is the policy's `dedupe.key` template (Go-style or minijinja, see
//!   [`crate::notify::template`]), default [`DEFAULT_DEDUPE_KEY`]; no `dedupe` block means no
//!   deduplication. Resend: the monitor's `resendIntervalMinutes` wins over the policy's.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use kubekuma_crds::{Monitor, MonitorState, NotificationPolicy};
use serde::{Deserialize, Serialize};

use crate::catalog::ObjKey;
use crate::catalog::selector::MonitorMatcher;
use crate::notify::event::{AlertEvent, EventKind};
use crate::notify::template;
use crate::state::{Observed, Transition};

/// The events a state-machine result produces (a cert expiry is the caller's call).
pub fn events_of(o: &Observed) -> Vec<EventKind> {
    let mut out = Vec::new();
    match o.transition {
        Transition::WentDown => out.push(EventKind::Down),
        Transition::WentUp => out.push(EventKind::Up),
        Transition::None | Transition::FirstUp => {}
    }
    if o.flapping_changed == Some(true) {
        out.push(EventKind::Flapping);
    }
    out
}

/// Default dedupe key: one key per monitor and event kind.
pub const DEFAULT_DEDUPE_KEY: &str = "{{ monitorId }}-{{ kind }}";

/// Default `priority` of a policy.
pub const DEFAULT_PRIORITY: i64 = 100;

/// Default `onCertExpiring.daysThreshold`.
pub const DEFAULT_CERT_DAYS: i64 = 14;

/// A namespaced reference in records (serializable, unlike [`ObjKey`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ref {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Ref {
    /// The snapshot key.
    pub fn key(&self) -> ObjKey {
        ObjKey::new(&self.namespace, &self.name)
    }
}

impl From<&ObjKey> for Ref {
    fn from(k: &ObjKey) -> Self {
        Ref {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
        }
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One provider an event goes to, and the policy's pacing for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The monitor.
    pub monitor: Ref,
    /// The policy that matched.
    pub policy: Ref,
    /// The provider.
    pub provider: Ref,
    /// Rendered dedupe key.
    pub dedupe_key: String,
    /// Equal keys within this many minutes are sent once; 0 = no dedupe.
    pub dedupe_window_minutes: i64,
    /// Fewest minutes between two notifications of this monitor to this provider.
    pub min_minutes_between_alerts: i64,
    /// Remind every this many minutes while down; 0 = never.
    pub resend_interval_minutes: i64,
    /// The dedupe key template failed (the default key was used instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key_error: Option<String>,
}

/// Whether a policy's triggers and the monitor's `notifyOn` let `kind` through.
fn fires(policy: &NotificationPolicy, monitor: &Monitor, kind: EventKind) -> bool {
    let t = policy.spec.triggers.clone().unwrap_or_default();
    let by_policy = match kind {
        EventKind::Down | EventKind::Reminder => t.on_down.unwrap_or(true),
        EventKind::Up => t.on_up.unwrap_or(true),
        EventKind::Flapping => t.on_flapping.unwrap_or(false),
        EventKind::CertExpiring { days_left } => t.on_cert_expiring.is_some_and(|c| {
            c.enabled.unwrap_or(false) && days_left < c.days_threshold.unwrap_or(DEFAULT_CERT_DAYS)
        }),
    };
    let notify = monitor
        .spec
        .alerting
        .as_ref()
        .and_then(|a| a.notify_on)
        .unwrap_or_default();
    let by_monitor = match kind {
        EventKind::Down | EventKind::Reminder => notify.down,
        EventKind::Up => notify.up,
        EventKind::Flapping => notify.flapping,
        EventKind::CertExpiring { .. } => notify.cert_expiring,
    };
    by_policy && by_monitor
}

/// The policies that apply to the monitor `key`, in evaluation order.
pub fn matching_policies<'a>(
    key: &ObjKey,
    monitor: &Monitor,
    policies: &'a BTreeMap<ObjKey, NotificationPolicy>,
) -> Vec<(&'a ObjKey, &'a NotificationPolicy)> {
    let policy_ref = monitor
        .spec
        .alerting
        .as_ref()
        .and_then(|a| a.policy_ref.as_ref());
    let mut out: Vec<(&ObjKey, &NotificationPolicy)> = match policy_ref {
        Some(r) => policies
            .get_key_value(&ObjKey::new(&key.namespace, &r.name))
            .into_iter()
            .collect(),
        None => policies
            .iter()
            .filter(|(pk, p)| {
                MonitorMatcher::new(p.spec.match_.as_ref(), &pk.namespace).matches(key, monitor)
            })
            .collect(),
    };
    // Stable sort: ties keep the map's namespace/name order.
    out.sort_by_key(|(_, p)| p.spec.priority.unwrap_or(DEFAULT_PRIORITY));
    out
}

/// Where `event` about monitor `key` goes: one [`Route`] per provider, in policy order.
pub fn route(
    event: &AlertEvent,
    key: &ObjKey,
    monitor: &Monitor,
    policies: &BTreeMap<ObjKey, NotificationPolicy>,
) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    let monitor_resend = monitor
        .spec
        .alerting
        .as_ref()
        .and_then(|a| a.resend_interval_minutes);
    for (pk, p) in matching_policies(key, monitor, policies) {
        if !fires(p, monitor, event.kind) {
            continue;
        }
        let routing = p.spec.routing.clone().unwrap_or_default();
        let dedupe = routing.dedupe.clone().unwrap_or_default();
        let (dedupe_key, dedupe_key_error) = dedupe_key(dedupe.key.as_deref(), event);
        for entry in p.spec.provider_refs() {
            let provider = Ref {
                namespace: entry.reference.namespace_or(&pk.namespace).to_string(),
                name: entry.reference.name.clone(),
            };
            if out.iter().any(|r| r.provider == provider) {
                continue;
            }
            out.push(Route {
                monitor: Ref::from(key),
                policy: Ref::from(pk),
                provider,
                dedupe_key: dedupe_key.clone(),
                dedupe_window_minutes: if routing.dedupe.is_some() {
                    dedupe.window_minutes.unwrap_or(0).max(0)
                } else {
                    0
                },
                min_minutes_between_alerts: routing
                    .rate_limit
                    .as_ref()
                    .and_then(|r| r.min_minutes_between_alerts)
                    .unwrap_or(0)
                    .max(0),
                resend_interval_minutes: monitor_resend
                    .or(routing
                        .resend
                        .as_ref()
                        .and_then(|r| r.resend_interval_minutes))
                    .unwrap_or(0)
                    .max(0),
                dedupe_key_error: dedupe_key_error.clone(),
            });
        }
    }
    out
}

/// The rendered dedupe key, falling back to the default template on error.
fn dedupe_key(template_src: Option<&str>, event: &AlertEvent) -> (String, Option<String>) {
    let default = || {
        template::render(DEFAULT_DEDUPE_KEY, event, template::Part::DedupeKey).unwrap_or_default()
    };
    match template_src {
        None => (default(), None),
        Some(src) => match template::render(src, event, template::Part::DedupeKey) {
            Ok(k) => (k, None),
            Err(e) => (default(), Some(e.to_string())),
        },
    }
}

/// What the [`Gate`] decided for one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "decision",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Decision {
    /// Send it.
    Send,
    /// The same dedupe key went to this provider at `sent_at`, within the window.
    Deduped {
        /// The earlier send.
        sent_at: DateTime<Utc>,
    },
    /// This monitor notified this provider too recently; allowed again at `until`.
    RateLimited {
        /// When the next notification may go.
        until: DateTime<Utc>,
    },
}

impl Decision {
    /// `send`, `deduped` or `rateLimited`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Send => "send",
            Decision::Deduped { .. } => "deduped",
            Decision::RateLimited { .. } => "rateLimited",
        }
    }
}

/// One notification the gate let through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentRecord {
    /// Monitor, policy, provider and key of the route.
    pub route: Route,
    /// Event kind (`down`, `up`, …).
    pub kind: String,
    /// When it was let through.
    pub at: DateTime<Utc>,
    /// When it stops mattering for dedupe and rate limiting.
    pub keep_until: DateTime<Utc>,
}

/// A monitor that is down on a route with reminders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownRecord {
    /// The route of the down notification.
    pub route: Route,
    /// The down event.
    pub event: AlertEvent,
    /// The down notification or the latest reminder.
    pub last_at: DateTime<Utc>,
    /// Reminders so far.
    pub reminders: u32,
}

/// Everything the [`Gate`] remembers, for persisting and restoring.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateState {
    /// Recent sends.
    pub sent: Vec<SentRecord>,
    /// Monitors down on routes with reminders.
    pub down: Vec<DownRecord>,
}

/// Dedupe, rate limit and reminders. The caller passes every event through
/// [`Gate::admit`] (also events with no route, so an `up` stops reminders) and sends
/// what it returns as [`Decision::Send`]; suppressed events should skip `admit` except
/// for `up`.
#[derive(Clone, Debug, Default)]
pub struct Gate {
    state: GateState,
}

fn minutes(m: i64) -> Duration {
    Duration::minutes(m.max(0))
}

impl Gate {
    /// An empty gate.
    pub fn new() -> Self {
        Gate::default()
    }

    /// A gate restored from persisted records.
    pub fn from_state(state: GateState) -> Self {
        Gate { state }
    }

    /// What the gate remembers.
    pub fn state(&self) -> &GateState {
        &self.state
    }

    /// What `route` would get now, without recording anything.
    pub fn decide(&self, route: &Route, now: DateTime<Utc>) -> Decision {
        let window = minutes(route.dedupe_window_minutes);
        if route.dedupe_window_minutes > 0
            && let Some(prev) = self
                .state
                .sent
                .iter()
                .filter(|s| {
                    s.route.provider == route.provider && s.route.dedupe_key == route.dedupe_key
                })
                .map(|s| s.at)
                .filter(|at| now - *at < window)
                .max()
        {
            return Decision::Deduped { sent_at: prev };
        }
        let gap = minutes(route.min_minutes_between_alerts);
        if route.min_minutes_between_alerts > 0
            && let Some(prev) = self
                .state
                .sent
                .iter()
                .filter(|s| s.route.provider == route.provider && s.route.monitor == route.monitor)
                .map(|s| s.at)
                .filter(|at| now - *at < gap)
                .max()
        {
            return Decision::RateLimited { until: prev + gap };
        }
        Decision::Send
    }

    /// Decide each of `event`'s routes and record the sends; keeps reminder state
    /// (a `down` starts reminders, a `reminder` advances them, an `up` ends them).
    pub fn admit(
        &mut self,
        event: &AlertEvent,
        routes: &[Route],
        now: DateTime<Utc>,
    ) -> Vec<Decision> {
        self.state.sent.retain(|s| s.keep_until > now);
        if event.kind == EventKind::Up {
            self.resolved(&ObjKey::new(&event.monitor_namespace, &event.monitor_name));
        }
        let mut out = Vec::with_capacity(routes.len());
        for route in routes {
            let mut d = self.decide(route, now);
            // A recovery is never held back by the rate limit: whoever heard "down" must
            // hear "up", or they keep believing the monitor is down. (Dedupe still applies.)
            if event.kind == EventKind::Up && matches!(d, Decision::RateLimited { .. }) {
                d = Decision::Send;
            }
            // A reminder repeats the down alert on purpose, with the down alert's key: the
            // resend interval paces it, not the dedupe window.
            if event.kind == EventKind::Reminder && matches!(d, Decision::Deduped { .. }) {
                d = Decision::Send;
            }
            if d == Decision::Send {
                let keep = route
                    .dedupe_window_minutes
                    .max(route.min_minutes_between_alerts);
                self.state.sent.push(SentRecord {
                    route: route.clone(),
                    kind: event.kind.as_str().to_string(),
                    at: now,
                    keep_until: now + minutes(keep),
                });
            }
            let same = |r: &DownRecord| {
                r.route.monitor == route.monitor
                    && r.route.policy == route.policy
                    && r.route.provider == route.provider
            };
            match event.kind {
                EventKind::Down if route.resend_interval_minutes > 0 => {
                    self.state.down.retain(|r| !same(r));
                    self.state.down.push(DownRecord {
                        route: route.clone(),
                        event: event.clone(),
                        last_at: now,
                        reminders: 0,
                    });
                }
                EventKind::Reminder => {
                    if let Some(r) = self.state.down.iter_mut().find(|r| same(r)) {
                        r.last_at = now;
                        r.reminders += 1;
                    }
                }
                _ => {}
            }
            out.push(d);
        }
        out
    }

    /// The monitor is up (or gone): no more reminders for it.
    pub fn resolved(&mut self, monitor: &ObjKey) {
        let m = Ref::from(monitor);
        self.state.down.retain(|r| r.route.monitor != m);
    }

    /// Reminders due at `now`: the route and a `reminder` event to pass to
    /// [`Gate::admit`] (and to render).
    pub fn reminders_due(&self, now: DateTime<Utc>) -> Vec<(Route, AlertEvent)> {
        self.state
            .down
            .iter()
            .filter(|r| now - r.last_at >= minutes(r.route.resend_interval_minutes))
            .map(|r| {
                let mut e = r.event.clone();
                e.kind = EventKind::Reminder;
                e.previous_state = MonitorState::Down;
                e.current_state = MonitorState::Down;
                e.is_state_change = false;
                e.timestamp = now;
                (r.route.clone(), e)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + min * 60, 0).unwrap_or_default()
    }

    fn monitor(yaml: &str) -> Monitor {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn event(kind: EventKind, now: DateTime<Utc>) -> AlertEvent {
        let m = monitor(
            "{apiVersion: monitoring.kubekuma.io/v1, kind: Monitor, metadata: {name: api, namespace: prod, labels: {team: a}}, spec: {type: tcp, target: {tcp: {host: h, port: 1}}, annotations: {runbook: r}}}",
        );
        let (prev, cur) = match kind {
            EventKind::Up => (MonitorState::Down, MonitorState::Up),
            _ => (MonitorState::Up, MonitorState::Down),
        };
        AlertEvent::new(kind, "prod", "api", &m, prev, cur, now)
    }

    #[test]
    fn event_serializes_to_the_spec_json() {
        let mut e = event(EventKind::CertExpiring { days_left: 3 }, at(0));
        e.latency_ms = Some(12.5);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "kind": "certExpiring", "daysLeft": 3,
                "monitorId": "prod/api", "monitorNamespace": "prod", "monitorName": "api",
                "previousState": "up", "currentState": "down", "latencyMs": 12.5,
                "timestamp": "2027-01-15T08:00:00Z", "isStateChange": false,
                "labels": {"team": "a"}, "annotations": {"runbook": "r"},
            })
        );
        assert_eq!(serde_json::from_value::<AlertEvent>(v).unwrap(), e);
    }

    #[test]
    fn events_from_state_machine_results() {
        let o = |transition, flapping_changed| Observed {
            state: MonitorState::Down,
            transition,
            flapping_changed,
            retry_in: None,
            attempts: 1,
        };
        assert_eq!(
            events_of(&o(Transition::WentDown, Some(true))),
            [EventKind::Down, EventKind::Flapping]
        );
        assert_eq!(
            events_of(&o(Transition::WentUp, Some(false))),
            [EventKind::Up]
        );
        assert_eq!(events_of(&o(Transition::FirstUp, None)), []);
    }

    fn route_to(provider: &str, dedupe: i64, rate: i64, resend: i64, key: &str) -> Route {
        Route {
            monitor: Ref {
                namespace: "prod".into(),
                name: "api".into(),
            },
            policy: Ref {
                namespace: "prod".into(),
                name: "p".into(),
            },
            provider: Ref {
                namespace: "prod".into(),
                name: provider.into(),
            },
            dedupe_key: key.into(),
            dedupe_window_minutes: dedupe,
            min_minutes_between_alerts: rate,
            resend_interval_minutes: resend,
            dedupe_key_error: None,
        }
    }

    #[test]
    fn dedupe_within_the_window_only() {
        let mut g = Gate::new();
        let r = route_to("slack", 5, 0, 0, "k");
        let e = event(EventKind::Down, at(0));
        assert_eq!(
            g.admit(&e, std::slice::from_ref(&r), at(0)),
            [Decision::Send]
        );
        assert_eq!(
            g.admit(&e, std::slice::from_ref(&r), at(4)),
            [Decision::Deduped { sent_at: at(0) }]
        );
        // Another provider, or another key, is not a duplicate.
        let other = route_to("mail", 5, 0, 0, "k");
        assert_eq!(g.admit(&e, &[other], at(4)), [Decision::Send]);
        let key2 = route_to("slack", 5, 0, 0, "k2");
        assert_eq!(g.admit(&e, &[key2], at(4)), [Decision::Send]);
        assert_eq!(g.admit(&e, &[r], at(5)), [Decision::Send]);
    }

    #[test]
    fn rate_limit_per_monitor_and_provider() {
        let mut g = Gate::new();
        let down = event(EventKind::Down, at(0));
        let flap = event(EventKind::Flapping, at(0));
        let up = event(EventKind::Up, at(0));
        let r = |k: &str| route_to("slack", 0, 15, 0, k);
        assert_eq!(g.admit(&down, &[r("a")], at(0)), [Decision::Send]);
        assert_eq!(
            g.admit(&flap, &[r("b")], at(10)),
            [Decision::RateLimited { until: at(15) }]
        );
        assert_eq!(
            g.admit(&flap, &[route_to("mail", 0, 15, 0, "b")], at(10)),
            [Decision::Send]
        );
        assert_eq!(g.admit(&flap, &[r("b")], at(15)), [Decision::Send]);
        // A recovery always goes out, even inside the gap.
        assert_eq!(g.admit(&up, &[r("u")], at(16)), [Decision::Send]);
        // Restored from its records, the gate decides the same.
        let restored = Gate::from_state(
            serde_json::from_value(serde_json::to_value(g.state()).unwrap()).unwrap(),
        );
        assert_eq!(
            restored.decide(&r("c"), at(20)),
            Decision::RateLimited { until: at(31) }
        );
        assert_eq!(restored.decide(&r("c"), at(31)), Decision::Send);
    }

    #[test]
    fn reminders_while_down_until_up() {
        let mut g = Gate::new();
        let r = route_to("slack", 0, 0, 60, "k");
        assert_eq!(
            g.admit(
                &event(EventKind::Down, at(0)),
                std::slice::from_ref(&r),
                at(0)
            ),
            [Decision::Send]
        );
        assert!(g.reminders_due(at(59)).is_empty());
        let due = g.reminders_due(at(60));
        assert_eq!(due.len(), 1);
        let (rr, e) = &due[0];
        assert_eq!(
            (rr, e.kind, e.is_state_change, e.timestamp),
            (&r, EventKind::Reminder, false, at(60))
        );
        assert_eq!(
            g.admit(e, std::slice::from_ref(rr), at(60)),
            [Decision::Send]
        );
        assert!(g.reminders_due(at(119)).is_empty());
        assert_eq!(g.reminders_due(at(120)).len(), 1);
        assert_eq!(g.state().down[0].reminders, 1);
        // Up (even with no route) ends reminders.
        g.admit(&event(EventKind::Up, at(121)), &[], at(121));
        assert!(g.reminders_due(at(500)).is_empty());
        // No resend interval: no reminders.
        g.admit(
            &event(EventKind::Down, at(600)),
            &[route_to("slack", 0, 0, 0, "k")],
            at(600),
        );
        assert!(g.reminders_due(at(10_000)).is_empty());
    }

    #[test]
    fn reminders_are_not_deduped_by_the_down_alerts_key() {
        let mut g = Gate::new();
        let r = route_to("slack", 240, 0, 60, "k");
        g.admit(
            &event(EventKind::Down, at(0)),
            std::slice::from_ref(&r),
            at(0),
        );
        let (rr, e) = g.reminders_due(at(60)).remove(0);
        assert_eq!(g.admit(&e, &[rr], at(60)), [Decision::Send]);
        // A second down with the same key inside the window still is.
        assert!(matches!(
            g.admit(&event(EventKind::Down, at(61)), &[r], at(61))[..],
            [Decision::Deduped { .. }]
        ));
    }
}
