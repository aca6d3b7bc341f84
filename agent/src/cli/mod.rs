//! Command-line interface of the `kubekuma` binary: the clap arguments, `run` (one
//! function per command, each in its own file) and the helpers the commands share (the
//! tokio runtime, logging, the shutdown signal, the agent's options).

mod agent;
mod api_key;
mod bench;
mod build;
mod check;
mod crds;
mod demo;
mod hash_password;
mod notify;
mod serve;
mod up;
mod validate;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::admin::listen::{ForwardedHeader, ListenOptions};
use crate::findings::Finding;
use crate::runtime::AgentOptions;

pub use build::make_builder;
pub use check::{CheckResult, CheckRow, PUSH_SKIPPED, check_table};
pub use demo::{DEMO, demo_files};
pub use up::run_with_builder;

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

/// Options shared by `agent` and `up`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Manifest files or folders (folder mode)
    #[arg(long = "config", value_name = "PATH")]
    pub config: Vec<PathBuf>,
    /// Data folder: SQLite database and the default local object store
    #[arg(long, env = "KUBEKUMA_DATA", default_value = "./kubekuma-data")]
    pub data: PathBuf,
    /// Identity of this agent in the object store (default: the host name)
    #[arg(long, env = "KUBEKUMA_AGENT_ID")]
    pub agent_id: Option<String>,
    /// Where this agent checks from: a DNS-1123 label such as eu-west or home; agents of one location count as one in the consensus of several locations
    #[arg(long, env = "KUBEKUMA_LOCATION", value_name = "NAME", default_value = crate::export::objects::DEFAULT_LOCATION, value_parser = parse_location)]
    pub location: String,
    /// Object store for results: file:///path, s3://bucket/prefix, gs://…, az://…, memory:// (default: file://<data>/objects)
    #[arg(long = "store", env = "KUBEKUMA_STORE_URL", value_name = "URL")]
    pub store: Option<String>,
    /// SQLite database as sqlite:PATH (default: <data>/kubekuma.db)
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Seconds between batched writes to the object store (default 60; 5 for `up`)
    #[arg(long)]
    pub flush_interval: Option<u64>,
    /// Seconds notifications in flight at shutdown (SIGTERM) may take to finish; those still sending after it stay in the outbox and are sent on the next start (0: at once)
    #[arg(long, env = "KUBEKUMA_SHUTDOWN_GRACE", value_name = "SECONDS", default_value_t = crate::alerting::outbox::DEFAULT_SHUTDOWN_GRACE.as_secs())]
    pub shutdown_grace: u64,
    /// Listener: seconds a client has to send a request's headers (also how long an idle HTTP/1 connection is kept)
    #[arg(long, env = "KUBEKUMA_HEADER_TIMEOUT", value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Listener: seconds a connection may stay open without a request in flight
    #[arg(long, env = "KUBEKUMA_IDLE_TIMEOUT", value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Listener: seconds a client has to send a request's body (else 408)
    #[arg(long, env = "KUBEKUMA_REQUEST_TIMEOUT", value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Listener: connections at once, 8 of them kept for /health and /ready (default: what RLIMIT_NOFILE allows beside a reserve for checks and SQLite, at most 1024)
    #[arg(long, env = "KUBEKUMA_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Listener: connections at once from one client address, IPv6 by its /64; trusted proxies are exempt (default: an eighth of --max-connections, at least 16)
    #[arg(long, env = "KUBEKUMA_MAX_CONNECTIONS_PER_CLIENT", value_name = "N")]
    pub max_connections_per_client: Option<usize>,
    /// Proxies whose forwarded header names the client (for login, push and API key limits): comma-separated CIDRs or addresses; default none, the socket peer is the client
    #[arg(long, env = "KUBEKUMA_TRUSTED_PROXIES", value_name = "CIDR[,CIDR…]", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header trusted proxies name the client in
    #[arg(long, env = "KUBEKUMA_FORWARDED_HEADER", value_enum, default_value_t = ForwardedHeader::XForwardedFor)]
    pub forwarded_header: ForwardedHeader,
}

/// A location name, refused unless it is a DNS-1123 label.
fn parse_location(s: &str) -> Result<String, String> {
    crate::rules::location_name(s).map(|()| s.to_string())
}

/// One trusted proxy: a CIDR (`10.0.0.0/8`) or a single address.
/// `--ingress-class`: an IngressClass name (a DNS-1123 subdomain).
fn ingress_class(s: &str) -> Result<String, String> {
    let s = s.trim();
    if crate::rules::dns1123(s, 253, true) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "must be an IngressClass name (lowercase letters, digits, '-' and '.'), got {s:?}"
        ))
    }
}

fn parse_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("{s:?} is neither a CIDR (10.0.0.0/8, fd00::/8) nor an IP address"))
}

impl AgentArgs {
    /// The listener's settings.
    fn listen_options(&self) -> ListenOptions {
        ListenOptions {
            header_timeout: Duration::from_secs(self.header_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            request_timeout: Duration::from_secs(self.request_timeout),
            max_connections: self.max_connections,
            max_per_client: self.max_connections_per_client,
            trusted_proxies: self.trusted_proxies.clone(),
            forwarded_header: self.forwarded_header,
            ..ListenOptions::default()
        }
    }
}

/// Options of `build`.
#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Object store the agents write to: file:///path, a folder, s3://bucket/prefix, gs://…, az://…
    #[arg(
        long,
        env = "KUBEKUMA_STORE_URL",
        default_value = "./kubekuma-data/objects"
    )]
    pub source: String,
    /// Output: a folder or a bucket URL (s3://, gs://, az://)
    #[arg(
        long,
        env = "KUBEKUMA_SITE_URL",
        default_value = "./kubekuma-data/site"
    )]
    pub out: String,
    /// Theme folder (templates/, static/, fonts/); default: the built-in theme
    #[arg(long, env = "KUBEKUMA_THEME", value_name = "DIR")]
    pub theme: Option<PathBuf>,
    /// Public URL of the output root, for links in feeds (e.g. https://status.example.com/)
    #[arg(long, env = "KUBEKUMA_BASE_URL", default_value = "")]
    pub base_url: String,
    /// Seconds after which visitors see a "status data may be stale" notice
    #[arg(long, default_value_t = 900)]
    pub stale_after: u64,
    /// Skip the PNG copies of badges
    #[arg(long)]
    pub no_png: bool,
    /// Do not fetch http(s) logos and favicons (they are then left out)
    #[arg(long)]
    pub no_fetch_branding: bool,
    /// Keep rebuilding when agents write new objects
    #[arg(long)]
    pub watch: bool,
    /// Seconds between checks for new objects in --watch mode
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
}

/// The commands of design.md.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything locally on one port (the bundled demo manifests unless --config)
    Up {
        /// Agent options
        #[command(flatten)]
        agent: AgentArgs,
        /// Address to serve on
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
    },
    /// Run the probe agent: folder mode with --config, else kube mode (in a cluster or with KUBECONFIG)
    Agent {
        /// Agent options
        #[command(flatten)]
        agent: AgentArgs,
        /// Address for /health, /ready and the admin API (default 0.0.0.0:$PORT, PORT=3000)
        #[arg(long)]
        listen: Option<String>,
        /// Kube mode: comma-separated namespaces to watch (empty or unset: all namespaces)
        #[arg(long, env = "KUBEKUMA_WATCH_NAMESPACES", value_name = "NS[,NS…]")]
        watch_namespaces: Option<String>,
        /// Kube mode: seconds between status writes
        #[arg(long, env = "KUBEKUMA_STATUS_INTERVAL", default_value_t = 30)]
        status_interval: u64,
        /// Kube mode: public URL of the built site, for the status of StatusPages without a host
        #[arg(long, env = "KUBEKUMA_BASE_URL")]
        base_url: Option<String>,
        /// Kube mode: the Service of the site server (`kubekuma serve`) in the agent's namespace, SERVICE:PORT; with it the leader makes an Ingress for each StatusPage with `spec.exposure.mode: ingress` (deploy/overlays/site sets it)
        #[arg(long, env = "KUBEKUMA_SITE_SERVICE", value_name = "SERVICE:PORT")]
        site_service: Option<crate::cluster::ingress::SiteService>,
        /// Kube mode: `spec.ingressClassName` of those Ingresses (unset: the cluster's default IngressClass)
        #[arg(long, env = "KUBEKUMA_INGRESS_CLASS", value_name = "CLASS", value_parser = ingress_class)]
        ingress_class: Option<String>,
        /// Required: the HS256 key of admin API sessions, at least 32 bytes (e.g. `openssl rand -hex 32`); prefer the environment variable to the flag
        #[arg(
            long,
            env = "SESSION_SECRET",
            hide_env_values = true,
            value_name = "SECRET"
        )]
        session_secret: Option<String>,
    },
    /// Render status pages, badges, JSON and feeds once (--watch to keep going)
    Build(BuildArgs),
    /// Serve the built site (from a folder or the bucket the builder publishes to) with caching, gzip, ETags and the security headers, for clusters without a CDN or bucket website
    Serve(serve::ServeArgs),
    /// Run every monitor in these manifests once and print the results (push monitors are skipped: they wait for pushes to a running agent); exit 1 if any is down
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
    /// Read a password from stdin (first line) and print a Secret with its argon2id hash plus the LocalUser that uses it, as YAML for `kubectl apply -f -`
    HashPassword(HashPasswordArgs),
    /// Manage API keys of the admin API
    ApiKey {
        /// What to do
        #[command(subcommand)]
        what: ApiKeyCommand,
    },
    /// Send notifications by hand
    Notify {
        /// What to do
        #[command(subcommand)]
        what: NotifyCommand,
    },
    /// Measure the agent (and later the builder)
    Bench {
        /// What to measure
        #[command(subcommand)]
        what: BenchCommand,
    },
}

/// Options of `hash-password`.
#[derive(Args, Debug, Clone)]
pub struct HashPasswordArgs {
    /// The LocalUser's login name (spec.username)
    #[arg(long, default_value = "admin")]
    pub username: String,
    /// Namespace of the LocalUser and its Secret
    #[arg(long, default_value = "kubekuma")]
    pub namespace: String,
    /// Role: admin, editor or viewer
    #[arg(long, default_value = "admin", value_parser = ["admin", "editor", "viewer"])]
    pub role: String,
    /// Resource name of the LocalUser (default: derived from the username); the Secret is NAME-credentials
    #[arg(long)]
    pub name: Option<String>,
}

/// `kubekuma api-key` commands.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Generate a key: the key goes to stderr (shown once), a Secret with its argon2id hash plus the ApiKey to stdout, as YAML for `kubectl apply -f -`
    Create {
        /// Human-readable key name (spec.name); the resource name is derived from it
        #[arg(long)]
        name: String,
        /// Role the key acts with: admin, editor or viewer
        #[arg(long, value_parser = ["admin", "editor", "viewer"])]
        role: String,
        /// Namespace of the ApiKey and its Secret
        #[arg(long, default_value = "kubekuma")]
        namespace: String,
        /// A development key (kk_test_…) instead of a production one (kk_live_…)
        #[arg(long)]
        test: bool,
        /// Expiry: RFC 3339 (2027-01-01T00:00:00Z) or a duration from now (30d, 12h, 2w)
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        /// The user the key belongs to (a LocalUser's username), written as the
        /// monitoring.kubekuma.io/owner label that spec.auth.apiKeys.maxPerUser counts by
        #[arg(long, value_name = "USERNAME")]
        owner: Option<String>,
    },
}

/// `kubekuma notify` commands.
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message through a NotificationProvider of these manifests and report the outcome
    Test {
        /// The provider: NAME or NAMESPACE/NAME
        provider: String,
        /// Manifest files or folders holding the provider and its Secrets
        #[arg(long = "config", value_name = "PATH", required = true)]
        config: Vec<PathBuf>,
        /// The message's title
        #[arg(long, default_value = "KubeKuma test notification")]
        title: String,
        /// The message's text
        #[arg(
            long,
            default_value = "This is a test message from `kubekuma notify test`. If you can read it, the provider works."
        )]
        message: String,
    },
}

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// N HTTP monitors against a local target server, through the real agent pipeline
    Agent {
        /// Number of monitors
        #[arg(long, default_value_t = 1000)]
        monitors: usize,
        /// Interval of each monitor, seconds
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Measured seconds (after one interval of warm-up)
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Checks running at once
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Benchmark PostgreSQL instead of a temporary SQLite file: the postgres:// URL
        /// of an EMPTY database (the run is refused on one holding heartbeats or monitor
        /// states; it leaves its fake monitors' rows there, so use a database of its own
        /// and drop it after). Read from this flag only, never from DATABASE_URL, so that
        /// a benchmark is not pointed at a production database by accident; the password
        /// from the URL, DATABASE_PASSWORD or DATABASE_PASSWORD_FILE
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// The public twins (`/status`, `/badge`, `/uptime`) of N monitors under concurrent
    /// clients from a cold start, with periodic state changes
    Twins {
        /// Number of monitors (all on one published page with per-monitor badges)
        #[arg(long, default_value_t = 10_000)]
        monitors: usize,
        /// Concurrent clients (one keep-alive connection each)
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Measured seconds, from the start (cold cache)
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Milliseconds between state changes (1% of the monitors each; 0: none)
        #[arg(long, default_value_t = 1000)]
        change_every_ms: u64,
    },
    /// Generate N monitors with history, then time a full build and a no-change rebuild
    Build {
        /// Number of monitors
        #[arg(long, default_value_t = 1000)]
        monitors: usize,
        /// Days of history
        #[arg(long, default_value_t = 90)]
        days: i64,
        /// Skip PNG badges
        #[arg(long)]
        no_png: bool,
    },
    /// The benchmark's target server (started by `bench agent` in a child process)
    #[command(hide = true)]
    Target {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("kubekuma: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crds => crds::crds(),
        Command::Validate { paths, strict } => validate::validate(&paths, strict),
        Command::Check { paths } => {
            runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(check::check(&paths)))
        }
        Command::Up { agent, listen } => {
            runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(up::up(agent, listen)))
        }
        Command::Agent {
            agent,
            listen,
            watch_namespaces,
            status_interval,
            base_url,
            site_service,
            ingress_class,
            session_secret,
        } => runtime().map_or(ExitCode::FAILURE, |rt| {
            let kube = agent::KubeArgs {
                watch_namespaces,
                status_interval,
                base_url,
                site_service,
                ingress_class,
            };
            rt.block_on(agent::agent_cmd(agent, listen, kube, session_secret))
        }),
        Command::Bench { what } => {
            runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(bench::bench(what)))
        }
        Command::Build(b) => {
            runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(build::build_cmd(b)))
        }
        Command::Serve(s) => {
            runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(serve::serve_cmd(s)))
        }
        Command::HashPassword(args) => hash_password::hash_password(args),
        Command::ApiKey { what } => api_key::api_key(what),
        Command::Notify { what } => {
            runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(notify::notify(what)))
        }
    }
}

/// The role of `--role` (`admin`, `editor` or `viewer`, which clap already checked).
fn parse_role(role: &str) -> kubekuma_crds::auth::Role {
    use kubekuma_crds::auth::Role;
    match role {
        "admin" => Role::Admin,
        "editor" => Role::Editor,
        _ => Role::Viewer,
    }
}

/// Print findings, one per line, `error: …` / `warning: …`.
pub fn print_findings(out: &mut impl Write, findings: &[Finding]) {
    for f in findings {
        let _ = writeln!(out, "{}: {f}", f.severity);
    }
}

/// `n` and the word `w`, with an `s` unless `n` is 1.
fn plural(n: usize, w: &str) -> String {
    format!("{n} {w}{}", if n == 1 { "" } else { "s" })
}

/// A watch channel that turns `true` on Ctrl-C (or SIGTERM on Unix).
fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        let _ = tx.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

/// The agent's options from those shared by `agent` and `up`.
fn options(a: AgentArgs, listen: String, config: Vec<PathBuf>) -> AgentOptions {
    AgentOptions {
        listener: a.listen_options(),
        config,
        data_dir: a.data,
        listen,
        agent_id: a
            .agent_id
            .map(|id| crate::export::sanitize_agent_id(&id))
            .unwrap_or_else(crate::export::agent_id),
        location: a.location,
        store_url: a.store,
        store_options: Vec::new(),
        database_url: a.database_url,
        flush_interval: Duration::from_secs(a.flush_interval.unwrap_or(60).max(1)),
        site_dir: None,
        session_secret: None,
        metrics: None,
        shutdown_grace: Duration::from_secs(a.shutdown_grace),
    }
}

/// The levels `LOG_LEVEL` accepts besides `tracing` filter directives.
const LOG_LEVELS: &str = "trace, debug, info, warn, error, fatal (as error), off";

/// The filter of a `LOG_LEVEL` value: one of the spec's levels (case-insensitive; `fatal`
/// is `error`), or `tracing` directives such as `info,kubekuma_agent=debug`; else an
/// error naming `LOG_LEVEL` and the accepted values.
pub fn log_filter(value: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let v = value.trim();
    let level = match v.to_ascii_lowercase().as_str() {
        "" => "info".to_string(),
        "fatal" | "error" => "error".to_string(),
        l @ ("trace" | "debug" | "info" | "warn" | "off") => l.to_string(),
        "warning" => "warn".to_string(),
        _ => {
            // Directives: each must name a level that exists (`target=level` or a bare
            // level); a bare word that is not a level is a typo, not a target.
            let ok = v
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .all(|d| {
                    let bare = d.to_ascii_lowercase();
                    d.contains('=')
                        || d.contains('[')
                        || d.contains("::")
                        || d.contains('_')
                        || matches!(
                            bare.as_str(),
                            "trace" | "debug" | "info" | "warn" | "error" | "off"
                        )
                });
            if !ok {
                return Err(format!(
                    "LOG_LEVEL: unknown level {v:?}; accepted: {LOG_LEVELS}, or filter directives \
                     such as `info,kubekuma_agent=debug`"
                ));
            }
            v.to_string()
        }
    };
    tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| {
        format!(
            "LOG_LEVEL: cannot use {v:?} ({e}); accepted: {LOG_LEVELS}, or filter directives \
             such as `info,kubekuma_agent=debug`"
        )
    })
}

/// Set up logging: human-readable on a terminal, JSON otherwise; level from `LOG_LEVEL`
/// (see [`log_filter`]). An unknown level is an error, printed by the caller.
pub fn init_logging() -> Result<(), String> {
    let filter = log_filter(&std::env::var("LOG_LEVEL").unwrap_or_default())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        let _ = builder.try_init();
    } else {
        let _ = builder.json().try_init();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    fn watch_namespaces(args: &[&str]) -> Option<String> {
        match Cli::try_parse_from(args).unwrap().command {
            Command::Agent {
                watch_namespaces, ..
            } => watch_namespaces,
            other => panic!("not agent: {other:?}"),
        }
    }

    #[test]
    fn log_levels_of_the_spec_are_accepted_and_unknown_ones_refused() {
        for l in [
            "trace", "DEBUG", "info", "Warn", "error", "fatal", "FATAL", "", "off",
        ] {
            assert!(super::log_filter(l).is_ok(), "{l}");
        }
        assert_eq!(super::log_filter("fatal").unwrap().to_string(), "error");
        assert!(super::log_filter("info,kubekuma_agent=debug").is_ok());
        for bad in ["verbose", "loud", "info,verbose"] {
            let err = super::log_filter(bad).unwrap_err();
            assert!(err.contains("LOG_LEVEL") && err.contains("fatal"), "{err}");
        }
    }

    fn location(args: &[&str]) -> Result<String, clap::Error> {
        match Cli::try_parse_from(args)?.command {
            Command::Agent { agent, .. } => Ok(agent.location),
            Command::Up { agent, .. } => Ok(agent.location),
            other => panic!("not agent or up: {other:?}"),
        }
    }

    #[test]
    fn location_defaults_to_home_and_must_be_a_dns_label() {
        assert_eq!(location(&["kubekuma", "agent"]).unwrap(), "home");
        assert_eq!(
            location(&["kubekuma", "agent", "--location", "eu-west-1"]).unwrap(),
            "eu-west-1"
        );
        assert_eq!(
            location(&["kubekuma", "up", "--location", "lab"]).unwrap(),
            "lab"
        );
        for bad in ["EU", "eu_west", "-eu", "eu.west", "", &"a".repeat(64)] {
            let arg = format!("--location={bad}");
            let err = location(&["kubekuma", "agent", &arg])
                .unwrap_err()
                .to_string();
            assert!(err.contains("DNS-1123 label"), "{bad}: {err}");
        }
    }

    #[test]
    fn watch_namespaces_flag_parses_and_namespace_flag_is_gone() {
        assert_eq!(
            watch_namespaces(&["kubekuma", "agent", "--watch-namespaces", "a,b"]).as_deref(),
            Some("a,b")
        );
        // The old flag is refused, not silently taken.
        assert!(Cli::try_parse_from(["kubekuma", "agent", "--namespace", "a"]).is_err());
    }
}
