//! `kubekuma build`: render the status pages from the object store, once or watching.

use std::process::ExitCode;
use std::time::Duration;

use super::{BuildArgs, plural, shutdown_signal};

/// A builder from `build`'s options.
pub fn make_builder(b: &BuildArgs) -> anyhow::Result<kubekuma_builder::Builder> {
    use kubekuma_builder::{BuildOptions, RenderOptions, Theme};
    let source = crate::export::open_store(&b.source)?;
    let out = crate::export::open_store(&b.out)?;
    let theme = match &b.theme {
        Some(dir) => Theme::load(dir)?,
        None => Theme::default_theme()?,
    };
    let mut base_url = b.base_url.trim().to_string();
    if !base_url.is_empty() && !base_url.ends_with('/') {
        base_url.push('/');
    }
    let opts = BuildOptions {
        render: RenderOptions {
            base_url,
            stale_after_seconds: b.stale_after,
            png_badges: !b.no_png,
        },
        now: None,
        fetch_branding: !b.no_fetch_branding,
    };
    Ok(kubekuma_builder::Builder::new(source, out, theme, opts)?)
}

/// `kubekuma build`: one build and its counts on stdout, or with `--watch` a rebuild
/// whenever agents write new objects until Ctrl-C.
pub(super) async fn build_cmd(b: BuildArgs) -> ExitCode {
    let mut builder = match make_builder(&b) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("kubekuma build: {e:#}");
            return ExitCode::from(2);
        }
    };
    if b.watch {
        eprintln!(
            "kubekuma build: watching {} every {}s, writing {}; stop with Ctrl-C",
            crate::export::target::redact_url(&b.source),
            b.interval.max(1),
            crate::export::target::redact_url(&b.out)
        );
        builder
            .watch(Duration::from_secs(b.interval.max(1)), shutdown_signal())
            .await;
        return ExitCode::SUCCESS;
    }
    match builder.build().await {
        Ok(r) => {
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            for f in &r.failures {
                eprintln!("error: {f}");
            }
            if r.skipped {
                println!(
                    "{} is up to date: inputs, theme, options and builder version unchanged since its last build; nothing rendered or written",
                    crate::export::target::redact_url(&b.out)
                );
                return ExitCode::SUCCESS;
            }
            println!(
                "built {} in {}: {} written, {} unchanged, {} removed",
                plural(r.pages, "page"),
                crate::export::target::redact_url(&b.out),
                r.publish.written.len(),
                r.publish.unchanged,
                r.publish.removed.len()
            );
            // Everything else is published; a part that could not be rendered still
            // needs its operator.
            if r.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("kubekuma build: {e:#}");
            ExitCode::FAILURE
        }
    }
}
