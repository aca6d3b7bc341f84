//! Command-line interface of the `kubekuma` binary: argument parsing and the commands.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::catalog::decode::parse_text;
use crate::catalog::findings::{Finding, Severity};
use crate::catalog::folder::read_paths;
use crate::catalog::snapshot::{Built, build};

/// KubeKuma: Kubernetes-native uptime monitoring with static status pages.
#[derive(Parser, Debug)]
#[command(
    name = "kubekuma",
    version,
    about = "KubeKuma: Kubernetes-native uptime monitoring with static status pages"
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of design.md.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything locally: agent, builder and site on one port (demo manifests unless --config)
    Up {
        /// Manifest files or folders (default: the bundled demo)
        #[arg(long = "config", value_name = "PATH")]
        config: Vec<PathBuf>,
        /// Data folder (SQLite, local object store, site)
        #[arg(long, default_value = "./kubekuma-data")]
        data: PathBuf,
        /// Address to serve on
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
    },
    /// Run the probe agent (kube mode in a cluster, folder mode with --config)
    Agent {
        /// Manifest files or folders (folder mode)
        #[arg(long = "config", value_name = "PATH")]
        config: Vec<PathBuf>,
        /// Data folder
        #[arg(long, default_value = "./kubekuma-data")]
        data: PathBuf,
        /// Address for /health, /ready and the admin API (default: 0.0.0.0:$PORT, PORT=3000)
        #[arg(long)]
        listen: Option<String>,
    },
    /// Render status pages, badges, JSON and feeds once (--watch to keep going)
    Build {
        /// Object store URL the agents write to
        #[arg(long)]
        source: Option<String>,
        /// Output folder or bucket URL
        #[arg(long)]
        out: Option<String>,
    },
    /// Run every monitor in these manifests once and print the results
    Check {
        /// Manifest files or folders
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Check manifests exactly as the agent reads them; exit 1 on any error
    Validate {
        /// Manifest files or folders
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Exit non-zero on warnings too
        #[arg(long)]
        strict: bool,
    },
    /// Print the CustomResourceDefinitions of all ten kinds as YAML
    Crds,
    /// Print a Secret holding the argon2id hash of a password, for a LocalUser
    HashPassword,
    /// Manage API keys
    ApiKey,
    /// Send notifications by hand
    Notify,
    /// Measure the agent or the builder
    Bench,
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crds => {
            print!("{}", kubekuma_crds::crdgen::all_crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Validate { paths, strict } => validate(&paths, strict),
        Command::Up { config, .. } => up(&config),
        Command::Agent { .. } => not_yet(
            "agent",
            "the agent core (scheduler, checks, SQLite, object storage)",
        ),
        Command::Build { .. } => not_yet("build", "the builder and its default theme"),
        Command::Check { .. } => not_yet("check", "the agent core's checkers"),
        Command::HashPassword | Command::ApiKey => {
            not_yet("hash-password / api-key", "the admin API")
        }
        Command::Notify => not_yet("notify", "alerting and its providers"),
        Command::Bench => not_yet("bench", "the agent core and builder benchmarks"),
    }
}

fn not_yet(cmd: &str, part: &str) -> ExitCode {
    eprintln!("kubekuma {cmd}: not available in this version yet; it arrives with {part}");
    ExitCode::from(2)
}

/// Print findings, one per line, `error: …` / `warning: …`.
pub fn print_findings(out: &mut impl Write, findings: &[Finding]) {
    for f in findings {
        let _ = writeln!(out, "{}: {f}", f.severity);
    }
}

fn summary(built: &Built, files: usize, docs: usize) -> String {
    let errors = built
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = built.findings.len() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    format!(
        "{} in {}: {} valid ({}), {}, {}",
        plural(docs, "document"),
        plural(files, "file"),
        plural(built.snapshot.len(), "resource"),
        plural(built.snapshot.monitors.len(), "monitor"),
        plural(errors, "error"),
        plural(warnings, "warning"),
    )
}

fn validate(paths: &[PathBuf], strict: bool) -> ExitCode {
    let files = read_paths(paths);
    let docs: usize = files.iter().map(|f| f.docs.len()).sum();
    let built = build(&files, None);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    print_findings(&mut out, &built.findings);
    let _ = writeln!(out, "{}", summary(&built, files.len(), docs));
    let errors = built.findings.iter().any(|f| f.severity == Severity::Error);
    if errors || (strict && !built.findings.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The demo manifests bundled into the binary (`deploy/examples/demo/`).
pub const DEMO: &[(&str, &str)] = &[
    (
        "demo/monitors.yaml",
        include_str!("../../deploy/examples/demo/monitors.yaml"),
    ),
    (
        "demo/status-page.yaml",
        include_str!("../../deploy/examples/demo/status-page.yaml"),
    ),
];

fn up(config: &[PathBuf]) -> ExitCode {
    let files = if config.is_empty() {
        DEMO.iter()
            .map(|(name, text)| parse_text(name, text))
            .collect()
    } else {
        read_paths(config)
    };
    let docs: usize = files.iter().map(|f| f.docs.len()).sum();
    let built = build(&files, None);
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    print_findings(&mut err, &built.findings);
    let _ = writeln!(err, "{}", summary(&built, files.len(), docs));
    let source = if config.is_empty() {
        "the bundled demo manifests"
    } else {
        "your manifests"
    };
    let _ = writeln!(
        err,
        "kubekuma up: {source} are valid; {} monitors and {} status pages are ready to run.\n\
         This version reads and validates the configuration only: the agent (checks, SQLite,\n\
         object storage) and the builder (status pages, badges) arrive next, and `up` will then\n\
         serve the site at http://127.0.0.1:3000/.",
        built.snapshot.monitors.len(),
        built.snapshot.status_pages.len()
    );
    if built.findings.iter().any(|f| f.severity == Severity::Error) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Set up logging: human-readable on a terminal, JSON otherwise; level from `LOG_LEVEL`.
pub fn init_logging() {
    let level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        let _ = builder.try_init();
    } else {
        let _ = builder.json().try_init();
    }
}
