//! JSON logs of the `kubekuma` binary: every line a run emits is one JSON object with one
//! key per name (a duplicate `message` made most parsers lose the event text), and
//! `LOG_LEVEL` refuses an unknown level at start.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A JSON value parsed with a check that no object holds a key twice.
struct NoDuplicates;

impl<'de> de::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

fn check_line(line: &str) -> Result<(), String> {
    serde_json::from_str::<NoDuplicates>(line)
        .map(|_| ())
        .map_err(|e| format!("{e}: {line}"))
}

#[test]
fn the_checker_finds_duplicates() {
    assert!(check_line(r#"{"fields":{"message":"a","x":1}}"#).is_ok());
    assert!(check_line(r#"{"fields":{"message":"a","message":"b"}}"#).is_err());
}

/// An agent with a failing monitor, stderr not a terminal (JSON logs): every line parses
/// with one key per name, and the "monitor down" line keeps its event text and detail.
#[tokio::test]
async fn json_log_lines_have_one_key_per_name() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("m.yaml"),
        format!(
            "apiVersion: monitoring.kubekuma.io/v1\nkind: KubeKumaSettings\nmetadata: {{name: kubekuma}}\n\
             spec:\n  scheduler: {{minIntervalSeconds: 1, jitterPercent: 0}}\n---\n\
             apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: down, namespace: prod}}\n\
             spec:\n  type: tcp\n  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}\n  \
             target: {{tcp: {{host: 127.0.0.1, port: {port}}}}}\n"
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .args(["agent", "--listen", "127.0.0.1:0", "--config"])
        .arg(&manifests)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("SESSION_SECRET", "0123456789abcdef0123456789abcdef-test")
        .env("LOG_LEVEL", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut all = Vec::new();
    let down = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let is_down = line.contains("monitor down");
            all.push(line.clone());
            if is_down {
                return Some(line);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    child.kill().await.unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        all.push(line);
    }
    let down = down.unwrap_or_else(|| panic!("no \"monitor down\" line in:\n{}", all.join("\n")));
    for line in all.iter().filter(|l| !l.trim().is_empty()) {
        check_line(line).unwrap();
    }
    let v: serde_json::Value = serde_json::from_str(&down).unwrap();
    assert_eq!(v["fields"]["message"], "monitor down");
    assert!(v["fields"]["detail"].is_string(), "{down}");
}

/// `LOG_LEVEL=fatal` (a spec level) runs; an unknown level is refused at start with a
/// clear error naming `LOG_LEVEL`.
#[test]
fn log_level_is_the_spec_s_or_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .arg("crds")
        .env("LOG_LEVEL", "FATAL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
        .arg("crds")
        .env("LOG_LEVEL", "verbose")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LOG_LEVEL") && err.contains("verbose") && err.contains("fatal"),
        "{err}"
    );
}
