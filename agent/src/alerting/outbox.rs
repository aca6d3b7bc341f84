//! The delivery worker: sends the `pending` rows of `notification_deliveries`.
//!
//! - Each delivery runs in its own task; a provider gets at most
//!   [`WorkerOptions::per_provider`] sends at a time, so a slow or failing provider
//!   never holds up the others.
//! - A temporary failure (network, timeout, 408/429/5xx) is retried with exponential
//!   backoff (`base · 2^(attempts-1)`, capped) until [`WorkerOptions::max_attempts`];
//!   a refusal or a configuration error fails at once. Every attempt's outcome is
//!   written to the row.
//! - At shutdown no new send starts; the sends in progress get
//!   [`WorkerOptions::shutdown_grace`] to finish and have their outcome written, then
//!   the rest are abandoned: their rows stay `pending`, their claims are released, and
//!   the next start sends them at once.
//! - Rows are taken with [`Store::claim_deliveries`] under [`WorkerOptions::claimant`]
//!   for [`WorkerOptions::claim_for`], so several agents on one database never send the
//!   same row at once; a clean shutdown releases the claims of the sends it abandons.
//! - After a crash the rows still `pending` are due once their claims expire: the next
//!   worker takes them as *orphans* (logged at warn with the claimant that stopped). A
//!   send that succeeded just before the crash, before its row said so, may be sent
//!   again (a provider cannot be asked whether it already has a message), but at most
//!   once, and not when the same dedupe key already went to the same provider within
//!   the route's dedupe window: the orphan is then recorded `deduped`. A row orphaned
//!   twice is given up (`failed`) by the store.
//! - [`DeliveryWorker::run_when`] takes nothing while its `active` flag is false (a
//!   standby replica); sends already taken finish.
//! - Credentials are resolved from the current catalog's Secrets at send time; the rows
//!   hold none.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore, watch};

use crate::catalog::{ObjKey, Snapshot};
use crate::metrics::Metrics;
use crate::notify::providers::{self, Message, ProviderContext, SendError};
use crate::store::Store;
use crate::store::deliveries::{Attempt, Delivery};

/// How the worker paces itself.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Sends at a time per provider.
    pub per_provider: usize,
    /// Attempts before a temporary failure becomes `failed`.
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub base_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// How often the outbox is looked at without a wake-up (retries fall due).
    pub poll: Duration,
    /// Rows taken per look.
    pub batch: usize,
    /// The `apprise` program for Apprise providers without a server URL.
    pub apprise_program: String,
    /// At shutdown, how long sends in progress may take to finish before they are
    /// abandoned (their rows stay `pending` for the next start); zero abandons them at
    /// once.
    pub shutdown_grace: Duration,
    /// Who this worker is in the rows' claims: unique per process (host, process id and
    /// a random part by default), named in the logs of another agent that takes over
    /// its rows.
    pub claimant: String,
    /// How long a claim holds: longer than the longest send (a provider's timeout + 5
    /// s), or a slow send could be taken and sent again by another agent. After a
    /// crash, the rows it held wait this long.
    pub claim_for: Duration,
}

/// The default of [`WorkerOptions::claim_for`].
pub const DEFAULT_CLAIM_FOR: Duration = Duration::from_secs(60);

/// The default [`WorkerOptions::claimant`]: `<host>-<pid>-<random>`.
pub fn default_claimant() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kubekuma".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The default of [`WorkerOptions::shutdown_grace`] (`--shutdown-grace`).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            per_provider: 2,
            max_attempts: 6,
            base_backoff: Duration::from_secs(15),
            max_backoff: Duration::from_secs(15 * 60),
            poll: Duration::from_secs(2),
            batch: 200,
            apprise_program: "apprise".into(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            claimant: default_claimant(),
            claim_for: DEFAULT_CLAIM_FOR,
        }
    }
}

impl WorkerOptions {
    /// The wait before the retry that follows attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.base_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Sends what the [`super::pipeline::Alerter`] queued.
pub struct DeliveryWorker {
    store: Store,
    catalog: watch::Receiver<Arc<Snapshot>>,
    wake: Arc<Notify>,
    metrics: Option<Arc<Metrics>>,
    options: WorkerOptions,
}

/// The provider context of one catalog version (its Secrets), reused until it changes.
struct Contexts {
    snapshot: Option<Arc<Snapshot>>,
    context: Option<ProviderContext>,
}

impl Contexts {
    fn get(&mut self, snap: &Arc<Snapshot>, options: &WorkerOptions) -> ProviderContext {
        let same = self.snapshot.as_ref().is_some_and(|s| Arc::ptr_eq(s, snap));
        match (&self.context, same) {
            (Some(c), true) => c.clone(),
            _ => {
                let mut c = ProviderContext::new(Arc::new(snap.secrets.clone()));
                c.apprise_program = options.apprise_program.clone();
                self.snapshot = Some(snap.clone());
                self.context = Some(c.clone());
                c
            }
        }
    }
}

impl DeliveryWorker {
    /// A worker on `store`'s outbox, with providers and Secrets from `catalog`.
    pub fn new(
        store: Store,
        catalog: watch::Receiver<Arc<Snapshot>>,
        wake: Arc<Notify>,
        metrics: Option<Arc<Metrics>>,
        options: WorkerOptions,
    ) -> Self {
        DeliveryWorker {
            store,
            catalog,
            wake,
            metrics,
            options,
        }
    }

    /// Send due deliveries until `shutdown` turns true (or its sender is gone). Then no
    /// new send starts, and the sends in progress get [`WorkerOptions::shutdown_grace`]
    /// to finish; those still running after it are abandoned, their rows stay `pending`
    /// (their claims released) and the next run sends them.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let (_always, active) = watch::channel(true);
        self.run_when(active, shutdown).await;
    }

    /// As [`DeliveryWorker::run`], taking rows only while `active` is true (the leader
    /// role): while it is false nothing new is claimed, the sends in progress finish and
    /// the rows taken but not started yet (waiting for their provider) are released. A
    /// gone `active` sender keeps its last value.
    pub async fn run_when(
        self,
        mut active: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::default();
        let mut limits: HashMap<ObjKey, Arc<Semaphore>> = HashMap::new();
        let mut contexts = Contexts {
            snapshot: None,
            context: None,
        };
        let mut tasks = tokio::task::JoinSet::new();
        let mut active_open = true;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let claimed = if *active.borrow_and_update() {
                self.store
                    .claim_deliveries(
                        Utc::now(),
                        self.options.batch,
                        &self.options.claimant,
                        self.options.claim_for,
                    )
                    .await
            } else {
                Ok(Vec::new())
            };
            match claimed {
                Ok(due) => {
                    let snap = self.catalog.borrow().clone();
                    for d in due {
                        // Taken again while this worker still sends it (its claim ran
                        // out): the send in progress records the outcome.
                        let fresh = in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(d.id);
                        if !fresh {
                            continue;
                        }
                        if let Some(previous) = &d.orphaned_from {
                            tracing::warn!(delivery = d.id, provider = %d.provider, monitor = %d.monitor, event = %d.event_kind, previous_claimant = %previous, "taking over a notification whose sender stopped mid-send; it may have gone out already");
                        }
                        let limit = limits
                            .entry(d.provider.clone())
                            .or_insert_with(|| {
                                Arc::new(Semaphore::new(self.options.per_provider.max(1)))
                            })
                            .clone();
                        let ctx = contexts.get(&snap, &self.options);
                        let (store, snap, options, metrics, in_flight, stop, role) = (
                            self.store.clone(),
                            snap.clone(),
                            self.options.clone(),
                            self.metrics.clone(),
                            in_flight.clone(),
                            shutdown.clone(),
                            active.clone(),
                        );
                        tasks.spawn(async move {
                            let id = d.id;
                            match limit.acquire_owned().await {
                                // Shutting down: a send that has not started waits for
                                // the next start.
                                Ok(_) if *stop.borrow() => {}
                                // No longer active (the role went to another replica): a
                                // send that has not started is left to it at once.
                                Ok(_) if !*role.borrow() => {
                                    if let Err(e) = store.release_claim(id, &options.claimant).await {
                                        tracing::warn!(delivery = id, error = %e, "cannot release the claim of a notification not sent; it waits for the claim to expire");
                                    }
                                }
                                Ok(_permit) => {
                                    if d.orphaned == 0
                                        || !already_sent(&store, metrics.as_deref(), &d).await
                                    {
                                        deliver(
                                            &store,
                                            &snap,
                                            &ctx,
                                            &options,
                                            metrics.as_deref(),
                                            d,
                                        )
                                        .await;
                                    }
                                }
                                Err(_) => {}
                            }
                            in_flight
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&id);
                        });
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot claim from the notification outbox"),
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.options.poll) => {}
                changed = shutdown.changed() => if changed.is_err() { break },
                changed = active.changed(), if active_open => if changed.is_err() { active_open = false },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drain(tasks, self.options.shutdown_grace).await;
        match self.store.release_claims(&self.options.claimant).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(released = n, "claims of abandoned notifications released")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the claims of abandoned notifications; they wait for the claims to expire")
            }
        }
    }
}

/// For an orphan `d` (its earlier send may have gone out): whether the same dedupe key
/// already went to the same provider within the route's dedupe window; if so `d` is
/// recorded `deduped`, naming that send, and must not be sent. A failed look-up sends.
async fn already_sent(store: &Store, metrics: Option<&Metrics>, d: &Delivery) -> bool {
    let window = d
        .payload
        .pointer("/route/dedupeWindowMinutes")
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    if window <= 0 {
        return false;
    }
    let now = Utc::now();
    let since = now - chrono::Duration::minutes(window);
    let earlier = match store
        .last_sent(&d.provider, &d.dedupe_key, since, d.id)
        .await
    {
        Ok(Some(e)) => e,
        Ok(None) => return false,
        Err(e) => {
            tracing::error!(delivery = d.id, error = %e, "cannot look for an earlier send of an orphaned notification; sending it");
            return false;
        }
    };
    let at = earlier.last_attempt_at.unwrap_or(earlier.created_at);
    let note = format!(
        "not sent again after its sender stopped mid-send: the same dedupe key was sent to this provider at {} (delivery {}), within the {window}-minute dedupe window",
        at.to_rfc3339(),
        earlier.id
    );
    tracing::warn!(delivery = d.id, provider = %d.provider, earlier = earlier.id, "orphaned notification deduped");
    if let Some(m) = metrics {
        m.delivery(&d.provider_type, "deduped");
    }
    if let Err(e) = store
        .delivery_attempted(d.id, now, Attempt::Deduped(note))
        .await
    {
        tracing::error!(delivery = d.id, error = %e, "cannot record a deduped delivery");
    }
    true
}

/// Shutdown: wait up to `grace` for the sends in progress (their outcomes are written
/// as usual), then abandon the rest; their rows stay `pending` for the next start.
async fn drain(mut tasks: tokio::task::JoinSet<()>, grace: Duration) {
    if tasks.is_empty() {
        return;
    }
    tracing::info!(
        in_flight = tasks.len(),
        grace_s = grace.as_secs_f64(),
        "shutting down: waiting for notifications in flight"
    );
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all).await.is_ok() {
        tracing::info!("notifications in flight finished");
        return;
    }
    tracing::warn!(
        abandoned = tasks.len(),
        grace_s = grace.as_secs_f64(),
        "notifications still in flight after the shutdown grace stay pending; the next start sends them"
    );
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// The message a row carries.
fn message(d: &Delivery) -> Message {
    let event = d.payload.get("event").cloned().unwrap_or_default();
    let text = |k: &str| {
        d.payload
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Message {
        title: text("title"),
        body: text("body"),
        event: d.event_kind.clone(),
        state: event
            .get("currentState")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string(),
        timestamp: event
            .get("timestamp")
            .and_then(|v| v.as_str())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(d.created_at),
        event_json: event,
    }
}

/// One attempt at `d`, and its outcome written to the row.
async fn deliver(
    store: &Store,
    snap: &Snapshot,
    ctx: &ProviderContext,
    options: &WorkerOptions,
    metrics: Option<&Metrics>,
    d: Delivery,
) {
    let key = d.provider.clone();
    let provider = snap.providers.get(&key);
    let result = match provider {
        None => Err(SendError::Config(format!(
            "NotificationProvider {key} no longer exists"
        ))),
        Some(p) if !p.spec.enabled.unwrap_or(true) => Err(SendError::Config(format!(
            "NotificationProvider {key} is disabled"
        ))),
        Some(_) => {
            let limit = ctx.timeout + Duration::from_secs(5);
            let send = async {
                match snap.provider_plans.get(&key) {
                    Some(plan) => providers::send(ctx, plan, &message(&d)).await,
                    None => Err(SendError::Config(format!(
                        "NotificationProvider {key} has no plan"
                    ))),
                }
            };
            match tokio::time::timeout(limit, send).await {
                Ok(r) => r,
                Err(_) => Err(SendError::Temporary(format!(
                    "no answer within {} s",
                    limit.as_secs()
                ))),
            }
        }
    };
    let now = Utc::now();
    let attempt_no = d.attempts + 1;
    let (attempt, outcome) = match result {
        Ok(done) => {
            tracing::info!(delivery = d.id, provider = %key, monitor = %d.monitor, event = %d.event_kind, detail = %done.detail, "notification sent");
            (Attempt::Sent(done.detail), "sent")
        }
        Err(e) if e.retryable() && attempt_no < options.max_attempts => {
            let wait = options.backoff(attempt_no);
            let next = now + chrono::Duration::from_std(wait).unwrap_or_default();
            tracing::warn!(delivery = d.id, provider = %key, attempt = attempt_no, retry_in_s = wait.as_secs(), error = %e, "notification not delivered; will retry");
            (Attempt::Retry(e.to_string(), next), "retry")
        }
        Err(e) => {
            let error = if e.retryable() {
                format!("gave up after {attempt_no} attempts: {e}")
            } else {
                e.to_string()
            };
            tracing::error!(delivery = d.id, provider = %key, attempt = attempt_no, error = %error, "notification failed");
            (Attempt::Failed(error), "failed")
        }
    };
    if let Some(m) = metrics {
        m.delivery(&d.provider_type, outcome);
    }
    record_attempt(store, d.id, now, attempt).await;
}

/// Longest wait between two tries to record an attempt's outcome while the store cannot
/// take writes.
const OUTCOME_RETRY_MAX: Duration = Duration::from_secs(5);

/// Write an attempt's outcome. While the store reports that it cannot take writes (the
/// database unreachable or read-only), the outcome is kept and retried with backoff:
/// lost, the row would stay pending and be sent again once this worker forgets the
/// claim (or at the next start), although the provider has it. Shutdown abandons the
/// retry with the task (at least once, as for any send cut short).
async fn record_attempt(store: &Store, id: i64, at: DateTime<Utc>, attempt: Attempt) {
    let mut wait = Duration::from_millis(250);
    let mut held = false;
    loop {
        match store.delivery_attempted(id, at, attempt.clone()).await {
            Ok(()) => {
                if held {
                    tracing::warn!(delivery = id, "held delivery outcome recorded");
                }
                return;
            }
            Err(e) if store.write_failure().is_some() => {
                if !held {
                    tracing::error!(delivery = id, error = %e, "cannot record a delivery attempt; held and retried until the store takes writes");
                    held = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(OUTCOME_RETRY_MAX);
            }
            Err(e) => {
                tracing::error!(delivery = id, error = %e, "cannot record a delivery attempt");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let o = WorkerOptions {
            base_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            ..WorkerOptions::default()
        };
        let got: Vec<u64> = (1..=6).map(|a| o.backoff(a).as_secs()).collect();
        assert_eq!(got, vec![10, 20, 40, 60, 60, 60]);
    }
}
