//! `az://` stores against Azurite, the Azure Storage emulator (see `common::azurite`),
//! which checks every request's Shared Key signature: round trips through `open_store`,
//! the uploader's outage behaviour and catch-up, a wrong key that never shows in errors,
//! and `kubekuma build` publishing a site into a container with its Content-Type and
//! Cache-Control, configured from `AZURE_*` variables as a CronJob would be.

use bytes::Bytes;
use chrono::Utc;
use kubekuma_agent::export::{ObjectTarget, open_store_with};
use kubekuma_builder::bench::{BuildBench, generate};
use kubekuma_builder::publish::{CACHE_IMMUTABLE, CACHE_SHORT};
use object_store::{Attribute, GetOptions};

use crate::common::azurite::{self, Azurite};
use crate::export_s3::{drain_bodies, outage_and_catch_up, rejected_upload, round_trip};

/// The container the tests write to.
const CONTAINER: &str = "kubekuma";

fn open_az(server: &Azurite, url: &str) -> ObjectTarget {
    let o = server.options();
    let refs: Vec<(&str, &str)> = o.iter().map(|(k, v)| (*k, v.as_str())).collect();
    open_store_with(url, &refs).expect("open az target")
}

#[tokio::test]
async fn az_round_trip_and_the_uploader_byte_for_byte() {
    let Some(server) = Azurite::start().await else {
        return;
    };
    server.create_container(CONTAINER).await;

    let t = open_az(&server, &format!("az://{CONTAINER}/site/objects"));
    assert_eq!(t.url(), format!("az://{CONTAINER}/site/objects"));
    assert_eq!(t.prefix(), "site/objects");
    round_trip(&t).await;

    let target = open_az(&server, &format!("az://{CONTAINER}/kuma"));
    drain_bodies(&target).await;
    // The prefixes keep the two apart in the one container.
    assert_eq!(t.list("").await.unwrap().len(), 3);
    assert_eq!(target.list("").await.unwrap().len(), 5);
}

#[tokio::test]
async fn an_azure_outage_keeps_everything_pending_and_a_restart_catches_up() {
    let Some(mut server) = Azurite::start().await else {
        return;
    };
    server.create_container(CONTAINER).await;
    let target = open_az(&server, &format!("az://{CONTAINER}/"));
    outage_and_catch_up(&mut server, &target, azurite::KEY).await;
}

#[tokio::test]
async fn a_wrong_azure_key_fails_without_revealing_either_key() {
    let Some(server) = Azurite::start().await else {
        return;
    };
    server.create_container(CONTAINER).await;
    let wrong = "d3Jvbmcta3ViZWt1bWEta2V5LTVkMWMwZmZlZTk=";
    let endpoint = server.endpoint();
    let t = open_store_with(
        &format!("az://{CONTAINER}/p"),
        &[
            ("azure_storage_account_name", azurite::ACCOUNT),
            ("azure_storage_account_key", wrong),
            ("azure_storage_endpoint", endpoint.as_str()),
            ("azure_allow_http", "true"),
        ],
    )
    .unwrap();
    let err = rejected_upload(&t).await;
    assert!(
        err.contains("403") || err.contains("Authentication"),
        "{err}"
    );
    assert!(!err.contains(wrong) && !err.contains(azurite::KEY), "{err}");
    assert!(!format!("{t:?}").contains(wrong));
    assert!(
        open_az(&server, &format!("az://{CONTAINER}/"))
            .list("")
            .await
            .unwrap()
            .is_empty(),
        "nothing was written"
    );
}

/// What a blob was stored with: its bytes, Content-Type and Cache-Control.
async fn blob(t: &ObjectTarget, key: &str) -> (Bytes, String, String) {
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

/// `kubekuma build --out az://…` as a CronJob runs it: the store configured only through
/// `AZURE_*` variables. Every file lands in the container with the Content-Type and
/// Cache-Control of its kind; a rebuild with the same inputs writes nothing.
#[tokio::test]
async fn kubekuma_build_publishes_a_site_into_an_azure_container() {
    let Some(server) = Azurite::start().await else {
        return;
    };
    server.create_container("www").await;
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
    // Asynchronously: the relay in front of Azurite runs on this test's runtime.
    let build = async || {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubekuma"))
            .args(["build", "--source"])
            .arg(source.path())
            .args(["--out", "az://www/status"])
            .env("AZURE_STORAGE_ACCOUNT_NAME", azurite::ACCOUNT)
            .env("AZURE_STORAGE_ACCOUNT_KEY", azurite::KEY)
            .env("AZURE_STORAGE_ENDPOINT", server.endpoint())
            .env("AZURE_ALLOW_HTTP", "true")
            .output()
            .await
            .expect("kubekuma runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(!text.contains(azurite::KEY), "{text}");
        text
    };
    let first = build().await;
    assert!(first.contains("built 1 page in az://www/status"), "{first}");

    let out = open_az(&server, "az://www/status");
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
        let (bytes, got_type, got_cache) = blob(&out, key).await;
        assert!(!bytes.is_empty(), "{key}");
        assert_eq!(
            (got_type.as_str(), got_cache.as_str()),
            (ctype, cache),
            "{key}"
        );
    }
    let (png_bytes, _, _) = blob(&out, &png).await;
    assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n");

    // Nothing changed: skipped on its fingerprint, nothing written.
    let second = build().await;
    assert!(second.contains("az://www/status is up to date"), "{second}");
    assert_eq!(out.list("").await.unwrap(), files);
}
