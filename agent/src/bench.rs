//! `kubekuma bench agent`: N HTTP monitors against a local target server in a child
//! process, through the real scheduler, checker, state machine and store (a temporary
//! SQLite file, or the empty PostgreSQL database `--database-url` names). Reports
//! checks/s achieved vs scheduled, schedule lateness, CPU per check, peak RSS, database
//! round trips (SQLite: write transactions) per second, the PostgreSQL server's CPU
//! when it runs on this host, and bytes per stored heartbeat. `kubekuma bench twins`: the public
//! twins of N monitors through the real listener under concurrent clients from a cold
//! start, with periodic state changes.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubekuma_crds::monitor::{HttpTarget, MonitorSpec, Schedule, Target};
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use kubekuma_crds::{EffectiveSettings, MonitorType};
use tokio::sync::mpsc;

use crate::catalog::ObjKey;
use crate::checks::{self, CheckContext, Plan, PlanError};
use crate::process::process;
use crate::schedule::{CheckDone, Limits, MonitorPlan, Runner, Scheduler};
use crate::secrets::SecretStore;
use crate::state::live::Live;
use crate::store::{Store, StoreError};

/// Parameters of `kubekuma bench agent`.
#[derive(Clone, Debug)]
pub struct AgentBench {
    /// Monitors.
    pub monitors: usize,
    /// Interval of each, seconds.
    pub interval: u64,
    /// Measured time, seconds (after one interval of warm-up).
    pub duration: u64,
    /// Concurrent checks allowed.
    pub concurrency: usize,
    /// A `postgres://` URL of an empty database to benchmark instead of a temporary
    /// SQLite file (never taken from `DATABASE_URL`).
    pub database_url: Option<String>,
}

/// CPU seconds (user, system) used by this process so far, from /proc/self/stat.
fn cpu_split() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return (0.0, 0.0);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// CPU seconds (user + system) used by this process so far, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime is field 14 and stime 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size in MiB, from /proc/self/status (VmHWM).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

struct TargetProcess(Child);

impl Drop for TargetProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The running executable could not be found (to start the target server).
    #[error("cannot find the kubekuma executable: {0}")]
    Exe(std::io::Error),
    /// The target server could not be started.
    #[error("cannot start the target server: {0}")]
    Spawn(std::io::Error),
    /// The target server gave no stdout.
    #[error("no stdout from the target server")]
    NoStdout,
    /// The target server's address could not be read.
    #[error("cannot read the target server's address: {0}")]
    Address(std::io::Error),
    /// The target server printed something else than its address.
    #[error("target server printed {0:?}")]
    BadAddress(String),
    /// The target server could not listen or accept.
    #[error("target server on {listen}: {source}")]
    Serve {
        /// The address asked for.
        listen: String,
        /// Why.
        source: std::io::Error,
    },
    /// The temporary data folder could not be created.
    #[error("cannot create a temporary folder: {0}")]
    TempDir(std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--database-url` is not a PostgreSQL URL.
    #[error(
        "--database-url takes a postgres:// or postgresql:// URL (without it the benchmark uses a temporary SQLite file)"
    )]
    NotPostgres,
    /// The database `--database-url` names already holds data.
    #[error(
        "database {database} is not empty ({heartbeats} heartbeats, {states} monitor states): \
         the benchmark writes thousands of fake monitors and leaves them there, so it only \
         runs on an empty database (e.g. `CREATE DATABASE kubekuma_bench`, dropped after)"
    )]
    NotEmpty {
        /// The database, without its password.
        database: String,
        /// Heartbeat rows found.
        heartbeats: i64,
        /// Monitor state rows found.
        states: usize,
    },
    /// A generated monitor did not pass the catalog's rules.
    #[error("generated monitor: {0}")]
    Plan(#[from] PlanError),
    /// The generated catalog did not load.
    #[error("generated catalog: {0}")]
    Catalog(String),
    /// The listener could not start.
    #[error("cannot start the listener: {0}")]
    Listen(std::io::Error),
    /// The session configuration failed.
    #[error(transparent)]
    Auth(#[from] crate::admin::auth::ConfigError),
}

fn start_target() -> Result<(TargetProcess, u16), BenchError> {
    let exe = std::env::current_exe().map_err(BenchError::Exe)?;
    let mut child = Command::new(exe)
        .args(["bench", "target", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(BenchError::Spawn)?;
    let stdout = child.stdout.take().ok_or(BenchError::NoStdout)?;
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(BenchError::Address)?;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| BenchError::BadAddress(line.clone()))?;
    Ok((TargetProcess(child), port))
}

/// Serve `200 ok` on `listen` for the benchmark; prints the bound address first.
pub async fn serve_target(listen: &str) -> Result<(), BenchError> {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let serve = |source| BenchError::Serve {
        listen: listen.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(serve)?;
    println!("{}", listener.local_addr().map_err(serve)?);
    loop {
        let (stream, _) = listener.accept().await.map_err(serve)?;
        tokio::spawn(async move {
            let svc = service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                    bytes::Bytes::from_static(b"ok"),
                )))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The store a benchmark runs on, and what its report needs of it.
enum BenchStore {
    /// A temporary SQLite file (removed with the folder).
    Sqlite(tempfile::TempDir),
    /// An empty PostgreSQL database, and its server's postmaster when it runs here.
    Postgres { postmaster: Option<i32> },
}

/// Open the benchmark's store: a temporary SQLite file, or the PostgreSQL database of
/// `url` when it is empty.
async fn bench_store(url: Option<&str>) -> Result<(Store, BenchStore), BenchError> {
    let Some(url) = url else {
        let dir = tempfile::tempdir().map_err(BenchError::TempDir)?;
        let store = Store::open(&dir.path().join("bench.db"))?;
        return Ok((store, BenchStore::Sqlite(dir)));
    };
    if !crate::store::is_postgres(url) {
        return Err(BenchError::NotPostgres);
    }
    let store = Store::connect(url).await?;
    let heartbeats = store.heartbeat_rows().await?;
    let states = store.load_monitor_states().await?.len();
    if heartbeats > 0 || states > 0 {
        let database = store.path().to_string();
        let _ = store.close().await;
        return Err(BenchError::NotEmpty {
            database,
            heartbeats,
            states,
        });
    }
    let postmaster = store
        .server_backend_pid()
        .await?
        .and_then(|pid| postmaster_of(u32::try_from(pid).ok()?));
    Ok((store, BenchStore::Postgres { postmaster }))
}

/// The fields of /proc/<pid>/stat after the command name (which is in parentheses and
/// may contain spaces): the state is 0, the parent 1, utime 11, stime 12, cutime 13,
/// cstime 14.
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether process `pid` of this host is a PostgreSQL server process.
fn is_postgres_process(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "postgres")
}

/// The postmaster of the server process `backend`, when both are processes of this host
/// (a server elsewhere, or in another pid namespace, has none here).
fn postmaster_of(backend: u32) -> Option<i32> {
    if !is_postgres_process(backend) {
        return None;
    }
    let parent: u32 = proc_stat(backend)?.get(1)?.parse().ok()?;
    is_postgres_process(parent)
        .then(|| i32::try_from(parent).ok())
        .flatten()
}

/// CPU seconds the PostgreSQL server has used so far: the postmaster's own and its
/// ended children's (cutime, cstime), and its running children's.
fn server_cpu_seconds(postmaster: i32) -> f64 {
    let ticks =
        |f: &[String], i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let Ok(pm) = u32::try_from(postmaster) else {
        return 0.0;
    };
    let mut total = proc_stat(pm)
        .map(|f| ticks(&f, 11) + ticks(&f, 12) + ticks(&f, 13) + ticks(&f, 14))
        .unwrap_or(0.0);
    let parent = postmaster.to_string();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = proc_stat(pid)
                && f.get(1) == Some(&parent)
            {
                total += ticks(&f, 11) + ticks(&f, 12);
            }
        }
    }
    total / 100.0
}

/// What the benchmark reads of the store and the server at the start and the end of
/// the measured window.
#[derive(Clone, Copy, Default)]
struct StoreCounters {
    round_trips: u64,
    writes: u64,
    batches: u64,
    heartbeats: u64,
    server_cpu: f64,
}

impl StoreCounters {
    fn read(store: &Store, kind: &BenchStore) -> StoreCounters {
        StoreCounters {
            round_trips: store.round_trips(),
            writes: store.write_count(),
            batches: store.heartbeat_batches(),
            heartbeats: store.heartbeats_written(),
            server_cpu: match kind {
                BenchStore::Postgres {
                    postmaster: Some(pm),
                } => server_cpu_seconds(*pm),
                _ => 0.0,
            },
        }
    }
}

/// Run the agent benchmark and print its report.
pub async fn run_agent_bench(b: AgentBench) -> Result<String, BenchError> {
    let (_target, port) = start_target()?;
    let (store, kind) = bench_store(b.database_url.as_deref()).await?;
    let table_before = store.heartbeat_table_bytes().await?;
    let settings = EffectiveSettings {
        max_concurrent_net_checks: b.concurrency as i64,
        ..EffectiveSettings::default()
    };
    let ctx = Arc::new(CheckContext::new(
        settings.clone(),
        Arc::new(SecretStore::default()),
    ));
    let plans = bench_plans(&b, port, &settings)?;
    let runner = bench_runner(ctx.clone());
    let (done_tx, done_rx) = mpsc::channel::<CheckDone>(65_536);
    let scheduler = Scheduler::spawn(runner, Limits::from_settings(&settings), done_tx);
    let live = Arc::new(Mutex::new(Live::default()));
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let processor = spawn_counter(done_rx, &store, &live, &scheduler, &counts);
    scheduler.apply(plans);
    // Warm-up: one interval, so every monitor has started its cadence.
    tokio::time::sleep(Duration::from_secs(b.interval)).await;
    let _ = scheduler.take_stats();
    let (c0, f0) = counts.lock().map(|c| *c).unwrap_or_default();
    let s0 = StoreCounters::read(&store, &kind);
    let cpu0 = cpu_seconds();
    let (user0, sys0) = cpu_split();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(b.duration)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let (user1, sys1) = cpu_split();
    let s1 = StoreCounters::read(&store, &kind);
    let (c1, f1) = counts.lock().map(|c| *c).unwrap_or_default();
    let stats = scheduler.take_stats();
    processor.abort();
    store.flush().await?;
    let checks = (c1 - c0) as f64;
    let mut lat = stats.lateness_us.clone();
    lat.sort_unstable();
    let per_check = |seconds: f64| {
        if checks > 0.0 {
            seconds * 1_000_000.0 / checks
        } else {
            0.0
        }
    };
    let scheduled = b.monitors as f64 / b.interval as f64;
    let mut report = format!(
        "store {}\n\
         monitors {}  interval {} s  measured {:.0} s (after {} s warm-up)\n\
         checks/s achieved {:.1} vs scheduled {:.1}  (failed checks: {})\n\
         schedule lateness p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} samples, {} overlaps skipped)\n\
         CPU {:.2} s (user {:.2} s, system {:.2} s) = {:.0} µs per check ({:.3} ms per check, {:.0} ms per 1,000 checks)\n\
         peak RSS {:.1} MiB\n",
        match kind {
            BenchStore::Sqlite(_) => "SQLite (a temporary file)".to_string(),
            BenchStore::Postgres { .. } => format!("PostgreSQL {}", store.path()),
        },
        b.monitors,
        b.interval,
        elapsed,
        b.interval,
        checks / elapsed,
        scheduled,
        f1 - f0,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        lat.len(),
        stats.skipped_overlap,
        cpu,
        user1 - user0,
        sys1 - sys0,
        per_check(cpu),
        per_check(cpu) / 1000.0,
        per_check(cpu),
        peak_rss_mib(),
    );
    let batches = s1.batches - s0.batches;
    let per_batch = if batches > 0 {
        (s1.heartbeats - s0.heartbeats) as f64 / batches as f64
    } else {
        0.0
    };
    match &kind {
        BenchStore::Sqlite(dir) => {
            let stored = store.heartbeats_written();
            let bytes = store.database_bytes().await.unwrap_or(0).max(0) as u64;
            report.push_str(&format!(
                "database write transactions {:.1}/s (SQLite has no server to talk to: {} in the window for {} heartbeats: {} heartbeat batches of {:.0} on average)\n\
                 stored heartbeats {}  database {} B = {:.1} B per heartbeat (files incl. WAL: {} B)",
                (s1.writes - s0.writes) as f64 / elapsed,
                s1.writes - s0.writes,
                s1.heartbeats - s0.heartbeats,
                batches,
                per_batch,
                stored,
                bytes,
                if stored > 0 {
                    bytes as f64 / stored as f64
                } else {
                    0.0
                },
                dir_bytes(dir.path()),
            ));
        }
        BenchStore::Postgres { postmaster } => {
            let round_trips = s1.round_trips - s0.round_trips;
            report.push_str(&format!(
                "database round trips {:.1}/s ({} requests to the server in the window for {} heartbeats: {} heartbeat batches of {:.0} on average)\n",
                round_trips as f64 / elapsed,
                round_trips,
                s1.heartbeats - s0.heartbeats,
                batches,
                per_batch,
            ));
            match postmaster {
                Some(pm) => {
                    let server = s1.server_cpu - s0.server_cpu;
                    report.push_str(&format!(
                        "server CPU {:.2} s = {:.0} µs per check (the PostgreSQL processes on this host: postmaster {pm} and its children)\n",
                        server,
                        per_check(server),
                    ));
                }
                None => report.push_str(
                    "server CPU not measured (the PostgreSQL server is not a process on this host)\n",
                ),
            }
            let stored = store.heartbeat_rows().await?;
            let before = table_before.unwrap_or(0);
            let after = store.heartbeat_table_bytes().await?.unwrap_or(0);
            report.push_str(&format!(
                "stored heartbeats {}  heartbeats table {} B (empty: {} B) = {:.1} B per heartbeat (pg_total_relation_size: rows, indexes, TOAST)",
                stored,
                after,
                before,
                if stored > 0 {
                    (after - before).max(0) as f64 / stored as f64
                } else {
                    0.0
                },
            ));
        }
    }
    store.close().await?;
    Ok(report)
}

/// The benchmark's monitors: `b.monitors` http monitors of the target on `port`, every
/// `b.interval` seconds.
fn bench_plans(
    b: &AgentBench,
    port: u16,
    settings: &EffectiveSettings,
) -> Result<Vec<MonitorPlan>, PlanError> {
    (0..b.monitors)
        .map(|i| {
            let spec = MonitorSpec {
                enabled: None,
                type_: MonitorType::Http,
                description: None,
                schedule: Some(Schedule {
                    interval_seconds: Some(b.interval as i64),
                    timeout_seconds: Some((b.interval as i64).min(10)),
                    ..Schedule::default()
                }),
                target: Target {
                    http: Some(HttpTarget {
                        url: format!("http://127.0.0.1:{port}/m/{i}"),
                        ..HttpTarget::default()
                    }),
                    ..Target::default()
                },
                success_criteria: None,
                alerting: None,
                tags: vec![],
                annotations: Default::default(),
                locations: vec![],
                quorum: None,
            };
            let check = Plan::of("bench", &spec)?;
            Ok(MonitorPlan::new(
                ObjKey::new("bench", &format!("m{i}")),
                Arc::new(spec),
                Arc::new(check),
                settings,
            ))
        })
        .collect::<Result<_, PlanError>>()
}

/// Runs a benchmark monitor's check (all of them are probes).
fn bench_runner(ctx: Arc<CheckContext>) -> Runner {
    Arc::new(move |plan: Arc<MonitorPlan>| {
        let ctx = ctx.clone();
        Box::pin(async move {
            match plan.check.as_ref() {
                Plan::Probe(probe) => checks::run(&ctx, probe, plan.timeout).await,
                // The mix holds only http monitors.
                Plan::Push(_) => CheckOutcome::down(
                    0.0,
                    FailureReason::Config,
                    "push monitors are not part of the benchmark",
                ),
            }
        })
    })
}

/// Feeds finished checks through `process` and counts them (all, and failed).
fn spawn_counter(
    mut done_rx: mpsc::Receiver<CheckDone>,
    store: &Store,
    live: &Arc<Mutex<Live>>,
    scheduler: &Scheduler,
    counts: &Arc<Mutex<(u64, u64)>>,
) -> tokio::task::JoinHandle<()> {
    let (store, live, scheduler, counts) = (
        store.clone(),
        live.clone(),
        scheduler.clone(),
        counts.clone(),
    );
    tokio::spawn(async move {
        while let Some(done) = done_rx.recv().await {
            let up = done.outcome.up;
            process(done, &store, &live, &scheduler).await;
            if let Ok(mut c) = counts.lock() {
                c.0 += 1;
                if !up {
                    c.1 += 1;
                }
            }
        }
    })
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Parameters of `kubekuma bench twins`.
#[derive(Clone, Debug)]
pub struct TwinsBench {
    /// Monitors, all on one published page with per-monitor badges.
    pub monitors: usize,
    /// Concurrent clients, one keep-alive connection each.
    pub clients: usize,
    /// Measured seconds, from the start.
    pub duration: u64,
    /// Milliseconds between state changes (1% of the monitors each); 0 for none.
    pub change_every_ms: u64,
}

/// The benchmark's manifests: `n` tcp monitors and a page showing them all.
fn twins_manifests(n: usize) -> String {
    let mut y = String::with_capacity(n * 200);
    for i in 0..n {
        y.push_str(&format!(
            "---\napiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: m{i}, namespace: bench}}\n\
             spec:\n  type: tcp\n  schedule: {{intervalSeconds: 60}}\n  target:\n    tcp: {{host: 127.0.0.1, port: 9}}\n"
        ));
    }
    y.push_str(
        "---\napiVersion: monitoring.kubekuma.io/v1\nkind: StatusPage\nmetadata: {name: bench, namespace: bench}\n\
         spec:\n  slug: bench\n  title: Bench\n  published: true\n  badges: {enabled: true, scope: all}\n  groups:\n    - name: All\n      monitors:\n",
    );
    for i in 0..n {
        y.push_str(&format!("        - ref: {{name: m{i}}}\n"));
    }
    y
}

/// Latencies (µs) of finished requests, by outcome.
#[derive(Default)]
struct Samples {
    ok: Vec<u64>,
    busy: Vec<u64>,
    other: Vec<u64>,
    failed: u64,
}

/// Run the twins benchmark and print its report.
pub async fn run_twins_bench(b: TwinsBench) -> Result<String, BenchError> {
    let dir = tempfile::tempdir().map_err(BenchError::TempDir)?;
    let agent = twins_agent(&b, dir.path()).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (addr, server) = crate::admin::serve("127.0.0.1:0", agent.api.clone(), stop_rx)
        .await
        .map_err(BenchError::Listen)?;
    let base = format!("http://{addr}");

    let until = Instant::now() + Duration::from_secs(b.duration);
    let changer = spawn_changer(&agent, b.monitors, b.change_every_ms, until);
    let prober = spawn_health_prober(format!("{base}/health"), until);
    let samples = Arc::new(Mutex::new(Samples::default()));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..b.clients)
        .map(|c| spawn_client(c, base.clone(), samples.clone(), b.monitors.max(1), until))
        .collect();
    for c in clients {
        let _ = c.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let rounds = changer.await.unwrap_or(0);
    let (mut health_lat, health_failed) = prober.await.unwrap_or_default();
    let _ = stop_tx.send(true);
    let _ = server.await;
    let s = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    let mut all: Vec<u64> =
        s.ok.iter()
            .chain(&s.busy)
            .chain(&s.other)
            .copied()
            .collect();
    all.sort_unstable();
    let mut ok = s.ok.clone();
    ok.sort_unstable();
    health_lat.sort_unstable();
    Ok(format!(
        "monitors {}  clients {}  measured {:.1} s from a cold start  catalog loaded in {:.1} s\n\
         state changes: {} rounds of {} monitors every {} ms\n\
         completed requests {} ({:.0}/s): 200 {}, 503 busy {}, other {}; failed (no answer within the run) {}\n\
         latency all  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n\
         latency 200  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n\
         model computations {}\n\
         /health during the run: {} answered, {} failed; p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        b.monitors,
        b.clients,
        elapsed,
        agent.load_s,
        rounds,
        (b.monitors / 100).max(1),
        b.change_every_ms,
        all.len(),
        all.len() as f64 / elapsed,
        s.ok.len(),
        s.busy.len(),
        s.other.len(),
        s.failed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
        percentile(&ok, 0.50),
        percentile(&ok, 0.99),
        percentile(&ok, 1.0),
        agent.api.twins().computations(),
        health_lat.len(),
        health_failed,
        percentile(&health_lat, 0.50),
        percentile(&health_lat, 0.99),
        percentile(&health_lat, 1.0),
    ))
}

/// The agent side of the twins benchmark: N monitors on one page, their history in
/// SQLite, all up in the live view, and the admin API over them.
struct TwinsAgent {
    store: Store,
    live: Arc<Mutex<Live>>,
    api: Arc<crate::admin::Api>,
    /// Keeps the catalog's channel open for the run.
    _catalog: tokio::sync::watch::Sender<Arc<crate::catalog::Snapshot>>,
    /// Seconds the catalog took to load.
    load_s: f64,
}

/// A heartbeat of bench monitor `i` at `t`.
fn bench_beat(
    i: usize,
    t: chrono::DateTime<chrono::Utc>,
    up: bool,
) -> kubekuma_crds::results::Heartbeat {
    use kubekuma_crds::MonitorState;
    kubekuma_crds::results::Heartbeat {
        namespace: "bench".into(),
        name: format!("m{i}"),
        state: if up {
            MonitorState::Up
        } else {
            MonitorState::Down
        },
        latency_ms: Some(5.0 + (i % 50) as f64),
        reason: (!up).then_some(FailureReason::Timeout),
        message: None,
        checked_at: t,
        attempts: 1,
    }
}

async fn twins_agent(b: &TwinsBench, dir: &std::path::Path) -> Result<TwinsAgent, BenchError> {
    use crate::admin::auth::{Auth, AuthConfig};
    use crate::admin::{AdminContext, Api, Health};
    use crate::state::live::LiveMonitor;
    use chrono::Utc;
    use kubekuma_crds::MonitorState;

    let folder = dir.join("manifests");
    std::fs::create_dir_all(&folder).map_err(BenchError::TempDir)?;
    std::fs::write(folder.join("all.yaml"), twins_manifests(b.monitors))
        .map_err(BenchError::TempDir)?;
    let t_load = Instant::now();
    let built = crate::catalog::folder::FolderCatalog::new(vec![folder]).load();
    if let Some(f) = built
        .findings
        .iter()
        .find(|f| f.severity == crate::catalog::Severity::Error)
    {
        return Err(BenchError::Catalog(f.to_string()));
    }
    let load_s = t_load.elapsed().as_secs_f64();
    let (catalog_tx, catalog) = tokio::sync::watch::channel(Arc::new(built.snapshot));

    // History: a heartbeat an hour over the last six hours of every monitor, and every
    // monitor up in the live view.
    let store = Store::open(&dir.join("bench.db"))?;
    let now = Utc::now();
    let live = Arc::new(Mutex::new(Live::default()));
    {
        let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
        for i in 0..b.monitors {
            for h in 0..6 {
                store.record_heartbeat(bench_beat(i, now - chrono::Duration::hours(h), true))?;
            }
            let mut m = LiveMonitor::default();
            m.tracker.base = MonitorState::Up;
            m.checked_at = Some(now);
            m.latency_ms = Some(5.0);
            l.monitors.insert(ObjKey::new("bench", &format!("m{i}")), m);
        }
    }
    store.flush().await?;

    let config = AuthConfig::load(Some("bench-session-secret-0123456789abcdef0123456789"), dir)?;
    let auth = Arc::new(Auth::new(config, store.clone(), catalog.clone()));
    let health = Arc::new(Health::default());
    health.set_ready(true);
    let api = Arc::new(Api::new(health).with_admin(AdminContext {
        store: store.clone(),
        live: live.clone(),
        catalog,
        auth,
        metrics: Arc::new(crate::metrics::Metrics::new()),
    }));
    Ok(TwinsAgent {
        store,
        live,
        api,
        _catalog: catalog_tx,
        load_s,
    })
}

/// State changes until `until`: every `every_ms`, 1% of the `n` monitors flip (live view
/// and a heartbeat each). Returns the number of rounds.
fn spawn_changer(
    agent: &TwinsAgent,
    n: usize,
    every_ms: u64,
    until: Instant,
) -> tokio::task::JoinHandle<u64> {
    use kubekuma_crds::MonitorState;
    let (store, live) = (agent.store.clone(), agent.live.clone());
    tokio::spawn(async move {
        if every_ms == 0 {
            return 0u64;
        }
        let mut round = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
        tick.tick().await;
        while Instant::now() < until {
            tick.tick().await;
            round += 1;
            let t = chrono::Utc::now();
            let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
            for j in 0..(n / 100).max(1) {
                let i = (round as usize * 7919 + j * 101) % n.max(1);
                let up = round.is_multiple_of(2);
                if let Some(m) = l.monitors.get_mut(&ObjKey::new("bench", &format!("m{i}"))) {
                    m.tracker.base = if up {
                        MonitorState::Up
                    } else {
                        MonitorState::Down
                    };
                    m.checked_at = Some(t);
                }
                let _ = store.record_heartbeat(bench_beat(i, t, up));
            }
        }
        round
    })
}

/// `url` (`/health`) every 100 ms until `until`: the latencies of the answers (µs) and
/// the number of failures. Does the listener keep answering?
fn spawn_health_prober(url: String, until: Instant) -> tokio::task::JoinHandle<(Vec<u64>, u64)> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut lat = Vec::new();
        let mut failed = 0u64;
        while Instant::now() < until {
            let t = Instant::now();
            match client
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => lat.push(t.elapsed().as_micros() as u64),
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (lat, failed)
    })
}

/// Client `c`: one keep-alive connection sending requests back to back until `until`, in
/// turn a page's `status.json`, a badge and an uptime of one of the `n` monitors.
fn spawn_client(
    c: usize,
    base: String,
    samples: Arc<Mutex<Samples>>,
    n: usize,
    until: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap_or_default();
        let mut k = c;
        while Instant::now() < until {
            k += b_stride();
            let m = k % n;
            let path = match k % 3 {
                0 => "/status/bench".to_string(),
                1 => format!("/badge/bench/bench/m{m}"),
                _ => format!("/uptime/bench/m{m}?days=30"),
            };
            let t = Instant::now();
            let left = until.saturating_duration_since(t);
            let r = client
                .get(format!("{base}{path}"))
                .timeout(left.max(Duration::from_millis(1)))
                .send()
                .await;
            let status = match r {
                Ok(r) => {
                    let s = r.status();
                    match r.bytes().await {
                        Ok(_) => Some(s),
                        Err(_) => None,
                    }
                }
                Err(_) => None,
            };
            let us = t.elapsed().as_micros() as u64;
            let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
            match status {
                Some(st) if st.is_success() => s.ok.push(us),
                Some(st) if st.as_u16() == 503 => s.busy.push(us),
                Some(_) => s.other.push(us),
                None => s.failed += 1,
            }
        }
    })
}

/// How far a client moves through the monitors between requests (a prime, so clients
/// spread over monitors and routes).
const fn b_stride() -> usize {
    13
}
