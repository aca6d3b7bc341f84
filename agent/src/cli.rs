//! Command-line interface of the `kubekuma` binary: argument parsing and the commands.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kubekuma_crds::monitor::MonitorType;
use kubekuma_crds::results::CheckOutcome;

use crate::catalog::decode::parse_text;
use crate::catalog::findings::{Finding, Severity};
use crate::catalog::folder::read_paths;
use crate::catalog::snapshot::{Built, build};
use crate::checks::{self, CheckContext};
use crate::runtime::{self, AgentOptions};

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
    /// Object store for results: file:///path, s3://bucket/prefix, gs://…, az://…, memory:// (default: file://<data>/objects)
    #[arg(long = "store", env = "KUBEKUMA_STORE_URL", value_name = "URL")]
    pub store: Option<String>,
    /// SQLite database as sqlite:PATH (default: <data>/kubekuma.db)
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Seconds between batched writes to the object store (default 60; 5 for `up`)
    #[arg(long)]
    pub flush_interval: Option<u64>,
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
        /// Kube mode: comma-separated namespaces to watch (default: all)
        #[arg(long, env = "KUBE_NAMESPACE", value_name = "NS[,NS…]")]
        namespace: Option<String>,
        /// Kube mode: seconds between status writes
        #[arg(long, env = "KUBEKUMA_STATUS_INTERVAL", default_value_t = 30)]
        status_interval: u64,
        /// Kube mode: public URL of the built site, for the status of StatusPages without a host
        #[arg(long, env = "KUBEKUMA_BASE_URL")]
        base_url: Option<String>,
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
        Command::Crds => {
            print!("{}", kubekuma_crds::crdgen::all_crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Validate { paths, strict } => validate(&paths, strict),
        Command::Check { paths } => {
            runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(check(&paths)))
        }
        Command::Up { agent, listen } => {
            runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(up(agent, listen)))
        }
        Command::Agent {
            agent,
            listen,
            namespace,
            status_interval,
            base_url,
            session_secret,
        } => runtime().map_or(ExitCode::FAILURE, |rt| {
            let kube = KubeArgs {
                namespace,
                status_interval,
                base_url,
            };
            rt.block_on(agent_cmd(agent, listen, kube, session_secret))
        }),
        Command::Bench { what } => {
            runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(bench(what)))
        }
        Command::Build(b) => runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(build_cmd(b))),
        Command::HashPassword(args) => hash_password(args),
        Command::ApiKey { what } => api_key(what),
        Command::Notify { what } => {
            runtime().map_or(ExitCode::FAILURE, |rt| rt.block_on(notify(what)))
        }
    }
}

fn parse_role(role: &str) -> kubekuma_crds::auth::Role {
    use kubekuma_crds::auth::Role;
    match role {
        "admin" => Role::Admin,
        "editor" => Role::Editor,
        _ => Role::Viewer,
    }
}

/// `kubekuma hash-password`: the password from stdin's first line, the Secret and the
/// LocalUser on stdout.
fn hash_password(a: HashPasswordArgs) -> ExitCode {
    use crate::admin::auth::{manifests, password};
    let fail = |msg: String| {
        eprintln!("kubekuma hash-password: {msg}");
        ExitCode::from(2)
    };
    if !manifests::valid_username(&a.username) {
        return fail(format!(
            "--username must be 1-64 letters, digits, '.', '_', '-' or '@', got {:?}",
            a.username
        ));
    }
    if !manifests::valid_name(&a.namespace) {
        return fail(format!(
            "--namespace must be a Kubernetes name (lowercase letters, digits, '-'), got {:?}",
            a.namespace
        ));
    }
    let name = match a.name {
        Some(n) if manifests::valid_name(&n) => n,
        Some(n) => {
            return fail(format!(
                "--name must be a Kubernetes name (lowercase letters, digits, '-'), got {n:?}"
            ));
        }
        None => match manifests::resource_name(&a.username) {
            Some(n) => n,
            None => {
                return fail("cannot derive a resource name from the username; give --name".into());
            }
        },
    };
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Password (one line; it is echoed, so pipe it in to keep it off the screen):");
    }
    let mut line = String::new();
    if let Err(e) = stdin.read_line(&mut line) {
        return fail(format!("cannot read the password from stdin: {e}"));
    }
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        return fail("the password is empty: give it on the first line of stdin".into());
    }
    let hash = match password::hash_spec(pw.as_bytes()) {
        Ok(h) => h,
        Err(e) => return fail(e.to_string()),
    };
    print!(
        "{}",
        manifests::local_user_yaml(&name, &a.namespace, &a.username, parse_role(&a.role), &hash)
    );
    ExitCode::SUCCESS
}

/// `kubekuma api-key create`: the key on stderr, the Secret and the ApiKey on stdout.
fn api_key(what: ApiKeyCommand) -> ExitCode {
    use crate::admin::auth::{api_key, manifests, password};
    let ApiKeyCommand::Create {
        name,
        role,
        namespace,
        test,
        expires,
    } = what;
    let fail = |msg: String| {
        eprintln!("kubekuma api-key create: {msg}");
        ExitCode::from(2)
    };
    if name.trim().is_empty() {
        return fail("--name must not be empty".into());
    }
    if !manifests::valid_name(&namespace) {
        return fail(format!(
            "--namespace must be a Kubernetes name (lowercase letters, digits, '-'), got {namespace:?}"
        ));
    }
    let Some(resource) = manifests::resource_name(&name) else {
        return fail(format!(
            "cannot derive a resource name from --name {name:?}; use letters or digits"
        ));
    };
    let expires_at = match expires
        .as_deref()
        .map(|e| manifests::parse_expiry(e, chrono::Utc::now()))
    {
        None => None,
        Some(Ok(t)) if t > chrono::Utc::now() => Some(t),
        Some(Ok(_)) => return fail("--expires is in the past".into()),
        Some(Err(e)) => return fail(format!("--expires: {e}")),
    };
    let key = api_key::generate(test);
    let hash = match password::hash_spec(key.as_bytes()) {
        Ok(h) => h,
        Err(e) => return fail(e.to_string()),
    };
    let yaml = manifests::api_key_yaml(
        &resource,
        &namespace,
        name.trim(),
        parse_role(&role),
        expires_at,
        &hash,
    );
    eprintln!(
        "API key for {namespace}/{resource} (store it now; it is not shown again):\n\n  {key}\n\n\
         Apply the manifests printed on stdout (e.g. `kubekuma api-key create … | kubectl apply -f -`) \
         and send the key as `Authorization: Bearer <key>`."
    );
    print!("{yaml}");
    ExitCode::SUCCESS
}

/// Print findings, one per line, `error: …` / `warning: …`.
pub fn print_findings(out: &mut impl Write, findings: &[Finding]) {
    for f in findings {
        let _ = writeln!(out, "{}: {f}", f.severity);
    }
}

fn plural(n: usize, w: &str) -> String {
    format!("{n} {w}{}", if n == 1 { "" } else { "s" })
}

fn summary(built: &Built, files: usize, docs: usize) -> String {
    let errors = built
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = built.findings.len() - errors;
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

/// What `kubekuma check` found for one monitor.
#[derive(Debug, Clone)]
pub enum CheckResult {
    /// The check ran once.
    Ran(CheckOutcome),
    /// The check was not run (a push monitor, which only a running agent can judge): why.
    Skipped(String),
}

impl CheckResult {
    /// The STATE column: `up`, `down` or `skipped`.
    pub fn state(&self) -> &'static str {
        match self {
            CheckResult::Ran(o) if o.up => "up",
            CheckResult::Ran(_) => "down",
            CheckResult::Skipped(_) => "skipped",
        }
    }
}

/// One row of `kubekuma check`: the monitor (`namespace/name`), its type and result.
#[derive(Debug, Clone)]
pub struct CheckRow {
    /// `namespace/name`.
    pub monitor: String,
    /// The monitor's type.
    pub type_: MonitorType,
    /// What the check found.
    pub result: CheckResult,
}

/// What `kubekuma check` prints for a push monitor instead of running it.
pub const PUSH_SKIPPED: &str =
    "push monitors are checked by the running agent (POST/GET /api/v1/push/<token>)";

/// Longest message of an up result in the table (longer ones end in "…").
const MAX_UP_MESSAGE: usize = 160;

/// `text` on one line (line breaks and tabs become spaces), at most `max` characters.
fn one_line(text: &str, max: Option<usize>) -> String {
    let flat: String = text
        .split(['\n', '\r', '\t'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match max {
        Some(max) if flat.chars().count() > max => {
            let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
            cut.push('…');
            cut
        }
        _ => flat,
    }
}

/// The details of an up result: the checker's message, with (or, for the types whose
/// checkers set no message when up, instead of it) a summary of its metadata: the HTTP
/// status, the TCP peer, a Steam server's name, map and players, a pod's phase.
fn up_details(ty: MonitorType, o: &CheckOutcome) -> String {
    let message = o
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let meta = |k: &str| -> Option<String> {
        o.metadata.get(k).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let summary = match ty {
        // The status code even when the checker says more (e.g. what a keyword matched).
        MonitorType::Http | MonitorType::Keyword | MonitorType::JsonQuery => {
            let status = meta("statusCode").map(|c| format!("HTTP {c}"));
            return match (status, message) {
                (Some(s), Some(m)) if !m.contains(&s) => format!("{s}: {m}"),
                (_, Some(m)) => m.to_string(),
                (Some(s), None) => s,
                (None, None) => String::new(),
            };
        }
        MonitorType::Tcp => meta("address").map(|a| format!("connected to {a}")),
        MonitorType::Steam => {
            let mut parts = Vec::new();
            if let Some(name) = meta("serverName") {
                parts.push(format!("{name:?}"));
            }
            if let Some(map) = meta("map").filter(|m| !m.is_empty()) {
                parts.push(format!("map {map}"));
            }
            if let Some(players) = meta("players") {
                let mut p = match meta("maxPlayers") {
                    Some(max) => format!("{players}/{max} players"),
                    None => format!("{players} players"),
                };
                if let Some(bots) = meta("bots").filter(|b| b != "0") {
                    p.push_str(&format!(" ({bots} bots)"));
                }
                parts.push(p);
            }
            Some(parts.join(", ")).filter(|s| !s.is_empty())
        }
        MonitorType::Kubernetes => meta("phase").map(|p| format!("phase {p}")),
        _ => None,
    };
    message.map(str::to_string).or(summary).unwrap_or_default()
}

/// Render the results of `kubekuma check` as an aligned table: MONITOR, TYPE, STATE (`up`,
/// `down` or `skipped`), LATENCY and MESSAGE — the reason and message of a down result,
/// the checker's details of an up one (shortened to one line of at most 160 characters),
/// why a skipped monitor was not run.
pub fn check_table(rows: &[CheckRow]) -> String {
    let mut lines = vec![[
        "MONITOR".to_string(),
        "TYPE".into(),
        "STATE".into(),
        "LATENCY".into(),
        "MESSAGE".into(),
    ]];
    for row in rows {
        let (latency, message) = match &row.result {
            CheckResult::Ran(o) => {
                let message = match (&o.reason, &o.message) {
                    (Some(r), Some(m)) => one_line(&format!("{r}: {m}"), None),
                    (Some(r), None) => r.to_string(),
                    (None, _) => one_line(&up_details(row.type_, o), Some(MAX_UP_MESSAGE)),
                };
                (format!("{:.0} ms", o.latency_ms), message)
            }
            CheckResult::Skipped(why) => ("-".to_string(), one_line(why, None)),
        };
        lines.push([
            row.monitor.clone(),
            row.type_.to_string(),
            row.result.state().to_string(),
            latency,
            message,
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", l[i], w = *w));
        }
        out.push_str(&l[4]);
        // No trailing spaces when the message is empty.
        out.truncate(out.trim_end_matches(' ').len());
        out.push('\n');
    }
    out
}

async fn notify(what: NotifyCommand) -> ExitCode {
    let NotifyCommand::Test {
        provider,
        config,
        title,
        message,
    } = what;
    let built = build(&read_paths(&config), None);
    print_findings(&mut std::io::stderr(), &built.findings);
    let snap = built.snapshot;
    let (namespace, name) = match provider.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, provider.as_str()),
    };
    let found: Vec<_> = snap
        .providers
        .iter()
        .filter(|(k, _)| k.name == name && namespace.is_none_or(|ns| k.namespace == ns))
        .collect();
    let (key, p) = match found.as_slice() {
        [one] => *one,
        [] => {
            let known: Vec<String> = snap.providers.keys().map(|k| k.to_string()).collect();
            eprintln!(
                "kubekuma notify test: no valid NotificationProvider {provider} in the manifests{}",
                if known.is_empty() {
                    String::new()
                } else {
                    format!(" (there are: {})", known.join(", "))
                }
            );
            return ExitCode::from(2);
        }
        many => {
            let names: Vec<String> = many.iter().map(|(k, _)| k.to_string()).collect();
            eprintln!(
                "kubekuma notify test: {provider} is ambiguous; give NAMESPACE/NAME: {}",
                names.join(", ")
            );
            return ExitCode::from(2);
        }
    };
    let now = chrono::Utc::now();
    let msg = crate::alerting::providers::Message {
        title,
        body: message.clone(),
        event: "test".into(),
        state: "up".into(),
        timestamp: now,
        event_json: serde_json::json!({
            "monitorId": "kubekuma/notify-test",
            "monitorNamespace": "kubekuma",
            "monitorName": "notify-test",
            "previousState": "up",
            "currentState": "up",
            "message": message,
            "timestamp": now.to_rfc3339(),
            "isStateChange": false,
            "kind": "test",
            "labels": {},
            "annotations": {},
        }),
    };
    let ctx = crate::alerting::providers::ProviderContext::new(Arc::new(snap.secrets.clone()));
    let started = std::time::Instant::now();
    match crate::alerting::providers::send(&ctx, &key.namespace, &p.spec, &msg).await {
        Ok(d) => {
            println!(
                "sent through {key} ({}) in {} ms: {}",
                p.spec.type_,
                started.elapsed().as_millis(),
                d.detail
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "kubekuma notify test: {key} ({}) failed{}: {e}",
                p.spec.type_,
                if e.retryable() {
                    " (temporary; the agent would retry)"
                } else {
                    ""
                }
            );
            ExitCode::FAILURE
        }
    }
}

async fn check(paths: &[PathBuf]) -> ExitCode {
    let files = read_paths(paths);
    let built = build(&files, None);
    let mut err = std::io::stderr();
    print_findings(&mut err, &built.findings);
    let snap = built.snapshot;
    if snap.monitors.is_empty() {
        eprintln!(
            "kubekuma check: no valid monitors in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::FAILURE;
    }
    let ctx = Arc::new(CheckContext::new(
        snap.effective.clone(),
        Arc::new(snap.secrets.clone()),
    ));
    let limit = Arc::new(tokio::sync::Semaphore::new(
        snap.effective.max_concurrent_net_checks.max(1) as usize,
    ));
    // Push monitors are not run: they wait for pushes, which only a running agent receives.
    enum Pending {
        Running(tokio::task::JoinHandle<(String, MonitorType, CheckOutcome)>),
        Skipped(String, MonitorType),
    }
    let mut pending = Vec::new();
    for (key, m) in &snap.monitors {
        if m.spec.type_ == MonitorType::Push {
            pending.push(Pending::Skipped(key.to_string(), m.spec.type_));
            continue;
        }
        let plan = crate::schedule::MonitorPlan::new(
            key.clone(),
            Arc::new(m.spec.clone()),
            &snap.effective,
        );
        let (ctx, limit) = (ctx.clone(), limit.clone());
        pending.push(Pending::Running(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let o = checks::run(&ctx, &plan.key.namespace, &plan.spec, plan.timeout).await;
            (plan.key.to_string(), plan.spec.type_, o)
        })));
    }
    let mut rows = Vec::new();
    for p in pending {
        match p {
            Pending::Running(task) => {
                if let Ok((monitor, type_, o)) = task.await {
                    rows.push(CheckRow {
                        monitor,
                        type_,
                        result: CheckResult::Ran(o),
                    });
                }
            }
            Pending::Skipped(monitor, type_) => rows.push(CheckRow {
                monitor,
                type_,
                result: CheckResult::Skipped(PUSH_SKIPPED.to_string()),
            }),
        }
    }
    print!("{}", check_table(&rows));
    let count = |state: &str| rows.iter().filter(|r| r.result.state() == state).count();
    let (up, down, skipped) = (count("up"), count("down"), count("skipped"));
    eprintln!(
        "{} checked: {up} up, {down} down{}",
        plural(up + down, "monitor"),
        if skipped > 0 {
            format!(
                "; {} skipped (push monitors wait for pushes to a running agent)",
                plural(skipped, "monitor")
            )
        } else {
            String::new()
        }
    );
    if down > 0 || built.findings.iter().any(|f| f.severity == Severity::Error) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The demo manifests bundled into the binary (`deploy/examples/demo/`).
pub const DEMO: &[(&str, &str)] = &[
    (
        "monitors.yaml",
        include_str!("../../deploy/examples/demo/monitors.yaml"),
    ),
    (
        "status-page.yaml",
        include_str!("../../deploy/examples/demo/status-page.yaml"),
    ),
];

/// Write the bundled demo manifests into `<data>/demo/` (refreshing them) and return that folder.
fn materialize_demo(data: &Path) -> std::io::Result<PathBuf> {
    let dir = data.join("demo");
    std::fs::create_dir_all(&dir)?;
    for (name, text) in DEMO {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*text) {
            std::fs::write(&path, text)?;
        }
    }
    demo_admin(data, &dir)?;
    Ok(dir)
}

/// File (in the data folder) holding the demo admin's password.
const DEMO_PASSWORD_FILE: &str = "demo-admin-password";

/// The demo's admin user for the admin API: on the first `up`, a random password is
/// written to `<data>/demo-admin-password` (mode 0600, never printed or logged) and its
/// argon2id hash, with the LocalUser, to `<demo>/admin.yaml`. Later runs keep both.
fn demo_admin(data: &Path, dir: &Path) -> std::io::Result<()> {
    let manifest = dir.join("admin.yaml");
    let password_file = data.join(DEMO_PASSWORD_FILE);
    if manifest.exists() && password_file.exists() {
        return Ok(());
    }
    use base64::Engine as _;
    let password =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>());
    let hash = crate::admin::auth::password::hash_spec(password.as_bytes())
        .map_err(|e| std::io::Error::other(format!("cannot hash the demo password: {e}")))?;
    let yaml = format!(
        "# The demo's admin for the admin API (`kubekuma up`); the password is in\n\
         # {DEMO_PASSWORD_FILE} in the data folder.\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: demo-admin-password\n  namespace: demo\n\
         stringData:\n  passwordHash: '{hash}'\n---\n\
         apiVersion: monitoring.kubekuma.io/v1\nkind: LocalUser\nmetadata:\n  name: admin\n  namespace: demo\n\
         spec:\n  username: admin\n  role: admin\n  passwordHashSecretRef: {{name: demo-admin-password, key: passwordHash}}\n"
    );
    write_private(&password_file, password.as_bytes())?;
    std::fs::write(manifest, yaml)
}

/// Write `bytes` to a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

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

fn options(a: AgentArgs, listen: String, config: Vec<PathBuf>) -> AgentOptions {
    AgentOptions {
        config,
        data_dir: a.data,
        listen,
        agent_id: a
            .agent_id
            .map(|id| crate::export::sanitize_agent_id(&id))
            .unwrap_or_else(crate::export::agent_id),
        store_url: a.store,
        store_options: Vec::new(),
        database_url: a.database_url,
        flush_interval: Duration::from_secs(a.flush_interval.unwrap_or(60).max(1)),
        site_dir: None,
        session_secret: None,
        metrics: None,
    }
}

/// The kube mode options of `agent`.
struct KubeArgs {
    namespace: Option<String>,
    status_interval: u64,
    base_url: Option<String>,
}

/// Whether `agent` without `--config` should read the API server: in a cluster, or with
/// a kubeconfig named by `KUBECONFIG`.
fn kube_mode_available() -> bool {
    let set = |v: &str| std::env::var_os(v).is_some_and(|s| !s.is_empty());
    set("KUBERNETES_SERVICE_HOST") || set("KUBECONFIG")
}

async fn agent_cmd(
    a: AgentArgs,
    listen: Option<String>,
    k: KubeArgs,
    session_secret: Option<String>,
) -> ExitCode {
    let session_secret = match session_secret.filter(|s| !s.is_empty()) {
        None => {
            eprintln!(
                "kubekuma agent: SESSION_SECRET is required: the key that signs admin API sessions, \
                 at least {} bytes (e.g. `export SESSION_SECRET=$(openssl rand -hex 32)`; in a cluster \
                 from the Secret kubekuma-session, see deploy/README.md)",
                crate::admin::auth::MIN_SECRET_LEN
            );
            return ExitCode::from(2);
        }
        Some(s) => match crate::admin::auth::check_secret(&s) {
            Ok(()) => s,
            Err(e) => {
                eprintln!("kubekuma agent: SESSION_SECRET: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let shutdown = shutdown_signal();
    // Leader election and the role label: awaited after the agent stopped, so the Lease is
    // released and the Pod marked standby before the process exits.
    let mut background: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let source = if !a.config.is_empty() {
        runtime::CatalogSource::Folder
    } else if kube_mode_available() {
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("kubekuma agent: cannot reach the Kubernetes API server: {e}");
                return ExitCode::FAILURE;
            }
        };
        let namespaces = k
            .namespace
            .as_deref()
            .map(crate::cluster::catalog::parse_namespaces)
            .unwrap_or_default();
        let lease_ns = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_string());
        let elector = match crate::cluster::lease::LeaderElector::new(
            client.clone(),
            crate::cluster::lease::LeaseConfig::new(lease_ns.clone()),
        ) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("kubekuma agent: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(identity = elector.identity(), namespace = %lease_ns, "leader election");
        let leadership = elector.spawn(shutdown.clone());
        let is_leader = leadership.is_leader.clone();
        if let Some(pod) = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()) {
            let (client, is_leader, stop) = (client.clone(), is_leader.clone(), shutdown.clone());
            background.push(tokio::spawn(async move {
                crate::cluster::role::follow(
                    client,
                    &lease_ns,
                    &pod,
                    is_leader,
                    stop,
                    Duration::from_secs(5),
                )
                .await
            }));
        }
        background.push(leadership.task);
        runtime::CatalogSource::Kube(runtime::KubeMode {
            client,
            namespaces,
            status: crate::cluster::status::StatusOptions {
                interval: Duration::from_secs(k.status_interval.max(1)),
                site_url: k.base_url.filter(|u| !u.trim().is_empty()),
                ..Default::default()
            },
            is_leader,
        })
    } else {
        eprintln!(
            "kubekuma agent: no catalog to read. Give --config PATH for folder mode, or run it in a \
             cluster (KUBERNETES_SERVICE_HOST) or with KUBECONFIG set for kube mode."
        );
        return ExitCode::from(2);
    };
    let listen = listen.unwrap_or_else(|| {
        format!(
            "0.0.0.0:{}",
            std::env::var("PORT").unwrap_or_else(|_| "3000".into())
        )
    });
    let config = a.config.clone();
    let mut opts = options(a, listen, config);
    opts.session_secret = Some(session_secret);
    let result = runtime::run_with(opts, source, shutdown).await;
    for task in background {
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubekuma agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn up(mut a: AgentArgs, listen: String) -> ExitCode {
    let config = if a.config.is_empty() {
        match materialize_demo(&a.data) {
            Ok(dir) => vec![dir],
            Err(e) => {
                eprintln!(
                    "kubekuma up: cannot write the demo manifests into {}: {e}",
                    a.data.display()
                );
                return ExitCode::FAILURE;
            }
        }
    } else {
        a.config.clone()
    };
    a.flush_interval.get_or_insert(5);
    let files = read_paths(&config);
    let docs: usize = files.iter().map(|f| f.docs.len()).sum();
    let built = build(&files, None);
    eprintln!("{}", summary(&built, files.len(), docs));

    // The builder renders from the agent's object store into <data>/site, which the
    // agent's listener serves next to its own endpoints.
    let source = a
        .store
        .clone()
        .unwrap_or_else(|| a.data.join("objects").display().to_string());
    let site = a.data.join("site");
    let build_args = BuildArgs {
        source,
        out: site.display().to_string(),
        theme: std::env::var_os("KUBEKUMA_THEME").map(PathBuf::from),
        base_url: String::new(),
        stale_after: 900,
        no_png: false,
        no_fetch_branding: false,
        watch: true,
        interval: 2,
    };
    let mut builder = match make_builder(&build_args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("kubekuma up: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = shutdown_signal();
    let builder_shutdown = shutdown.clone();

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
    let mut opts = options(a, listen, config);
    opts.site_dir = Some(site);
    let metrics = std::sync::Arc::new(crate::admin::metrics::Metrics::new());
    opts.metrics = Some(metrics.clone());
    // Both on this task (the builder's future need not be Send); when the agent stops,
    // for a signal or an error, the builder stops with it.
    let run = runtime::run(opts, shutdown);
    let watch = builder.watch_reporting(Duration::from_secs(2), builder_shutdown, |took, ok| {
        metrics.build_finished(took.as_secs_f64(), ok)
    });
    tokio::pin!(run);
    tokio::pin!(watch);
    let result = tokio::select! {
        r = &mut run => r,
        () = &mut watch => run.await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubekuma up: {e:#}");
            ExitCode::FAILURE
        }
    }
}

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

async fn build_cmd(b: BuildArgs) -> ExitCode {
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
            println!(
                "built {} in {}: {} written, {} unchanged, {} removed",
                plural(r.pages, "page"),
                crate::export::target::redact_url(&b.out),
                r.publish.written.len(),
                r.publish.unchanged,
                r.publish.removed.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kubekuma build: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(what: BenchCommand) -> ExitCode {
    match what {
        BenchCommand::Target { listen } => match crate::bench::serve_target(&listen).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kubekuma bench target: {e:#}");
                ExitCode::FAILURE
            }
        },
        BenchCommand::Build {
            monitors,
            days,
            no_png,
        } => {
            let b = kubekuma_builder::bench::BuildBench {
                monitors,
                days: days.clamp(1, 400),
                png: !no_png,
            };
            match kubekuma_builder::bench::run(b).await {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kubekuma bench build: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        BenchCommand::Agent {
            monitors,
            interval,
            duration,
            concurrency,
        } => {
            let b = crate::bench::AgentBench {
                monitors,
                interval,
                duration,
                concurrency,
            };
            match crate::bench::run_agent_bench(b).await {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kubekuma bench agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
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

/// Parse `parse_text` is used by tests of the demo manifests.
#[doc(hidden)]
pub fn demo_files() -> Vec<crate::catalog::decode::FileDocs> {
    DEMO.iter()
        .map(|(name, text)| parse_text(name, text))
        .collect()
}
