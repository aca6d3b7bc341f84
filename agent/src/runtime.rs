//! The running agent, wired together: catalog → scheduler → checks → state machine →
//! SQLite → object storage, plus the HTTP listener. `kubekuma agent` and `kubekuma up`
//! start this. Only wiring lives here: each start-up step is a small function below, the
//! work is done by the modules they start.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::auth::{Auth, AuthConfig, ConfigError};
use crate::admin::{self, AdminContext, Api, Health};
use crate::alerting::outbox::{DeliveryWorker, WorkerOptions};
use crate::alerting::pipeline::Alerter;
use crate::alerting::quorum::QuorumAlerts;
use crate::catalog::folder::FolderCatalog;
use crate::catalog::{Finding, Severity, Snapshot};
use crate::checks::{self, CheckContext, Plan};
use crate::cluster::catalog::{KubeCatalog, KubeWatch};
use crate::cluster::instance::{DataLock, LockError, runs_checks};
use crate::cluster::status::{StatusOptions, StatusWriter};
use crate::export::catalog::time_phase;
use crate::export::flush::Flusher;
use crate::export::urgent::{Changes, Pacer};
use crate::export::{self, ExportError, Uploader};
use crate::metrics::Metrics;
use crate::process::{Hooks, process_with};
use crate::push::PushHub;
use crate::schedule::{CheckDone, Limits, MonitorPlan, Runner, Scheduler, plans};
use crate::state::live::Live;
use crate::store::{Store, StoreError};
use crate::sync::{Synced, restore, sync_catalog, sync_push};

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
    /// Timeouts, connection limits and trusted proxies of the HTTP listener.
    pub listener: admin::listen::ListenOptions,
    /// Identity of this agent in the object store.
    pub agent_id: String,
    /// Where this agent runs its checks from (`--location`, a DNS-1123 label; default
    /// `home`): written into its objects, the unit of the consensus across agents.
    pub location: String,
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
    /// At shutdown, how long notifications in flight may take to finish
    /// (`--shutdown-grace`); those still sending after it stay in the outbox for the
    /// next start.
    pub shutdown_grace: Duration,
}

impl AgentOptions {
    /// Agent `agent_id` with its data in `data_dir`, listening on `listen`, with the
    /// defaults of everything else: no manifests, the listener's default limits, the
    /// object store and database in the data folder, a flush every 60 s, no site, a
    /// generated session secret and the default shutdown grace. Set the other fields with
    /// struct update syntax.
    pub fn new(agent_id: &str, data_dir: PathBuf, listen: String) -> AgentOptions {
        AgentOptions {
            config: Vec::new(),
            data_dir,
            listen,
            listener: admin::listen::ListenOptions::default(),
            agent_id: agent_id.to_string(),
            location: crate::export::objects::DEFAULT_LOCATION.to_string(),
            store_url: None,
            store_options: Vec::new(),
            database_url: None,
            flush_interval: Duration::from_secs(60),
            site_dir: None,
            session_secret: None,
            metrics: None,
            shutdown_grace: crate::alerting::outbox::DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Where the desired state comes from.
// Made once per run and moved into it: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
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

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data folder could not be created.
    #[error("cannot create data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object store URL is not usable.
    #[error(transparent)]
    ObjectStore(#[from] ExportError),
    /// The session configuration is invalid.
    #[error(transparent)]
    Auth(#[from] ConfigError),
    /// The listener could not bind, or a setting of it cannot be honoured.
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        /// The address asked for.
        listen: String,
        /// Why.
        source: admin::listen::ServeError,
    },
    /// The manifests could not be watched.
    #[error(transparent)]
    Watch(std::io::Error),
    /// Another instance holds the data folder (`spec.mode.singleInstanceRequired`).
    #[error(transparent)]
    Locked(#[from] LockError),
    /// A manifest path given does not exist or cannot be read.
    #[error(transparent)]
    Config(#[from] crate::catalog::folder::PathError),
}

/// Run the agent in folder mode until `shutdown` turns true.
pub async fn run(opts: AgentOptions, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    run_with(opts, CatalogSource::Folder, shutdown).await
}

/// Run the agent on the catalog `source` until `shutdown` turns true.
pub async fn run_with(
    opts: AgentOptions,
    source: CatalogSource,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let store = open_store(&opts).await?;
    let (uploader, store_url) = open_object_store(&opts)?;
    let (done_tx, done_rx) = mpsc::channel::<CheckDone>(4096);
    let parts = Parts::new(&opts, store, done_tx.clone());
    let server = start_listener(&opts, &parts, &store_url, shutdown.clone()).await?;
    let Some(catalog) = read_catalog(source, &opts, &mut shutdown).await? else {
        let _ = server.await;
        return Ok(());
    };
    restore(&parts.store, &parts.live).await?;

    let first = catalog.snapshots.borrow().clone();
    let lock = lock_data_folder(&catalog, &opts, &first, parts.store.is_shared())?;
    parts.catalog_tx.send_replace(first.clone());
    let kube_client = catalog.kube.as_ref().map(|(m, _)| m.client.clone());
    let (ctx_tx, ctx_rx) = watch::channel(Arc::new(check_context(&first, &kube_client)));
    let scheduler = start_scheduler(&first, ctx_rx, parts.hub.clone(), done_tx);
    // Kube mode elects with the Lease; agents sharing a PostgreSQL database elect
    // through it (an advisory lock).
    let election = match &catalog.kube {
        Some((mode, _)) => Some(mode.is_leader.clone()),
        None => parts.store.elect(shutdown.clone()),
    };
    let role = Role::new(election, lock, first.effective.single_instance_required);
    if role.leading.is_some() {
        parts.health.set_leader(role.elected);
    }
    parts.hub.set_leading(role.now);
    // On a shared store the delivery worker sends only while this agent runs checks (a
    // standby's worker would send the leader's rows); an outbox of its own (SQLite) is
    // always sent.
    let shared = parts.store.is_shared();
    let (sending, sending_rx) = watch::channel(role.now || !shared);
    let mut synced = Synced::default();
    apply_catalog(&parts, &scheduler, &first, role.now, &mut synced).await;
    parts.health.set_ready(true);
    let store_watch = watch_store(&parts, shutdown.clone());

    let (alerter, worker) =
        start_alerting(&parts, opts.shutdown_grace, sending_rx, shutdown.clone()).await?;
    let quorum = start_quorum(&opts, &uploader, &parts, &alerter, shutdown.clone());
    let processor = start_processor(&parts, &scheduler, &alerter, quorum, done_rx);
    let status_writer = start_status_writer(&catalog, &parts, shutdown.clone());
    start_ingress(&catalog, shutdown.clone());
    let flusher = Flusher::new(
        opts.agent_id.clone(),
        opts.location.clone(),
        parts.store.clone(),
        parts.live.clone(),
        uploader,
    );
    let mut main = MainLoop {
        parts,
        snapshots: catalog.snapshots.clone(),
        kube_client,
        ctx_tx,
        scheduler,
        role,
        synced,
        flusher,
        alerter,
        sending,
        pacer: Pacer::default(),
        api_silences: Vec::new(),
    };
    main.run(opts.flush_interval, shutdown).await;
    main.stop().await;
    processor.abort();
    store_watch.abort();
    // The worker saw the shutdown too: it starts no new send and gives those in flight
    // the grace to finish; what it abandons stays in the outbox for the next start.
    let _ = worker.await;
    if let Some(w) = status_writer {
        // Status writes are idempotent: a round cut short is redone by the next leader.
        w.abort();
    }
    let _ = server.await;
    Ok(())
}

/// Step (folder mode): the data folder's lock ([`DataLock`]). Held by another instance,
/// the start fails naming it while `spec.mode.singleInstanceRequired` is true (the
/// default); otherwise this instance runs without it, with a warning. Kube mode elects
/// with the Lease instead, and agents on a `shared` (PostgreSQL) store through it
/// (`None`).
fn lock_data_folder(
    catalog: &Catalog,
    opts: &AgentOptions,
    first: &Snapshot,
    shared: bool,
) -> Result<Option<DataLock>, RunError> {
    let required = first.effective.single_instance_required;
    if !required {
        tracing::warn!(
            "KubeKumaSettings spec.mode.singleInstanceRequired is false: every instance runs \
             checks and sends notifications; with several instances notifications may repeat"
        );
    }
    if catalog.kube.is_some() || shared {
        return Ok(None);
    }
    let mut lock = DataLock::new(&opts.data_dir);
    match lock.try_take() {
        Ok(()) => {
            tracing::info!(lock = %lock.path().display(), "holding the data folder's lock");
        }
        Err(e) if required => return Err(RunError::Locked(e)),
        Err(e) => tracing::warn!(error = %e, "running without the data folder's lock"),
    }
    Ok(Some(lock))
}

/// What the parts of a running agent share.
struct Parts {
    store: Store,
    health: Arc<Health>,
    hub: Arc<PushHub>,
    live: Arc<Mutex<Live>>,
    metrics: Arc<Metrics>,
    /// The catalog as the admin API, the alerter and the delivery worker see it: the
    /// listener starts before the catalog is read (kube mode waits for the API server).
    catalog_tx: watch::Sender<Arc<Snapshot>>,
    /// "Something public changed": the state machine and the admin API signal, the main
    /// loop exports soon after (an urgent flush).
    changes: Arc<Changes>,
}

impl Parts {
    fn new(opts: &AgentOptions, store: Store, done: mpsc::Sender<CheckDone>) -> Self {
        let (catalog_tx, _) = watch::channel(Arc::new(Snapshot::default()));
        Parts {
            hub: Arc::new(PushHub::new(store.clone(), done)),
            store,
            health: Arc::new(Health::default()),
            live: Arc::new(Mutex::new(Live::default())),
            metrics: opts
                .metrics
                .clone()
                .unwrap_or_else(|| Arc::new(Metrics::new())),
            catalog_tx,
            changes: Arc::new(Changes::default()),
        }
    }

    /// The current catalog, as the admin API sees it.
    fn catalog(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.catalog_tx.subscribe()
    }
}

/// How often readiness looks at the store's writer.
const STORE_WATCH: Duration = Duration::from_secs(1);

/// Readiness follows the store: while heartbeats cannot be committed (the database
/// became read-only, the disk is full), `/ready` answers 503 with the reason; the writer
/// keeps and retries them meanwhile and logs the failure.
fn watch_store(parts: &Parts, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    let (store, health) = (parts.store.clone(), parts.health.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STORE_WATCH);
        loop {
            tokio::select! {
                _ = tick.tick() => health.set_problem(store.write_failure()),
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break; }
                }
            }
        }
    })
}

/// Step: the data folder and the database (SQLite, or PostgreSQL for a `postgres://`
/// `DATABASE_URL`), which must be writable (a write is probed: a read-only database
/// fails the start with its name and cause).
async fn open_store(opts: &AgentOptions) -> Result<Store, RunError> {
    std::fs::create_dir_all(&opts.data_dir).map_err(|source| RunError::DataDir {
        path: opts.data_dir.display().to_string(),
        source,
    })?;
    Ok(match &opts.database_url {
        Some(url) => Store::connect(url).await?,
        None => Store::open(&opts.data_dir.join("kubekuma.db"))?,
    })
}

/// Step: the object store the objects go to (default `file://<data>/objects`), and its URL.
fn open_object_store(opts: &AgentOptions) -> Result<(Uploader, String), RunError> {
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
    Ok((Uploader::new(target), store_url))
}

/// Step: the HTTP listener (push, admin API, twins, the built site), before the catalog
/// is read.
async fn start_listener(
    opts: &AgentOptions,
    parts: &Parts,
    store_url: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, RunError> {
    let auth_config = AuthConfig::load(opts.session_secret.as_deref(), &opts.data_dir)?;
    let auth = Arc::new(Auth::new(auth_config, parts.store.clone(), parts.catalog()));
    // `auth.mode: oidc`: discover the provider at start and on every settings change.
    tokio::spawn(auth.clone().oidc_watch(shutdown.clone()));
    let mut api = Api::new(parts.health.clone())
        .with_push(parts.hub.clone())
        .with_changes(parts.changes.clone())
        .with_admin(AdminContext {
            store: parts.store.clone(),
            live: parts.live.clone(),
            catalog: parts.catalog(),
            auth,
            metrics: parts.metrics.clone(),
        });
    if let Some(dir) = &opts.site_dir {
        api = api.with_site(dir.clone());
    }
    // A soft descriptor limit below the hard one only starves the agent.
    let nofile = admin::listen::raise_nofile_limit();
    let (addr, server) =
        admin::serve_with(&opts.listen, Arc::new(api), opts.listener.clone(), shutdown)
            .await
            .map_err(|source| RunError::Listen {
                listen: opts.listen.clone(),
                source,
            })?;
    tracing::info!(%addr, agent = %opts.agent_id, objects = %store_url, ?nofile, "agent listening");
    Ok(server)
}

/// Where snapshots come from once the catalog is read.
struct Catalog {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Folder mode's watching thread, kept while the agent runs.
    _folder: Option<std::thread::JoinHandle<()>>,
    /// Kube mode's settings and watchers.
    kube: Option<(KubeMode, KubeWatch)>,
}

/// Step: read the catalog and keep watching it. `None` when `shutdown` came first (kube
/// mode waits for the API server).
async fn read_catalog(
    source: CatalogSource,
    opts: &AgentOptions,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Catalog>, RunError> {
    match source {
        CatalogSource::Folder => {
            crate::catalog::folder::check_paths(&opts.config)?;
            let catalog = FolderCatalog::new(opts.config.clone());
            let (snapshots, thread) = catalog.watch(log_findings).map_err(RunError::Watch)?;
            Ok(Some(Catalog {
                snapshots,
                _folder: Some(thread),
                kube: None,
            }))
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
                () = stopped => return Ok(None),
            };
            Ok(Some(Catalog {
                snapshots: kube_watch.snapshots.clone(),
                _folder: None,
                kube: Some((mode, kube_watch)),
            }))
        }
    }
}

/// What checks of `snap` run with (and kube mode's client for `kubernetes` monitors).
fn check_context(snap: &Snapshot, kube_client: &Option<kube::Client>) -> CheckContext {
    let ctx = CheckContext::new(snap.effective.clone(), Arc::new(snap.secrets.clone()));
    match kube_client {
        Some(c) => ctx.with_kube_client(c.clone()),
        None => ctx,
    }
}

/// Step: the scheduler. A run of a push monitor only evaluates its deadline (pushes
/// arrive through the listener); every other type runs its check.
fn start_scheduler(
    first: &Snapshot,
    ctx_rx: watch::Receiver<Arc<CheckContext>>,
    hub: Arc<PushHub>,
    done: mpsc::Sender<CheckDone>,
) -> Scheduler {
    let runner: Runner = Arc::new(move |plan: Arc<MonitorPlan>| {
        let ctx = ctx_rx.borrow().clone();
        let hub = hub.clone();
        Box::pin(async move {
            match plan.check.as_ref() {
                Plan::Push(_) => hub.evaluate(&plan.key, Utc::now()),
                Plan::Probe(probe) => checks::run(&ctx, probe, plan.timeout).await,
            }
        })
    });
    Scheduler::spawn(runner, Limits::from_settings(&first.effective), done)
}

/// With leader election (kube mode) or the data folder's lock (folder mode) only the
/// elected instance schedules checks and exports; a standby keeps the catalog up to date
/// so it can take over at once. With `spec.mode.singleInstanceRequired: false` every
/// instance runs them (see [`runs_checks`]).
struct Role {
    /// The election's verdicts; `None` without election (or once it ended).
    leading: Option<watch::Receiver<bool>>,
    /// Folder mode's lock of the data folder.
    lock: Option<DataLock>,
    /// The Lease's last verdict (kube mode), or whether the lock is held (folder mode).
    elected: bool,
    /// `spec.mode.singleInstanceRequired` of the current catalog.
    required: bool,
    /// Whether this instance runs checks now.
    now: bool,
}

impl Role {
    fn new(leading: Option<watch::Receiver<bool>>, lock: Option<DataLock>, required: bool) -> Self {
        let elected = match (&leading, &lock) {
            (Some(r), _) => *r.borrow(),
            (None, Some(l)) => l.held(),
            (None, None) => true,
        };
        Role {
            leading,
            lock,
            elected,
            required,
            now: runs_checks(elected, required),
        }
    }

    /// A catalog with `required` as its `singleInstanceRequired`: in folder mode without
    /// the lock, try to take it when it became required. Returns whether `now` changed.
    fn settings_changed(&mut self, required: bool) -> bool {
        if required != self.required && !required {
            tracing::warn!(
                "KubeKumaSettings spec.mode.singleInstanceRequired is now false: every instance \
                 runs checks and sends notifications; with several instances notifications may repeat"
            );
        }
        self.required = required;
        if let Some(lock) = self.lock.as_mut()
            && required
            && !lock.held()
        {
            match lock.try_take() {
                Ok(()) => {
                    tracing::info!(lock = %lock.path().display(), "holding the data folder's lock")
                }
                Err(e) => {
                    tracing::error!(error = %e, "checks stopped: another instance holds the data folder")
                }
            }
            self.elected = lock.held();
        }
        let before = self.now;
        self.now = runs_checks(self.elected, self.required);
        before != self.now
    }

    /// The next change of the election's verdict (never without election).
    async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        match self.leading.as_mut() {
            Some(r) => r.changed().await,
            None => std::future::pending().await,
        }
    }
}

/// Step (and on every reload): hand a catalog to the scheduler (when leading), the
/// resource cache, the live view and the push hub.
async fn apply_catalog(
    parts: &Parts,
    scheduler: &Scheduler,
    snap: &Snapshot,
    leading: bool,
    synced: &mut Synced,
) {
    let snap_plans = plans(snap);
    scheduler.apply(if leading {
        snap_plans.clone()
    } else {
        Vec::new()
    });
    sync_catalog(snap, &parts.store, &parts.live, synced).await;
    sync_push(&parts.hub, &snap_plans, &parts.live).await;
}

/// Step: alerting. The alerter queues notifications in the outbox, the worker sends them.
async fn start_alerting(
    parts: &Parts,
    shutdown_grace: Duration,
    sending: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) -> Result<(Arc<Alerter>, JoinHandle<()>), RunError> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let metrics = Some(parts.metrics.clone());
    let alerter = Alerter::open(parts.store.clone(), wake.clone(), metrics.clone()).await?;
    let worker = DeliveryWorker::new(
        parts.store.clone(),
        parts.catalog(),
        wake,
        metrics,
        WorkerOptions {
            shutdown_grace,
            ..WorkerOptions::default()
        },
    );
    Ok((
        Arc::new(alerter),
        tokio::spawn(worker.run_when(sending, shutdown)),
    ))
}

/// Step (with an object store, `--store`): the leader's consensus of locations
/// ([`QuorumAlerts`]), refreshed every [`crate::alerting::quorum::REFRESH`] while this
/// agent leads. Without a store there are no other locations to read.
fn start_quorum(
    opts: &AgentOptions,
    uploader: &Uploader,
    parts: &Parts,
    alerter: &Arc<Alerter>,
    shutdown: watch::Receiver<bool>,
) -> Option<Arc<QuorumAlerts>> {
    opts.store_url.as_ref()?;
    let quorum = Arc::new(QuorumAlerts::new(&opts.agent_id, &opts.location));
    tokio::spawn(quorum.clone().run(
        uploader.target().clone(),
        alerter.clone(),
        parts.catalog(),
        parts.live.clone(),
        parts.hub.clone(),
        shutdown,
    ));
    Some(quorum)
}

/// Step: the task that feeds finished checks (and pushes) to the state machine.
fn start_processor(
    parts: &Parts,
    scheduler: &Scheduler,
    alerter: &Arc<Alerter>,
    quorum: Option<Arc<QuorumAlerts>>,
    mut done_rx: mpsc::Receiver<CheckDone>,
) -> JoinHandle<()> {
    let hooks = Hooks {
        quorum,
        push: Some(parts.hub.clone()),
        alerter: Some(alerter.clone()),
        catalog: Some(parts.catalog()),
        metrics: Some(parts.metrics.clone()),
        changes: Some(parts.changes.clone()),
    };
    let (store, live, scheduler, hub) = (
        parts.store.clone(),
        parts.live.clone(),
        scheduler.clone(),
        parts.hub.clone(),
    );
    tokio::spawn(async move {
        while let Some(done) = done_rx.recv().await {
            if hub.should_record(&done) {
                process_with(done, &store, &live, &scheduler, &hooks).await;
            }
        }
    })
}

/// Step (kube mode): the status writer.
fn start_status_writer(
    catalog: &Catalog,
    parts: &Parts,
    shutdown: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    catalog.kube.as_ref().map(|(mode, w)| {
        let writer = StatusWriter::new(
            mode.client.clone(),
            w.objects.clone(),
            w.snapshots.clone(),
            w.findings.clone(),
            parts.live.clone(),
            parts.store.clone(),
            mode.status.clone(),
        );
        tokio::spawn(writer.run(mode.is_leader.clone(), shutdown))
    })
}

/// Step (kube mode, with a site server): the leader keeps the Ingresses of the status
/// pages exposed through one; the task ends with `shutdown` (the Ingresses stay).
fn start_ingress(catalog: &Catalog, shutdown: watch::Receiver<bool>) {
    if let Some((mode, w)) = &catalog.kube
        && mode.status.ingress.site.is_some()
    {
        let reconciler = crate::cluster::ingress::IngressReconciler::new(
            mode.client.clone(),
            w.snapshots.clone(),
            mode.status.ingress.clone(),
        );
        tokio::spawn(reconciler.run(mode.is_leader.clone(), shutdown));
    }
}

/// How often the main loop looks whether a maintenance window or silence started or
/// ended.
const CLOCK_TICK: Duration = Duration::from_secs(1);

/// Why a flush runs (the `trigger` label of its metrics).
#[derive(Clone, Copy, Debug)]
enum Trigger {
    /// Every `flush_interval`, for the history.
    Periodic,
    /// Soon after a public change ([`Pacer`]).
    Urgent,
    /// At shutdown.
    Final,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Periodic => "periodic",
            Trigger::Urgent => "urgent",
            Trigger::Final => "final",
        }
    }
}

/// Sleep until `due` (forever without one; the branch is disabled then).
async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The main loop's state: reloads, role changes, flushes, reminders and retention.
struct MainLoop {
    parts: Parts,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    kube_client: Option<kube::Client>,
    ctx_tx: watch::Sender<Arc<CheckContext>>,
    scheduler: Scheduler,
    role: Role,
    synced: Synced,
    flusher: Flusher,
    alerter: Arc<Alerter>,
    /// Whether the delivery worker sends (this agent runs checks).
    sending: watch::Sender<bool>,
    /// When the next urgent flush is due.
    pacer: Pacer,
    /// The admin API's silences (`startsAt`, `endsAt`) as of the last flush, for
    /// [`time_phase`].
    api_silences: Vec<(chrono::DateTime<Utc>, chrono::DateTime<Utc>)>,
}

impl MainLoop {
    /// Step: run until `shutdown` turns true (or the catalog's watch ends).
    async fn run(&mut self, flush_interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut flush = tokio::time::interval(flush_interval);
        let mut retention = tokio::time::interval(Duration::from_secs(3600));
        let mut reminders = tokio::time::interval(REMINDER_TICK);
        reminders.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Maintenance windows and silences start and end by the clock: looked at every
        // second (a few windows and silences, no monitor).
        let mut clock = tokio::time::interval(CLOCK_TICK);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut phase = Vec::new();
        let changes = self.parts.changes.clone();
        loop {
            let due = self.pacer.due();
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { break },
                changed = self.snapshots.changed() => {
                    if changed.is_err() { break; }
                    self.reload().await;
                }
                changed = self.role.changed() => self.role_changed(changed).await,
                () = changes.wait() => self.pacer.changed(Instant::now()),
                () = sleep_until_due(due), if self.role.now && due.is_some() => {
                    self.flush(Trigger::Urgent).await;
                }
                _ = clock.tick(), if self.role.now => {
                    let snap = self.snapshots.borrow().clone();
                    let now = time_phase(&snap, &self.api_silences, Utc::now());
                    if now != phase {
                        if !phase.is_empty() {
                            self.pacer.changed(Instant::now());
                        }
                        phase = now;
                    }
                }
                _ = flush.tick() => {
                    if self.role.now {
                        self.flush(Trigger::Periodic).await;
                    } else if self.parts.store.is_shared() {
                        // A standby on a shared store follows the leader's states, so its
                        // admin API shows them and a takeover starts from them.
                        self.follow().await;
                    }
                }
                _ = reminders.tick(), if self.role.now => self.remind().await,
                // On a shared store the leader keeps it; each agent keeps its own file.
                _ = retention.tick(), if self.role.now || !self.parts.store.is_shared() => {
                    self.retain().await
                }
            }
        }
    }

    /// A new catalog: to the admin API, the checks, the scheduler and what the agent keeps.
    async fn reload(&mut self) {
        let snap = self.snapshots.borrow_and_update().clone();
        self.parts.catalog_tx.send_replace(snap.clone());
        let _ = self
            .ctx_tx
            .send(Arc::new(check_context(&snap, &self.kube_client)));
        if self
            .role
            .settings_changed(snap.effective.single_instance_required)
        {
            tracing::info!(
                checks = self.role.now,
                "spec.mode.singleInstanceRequired changed whether this instance runs checks"
            );
        }
        self.parts.hub.set_leading(self.role.now);
        self.sending
            .send_replace(self.role.now || !self.parts.store.is_shared());
        let p = &self.parts;
        apply_catalog(p, &self.scheduler, &snap, self.role.now, &mut self.synced).await;
        // Pages, monitors, windows and silences of the public catalog may have changed.
        self.parts.changes.signal();
        tracing::info!(monitors = snap.monitors.len(), "catalog reloaded");
    }

    /// The election's verdict changed: schedule checks or stop them. Taking over, the
    /// agent first reads what the leader before it left in a shared store: monitor
    /// states, the alert gate and the last pushes.
    async fn role_changed(&mut self, changed: Result<(), watch::error::RecvError>) {
        let Ok(()) = changed else {
            // The election ended (shutdown): keep the last role.
            self.role.leading = None;
            return;
        };
        let lead = self.role.leading.as_mut();
        self.role.elected = lead.is_some_and(|r| *r.borrow_and_update());
        self.parts.health.set_leader(self.role.elected);
        let before = self.role.now;
        self.role.now = runs_checks(self.role.elected, self.role.required);
        let lead_now = self.role.now;
        let snap = self.snapshots.borrow().clone();
        if lead_now && !before {
            self.take_over().await;
        }
        self.parts.hub.set_leading(lead_now);
        self.sending
            .send_replace(lead_now || !self.parts.store.is_shared());
        if lead_now && !before {
            sync_push(&self.parts.hub, &plans(&snap), &self.parts.live).await;
            // The new leader exports what it took over soon, not at the next period.
            self.parts.changes.signal();
        }
        self.scheduler
            .apply(if lead_now { plans(&snap) } else { Vec::new() });
        tracing::info!(
            leader = self.role.elected,
            "role changed; checks {}",
            if lead_now { "scheduled" } else { "stopped" }
        );
    }

    /// Before leading on a shared store: the states and the alert gate the previous
    /// leader saved (a failure is logged; checks start anyway, as at a start).
    async fn take_over(&mut self) {
        if !self.parts.store.is_shared() {
            return;
        }
        self.follow().await;
        if let Err(e) = self.alerter.reload_gate().await {
            tracing::error!(error = %e, "taking over: cannot read the alert gate's state");
        }
    }

    /// Read the monitor states the leader saved (a standby on a shared store).
    async fn follow(&self) {
        if let Err(e) = restore(&self.parts.store, &self.parts.live).await {
            tracing::warn!(error = %e, "cannot read the leader's monitor states");
        }
    }

    /// Export the objects; `trigger` labels the metrics.
    async fn flush(&mut self, trigger: Trigger) {
        self.pacer.flushed(Instant::now());
        let snap = self.snapshots.borrow().clone();
        match self.flusher.flush(&snap).await {
            Ok(written) => self.parts.metrics.flushed(trigger.as_str(), written),
            Err(e) => tracing::error!(error = %e, "flush failed"),
        }
        match self.parts.store.active_api_silences(Utc::now()).await {
            Ok(v) => {
                self.api_silences = v
                    .into_iter()
                    .map(|(_, s)| (s.spec.starts_at, s.spec.ends_at))
                    .collect();
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the admin API's silences"),
        }
    }

    /// Queue due reminders.
    async fn remind(&self) {
        let snap = self.snapshots.borrow().clone();
        let queued = self.alerter.remind(&snap, Utc::now()).await;
        if queued > 0 {
            tracing::debug!(queued, "reminders queued");
        }
    }

    /// Drop old rows.
    async fn retain(&self) {
        let snap = self.snapshots.borrow().clone();
        match self
            .parts
            .store
            .apply_retention(Utc::now(), &snap.effective)
            .await
        {
            Ok(r) => tracing::debug!(report = ?r, "retention applied"),
            Err(e) => tracing::error!(error = %e, "retention failed"),
        }
    }

    /// Step: not ready any more; a last flush so the object store has the final state.
    async fn stop(&mut self) {
        self.parts.health.set_ready(false);
        if self.role.now {
            self.flush(Trigger::Final).await;
        }
    }
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kube mode: a standby runs checks only while `singleInstanceRequired` is false; the
    /// Lease's verdict decides otherwise.
    #[test]
    fn kube_standby_runs_checks_only_without_single_instance() {
        let (tx, rx) = watch::channel(false);
        let mut role = Role::new(Some(rx), None, true);
        assert!(!role.now, "a standby with the default runs no checks");
        assert!(role.settings_changed(false));
        assert!(role.now, "every replica runs checks when not required");
        assert!(role.settings_changed(true));
        assert!(!role.now);
        tx.send_replace(true);
        drop(tx);
    }

    /// Folder mode: without the data folder's lock an instance runs checks only while
    /// `singleInstanceRequired` is false; when it becomes true it tries the lock again,
    /// and takes it once the holder is gone.
    #[test]
    fn folder_instance_without_the_lock() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut holder = DataLock::new(dir.path());
        assert!(holder.try_take().is_ok());
        let mut second = DataLock::new(dir.path());
        assert!(second.try_take().is_err());
        let mut role = Role::new(None, Some(second), false);
        assert!(role.now && !role.elected);
        assert!(role.settings_changed(true), "required again: checks stop");
        assert!(!role.now);
        drop(holder);
        assert!(
            role.settings_changed(true),
            "the lock is free: taken, checks run"
        );
        assert!(role.now && role.elected);
        let mut third = DataLock::new(dir.path());
        assert!(third.try_take().is_err(), "now held by the second instance");
    }
}
