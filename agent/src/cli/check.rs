//! `kubekuma check`: run every monitor of some manifests once and print a table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use kubekuma_crds::monitor::MonitorType;
use kubekuma_crds::results::CheckOutcome;

use crate::catalog::findings::Severity;
use crate::catalog::folder::read_paths;
use crate::catalog::snapshot::{Snapshot, build};
use crate::checks::{self, CheckContext};

use super::{plural, print_findings};

/// What `kubekuma check` found for one monitor.
#[derive(Debug, Clone)]
pub enum CheckResult {
    /// The check ran once.
    Ran(CheckOutcome),
    /// The check was not run (a push monitor, which only a running agent can judge): why.
    Skipped(String),
}

impl CheckResult {
    /// The STATE column: `up`, `down` or `skipped`.
    pub fn state(&self) -> &'static str {
        match self {
            CheckResult::Ran(o) if o.up => "up",
            CheckResult::Ran(_) => "down",
            CheckResult::Skipped(_) => "skipped",
        }
    }
}

/// One row of `kubekuma check`: the monitor (`namespace/name`), its type and result.
#[derive(Debug, Clone)]
pub struct CheckRow {
    /// `namespace/name`.
    pub monitor: String,
    /// The monitor's type.
    pub type_: MonitorType,
    /// What the check found.
    pub result: CheckResult,
}

/// What `kubekuma check` prints for a push monitor instead of running it.
pub const PUSH_SKIPPED: &str =
    "push monitors are checked by the running agent (POST/GET /api/v1/push/<token>)";

/// Longest message of an up result in the table (longer ones end in "…").
const MAX_UP_MESSAGE: usize = 160;

/// `text` on one line (line breaks and tabs become spaces), at most `max` characters.
fn one_line(text: &str, max: Option<usize>) -> String {
    let flat: String = text
        .split(['\n', '\r', '\t'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match max {
        Some(max) if flat.chars().count() > max => {
            let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
            cut.push('…');
            cut
        }
        _ => flat,
    }
}

/// The details of an up result: the checker's message, with (or, for the types whose
/// checkers set no message when up, instead of it) a summary of its metadata: the HTTP
/// status, the TCP peer, a Steam server's name, map and players, a pod's phase.
fn up_details(ty: MonitorType, o: &CheckOutcome) -> String {
    let message = o
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let meta = |k: &str| -> Option<String> {
        o.metadata.get(k).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let summary = match ty {
        // The status code even when the checker says more (e.g. what a keyword matched).
        MonitorType::Http | MonitorType::Keyword | MonitorType::JsonQuery => {
            let status = meta("statusCode").map(|c| format!("HTTP {c}"));
            return match (status, message) {
                (Some(s), Some(m)) if !m.contains(&s) => format!("{s}: {m}"),
                (_, Some(m)) => m.to_string(),
                (Some(s), None) => s,
                (None, None) => String::new(),
            };
        }
        MonitorType::Tcp => meta("address").map(|a| format!("connected to {a}")),
        MonitorType::Steam => {
            let mut parts = Vec::new();
            if let Some(name) = meta("serverName") {
                parts.push(format!("{name:?}"));
            }
            if let Some(map) = meta("map").filter(|m| !m.is_empty()) {
                parts.push(format!("map {map}"));
            }
            if let Some(players) = meta("players") {
                let mut p = match meta("maxPlayers") {
                    Some(max) => format!("{players}/{max} players"),
                    None => format!("{players} players"),
                };
                if let Some(bots) = meta("bots").filter(|b| b != "0") {
                    p.push_str(&format!(" ({bots} bots)"));
                }
                parts.push(p);
            }
            Some(parts.join(", ")).filter(|s| !s.is_empty())
        }
        MonitorType::Kubernetes => meta("phase").map(|p| format!("phase {p}")),
        _ => None,
    };
    message.map(str::to_string).or(summary).unwrap_or_default()
}

/// Render the results of `kubekuma check` as an aligned table: MONITOR, TYPE, STATE (`up`,
/// `down` or `skipped`), LATENCY and MESSAGE — the reason and message of a down result,
/// the checker's details of an up one (shortened to one line of at most 160 characters),
/// why a skipped monitor was not run.
pub fn check_table(rows: &[CheckRow]) -> String {
    let mut lines = vec![[
        "MONITOR".to_string(),
        "TYPE".into(),
        "STATE".into(),
        "LATENCY".into(),
        "MESSAGE".into(),
    ]];
    for row in rows {
        let (latency, message) = match &row.result {
            CheckResult::Ran(o) => {
                let message = match (&o.reason, &o.message) {
                    (Some(r), Some(m)) => one_line(&format!("{r}: {m}"), None),
                    (Some(r), None) => r.to_string(),
                    (None, _) => one_line(&up_details(row.type_, o), Some(MAX_UP_MESSAGE)),
                };
                (format!("{:.0} ms", o.latency_ms), message)
            }
            CheckResult::Skipped(why) => ("-".to_string(), one_line(why, None)),
        };
        lines.push([
            row.monitor.clone(),
            row.type_.to_string(),
            row.result.state().to_string(),
            latency,
            message,
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", l[i], w = *w));
        }
        out.push_str(&l[4]);
        // No trailing spaces when the message is empty.
        out.truncate(out.trim_end_matches(' ').len());
        out.push('\n');
    }
    out
}

/// `kubekuma check`: the findings on stderr, the table on stdout, the counts on stderr;
/// failure when a monitor is down or a manifest has an error.
pub(super) async fn check(paths: &[PathBuf]) -> ExitCode {
    let files = read_paths(paths);
    let built = build(&files, None);
    let mut err = std::io::stderr();
    print_findings(&mut err, &built.findings);
    let snap = built.snapshot;
    if snap.monitors.is_empty() {
        eprintln!(
            "kubekuma check: no valid monitors in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::FAILURE;
    }
    let rows = run_monitors(&snap).await;
    print!("{}", check_table(&rows));
    let down = print_counts(&rows);
    if down > 0 || built.findings.iter().any(|f| f.severity == Severity::Error) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Run every monitor of `snap` once, at most `maxConcurrentNetChecks` at a time, and
/// return one row per monitor in the snapshot's order (a check whose task panicked has
/// none). Push monitors are not run: they wait for pushes, which only a running agent
/// receives.
async fn run_monitors(snap: &Snapshot) -> Vec<CheckRow> {
    let ctx = Arc::new(CheckContext::new(
        snap.effective.clone(),
        Arc::new(snap.secrets.clone()),
    ));
    let limit = Arc::new(tokio::sync::Semaphore::new(
        snap.effective.max_concurrent_net_checks.max(1) as usize,
    ));
    enum Pending {
        Running(tokio::task::JoinHandle<(String, MonitorType, CheckOutcome)>),
        Skipped(String, MonitorType),
    }
    let mut pending = Vec::new();
    for (key, m) in &snap.monitors {
        if m.spec.type_ == MonitorType::Push {
            pending.push(Pending::Skipped(key.to_string(), m.spec.type_));
            continue;
        }
        let plan = crate::schedule::MonitorPlan::new(
            key.clone(),
            Arc::new(m.spec.clone()),
            &snap.effective,
        );
        let (ctx, limit) = (ctx.clone(), limit.clone());
        pending.push(Pending::Running(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let o = checks::run(&ctx, &plan.key.namespace, &plan.spec, plan.timeout).await;
            (plan.key.to_string(), plan.spec.type_, o)
        })));
    }
    let mut rows = Vec::new();
    for p in pending {
        match p {
            Pending::Running(task) => {
                if let Ok((monitor, type_, o)) = task.await {
                    rows.push(CheckRow {
                        monitor,
                        type_,
                        result: CheckResult::Ran(o),
                    });
                }
            }
            Pending::Skipped(monitor, type_) => rows.push(CheckRow {
                monitor,
                type_,
                result: CheckResult::Skipped(PUSH_SKIPPED.to_string()),
            }),
        }
    }
    rows
}

/// Print how many monitors were up, down and skipped to stderr; return the number down.
fn print_counts(rows: &[CheckRow]) -> usize {
    let count = |state: &str| rows.iter().filter(|r| r.result.state() == state).count();
    let (up, down, skipped) = (count("up"), count("down"), count("skipped"));
    eprintln!(
        "{} checked: {up} up, {down} down{}",
        plural(up + down, "monitor"),
        if skipped > 0 {
            format!(
                "; {} skipped (push monitors wait for pushes to a running agent)",
                plural(skipped, "monitor")
            )
        } else {
            String::new()
        }
    );
    down
}
