//! `kubekuma bench build`: generate N monitors with D days of history in a temporary
//! folder store, then time a full build and a no-change rebuild into a temporary folder
//! (under `TMPDIR`, else `/tmp`).
//!
//! The generated agent publishes pages of [`MONITORS_PER_PAGE`] monitors with every badge
//! enabled, so every monitor gets its page entry, seven badges (SVG, PNG, JSON each) and
//! its uptime JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration as Days, Timelike, Utc};
use kubekuma_crds::monitor::{MonitorState, MonitorType};
use kubekuma_crds::objects::{
    AgentCatalog, AgentState, DailyMonth, HourlyDay, IncidentMonth, LAYOUT, LatencyPoint,
    MonitorNow, PublicGroup, PublicMonitor, PublicPage, PublicPageMonitor, Rollup, keys,
};
use kubekuma_crds::results::{FailureReason, Incident};
use kubekuma_crds::status_page::BadgeScope;
use kubekuma_crds::store::{ExportError, open_store};

use crate::badge::{Badge, BadgeColor, BadgeError, BadgeRenderer};
use crate::{BuildError, BuildOptions, Builder, RenderOptions, Theme, ThemeError};

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The temporary folders could not be made.
    #[error("bench: temporary folder: {0}")]
    Folder(#[from] std::io::Error),
    /// The generated inputs could not be written or read back.
    #[error("bench: {0}")]
    Store(#[from] ExportError),
    /// The default theme does not load.
    #[error("bench: {0}")]
    Theme(#[from] ThemeError),
    /// A build failed.
    #[error("bench: {0}")]
    Build(#[from] BuildError),
    /// A badge could not be rendered.
    #[error("bench: {0}")]
    Badge(#[from] BadgeError),
    /// The generated state object is gone or does not parse.
    #[error("bench: the generated state {key}: {cause}")]
    State {
        /// Its key.
        key: String,
        /// What is wrong with it.
        cause: String,
    },
}

/// Monitors per generated status page.
pub const MONITORS_PER_PAGE: usize = 50;

/// What to generate.
#[derive(Clone, Debug)]
pub struct BuildBench {
    /// Monitors.
    pub monitors: usize,
    /// Days of history.
    pub days: i64,
    /// Render PNG badges too.
    pub png: bool,
}

/// The measurements.
#[derive(Clone, Debug)]
pub struct BuildBenchReport {
    /// What was generated.
    pub bench: BuildBench,
    /// Pages.
    pub pages: usize,
    /// Time to generate and write the inputs.
    pub generate: Duration,
    /// Bytes of input objects.
    pub input_bytes: u64,
    /// Full build into an empty output.
    pub full: Duration,
    /// Files the full build wrote.
    pub full_files: usize,
    /// CPU seconds (user, system) of this process during the full build: unlike the
    /// wall time, this hardly depends on what else runs on the machine.
    pub full_cpu: (f64, f64),
    /// Phases of the full build.
    pub full_phases: Vec<(&'static str, Duration)>,
    /// Phases of the no-change rebuild.
    pub rebuild_phases: Vec<(&'static str, Duration)>,
    /// Bytes of the output.
    pub output_bytes: u64,
    /// Rebuild with unchanged inputs, by a fresh builder (reads the manifest).
    pub rebuild: Duration,
    /// Files the rebuild wrote (should be 0).
    pub rebuild_files: usize,
    /// Whether the rebuild was skipped on its fingerprint.
    pub rebuild_skipped: bool,
    /// Rebuild with unchanged inputs by the builder of the full build (as a watching
    /// builder does; its manifest is already read).
    pub rebuild_same: Duration,
    /// Rebuild after another monitor changed state, by a fresh builder (a CronJob run).
    pub one_change: Duration,
    /// Files that rebuild wrote.
    pub one_change_files: usize,
    /// Phases of that rebuild.
    pub one_change_phases: Vec<(&'static str, Duration)>,
    /// Rebuild after one monitor changed state, by the builder of the full build (a
    /// watching builder).
    pub one_change_same: Duration,
    /// Files that rebuild wrote.
    pub one_change_same_files: usize,
    /// CPU seconds (user, system) of that rebuild.
    pub one_change_same_cpu: (f64, f64),
    /// Phases of that rebuild.
    pub one_change_same_phases: Vec<(&'static str, Duration)>,
}

impl fmt::Display for BuildBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.bench;
        writeln!(
            f,
            "kubekuma bench build: {} monitors, {} days of history, {} pages, PNG badges {}",
            b.monitors,
            b.days,
            self.pages,
            if b.png { "on" } else { "off" }
        )?;
        writeln!(
            f,
            "  inputs:            {:>8.2} s to generate, {:.1} MiB",
            self.generate.as_secs_f64(),
            self.input_bytes as f64 / 1048576.0
        )?;
        writeln!(
            f,
            "  full build:        {:>8.2} s, {} files written, {:.1} MiB",
            self.full.as_secs_f64(),
            self.full_files,
            self.output_bytes as f64 / 1048576.0
        )?;
        writeln!(
            f,
            "                     CPU {:.2} s user + {:.2} s system",
            self.full_cpu.0, self.full_cpu.1
        )?;
        writeln!(f, "                     {}", phases(&self.full_phases))?;
        writeln!(
            f,
            "  no-change rebuild: {:>8.2} s, {} files written{}",
            self.rebuild.as_secs_f64(),
            self.rebuild_files,
            if self.rebuild_skipped {
                ", skipped (fingerprint unchanged)"
            } else {
                ""
            }
        )?;
        writeln!(f, "                     {}", phases(&self.rebuild_phases))?;
        writeln!(
            f,
            "  same, same Builder:{:>8.2} s",
            self.rebuild_same.as_secs_f64()
        )?;
        writeln!(
            f,
            "  one monitor down:  {:>8.2} s, {} files written (same Builder), CPU {:.2} s user + {:.2} s system",
            self.one_change_same.as_secs_f64(),
            self.one_change_same_files,
            self.one_change_same_cpu.0,
            self.one_change_same_cpu.1
        )?;
        writeln!(
            f,
            "                     {}",
            phases(&self.one_change_same_phases)
        )?;
        writeln!(
            f,
            "  another one down:  {:>8.2} s, {} files written (fresh Builder)",
            self.one_change.as_secs_f64(),
            self.one_change_files
        )?;
        write!(
            f,
            "                     {}",
            phases(&self.one_change_phases)
        )
    }
}

/// Run the benchmark.
pub async fn run(b: BuildBench) -> Result<BuildBenchReport, BenchError> {
    let dir = tempfile::tempdir()?;
    let src_dir = dir.path().join("objects");
    let out_dir = dir.path().join("site");
    std::fs::create_dir_all(&src_dir)?;
    let source = open_store(src_dir.to_str().unwrap_or_default())?;
    let out = open_store(out_dir.to_str().unwrap_or_default())?;
    let now: DateTime<Utc> = Utc::now().with_nanosecond(0).unwrap_or_else(Utc::now);

    let t = Instant::now();
    let objects = generate(&b, now);
    let mut input_bytes = 0u64;
    for (key, body) in &objects {
        input_bytes += body.len() as u64;
        source.put(key, Bytes::from(body.clone())).await?;
    }
    let generate_time = t.elapsed();

    let opts = BuildOptions {
        render: RenderOptions {
            png_badges: b.png,
            ..Default::default()
        },
        now: Some(now),
        fetch_branding: false,
    };
    let theme = || Theme::default_theme();

    let t = Instant::now();
    let cpu = process_cpu();
    let mut kept = Builder::new(source.clone(), out.clone(), theme()?, opts.clone())?;
    let full = kept.build().await?;
    let full_time = t.elapsed();
    let full_cpu = {
        let after = process_cpu();
        (after.0 - cpu.0, after.1 - cpu.1)
    };

    let t = Instant::now();
    let rebuild = Builder::new(source.clone(), out.clone(), theme()?, opts.clone())?
        .build()
        .await?;
    let rebuild_time = t.elapsed();
    let t = Instant::now();
    kept.build().await?;
    let rebuild_same = t.elapsed();

    // One monitor goes down, then another.
    let state_key = keys::state("bench");
    let bad_state = |cause: String| BenchError::State {
        key: state_key.clone(),
        cause,
    };
    let down = |nth: usize| {
        let (source, state_key) = (source.clone(), state_key.clone());
        async move {
            let stored = source
                .get(&state_key)
                .await?
                .ok_or_else(|| bad_state("vanished".into()))?;
            let mut state: AgentState =
                serde_json::from_slice(&stored).map_err(|e| bad_state(e.to_string()))?;
            if let Some(m) = state.monitors.values_mut().nth(nth) {
                m.state = MonitorState::Down;
                m.reason = Some(FailureReason::Timeout);
            }
            let body = serde_json::to_vec(&state).map_err(|e| bad_state(e.to_string()))?;
            source.put(&state_key, Bytes::from(body)).await?;
            Ok::<(), BenchError>(())
        }
    };
    down(0).await?;
    let t = Instant::now();
    let cpu = process_cpu();
    let one_same = kept.build().await?;
    let one_same_time = t.elapsed();
    let one_same_cpu = {
        let after = process_cpu();
        (after.0 - cpu.0, after.1 - cpu.1)
    };
    down(1).await?;
    let t = Instant::now();
    let one = Builder::new(source.clone(), out.clone(), theme()?, opts)?
        .build()
        .await?;
    let one_time = t.elapsed();

    Ok(BuildBenchReport {
        pages: full.pages,
        generate: generate_time,
        input_bytes,
        full: full_time,
        full_files: full.publish.written.len(),
        full_cpu,
        full_phases: full.timings.clone(),
        rebuild_phases: rebuild.timings.clone(),
        output_bytes: dir_size(&out_dir),
        rebuild: rebuild_time,
        rebuild_files: rebuild.publish.written.len(),
        rebuild_skipped: rebuild.skipped,
        rebuild_same,
        one_change: one_time,
        one_change_files: one.publish.written.len(),
        one_change_phases: one.timings.clone(),
        one_change_same: one_same_time,
        one_change_same_files: one_same.publish.written.len(),
        one_change_same_cpu: one_same_cpu,
        one_change_same_phases: one_same.timings.clone(),
        bench: b,
    })
}

/// CPU time per badge of rasterising a whole status badge, against its label part and
/// its message part alone (a build rasterises parts and joins them), in milliseconds.
#[derive(Clone, Debug)]
pub struct PartsReport {
    /// The whole badge.
    pub whole_ms: f64,
    /// The label part.
    pub label_ms: f64,
    /// The message part.
    pub message_ms: f64,
}

impl fmt::Display for PartsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU per badge: whole {:.2} ms, label part {:.2} ms, message part {:.2} ms",
            self.whole_ms, self.label_ms, self.message_ms
        )
    }
}

/// Measure [`PartsReport`] over `count` status badges `svc-NNNNN | up` (on this thread).
pub fn parts(count: usize) -> Result<PartsReport, BenchError> {
    let theme = Theme::default_theme()?;
    let r = BadgeRenderer::new(theme.badge_font)?;
    let badges: Vec<_> = (0..count)
        .map(|i| Badge::new(format!("svc-{i:05}"), "up", BadgeColor::Green))
        .collect();
    let t = thread_cpu();
    for b in &badges {
        r.png(&r.svg(b), 2.0)?;
    }
    let whole = thread_cpu() - t;
    let t = thread_cpu();
    for b in &badges {
        let [l, _] = r.png_parts(b, 2.0).unwrap_or_default();
        r.raster_part(&l, 2.0)?;
    }
    let label = thread_cpu() - t;
    let t = thread_cpu();
    for b in &badges {
        let [_, m] = r.png_parts(b, 2.0).unwrap_or_default();
        r.raster_part(&m, 2.0)?;
    }
    let message = thread_cpu() - t;
    let per_badge = |secs: f64| secs * 1000.0 / count.max(1) as f64;
    Ok(PartsReport {
        whole_ms: per_badge(whole),
        label_ms: per_badge(label),
        message_ms: per_badge(message),
    })
}

/// CPU seconds of this thread (Linux `/proc/thread-self/stat`); zero elsewhere.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

/// User and system CPU seconds of this process so far (Linux `/proc/self/stat`, in
/// clock ticks of 1/100 s); zeros elsewhere.
fn process_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    // utime and stime are fields 14 and 15, the 12th and 13th after the command name.
    (ticks(11), ticks(12))
}

fn phases(p: &[(&'static str, Duration)]) -> String {
    p.iter()
        .map(|(n, d)| format!("{n} {:.2} s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                total += dir_size(&path);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}

fn rollup(up: u32, down: u32, ms: f64) -> Rollup {
    Rollup {
        up,
        down,
        latency_min: Some(ms * 0.5),
        latency_avg: Some(ms),
        latency_p95: Some(ms * 1.5),
        latency_max: Some(ms * 2.0),
        ..Default::default()
    }
}

/// The objects of one agent `bench` with `b.monitors` monitors, as (key, JSON).
pub fn generate(b: &BuildBench, now: DateTime<Utc>) -> Vec<(String, Vec<u8>)> {
    let agent = "bench";
    let names: Vec<String> = (0..b.monitors).map(|i| format!("svc-{i:05}")).collect();
    let ns = "bench";
    let mut pages = Vec::new();
    for (p, chunk) in names.chunks(MONITORS_PER_PAGE).enumerate() {
        pages.push(PublicPage {
            namespace: ns.into(),
            name: format!("page-{p}"),
            slug: format!("page-{p}"),
            title: format!("Bench page {p}"),
            published: true,
            description: Some("Generated by kubekuma bench build".into()),
            branding: None,
            groups: chunk
                .chunks(10)
                .enumerate()
                .map(|(g, ms)| PublicGroup {
                    name: format!("Group {g}"),
                    description: None,
                    monitors: ms
                        .iter()
                        .map(|m| PublicPageMonitor {
                            namespace: ns.into(),
                            name: m.clone(),
                            display_name: None,
                        })
                        .collect(),
                })
                .collect(),
            badges: Some(BadgeScope::All),
            hosts: Vec::new(),
        });
    }
    let catalog = AgentCatalog {
        layout: LAYOUT.into(),
        agent_id: agent.into(),
        location: None,
        generated_at: now,
        pages,
        monitors: names
            .iter()
            .map(|n| PublicMonitor {
                namespace: ns.into(),
                name: n.clone(),
                type_: MonitorType::Http,
                description: Some(format!("Service {n}")),
                interval_seconds: 60,
            })
            .collect(),
        maintenance: Vec::new(),
        silences: Vec::new(),
    };
    let recent: Vec<LatencyPoint> = (0..144)
        .map(|i| LatencyPoint {
            at: now - Days::minutes(10 * (144 - i)),
            ms: 40.0 + f64::from(i as u32 % 17) * 3.0,
        })
        .collect();
    let state = AgentState {
        layout: LAYOUT.into(),
        agent_id: agent.into(),
        location: None,
        generated_at: now,
        monitors: names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    format!("{ns}/{n}"),
                    MonitorNow {
                        state: if i % 97 == 5 {
                            MonitorState::Down
                        } else {
                            MonitorState::Up
                        },
                        since: Some(now - Days::days(3)),
                        checked_at: Some(now),
                        latency_ms: Some(42.0 + (i % 50) as f64),
                        reason: (i % 97 == 5).then_some(FailureReason::Timeout),
                        cert_days_left: Some(30 + (i % 60) as i64),
                        maintenance: false,
                        recent: recent.clone(),
                    },
                )
            })
            .collect(),
    };
    let mut out = vec![
        (
            keys::catalog(agent),
            serde_json::to_vec(&catalog).unwrap_or_default(),
        ),
        (
            keys::state(agent),
            serde_json::to_vec(&state).unwrap_or_default(),
        ),
    ];
    let today = now.date_naive();
    for day in [today - Days::days(1), today] {
        let monitors = names
            .iter()
            .map(|n| {
                let hours: BTreeMap<u8, Rollup> =
                    (0..24u8).map(|h| (h, rollup(60, 0, 45.0))).collect();
                (format!("{ns}/{n}"), hours)
            })
            .collect();
        let h = HourlyDay {
            layout: LAYOUT.into(),
            agent_id: agent.into(),
            day,
            monitors,
        };
        out.push((
            keys::hourly(agent, day),
            serde_json::to_vec(&h).unwrap_or_default(),
        ));
    }
    let mut months: BTreeMap<(i32, u32), BTreeMap<String, BTreeMap<u8, Rollup>>> = BTreeMap::new();
    for back in 0..b.days {
        let d = today - Days::days(back);
        let month = months.entry((d.year(), d.month())).or_default();
        for (i, n) in names.iter().enumerate() {
            let down = if (i as i64 + back) % 31 == 0 { 12 } else { 0 };
            month
                .entry(format!("{ns}/{n}"))
                .or_default()
                .insert(d.day() as u8, rollup(1440 - down, down, 45.0));
        }
    }
    let mut incidents: BTreeMap<(i32, u32), Vec<Incident>> = BTreeMap::new();
    for (i, n) in names.iter().enumerate().filter(|(i, _)| i % 10 == 0) {
        let start = now - Days::days((i % b.days.max(1) as usize) as i64) - Days::hours(2);
        incidents
            .entry((start.year(), start.month()))
            .or_default()
            .push(Incident {
                id: i as i64,
                namespace: ns.into(),
                name: n.clone(),
                started_at: start,
                ended_at: Some(start + Days::minutes(12)),
                duration_seconds: Some(720),
                reason: Some(FailureReason::Timeout),
                suppressed: false,
                suppress_reason: None,
                acknowledged: false,
                updates: Vec::new(),
            });
    }
    for ((y, m), monitors) in months {
        let d = DailyMonth {
            layout: LAYOUT.into(),
            agent_id: agent.into(),
            month: format!("{y:04}-{m:02}"),
            monitors,
        };
        out.push((
            keys::daily(agent, y, m),
            serde_json::to_vec(&d).unwrap_or_default(),
        ));
    }
    for ((y, m), list) in incidents {
        let i = IncidentMonth {
            layout: LAYOUT.into(),
            agent_id: agent.into(),
            month: format!("{y:04}-{m:02}"),
            incidents: list,
        };
        out.push((
            keys::incidents(agent, y, m),
            serde_json::to_vec(&i).unwrap_or_default(),
        ));
    }
    out
}
