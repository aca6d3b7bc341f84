//! `kubekuma serve`: the built site on its own port (see [`crate::serve`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::shutdown_signal;
use crate::serve::{MIRROR_BUDGET, ServeOptions, start};

/// Options of `kubekuma serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The folder or bucket the builder publishes to: a path, file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix (buckets configured from AWS_*, GOOGLE_*, AZURE_* variables)
    #[arg(long, env = "KUBEKUMA_SITE", value_name = "URL")]
    pub site: String,
    /// Address to serve on (the site, /health and /ready)
    #[arg(long, env = "KUBEKUMA_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Buckets: seconds between looks for a new build (at least 1)
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// Buckets: at most this many bytes are copied; a bigger site is refused (keep serving the last copy)
    #[arg(long, default_value_t = MIRROR_BUDGET)]
    pub max_bytes: u64,
    /// Buckets: folder for the local copy (default: a new temporary folder, removed at exit); files in it that the bucket does not hold are removed
    #[arg(long, value_name = "DIR")]
    pub mirror_dir: Option<PathBuf>,
}

/// `kubekuma serve`: serve until Ctrl-C or SIGTERM.
pub(super) async fn serve_cmd(a: ServeArgs) -> ExitCode {
    let shutdown = shutdown_signal();
    let mut opts = ServeOptions::new(&a.site, &a.listen);
    opts.interval = Duration::from_secs(a.interval.max(1));
    opts.max_bytes = a.max_bytes;
    opts.mirror_dir = a.mirror_dir;
    let serving = match start(opts, shutdown).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kubekuma serve: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "kubekuma serve: serving {} on http://{}/ (health at /health, readiness at /ready); stop with Ctrl-C",
        crate::export::target::redact_url(&a.site),
        serving.addr
    );
    let _ = serving.server.await;
    if let Some(m) = serving.mirror {
        let _ = m.await;
    }
    ExitCode::SUCCESS
}
