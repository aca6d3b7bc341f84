//! `spec.mode.singleInstanceRequired` in folder mode, with the real binary: a second
//! `kubekuma agent` on the same data folder refuses to start naming the lock file and its
//! holder; with the setting false it starts (and warns that notifications may repeat).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

const SECRET: &str = "0123456789abcdef0123456789abcdef-instance";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn manifests(dir: &Path, single: Option<bool>) -> std::path::PathBuf {
    let folder = dir.join(format!("manifests-{single:?}"));
    std::fs::create_dir_all(&folder).unwrap();
    let mode = single
        .map(|s| format!("  mode: {{singleInstanceRequired: {s}}}\n"))
        .unwrap_or_default();
    std::fs::write(
        folder.join("m.yaml"),
        format!(
            "apiVersion: monitoring.kubekuma.io/v1\nkind: KubeKumaSettings\nmetadata: {{name: kubekuma}}\n\
             spec:\n{mode}  scheduler: {{minIntervalSeconds: 1}}\n---\n\
             apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: local, namespace: e2e}}\n\
             spec:\n  type: tcp\n  schedule: {{intervalSeconds: 5, timeoutSeconds: 1}}\n  target:\n    tcp: {{host: 127.0.0.1, port: 9}}\n"
        ),
    )
    .unwrap();
    folder
}

fn agent(manifests: &Path, data: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .args(["agent", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(manifests)
        .arg("--data")
        .arg(data)
        .env("SESSION_SECRET", SECRET)
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn healthy(port: u16) -> bool {
    // `/ready`: the catalog is loaded, so logins see its users and the data folder is locked.
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if client
            .get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The first agent holds `<data>/kubekuma.lock`; a second one on the same data folder
/// exits with an error naming the file, the holder's process ID and the setting. With
/// `singleInstanceRequired: false` the second one runs, with a warning.
#[tokio::test]
async fn second_instance_on_the_same_data_folder_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let required = manifests(dir.path(), None);
    let first_port = free_port();
    let mut first = agent(&required, &data, first_port);
    assert!(healthy(first_port).await, "the first agent did not start");
    let holder = first.id().unwrap();

    let second = agent(&required, &data, free_port());
    let out = tokio::time::timeout(Duration::from_secs(60), second.wait_with_output())
        .await
        .expect("the second agent did not stop")
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("kubekuma.lock"), "{log}");
    assert!(log.contains(&format!("pid {holder}")), "{log}");
    assert!(log.contains("spec.mode.singleInstanceRequired"), "{log}");

    let relaxed = manifests(dir.path(), Some(false));
    let third_port = free_port();
    let mut third = agent(&relaxed, &data, third_port);
    assert!(
        healthy(third_port).await,
        "with the setting false it starts"
    );
    third.start_kill().unwrap();
    let out = third.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("notifications may repeat"), "{log}");
    first.start_kill().unwrap();
    let _ = first.wait().await;
}
