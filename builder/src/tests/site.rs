//! The builder end to end on fixed inputs: golden files, escaping, JSON shapes,
//! incremental publishing, themes.

use super::common::*;
use crate::badge::BadgeRenderer;
use crate::{Builder, Theme};
use serde_json::Value;

async fn built() -> std::collections::BTreeMap<String, bytes::Bytes> {
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    write_agent(&src, "us-1", true).await;
    let out = memory();
    let report = builder(&src, &out).build().await.unwrap();
    assert_eq!(report.pages, 1, "only the published page is built");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    files(&out).await
}

fn json(files: &std::collections::BTreeMap<String, bytes::Bytes>, key: &str) -> Value {
    serde_json::from_str(&text(files, key)).unwrap()
}

#[tokio::test]
async fn golden_outputs() {
    let f = built().await;
    insta::assert_snapshot!("page_html", text(&f, "status/index.html"));
    insta::assert_snapshot!("index_html", text(&f, "index.html"));
    insta::assert_snapshot!("status_json", text(&f, "status/status.json"));
    insta::assert_snapshot!("summary_json", text(&f, "status/api/v2/summary.json"));
    insta::assert_snapshot!("uptime_json", text(&f, "uptime/production/api-health.json"));
    insta::assert_snapshot!("feed_rss", text(&f, "status/feed.rss"));
    insta::assert_snapshot!("feed_atom", text(&f, "status/feed.atom"));
    insta::assert_snapshot!(
        "badge_api_uptime_30d_svg",
        text(&f, "status/badges/production/api-health/uptime-30d.svg")
    );
    insta::assert_snapshot!("badge_page_svg", text(&f, "status/badges/status.svg"));
    let listing: Vec<&String> = f.keys().collect();
    insta::assert_debug_snapshot!("file_list", listing);
}

#[tokio::test]
async fn every_user_string_is_escaped() {
    let f = built().await;
    for (key, bytes) in &f {
        if key.ends_with(".png") {
            continue;
        }
        let body = String::from_utf8_lossy(bytes);
        if key.ends_with(".json") {
            // JSON carries the text as data; it must round-trip, not be executable.
            continue;
        }
        assert!(
            !body.contains("<script>alert(1)"),
            "{key} contains the raw script tag"
        );
    }
    let page = text(&f, "status/index.html");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"));
    assert!(page.contains("Acme &lt;Status&gt; &amp; Co"));
    // The only scripts are the theme's own file.
    assert_eq!(page.matches("<script").count(), 1);
    let status = json(&f, "status/status.json");
    assert_eq!(status["title"], "Acme <Status> & Co");
}

#[tokio::test]
async fn unpublished_pages_and_their_monitors_stay_private() {
    let f = built().await;
    for (key, bytes) in &f {
        assert!(
            !key.contains("private-db") && !key.starts_with("internal"),
            "{key}"
        );
        let body = String::from_utf8_lossy(bytes);
        assert!(!body.contains("private-db"), "{key} names private-db");
        assert!(!body.contains("private database"), "{key}");
        assert!(
            !body.contains("db-patching"),
            "{key}: maintenance of a private monitor"
        );
    }
}

#[tokio::test]
async fn json_shapes_follow_the_spec() {
    let f = built().await;
    let s = json(&f, "status/status.json");
    for k in [
        "slug",
        "title",
        "description",
        "overallStatus",
        "groups",
        "branding",
    ] {
        assert!(s.get(k).is_some(), "status.json lacks {k}");
    }
    assert_eq!(s["slug"], "status");
    // api-v2 down on both agents, api-health down on one → 2 of 3 counted monitors down.
    assert_eq!(s["overallStatus"], "majorOutage");
    let m = &s["groups"][0]["monitors"][0];
    assert_eq!(m["namespace"], "production");
    assert_eq!(m["name"], "api-health");
    assert_eq!(m["status"], "down");
    assert_eq!(m["latency"], 45);
    assert_eq!(s["branding"]["theme"]["primaryColor"], "#3B82F6");

    for days in [1, 7, 30, 90] {
        let u = json(&f, &format!("uptime/production/api-health/{days}.json"));
        let keys: Vec<&String> = u.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["days", "monitor", "uptime"]);
        assert_eq!(u["monitor"], "production/api-health");
        assert_eq!(u["days"], days);
        assert!(u["uptime"].as_f64().unwrap() > 99.0);
    }
    let all = json(&f, "uptime/production/api-health.json");
    assert_eq!(all.as_array().unwrap().len(), 4);

    let shields = json(&f, "status/badges/production/api-v2-health/status.json");
    assert_eq!(shields["schemaVersion"], 1);
    assert_eq!(shields["message"], "down");
    assert!(shields["label"].is_string() && shields["color"].is_string());

    let summary = json(&f, "status/api/v2/summary.json");
    assert_eq!(summary["page"]["id"], "status");
    assert_eq!(summary["page"]["url"], "https://status.example.com/status/");
    assert_eq!(summary["status"]["indicator"], "critical");
    let comps = summary["components"].as_array().unwrap();
    assert_eq!(comps.len(), 5, "two groups and three monitors");
    assert_eq!(comps[0]["group"], true);
    assert_eq!(comps[2]["id"], "production/api-v2-health");
    assert_eq!(comps[2]["status"], "major_outage");
    let incidents = summary["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 2, "the open incident, from each agent");
    assert_eq!(
        incidents[0]["incident_updates"][0]["body"],
        "We are looking into slow responses"
    );
}

#[tokio::test]
async fn the_page_shows_what_the_issue_asks_for() {
    let f = built().await;
    let page = text(&f, "status/index.html");
    assert!(page.contains("class=\"banner state-majorOutage\""));
    assert!(page.contains("Current incidents"));
    assert!(page.contains("We are looking into slow responses"));
    assert!(page.contains("In progress: web-upgrade"));
    // Silences of the page's monitors, not of others.
    assert!(page.contains("Paused: deploy-freeze"));
    assert!(!page.contains("db-silence") && !page.contains("private database work"));
    // 90 bars per monitor, each focusable with a text equivalent.
    assert_eq!(page.matches("class=\"bar lvl-").count(), 3 * 90);
    assert_eq!(page.matches("tabindex=\"0\"").count(), 3 * 90);
    assert!(page.contains("Nov 20, 2026: 96.88% uptime, 2 incidents"));
    // Response-time chart as inline SVG with a text alternative.
    assert!(
        page.contains("role=\"img\" aria-label=\"Response time over the last 24 hours: average")
    );
    // Both locations of api-health.
    assert!(page.contains("eu-1: up") && page.contains("us-1: down"));
    // Stale-data notice is there, hidden until the script shows it.
    assert!(page.contains("id=\"stale\"") && page.contains(" hidden>"));
    assert!(page.contains("data-generated=\"2026-11-26T12:00:00Z\""));
    // No external requests: every src/href is relative or a fragment.
    for attr in ["src=\"", "href=\""] {
        for part in page.split(attr).skip(1) {
            let url = &part[..part.find('"').unwrap()];
            assert!(
                !url.contains("//") || url.starts_with("https://status.example.com/"),
                "external reference {url}"
            );
        }
    }
}

#[tokio::test]
async fn every_badge_renders_with_resvg() {
    let f = built().await;
    let renderer = BadgeRenderer::new(Theme::default_theme().unwrap().badge_font).unwrap();
    let mut n = 0;
    for (key, bytes) in &f {
        if key.contains("/badges/") && key.ends_with(".svg") {
            let png = renderer
                .png(std::str::from_utf8(bytes).unwrap(), 1.0)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(png.starts_with(b"\x89PNG"), "{key}");
            assert!(
                f.contains_key(&key.replace(".svg", ".png")),
                "{key} has no PNG"
            );
            n += 1;
        }
    }
    assert_eq!(n, 1 + 3 * 7, "the page badge and seven per monitor");
}

#[tokio::test]
async fn rebuilding_unchanged_inputs_writes_nothing_and_changes_rewrite_only_what_changed() {
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let out = memory();
    let mut b = builder(&src, &out);
    let first = b.build().await.unwrap();
    assert!(first.publish.written.len() > 50);
    let second = b.build().await.unwrap();
    assert!(
        second.publish.written.is_empty(),
        "{:?}",
        second.publish.written
    );
    assert!(second.publish.removed.is_empty());

    // A fresh builder (new process) reads the manifest and also writes nothing.
    let third = builder(&src, &out).build().await.unwrap();
    assert!(
        third.publish.written.is_empty(),
        "{:?}",
        third.publish.written
    );

    // api-health goes down: its badge and the page change, assets do not.
    put(&src, "v1/agents/eu-1/state.json", &state("eu-1", true)).await;
    let fourth = b.build().await.unwrap();
    let w = &fourth.publish.written;
    assert!(w.contains(&"status/index.html".to_string()));
    assert!(w.contains(&"status/badges/production/api-health/status.svg".to_string()));
    assert!(!w.iter().any(|p| p.starts_with("assets/")), "{w:?}");
    assert!(!w.contains(&"status/badges/production/web-frontend/status.svg".to_string()));

    // The page is unpublished: all its files go, the index stays.
    let mut cat = catalog("eu-1");
    cat["pages"][0]["published"] = Value::Bool(false);
    put(&src, "v1/agents/eu-1/catalog.json", &cat).await;
    let fifth = b.build().await.unwrap();
    assert!(
        fifth
            .publish
            .removed
            .contains(&"status/index.html".to_string())
    );
    let left = files(&out).await;
    assert!(
        left.keys()
            .all(|k| !k.starts_with("status/") && !k.starts_with("uptime/")),
        "{:?}",
        left.keys()
    );
    assert!(left.contains_key("index.html"));
}

#[tokio::test]
async fn a_failed_write_stops_before_the_pages_and_is_retried() {
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let dir = tempfile::tempdir().unwrap();
    // A plain file where the page's folder must go makes every write under it fail.
    std::fs::write(dir.path().join("status"), b"in the way").unwrap();
    let out = kubekuma_crds::store::open_store(dir.path().to_str().unwrap()).unwrap();
    let mut b = builder(&src, &out);
    let err = b.build().await.unwrap_err().to_string();
    assert!(err.contains("status/"), "{err}");
    assert!(dir.path().join("assets").exists(), "assets come first");
    assert!(
        !dir.path().join("index.html").exists(),
        "no index before its pages"
    );

    std::fs::remove_file(dir.path().join("status")).unwrap();
    let r = b.build().await.unwrap();
    assert!(r.publish.written.contains(&"status/index.html".to_string()));
    assert!(r.publish.written.contains(&"index.html".to_string()));
    assert!(
        !r.publish.written.iter().any(|p| p.starts_with("assets/")),
        "assets were already there"
    );
}

#[tokio::test]
async fn a_broken_object_is_reported_and_the_rest_is_built() {
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    write_agent(&src, "us-1", false).await;
    src.put(
        "v1/agents/us-1/state.json",
        bytes::Bytes::from_static(b"{not json"),
    )
    .await
    .unwrap();
    let out = memory();
    let r = builder(&src, &out).build().await.unwrap();
    assert_eq!(r.pages, 1);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].starts_with("v1/agents/us-1/state.json: not a valid object"),
        "{}",
        r.warnings[0]
    );
}

pub(super) fn copy_default_theme(to: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../themes/default");
    for sub in ["templates", "static"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn themes_run_with_strict_undefined_variables() {
    let dir = tempfile::tempdir().unwrap();
    copy_default_theme(dir.path());
    let page = dir.path().join("templates/page.html");
    let t = std::fs::read_to_string(&page).unwrap();
    std::fs::write(
        &page,
        t.replace("{{ page.title }}</h1>", "{{ page.titel }}</h1>"),
    )
    .unwrap();
    let theme = Theme::load(dir.path()).unwrap();
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let out = memory();
    let report = Builder::new(src, out, theme, options())
        .unwrap()
        .build()
        .await
        .unwrap();
    let err = report.failures.join("\n");
    assert!(
        err.contains("page status:") && err.contains("page.html") && err.contains("undefined"),
        "{err}"
    );
}

#[tokio::test]
async fn a_theme_folder_replaces_the_default_and_must_be_complete() {
    let dir = tempfile::tempdir().unwrap();
    copy_default_theme(dir.path());
    std::fs::write(
        dir.path().join("templates/index.html"),
        "<p>{% for p in pages %}{{ p.title }};{% endfor %}</p>",
    )
    .unwrap();
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let out = memory();
    Builder::new(
        src,
        out.clone(),
        Theme::load(dir.path()).unwrap(),
        options(),
    )
    .unwrap()
    .build()
    .await
    .unwrap();
    assert_eq!(
        text(&files(&out).await, "index.html"),
        "<p>Acme &lt;Status&gt; &amp; Co;</p>"
    );

    std::fs::remove_file(dir.path().join("templates/atom.xml")).unwrap();
    let err = Theme::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("templates/atom.xml is missing"), "{err}");
}

/// After a failover the agent pod that led before leaves its objects behind: one whose
/// state is more than 15 minutes older than the newest agent's no longer sets current
/// states or locations, and its open incidents end at its last report, while its
/// history still counts. The builder says so in a warning.
#[tokio::test]
async fn an_agent_that_stopped_reporting_no_longer_sets_current_states() {
    let src = memory();
    // The old leader saw the API down and has an incident open for it; it stopped
    // reporting an hour ago.
    write_agent(&src, "agent-0", true).await;
    let mut old = state("agent-0", true);
    old["generatedAt"] = "2026-11-26T10:59:30Z".into();
    put(&src, "v1/agents/agent-0/state.json", &old).await;
    let mut old_incidents = incidents("agent-0");
    old_incidents["incidents"].as_array_mut().unwrap().push(
        serde_json::json!({"id": 11, "namespace": "production", "name": "api-health",
            "startedAt": "2026-11-26T10:30:00Z", "reason": "timeout"}),
    );
    put(
        &src,
        "v1/agents/agent-0/incidents/2026-11.json",
        &old_incidents,
    )
    .await;
    // The new leader sees it up.
    write_agent(&src, "agent-1", false).await;

    let out = memory();
    let report = builder(&src, &out).build().await.unwrap();
    assert!(
        report.warnings.iter().any(|w| w.contains("agent agent-0")
            && w.contains("2026-11-26T10:59:30Z")
            && w.contains("left out")),
        "{:?}",
        report.warnings
    );
    assert!(!report.warnings.iter().any(|w| w.contains("agent-1")));
    let f = files(&out).await;
    let status = json(&f, "status/status.json");
    let api = status["groups"][0]["monitors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "api-health")
        .unwrap();
    assert_eq!(api["status"], "up", "{api}");
    let active: Vec<&str> = status["activeIncidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        active,
        ["agent-1-8"],
        "only the reporting agent's open incident"
    );
    // The old leader's incidents are history, ended at its last report.
    let atom = text(&f, "status/feed.atom");
    let entry = atom
        .split("<entry>")
        .find(|e| e.contains("incident:agent-0-11<"))
        .expect("the old leader's incident is in the feed");
    assert!(entry.contains("was down (resolved)"), "{entry}");
    assert!(
        entry.contains("<updated>2026-11-26T10:59:30Z</updated>"),
        "{entry}"
    );
    // One location: the page does not list the old leader as one.
    let page = text(&f, "status/index.html");
    assert!(!page.contains("class=\"locations\""), "locations listed");
    assert!(
        !page.contains("from agent-"),
        "incidents attributed to locations"
    );
    // History still adds up both agents' rollups, as in the golden fixture.
    let uptime = json(&f, "uptime/production/api-health.json");
    assert_eq!(
        uptime,
        json(&built().await, "uptime/production/api-health.json")
    );
}

#[tokio::test]
async fn modelling_and_rendering_run_on_the_blocking_pool_and_a_build_can_be_a_task() {
    use crate::BuildPhase;
    use std::sync::{Arc, Mutex};
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let out = memory();
    let runtime_thread = std::thread::current().id();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let told = seen.clone();
    let mut b = builder(&src, &out).with_observer(move |phase| {
        told.lock()
            .unwrap()
            .push((phase, std::thread::current().id() == runtime_thread));
    });
    // The build's future is Send: `kubekuma up` runs its rebuild loop as a task.
    let report = tokio::spawn(async move { b.build().await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.pages, 1);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (BuildPhase::Read, true),
            (BuildPhase::Model, false),
            (BuildPhase::Render, false),
            (BuildPhase::Publish, true),
        ],
        "(phase, on the runtime's thread)"
    );
}

/// The site root holds what browsers and crawlers ask for: `favicon.ico` (a real ICO,
/// linked by the pages), `robots.txt` allowing everything and naming the sitemap, and
/// `sitemap.xml` with the index and the published page only.
#[tokio::test]
async fn the_root_has_a_favicon_robots_txt_and_a_sitemap_of_published_pages() {
    let f = built().await;
    let ico = &f["favicon.ico"];
    assert!(
        ico.starts_with(&[0, 0, 1, 0, 3, 0]),
        "an ICO of three images"
    );
    assert_eq!(crate::publish::content_type("favicon.ico"), "image/x-icon");
    let page = text(&f, "status/index.html");
    // `/` is escaped in attributes like every value.
    assert!(page.contains(r#"<link rel="icon" href="..&#x2f;favicon.ico""#));
    assert!(text(&f, "index.html").contains(r#"<link rel="icon" href="favicon.ico""#));

    assert_eq!(
        text(&f, "robots.txt"),
        "User-agent: *\nAllow: /\n\nSitemap: https://status.example.com/sitemap.xml\n"
    );
    let sitemap = text(&f, "sitemap.xml");
    let doc = roxmltree::Document::parse(&sitemap).unwrap();
    let locs: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("loc"))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(
        locs,
        [
            "https://status.example.com/",
            "https://status.example.com/status/"
        ]
    );
    assert!(!sitemap.contains("internal"), "{sitemap}");
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("lastmod"))
            .count(),
        2
    );
}

/// Without an absolute base URL there is no sitemap (its URLs must be absolute) and
/// `robots.txt` names none.
#[tokio::test]
async fn without_an_absolute_base_url_there_is_no_sitemap() {
    for base in ["", "/status/", "ftp://example.com/"] {
        let src = memory();
        write_agent(&src, "eu-1", false).await;
        let out = memory();
        let mut opts = options();
        opts.render.base_url = base.into();
        Builder::new(src, out.clone(), Theme::default_theme().unwrap(), opts)
            .unwrap()
            .build()
            .await
            .unwrap();
        let f = files(&out).await;
        assert_eq!(
            text(&f, "robots.txt"),
            "User-agent: *\nAllow: /\n",
            "{base}"
        );
        assert!(!f.contains_key("sitemap.xml"), "{base}");
        assert!(f.contains_key("favicon.ico"), "{base}");
    }
}

/// A theme folder's `icon.svg` is drawn into `favicon.ico`; one that does not parse
/// refuses the theme, naming the file; without one the default mark is used.
#[tokio::test]
async fn a_theme_icon_is_drawn_and_a_broken_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_default_theme(dir.path());
    let default = Theme::default_theme().unwrap().favicon;
    assert_eq!(Theme::load(dir.path()).unwrap().favicon, default);
    std::fs::write(
        dir.path().join("icon.svg"),
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><circle cx="4" cy="4" r="4" fill="#c00"/></svg>"##,
    )
    .unwrap();
    let own = Theme::load(dir.path()).unwrap().favicon;
    assert!(own.starts_with(&[0, 0, 1, 0]));
    assert_ne!(own, default);
    std::fs::write(dir.path().join("icon.svg"), "<svg><g>").unwrap();
    let err = Theme::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("icon.svg does not parse"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}
