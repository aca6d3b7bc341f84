//! One failing fixture per validation rule (`tests/fixtures/invalid/*.yaml`), each with
//! the exact findings it must produce in `# expect: <severity>: <message>` lines; and the
//! real manifests (seed specification examples, the original implementation's files,
//! deploy/examples) that must validate without errors.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::snapshot::{Built, build};
use kubekuma_crds::monitor::MonitorType;

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// Validate one file under its bare file name, as `kubekuma validate` would.
fn validate_one(path: &Path) -> (Built, Vec<String>) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let text = std::fs::read_to_string(path).unwrap();
    let built = build(&[parse_text(&name, &text)], None);
    let lines = built
        .findings
        .iter()
        .map(|f| format!("{}: {f}", f.severity))
        .collect();
    (built, lines)
}

#[test]
fn every_invalid_fixture_reports_its_exact_message() {
    let files = fixtures("invalid");
    assert!(
        files.len() >= 40,
        "expected a fixture per rule, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let expects: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(str::to_string)
            .collect();
        let name = path.file_name().unwrap().to_string_lossy();
        if expects.is_empty() {
            failures.push(format!("{name}: has no `# expect:` line"));
            continue;
        }
        let (_, got) = validate_one(path);
        for e in &expects {
            if !got.contains(e) {
                failures.push(format!(
                    "{name}: missing\n    {e}\n  got:\n    {}",
                    got.join("\n    ")
                ));
            }
        }
        for g in got.iter().filter(|g| g.starts_with("error: ")) {
            if !expects.contains(g) {
                failures.push(format!("{name}: unexpected\n    {g}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn assert_no_errors(path: &Path, allow_warnings: bool) {
    let (built, got) = validate_one(path);
    let bad: Vec<&String> = got
        .iter()
        .filter(|g| !allow_warnings || g.starts_with("error: "))
        .collect();
    assert!(bad.is_empty(), "{}:\n{}", path.display(), got.join("\n"));
    assert!(
        !built.snapshot.is_empty() || got.iter().all(|g| g.contains("ignored")),
        "{}: nothing was read",
        path.display()
    );
}

#[test]
fn original_implementation_manifests_validate() {
    let files = fixtures("compat");
    assert_eq!(files.len(), 2);
    for f in &files {
        assert_no_errors(f, true);
    }
    let (built, got) = validate_one(&files[1]);
    assert!(
        got.is_empty(),
        "test-resources.yaml should be clean: {got:#?}"
    );
    assert_eq!(built.snapshot.monitors.len(), 5);
    assert_eq!(built.snapshot.local_users.len(), 1);
    assert_eq!(built.snapshot.status_pages.len(), 1);
    let google = built
        .snapshot
        .monitors
        .values()
        .find(|m| m.metadata.name.as_deref() == Some("google-http"))
        .unwrap();
    let sched = google.spec.schedule.as_ref().unwrap();
    assert_eq!(sched.retries.unwrap().max_retries, 2);
    assert_eq!(sched.retries.unwrap().retry_interval_seconds, Some(5));
    let crit = google
        .spec
        .success_criteria
        .as_ref()
        .unwrap()
        .http
        .as_ref()
        .unwrap();
    assert_eq!(crit.status_codes.as_deref(), Some(&[200, 301, 302][..]));
    assert_eq!(crit.max_latency_ms, Some(5000));
    let dns = built
        .snapshot
        .monitors
        .values()
        .find(|m| m.metadata.name.as_deref() == Some("google-dns-resolve"))
        .unwrap();
    assert_eq!(dns.spec.target.dns.as_ref().unwrap().domain, "google.com");
}

#[test]
fn deploy_examples_are_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let files = kubekuma_agent::catalog::folder::read_paths(&[root]);
    assert!(files.iter().map(|f| f.docs.len()).sum::<usize>() >= 6);
    assert_no_findings(&build(&files, None));
    assert_monitor_examples_cover_every_type();
}

/// The intervals the status writer reports are the ones the scheduler runs with: for
/// every monitor type of the examples (push monitors at their evaluation interval).
#[test]
fn reported_intervals_are_the_plans_intervals() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/monitors");
    let snapshot = build(&kubekuma_agent::catalog::folder::read_paths(&[root]), None).snapshot;
    let planned: Vec<_> = kubekuma_agent::schedule::plans(&snapshot)
        .into_iter()
        .map(|p| (p.key, p.interval))
        .collect();
    let reported: Vec<_> = kubekuma_agent::schedule::intervals(&snapshot)
        .map(|(k, i)| (k.clone(), i))
        .collect();
    assert_eq!(planned.len(), snapshot.monitors.len());
    assert_eq!(reported, planned);
}

/// Fails with every finding (severity and text) when there is any.
#[track_caller]
fn assert_no_findings(built: &Built) {
    let lines: Vec<String> = built
        .findings
        .iter()
        .map(|f| format!("{}: {f}", f.severity))
        .collect();
    assert!(built.findings.is_empty(), "{}", lines.join("\n"));
}

/// deploy/examples/monitors/ documents every monitor type: read as the agent reads it, it
/// holds a valid Monitor of each of the eleven types (judged by the monitors' types, not
/// the file names), so removing or breaking one fails.
fn assert_monitor_examples_cover_every_type() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/monitors");
    let built = build(&kubekuma_agent::catalog::folder::read_paths(&[root]), None);
    assert_no_findings(&built);
    let found: BTreeSet<MonitorType> = built
        .snapshot
        .monitors
        .values()
        .map(|m| m.spec.type_)
        .collect();
    let names: Vec<String> = MonitorType::ALL.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        names,
        [
            "http",
            "keyword",
            "jsonQuery",
            "tcp",
            "dns",
            "ping",
            "websocket",
            "push",
            "steam",
            "kubernetes",
            "docker"
        ]
    );
    let missing: Vec<&MonitorType> = MonitorType::ALL
        .iter()
        .filter(|t| !found.contains(t))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/examples/monitors/ has no valid example of {missing:?} (found {found:?})"
    );
}

#[test]
fn ping_tcp_fallback_takes_a_boolean_as_users_write_it() {
    let doc = |v: &str| {
        format!(
            "apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: gw, namespace: prod}}\n\
             spec:\n  type: ping\n  target:\n    ping: {{host: gw.example.com, tcpFallback: {v}}}\n"
        )
    };
    for ok in ["true", "false", "443"] {
        let built = build(&[parse_text("m.yaml", &doc(ok))], None);
        let lines: Vec<String> = built.findings.iter().map(|f| f.to_string()).collect();
        assert!(lines.is_empty(), "tcpFallback: {ok}: {lines:?}");
    }
    let built = build(&[parse_text("m.yaml", &doc("'on'"))], None);
    let lines: Vec<String> = built.findings.iter().map(|f| f.to_string()).collect();
    assert!(
        lines.iter().any(
            |l| l.contains("tcpFallback") && l.contains("expected a port number or true/false")
        ),
        "{lines:?}"
    );
}
