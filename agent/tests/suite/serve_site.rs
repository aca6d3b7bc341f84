//! `kubekuma serve`: a built folder and a bucket (the in-process S3 server) served over a
//! real listener, asked with reqwest: pages, gzip, ETag/304, the security headers, 404,
//! `/health` and `/ready`, a new build replacing the old, and the mirror's bound.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kubekuma_agent::export::open_store_with;
use kubekuma_agent::serve::{ServeOptions, Serving, start};
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::common::s3::{BUCKET, S3Server};

const MANIFEST: &str = ".kubekuma/manifest.json";

fn page(text: &str) -> String {
    format!(
        "<!doctype html><title>Status</title>\n{}",
        format!("<p>{text}</p>\n").repeat(100)
    )
}

fn build_folder(root: &Path, text: &str, generation: u32) {
    std::fs::create_dir_all(root.join("status")).unwrap();
    std::fs::create_dir_all(root.join(".kubekuma")).unwrap();
    std::fs::write(root.join("index.html"), page("index")).unwrap();
    std::fs::write(root.join("status/index.html"), page(text)).unwrap();
    std::fs::write(root.join("status/badge.json"), r#"{"status":"up"}"#).unwrap();
    std::fs::write(
        root.join(MANIFEST),
        format!("{{\"version\":1,\"generation\":{generation}}}"),
    )
    .unwrap();
}

async fn serve(opts: ServeOptions) -> (Serving, watch::Sender<bool>, String) {
    let (tx, rx) = watch::channel(false);
    let s = start(opts, rx).await.expect("serving");
    let base = format!("http://{}", s.addr);
    (s, tx, base)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// What every static answer must carry.
fn assert_secure(r: &reqwest::Response) {
    let h = r.headers();
    assert_eq!(h["x-content-type-options"], "nosniff", "{:?}", r.url());
    assert!(h.contains_key("content-security-policy"), "{:?}", r.url());
    assert_eq!(h["referrer-policy"], "no-referrer");
}

#[tokio::test]
async fn a_built_folder_is_served_with_gzip_etags_and_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    build_folder(dir.path(), "all systems operational", 1);
    let (s, stop, base) = serve(ServeOptions::new(
        &format!("file://{}", dir.path().display()),
        "127.0.0.1:0",
    ))
    .await;
    let c = client();

    let r = c.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A page, plain.
    let r = c.get(format!("{base}/status/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_secure(&r);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.headers().get("content-encoding").is_none());
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(r.text().await.unwrap(), page("all systems operational"));

    // gzip when asked, the same bytes once decoded.
    let r = c
        .get(format!("{base}/status/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_secure(&r);
    let z = r.bytes().await.unwrap();
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&z[..]), &mut plain).unwrap();
    assert_eq!(plain, page("all systems operational"));

    // A conditional request: 304, no body.
    let r = c
        .get(format!("{base}/status/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(r.bytes().await.unwrap().is_empty());

    // JSON, a folder redirect, a missing file, the builder's bookkeeping, no admin API.
    let r = c
        .get(format!("{base}/status/badge.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_secure(&r);
    let r = c.get(format!("{base}/status")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()["location"], "/status/");
    for missing in [
        "/nope.html",
        "/.kubekuma/manifest.json",
        "/../etc/passwd",
        "/api/v1/monitors",
    ] {
        let r = c.get(format!("{base}{missing}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{missing}");
        assert_secure(&r);
    }
    let r = c.post(format!("{base}/status/")).send().await.unwrap();
    assert!(r.status().is_client_error(), "POST: {}", r.status());

    stop.send(true).unwrap();
    s.server.await.unwrap();
}

#[tokio::test]
async fn a_missing_folder_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("not-built");
    let (_tx, rx) = watch::channel(false);
    let e = start(
        ServeOptions::new(&gone.display().to_string(), "127.0.0.1:0"),
        rx,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("not-built"), "{e}");
}

async fn publish(server: &S3Server, files: &[(&str, String)], removed: &[&str]) {
    let options: Vec<(&str, String)> = server.options();
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let t = open_store_with(&format!("s3://{BUCKET}/site"), &options).unwrap();
    for (k, body) in files {
        t.put(k, Bytes::from(body.clone())).await.unwrap();
    }
    for k in removed {
        t.delete(k).await.unwrap();
    }
}

fn bucket_options(server: &S3Server) -> ServeOptions {
    let mut o = ServeOptions::new(&format!("s3://{BUCKET}/site"), "127.0.0.1:0");
    o.interval = Duration::from_secs(1);
    o.store_options = server
        .options()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    o
}

/// Ask `url` until `done` holds for its status and body (the mirror syncs every second);
/// gives up after a minute.
async fn until(c: &reqwest::Client, url: &str, done: impl Fn(StatusCode, &str) -> bool) -> String {
    for _ in 0..600 {
        if let Ok(r) = c.get(url).send().await {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            if done(status, &body) {
                return body;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never reached the expected answer");
}

#[tokio::test]
async fn a_bucket_is_copied_served_and_kept_in_step() {
    let server = S3Server::start().await;
    publish(
        &server,
        &[
            ("index.html", page("index")),
            ("status/index.html", page("all systems operational")),
            ("status/old.json", "{}".into()),
            (MANIFEST, r#"{"version":1,"generation":1}"#.into()),
        ],
        &[],
    )
    .await;
    // A copy left from before (a restarted pod's emptyDir) with a file the bucket lacks.
    let mirror = tempfile::tempdir().unwrap();
    std::fs::write(mirror.path().join("stale.html"), "old").unwrap();
    let mut o = bucket_options(&server);
    o.mirror_dir = Some(mirror.path().to_path_buf());
    let (s, stop, base) = serve(o).await;
    let c = client();
    until(&c, &format!("{base}/ready"), |s, _| s == StatusCode::OK).await;
    let r = c.get(format!("{base}/stale.html")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "not in the bucket");

    let r = c
        .get(format!("{base}/status/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_secure(&r);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let r = c
        .get(format!("{base}/status/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = c
        .get(format!("{base}/status/old.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // The next build: a changed page, a file gone, a new manifest.
    publish(
        &server,
        &[
            ("status/index.html", page("major outage")),
            (MANIFEST, r#"{"version":1,"generation":2}"#.into()),
        ],
        &["status/old.json"],
    )
    .await;
    let body = until(&c, &format!("{base}/status/"), |s, b| {
        s == StatusCode::OK && b.contains("major outage")
    })
    .await;
    assert_eq!(body, page("major outage"));
    until(&c, &format!("{base}/status/old.json"), |s, _| {
        s == StatusCode::NOT_FOUND
    })
    .await;

    stop.send(true).unwrap();
    s.server.await.unwrap();
    s.mirror.unwrap().await.unwrap();
}

#[tokio::test]
async fn a_bucket_over_the_bound_is_refused_and_says_why() {
    let server = S3Server::start().await;
    publish(
        &server,
        &[
            ("status/index.html", page("all systems operational")),
            (MANIFEST, r#"{"version":1,"generation":1}"#.into()),
        ],
        &[],
    )
    .await;
    let mut o = bucket_options(&server);
    o.max_bytes = 1000;
    let (s, stop, base) = serve(o).await;
    let c = client();
    let body = until(&c, &format!("{base}/ready"), |s, b| {
        s == StatusCode::SERVICE_UNAVAILABLE && b.contains("reason")
    })
    .await;
    assert!(body.contains("1000 bytes"), "{body}");
    assert!(!body.contains(crate::common::s3::SECRET_KEY), "{body}");
    let r = c.get(format!("{base}/status/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing copied");
    stop.send(true).unwrap();
    s.server.await.unwrap();
}

/// A page exposed through an Ingress, end to end: the agent's public catalog (what it
/// exports) carries the page's hosts, a real build publishes them beside its manifest,
/// and `kubekuma serve` answers a request for that host with the page at `/` (its JSON,
/// the root's assets), case and port aside; other hosts get the site as it is.
#[tokio::test]
async fn a_page_host_is_answered_with_its_page() {
    use kubekuma_agent::catalog::decode::parse_text;
    use kubekuma_builder::{BuildOptions, Builder, Theme};

    let yaml = "apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {name: public, namespace: prod}
spec:
  slug: status
  title: Acme status
  published: true
  exposure: {mode: ingress, hosts: [Status.Example.com], tls: {secretName: status-tls}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {name: other, namespace: prod}
spec: {slug: other, title: Other, published: true}
";
    let built = kubekuma_agent::catalog::snapshot::build(&[parse_text("m.yaml", yaml)], None);
    assert!(built.findings.is_empty(), "{:?}", built.findings);
    let catalog = kubekuma_agent::export::public_catalog(&built.snapshot, "a", chrono::Utc::now());
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let source = open_store_with(&format!("file://{}", src.path().display()), &[]).unwrap();
    source
        .put(
            &kubekuma_crds::objects::keys::catalog("a"),
            Bytes::from(serde_json::to_vec(&catalog).unwrap()),
        )
        .await
        .unwrap();
    let target = open_store_with(&format!("file://{}", out.path().display()), &[]).unwrap();
    let theme = Theme::default_theme().unwrap();
    let report = Builder::new(source, target, theme, BuildOptions::default())
        .unwrap()
        .build()
        .await
        .unwrap();
    assert_eq!(report.pages, 2, "{report:?}");
    let hosts = std::fs::read_to_string(out.path().join(".kubekuma/hosts.json")).unwrap();
    let hosts: serde_json::Value = serde_json::from_str(&hosts).unwrap();
    assert_eq!(
        hosts,
        serde_json::json!({"hosts": {"status.example.com": "status"}})
    );

    let (s, stop, base) = serve(ServeOptions::new(
        &format!("file://{}", out.path().display()),
        "127.0.0.1:0",
    ))
    .await;
    let c = client();
    let get = |path: &str, host: Option<&str>| {
        let mut r = c.get(format!("{base}{path}"));
        if let Some(h) = host {
            r = r.header("host", h);
        }
        r.send()
    };
    let page = get("/status/", None).await.unwrap().text().await.unwrap();
    assert!(page.contains("Acme status"), "{page}");
    let index = get("/", None).await.unwrap().text().await.unwrap();
    assert_ne!(index, page);

    for host in [
        "status.example.com",
        "STATUS.example.com:8443",
        "status.example.com.",
    ] {
        let r = get("/", Some(host)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{host}");
        assert_secure(&r);
        assert_eq!(r.text().await.unwrap(), page, "{host}: / is the page");
    }
    // The page's relative links resolve on its host: its JSON, the root's favicon.
    let json = get("/status.json", Some("status.example.com"))
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::OK);
    assert_eq!(
        json.text().await.unwrap(),
        get("/status/status.json", None)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    );
    let icon = get("/favicon.ico", Some("status.example.com"))
        .await
        .unwrap();
    assert_eq!(icon.status(), StatusCode::OK);
    // Other hosts, and the host file itself, as before.
    let r = get("/", Some("other.example.com")).await.unwrap();
    assert_eq!(r.text().await.unwrap(), index);
    let r = get("/.kubekuma/hosts.json", Some("status.example.com"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = get("/nothing-here", Some("status.example.com"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    stop.send(true).unwrap();
    let _ = s.server.await;
}
