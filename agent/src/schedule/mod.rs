//! The scheduler: a priority queue of run times with jitter and no drift (run k ≥ 1 of a
//! monitor is due at `anchor + phase + (k-1)·interval ± jitter`, whatever earlier runs
//! cost; the first run too, so monitors started together spread over the interval), global
//! concurrency limits, one-off retries, and catalog changes applied without a restart.
//! It only decides *when*; what a result means is the state machine's business.

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kubekuma_crds::monitor::QuorumRule;
use kubekuma_crds::results::CheckOutcome;
use kubekuma_crds::{EffectiveSettings, MonitorSpec, MonitorType};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::catalog::{ObjKey, Snapshot};
use crate::checks::Plan;
use crate::state::StatePolicy;

/// Everything the scheduler and the state machine need to know about one monitor,
/// with defaults from the settings filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorPlan {
    /// Namespace and name.
    pub key: ObjKey,
    /// The spec, as validated.
    pub spec: Arc<MonitorSpec>,
    /// What a run checks: the plan the catalog made of the spec.
    pub check: Arc<Plan>,
    /// Time between runs.
    pub interval: Duration,
    /// Time one attempt may take.
    pub timeout: Duration,
    /// Jitter in percent of the interval.
    pub jitter_percent: u32,
    /// Delay before the first run.
    pub initial_delay: Duration,
    /// Retries, grace and flapping.
    pub policy: StatePolicy,
    /// Runs under the privileged-check limit (ICMP).
    pub privileged: bool,
    /// Checks run at all.
    pub enabled: bool,
    /// Locations that run it (`spec.locations`); empty: every location that reports.
    pub locations: Vec<String>,
    /// How many fresh locations must see it down (`spec.quorum`, else the settings'
    /// `locations.defaultQuorum`, else a majority).
    pub quorum: QuorumRule,
    /// A location whose latest result is older than this is stale
    /// (`locations.staleAfterSeconds`, else 3 × the interval + 30 s).
    pub stale_after: Duration,
    fingerprint: u64,
}

impl MonitorPlan {
    /// The plan of a monitor (its spec and the check plan made of it) under the given
    /// settings.
    pub fn new(
        key: ObjKey,
        spec: Arc<MonitorSpec>,
        check: Arc<Plan>,
        settings: &EffectiveSettings,
    ) -> Self {
        let s = spec.schedule.clone().unwrap_or_default();
        let secs = |v: Option<i64>, d: i64| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
        let interval = schedule_interval(&spec);
        let timeout = secs(s.timeout_seconds, settings.default_timeout_seconds).clamp(
            Duration::from_millis(100),
            interval.max(Duration::from_secs(1)),
        );
        let retries = s.retries.map(|r| r.max_retries).unwrap_or(0).max(0) as u32;
        let retry_interval = s
            .retries
            .and_then(|r| r.retry_interval_seconds)
            .or(s.retry_interval_seconds)
            .map(|v| Duration::from_secs(v.max(1) as u64))
            .unwrap_or_else(|| interval.min(Duration::from_secs(30)));
        let flapping = settings.flapping_enabled.then(|| {
            (
                chrono::Duration::minutes(settings.flapping_window_minutes),
                settings.flapping_threshold.max(2) as u32,
            )
        });
        let fingerprint = {
            let mut h = DefaultHasher::new();
            serde_json::to_string(spec.as_ref())
                .unwrap_or_default()
                .hash(&mut h);
            format!("{settings:?}").hash(&mut h);
            h.finish()
        };
        MonitorPlan {
            key,
            interval,
            timeout,
            jitter_percent: s
                .jitter_percent
                .unwrap_or(settings.jitter_percent)
                .clamp(0, 100) as u32,
            initial_delay: secs(s.initial_delay_seconds, 0),
            policy: StatePolicy {
                retries,
                grace: chrono::Duration::seconds(s.grace_down_seconds.unwrap_or(0).max(0)),
                retry_interval: chrono::Duration::from_std(retry_interval)
                    .unwrap_or(chrono::Duration::seconds(30)),
                flapping,
            },
            privileged: spec.type_ == MonitorType::Ping && settings.ping_privileged,
            enabled: spec.is_enabled(),
            locations: spec.locations.clone(),
            quorum: spec
                .quorum
                .map(QuorumRule::of)
                .unwrap_or(settings.default_quorum),
            stale_after: Duration::from_secs(
                settings
                    .stale_after_seconds(interval.as_secs() as i64)
                    .max(1) as u64,
            ),
            spec,
            check,
            fingerprint,
        }
    }

    /// Whether agents at `location` run it: listed in `spec.locations`, or none listed.
    pub fn runs_at(&self, location: &str) -> bool {
        self.locations.is_empty() || self.locations.iter().any(|l| l == location)
    }

    /// Where in its interval this monitor's runs fall: a stable offset in
    /// `[0, interval)` derived from its name, so that many monitors created at once
    /// (an agent start, a MonitorSet) spread over the interval instead of running
    /// together every interval.
    pub fn phase(&self) -> Duration {
        let ms = self.interval.as_millis().max(1) as u64;
        let mut h = DefaultHasher::new();
        ("phase", &self.key).hash(&mut h);
        Duration::from_millis(h.finish() % ms)
    }

    /// Offset of run `k` from its slot: a deterministic value in ±interval·jitter%.
    fn jitter(&self, k: u64) -> i128 {
        let max = self.interval.as_millis() as i128 * i128::from(self.jitter_percent) / 100;
        if max == 0 {
            return 0;
        }
        let mut h = DefaultHasher::new();
        (&self.key, k).hash(&mut h);
        (h.finish() % (2 * max as u64 + 1)) as i128 - max
    }
}

/// The plans of every monitor of a snapshot. A push monitor's runs only evaluate its
/// deadline, every `min(push interval, 60 s)` (see [`crate::push`]).
pub fn plans(snapshot: &Snapshot) -> Vec<MonitorPlan> {
    snapshot
        .monitors
        .iter()
        .filter_map(|(k, m)| {
            let check = snapshot.plans.get(k)?;
            let mut plan = MonitorPlan::new(
                k.clone(),
                Arc::new(m.spec.clone()),
                check.clone(),
                &snapshot.effective,
            );
            if let Plan::Push(push) = check.as_ref() {
                plan.interval = push.evaluation_interval();
            }
            Some(plan)
        })
        .collect()
}

/// How often each monitor of a snapshot runs, as its [`MonitorPlan`] would say, without
/// building the plans (the status writer reports it).
pub fn intervals(snapshot: &Snapshot) -> impl Iterator<Item = (&ObjKey, Duration)> {
    snapshot.monitors.iter().filter_map(|(k, m)| {
        let interval = match snapshot.plans.get(k)?.as_ref() {
            Plan::Push(push) => push.evaluation_interval(),
            Plan::Probe(_) => schedule_interval(&m.spec),
        };
        Some((k, interval))
    })
}

/// The interval of a monitor's schedule: `intervalSeconds` (60 when unset), at least 1 s.
fn schedule_interval(spec: &MonitorSpec) -> Duration {
    let secs = spec
        .schedule
        .as_ref()
        .and_then(|s| s.interval_seconds)
        .unwrap_or(60)
        .max(0) as u64;
    Duration::from_secs(secs).max(Duration::from_secs(1))
}

/// A finished check, handed to the result processor.
#[derive(Debug)]
pub struct CheckDone {
    /// The plan it ran with.
    pub plan: Arc<MonitorPlan>,
    /// What happened.
    pub outcome: CheckOutcome,
    /// When it started (wall clock).
    pub started_at: DateTime<Utc>,
    /// How late it started against its due time.
    pub lateness: Duration,
}

/// Runs one attempt of a check.
pub type Runner = Arc<dyn Fn(Arc<MonitorPlan>) -> BoxFuture<'static, CheckOutcome> + Send + Sync>;

/// Concurrency limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Network checks at once.
    pub net: usize,
    /// Privileged checks at once.
    pub privileged: usize,
    /// Wake-ups are aligned to this grid, so runs due within one step start together
    /// (fewer timer wake-ups per check; adds at most this much lateness). Zero: exact.
    pub coalesce: Duration,
}

/// The default wake-up grid of the agent.
pub const COALESCE: Duration = Duration::from_millis(100);

impl Limits {
    /// The limits of the settings.
    pub fn from_settings(s: &EffectiveSettings) -> Self {
        Limits {
            net: s.max_concurrent_net_checks.max(1) as usize,
            privileged: s.max_concurrent_priv_checks.max(1) as usize,
            coalesce: COALESCE,
        }
    }
}

enum Command {
    Apply(Vec<MonitorPlan>),
    Retry(ObjKey, Duration),
}

struct Entry {
    plan: Arc<MonitorPlan>,
    anchor: Instant,
    k: u64,
    next_regular: Instant,
    retry_at: Option<Instant>,
    /// A run of this monitor is in flight (set by the loop, cleared by the run's task).
    running: Arc<AtomicBool>,
    version: u64,
}

impl Entry {
    fn due(&self) -> Instant {
        match self.retry_at {
            Some(r) if r < self.next_regular => r,
            _ => self.next_regular,
        }
    }

    /// Due time of run `k` (from 1): `anchor + phase + (k-1)·interval ± jitter(k)`. The
    /// first run follows the phase too: monitors applied together (an agent start, a
    /// MonitorSet) spread over their interval instead of all running at once.
    fn slot(&self, k: u64) -> Instant {
        let n = u32::try_from(k.saturating_sub(1)).unwrap_or(u32::MAX);
        let base = self.anchor + self.plan.phase() + self.plan.interval * n;
        let j = self.plan.jitter(k);
        let t = if j >= 0 {
            base + Duration::from_millis(j as u64)
        } else {
            base.checked_sub(Duration::from_millis((-j) as u64))
                .unwrap_or(base)
        };
        // Never before the anchor (the first run honours initialDelaySeconds).
        t.max(self.anchor)
    }
}

/// Lateness samples and counters, for `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lateness of each started check, in microseconds.
    pub lateness_us: Vec<u64>,
    /// Checks started.
    pub started: u64,
    /// Runs skipped because the previous run of the same monitor was still going.
    pub skipped_overlap: u64,
}

/// Handle to a running scheduler.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Command>,
    stats: Arc<Mutex<Stats>>,
}

impl Scheduler {
    /// Start the scheduler. Finished checks go to `done`.
    pub fn spawn(runner: Runner, limits: Limits, done: mpsc::Sender<CheckDone>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let s = Scheduler {
            tx: tx.clone(),
            stats: stats.clone(),
        };
        tokio::spawn(run_loop(rx, runner, limits, done, stats));
        s
    }

    /// Replace the set of monitors. Unchanged monitors keep their schedule; changed ones
    /// are rescheduled from now; removed ones stop; disabled ones are not run.
    pub fn apply(&self, plans: Vec<MonitorPlan>) {
        let _ = self.tx.send(Command::Apply(plans));
    }

    /// Run a monitor again after `delay` (a retry), unless its next run is sooner.
    pub fn retry(&self, key: ObjKey, delay: Duration) {
        let _ = self.tx.send(Command::Retry(key, delay));
    }

    /// Take the collected lateness samples and counters.
    pub fn take_stats(&self) -> Stats {
        self.stats
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    /// Whether the scheduler loop is still running.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
}

async fn run_loop(
    mut rx: mpsc::UnboundedReceiver<Command>,
    runner: Runner,
    limits: Limits,
    done: mpsc::Sender<CheckDone>,
    stats: Arc<Mutex<Stats>>,
) {
    let mut state = LoopState {
        net: Arc::new(Semaphore::new(limits.net)),
        privileged: Arc::new(Semaphore::new(limits.privileged)),
        entries: HashMap::new(),
        heap: BinaryHeap::new(),
        version: 0,
        epoch: Instant::now(),
        runner,
        limits,
        done,
        stats,
    };
    loop {
        let cmd = match state.next_wake() {
            Some(t) => tokio::select! {
                c = rx.recv() => match c { Some(c) => Some(c), None => return },
                _ = tokio::time::sleep_until(t) => None,
            },
            None => match rx.recv().await {
                Some(c) => Some(c),
                None => return,
            },
        };
        let now = Instant::now();
        match cmd {
            Some(Command::Apply(plans)) => state.apply(plans, now),
            Some(Command::Retry(key, delay)) => state.retry(key, now + delay),
            None => {}
        }
        state.start_due();
    }
}

/// What the scheduler loop keeps between wake-ups.
struct LoopState {
    /// Permits for network checks.
    net: Arc<Semaphore>,
    /// Permits for privileged checks.
    privileged: Arc<Semaphore>,
    /// The scheduled monitors.
    entries: HashMap<ObjKey, Entry>,
    /// Due times, earliest first; an item whose version is not its entry's is stale.
    heap: BinaryHeap<Reverse<(Instant, u64, ObjKey)>>,
    /// The last version handed out.
    version: u64,
    /// The loop's start, from which the wake-up grid is measured.
    epoch: Instant,
    /// Runs one attempt.
    runner: Runner,
    /// Concurrency limits and the wake-up grid.
    limits: Limits,
    /// Where finished checks go.
    done: mpsc::Sender<CheckDone>,
    /// Lateness samples and counters.
    stats: Arc<Mutex<Stats>>,
}

impl LoopState {
    /// When to wake up next: the earliest due time, rounded up to the wake-up grid;
    /// `None` when nothing is scheduled.
    fn next_wake(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _, _))| {
            if self.limits.coalesce.is_zero() {
                *t
            } else {
                // Round up to the grid (measured from the loop's start).
                let step = self.limits.coalesce.as_nanos();
                let since = t.saturating_duration_since(self.epoch).as_nanos();
                let up = since.div_ceil(step) * step;
                self.epoch + Duration::from_nanos(up as u64)
            }
        })
    }

    /// A new catalog: new and edited monitors are scheduled afresh, unchanged ones keep
    /// their cadence, disabled and removed ones are dropped.
    fn apply(&mut self, plans: Vec<MonitorPlan>, now: Instant) {
        let mut keep: HashMap<ObjKey, ()> = HashMap::new();
        for plan in plans {
            keep.insert(plan.key.clone(), ());
            if !plan.enabled {
                self.entries.remove(&plan.key);
                continue;
            }
            if let Some(e) = self.entries.get(&plan.key)
                && e.plan.fingerprint == plan.fingerprint
            {
                continue;
            }
            self.version += 1;
            // An edited monitor's run in flight still blocks an overlapping one.
            let running = self
                .entries
                .get(&plan.key)
                .map(|e| e.running.clone())
                .unwrap_or_default();
            let anchor = now + plan.initial_delay;
            let mut e = Entry {
                plan: Arc::new(plan),
                anchor,
                k: 1,
                next_regular: anchor,
                retry_at: None,
                running,
                version: self.version,
            };
            e.next_regular = e.slot(1);
            self.heap
                .push(Reverse((e.due(), self.version, e.plan.key.clone())));
            self.entries.insert(e.plan.key.clone(), e);
        }
        self.entries.retain(|k, _| keep.contains_key(k));
    }

    /// A one-off retry of `key` at `at`.
    fn retry(&mut self, key: ObjKey, at: Instant) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.retry_at = Some(at);
            self.version += 1;
            e.version = self.version;
            self.heap.push(Reverse((e.due(), self.version, key)));
        }
    }

    /// Starts everything that is due, rescheduling each: a retry is consumed, a regular
    /// run advances the cadence. A monitor whose previous run is still going is skipped.
    fn start_due(&mut self) {
        while let Some(Reverse((t, v, _))) = self.heap.peek() {
            if *t > Instant::now() {
                break;
            }
            let (t, v, key) = (*t, *v, self.heap.pop().map(|Reverse((_, _, k))| k));
            let Some(key) = key else { break };
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            if e.version != v {
                continue; // superseded by a newer schedule of this monitor
            }
            let is_retry = e.retry_at.is_some_and(|r| r <= e.next_regular);
            if is_retry {
                e.retry_at = None;
            } else {
                // Advance the regular cadence; slots already in the past are skipped
                // (no burst after a stall), later ones are not moved (no drift).
                e.k += 1;
                let now = Instant::now();
                while e.slot(e.k) <= now {
                    e.k += 1;
                }
                e.next_regular = e.slot(e.k);
            }
            self.version += 1;
            e.version = self.version;
            self.heap
                .push(Reverse((e.due(), self.version, key.clone())));
            if e.running.swap(true, AtomicOrdering::AcqRel) {
                if let Ok(mut s) = self.stats.lock() {
                    s.skipped_overlap += 1;
                }
                continue;
            }
            let (running, plan) = (e.running.clone(), e.plan.clone());
            self.spawn_run(plan, running, t);
        }
    }

    /// Runs one attempt on its own task, once a permit of its kind is free; records its
    /// lateness against `due`, clears `running` and sends the result to `done`.
    fn spawn_run(&self, plan: Arc<MonitorPlan>, running: Arc<AtomicBool>, due: Instant) {
        let sem = if plan.privileged {
            self.privileged.clone()
        } else {
            self.net.clone()
        };
        let runner = self.runner.clone();
        let done = self.done.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let Ok(_permit) = sem.acquire_owned().await else {
                return;
            };
            let started = Instant::now();
            let lateness = started.saturating_duration_since(due);
            if let Ok(mut s) = stats.lock() {
                s.started += 1;
                s.lateness_us.push(lateness.as_micros() as u64);
            }
            let started_at = Utc::now();
            let outcome = runner(plan.clone()).await;
            running.store(false, AtomicOrdering::Release);
            let _ = done
                .send(CheckDone {
                    plan,
                    outcome,
                    started_at,
                    lateness,
                })
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubekuma_crds::monitor::{Schedule, Target, TcpTarget};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn spec(interval: i64, jitter: i64) -> MonitorSpec {
        MonitorSpec {
            enabled: None,
            type_: MonitorType::Tcp,
            description: None,
            schedule: Some(Schedule {
                interval_seconds: Some(interval),
                jitter_percent: Some(jitter),
                timeout_seconds: Some(1),
                ..Schedule::default()
            }),
            target: Target {
                tcp: Some(TcpTarget {
                    host: "h".into(),
                    port: 1,
                    send: None,
                    expect: None,
                    tls: None,
                }),
                ..Target::default()
            },
            success_criteria: None,
            alerting: None,
            tags: vec![],
            annotations: Default::default(),
            locations: vec![],
            quorum: None,
        }
    }

    fn plan(name: &str, interval: i64, jitter: i64) -> MonitorPlan {
        planned(name, spec(interval, jitter))
    }

    fn planned(name: &str, spec: MonitorSpec) -> MonitorPlan {
        let check = Plan::of("ns", &spec).unwrap();
        MonitorPlan::new(
            ObjKey::new("ns", name),
            Arc::new(spec),
            Arc::new(check),
            &EffectiveSettings::default(),
        )
    }

    #[test]
    fn quorum_and_stale_bound_come_from_the_spec_then_the_settings() {
        use kubekuma_crds::KubeKumaSettingsSpec;
        use kubekuma_crds::monitor::Quorum;
        use kubekuma_crds::settings::LocationsSettings;
        let with = |spec: MonitorSpec, settings: &EffectiveSettings| {
            let check = Plan::of("ns", &spec).unwrap();
            MonitorPlan::new(
                ObjKey::new("ns", "m"),
                Arc::new(spec),
                Arc::new(check),
                settings,
            )
        };
        // Nothing set: a majority, stale after 3 intervals + 30 s, every location.
        let p = with(spec(60, 0), &EffectiveSettings::default());
        assert_eq!(p.quorum, QuorumRule::Majority);
        assert_eq!(p.stale_after, Duration::from_secs(210));
        assert!(p.runs_at("home") && p.runs_at("anywhere"));

        let settings = KubeKumaSettingsSpec {
            locations: Some(LocationsSettings {
                default_quorum: Some(Quorum::Percent(50)),
                stale_after_seconds: Some(90),
            }),
            ..KubeKumaSettingsSpec::default()
        }
        .effective();
        let p = with(spec(60, 0), &settings);
        assert_eq!(p.quorum, QuorumRule::Percent(50));
        assert_eq!(p.stale_after, Duration::from_secs(90));

        // The monitor's own quorum and locations win.
        let mut s = spec(60, 0);
        s.quorum = Some(Quorum::Count(2));
        s.locations = vec!["eu-west".into(), "us-east".into()];
        let p = with(s, &settings);
        assert_eq!(p.quorum, QuorumRule::Count(2));
        assert!(p.runs_at("eu-west") && !p.runs_at("home"));
    }

    /// A runner whose checks take `cost` and that records start times.
    /// Limits of `net` network checks at once, one privileged, wake-ups not coalesced.
    fn exact(net: usize) -> Limits {
        Limits {
            net,
            privileged: 1,
            coalesce: Duration::ZERO,
        }
    }

    fn recording(cost: Duration, log: Arc<Mutex<Vec<(String, Instant)>>>) -> Runner {
        Arc::new(move |p: Arc<MonitorPlan>| {
            let log = log.clone();
            Box::pin(async move {
                log.lock()
                    .unwrap()
                    .push((p.key.name.clone(), Instant::now()));
                tokio::time::sleep(cost).await;
                CheckOutcome::up(1.0)
            })
        })
    }

    async fn drain(rx: &mut mpsc::Receiver<CheckDone>) {
        while rx.try_recv().is_ok() {}
    }

    #[tokio::test(start_paused = true)]
    async fn slow_checks_do_not_drift_the_schedule() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (dtx, mut drx) = mpsc::channel(1000);
        // Each check takes 7 s of a 10 s interval.
        let s = Scheduler::spawn(
            recording(Duration::from_secs(7), log.clone()),
            exact(10),
            dtx,
        );
        let t0 = Instant::now();
        s.apply(vec![plan("a", 10, 0)]);
        tokio::time::sleep(Duration::from_secs(95)).await;
        drain(&mut drx).await;
        let starts: Vec<u64> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| (*t - t0).as_millis() as u64)
            .collect();
        // Every slot `phase + k·10 s` (the first too), skipping a slot only while the
        // previous 7-second run is still going; never shifted by the runs' cost.
        let p = plan("a", 10, 0).phase().as_millis() as u64;
        let mut expected: Vec<u64> = vec![];
        let mut t = p;
        while t <= 95_000 {
            if expected.last().is_none_or(|last| t >= last + 7_000) {
                expected.push(t);
            }
            t += 10_000;
        }
        assert_eq!(starts, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_bounds_and_does_not_accumulate() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (dtx, mut drx) = mpsc::channel(10_000);
        let s = Scheduler::spawn(
            recording(Duration::from_millis(1), log.clone()),
            exact(100),
            dtx,
        );
        let t0 = Instant::now();
        s.apply(vec![plan("a", 30, 10), plan("b", 30, 10)]);
        tokio::time::sleep(Duration::from_secs(30 * 100)).await;
        drain(&mut drx).await;
        let log = log.lock().unwrap();
        for name in ["a", "b"] {
            let starts: Vec<f64> = log
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, t)| (*t - t0).as_secs_f64())
                .collect();
            assert!(starts.len() >= 99, "{name}: {} runs", starts.len());
            let p = plan(name, 30, 10).phase().as_secs_f64();
            for (k, t) in starts.iter().enumerate() {
                let slot = p + 30.0 * k as f64;
                assert!(
                    (t - slot).abs() <= 3.0 + 1e-3,
                    "{name} run {k} at {t}, slot {slot}"
                );
            }
        }
        let distinct: std::collections::HashSet<u64> = log
            .iter()
            .map(|(_, t)| ((*t - t0).as_millis() % 30_000) as u64)
            .collect();
        assert!(distinct.len() > 20, "jitter varies between runs");
    }

    #[tokio::test(start_paused = true)]
    async fn many_monitors_created_together_spread_over_the_interval() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (dtx, mut drx) = mpsc::channel(100_000);
        let s = Scheduler::spawn(
            recording(Duration::from_millis(1), log.clone()),
            exact(1000),
            dtx,
        );
        let t0 = Instant::now();
        s.apply((0..1000).map(|i| plan(&format!("m{i}"), 10, 10)).collect());
        let mut seen = 0;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            while drx.try_recv().is_ok() {
                seen += 1;
            }
        }
        assert!(seen >= 3900, "{seen} runs");
        // After the first interval, every second carries about a tenth of the monitors.
        let mut per_second = [0u32; 40];
        for (_, t) in log.lock().unwrap().iter() {
            let sec = (*t - t0).as_secs() as usize;
            if sec < 40 {
                per_second[sec] += 1;
            }
        }
        // The first interval too: no burst at the start.
        for (sec, n) in per_second.iter().enumerate().take(38) {
            assert!(
                (60..=140).contains(n),
                "second {sec}: {n} runs (expected about 100)"
            );
        }
    }

    /// A restart: 1,000 monitors of a 60 s interval applied at once. Their first runs
    /// are due over the whole interval (each at its phase), not in the first second.
    #[tokio::test(start_paused = true)]
    async fn first_runs_after_a_start_follow_the_phase() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (dtx, mut drx) = mpsc::channel(100_000);
        let s = Scheduler::spawn(
            recording(Duration::from_millis(1), log.clone()),
            exact(1000),
            dtx,
        );
        let t0 = Instant::now();
        s.apply((0..1000).map(|i| plan(&format!("m{i}"), 60, 0)).collect());
        tokio::time::sleep(Duration::from_secs(61)).await;
        drain(&mut drx).await;
        let log = log.lock().unwrap();
        let mut first: HashMap<&str, u64> = HashMap::new();
        for (name, t) in log.iter() {
            first
                .entry(name.as_str())
                .or_insert((*t - t0).as_millis() as u64);
        }
        assert_eq!(
            first.len(),
            1000,
            "every monitor ran once within the interval"
        );
        // Each first run is at its monitor's phase.
        for (name, ms) in &first {
            assert_eq!(*ms, plan(name, 60, 0).phase().as_millis() as u64, "{name}");
        }
        // Spread: each 6-second tenth of the interval holds about 100, no second more
        // than a few dozen (all at once was 1,000 in the first second).
        let mut tenths = [0u32; 10];
        let mut seconds = [0u32; 60];
        for ms in first.values() {
            tenths[(*ms / 6_000).min(9) as usize] += 1;
            seconds[(*ms / 1_000).min(59) as usize] += 1;
        }
        for (i, n) in tenths.iter().enumerate() {
            assert!((60..=140).contains(n), "tenth {i}: {n} first runs");
        }
        assert!(
            seconds.iter().all(|n| *n <= 40),
            "first runs per second: {seconds:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn coalesced_wakeups_start_on_the_grid_and_never_early() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (dtx, mut drx) = mpsc::channel(100_000);
        let grid = Duration::from_millis(100);
        let s = Scheduler::spawn(
            recording(Duration::from_millis(1), log.clone()),
            Limits {
                net: 1000,
                privileged: 1,
                coalesce: grid,
            },
            dtx,
        );
        let t0 = Instant::now();
        let plans: Vec<MonitorPlan> = (0..200).map(|i| plan(&format!("m{i}"), 10, 0)).collect();
        let phases: HashMap<String, u64> = plans
            .iter()
            .map(|p| (p.key.name.clone(), p.phase().as_millis() as u64))
            .collect();
        s.apply(plans);
        tokio::time::sleep(Duration::from_secs(25)).await;
        drain(&mut drx).await;
        let log = log.lock().unwrap();
        assert!(log.len() >= 400);
        for (name, t) in log.iter() {
            let ms = (*t - t0).as_millis() as u64;
            assert_eq!(ms % 100, 0, "{name} started off the grid at {ms} ms");
            if ms > 0 {
                // Never before its slot, and at most one grid step after it.
                let slot = phases[name] + (ms - phases[name]) / 10_000 * 10_000;
                assert!(
                    ms >= slot && ms - slot < 100,
                    "{name} at {ms} ms, slot {slot} ms"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_limit_is_respected() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (r2, p2) = (running.clone(), peak.clone());
        let runner: Runner = Arc::new(move |_p| {
            let (r, p) = (r2.clone(), p2.clone());
            Box::pin(async move {
                let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(2)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                CheckOutcome::up(1.0)
            })
        });
        let (dtx, mut drx) = mpsc::channel(10_000);
        let s = Scheduler::spawn(runner, exact(3), dtx);
        s.apply((0..20).map(|i| plan(&format!("m{i}"), 10, 0)).collect());
        tokio::time::sleep(Duration::from_secs(30)).await;
        let mut n = 0;
        while drx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert!(n >= 20, "all monitors ran: {n}");
    }

    #[tokio::test(start_paused = true)]
    async fn catalog_changes_apply_without_restart() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (dtx, mut drx) = mpsc::channel(10_000);
        let s = Scheduler::spawn(
            recording(Duration::from_millis(1), log.clone()),
            exact(10),
            dtx,
        );
        let t0 = Instant::now();
        s.apply(vec![
            plan("keep", 10, 0),
            plan("edit", 10, 0),
            plan("drop", 10, 0),
        ]);
        tokio::time::sleep(Duration::from_millis(15_500)).await;
        let mut disabled = spec(10, 0);
        disabled.enabled = Some(false);
        s.apply(vec![
            plan("keep", 10, 0),
            plan("edit", 20, 0),
            plan("new", 10, 0),
            planned("off", disabled),
        ]);
        tokio::time::sleep(Duration::from_millis(40_000)).await;
        drain(&mut drx).await;
        let log = log.lock().unwrap();
        let at = |n: &str| -> Vec<u64> {
            log.iter()
                .filter(|(x, _)| x == n)
                .map(|(_, t)| (*t - t0).as_millis() as u64)
                .collect()
        };
        // `from + phase + k·interval`, until `until` (ms).
        let cadence = |name: &str, interval: i64, from: u64, until: u64| -> Vec<u64> {
            let pl = plan(name, interval, 0);
            let (p, i) = (pl.phase().as_millis() as u64, interval as u64 * 1000);
            let mut v = vec![];
            let mut t = from + p;
            while t < until {
                v.push(t);
                t += i;
            }
            v
        };
        let change = 15_500;
        let end = change + 40_000;
        assert_eq!(
            at("keep"),
            cadence("keep", 10, 0, end),
            "unchanged monitor keeps its cadence"
        );
        assert_eq!(at("drop"), cadence("drop", 10, 0, change));
        let mut edit = cadence("edit", 10, 0, change);
        edit.extend(cadence("edit", 20, change, end));
        assert_eq!(
            at("edit"),
            edit,
            "edited monitor is rescheduled from the change"
        );
        assert_eq!(at("new"), cadence("new", 10, change, end));
        assert!(at("off").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_run_early_then_the_cadence_resumes() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (dtx, mut drx) = mpsc::channel(10_000);
        let s = Scheduler::spawn(
            recording(Duration::from_millis(1), log.clone()),
            exact(10),
            dtx,
        );
        let t0 = Instant::now();
        s.apply(vec![plan("a", 60, 0)]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.retry(ObjKey::new("ns", "a"), Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(130)).await;
        drain(&mut drx).await;
        let starts: Vec<u64> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| (*t - t0).as_millis() as u64)
            .collect();
        // The retry runs 5 s after it was asked for; the regular slots are untouched.
        let p = plan("a", 60, 0).phase().as_millis() as u64;
        let mut expected = vec![6_000];
        let mut t = p;
        while t <= 131_000 {
            expected.push(t);
            t += 60_000;
        }
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(starts, expected);
    }
}
