//! Folder mode on a real directory: recursive multi-document reading, Secrets, reloads
//! that keep the last good version of a broken resource, and the file watcher.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubekuma_agent::catalog::folder::FolderCatalog;
use kubekuma_agent::catalog::{ObjKey, Severity};

fn monitor(name: &str, interval: u32) -> String {
    format!(
        "apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: {name}, namespace: prod}}\n\
         spec:\n  type: tcp\n  schedule: {{intervalSeconds: {interval}}}\n  target:\n    tcp: {{host: db.example.com, port: 5432}}\n"
    )
}

fn interval(cat: &kubekuma_agent::catalog::Snapshot, name: &str) -> Option<i64> {
    cat.monitors
        .get(&ObjKey::new("prod", name))
        .and_then(|m| m.spec.schedule.as_ref())
        .and_then(|s| s.interval_seconds)
}

#[test]
fn reads_recursively_with_secrets_and_monitor_sets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(
        dir.path().join("a/b/two.yml"),
        format!("{}---\n{}", monitor("one", 30), monitor("two", 60)),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    std::fs::write(
        dir.path().join("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: prod}\ndata: {k: aHVudGVyMg==}\nstringData: {j: plain}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("set.yaml"),
        "apiVersion: monitoring.kubekuma.io/v1\nkind: MonitorSet\nmetadata: {name: web, namespace: prod}\n\
         spec:\n  template:\n    type: http\n    target: {http: {url: 'https://x.example.com/', headers: {A: '${SECRET:s:k}'}}}\n  targets:\n    - name: eu\n      target: {http: {url: https://eu.example.com/}}\n",
    )
    .unwrap();
    let mut cat = FolderCatalog::new(vec![dir.path().to_path_buf()]);
    let built = cat.load();
    assert!(built.findings.is_empty(), "{:#?}", built.findings);
    let snap = built.snapshot;
    assert_eq!(interval(&snap, "one"), Some(30));
    assert_eq!(interval(&snap, "two"), Some(60));
    let eu = &snap.monitors[&ObjKey::new("prod", "web-eu")];
    let http = eu.spec.target.http.as_ref().unwrap();
    assert_eq!(http.url, "https://eu.example.com/");
    assert_eq!(http.headers.as_ref().unwrap().0["A"], "${SECRET:s:k}");
    assert_eq!(
        eu.metadata.labels.as_ref().unwrap()["monitoring.kubekuma.io/monitor-set"],
        "web"
    );
    assert_eq!(
        snap.secrets.get("prod", "s", "k").unwrap().expose(),
        b"hunter2"
    );
    assert_eq!(
        snap.secrets.resolve("prod", "${SECRET:s:j}").unwrap(),
        "plain"
    );
    assert!(
        !format!("{snap:?}").contains("hunter2"),
        "secrets must not print"
    );
}

#[test]
fn a_bad_edit_keeps_the_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitors.yaml");
    std::fs::write(
        &file,
        format!("{}---\n{}", monitor("one", 30), monitor("two", 60)),
    )
    .unwrap();
    let mut cat = FolderCatalog::new(vec![dir.path().to_path_buf()]);
    assert!(cat.load().findings.is_empty());

    // `one` breaks (interval below the minimum), `two` changes validly.
    std::fs::write(
        &file,
        format!("{}---\n{}", monitor("one", 5), monitor("two", 90)),
    )
    .unwrap();
    let built = cat.load();
    assert_eq!(interval(&built.snapshot, "one"), Some(30), "last good kept");
    assert_eq!(
        interval(&built.snapshot, "two"),
        Some(90),
        "valid edit applied"
    );
    let msgs: Vec<String> = built
        .findings
        .iter()
        .map(|f| format!("{}: {f}", f.severity))
        .collect();
    let shown = file.display();
    assert!(msgs.contains(&format!("error: {shown} doc 1 Monitor prod/one: spec.schedule.intervalSeconds: must be at least 10 (KubeKumaSettings spec.scheduler.minIntervalSeconds), got 5")), "{msgs:#?}");
    assert!(msgs.contains(&format!("warning: {shown} doc 1 Monitor prod/one: keeping the last valid version of this resource until the error is fixed")), "{msgs:#?}");

    // A YAML syntax error keeps everything the file defined.
    std::fs::write(&file, "apiVersion: [unclosed\n").unwrap();
    let built = cat.load();
    assert_eq!(interval(&built.snapshot, "one"), Some(30));
    assert_eq!(interval(&built.snapshot, "two"), Some(90));
    assert!(
        built
            .findings
            .iter()
            .any(|f| f.severity == Severity::Error && f.message.starts_with("invalid YAML"))
    );

    // Fixed: new values; removed documents disappear.
    std::fs::write(&file, monitor("one", 45)).unwrap();
    let built = cat.load();
    assert!(built.findings.is_empty(), "{:#?}", built.findings);
    assert_eq!(interval(&built.snapshot, "one"), Some(45));
    assert_eq!(interval(&built.snapshot, "two"), None);
}

#[test]
fn the_watcher_publishes_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.yaml");
    std::fs::write(&file, monitor("one", 30)).unwrap();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r2 = reports.clone();
    let cat = FolderCatalog::new(vec![dir.path().to_path_buf()]);
    let (mut rx, _handle) = cat
        .watch(move |f| r2.lock().unwrap().push(f.to_vec()))
        .unwrap();
    assert_eq!(interval(&rx.borrow_and_update(), "one"), Some(30));

    let wait_for =
        |rx: &mut tokio::sync::watch::Receiver<Arc<kubekuma_agent::catalog::Snapshot>>,
         want: Option<i64>,
         name: &str| {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let snap: Arc<kubekuma_agent::catalog::Snapshot> = rx.borrow_and_update().clone();
                if interval(&snap, name) == want {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "watcher did not publish {name}={want:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        };
    std::fs::write(
        &file,
        format!("{}---\n{}", monitor("one", 40), monitor("two", 20)),
    )
    .unwrap();
    wait_for(&mut rx, Some(20), "two");
    assert_eq!(interval(&rx.borrow(), "one"), Some(40));

    // A broken edit is reported and changes nothing.
    std::fs::write(
        &file,
        format!("{}---\n{}", monitor("one", 1), monitor("two", 20)),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reports
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .any(|f| f.severity == Severity::Error)
    {
        assert!(Instant::now() < deadline, "error not reported");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(interval(&rx.borrow(), "one"), Some(40));
}
