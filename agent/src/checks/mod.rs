//! Checkers: one module per monitor type behind the one dispatch match in [`run`].
//!
//! A checker turns one attempt into a [`CheckOutcome`]: a down target is data (`up: false`,
//! a [`FailureReason`] and a message free of secrets), never an `Err`. Adding a monitor
//! type is one new file here plus one arm in [`run`].

mod dns;
mod docker;
mod http;
mod json_query;
mod keyword;
mod kubernetes;
mod ping;
mod push;
mod steam;
mod tcp;
mod websocket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::monitor::{MonitorSpec, MonitorType};
use kubekuma_crds::results::{CertInfo, CheckOutcome, FailureReason};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::catalog::secrets::SecretStore;

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

/// Run one attempt of a monitor's check. Never panics, never returns Err: a down target
/// is a CheckOutcome with up=false, a classified reason and a human message.
///
/// `timeout` bounds the whole attempt (`reason: timeout` when it passes); `latency_ms` is
/// the time the attempt took, except where a checker measures something more telling (see
/// [`own_latency`]).
pub async fn run(
    ctx: &CheckContext,
    namespace: &str,
    spec: &MonitorSpec,
    timeout: Duration,
) -> CheckOutcome {
    let attempt = Attempt::start(timeout);
    let check = async {
        match spec.type_ {
            MonitorType::Http => http::check(ctx, namespace, spec, &attempt).await,
            MonitorType::Tcp => tcp::check(ctx, namespace, spec, &attempt).await,
            MonitorType::Keyword => keyword::check(ctx, namespace, spec, &attempt).await,
            MonitorType::JsonQuery => json_query::check(ctx, namespace, spec, &attempt).await,
            MonitorType::Steam => steam::check(ctx, namespace, spec, &attempt).await,
            MonitorType::Websocket => websocket::check(ctx, namespace, spec, &attempt).await,
            MonitorType::Dns => dns::check(ctx, namespace, spec, &attempt).await,
            MonitorType::Ping => ping::check(ctx, namespace, spec, &attempt).await,
            MonitorType::Push => push::check(ctx, namespace, spec, &attempt).await,
            MonitorType::Kubernetes => kubernetes::check(ctx, namespace, spec, &attempt).await,
            MonitorType::Docker => docker::check(ctx, namespace, spec, &attempt).await,
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
    if !own_latency(spec.type_, &outcome) {
        outcome.latency_ms = attempt.elapsed_ms();
    }
    outcome
}

/// Whether an outcome keeps the latency its checker measured instead of the attempt's
/// duration: a ping that got replies reports the average round-trip time (the attempt
/// also spends the gaps between echo requests), and a WebSocket exchange that got as far
/// as the close handshake reports the time up to the end of the exchange (the bounded
/// wait for the server's Close frame is not the server's responsiveness).
fn own_latency(type_: MonitorType, outcome: &CheckOutcome) -> bool {
    let key = match type_ {
        MonitorType::Ping => "rttAvgMs",
        MonitorType::Websocket => "closeHandshake",
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

/// Accepts any server certificate (`skipTLSVerify`), but still checks the handshake
/// signatures so the peer holds the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
