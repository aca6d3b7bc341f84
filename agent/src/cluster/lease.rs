//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it: only the holder schedules checks and writes status.
//!
//! A replica takes the Lease when it does not exist, names no holder, or has not changed
//! for its `leaseDurationSeconds` as measured on this replica's own monotonic clock since it
//! last saw the record change (never by comparing `renewTime` with the local clock, so skew
//! between nodes does not matter). Every write carries the resourceVersion it read, so of
//! two replicas racing for the Lease one gets `409 Conflict` and stays standby.
//!
//! The leader renews every `retry_period`. When no renewal has succeeded for
//! `renew_deadline` since the last successful one was sent, it steps down; because
//! `renew_deadline < lease_duration`, that happens before a standby may take over. On a
//! clean shutdown it stops leading, then releases the Lease (no holder, 1 s duration) so a
//! standby takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout_at};

/// The Lease's default name.
pub const DEFAULT_LEASE_NAME: &str = "kubekuma-agent";

/// Standbys wait `retry_period · (1 + JITTER · r)`, r in [0, 1), between attempts, as
/// client-go does, so replicas do not retry in lockstep.
const JITTER: f64 = 1.2;

/// Where the Lease lives, who we are, and the timing.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseConfig {
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's name in `holderIdentity`; unique among replicas.
    pub identity: String,
    /// How long a standby waits, after it last saw the record change, before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries to acquire.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The defaults (15 s / 10 s / 2 s, Lease `kubekuma-agent`) in `namespace`, with
    /// [`default_identity`].
    pub fn new(namespace: impl Into<String>) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.into(),
            name: DEFAULT_LEASE_NAME.into(),
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks the rules client-go enforces: names set, and
    /// `lease_duration > renew_deadline > 1.2 · retry_period > 0`.
    pub fn validate(&self) -> Result<(), LeaseConfigError> {
        let invalid = |why: &str| Err(LeaseConfigError(why.into()));
        if self.namespace.is_empty() || self.name.is_empty() {
            return invalid("the lease namespace and name must not be empty");
        }
        if self.identity.is_empty() {
            return invalid("the identity must not be empty");
        }
        if self.retry_period.is_zero() {
            return invalid("the retry period must be positive");
        }
        if self.renew_deadline <= self.retry_period.mul_f64(JITTER) {
            return invalid("the renew deadline must be longer than 1.2 times the retry period");
        }
        if self.lease_duration <= self.renew_deadline {
            return invalid("the lease duration must be longer than the renew deadline");
        }
        if self.lease_duration > Duration::from_secs(i32::MAX as u64) {
            return invalid("the lease duration is too long");
        }
        Ok(())
    }

    /// `leaseDurationSeconds`: whole seconds, rounded up (standbys then wait longer, never
    /// shorter, than the leader's deadline allows).
    fn lease_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
    }
}

/// Leader election settings that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid leader election settings: {0}")]
pub struct LeaseConfigError(String);

/// `POD_NAME` (set from the downward API), else the host name (a pod's name in a
/// cluster), else a random name.
pub fn default_identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.trim().is_empty()
    {
        return name.trim().to_string();
    }
    match hostname::get().ok().and_then(|h| h.into_string().ok()) {
        Some(h) if !h.is_empty() => h,
        _ => format!("kubekuma-{:08x}", rand::random::<u32>()),
    }
}

/// A running election: whether this replica leads, and the task.
#[derive(Debug)]
pub struct Leadership {
    /// `true` while this replica leads; gate scheduling, status writes and `/ready` on it.
    pub is_leader: watch::Receiver<bool>,
    /// Ends after shutdown, once the Lease is released (or releasing failed).
    pub task: JoinHandle<()>,
}

/// What one attempt found.
#[derive(Debug)]
enum Outcome {
    /// We hold the Lease: written just now.
    Held,
    /// Someone else holds it and it has not expired.
    Other(String),
    /// Our write lost a race (`409`); try again later.
    Conflict,
}

/// Takes and keeps the Lease; see the module documentation.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The Lease as last read or written.
    lease: Option<Lease>,
    /// The record as last seen, and when (this replica's clock) it last changed.
    observed: Option<(LeaseSpec, Instant)>,
    /// The last holder logged, so a new leader is logged once.
    logged_holder: Option<String>,
}

impl LeaderElector {
    /// An elector for the Lease `config` names; nothing is sent until it runs.
    pub fn new(client: kube::Client, config: LeaseConfig) -> Result<Self, LeaseConfigError> {
        config.validate()?;
        Ok(LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            lease: None,
            observed: None,
            logged_holder: None,
        })
    }

    /// This replica's `holderIdentity`.
    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Runs the election on a task until `shutdown` turns `true` (or its sender is dropped).
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> Leadership {
        let (tx, is_leader) = watch::channel(false);
        let task = tokio::spawn(self.run(shutdown, tx));
        Leadership { is_leader, task }
    }

    /// Runs the election, publishing the role on `is_leader`, until `shutdown` turns `true`
    /// (or its sender is dropped); then stops leading and releases the Lease if held.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        is_leader: watch::Sender<bool>,
    ) {
        let cfg = self.config.clone();
        let (ns, name, me) = (&cfg.namespace, &cfg.name, &cfg.identity);
        // When the last successful renewal was sent, while we lead.
        let mut leading: Option<Instant> = None;
        let mut last_error = String::new();
        let stop = |leading: &mut Option<Instant>, why: &str| {
            if leading.take().is_some() {
                is_leader.send_replace(false);
                tracing::info!(lease = %name, namespace = %ns, identity = %me, "lost leadership: {why}");
            }
        };
        let overdue = |leading: Option<Instant>| {
            leading.is_some_and(|t| Instant::now() >= t + cfg.renew_deadline)
        };
        loop {
            if overdue(leading) {
                stop(
                    &mut leading,
                    "no renewal succeeded within the renew deadline",
                );
            }
            if stopping(&shutdown) {
                break;
            }
            let started = Instant::now();
            let budget = leading.unwrap_or(started) + cfg.renew_deadline;
            match timeout_at(budget, self.try_acquire_or_renew()).await {
                Ok(Ok(Outcome::Held)) => {
                    last_error.clear();
                    if leading.replace(started).is_none() {
                        if stopping(&shutdown) {
                            break;
                        }
                        is_leader.send_replace(true);
                        self.logged_holder = None;
                        let transitions = self.observed_transitions();
                        tracing::info!(lease = %name, namespace = %ns, identity = %me, transitions, "acquired leadership");
                    }
                }
                Ok(Ok(Outcome::Other(holder))) => {
                    last_error.clear();
                    stop(&mut leading, &format!("{holder} holds the lease"));
                    if self.logged_holder.as_deref() != Some(holder.as_str()) {
                        tracing::info!(lease = %name, namespace = %ns, leader = %holder, "standing by");
                        self.logged_holder = Some(holder);
                    }
                }
                Ok(Ok(Outcome::Conflict)) => {
                    tracing::debug!(lease = %name, namespace = %ns, "the lease changed meanwhile (409)");
                }
                Ok(Err(e)) => {
                    let message = e.to_string();
                    if leading.is_some() || message != last_error {
                        tracing::warn!(lease = %name, namespace = %ns, "cannot acquire or renew the lease: {message}");
                    }
                    last_error = message;
                }
                Err(_) => {
                    last_error.clear();
                    tracing::warn!(lease = %name, namespace = %ns, "the API server did not answer in time");
                }
            }
            // The leader retries every period but wakes at its deadline to step down;
            // a standby waits a jittered period.
            let wake = match leading {
                Some(t) => (started + cfg.retry_period).min(t + cfg.renew_deadline),
                None => {
                    let jitter = 1.0 + JITTER * rand::random::<f64>();
                    Instant::now() + cfg.retry_period.mul_f64(jitter)
                }
            };
            tokio::select! {
                () = sleep_until(wake) => {}
                _ = shutdown.changed() => {}
            }
        }
        is_leader.send_replace(false);
        if leading.is_some() {
            let deadline = Instant::now() + cfg.renew_deadline;
            match timeout_at(deadline, self.release()).await {
                Ok(Ok(true)) => {
                    tracing::info!(lease = %name, namespace = %ns, identity = %me, "released leadership")
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(lease = %name, namespace = %ns, "cannot release the lease: {e}")
                }
                Err(_) => {
                    tracing::warn!(lease = %name, namespace = %ns, "cannot release the lease: the API server did not answer in time")
                }
            }
        }
    }

    /// One round of client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self) -> Result<Outcome, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let pp = PostParams::default();
        // Fast path: the leader writes over the Lease it last wrote, without reading it.
        if let Some(lease) = self.lease.clone()
            && self.holds_valid()
        {
            let mut lease = lease;
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(now.clone());
            spec.lease_duration_seconds = Some(self.config.lease_seconds());
            match self.api.replace(&self.config.name, &pp, &lease).await {
                Ok(written) => return Ok(self.wrote(written)),
                Err(e) => {
                    tracing::debug!(lease = %self.config.name, "optimistic renewal failed, reading the lease: {e}")
                }
            }
        }
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.record(&LeaseSpec::default(), now, false)),
            };
            return match self.api.create(&pp, &lease).await {
                Ok(written) => Ok(self.wrote(written)),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Conflict),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        self.observe(&spec);
        self.lease = Some(current.clone());
        let holder = holder(&spec);
        if let Some(h) = holder
            && h != self.config.identity
            && self.observed_valid()
        {
            return Ok(Outcome::Other(h.to_string()));
        }
        let mut lease = current;
        lease.spec = Some(self.record(&spec, now, true));
        match self.api.replace(&self.config.name, &pp, &lease).await {
            Ok(written) => Ok(self.wrote(written)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Outcome::Conflict),
            Err(e) => Err(e),
        }
    }

    /// The record we write over `old`: us as holder, renewed now; a new holder gets a new
    /// `acquireTime` and, when replacing an existing Lease, one more `leaseTransitions`.
    fn record(&self, old: &LeaseSpec, now: MicroTime, existed: bool) -> LeaseSpec {
        let mut spec = old.clone();
        if holder(old) != Some(self.config.identity.as_str()) {
            spec.acquire_time = Some(now.clone());
            let before = old.lease_transitions.unwrap_or(0);
            spec.lease_transitions = Some(if existed { before.saturating_add(1) } else { 0 });
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(self.config.lease_seconds());
        spec.renew_time = Some(now);
        spec
    }

    /// Remember a Lease we wrote.
    fn wrote(&mut self, written: Lease) -> Outcome {
        self.observe(&written.spec.clone().unwrap_or_default());
        self.lease = Some(written);
        Outcome::Held
    }

    /// Note the record as read; its observation time moves only when it changed.
    fn observe(&mut self, spec: &LeaseSpec) {
        if self.observed.as_ref().is_none_or(|(seen, _)| seen != spec) {
            self.observed = Some((spec.clone(), Instant::now()));
        }
    }

    /// Whether the record, as last observed, has not yet expired.
    fn observed_valid(&self) -> bool {
        let Some((spec, at)) = &self.observed else {
            return false;
        };
        let secs = match spec.lease_duration_seconds {
            Some(s) if s > 0 => u64::try_from(s).unwrap_or(0),
            _ => self.config.lease_seconds().unsigned_abs().into(),
        };
        Instant::now() < *at + Duration::from_secs(secs)
    }

    /// Whether the last observed record names us and has not expired.
    fn holds_valid(&self) -> bool {
        let ours = self
            .observed
            .as_ref()
            .is_some_and(|(spec, _)| holder(spec) == Some(self.config.identity.as_str()));
        ours && self.observed_valid()
    }

    fn observed_transitions(&self) -> i32 {
        let spec = self.observed.as_ref().map(|(spec, _)| spec);
        spec.and_then(|s| s.lease_transitions).unwrap_or(0)
    }

    /// Clear the holder (and shorten the duration to 1 s) if we still hold the Lease;
    /// whether it was released.
    async fn release(&mut self) -> Result<bool, kube::Error> {
        let pp = PostParams::default();
        for _ in 0..3 {
            let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
                return Ok(false);
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if holder(spec) != Some(self.config.identity.as_str()) {
                return Ok(false);
            }
            let now = MicroTime(Timestamp::now());
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now.clone());
            spec.acquire_time = Some(now);
            match self.api.replace(&self.config.name, &pp, &lease).await {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

/// The holder named in a record; an empty name is none.
fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// Whether shutdown was asked for (a dropped sender counts).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaseConfig {
        LeaseConfig {
            identity: "a".into(),
            ..LeaseConfig::new("kubekuma")
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = config();
        assert_eq!(c.name, "kubekuma-agent");
        assert_eq!(c.lease_seconds(), 15);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn rejects_unsafe_timings() {
        let c = LeaseConfig {
            renew_deadline: Duration::from_secs(15),
            ..config()
        };
        assert!(c.validate().is_err());
        let c = LeaseConfig {
            retry_period: Duration::from_secs(9),
            ..config()
        };
        assert!(c.validate().is_err());
        let c = LeaseConfig {
            identity: String::new(),
            ..config()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn lease_seconds_round_up() {
        let c = LeaseConfig {
            lease_duration: Duration::from_millis(1500),
            renew_deadline: Duration::from_secs(1),
            retry_period: Duration::from_millis(200),
            ..config()
        };
        assert_eq!(c.lease_seconds(), 2);
    }
}
