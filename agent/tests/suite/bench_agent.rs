//! `kubekuma bench agent` as a user runs it, small and short: on PostgreSQL
//! (`--database-url`, a fresh database of the test server) and on SQLite, checking that
//! the report carries its figures and that heartbeats were stored in batches (never
//! how fast: speed is measured in BENCHMARKS.md, not asserted).

use std::process::{Command, Output};

use kubekuma_agent::store::Store;

use crate::common::postgres;

/// `kubekuma bench agent ARGS` with no database variables from the environment of the
/// test run.
fn bench_agent(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kubekuma"));
    c.args(["bench", "agent"])
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_PASSWORD")
        .env_remove("DATABASE_PASSWORD_FILE")
        .env("LOG_LEVEL", "warn");
    c
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The number just before `after` on the line starting with `line`.
fn number_before(report: &str, line: &str, after: &str) -> f64 {
    let l = report
        .lines()
        .find(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("no line {line:?} in\n{report}"));
    let head = &l[..l
        .find(after)
        .unwrap_or_else(|| panic!("no {after:?} in {l:?}"))];
    head.split_whitespace()
        .last()
        .and_then(|n| n.trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("no number before {after:?} in {l:?}"))
}

async fn count(url: &str, sql: &str) -> i64 {
    let c = postgres::connect(url).await.unwrap();
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn bench_agent_on_postgres_reports_its_figures_and_batches_heartbeats() {
    if !postgres::enabled() {
        return;
    }
    let url = postgres::fresh_database().await;
    let out = bench_agent(&[
        "--monitors",
        "200",
        "--interval",
        "2",
        "--duration",
        "4",
        "--concurrency",
        "32",
        "--database-url",
        &url,
    ])
    .output()
    .unwrap();
    let (report, stderr) = text(&out);
    assert!(out.status.success(), "{report}\n{stderr}");
    assert!(
        report.starts_with("store PostgreSQL postgres://"),
        "{report}"
    );
    for figure in [
        "schedule lateness p50",
        "µs per check",
        "database round trips",
        "server CPU",
        "B per heartbeat (pg_total_relation_size",
    ] {
        assert!(report.contains(figure), "no {figure:?} in\n{report}");
    }
    // The test server runs on this host: its CPU is read, not skipped.
    assert!(!report.contains("server CPU not measured"), "{report}");
    let requests = number_before(&report, "database round trips", "requests to the server");
    let heartbeats = number_before(&report, "database round trips", "heartbeats:");
    assert!(heartbeats > 0.0, "{report}");
    assert!(requests > 0.0, "{report}");
    // Batched: far fewer requests than heartbeats (one per heartbeat would be >= 1).
    assert!(
        requests * 2.0 <= heartbeats,
        "{requests} requests for {heartbeats} heartbeats\n{report}"
    );
    // The heartbeats are in the database, as many as the report says it stored.
    let stored = number_before(&report, "stored heartbeats", "heartbeats table");
    let rows = count(&url, "SELECT count(*) FROM heartbeats").await;
    assert!(rows >= 200, "{rows} rows\n{report}");
    assert_eq!(rows as f64, stored, "{report}");
    let per_heartbeat = number_before(&report, "stored heartbeats", "B per heartbeat");
    assert!(per_heartbeat > 0.0, "{report}");
}

#[tokio::test]
async fn bench_agent_refuses_a_database_that_holds_data() {
    if !postgres::enabled() {
        return;
    }
    let url = postgres::fresh_database().await;
    let store = Store::open_postgres(&url, &Default::default())
        .await
        .unwrap();
    store
        .record_heartbeat(kubekuma_crds::results::Heartbeat {
            namespace: "prod".into(),
            name: "api".into(),
            state: kubekuma_crds::MonitorState::Up,
            latency_ms: Some(3.0),
            reason: None,
            message: None,
            checked_at: chrono::Utc::now(),
            attempts: 1,
        })
        .unwrap();
    store.flush().await.unwrap();
    store.close().await.unwrap();
    let out = bench_agent(&[
        "--monitors",
        "20",
        "--interval",
        "1",
        "--duration",
        "1",
        "--database-url",
        &url,
    ])
    .output()
    .unwrap();
    let (report, stderr) = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(
        stderr.contains("is not empty (1 heartbeats, 0 monitor states)")
            && stderr.contains("empty database"),
        "{stderr}"
    );
    // Nothing was written: the one heartbeat is alone, and no monitor state appeared.
    assert_eq!(count(&url, "SELECT count(*) FROM heartbeats").await, 1);
    assert_eq!(count(&url, "SELECT count(*) FROM monitor_state").await, 0);
}

#[test]
fn bench_agent_uses_sqlite_whatever_database_url_says() {
    // A DATABASE_URL in the environment never points the benchmark anywhere: only the
    // flag does (this one would fail to connect).
    let out = bench_agent(&["--monitors", "50", "--interval", "1", "--duration", "2"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/production")
        .output()
        .unwrap();
    let (report, stderr) = text(&out);
    assert!(out.status.success(), "{report}\n{stderr}");
    assert!(report.starts_with("store SQLite"), "{report}");
    for figure in [
        "µs per check",
        "database write transactions",
        "B per heartbeat",
    ] {
        assert!(report.contains(figure), "no {figure:?} in\n{report}");
    }
    assert!(
        number_before(&report, "stored heartbeats", "database") > 0.0,
        "{report}"
    );

    // A URL that is not PostgreSQL is refused, not taken as SQLite's.
    let out = bench_agent(&["--database-url", "sqlite:///tmp/bench.db"])
        .output()
        .unwrap();
    let (report, stderr) = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(
        stderr.contains("--database-url takes a postgres://"),
        "{stderr}"
    );
}
