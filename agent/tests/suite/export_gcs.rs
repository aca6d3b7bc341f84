//! `gs://` stores against fake-gcs-server, the Google Cloud Storage emulator (see
//! `common::gcs`): round trips through `open_store_with`, the uploader's outage
//! behaviour and catch-up, a missing bucket reported without the credentials, and
//! `kubekuma build` publishing a site into a bucket with its Content-Type and
//! Cache-Control, configured from `GOOGLE_*` variables as a CronJob would be.

use bytes::Bytes;
use chrono::Utc;
use kubekuma_agent::export::{ObjectTarget, open_store_with};
use kubekuma_builder::bench::{BuildBench, generate};
use kubekuma_builder::publish::{CACHE_IMMUTABLE, CACHE_SHORT};
use object_store::{Attribute, GetOptions};

use crate::common::gcs::{self, FakeGcs};
use crate::export_s3::{drain_bodies, outage_and_catch_up, rejected_upload, round_trip};

/// The bucket the tests write to.
const BUCKET: &str = "kubekuma";

fn open_gs(server: &FakeGcs, url: &str) -> ObjectTarget {
    let o = server.options();
    let refs: Vec<(&str, &str)> = o.iter().map(|(k, v)| (*k, v.as_str())).collect();
    open_store_with(url, &refs).expect("open gs target")
}

#[tokio::test]
async fn gs_round_trip_and_the_uploader_byte_for_byte() {
    let Some(server) = FakeGcs::start().await else {
        return;
    };
    server.create_bucket(BUCKET).await;

    let t = open_gs(&server, &format!("gs://{BUCKET}/site/objects"));
    assert_eq!(t.url(), format!("gs://{BUCKET}/site/objects"));
    assert_eq!(t.prefix(), "site/objects");
    round_trip(&t).await;

    let target = open_gs(&server, &format!("gs://{BUCKET}/kuma"));
    drain_bodies(&target).await;
    // The prefixes keep the two apart in the one bucket.
    assert_eq!(t.list("").await.unwrap().len(), 3);
    assert_eq!(target.list("").await.unwrap().len(), 5);

    // A delete removes the object; deleting it again is no error.
    let key = t.list("").await.unwrap().remove(0);
    t.delete(&key).await.unwrap();
    assert_eq!(t.get(&key).await.unwrap(), None);
    t.delete(&key).await.unwrap();
    assert_eq!(t.list("").await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_gcs_outage_keeps_everything_pending_and_a_restart_catches_up() {
    let Some(mut server) = FakeGcs::start().await else {
        return;
    };
    server.create_bucket(BUCKET).await;
    let target = open_gs(&server, &format!("gs://{BUCKET}/"));
    outage_and_catch_up(&mut server, &target, gcs::PRIVATE_KEY).await;
}

#[tokio::test]
async fn a_missing_gcs_bucket_fails_clearly_without_revealing_the_key() {
    let Some(server) = FakeGcs::start().await else {
        return;
    };
    let t = open_gs(&server, "gs://no-such-bucket/p");
    let err = rejected_upload(&t).await;
    assert!(
        err.contains("put") && err.contains("gs://no-such-bucket/p") && err.contains("404"),
        "{err}"
    );
    assert!(!err.contains(gcs::PRIVATE_KEY), "{err}");
    assert!(!format!("{t:?}").contains(gcs::PRIVATE_KEY));
}

/// What an object was stored with: its bytes, Content-Type and Cache-Control.
async fn object(t: &ObjectTarget, key: &str) -> (Bytes, String, String) {
    let got = t
        .store()
        .get_opts(&t.path(key).unwrap(), GetOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    let attr = |a: Attribute| {
        got.attributes
            .get(&a)
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    let (ctype, cache) = (attr(Attribute::ContentType), attr(Attribute::CacheControl));
    (got.bytes().await.unwrap(), ctype, cache)
}

/// `kubekuma build --out gs://…` as a CronJob runs it: the store configured only through
/// `GOOGLE_*` variables. Every file lands in the bucket with the Content-Type and
/// Cache-Control of its kind; a rebuild with the same inputs writes nothing; files of a
/// monitor that went away are deleted.
#[tokio::test]
async fn kubekuma_build_publishes_a_site_into_a_gcs_bucket() {
    let Some(server) = FakeGcs::start().await else {
        return;
    };
    server.create_bucket("www").await;
    let source = tempfile::tempdir().unwrap();
    let bench = BuildBench {
        monitors: 3,
        days: 2,
        png: true,
    };
    for (key, bytes) in generate(&bench, Utc::now()) {
        let path = source.path().join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    // Asynchronously: the relay in front of the emulator runs on this test's runtime.
    let build = async || {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
            .args(["build", "--source"])
            .arg(source.path())
            .args(["--out", "gs://www/status"])
            .env("GOOGLE_SERVICE_ACCOUNT_KEY", server.service_account_key())
            .env("GOOGLE_BASE_URL", server.base_url())
            .output()
            .await
            .expect("kubekuma runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(!text.contains(gcs::PRIVATE_KEY), "{text}");
        text
    };
    let first = build().await;
    assert!(first.contains("built 1 page in gs://www/status"), "{first}");

    let out = open_gs(&server, "gs://www/status");
    let files = out.list("").await.unwrap();
    let find = |pred: &dyn Fn(&str) -> bool| {
        files
            .iter()
            .find(|f| pred(f))
            .unwrap_or_else(|| panic!("no such file in {files:?}"))
            .clone()
    };
    let page = find(&|f| f.ends_with("/index.html") && f != "index.html");
    let css = find(&|f| f.starts_with("assets/") && f.ends_with(".css"));
    let svg = find(&|f| f.ends_with("/status.svg"));
    let png = find(&|f| f.ends_with("/status.png"));
    let json = find(&|f| f.ends_with("/status.json"));
    for (key, ctype, cache) in [
        (page.as_str(), "text/html; charset=utf-8", CACHE_SHORT),
        ("index.html", "text/html; charset=utf-8", CACHE_SHORT),
        (css.as_str(), "text/css; charset=utf-8", CACHE_IMMUTABLE),
        (svg.as_str(), "image/svg+xml", CACHE_SHORT),
        (png.as_str(), "image/png", CACHE_SHORT),
        (json.as_str(), "application/json", CACHE_SHORT),
    ] {
        let (bytes, got_type, got_cache) = object(&out, key).await;
        assert!(!bytes.is_empty(), "{key}");
        assert_eq!(
            (got_type.as_str(), got_cache.as_str()),
            (ctype, cache),
            "{key}"
        );
    }
    let (png_bytes, _, _) = object(&out, &png).await;
    assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n");

    let second = build().await;
    assert!(second.contains("gs://www/status is up to date"), "{second}");
    assert_eq!(out.list("").await.unwrap(), files);

    // One monitor fewer: its files are deleted from the bucket.
    std::fs::remove_dir_all(source.path()).unwrap();
    let fewer = BuildBench {
        monitors: 2,
        ..bench
    };
    for (key, bytes) in generate(&fewer, Utc::now()) {
        let path = source.path().join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let third = build().await;
    assert!(!third.contains(" 0 removed"), "{third}");
    let left = out.list("").await.unwrap();
    assert!(left.len() < files.len(), "{left:?}");
    for key in &left {
        assert!(out.get(key).await.unwrap().is_some(), "{key}");
    }
}
