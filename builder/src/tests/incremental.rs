//! Incremental rebuilds by a builder that keeps what it rendered: after each change
//! (one monitor down, a history object rewritten, a monitor removed, a page added, the
//! monitor back, another theme) the output is
//! byte for byte what a full build of the same inputs into an empty output gives.

use serde_json::{Value, json};

use super::common::*;
use crate::{BuildOptions, BuildReport, Builder, Theme};
use kubekuma_crds::store::ObjectTarget;

/// Build `b`, then build the same source into an empty output with a fresh builder of
/// `theme`, and compare every file, the manifest included.
async fn same_as_full(
    b: &mut Builder,
    src: &ObjectTarget,
    out: &ObjectTarget,
    theme: Theme,
) -> BuildReport {
    same_as_full_with(b, src, out, theme, options()).await
}

/// [`same_as_full`], the fresh builder having `opts`.
async fn same_as_full_with(
    b: &mut Builder,
    src: &ObjectTarget,
    out: &ObjectTarget,
    theme: Theme,
    opts: BuildOptions,
) -> BuildReport {
    let r = b.build().await.unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let fresh = memory();
    Builder::new(src.clone(), fresh.clone(), theme, opts)
        .unwrap()
        .build()
        .await
        .unwrap();
    let (got, want) = (files(out).await, files(&fresh).await);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, v) in &want {
        assert!(got[k] == *v, "{k} differs from a full build");
    }
    r
}

#[tokio::test]
async fn incremental_rebuilds_give_the_output_of_a_full_build() {
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let out = memory();
    let mut b = builder(&src, &out);
    let first = b.build().await.unwrap();
    assert_eq!(first.reused, 0);

    // One monitor down: most of the site is taken from the last build.
    put(&src, "v1/agents/eu-1/state.json", &state("eu-1", true)).await;
    let r = same_as_full(&mut b, &src, &out, Theme::default_theme().unwrap()).await;
    assert!(r.reused > 10, "{} reused", r.reused);
    assert!(r.publish.written.contains(&"status/index.html".to_string()));

    // A history object rewritten (fewer days of November): read again, not taken from
    // the last build.
    put(
        &src,
        "v1/agents/eu-1/daily/2026-11.json",
        &daily("eu-1", 2026, 11, 1, 20),
    )
    .await;
    let r = same_as_full(&mut b, &src, &out, Theme::default_theme().unwrap()).await;
    assert!(r.publish.written.contains(&"status/index.html".to_string()));

    // A monitor removed from the catalog and from its page.
    let mut cat = catalog("eu-1");
    cat["pages"][0]["groups"][0]["monitors"] =
        json!([{"namespace": "production", "name": "api-health", "displayName": "Public API"}]);
    let monitors = cat["monitors"].as_array_mut().unwrap();
    monitors.retain(|m| m["name"] != "api-v2-health");
    put(&src, "v1/agents/eu-1/catalog.json", &cat).await;
    let r = same_as_full(&mut b, &src, &out, Theme::default_theme().unwrap()).await;
    assert!(
        r.publish
            .removed
            .iter()
            .any(|p| p.contains("api-v2-health")),
        "{:?}",
        r.publish.removed
    );

    // A page added.
    cat["pages"].as_array_mut().unwrap().push(json!({
        "namespace": "production", "name": "second", "slug": "second",
        "title": "Second", "published": true, "badges": "all",
        "groups": [{"name": "Web", "monitors": [{"namespace": "production", "name": "web-frontend"}]}]
    }));
    put(&src, "v1/agents/eu-1/catalog.json", &cat).await;
    let r = same_as_full(&mut b, &src, &out, Theme::default_theme().unwrap()).await;
    assert!(r.publish.written.contains(&"second/index.html".to_string()));
    assert!(r.reused > 10, "{} reused", r.reused);

    // The removed monitor back: its badges are rendered again (the badge cache dropped
    // them with the monitor), not announced as kept files the output no longer holds.
    let second = cat["pages"][1].clone();
    let mut cat = catalog("eu-1");
    cat["pages"].as_array_mut().unwrap().push(second);
    put(&src, "v1/agents/eu-1/catalog.json", &cat).await;
    let r = same_as_full(&mut b, &src, &out, Theme::default_theme().unwrap()).await;
    assert!(
        r.publish
            .written
            .iter()
            .any(|p| p.contains("api-v2-health") && p.ends_with(".svg")),
        "{:?}",
        r.publish.written
    );

    // Another theme (another builder, as the theme is the builder's), then a change
    // built by it incrementally.
    let dir = tempfile::tempdir().unwrap();
    super::site::copy_default_theme(dir.path());
    let tpl = dir.path().join("templates/page.html");
    let t = std::fs::read_to_string(&tpl).unwrap();
    std::fs::write(
        &tpl,
        t.replace("<h1 class=\"title\">", "<h1 class=\"title\" data-x=\"1\">"),
    )
    .unwrap();
    let theme = || Theme::load(dir.path()).unwrap();
    let mut c = Builder::new(src.clone(), out.clone(), theme(), options()).unwrap();
    let r = same_as_full(&mut c, &src, &out, theme()).await;
    assert!(r.publish.written.contains(&"status/index.html".to_string()));
    put(&src, "v1/agents/eu-1/state.json", &state("eu-1", false)).await;
    let r = same_as_full(&mut c, &src, &out, theme()).await;
    assert!(r.reused > 10, "{} reused", r.reused);
    let page: Value = Value::String(text(&files(&out).await, "status/index.html"));
    assert!(page.as_str().unwrap().contains("data-x=\"1\""));
}

/// With the clock taken from the data, as in production: the state's time moves into
/// the next hour (every uptime window and day strip measured again, though the history
/// is the same), then within that hour (the summaries of the last build are kept, the
/// charts drawn again), then a monitor goes down at the same time (only its chart and
/// state change); each time the output is what a full build gives.
#[tokio::test]
async fn a_moving_clock_rebuilds_as_a_full_build() {
    let opts = BuildOptions {
        now: None,
        ..options()
    };
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let out = memory();
    let theme = || Theme::default_theme().unwrap();
    let mut b = Builder::new(src.clone(), out.clone(), theme(), opts.clone()).unwrap();
    b.build().await.unwrap();
    let at = |t: &str, down: bool| {
        let mut s = state("eu-1", down);
        s["generatedAt"] = json!(t);
        s
    };
    for (t, down) in [
        ("2026-11-26T12:00:30Z", false),
        ("2026-11-26T12:20:30Z", false),
        ("2026-11-26T12:20:30Z", true),
    ] {
        put(&src, "v1/agents/eu-1/state.json", &at(t, down)).await;
        let r = same_as_full_with(&mut b, &src, &out, theme(), opts.clone()).await;
        assert!(!r.skipped);
        let status = text(&files(&out).await, "status/status.json");
        assert!(status.contains(t), "{status}");
    }
}
