//! `kubekuma bench agent`: N HTTP monitors against a local target server in a child
//! process, through the real scheduler, checker, state machine and SQLite store.
//! Reports checks/s achieved vs scheduled, schedule lateness, CPU per 1,000 checks,
//! peak RSS and bytes on disk per stored heartbeat.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kubekuma_crds::monitor::{HttpTarget, MonitorSpec, Schedule, Target};
use kubekuma_crds::{EffectiveSettings, MonitorType};
use tokio::sync::mpsc;

use crate::catalog::ObjKey;
use crate::catalog::secrets::SecretStore;
use crate::checks::{self, CheckContext};
use crate::process::process;
use crate::schedule::{CheckDone, Limits, MonitorPlan, Runner, Scheduler};
use crate::state::live::Live;
use crate::store::Store;

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

fn start_target() -> anyhow::Result<(TargetProcess, u16)> {
    let exe = std::env::current_exe().context("cannot find the kubekuma executable")?;
    let mut child = Command::new(exe)
        .args(["bench", "target", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the target server")?;
    let stdout = child
        .stdout
        .take()
        .context("no stdout from the target server")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("target server printed {line:?}"))?;
    Ok((TargetProcess(child), port))
}

/// Serve `200 ok` on `listen` for the benchmark; prints the bound address first.
pub async fn serve_target(listen: &str) -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
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

/// Run the agent benchmark and print its report.
pub async fn run_agent_bench(b: AgentBench) -> anyhow::Result<String> {
    let (_target, port) = start_target()?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("bench.db"))?;
    let settings = EffectiveSettings {
        max_concurrent_net_checks: b.concurrency as i64,
        ..EffectiveSettings::default()
    };
    let ctx = Arc::new(CheckContext::new(
        settings.clone(),
        Arc::new(SecretStore::default()),
    ));
    let plans: Vec<MonitorPlan> = (0..b.monitors)
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
            };
            MonitorPlan::new(
                ObjKey::new("bench", &format!("m{i}")),
                Arc::new(spec),
                &settings,
            )
        })
        .collect();
    let runner: Runner = {
        let ctx = ctx.clone();
        Arc::new(move |plan: Arc<MonitorPlan>| {
            let ctx = ctx.clone();
            Box::pin(async move {
                checks::run(&ctx, &plan.key.namespace, &plan.spec, plan.timeout).await
            })
        })
    };
    let (done_tx, mut done_rx) = mpsc::channel::<CheckDone>(65_536);
    let scheduler = Scheduler::spawn(runner, Limits::from_settings(&settings), done_tx);
    let live = Arc::new(Mutex::new(Live::default()));
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let processor = {
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
    };
    scheduler.apply(plans);
    // Warm-up: one interval, so every monitor has started its cadence.
    tokio::time::sleep(Duration::from_secs(b.interval)).await;
    let _ = scheduler.take_stats();
    let (c0, f0) = counts.lock().map(|c| *c).unwrap_or_default();
    let cpu0 = cpu_seconds();
    let (user0, sys0) = cpu_split();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(b.duration)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let (user1, sys1) = cpu_split();
    let (c1, f1) = counts.lock().map(|c| *c).unwrap_or_default();
    let stats = scheduler.take_stats();
    processor.abort();
    store.flush().await?;
    let checks = (c1 - c0) as f64;
    let mut lat = stats.lateness_us.clone();
    lat.sort_unstable();
    let stored = store.heartbeats_written();
    let files = dir_bytes(dir.path());
    let bytes = store.database_bytes().await.unwrap_or(0).max(0) as u64;
    let scheduled = b.monitors as f64 / b.interval as f64;
    Ok(format!(
        "monitors {}  interval {} s  measured {:.0} s (after {} s warm-up)\n\
         checks/s achieved {:.1} vs scheduled {:.1}  (failed checks: {})\n\
         schedule lateness p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} samples, {} overlaps skipped)\n\
         CPU {:.2} s (user {:.2} s, system {:.2} s) = {:.3} ms per check ({:.0} ms per 1,000 checks)\n\
         peak RSS {:.1} MiB\n\
         stored heartbeats {}  database {} B = {:.1} B per heartbeat (files incl. WAL: {} B)",
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
        if checks > 0.0 {
            cpu * 1000.0 / checks
        } else {
            0.0
        },
        if checks > 0.0 {
            cpu * 1_000_000.0 / checks
        } else {
            0.0
        },
        peak_rss_mib(),
        stored,
        bytes,
        if stored > 0 {
            bytes as f64 / stored as f64
        } else {
            0.0
        },
        files,
    ))
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
