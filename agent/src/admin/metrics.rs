//! `GET /metrics`: Prometheus text format through prometheus-client. SKELETON: filled in
//! by the admin API work. Counters are fed by the runtime (checks), the delivery worker
//! (deliveries) and `up`'s builder loop (builds); gauges are read from the live view at
//! scrape time.

use kubekuma_crds::MonitorType;

/// The agent's metrics.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Metrics::default()
    }

    /// A check of `monitor_type` finished, up or not, taking `seconds`.
    pub fn check_finished(&self, monitor_type: MonitorType, up: bool, seconds: f64) {
        let _ = (monitor_type, up, seconds);
    }

    /// A delivery through a provider of `provider_type` ended with `outcome`
    /// (`sent`, `failed`, `retry`, `deduped`, `rate_limited`).
    pub fn delivery(&self, provider_type: &str, outcome: &str) {
        let _ = (provider_type, outcome);
    }

    /// A site build finished after `seconds`.
    pub fn build_finished(&self, seconds: f64, ok: bool) {
        let _ = (seconds, ok);
    }
}
