//! `kubekuma up`: the agent, the builder and the site on one port, for trying it out.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kubekuma_builder::Builder;
use tokio::sync::watch;

use crate::catalog::folder::read_paths;
use crate::catalog::snapshot::build;
use crate::metrics::Metrics;
use crate::runtime::{self, AgentOptions, RunError};

use super::demo::{DEMO_PASSWORD_FILE, materialize_demo};
use super::validate::summary;
use super::{AgentArgs, BuildArgs, make_builder, options, shutdown_signal};

/// `kubekuma up`: run the agent (the bundled demo manifests unless `--config`) and keep
/// the site in `<data>/site` rebuilt, served by the agent's listener, until Ctrl-C.
pub(super) async fn up(mut a: AgentArgs, listen: String) -> ExitCode {
    let Some(config) = manifests(&a) else {
        return ExitCode::FAILURE;
    };
    a.flush_interval.get_or_insert(5);
    let files = read_paths(&config);
    let docs: usize = files.iter().map(|f| f.docs.len()).sum();
    let built = build(&files, None);
    eprintln!("{}", summary(&built, files.len(), docs));

    // The builder renders from the agent's object store into <data>/site, which the
    // agent's listener serves next to its own endpoints.
    let site = a.data.join("site");
    let builder = match make_builder(&site_build_args(&a, &site)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("kubekuma up: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = shutdown_signal();

    print_welcome(&a, &listen, &config, &site);
    let mut opts = options(a, listen, config);
    opts.site_dir = Some(site);
    let result = run_with_builder(opts, builder, shutdown).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubekuma up: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The agent and its site builder side by side, as `kubekuma up` runs them, until
/// `shutdown` turns true or the agent fails. The builder's rebuild loop is a task of its
/// own (and renders on the blocking pool), so a long build never holds up the agent's
/// reloads, flushes or answers; when the agent stops, the builder stops with it. Builds
/// are reported to the agent's metrics (`opts.metrics`, made here when `None`).
pub async fn run_with_builder(
    mut opts: AgentOptions,
    mut builder: Builder,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let metrics = opts
        .metrics
        .get_or_insert_with(|| Arc::new(Metrics::new()))
        .clone();
    let builder_shutdown = shutdown.clone();
    let rebuilds = tokio::spawn(async move {
        builder
            .watch_reporting(Duration::from_secs(2), builder_shutdown, |took, ok| {
                metrics.build_finished(took.as_secs_f64(), ok)
            })
            .await
    });
    let result = runtime::run(opts, shutdown).await;
    // Stopped by the signal, the loop has ended or ends at its next check; stopped by an
    // error, it is ended here.
    rebuilds.abort();
    let _ = rebuilds.await;
    result
}

/// The manifests to run: `--config`, else the demo written into the data folder (`None`
/// after saying why on stderr when it cannot be written).
fn manifests(a: &AgentArgs) -> Option<Vec<PathBuf>> {
    if !a.config.is_empty() {
        return Some(a.config.clone());
    }
    match materialize_demo(&a.data) {
        Ok(dir) => Some(vec![dir]),
        Err(e) => {
            eprintln!(
                "kubekuma up: cannot write the demo manifests into {}: {e}",
                a.data.display()
            );
            None
        }
    }
}

/// The builder's options in `up`: from the agent's object store into `site`, watching.
fn site_build_args(a: &AgentArgs, site: &Path) -> BuildArgs {
    let source = a
        .store
        .clone()
        .unwrap_or_else(|| a.data.join("objects").display().to_string());
    BuildArgs {
        source,
        out: site.display().to_string(),
        theme: std::env::var_os("KUBEKUMA_THEME").map(PathBuf::from),
        base_url: String::new(),
        stale_after: 900,
        no_png: false,
        no_fetch_branding: false,
        watch: true,
        interval: 2,
    }
}

/// Tell on stderr where to look: the site, the manifests, the data and (for the demo)
/// how to log in to the admin API.
fn print_welcome(a: &AgentArgs, listen: &str, config: &[PathBuf], site: &Path) {
    eprintln!(
        "kubekuma up: open http://{listen}/ (status pages; agent health at http://{listen}/health).\n\
         Manifests: {} (edits reload within a second). Data: {}.\n\
         The site is rebuilt into {} within seconds of new results. Stop with Ctrl-C.",
        config
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        a.data.display(),
        site.display(),
    );
    if a.config.is_empty() {
        eprintln!(
            "Admin API: POST http://{listen}/api/v1/auth/login as user \"admin\" with the password in {} \
             (API reference: http://{listen}/api/v1/openapi.json).",
            a.data.join(DEMO_PASSWORD_FILE).display()
        );
    }
}
