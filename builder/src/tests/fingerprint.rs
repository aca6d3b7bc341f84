//! The build fingerprint: a rebuild whose inputs, theme, options, fetched logos and
//! builder version are unchanged is skipped (nothing modelled, rendered or written), and
//! a change of each of them rebuilds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Duration;
use serde_json::Value;

use super::common::*;
use super::hardening::{branded, full, serve};
use crate::publish::MANIFEST;
use crate::{BuildOptions, BuildPhase, BuildReport, Builder, Theme};
use kubekuma_crds::store::ObjectTarget;

/// A builder that records the phases of its builds.
fn observed(
    source: &ObjectTarget,
    out: &ObjectTarget,
    theme: Theme,
    opts: BuildOptions,
) -> (Builder, Arc<Mutex<Vec<BuildPhase>>>) {
    let phases = Arc::new(Mutex::new(Vec::new()));
    let p = phases.clone();
    let b = Builder::new(source.clone(), out.clone(), theme, opts)
        .unwrap()
        .with_observer(move |phase| p.lock().unwrap().push(phase));
    (b, phases)
}

/// Build with a fresh builder of `theme` and `opts`, telling whether it was skipped
/// (checked against the phases it went through).
async fn fresh_build(
    src: &ObjectTarget,
    out: &ObjectTarget,
    theme: Theme,
    opts: BuildOptions,
) -> BuildReport {
    let (mut b, phases) = observed(src, out, theme, opts);
    let r = b.build().await.unwrap();
    let phases = phases.lock().unwrap().clone();
    if r.skipped {
        assert_eq!(phases, vec![BuildPhase::Read], "a skipped build only reads");
        assert!(r.publish.written.is_empty() && r.publish.removed.is_empty());
    } else {
        assert_eq!(
            phases,
            vec![
                BuildPhase::Read,
                BuildPhase::Model,
                BuildPhase::Render,
                BuildPhase::Publish
            ]
        );
    }
    r
}

fn default_theme() -> Theme {
    Theme::default_theme().unwrap()
}

/// The fingerprint recorded in an output's manifest.
async fn recorded(out: &ObjectTarget) -> Option<String> {
    let m: Value = serde_json::from_slice(&out.get(MANIFEST).await.unwrap().unwrap()).unwrap();
    m.get("fingerprint")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The fixture built once into a fresh output.
async fn built_once() -> (ObjectTarget, ObjectTarget) {
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let out = memory();
    let r = fresh_build(&src, &out, default_theme(), options()).await;
    assert!(!r.skipped && r.publish.written.len() > 50);
    assert!(recorded(&out).await.is_some(), "the manifest records it");
    (src, out)
}

/// Unchanged everything: the same builder and a fresh one (a CronJob run) skip the
/// build, and the output stays exactly as it was.
#[tokio::test]
async fn an_unchanged_rebuild_is_skipped_by_the_same_and_by_a_fresh_builder() {
    let src = memory();
    write_agent(&src, "eu-1", false).await;
    let out = memory();
    let (mut b, phases) = observed(&src, &out, default_theme(), options());
    assert!(!b.build().await.unwrap().skipped);
    let before = files(&out).await;
    phases.lock().unwrap().clear();
    let again = b.build().await.unwrap();
    assert!(again.skipped);
    assert_eq!(*phases.lock().unwrap(), vec![BuildPhase::Read]);
    let fresh = fresh_build(&src, &out, default_theme(), options()).await;
    assert!(fresh.skipped);
    assert_eq!(files(&out).await, before);
}

/// An agent writes a new state: rebuilt, and the changed page is written.
#[tokio::test]
async fn a_changed_input_rebuilds() {
    let (src, out) = built_once().await;
    put(&src, "v1/agents/eu-1/state.json", &state("eu-1", true)).await;
    let r = fresh_build(&src, &out, default_theme(), options()).await;
    assert!(!r.skipped);
    assert!(r.publish.written.contains(&"status/index.html".to_string()));
    // A new object the build may not even read (an old month) still counts.
    put(
        &src,
        "v1/agents/eu-1/daily/2020-01.json",
        &daily("eu-1", 2020, 1, 1, 2),
    )
    .await;
    let r = fresh_build(&src, &out, default_theme(), options()).await;
    assert!(!r.skipped && r.publish.written.is_empty());
    // A new agent.
    write_agent(&src, "us-1", false).await;
    assert!(
        !fresh_build(&src, &out, default_theme(), options())
            .await
            .skipped
    );
    assert!(
        fresh_build(&src, &out, default_theme(), options())
            .await
            .skipped
    );
}

/// One byte of one theme file changes: rebuilt, and the asset is published.
#[tokio::test]
async fn a_changed_theme_rebuilds() {
    let (src, out) = built_once().await;
    let dir = tempfile::tempdir().unwrap();
    super::site::copy_default_theme(dir.path());
    // The default theme as a folder is the same files: still skipped.
    let r = fresh_build(&src, &out, Theme::load(dir.path()).unwrap(), options()).await;
    assert!(r.skipped);
    let css = dir.path().join("static/style.css");
    let mut t = std::fs::read_to_string(&css).unwrap();
    t.push_str("\n/* changed */\n");
    std::fs::write(&css, t).unwrap();
    let r = fresh_build(&src, &out, Theme::load(dir.path()).unwrap(), options()).await;
    assert!(!r.skipped);
    assert!(
        r.publish
            .written
            .iter()
            .any(|p| p.starts_with("assets/style.")),
        "{:?}",
        r.publish.written
    );
}

/// A change of the build options.
type Change = fn(&mut BuildOptions);

/// Each option that shapes the output rebuilds when it changes.
#[tokio::test]
async fn a_changed_option_rebuilds() {
    let (src, out) = built_once().await;
    let changes: [(&str, Change); 5] = [
        ("base_url", |o| {
            o.render.base_url = "https://other.example/".into()
        }),
        ("stale_after_seconds", |o| o.render.stale_after_seconds = 60),
        ("png_badges", |o| o.render.png_badges = false),
        ("now", |o| o.now = Some(now() + Duration::minutes(1))),
        ("fetch_branding", |o| o.fetch_branding = true),
    ];
    for (what, change) in changes {
        let mut opts = options();
        change(&mut opts);
        let r = fresh_build(&src, &out, default_theme(), opts.clone()).await;
        assert!(!r.skipped, "{what} changed but the build was skipped");
        assert!(
            fresh_build(&src, &out, default_theme(), opts).await.skipped,
            "{what}: the second build of the same options is skipped"
        );
    }
}

/// The output of another builder version (or output format), or of a builder before
/// fingerprints (a manifest without one), is rebuilt once; then skipped again.
#[tokio::test]
async fn a_changed_builder_version_rebuilds() {
    let (src, out) = built_once().await;
    let b = Builder::new(src.clone(), out.clone(), default_theme(), options()).unwrap();
    let listing = crate::source::listing_digest(&crate::source::list(&src).await.unwrap());
    let ours = b.fingerprint(&listing);
    assert_eq!(recorded(&out).await.as_deref(), Some(&*ours));
    let older = [
        Some(b.fingerprint_as("0.0.1", crate::OUTPUT_FORMAT, &listing)),
        Some(b.fingerprint_as(
            env!("CARGO_PKG_VERSION"),
            crate::OUTPUT_FORMAT + 1,
            &listing,
        )),
        None,
    ];
    for stored in older {
        let mut m: Value =
            serde_json::from_slice(&out.get(MANIFEST).await.unwrap().unwrap()).unwrap();
        match &stored {
            Some(fp) => m["fingerprint"] = Value::String(fp.clone()),
            None => {
                m.as_object_mut().unwrap().remove("fingerprint");
            }
        }
        put(&out, MANIFEST, &m).await;
        let r = fresh_build(&src, &out, default_theme(), options()).await;
        assert!(!r.skipped, "{stored:?} was taken for {ours}");
        assert!(r.publish.written.is_empty(), "the same output");
        assert_eq!(recorded(&out).await.as_deref(), Some(&*ours));
        assert!(
            fresh_build(&src, &out, default_theme(), options())
                .await
                .skipped
        );
    }
}

/// A remote logo: the process that fetched it skips unchanged rebuilds; a fresh process
/// (the builder's next run) fetches it again and publishes it when it changed.
#[tokio::test]
async fn a_changed_remote_logo_rebuilds_in_the_next_process() {
    const GIF_A: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    const GIF_B: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    let second = Arc::new(AtomicBool::new(false));
    let s = second.clone();
    let addr = serve(move |_| {
        full(
            "image/gif",
            if s.load(Ordering::SeqCst) {
                GIF_B
            } else {
                GIF_A
            },
        )
    })
    .await;
    let url = format!("http://{addr}/logo.gif");
    let (mut b, out) = branded(&url, None).await;
    let first = b.build().await.unwrap();
    assert!(
        !first.skipped && first.warnings.is_empty(),
        "{:?}",
        first.warnings
    );
    assert!(b.build().await.unwrap().skipped, "fetched once per process");

    // Another process, the same logo: rebuilt (to fetch it), nothing written.
    let src = source_of(&b);
    let mut opts = options();
    opts.fetch_branding = true;
    let r = fresh_build(&src, &out, default_theme(), opts.clone()).await;
    assert!(
        !r.skipped && r.publish.written.is_empty(),
        "{:?}",
        r.publish.written
    );

    second.store(true, Ordering::SeqCst);
    let r = fresh_build(&src, &out, default_theme(), opts).await;
    assert!(!r.skipped);
    assert!(
        r.publish
            .written
            .iter()
            .any(|p| p.starts_with("assets/brand.")),
        "{:?}",
        r.publish.written
    );
}

fn source_of(b: &Builder) -> ObjectTarget {
    b.source.clone()
}

/// Without data and without a fixed clock the pages show the wall clock: such a build
/// records no fingerprint and is never skipped.
#[tokio::test]
async fn a_build_showing_the_wall_clock_is_never_skipped() {
    let src = memory();
    let out = memory();
    let mut opts = options();
    opts.now = None;
    let r = fresh_build(&src, &out, default_theme(), opts.clone()).await;
    assert!(!r.skipped);
    assert_eq!(recorded(&out).await, None);
    assert!(!fresh_build(&src, &out, default_theme(), opts).await.skipped);
}

/// A part that failed to render kept the old output: no fingerprint is recorded, so the
/// next build renders again.
#[tokio::test]
async fn a_build_with_failures_records_no_fingerprint() {
    let (src, out) = built_once().await;
    let dir = tempfile::tempdir().unwrap();
    super::site::copy_default_theme(dir.path());
    let tpl = dir.path().join("templates/page.html");
    let t = std::fs::read_to_string(&tpl).unwrap();
    std::fs::write(
        &tpl,
        t.replace(
            "<h1 class=\"title\">{{ page.title }}</h1>",
            "<h1 class=\"title\">{{ no_such_variable }}</h1>",
        ),
    )
    .unwrap();
    let r = fresh_build(&src, &out, Theme::load(dir.path()).unwrap(), options()).await;
    assert!(!r.skipped && !r.failures.is_empty());
    assert_eq!(recorded(&out).await, None);
    let r = fresh_build(&src, &out, Theme::load(dir.path()).unwrap(), options()).await;
    assert!(!r.skipped && !r.failures.is_empty());
}
