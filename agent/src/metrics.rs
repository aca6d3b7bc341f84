//! `GET /metrics`: the OpenMetrics text format through prometheus-client. Counters and
//! histograms are fed by the runtime (checks), the delivery worker (deliveries) and
//! `up`'s builder loop (builds); gauges (monitors by state, certificate days left) are
//! set from the live view and the catalog at scrape time.
//!
//! | series | labels |
//! |---|---|
//! | `kubekuma_checks_total` | `type`, `result` (`up`/`down`) |
//! | `kubekuma_check_duration_seconds` (histogram) | `type` |
//! | `kubekuma_notification_deliveries_total` | `provider_type`, `outcome` |
//! | `kubekuma_builds_total` | `result` (`ok`/`error`) |
//! | `kubekuma_build_duration_seconds` (histogram) | — |
//! | `kubekuma_flushes_total` | `trigger` (`periodic`/`urgent`/`final`) |
//! | `kubekuma_object_writes_total` | `trigger` (the flush that wrote them) |
//! | `kubekuma_monitors` (gauge) | `state` |
//! | `kubekuma_certificate_days_left` (gauge) | `namespace`, `name` |
//!
//! A reader confined to some namespaces (a principal outside the home namespace) gets
//! [`Metrics::render_scoped`] instead: only `kubekuma_monitors` by `namespace` and
//! `state` and `kubekuma_certificate_days_left`, both for the namespaces it sees; the
//! agent-wide counters (checks, deliveries, builds) add up every namespace and are left
//! out. An anonymous scrape (`spec.publicEndpoints.metrics` is public by default) gets
//! [`Metrics::render_public`]: everything but the certificate series, whose labels name
//! namespaces and monitors; `kubekuma_monitors` there counts by state only.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kubekuma_crds::{MonitorState, MonitorType};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::catalog::Snapshot;
use crate::state::live::Live;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

const STATES: [MonitorState; 5] = [
    MonitorState::Up,
    MonitorState::Down,
    MonitorState::Pending,
    MonitorState::Flapping,
    MonitorState::Paused,
];

fn check_buckets() -> Histogram {
    // 5 ms … ~82 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

fn build_buckets() -> Histogram {
    // 50 ms … ~410 s.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The same families without the certificate series (anonymous scrapes).
    public: Registry,
    checks: Family<Labels, Counter>,
    check_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    deliveries: Family<Labels, Counter>,
    builds: Family<Labels, Counter>,
    build_seconds: Histogram,
    flushes: Family<Labels, Counter>,
    object_writes: Family<Labels, Counter>,
    monitors: Family<Labels, Gauge>,
    cert_days: Family<Labels, Gauge>,
    /// One scrape at a time (the gauges are reset and set for each).
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let checks = Family::<Labels, Counter>::default();
        let check_seconds: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(check_buckets);
        let deliveries = Family::<Labels, Counter>::default();
        let builds = Family::<Labels, Counter>::default();
        let build_seconds = build_buckets();
        let flushes = Family::<Labels, Counter>::default();
        let object_writes = Family::<Labels, Counter>::default();
        let monitors = Family::<Labels, Gauge>::default();
        let cert_days = Family::<Labels, Gauge>::default();
        registry.register(
            "kubekuma_checks",
            "Finished checks by monitor type and result",
            checks.clone(),
        );
        registry.register(
            "kubekuma_check_duration_seconds",
            "Duration of checks by monitor type",
            check_seconds.clone(),
        );
        registry.register(
            "kubekuma_notification_deliveries",
            "Notification deliveries by provider type and outcome",
            deliveries.clone(),
        );
        registry.register("kubekuma_builds", "Site builds by result", builds.clone());
        registry.register(
            "kubekuma_build_duration_seconds",
            "Duration of site builds",
            build_seconds.clone(),
        );
        registry.register(
            "kubekuma_flushes",
            "Exports to the object store by trigger",
            flushes.clone(),
        );
        registry.register(
            "kubekuma_object_writes",
            "Objects written to the object store by the trigger of the export",
            object_writes.clone(),
        );
        registry.register(
            "kubekuma_monitors",
            "Monitors of the catalog by current state",
            monitors.clone(),
        );
        let mut public = Registry::default();
        public.register(
            "kubekuma_checks",
            "Finished checks by monitor type and result",
            checks.clone(),
        );
        public.register(
            "kubekuma_check_duration_seconds",
            "Duration of checks by monitor type",
            check_seconds.clone(),
        );
        public.register(
            "kubekuma_notification_deliveries",
            "Notification deliveries by provider type and outcome",
            deliveries.clone(),
        );
        public.register("kubekuma_builds", "Site builds by result", builds.clone());
        public.register(
            "kubekuma_build_duration_seconds",
            "Duration of site builds",
            build_seconds.clone(),
        );
        public.register(
            "kubekuma_flushes",
            "Exports to the object store by trigger",
            flushes.clone(),
        );
        public.register(
            "kubekuma_object_writes",
            "Objects written to the object store by the trigger of the export",
            object_writes.clone(),
        );
        public.register(
            "kubekuma_monitors",
            "Monitors of the catalog by current state",
            monitors.clone(),
        );
        register_cert_days(&mut registry, &cert_days);
        Metrics {
            registry,
            public,
            checks,
            check_seconds,
            deliveries,
            builds,
            build_seconds,
            flushes,
            object_writes,
            monitors,
            cert_days,
            scrape: Mutex::new(()),
        }
    }

    /// A check of `monitor_type` finished, up or not, taking `seconds`.
    pub fn check_finished(&self, monitor_type: MonitorType, up: bool, seconds: f64) {
        let t = monitor_type.as_str().to_string();
        let result = if up { "up" } else { "down" };
        self.checks
            .get_or_create(&vec![("type", t.clone()), ("result", result.to_string())])
            .inc();
        self.check_seconds
            .get_or_create(&vec![("type", t)])
            .observe(seconds.max(0.0));
    }

    /// A delivery through a provider of `provider_type` ended with `outcome`
    /// (`sent`, `failed`, `retry`, `deduped`, `rate_limited`).
    pub fn delivery(&self, provider_type: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&vec![
                ("provider_type", provider_type.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    /// A site build finished after `seconds`.
    pub fn build_finished(&self, seconds: f64, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.builds
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        self.build_seconds.observe(seconds.max(0.0));
    }

    /// An export to the object store (`trigger`: `periodic`, `urgent` or `final`)
    /// wrote `objects` objects.
    pub fn flushed(&self, trigger: &str, objects: usize) {
        let labels = vec![("trigger", trigger.to_string())];
        self.flushes.get_or_create(&labels).inc();
        self.object_writes
            .get_or_create(&labels)
            .inc_by(objects as u64);
    }

    /// The exports with `trigger` so far and the objects they wrote (for tests and
    /// benchmarks).
    pub fn flush_counts(&self, trigger: &str) -> (u64, u64) {
        let labels = vec![("trigger", trigger.to_string())];
        (
            self.flushes.get_or_create(&labels).get(),
            self.object_writes.get_or_create(&labels).get(),
        )
    }

    /// The exposition for a reader confined to the namespaces `sees` accepts: monitors by
    /// namespace and state, and certificate days left, of those namespaces only (a
    /// namespace it sees without monitors has its zeros); nothing that adds up other
    /// namespaces.
    pub fn render_scoped(
        &self,
        snapshot: &Snapshot,
        live: &Live,
        sees: &dyn Fn(&str) -> bool,
    ) -> String {
        let mut registry = Registry::default();
        let monitors = Family::<Labels, Gauge>::default();
        let cert_days = Family::<Labels, Gauge>::default();
        registry.register(
            "kubekuma_monitors",
            "Monitors of the catalog by namespace and current state",
            monitors.clone(),
        );
        register_cert_days(&mut registry, &cert_days);
        for (ns, counts) in count_states(snapshot, live, sees, &cert_days) {
            for (state, n) in STATES.iter().zip(counts) {
                monitors
                    .get_or_create(&vec![
                        ("namespace", ns.to_string()),
                        ("state", state.as_str().to_string()),
                    ])
                    .set(n);
            }
        }
        text(&registry)
    }

    /// The exposition ([`CONTENT_TYPE`]): counters and histograms so far, gauges from the
    /// monitors of `snapshot` and their live state (a disabled monitor counts as paused,
    /// one without a result as pending).
    pub fn render(&self, snapshot: &Snapshot, live: &Live) -> String {
        self.render_into(snapshot, live, false)
    }

    /// The exposition for an anonymous reader: as [`Metrics::render`] without
    /// `kubekuma_certificate_days_left` (its labels name namespaces and monitors); the
    /// rest names monitor types, results, provider types and states, never a tenant.
    pub fn render_public(&self, snapshot: &Snapshot, live: &Live) -> String {
        self.render_into(snapshot, live, true)
    }

    fn render_into(&self, snapshot: &Snapshot, live: &Live, public: bool) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.monitors.clear();
        self.cert_days.clear();
        let mut counts = [0i64; STATES.len()];
        for per_namespace in count_states(snapshot, live, &|_| true, &self.cert_days).values() {
            for (total, n) in counts.iter_mut().zip(per_namespace) {
                *total += n;
            }
        }
        for (state, n) in STATES.iter().zip(counts) {
            self.monitors
                .get_or_create(&vec![("state", state.as_str().to_string())])
                .set(n);
        }
        text(if public { &self.public } else { &self.registry })
    }
}

fn register_cert_days(registry: &mut Registry, cert_days: &Family<Labels, Gauge>) {
    registry.register(
        "kubekuma_certificate_days_left",
        "Days until the TLS certificate seen by the last check expires",
        cert_days.clone(),
    );
}

/// The monitors of the namespaces `sees` accepts, counted by namespace and shown state
/// (in the order of [`STATES`]; a disabled monitor counts as paused, one without a
/// result as pending); each one's certificate days left set in `cert_days`.
fn count_states<'a>(
    snapshot: &'a Snapshot,
    live: &Live,
    sees: &dyn Fn(&str) -> bool,
    cert_days: &Family<Labels, Gauge>,
) -> BTreeMap<&'a str, [i64; STATES.len()]> {
    let mut counts: BTreeMap<&str, [i64; STATES.len()]> = BTreeMap::new();
    for (key, m) in snapshot.monitors.iter().filter(|(k, _)| sees(&k.namespace)) {
        let lm = live.monitors.get(key);
        let state = if !m.spec.is_enabled() {
            MonitorState::Paused
        } else {
            lm.map(|l| l.tracker.shown())
                .unwrap_or(MonitorState::Pending)
        };
        let c = counts.entry(key.namespace.as_str()).or_default();
        if let Some(i) = STATES.iter().position(|s| *s == state) {
            c[i] += 1;
        }
        if let Some(cert) = lm.and_then(|l| l.cert.as_ref()) {
            cert_days
                .get_or_create(&vec![
                    ("namespace", key.namespace.clone()),
                    ("name", key.name.clone()),
                ])
                .set(cert.days_left);
        }
    }
    counts
}

/// The OpenMetrics text of `registry`.
fn text(registry: &Registry) -> String {
    let mut out = String::new();
    if encode(&mut out, registry).is_err() {
        out = "# EOF\n".into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_after_events() {
        let m = Metrics::new();
        m.check_finished(MonitorType::Http, true, 0.12);
        m.check_finished(MonitorType::Http, false, 0.5);
        m.check_finished(MonitorType::Dns, true, 0.01);
        m.delivery("slack", "sent");
        m.build_finished(1.5, true);
        let text = m.render(&Snapshot::default(), &Live::default());
        for want in [
            "kubekuma_checks_total{type=\"http\",result=\"up\"} 1",
            "kubekuma_checks_total{type=\"http\",result=\"down\"} 1",
            "kubekuma_checks_total{type=\"dns\",result=\"up\"} 1",
            "kubekuma_check_duration_seconds_count{type=\"http\"} 2",
            "kubekuma_notification_deliveries_total{provider_type=\"slack\",outcome=\"sent\"} 1",
            "kubekuma_builds_total{result=\"ok\"} 1",
            "kubekuma_build_duration_seconds_count 1",
            "kubekuma_monitors{state=\"up\"} 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
        let public = m.render_public(&Snapshot::default(), &Live::default());
        assert!(public.contains("kubekuma_checks_total{type=\"http\",result=\"up\"} 1"));
        assert!(
            !public.contains("kubekuma_certificate_days_left"),
            "{public}"
        );
    }
}
