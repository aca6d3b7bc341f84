//! Hostile inputs against the builder: a display name too long for a badge, a page or a
//! badge that cannot be rendered, controls and bidirectional overrides in texts, and
//! logos from servers that send scripts, endless or trickling bodies, or redirect loops
//! (real hyper servers on 127.0.0.1).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use kubekuma_crds::store::ObjectTarget;
use serde_json::{Value, json};

use super::common::*;
use crate::badge::BadgeRenderer;
use crate::{Builder, Theme};

/// A published page `slug` showing `api-health` as `display` (badges of every monitor).
pub(super) fn page(slug: &str, display: &str) -> Value {
    json!({
        "namespace": "production", "name": slug, "slug": slug,
        "title": format!("Page {slug}"), "published": true, "badges": "all",
        "groups": [{"name": "Services", "monitors": [
            {"namespace": "production", "name": "api-health", "displayName": display}
        ]}]
    })
}

/// The fixture of agent `eu-1` with these pages instead of its own.
pub(super) async fn source_with(pages: Vec<Value>) -> ObjectTarget {
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let mut c = catalog("eu-1");
    c["pages"] = Value::Array(pages);
    put(&src, "v1/agents/eu-1/catalog.json", &c).await;
    src
}

/// Width and height of a PNG, from its header.
fn png_size(b: &[u8]) -> (u32, u32) {
    assert!(b.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// A display name of 1,100 wide characters made the PNG badge too wide for resvg and the
/// whole build failed, for every page. Now its texts end in `…` at a bounded width: the
/// page and every other page publish, with PNGs of a bounded size.
#[tokio::test]
async fn a_display_name_of_1100_characters_is_ellipsised_and_every_page_publishes() {
    let long = "W".repeat(1100);
    let src = source_with(vec![page("long", &long), page("short", "Public API")]).await;
    let out = memory();
    let report = builder(&src, &out).build().await.unwrap();
    assert_eq!(report.pages, 2);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let f = files(&out).await;
    for slug in ["long", "short"] {
        assert!(f.contains_key(&format!("{slug}/index.html")), "{slug}");
        let png = &f[&format!("{slug}/badges/production/api-health/status.png")];
        let (w, h) = png_size(png);
        assert!(w <= 2 * 800 && h == 40, "{slug}: {w}x{h}");
    }
    let svg = text(&f, "long/badges/production/api-health/status.svg");
    assert!(svg.contains("W\u{2026}"), "{svg}");
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let width: f64 = doc
        .root_element()
        .attribute("width")
        .unwrap()
        .parse()
        .unwrap();
    assert!(width <= 2.0 * 370.0, "{width}");
    let shields: Value =
        serde_json::from_str(&text(&f, "long/badges/production/api-health/status.json")).unwrap();
    let label = shields["label"].as_str().unwrap();
    assert!(label.ends_with('\u{2026}') && label.len() < 200, "{label}");
    // The page itself shows the whole name.
    assert!(text(&f, "long/index.html").contains(&long));
}

/// A page whose template fails (here a theme that breaks on one slug) is reported,
/// naming the page and the cause; the other pages and the index are published, and
/// what was published of the failing page before is kept as it was.
#[tokio::test]
async fn a_page_that_cannot_be_rendered_is_reported_and_never_stops_the_others() {
    let src = source_with(vec![page("broken", "Broken API"), page("fine", "Fine API")]).await;
    let out = memory();
    let first = builder(&src, &out).build().await.unwrap();
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    let before = files(&out).await;

    let dir = tempfile::tempdir().unwrap();
    super::site::copy_default_theme(dir.path());
    let tpl = dir.path().join("templates/page.html");
    let t = std::fs::read_to_string(&tpl).unwrap();
    std::fs::write(
        &tpl,
        t.replace(
            "<h1 class=\"title\">{{ page.title }}</h1>",
            "<h1 class=\"title\">{{ page.title }}{% if page.slug == \"broken\" %}{{ no_such_variable }}{% endif %}</h1>",
        ),
    )
    .unwrap();
    // The agent's data changes, so that the fine page is rewritten.
    let mut c = catalog("eu-1");
    c["pages"] = json!([page("broken", "Broken API"), page("fine", "Fine API v2")]);
    put(&src, "v1/agents/eu-1/catalog.json", &c).await;
    let mut b = Builder::new(
        src.clone(),
        out.clone(),
        Theme::load(dir.path()).unwrap(),
        options(),
    )
    .unwrap();
    let report = b.build().await.unwrap();
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    let failure = &report.failures[0];
    assert!(
        failure.starts_with("page broken:")
            && failure.contains("no_such_variable")
            && failure.contains("kept"),
        "{failure}"
    );
    let after = files(&out).await;
    assert!(text(&after, "fine/index.html").contains("Fine API v2"));
    for key in before.keys().filter(|k| k.starts_with("broken/")) {
        assert_eq!(after.get(key), before.get(key), "{key} was not kept");
    }
    assert!(text(&after, "index.html").contains("href=\"broken/\""));

    // Into an empty output, the failing page is left out of the site and its index.
    let fresh = memory();
    let mut b = Builder::new(
        src,
        fresh.clone(),
        Theme::load(dir.path()).unwrap(),
        options(),
    )
    .unwrap();
    let report = b.build().await.unwrap();
    assert!(
        report.failures[0].contains("it is not published"),
        "{:?}",
        report.failures
    );
    let f = files(&fresh).await;
    assert!(f.contains_key("fine/index.html"));
    assert!(!f.contains_key("broken/index.html"));
    assert!(!text(&f, "index.html").contains("href=\"broken/\""));
}

/// Badges that cannot be rasterised (a renderer whose PNG limit every page badge
/// exceeds) are reported once per picture; pages, SVGs, JSON and the other PNGs are
/// published.
#[tokio::test]
async fn a_badge_that_cannot_be_rasterised_is_reported_and_the_rest_publishes() {
    let src = source_with(vec![
        page("one", "A monitor with a long name"),
        page("two", "x"),
    ])
    .await;
    let out = memory();
    let mut b = builder(&src, &out);
    let font = Theme::default_theme().unwrap().badge_font;
    // 2 × 150 px: the "uptime 24h | 100%" badges fit, a page badge with a long title not.
    b.badges = Arc::new(BadgeRenderer::new(font).unwrap().with_max_png_px(300.0));
    let report = b.build().await.unwrap();
    assert!(!report.failures.is_empty());
    assert!(
        report
            .failures
            .iter()
            .all(|f| f.starts_with("badge ") && f.contains("out of range")),
        "{:?}",
        report.failures
    );
    let f = files(&out).await;
    for slug in ["one", "two"] {
        assert!(f.contains_key(&format!("{slug}/index.html")));
        assert!(f.contains_key(&format!("{slug}/badges/status.svg")));
        assert!(f.contains_key(&format!("{slug}/badges/status.json")));
    }
    assert!(f.contains_key("one/badges/production/api-health/response-time.png"));
    assert!(!f.contains_key("one/badges/production/api-health/status.png"));
}

/// Every character XML 1.0 forbids, other controls, bidirectional overrides and
/// zero-width characters, in titles, names, descriptions and incident updates: feeds and
/// SVGs still parse as XML, and no page, feed, badge or JSON file carries any of them.
#[tokio::test]
async fn controls_and_bidi_overrides_never_reach_any_output() {
    let mut nasty: String = (0u32..0x20).filter_map(char::from_u32).collect();
    nasty.extend(['\u{7F}', '\u{85}', '\u{9F}', '\u{FFFE}', '\u{FFFF}']);
    nasty.extend(
        (0x202A..=0x202E)
            .chain(0x2066..=0x2069)
            .chain(0x200B..=0x200F)
            .chain([0x2060, 0xFEFF])
            .filter_map(char::from_u32),
    );
    let t = |s: &str| format!("{s}{nasty}end");
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let mut c = catalog("eu-1");
    c["pages"][0]["title"] = json!(t("Acme"));
    c["pages"][0]["description"] = json!(t("About"));
    c["pages"][0]["groups"][0]["name"] = json!(t("Group"));
    c["pages"][0]["groups"][1]["monitors"][0]["displayName"] = json!(t("Web"));
    c["maintenance"][0]["description"] = json!(t("Upgrade"));
    c["silences"][0]["reason"] = json!(t("Freeze"));
    put(&src, "v1/agents/eu-1/catalog.json", &c).await;
    let mut inc = incidents("eu-1");
    inc["incidents"][0]["updates"][0]["message"] = json!(t("Investigating"));
    inc["incidents"][1]["updates"][0]["message"] = json!(t("Looking"));
    put(&src, "v1/agents/eu-1/incidents/2026-11.json", &inc).await;
    let out = memory();
    let report = builder(&src, &out).build().await.unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let f = files(&out).await;

    let feed = text(&f, "status/feed.rss");
    let doc = roxmltree::Document::parse(&feed).unwrap();
    assert!(
        doc.descendants()
            .any(|n| n.text().is_some_and(|t| t.contains("Looking\t\n"))),
        "{feed}"
    );
    roxmltree::Document::parse(&text(&f, "status/feed.atom")).unwrap();
    let dropped = |s: &str| s.chars().find(|c| crate::text::dropped(*c));
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut checked = 0;
    for (key, bytes) in &f {
        if key.ends_with(".png") || key.ends_with(".ico") || key.starts_with(".kubekuma/") {
            continue;
        }
        let body = String::from_utf8(bytes.to_vec()).unwrap();
        if key.ends_with(".json") {
            let v: Value = serde_json::from_str(&body).unwrap();
            let mut all = Vec::new();
            strings(&v, &mut all);
            for s in all {
                assert_eq!(dropped(s), None, "{key}: {s:?}");
            }
        } else {
            assert_eq!(dropped(&body), None, "{key}");
            if key.ends_with(".svg") {
                roxmltree::Document::parse(&body).unwrap();
            }
        }
        checked += 1;
    }
    assert!(checked > 50);
    assert!(text(&f, "status/index.html").contains("Acme\t\n\rend"));
    let status: Value = serde_json::from_str(&text(&f, "status/status.json")).unwrap();
    assert_eq!(status["title"], "Acme\t\n\rend");
}

/// The default theme needs no inline script or style: it works under
/// `SITE_CSP`, which the `_headers` file gives with the other security headers.
#[tokio::test]
async fn pages_work_under_a_strict_content_security_policy() {
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let out = memory();
    builder(&src, &out).build().await.unwrap();
    let f = files(&out).await;
    for key in ["status/index.html", "index.html"] {
        let html = text(&f, key);
        assert!(!html.contains("<style"), "{key}");
        assert!(!html.contains(" style="), "{key}");
        for tag in html.split("<script").skip(1) {
            let head = &tag[..tag.find('>').unwrap()];
            assert!(head.contains(" src="), "{key}: inline script");
            assert!(tag[tag.find('>').unwrap() + 1..].starts_with("</script>"));
        }
        let attrs = regex_free_on_attributes(&html);
        assert!(attrs.is_empty(), "{key}: {attrs:?}");
    }
    let page = text(&f, "status/index.html").replace("&#x2f;", "/");
    let accent = page
        .split("href=\"../")
        .filter_map(|s| s.split('"').next())
        .find(|p| p.starts_with("assets/accent."))
        .unwrap();
    assert!(page.find("assets/style.").unwrap() < page.find(accent).unwrap());
    assert!(
        text(&f, accent).contains("--accent: #3"),
        "{}",
        text(&f, accent)
    );
    let headers = text(&f, "_headers");
    assert!(headers.contains(&format!(
        "Content-Security-Policy: {}",
        crate::render::SITE_CSP
    )));
    assert!(headers.contains("X-Content-Type-Options: nosniff"));
    assert!(headers.contains("X-Frame-Options: DENY"));
    assert_eq!(
        crate::publish::content_type("_headers"),
        "text/plain; charset=utf-8"
    );
}

/// Event-handler attributes (`onload=`, `onclick=` …) in a document.
fn regex_free_on_attributes(html: &str) -> Vec<String> {
    html.match_indices(" on")
        .filter_map(|(i, _)| {
            let rest = &html[i + 3..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            (!name.is_empty() && rest[name.len()..].starts_with('=')).then(|| format!("on{name}"))
        })
        .collect()
}

pub(super) type Body = BoxBody<Bytes, Infallible>;

/// An HTTP/1.1 server on 127.0.0.1 answering every request with `answer`.
pub(super) async fn serve(
    answer: impl Fn(&hyper::Request<hyper::body::Incoming>) -> hyper::Response<Body>
    + Send
    + Sync
    + 'static,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let r = answer(&req);
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}

pub(super) fn full(ctype: &str, body: impl Into<Bytes>) -> hyper::Response<Body> {
    hyper::Response::builder()
        .header("content-type", ctype)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

/// Sets its flag when dropped: the server's body was let go.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A builder of one page with this logo and favicon, fetching them.
pub(super) async fn branded(logo: &str, favicon: Option<&str>) -> (Builder, ObjectTarget) {
    let mut p = page("brand", "API");
    p["branding"] = json!({"logoUrl": logo, "faviconUrl": favicon});
    let src = source_with(vec![p]).await;
    let out = memory();
    let mut opts = options();
    opts.fetch_branding = true;
    let b = Builder::new(src, out.clone(), Theme::default_theme().unwrap(), opts).unwrap();
    (b, out)
}

/// A logo URL with an endless body: the download stops at 2 MiB + 1, the build
/// finishes with a warning, and the server is told to stop (its body is dropped) after
/// having sent no more than the limit plus what loopback socket buffers take (about
/// 10 MiB here; unbounded before, about 1.5 GB in the issue).
#[tokio::test]
async fn an_endless_logo_is_cut_off_at_the_size_limit() {
    static CHUNK: [u8; 64 * 1024] = [0x89; 64 * 1024];
    let sent = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let (s, d) = (sent.clone(), dropped.clone());
    let addr = serve(move |_| {
        let state = (s.clone(), Dropped(d.clone()));
        let stream = futures::stream::unfold(state, |state| async move {
            state.0.fetch_add(CHUNK.len(), Ordering::SeqCst);
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(&CHUNK))),
                state,
            ))
        });
        hyper::Response::builder()
            .header("content-type", "image/png")
            .body(StreamBody::new(stream).boxed())
            .unwrap()
    })
    .await;
    let (mut b, out) = branded(&format!("http://{addr}/logo.png"), None).await;
    let report = b.build().await.unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("page brand: the logo is left out") && w.contains("larger than")),
        "{:?}",
        report.warnings
    );
    assert!(files(&out).await.contains_key("brand/index.html"));
    for _ in 0..200 {
        if dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the server's body was never dropped"
    );
    let sent = sent.load(Ordering::SeqCst);
    eprintln!("the endless logo's server sent {sent} bytes before it was stopped");
    assert!(sent <= 32 * 1024 * 1024, "the server sent {sent} bytes");
}

/// A logo that trickles one byte at a time: the whole download is bounded in time, and
/// the build finishes with a warning.
#[tokio::test]
async fn a_trickling_logo_times_out() {
    let addr = serve(|_| {
        let stream = futures::stream::unfold(0u32, |n| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let bytes = if n == 0 {
                Bytes::from_static(b"\x89PNG\r\n\x1a\n")
            } else {
                Bytes::from_static(b"x")
            };
            Some((Ok::<_, Infallible>(Frame::data(bytes)), n + 1))
        });
        hyper::Response::builder()
            .body(StreamBody::new(stream).boxed())
            .unwrap()
    })
    .await;
    let (mut b, _) = branded(&format!("http://{addr}/logo.png"), None).await;
    b.brand_limits.total = Duration::from_secs(1);
    let report = b.build().await.unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("the logo is left out") && w.contains("unreachable")),
        "{:?}",
        report.warnings
    );
}

/// A redirect loop is followed a few times, then refused.
#[tokio::test]
async fn a_redirect_loop_is_refused() {
    let asked = Arc::new(AtomicUsize::new(0));
    let a = asked.clone();
    let addr = serve(move |_| {
        a.fetch_add(1, Ordering::SeqCst);
        hyper::Response::builder()
            .status(302)
            .header("location", "/again.png")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap()
    })
    .await;
    let (mut b, _) = branded(&format!("http://{addr}/logo.png"), None).await;
    let report = b.build().await.unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("the logo is left out")),
        "{:?}",
        report.warnings
    );
    assert!(asked.load(Ordering::SeqCst) <= 4, "{asked:?} requests");
}

/// An SVG logo with a script, an event handler, a `javascript:` link and a foreign
/// object is published as a PNG (fit in 512 × 512), never as SVG; a GIF sent as
/// `text/html` is published as a GIF; an HTML document sent as `image/png` is refused.
#[tokio::test]
async fn remote_images_are_never_republished_as_active_content() {
    const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="2000" height="1000" onload="alert(42)">
<script>alert(42)</script>
<a xlink:href="javascript:alert(42)"><rect width="2000" height="1000" fill="#0a0"/></a>
<foreignObject width="100" height="100"><div xmlns="http://www.w3.org/1999/xhtml" onclick="alert(42)">x</div></foreignObject>
<text x="10" y="500" font-size="200">Acme</text>
</svg>"##;
    const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    let addr = serve(|req| match req.uri().path() {
        "/logo.svg" => full("image/svg+xml", SVG),
        "/icon" => full("text/html", GIF),
        _ => full("image/png", "<html><script>alert(42)</script></html>"),
    })
    .await;
    let (mut b, out) = branded(
        &format!("http://{addr}/logo.svg"),
        Some(&format!("http://{addr}/icon")),
    )
    .await;
    let report = b.build().await.unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let f = files(&out).await;
    let brand: Vec<&String> = f
        .keys()
        .filter(|k| k.starts_with("assets/brand."))
        .collect();
    assert_eq!(brand.len(), 2, "{brand:?}");
    let png = brand.iter().find(|k| k.ends_with(".png")).unwrap();
    assert_eq!(png_size(&f[*png]), (512, 256));
    let gif = brand.iter().find(|k| k.ends_with(".gif")).unwrap();
    assert_eq!(&f[*gif][..], GIF);
    assert_eq!(crate::publish::content_type(gif), "image/gif");
    let page = text(&f, "brand/index.html").replace("&#x2f;", "/");
    assert!(page.contains(&format!("src=\"../{png}\"")), "{page}");
    for (key, bytes) in &f {
        assert!(
            !String::from_utf8_lossy(bytes).contains("alert(42)"),
            "{key} carries the remote script"
        );
    }

    let (mut b, out) = branded(&format!("http://{addr}/html"), None).await;
    let report = b.build().await.unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("the logo is left out: not a PNG, JPEG, GIF, WebP, ICO or SVG")),
        "{:?}",
        report.warnings
    );
    assert!(
        !files(&out)
            .await
            .keys()
            .any(|k| k.starts_with("assets/brand.")),
        "the HTML was published"
    );
}
