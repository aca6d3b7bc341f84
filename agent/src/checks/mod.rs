//! Checkers: one module per monitor type, each owning its plan (the monitor's target and
//! criteria as validated values), the `plan` constructor holding that type's validation
//! rules, and its `check`; [`Plan::new`] and [`run`] are the matches over the types.
//!
//! The catalog turns each monitor into a [`Plan`] once; checkers trust it. A checker turns
//! one attempt into a [`CheckOutcome`]: a down target is data (`up: false`, a
//! [`FailureReason`] and a message free of secrets), never an `Err`. Values holding
//! `${SECRET:…}` references are resolved at check time (Secrets change), their syntax is
//! checked in the plan. Adding a monitor type is one new file here plus one arm in each
//! match the compiler points to.

pub mod dns;
pub mod docker;
pub mod http;
pub mod json_query;
pub mod keyword;
pub mod kubernetes;
pub mod ping;
pub mod push;
pub mod steam;
pub mod tcp;
pub mod websocket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::monitor::{MonitorSpec, MonitorType, Target};
use kubekuma_crds::results::{CertInfo, CheckOutcome, FailureReason};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;

pub use crate::findings::PlanError;
use crate::findings::Sink;
use crate::secrets::SecretStore;
use crate::tls::AcceptAnyCert;

/// Most HTTP clients kept per context; the cache is cleared when it would grow beyond.
const MAX_CACHED_CLIENTS: usize = 32;

/// What every check needs besides its monitor: settings, Secrets, trusted roots and the
/// HTTP clients built so far.
///
/// Trusted roots are the operating system's store (`rustls-native-certs`, i.e.
/// `/etc/ssl/certs` or `SSL_CERT_FILE`/`SSL_CERT_DIR`), loaded once per process; when it
/// holds no certificate at all, the Mozilla roots compiled in (`webpki-roots`) are used
/// instead. [`CheckContext::with_extra_roots`] adds more. HTTP and TCP checks verify
/// against the same store.
pub struct CheckContext {
    settings: EffectiveSettings,
    secrets: Arc<SecretStore>,
    roots: Arc<RootCertStore>,
    http_clients: Mutex<HashMap<http::ClientKey, reqwest::Client>>,
    /// The Kubernetes client of `kubernetes` checks: given, or inferred on first use.
    kube: tokio::sync::OnceCell<kube::Client>,
}

impl std::fmt::Debug for CheckContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckContext")
            .field("settings", &self.settings)
            .field("secrets", &self.secrets)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl CheckContext {
    /// A context trusting the operating system's root certificates.
    pub fn new(settings: EffectiveSettings, secrets: Arc<SecretStore>) -> Self {
        CheckContext {
            settings,
            secrets,
            roots: system_roots(),
            http_clients: Mutex::new(HashMap::new()),
            kube: tokio::sync::OnceCell::new(),
        }
    }

    /// Use this client for `kubernetes` checks instead of inferring one (kubeconfig or
    /// in-cluster service account) on first use.
    pub fn with_kube_client(self, client: kube::Client) -> Self {
        CheckContext {
            kube: tokio::sync::OnceCell::new_with(Some(client)),
            ..self
        }
    }

    /// The Kubernetes client; inferred on first use when none was given (a failure is not
    /// remembered, so a later attempt tries again).
    pub(crate) async fn kube_client(&self) -> Result<kube::Client, kube::Error> {
        self.kube
            .get_or_try_init(kube::Client::try_default)
            .await
            .cloned()
    }

    /// Also trust these root certificates (DER), for HTTP and TLS-wrapped TCP checks alike.
    /// Certificates that do not parse as trust anchors are skipped with a warning.
    /// Meant for private CAs and for tests that serve certificates of their own CA.
    pub fn with_extra_roots(
        mut self,
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Self {
        let mut store = (*self.roots).clone();
        let (_, ignored) = store.add_parsable_certificates(roots);
        if ignored > 0 {
            tracing::warn!(
                ignored,
                "extra root certificates that do not parse were skipped"
            );
        }
        self.roots = Arc::new(store);
        lock(&self.http_clients).clear();
        self
    }

    /// The settings checks run with.
    pub fn settings(&self) -> &EffectiveSettings {
        &self.settings
    }

    /// The Secrets `${SECRET:name:key}` references resolve against.
    pub fn secrets(&self) -> &SecretStore {
        &self.secrets
    }

    /// A rustls client configuration with this context's roots (or no verification).
    pub(crate) fn tls_config(
        &self,
        verify: bool,
        alpn: &[&[u8]],
    ) -> Result<rustls::ClientConfig, String> {
        let provider = crypto_provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot configure TLS: {e}"))?;
        let mut config = if verify {
            builder
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                .with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// A monitor's checked plan: what its type needs, validated once by the catalog.
// Plans are made once and shared behind an `Arc`; boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// A monitor a checker probes.
    Probe(Probe),
    /// A push monitor: it is not probed; pushes arrive on the admin listener and
    /// [`crate::push`] evaluates its deadline.
    Push(push::PushPlan),
}

/// The plan of a monitor a checker probes: one variant per probed monitor type.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    /// `http`.
    Http(http::HttpPlan),
    /// `keyword`.
    Keyword(keyword::KeywordPlan),
    /// `jsonQuery`.
    JsonQuery(json_query::JsonQueryPlan),
    /// `tcp`.
    Tcp(tcp::TcpPlan),
    /// `dns`.
    Dns(dns::DnsPlan),
    /// `ping`.
    Ping(ping::PingPlan),
    /// `websocket`.
    Websocket(websocket::WebsocketPlan),
    /// `steam`.
    Steam(steam::SteamPlan),
    /// `kubernetes`.
    Kubernetes(kubernetes::KubernetesPlan),
    /// `docker`.
    Docker(docker::DockerPlan),
}

/// A compiled regular expression in a plan; plans compare equal by its source.
#[derive(Clone, Debug)]
pub struct Pattern(regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Plan {
    /// The plan of a monitor in `namespace`, reporting what is wrong with its target to
    /// `sink` (field paths from the document root, as `kubekuma validate` shows them).
    /// `None` when the sink holds an error. The catalog checks the rest of the spec
    /// (schedule, success criteria, alerting) before.
    pub fn new(namespace: &str, spec: &MonitorSpec, sink: &mut Sink<'_>) -> Option<Plan> {
        targets(spec, sink);
        let probe = |p: Option<Probe>| p.map(Plan::Probe);
        let plan = match spec.type_ {
            MonitorType::Http => probe(http::plan(namespace, spec, sink).map(Probe::Http)),
            MonitorType::Keyword => probe(keyword::plan(namespace, spec, sink).map(Probe::Keyword)),
            MonitorType::JsonQuery => {
                probe(json_query::plan(namespace, spec, sink).map(Probe::JsonQuery))
            }
            MonitorType::Tcp => probe(tcp::plan(spec, sink).map(Probe::Tcp)),
            MonitorType::Dns => probe(dns::plan(spec, sink).map(Probe::Dns)),
            MonitorType::Ping => probe(ping::plan(spec, sink).map(Probe::Ping)),
            MonitorType::Websocket => {
                probe(websocket::plan(namespace, spec, sink).map(Probe::Websocket))
            }
            MonitorType::Steam => probe(steam::plan(spec, sink).map(Probe::Steam)),
            MonitorType::Kubernetes => {
                probe(kubernetes::plan(namespace, spec, sink).map(Probe::Kubernetes))
            }
            MonitorType::Docker => probe(docker::plan(spec, sink).map(Probe::Docker)),
            MonitorType::Push => push::plan(spec, sink).map(Plan::Push),
        };
        plan.filter(|_| !sink.has_errors())
    }

    /// The plan of a spec checked on its own (for one-off checks, the benchmark and
    /// tests; the agent's monitors are planned by the catalog).
    pub fn of(namespace: &str, spec: &MonitorSpec) -> Result<Plan, PlanError> {
        let mut sink = Sink::detached();
        Plan::new(namespace, spec, &mut sink).ok_or_else(|| sink.plan_error())
    }

    /// The monitor type it is the plan of.
    pub fn monitor_type(&self) -> MonitorType {
        match self {
            Plan::Probe(p) => p.monitor_type(),
            Plan::Push(_) => MonitorType::Push,
        }
    }
}

impl Probe {
    /// The monitor type it is the plan of.
    pub fn monitor_type(&self) -> MonitorType {
        match self {
            Probe::Http(_) => MonitorType::Http,
            Probe::Keyword(_) => MonitorType::Keyword,
            Probe::JsonQuery(_) => MonitorType::JsonQuery,
            Probe::Tcp(_) => MonitorType::Tcp,
            Probe::Dns(_) => MonitorType::Dns,
            Probe::Ping(_) => MonitorType::Ping,
            Probe::Websocket(_) => MonitorType::Websocket,
            Probe::Steam(_) => MonitorType::Steam,
            Probe::Kubernetes(_) => MonitorType::Kubernetes,
            Probe::Docker(_) => MonitorType::Docker,
        }
    }
}

/// Which `spec.target` blocks are present (a new block is a compile error here).
fn present_targets(t: &Target) -> Vec<MonitorType> {
    let Target {
        http,
        keyword,
        json_query,
        tcp,
        dns,
        ping,
        websocket,
        push,
        steam,
        kubernetes,
        docker,
    } = t;
    [
        (http.is_some(), MonitorType::Http),
        (keyword.is_some(), MonitorType::Keyword),
        (json_query.is_some(), MonitorType::JsonQuery),
        (tcp.is_some(), MonitorType::Tcp),
        (dns.is_some(), MonitorType::Dns),
        (ping.is_some(), MonitorType::Ping),
        (websocket.is_some(), MonitorType::Websocket),
        (push.is_some(), MonitorType::Push),
        (steam.is_some(), MonitorType::Steam),
        (kubernetes.is_some(), MonitorType::Kubernetes),
        (docker.is_some(), MonitorType::Docker),
    ]
    .into_iter()
    .filter_map(|(present, ty)| present.then_some(ty))
    .collect()
}

/// The target block named by the type must be there; others are ignored (with a warning).
/// `keyword` and `jsonQuery` also accept the original implementation's `target.http`.
fn targets(spec: &MonitorSpec, sink: &mut Sink<'_>) {
    let ty = spec.type_;
    let t = &spec.target;
    let present = present_targets(t);
    let compat_http = matches!(ty, MonitorType::Keyword | MonitorType::JsonQuery)
        && t.http.is_some()
        && !present.contains(&ty);
    if !present.contains(&ty) && !compat_http {
        sink.error(
            &format!("spec.target.{ty}"),
            format!(
                "required for type {ty}{}",
                if present.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (found {})",
                        present
                            .iter()
                            .map(|p| format!("target.{p}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        );
    }
    for p in &present {
        if *p != ty && !(compat_http && *p == MonitorType::Http) {
            sink.warn(
                &format!("spec.target.{p}"),
                format!("ignored for type {ty}"),
            );
        }
    }
}

/// Run one attempt of a monitor's check. Never panics, never returns Err: a down target
/// is a CheckOutcome with up=false, a classified reason and a human message.
///
/// `timeout` bounds the whole attempt (`reason: timeout` when it passes); `latency_ms` is
/// the time the attempt took, except where a checker measures something more telling (see
/// [`own_latency`]).
pub async fn run(ctx: &CheckContext, probe: &Probe, timeout: Duration) -> CheckOutcome {
    let attempt = Attempt::start(timeout);
    let check = async {
        match probe {
            Probe::Http(p) => http::check(ctx, p, &attempt).await,
            Probe::Tcp(p) => tcp::check(ctx, p, &attempt).await,
            Probe::Keyword(p) => keyword::check(ctx, p, &attempt).await,
            Probe::JsonQuery(p) => json_query::check(ctx, p, &attempt).await,
            Probe::Steam(p) => steam::check(ctx, p, &attempt).await,
            Probe::Websocket(p) => websocket::check(ctx, p, &attempt).await,
            Probe::Dns(p) => dns::check(ctx, p, &attempt).await,
            Probe::Ping(p) => ping::check(ctx, p, &attempt).await,
            Probe::Kubernetes(p) => kubernetes::check(ctx, p, &attempt).await,
            Probe::Docker(p) => docker::check(ctx, p, &attempt).await,
        }
    };
    let mut outcome = match tokio::time::timeout(timeout, check).await {
        Ok(outcome) => outcome,
        Err(_) => CheckOutcome::down(
            0.0,
            FailureReason::Timeout,
            format!("no answer within {}", human_duration(timeout)),
        ),
    };
    if !own_latency(probe, &outcome) {
        outcome.latency_ms = attempt.elapsed_ms();
    }
    outcome
}

/// Plan a monitor and run one attempt of its check, for one-off checks and tests (the
/// agent plans each monitor once, in the catalog). A spec that does not plan is a
/// `config` outcome naming every error; a push monitor is not probed (it waits for
/// pushes on a running agent), which is a `config` outcome too.
pub async fn run_spec(
    ctx: &CheckContext,
    namespace: &str,
    spec: &MonitorSpec,
    timeout: Duration,
) -> CheckOutcome {
    match Plan::of(namespace, spec) {
        Ok(Plan::Probe(probe)) => run(ctx, &probe, timeout).await,
        Ok(Plan::Push(_)) => CheckOutcome::down(
            0.0,
            FailureReason::Config,
            "a push monitor is not probed: it waits for pushes to a running agent",
        ),
        Err(e) => CheckOutcome::down(0.0, FailureReason::Config, e.to_string()),
    }
}

/// Whether an outcome keeps the latency its checker measured instead of the attempt's
/// duration: a ping that got replies reports the average round-trip time (the attempt
/// also spends the gaps between echo requests), and a WebSocket exchange that got as far
/// as the close handshake reports the time up to the end of the exchange (the bounded
/// wait for the server's Close frame is not the server's responsiveness).
fn own_latency(probe: &Probe, outcome: &CheckOutcome) -> bool {
    let key = match probe {
        Probe::Ping(_) => "rttAvgMs",
        Probe::Websocket(_) => "closeHandshake",
        _ => return false,
    };
    outcome.metadata.contains_key(key) && outcome.latency_ms.is_finite()
}

/// The addresses of `host` (a name or an IP address) with `port`, in the system
/// resolver's order and never empty; a failure is a finished `dns` outcome.
pub(crate) async fn resolve(
    host: &str,
    port: u16,
) -> Result<Vec<std::net::SocketAddr>, CheckOutcome> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| {
            CheckOutcome::down(
                0.0,
                FailureReason::Dns,
                format!("cannot resolve host {host}: {e}"),
            )
        })?
        .collect();
    if addrs.is_empty() {
        return Err(CheckOutcome::down(
            0.0,
            FailureReason::Dns,
            format!("host {host} resolves to no address"),
        ));
    }
    Ok(addrs)
}

/// The clock of one attempt, handed to checkers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempt {
    started: Instant,
    timeout: Duration,
}

impl Attempt {
    fn start(timeout: Duration) -> Self {
        Attempt {
            started: Instant::now(),
            timeout,
        }
    }

    /// Milliseconds since the attempt started.
    pub(crate) fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    /// The attempt's timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A moment shortly before the timeout, by which a checker that is waiting for more
    /// data should stop and report what it has (a tenth of the timeout early, at most 500 ms).
    pub(crate) fn soft_deadline(&self) -> tokio::time::Instant {
        let margin = (self.timeout / 10).min(Duration::from_millis(500));
        tokio::time::Instant::from_std(self.started + self.timeout.saturating_sub(margin))
    }
}

/// A latency bound violated, as a message; `None` when within bounds or unbounded.
pub(crate) fn latency_exceeded(attempt: &Attempt, max_latency_ms: Option<i64>) -> Option<String> {
    let max = max_latency_ms?;
    let took = attempt.elapsed_ms();
    (took > max as f64).then(|| format!("took {took:.0} ms, more than maxLatencyMs {max}"))
}

/// `10s`, `300ms`, `1.5s`.
pub(crate) fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Expiry facts of a DER leaf certificate, relative to `now`; `None` if it does not parse.
pub(crate) fn cert_info(der: &[u8], now: DateTime<Utc>) -> Option<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let expires_at = DateTime::<Utc>::from_timestamp(cert.validity().not_after.timestamp(), 0)?;
    let days_left = (expires_at - now).num_seconds().div_euclid(86_400);
    Some(CertInfo {
        expires_at,
        days_left,
    })
}

/// Text received from a peer, made safe and short for a message: at most `max` characters,
/// control characters escaped, `…` when cut.
pub(crate) fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The errors behind `err`, outermost first. An `io::Error` that wraps another error
/// (as TLS libraries do with `rustls::Error`) yields that error next.
pub(crate) fn error_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        out.push(e);
        if out.len() >= 16 {
            break;
        }
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    out
}

/// The TLS error somewhere behind `err`, if any.
pub(crate) fn find_tls_error<'a>(
    chain: &[&'a (dyn std::error::Error + 'static)],
) -> Option<&'a rustls::Error> {
    chain.iter().find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// Whether an I/O error kind means the peer could not be reached or dropped the connection.
pub(crate) fn is_connect_kind(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | AddrNotAvailable
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// aws-lc-rs, explicitly: the process may hold more than one provider (see crates.md).
fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// The operating system's roots, loaded once; webpki-roots when the system has none.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                tracing::warn!(error = %e, "cannot load some system root certificates");
            }
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                tracing::warn!(
                    "no system root certificates found (install ca-certificates); using the built-in Mozilla roots"
                );
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(store)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(10)), "10s");
        assert_eq!(human_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt(b"HELLO\r\n\x01", 60), "HELLO\\r\\n\\x01");
        assert_eq!(excerpt("abcdef".as_bytes(), 3), "abc…");
        assert_eq!(excerpt(b"\xff", 5), "\u{fffd}");
    }
}
