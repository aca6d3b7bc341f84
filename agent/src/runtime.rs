//! The running agent: catalog → scheduler → checks → state machine → SQLite → object
//! storage, plus the HTTP listener. `kubekuma agent` and `kubekuma up` start this.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Datelike, Utc};
use kubekuma_crds::objects::{
    self, AgentState, DailyMonth, HourlyDay, IncidentMonth, MonitorNow, keys,
};
use kubekuma_crds::results::{CertInfo, Heartbeat};
use kubekuma_crds::{MonitorState, MonitorType};
use tokio::sync::{mpsc, watch};

use crate::admin::auth::{Auth, AuthConfig};
use crate::admin::metrics::Metrics;
use crate::admin::{self, AdminContext, Api, Health};
use crate::alerting::outbox::{DeliveryWorker, WorkerOptions};
use crate::alerting::pipeline::{Alerter, Change};
use crate::alerting::policy::events_of;
use crate::catalog::ResourceId;
use crate::catalog::folder::FolderCatalog;
use crate::catalog::{Finding, ObjKey, Severity, Snapshot};
use crate::checks::{self, CheckContext};
use crate::cluster::catalog::{KubeCatalog, KubeWatch};
use crate::cluster::status::{StatusOptions, StatusWriter};
use crate::export::{self, Outbox, PendingObject, Uploader};
use crate::notify::event::EventKind;
use crate::push::{self, PushHub, Token};
use crate::schedule::{CheckDone, Limits, MonitorPlan, Runner, Scheduler};
use crate::state::{Tracker, Transition};
use crate::store::{CrdCacheEntry, MonitorStateRow, Store};

/// How often due reminders (resend intervals) are looked for.
const REMINDER_TICK: Duration = Duration::from_secs(30);

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Manifest files and folders (folder mode).
    pub config: Vec<PathBuf>,
    /// Data folder.
    pub data_dir: PathBuf,
    /// Listen address of the HTTP listener.
    pub listen: String,
    /// Identity of this agent in the object store.
    pub agent_id: String,
    /// Object store URL; default `file://<data>/objects`.
    pub store_url: Option<String>,
    /// Extra object_store options (`aws_endpoint`, …) on top of the environment.
    pub store_options: Vec<(String, String)>,
    /// `sqlite:PATH`; default `<data>/kubekuma.db`.
    pub database_url: Option<String>,
    /// Time between flushes to object storage.
    pub flush_interval: Duration,
    /// Serve this folder (the built site) on the listener too (`kubekuma up`).
    pub site_dir: Option<PathBuf>,
    /// `SESSION_SECRET`; without it one is generated and kept in the data folder.
    pub session_secret: Option<String>,
    /// The metrics the admin API serves; new ones when `None` (`up` passes its own so
    /// that its builder loop reports builds).
    pub metrics: Option<Arc<Metrics>>,
}

/// Where the desired state comes from.
pub enum CatalogSource {
    /// Folder mode: the manifests of [`AgentOptions::config`], reloaded when they change.
    Folder,
    /// Kube mode: the API server, with status written back.
    Kube(KubeMode),
}

/// Kube mode's settings.
pub struct KubeMode {
    /// The client (also used by `kubernetes` monitors).
    pub client: kube::Client,
    /// Namespaces watched; empty: all.
    pub namespaces: Vec<String>,
    /// Pace of the status writer.
    pub status: StatusOptions,
    /// Whether this replica writes status (the leader).
    pub is_leader: watch::Receiver<bool>,
}

/// Log validation findings (errors and warnings) of a catalog load.
pub fn log_findings(findings: &[Finding]) {
    for f in findings {
        match f.severity {
            Severity::Error => tracing::error!(finding = %f, "invalid manifest"),
            Severity::Warning => tracing::warn!(finding = %f, "manifest warning"),
        }
    }
}

/// The plans of every monitor of a snapshot. A push monitor's runs only evaluate its
/// deadline, every `min(push interval, 60 s)` (see [`crate::push`]).
pub fn plans(snapshot: &Snapshot) -> Vec<MonitorPlan> {
    snapshot
        .monitors
        .iter()
        .map(|(k, m)| {
            let mut plan =
                MonitorPlan::new(k.clone(), Arc::new(m.spec.clone()), &snapshot.effective);
            if plan.spec.type_ == MonitorType::Push {
                plan.interval = push::evaluation_interval(&plan.spec);
            }
            plan
        })
        .collect()
}

/// The current, in-memory view of every monitor (published in `state.json`).
#[derive(Debug, Default)]
pub struct Live {
    /// By monitor.
    pub monitors: HashMap<ObjKey, LiveMonitor>,
}

/// The current view of one monitor.
#[derive(Clone, Debug, Default)]
pub struct LiveMonitor {
    /// State machine.
    pub tracker: Tracker,
    /// Last check.
    pub checked_at: Option<DateTime<Utc>>,
    /// Latency of the last check.
    pub latency_ms: Option<f64>,
    /// Last failure reason.
    pub reason: Option<kubekuma_crds::results::FailureReason>,
    /// Message of the last check (free of secrets).
    pub message: Option<String>,
    /// Attempts of the last check, retries included.
    pub attempts: u32,
    /// Certificate of the last check.
    pub cert: Option<CertInfo>,
    /// The generated token of a push monitor without `spec.target.push.token` (for its
    /// status; a credential: never exported or logged).
    pub push_token: Option<Token>,
    /// The certificate's days left when a `certExpiring` event last went out.
    pub cert_days_notified: Option<i64>,
}

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
    let (mut tracker, cert_notified) = live
        .lock()
        .ok()
        .and_then(|l| {
            l.monitors
                .get(&key)
                .map(|m| (m.tracker.clone(), m.cert_days_notified))
        })
        .unwrap_or_default();
    let shown_before = tracker.shown();
    let obs = tracker.observe(done.outcome.up, now, &done.plan.policy);
    let mut incident_of_event = tracker.open_incident;
    match obs.transition {
        Transition::WentDown => {
            match store
                .open_incident(&key.namespace, &key.name, now, done.outcome.reason)
                .await
            {
                Ok(id) => {
                    tracker.open_incident = Some(id);
                    incident_of_event = Some(id);
                }
                Err(e) => tracing::error!(monitor = %key, error = %e, "cannot open incident"),
            }
            tracing::warn!(
                monitor = %key,
                reason = done.outcome.reason.map(|r| r.as_str()).unwrap_or("unknown"),
                message = done.outcome.message.as_deref().unwrap_or(""),
                "monitor down"
            );
        }
        Transition::WentUp => {
            incident_of_event = tracker.open_incident;
            if let Some(id) = tracker.open_incident.take()
                && let Err(e) = store.close_incident(id, now).await
            {
                tracing::error!(monitor = %key, error = %e, "cannot close incident");
            }
            tracing::info!(monitor = %key, "monitor up again");
        }
        Transition::FirstUp | Transition::None => {}
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
            };
            alerter
                .handle(&snap, &key, incident_of_event, change, now)
                .await;
        }
    }
    if changed {
        let row = state_row(&key, &tracker, now);
        if let Err(e) = store.save_monitor_state(row).await {
            tracing::error!(monitor = %key, error = %e, "cannot save monitor state");
        }
    }
}

fn state_row(key: &ObjKey, t: &Tracker, now: DateTime<Utc>) -> MonitorStateRow {
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

/// What the last catalog sync wrote, to write only changes next time.
#[derive(Debug, Default)]
pub struct Synced {
    cached: HashMap<ResourceId, u64>,
}

fn hash_json(v: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

/// Apply a new snapshot to what the agent keeps: the crd_cache table (changed resources
/// upserted, removed ones marked deleted; Secrets are never cached), monitors that
/// disappeared (their open incident closed, their state dropped) and monitors that were
/// disabled or enabled (paused, with a heartbeat saying so).
pub async fn sync_catalog(
    snapshot: &Snapshot,
    store: &Store,
    live: &Mutex<Live>,
    synced: &mut Synced,
) {
    let now = Utc::now();
    let mut seen = std::collections::HashSet::new();
    for r in snapshot.resources() {
        let id = r.id();
        let Ok(v) = r.to_json() else {
            continue;
        };
        seen.insert(id.clone());
        let h = hash_json(&v);
        if synced.cached.get(&id) == Some(&h) {
            continue;
        }
        let meta = v.get("metadata").cloned().unwrap_or_default();
        let entry = CrdCacheEntry {
            kind: id.kind.clone(),
            api_version: kubekuma_crds::API_VERSION.into(),
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            generation: meta.get("generation").and_then(|g| g.as_i64()).unwrap_or(1),
            resource_version: meta
                .get("resourceVersion")
                .and_then(|g| g.as_str())
                .map(str::to_string),
            spec: v.get("spec").cloned().unwrap_or_default(),
            status: v.get("status").cloned(),
            labels: meta.get("labels").cloned().unwrap_or(serde_json::json!({})),
            annotations: meta
                .get("annotations")
                .cloned()
                .unwrap_or(serde_json::json!({})),
        };
        match store.upsert_crd_cache(entry).await {
            Ok(()) => {
                synced.cached.insert(id, h);
            }
            Err(e) => tracing::error!(resource = %id, error = %e, "cannot cache resource"),
        }
    }
    let gone: Vec<ResourceId> = synced
        .cached
        .keys()
        .filter(|id| !seen.contains(*id))
        .cloned()
        .collect();
    for id in gone {
        synced.cached.remove(&id);
        if let Err(e) = store
            .mark_crd_deleted(&id.kind, &id.namespace, &id.name, now)
            .await
        {
            tracing::error!(resource = %id, error = %e, "cannot mark resource deleted");
        }
    }

    // Monitors removed from the catalog, and monitors paused or resumed.
    let (removed, toggled) = {
        let Ok(mut l) = live.lock() else { return };
        let removed: Vec<(ObjKey, Option<i64>)> = l
            .monitors
            .iter()
            .filter(|(k, _)| !snapshot.monitors.contains_key(*k))
            .map(|(k, m)| (k.clone(), m.tracker.open_incident))
            .collect();
        for (k, _) in &removed {
            l.monitors.remove(k);
        }
        let mut toggled = Vec::new();
        for (k, m) in &snapshot.monitors {
            let paused = !m.spec.is_enabled();
            let entry = l.monitors.entry(k.clone()).or_default();
            if entry.tracker.set_paused(paused, now) {
                toggled.push((k.clone(), entry.tracker.clone()));
            }
        }
        (removed, toggled)
    };
    for (k, incident) in removed {
        if let Some(id) = incident
            && let Err(e) = store.close_incident(id, now).await
        {
            tracing::error!(monitor = %k, error = %e, "cannot close the incident of a removed monitor");
        }
        if let Err(e) = store.delete_monitor_state(&k.namespace, &k.name).await {
            tracing::error!(monitor = %k, error = %e, "cannot drop the state of a removed monitor");
        }
    }
    for (k, t) in toggled {
        if t.paused {
            let _ = store.record_heartbeat(Heartbeat {
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                state: MonitorState::Paused,
                latency_ms: None,
                reason: None,
                message: None,
                checked_at: now,
                attempts: 0,
            });
        }
        if let Err(e) = store.save_monitor_state(state_row(&k, &t, now)).await {
            tracing::error!(monitor = %k, error = %e, "cannot save monitor state");
        }
    }
}

/// Hand the catalog's plans to the push hub and put the generated push tokens in the
/// live view (where a monitor's status is taken from).
pub async fn sync_push(hub: &PushHub, plans: &[MonitorPlan], live: &Mutex<Live>) {
    let mut generated = hub.apply(plans, Utc::now()).await;
    let Ok(mut l) = live.lock() else { return };
    for (k, m) in l.monitors.iter_mut() {
        m.push_token = generated.remove(k);
    }
    for (k, token) in generated {
        l.monitors.entry(k).or_default().push_token = Some(token);
    }
}

/// Restore trackers saved by an earlier run.
pub async fn restore(store: &Store, live: &Mutex<Live>) -> anyhow::Result<()> {
    let rows = store.load_monitor_states().await?;
    let Ok(mut l) = live.lock() else {
        return Ok(());
    };
    for r in rows {
        let t = Tracker {
            // An open incident means the monitor was down, whatever was shown (paused).
            base: match (r.open_incident_id, r.state) {
                (Some(_), _) | (None, MonitorState::Down) => MonitorState::Down,
                (None, MonitorState::Up | MonitorState::Flapping) => MonitorState::Up,
                (None, _) => MonitorState::Pending,
            },
            since: r.since,
            consecutive_failures: r.consecutive_failures,
            open_incident: r.open_incident_id,
            ..Tracker::default()
        };
        l.monitors.insert(
            ObjKey::new(&r.namespace, &r.name),
            LiveMonitor {
                tracker: t,
                checked_at: r.last_checked_at,
                ..LiveMonitor::default()
            },
        );
    }
    Ok(())
}

/// Build the objects of one flush: catalog, state, today's hourly rollups, this month's
/// daily rollups and this month's incidents.
pub async fn flush_objects(
    agent_id: &str,
    snapshot: &Snapshot,
    store: &Store,
    live: &Mutex<Live>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let api_silences: std::collections::BTreeMap<ObjKey, kubekuma_crds::Silence> =
        match store.active_api_silences(now).await {
            Ok(v) => v.into_iter().collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the admin API's silences for the catalog");
                Default::default()
            }
        };
    let catalog = export::catalog::public_catalog_with(snapshot, &api_silences, agent_id, now);
    out.push((keys::catalog(agent_id), serde_json::to_vec(&catalog)?));

    let in_maintenance: std::collections::HashSet<String> = catalog
        .maintenance
        .iter()
        .filter(|m| m.active_since.is_some())
        .flat_map(|m| m.monitors.iter().cloned())
        .collect();
    let mut monitors = BTreeMap::new();
    let since = now - chrono::Duration::hours(24);
    let entries: Vec<(ObjKey, Option<LiveMonitor>)> = {
        let l = live
            .lock()
            .map_err(|_| anyhow::anyhow!("live state poisoned"))?;
        snapshot
            .monitors
            .keys()
            .map(|k| (k.clone(), l.monitors.get(k).cloned()))
            .collect()
    };
    for (k, m) in entries {
        let mk = objects::monitor_key(&k.namespace, &k.name);
        let paused = snapshot
            .monitors
            .get(&k)
            .is_some_and(|m| !m.spec.is_enabled());
        let recent = store
            .recent_latency(&k.namespace, &k.name, since, chrono::Duration::minutes(10))
            .await
            .unwrap_or_default();
        let now_state = MonitorNow {
            state: if paused {
                MonitorState::Paused
            } else {
                m.as_ref()
                    .map(|m| m.tracker.shown())
                    .unwrap_or(MonitorState::Pending)
            },
            since: m.as_ref().and_then(|m| m.tracker.since),
            checked_at: m.as_ref().and_then(|m| m.checked_at),
            latency_ms: m.as_ref().and_then(|m| m.latency_ms),
            reason: m.as_ref().and_then(|m| m.reason),
            cert_days_left: m
                .as_ref()
                .and_then(|m| m.cert.as_ref())
                .map(|c| c.days_left),
            maintenance: in_maintenance.contains(&mk),
            recent,
        };
        monitors.insert(mk, now_state);
    }
    let state = AgentState {
        layout: objects::LAYOUT.into(),
        agent_id: agent_id.into(),
        generated_at: now,
        monitors,
    };
    out.push((keys::state(agent_id), serde_json::to_vec(&state)?));

    let day = now.date_naive();
    let day_start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let hourly = store
        .hourly_rollups(day_start, day_start + chrono::Duration::days(1))
        .await?;
    let hourly_day = HourlyDay {
        layout: objects::LAYOUT.into(),
        agent_id: agent_id.into(),
        day,
        monitors: hourly
            .into_iter()
            .map(|(m, buckets)| {
                let hours = buckets
                    .into_iter()
                    .map(|(start_ms, r)| {
                        (
                            ((start_ms - day_start.timestamp_millis()) / 3_600_000) as u8,
                            r,
                        )
                    })
                    .collect();
                (m, hours)
            })
            .collect(),
    };
    out.push((
        keys::hourly(agent_id, day),
        serde_json::to_vec(&hourly_day)?,
    ));

    let month_start = day
        .with_day(1)
        .unwrap_or(day)
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let next_month = if day.month() == 12 {
        chrono::NaiveDate::from_ymd_opt(day.year() + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(day.year(), day.month() + 1, 1)
    }
    .unwrap_or(day)
    .and_hms_opt(0, 0, 0)
    .unwrap_or_default()
    .and_utc();
    let daily = store.daily_rollups(month_start, next_month).await?;
    let month = format!("{:04}-{:02}", day.year(), day.month());
    let daily_month = DailyMonth {
        layout: objects::LAYOUT.into(),
        agent_id: agent_id.into(),
        month: month.clone(),
        monitors: daily
            .into_iter()
            .map(|(m, buckets)| {
                let days = buckets
                    .into_iter()
                    .filter_map(|(start_ms, r)| {
                        DateTime::from_timestamp_millis(start_ms).map(|d| (d.day() as u8, r))
                    })
                    .collect();
                (m, days)
            })
            .collect(),
    };
    out.push((
        keys::daily(agent_id, day.year(), day.month()),
        serde_json::to_vec(&daily_month)?,
    ));

    let incidents = store.incidents_between(month_start, next_month).await?;
    let incident_month = IncidentMonth {
        layout: objects::LAYOUT.into(),
        agent_id: agent_id.into(),
        month,
        incidents,
    };
    out.push((
        keys::incidents(agent_id, day.year(), day.month()),
        serde_json::to_vec(&incident_month)?,
    ));
    Ok(out)
}

/// The store's outbox, as the uploader sees it.
pub struct StoreOutbox(pub Store);

impl Outbox for StoreOutbox {
    async fn pending(&self, limit: usize) -> Result<Vec<PendingObject>, String> {
        self.0
            .outbox_pending(limit)
            .await
            .map(|v| {
                v.into_iter()
                    .map(|(key, body, version)| PendingObject { key, body, version })
                    .collect()
            })
            .map_err(|e| e.to_string())
    }
    async fn done(&self, key: &str, version: i64) -> Result<(), String> {
        self.0
            .outbox_done(key, version)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Run the agent in folder mode until `shutdown` turns true.
pub async fn run(opts: AgentOptions, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    run_with(opts, CatalogSource::Folder, shutdown).await
}

/// Run the agent on the catalog `source` until `shutdown` turns true.
pub async fn run_with(
    opts: AgentOptions,
    source: CatalogSource,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("cannot create data folder {}", opts.data_dir.display()))?;
    let store = match &opts.database_url {
        Some(url) => Store::open_url(url)?,
        None => Store::open(&opts.data_dir.join("kubekuma.db"))?,
    };
    let store_url = opts.store_url.clone().unwrap_or_else(|| {
        format!(
            "file://{}",
            absolute(&opts.data_dir.join("objects")).display()
        )
    });
    let options: Vec<(&str, &str)> = opts
        .store_options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let target = export::target::open_store_with(&store_url, &options)?;
    let uploader = Uploader::new(target);

    let health = Arc::new(Health::default());
    let (done_tx, mut done_rx) = mpsc::channel::<CheckDone>(4096);
    let hub = Arc::new(PushHub::new(store.clone(), done_tx.clone()));
    let live = Arc::new(Mutex::new(Live::default()));
    // The admin API sees the catalog through its own channel: the listener starts
    // before the catalog is read (kube mode waits for the API server).
    let (admin_catalog_tx, admin_catalog) = watch::channel(Arc::new(Snapshot::default()));
    let metrics = opts
        .metrics
        .clone()
        .unwrap_or_else(|| Arc::new(Metrics::new()));
    let auth_config = AuthConfig::load(opts.session_secret.as_deref(), &opts.data_dir)?;
    let auth = Arc::new(Auth::new(auth_config, store.clone(), admin_catalog.clone()));
    let mut api = Api::new(health.clone())
        .with_push(hub.clone())
        .with_admin(AdminContext {
            store: store.clone(),
            live: live.clone(),
            catalog: admin_catalog.clone(),
            auth,
            metrics: metrics.clone(),
        });
    if let Some(dir) = &opts.site_dir {
        api = api.with_site(dir.clone());
    }
    let api = Arc::new(api);
    let (addr, server) = admin::serve(&opts.listen, api, shutdown.clone())
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    tracing::info!(%addr, agent = %opts.agent_id, objects = %store_url, "agent listening");

    // Folder mode keeps its watching thread, kube mode its watchers and settings.
    let (mut snapshots, _folder, kube) = match source {
        CatalogSource::Folder => {
            let catalog = FolderCatalog::new(opts.config.clone());
            let (snapshots, thread) = catalog.watch(log_findings)?;
            (snapshots, Some(thread), None)
        }
        CatalogSource::Kube(mode) => {
            let catalog = KubeCatalog::new(mode.client.clone(), mode.namespaces.clone());
            tracing::info!(namespaces = ?mode.namespaces, "reading the catalog from the API server");
            let stopped = async {
                // The guard `wait_for` returns is not Send: drop it here.
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            let kube_watch: KubeWatch = tokio::select! {
                w = catalog.watch(log_findings) => w,
                () = stopped => {
                    let _ = server.await;
                    return Ok(());
                }
            };
            (kube_watch.snapshots.clone(), None, Some((mode, kube_watch)))
        }
    };
    let kube_client = kube.as_ref().map(|(m, _)| m.client.clone());
    let context = move |snap: &Snapshot| {
        let ctx = CheckContext::new(snap.effective.clone(), Arc::new(snap.secrets.clone()));
        match &kube_client {
            Some(c) => ctx.with_kube_client(c.clone()),
            None => ctx,
        }
    };
    restore(&store, &live).await?;

    let first = snapshots.borrow_and_update().clone();
    let _ = admin_catalog_tx.send(first.clone());
    let (ctx_tx, ctx_rx) = watch::channel(Arc::new(context(&first)));
    // A run of a push monitor only evaluates its deadline (pushes arrive through the
    // listener); every other type runs its check.
    let runner: Runner = {
        let (ctx_rx, hub) = (ctx_rx.clone(), hub.clone());
        Arc::new(move |plan: Arc<MonitorPlan>| {
            let ctx = ctx_rx.borrow().clone();
            let hub = hub.clone();
            Box::pin(async move {
                match plan.spec.type_ {
                    MonitorType::Push => hub.evaluate(&plan.key, Utc::now()),
                    _ => checks::run(&ctx, &plan.key.namespace, &plan.spec, plan.timeout).await,
                }
            })
        })
    };
    let scheduler = Scheduler::spawn(runner, Limits::from_settings(&first.effective), done_tx);
    // With leader election only the leader schedules checks and exports; a standby keeps
    // the catalog up to date so it can take over at once.
    let mut leading = kube.as_ref().map(|(m, _)| m.is_leader.clone());
    let mut lead_now = leading.as_ref().is_none_or(|r| *r.borrow());
    if leading.is_some() {
        health.set_leader(lead_now);
    }
    let first_plans = plans(&first);
    scheduler.apply(if lead_now {
        first_plans.clone()
    } else {
        Vec::new()
    });
    let mut synced = Synced::default();
    sync_catalog(&first, &store, &live, &mut synced).await;
    sync_push(&hub, &first_plans, &live).await;
    health.set_ready(true);

    // Alerting: the alerter queues notifications in the outbox, the worker sends them.
    let wake = Arc::new(tokio::sync::Notify::new());
    let alerter =
        Arc::new(Alerter::open(store.clone(), wake.clone(), Some(metrics.clone())).await?);
    let worker = DeliveryWorker::new(
        store.clone(),
        admin_catalog.clone(),
        wake,
        Some(metrics.clone()),
        WorkerOptions::default(),
    );
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    let hooks = Hooks {
        push: Some(hub.clone()),
        alerter: Some(alerter.clone()),
        catalog: Some(admin_catalog.clone()),
        metrics: Some(metrics.clone()),
    };

    let processor = {
        let (store, live, scheduler, hub) =
            (store.clone(), live.clone(), scheduler.clone(), hub.clone());
        tokio::spawn(async move {
            while let Some(done) = done_rx.recv().await {
                if hub.should_record(&done) {
                    process_with(done, &store, &live, &scheduler, &hooks).await;
                }
            }
        })
    };

    let status_writer = kube.as_ref().map(|(mode, w)| {
        let writer = StatusWriter::new(
            mode.client.clone(),
            w.objects.clone(),
            w.snapshots.clone(),
            w.findings.clone(),
            live.clone(),
            store.clone(),
            mode.status.clone(),
        );
        tokio::spawn(writer.run(mode.is_leader.clone(), shutdown.clone()))
    });

    let mut flush = tokio::time::interval(opts.flush_interval);
    let mut retention = tokio::time::interval(Duration::from_secs(3600));
    let mut reminders = tokio::time::interval(REMINDER_TICK);
    reminders.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_bodies: HashMap<String, Vec<u8>> = HashMap::new();
    let outbox = StoreOutbox(store.clone());
    loop {
        tokio::select! {
            _ = shutdown.changed() => if *shutdown.borrow() { break },
            changed = snapshots.changed() => {
                if changed.is_err() { break; }
                let snap = snapshots.borrow_and_update().clone();
                let _ = admin_catalog_tx.send(snap.clone());
                let _ = ctx_tx.send(Arc::new(context(&snap)));
                let snap_plans = plans(&snap);
                scheduler.apply(if lead_now { snap_plans.clone() } else { Vec::new() });
                sync_catalog(&snap, &store, &live, &mut synced).await;
                sync_push(&hub, &snap_plans, &live).await;
                tracing::info!(monitors = snap.monitors.len(), "catalog reloaded");
            }
            changed = async {
                match leading.as_mut() {
                    Some(r) => r.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                match changed {
                    Ok(()) => {
                        lead_now = leading.as_mut().is_some_and(|r| *r.borrow_and_update());
                        health.set_leader(lead_now);
                        let snap = snapshots.borrow().clone();
                        scheduler.apply(if lead_now { plans(&snap) } else { Vec::new() });
                        tracing::info!(leader = lead_now, "role changed; checks {}", if lead_now { "scheduled" } else { "stopped" });
                    }
                    // The election ended (shutdown): keep the last role.
                    Err(_) => leading = None,
                }
            }
            _ = flush.tick(), if lead_now => {
                let snap = snapshots.borrow().clone();
                if let Err(e) = flush_once(&opts.agent_id, &snap, &store, &live, &outbox, &uploader, &mut last_bodies).await {
                    tracing::error!(error = %e, "flush failed");
                }
            }
            _ = reminders.tick(), if lead_now => {
                let snap = snapshots.borrow().clone();
                let queued = alerter.remind(&snap, Utc::now()).await;
                if queued > 0 {
                    tracing::debug!(queued, "reminders queued");
                }
            }
            _ = retention.tick() => {
                let snap = snapshots.borrow().clone();
                match store.apply_retention(Utc::now(), &snap.effective).await {
                    Ok(r) => tracing::debug!(report = ?r, "retention applied"),
                    Err(e) => tracing::error!(error = %e, "retention failed"),
                }
            }
        }
    }
    health.set_ready(false);
    // Last flush so the object store has the final state.
    if lead_now {
        let snap = snapshots.borrow().clone();
        let _ = flush_once(
            &opts.agent_id,
            &snap,
            &store,
            &live,
            &outbox,
            &uploader,
            &mut last_bodies,
        )
        .await;
    }
    processor.abort();
    // Pending deliveries stay in the outbox for the next start.
    worker.abort();
    if let Some(w) = status_writer {
        // Status writes are idempotent: a round cut short is redone by the next leader.
        w.abort();
    }
    let _ = server.await;
    Ok(())
}

/// Queue changed objects in the outbox, then upload what is pending.
pub async fn flush_once(
    agent_id: &str,
    snap: &Snapshot,
    store: &Store,
    live: &Mutex<Live>,
    outbox: &StoreOutbox,
    uploader: &Uploader,
    last: &mut HashMap<String, Vec<u8>>,
) -> anyhow::Result<()> {
    store.flush().await?;
    let now = Utc::now();
    for (key, body) in flush_objects(agent_id, snap, store, live, now).await? {
        // state.json changes with every flush (its timestamp is the time of the data);
        // the others are queued only when their content changed.
        if last.get(&key) != Some(&body) {
            store.outbox_put(&key, body.clone()).await?;
            last.insert(key, body);
        }
    }
    let report = uploader.drain(outbox).await;
    if let Some(e) = &report.last_error {
        tracing::warn!(uploaded = report.uploaded, failed = report.failed, error = %e, "object store unreachable; results stay queued");
    }
    Ok(())
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
