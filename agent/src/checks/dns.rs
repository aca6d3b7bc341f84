//! The `dns` checker: one lookup of the monitor's record type through hickory-resolver, asking
//! the monitor's `server`, else the settings' `networking.dns.servers` one after the other
//! (each with an equal share of the time left), else the system resolver configuration
//! (`/etc/resolv.conf` with its search list and `ndots`, and `/etc/hosts`, as hickory reads
//! them). hickory sends the query over UDP, retransmits it, and repeats it over TCP when the
//! answer is truncated; it follows CNAME chains. Nothing is cached between checks: every check
//! builds its own resolver, with hickory's cache turned off.
//!
//! A name given to a server is queried as absolute (no search domains); for PTR an IP address
//! is turned into its `in-addr.arpa`/`ip6.arpa` name. NXDOMAIN and empty answers are `dns`,
//! SERVFAIL, REFUSED and other error codes are `dnsServfail` (the next server is tried first).
//! Expected values are compared case-insensitively with trailing dots ignored, except TXT,
//! whose joined text must match exactly.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    ServerOrderingStrategy,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::{
    DnsUdpSocket, RuntimeProvider, TokioHandle, TokioRuntimeProvider, TokioTime,
};
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use kubekuma_crds::monitor::{DnsRecordType, DnsTarget, MonitorSpec};
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use tokio::time::Instant;

use super::{Attempt, CheckContext, excerpt, human_duration, is_connect_kind, latency_exceeded};
use crate::findings::Sink;
use crate::rules::server_ok;

/// Port of a server given without one.
const DNS_PORT: u16 = 53;
/// UDP payload size announced with EDNS (the DNS flag day 2020 recommendation).
const EDNS_PAYLOAD: u16 = 1232;
/// Most characters of an answer quoted in a message.
const EXCERPT_CHARS: usize = 120;
/// Most records kept in the outcome's metadata.
const MAX_METADATA_RECORDS: usize = 50;
/// With at least this much time for one server, hickory may send the query a second time
/// after a failed try (it retransmits over UDP within a try anyway).
const RETRY_BUDGET: Duration = Duration::from_secs(2);

/// A `dns` monitor's target and latency bound, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsPlan {
    /// The target: the domain is a domain name (or, for PTR, an address), the server an
    /// address.
    target: DnsTarget,
    /// `successCriteria.dns.maxLatencyMs`.
    max_latency_ms: Option<i64>,
}

/// The plan of a `dns` monitor: `spec.target.dns` checked.
pub(crate) fn plan(spec: &MonitorSpec, sink: &mut Sink<'_>) -> Option<DnsPlan> {
    let d = spec.target.dns.as_ref()?;
    let domain = d.domain.trim_end_matches('.');
    let ptr_by_address =
        d.record_type == Some(DnsRecordType::PTR) && domain.parse::<std::net::IpAddr>().is_ok();
    if ptr_by_address {
        // An address to look up in in-addr.arpa / ip6.arpa.
    } else if domain.is_empty()
        || domain.len() > 253
        || !domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
    {
        sink.error(
            "spec.target.dns.domain",
            format!("must be a domain name, got {:?}", d.domain),
        );
    }
    if let Some(s) = &d.server {
        server_ok(sink, "spec.target.dns.server", s);
    }
    Some(DnsPlan {
        target: d.clone(),
        max_latency_ms: spec
            .success_criteria
            .as_ref()
            .and_then(|c| c.dns.as_ref())
            .and_then(|c| c.max_latency_ms),
    })
}

/// Run one `dns` check.
pub(crate) async fn check(ctx: &CheckContext, plan: &DnsPlan, attempt: &Attempt) -> CheckOutcome {
    let (target, max_latency) = (&plan.target, plan.max_latency_ms);
    match probe(ctx, target, attempt).await {
        Ok(up) => match latency_exceeded(attempt, max_latency) {
            Some(msg) => {
                let mut down = CheckOutcome::down(
                    0.0,
                    FailureReason::Assertion,
                    format!("{} {}: {msg}", shown_domain(target), record_type(target)),
                );
                down.metadata = up.metadata;
                down
            }
            None => up,
        },
        Err(down) => down,
    }
}

async fn probe(
    ctx: &CheckContext,
    target: &DnsTarget,
    attempt: &Attempt,
) -> Result<CheckOutcome, CheckOutcome> {
    let rtype = record_type(target);
    let shown = shown_domain(target);
    let answer = query(ctx, target, rtype, &shown, attempt).await?;
    let with_server = |o: CheckOutcome| o.with("server", answer.server.clone());

    // A CNAME chain hickory followed ends at a name that is not one of those asked.
    let lookup = match answer.records {
        Ok(lookup) => lookup,
        Err(negative) => {
            let last = negative.query.name();
            let cname =
                (!answer.asked.iter().any(|a| a.eq_ignore_root(last))).then(|| name_text(last));
            return Err(with_server(negative_outcome(
                &shown,
                rtype,
                negative.response_code,
                cname,
            )));
        }
    };
    let cname = cname_target(lookup.answers());
    if lookup.message().metadata.response_code == ResponseCode::NXDomain {
        return Err(with_server(negative_outcome(
            &shown,
            rtype,
            ResponseCode::NXDomain,
            cname,
        )));
    }
    let mut values: Vec<Value> = lookup
        .answers()
        .iter()
        .filter(|r| r.record_type() == rtype)
        .filter_map(Value::of)
        .collect();
    values.sort_by(|a, b| a.shown.cmp(&b.shown));
    values.dedup_by(|a, b| a.shown == b.shown);
    if values.is_empty() {
        return Err(with_server(negative_outcome(
            &shown,
            rtype,
            ResponseCode::NoError,
            cname,
        )));
    }
    judge(target, rtype, &shown, &values, &answer.server)
}

/// Asks the configured servers, or the system resolver when there are none (a relative
/// name then goes through its search list).
async fn query(
    ctx: &CheckContext,
    target: &DnsTarget,
    rtype: RecordType,
    shown: &str,
    attempt: &Attempt,
) -> Result<Answer, CheckOutcome> {
    let config = |msg: String| CheckOutcome::down(0.0, FailureReason::Config, msg);
    let name = query_name(&target.domain, rtype).map_err(config)?;
    let servers = servers(ctx, target).map_err(config)?;

    if servers.is_empty() {
        let system = system_resolver(attempt).await.map_err(config)?;
        // The system resolver applies its search list to a relative name.
        let name = if rtype == RecordType::PTR || target.domain.trim().ends_with('.') {
            name
        } else {
            relative(name)
        };
        ask_system(system, name, rtype, shown, attempt).await
    } else {
        ask(&servers, &name, rtype, shown, attempt).await
    }
}

/// The records found (sorted, without duplicates, at least one) against the expected
/// values: down with what is missing, or up; both carry the server and the records.
fn judge(
    target: &DnsTarget,
    rtype: RecordType,
    shown: &str,
    values: &[Value],
    server: &str,
) -> Result<CheckOutcome, CheckOutcome> {
    let found = values
        .iter()
        .map(|v| v.shown.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let records: Vec<String> = values
        .iter()
        .take(MAX_METADATA_RECORDS)
        .map(|v| v.shown.clone())
        .collect();
    let finish = |o: CheckOutcome| {
        o.with("server", server.to_string())
            .with("records", records.clone())
    };

    let expected = target.expected.as_ref().map(|e| e.values.as_slice());
    let missing: Vec<&str> = expected
        .unwrap_or_default()
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .filter(|e| {
            let want = normalise(e, rtype);
            !values.iter().any(|v| v.keys.contains(&want))
        })
        .collect();
    if !missing.is_empty() {
        let msg = format!(
            "expected {rtype} {} for {shown}, found {}",
            excerpt(missing.join(", ").as_bytes(), EXCERPT_CHARS),
            excerpt(found.as_bytes(), EXCERPT_CHARS)
        );
        return Err(finish(CheckOutcome::down(
            0.0,
            FailureReason::Assertion,
            msg,
        )));
    }

    let mut up = finish(CheckOutcome::up(0.0));
    up.message = Some(format!(
        "{rtype} {}",
        excerpt(found.as_bytes(), EXCERPT_CHARS)
    ));
    Ok(up)
}

/// NXDOMAIN, or no records of the type (NOERROR without an answer), possibly at the end of a
/// CNAME chain: both are `dns`.
fn negative_outcome(
    shown: &str,
    rtype: RecordType,
    code: ResponseCode,
    cname: Option<String>,
) -> CheckOutcome {
    let msg = match (code == ResponseCode::NXDomain, cname) {
        (true, Some(t)) => format!("{shown}: CNAME {t} does not exist (NXDOMAIN)"),
        (true, None) => format!("{shown}: no such domain (NXDOMAIN)"),
        (false, Some(t)) => format!("no {rtype} records for {shown} (CNAME {t})"),
        (false, None) => format!("no {rtype} records for {shown}"),
    };
    CheckOutcome::down(0.0, FailureReason::Dns, msg)
}

fn record_type(target: &DnsTarget) -> RecordType {
    match target.record_type.unwrap_or(DnsRecordType::A) {
        DnsRecordType::A => RecordType::A,
        DnsRecordType::AAAA => RecordType::AAAA,
        DnsRecordType::CNAME => RecordType::CNAME,
        DnsRecordType::MX => RecordType::MX,
        DnsRecordType::TXT => RecordType::TXT,
        DnsRecordType::NS => RecordType::NS,
        DnsRecordType::SRV => RecordType::SRV,
        DnsRecordType::CAA => RecordType::CAA,
        DnsRecordType::SOA => RecordType::SOA,
        DnsRecordType::PTR => RecordType::PTR,
    }
}

/// The domain as messages show it.
fn shown_domain(target: &DnsTarget) -> String {
    let d = target.domain.trim();
    d.strip_suffix('.').unwrap_or(d).to_string()
}

/// The absolute name to query; for PTR an IP address becomes its reverse name.
fn query_name(domain: &str, rtype: RecordType) -> Result<Name, String> {
    let domain = domain.trim();
    if rtype == RecordType::PTR
        && let Ok(ip) = domain
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
    {
        let mut name = Name::from(ip);
        name.set_fqdn(true);
        return Ok(name);
    }
    if domain.is_empty() || domain == "." {
        return Err("spec.target.dns.domain is empty".into());
    }
    let mut name = Name::from_ascii(domain)
        .map_err(|e| format!("spec.target.dns.domain {domain:?} is not a domain name: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// `name` as a relative name, for the system resolver's search list and `ndots`.
fn relative(mut name: Name) -> Name {
    name.set_fqdn(false);
    name
}

/// `ip`, `ip:port`, `[v6]:port`, `[v6]` or bare `v6`.
fn parse_server(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return (addr.port() != 0).then_some(addr);
    }
    let bare = s.strip_prefix('[')?.strip_suffix(']')?;
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
}

/// The servers to ask, in order; none means the system resolver.
fn servers(ctx: &CheckContext, target: &DnsTarget) -> Result<Vec<SocketAddr>, String> {
    let invalid = |field: String, s: &str| {
        format!(
            "{field} must be an IP address or ip:port (e.g. 10.0.0.10 or [::1]:5353), got {s:?}"
        )
    };
    let mut out = Vec::new();
    if let Some(s) = target.server.as_deref().filter(|s| !s.trim().is_empty()) {
        out.push(parse_server(s).ok_or_else(|| invalid("spec.target.dns.server".into(), s))?);
        return Ok(out);
    }
    for (i, s) in ctx.settings().dns_servers.iter().enumerate() {
        let addr = parse_server(s)
            .ok_or_else(|| invalid(format!("KubeKumaSettings networking.dns.servers[{i}]"), s))?;
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

/// What one resolver made of the query.
struct Answer {
    /// Who answered: `ip:port`, or the system resolver.
    server: String,
    /// The records, or the negative answer (NXDOMAIN, or NOERROR without records).
    records: Result<Lookup, NoRecords>,
    /// The names asked before any CNAME: the domain, and for the system resolver its forms
    /// with the search domains.
    asked: Vec<Name>,
}

/// Resolver options for one check: no cache, no hosts file, and tries that fit in `share`.
fn options(mut opts: ResolverOpts, share: Duration) -> ResolverOpts {
    opts.attempts = usize::from(share >= RETRY_BUDGET);
    opts.timeout = share / (u32::from(share >= RETRY_BUDGET) + 1);
    opts.cache_size = 0;
    opts.positive_max_ttl = Some(Duration::ZERO);
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts.edns_payload_len = EDNS_PAYLOAD;
    opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
    opts
}

/// A resolver asking only `server`, over UDP and TCP.
fn server_resolver(server: SocketAddr, share: Duration) -> Result<Resolver<Runtime>, NetError> {
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
        .into_iter()
        .map(|mut c| {
            c.port = server.port();
            c
        })
        .collect();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        server.ip(),
        true,
        connections,
    )]);
    let mut opts = options(ResolverOpts::default(), share);
    opts.use_hosts_file = ResolveHosts::Never;
    opts.num_concurrent_reqs = 1;
    Resolver::builder_with_config(config, Runtime::default())
        .with_options(opts)
        .build()
}

/// The system resolver for one check, as hickory's `Resolver::builder` makes it (its
/// `system_conf` reading `/etc/resolv.conf`, the hosts file read when built), with the
/// check's time budget and without a cache.
struct System {
    resolver: Resolver<Runtime>,
    /// `system resolver (10.0.0.10, …)`.
    label: String,
    search: Vec<Name>,
}

async fn system_resolver(attempt: &Attempt) -> Result<System, String> {
    let share = attempt
        .soft_deadline()
        .saturating_duration_since(Instant::now());
    let built = tokio::task::spawn_blocking(move || {
        let (config, opts) = hickory_resolver::system_conf::read_system_conf()?;
        let label = format!(
            "system resolver ({})",
            config
                .name_servers()
                .iter()
                .map(|ns| ns.ip.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let search = config
            .domain()
            .into_iter()
            .chain(config.search())
            .cloned()
            .collect();
        let resolver = Resolver::builder_with_config(config, Runtime::default())
            .with_options(options(opts, share))
            .build()?;
        Ok::<_, NetError>(System {
            resolver,
            label,
            search,
        })
    })
    .await
    .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?;
    built.map_err(|e| format!("cannot read the system resolver configuration: {e}"))
}

/// Ask the servers in turn until one answers NOERROR or NXDOMAIN. Each server gets its own
/// resolver and an equal share of the time left before the attempt's soft deadline.
async fn ask(
    servers: &[SocketAddr],
    name: &Name,
    rtype: RecordType,
    shown: &str,
    attempt: &Attempt,
) -> Result<Answer, CheckOutcome> {
    let deadline = attempt.soft_deadline();
    let mut failures: Vec<(String, Failure)> = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            break;
        }
        let share = left / u32::try_from(servers.len() - i).unwrap_or(u32::MAX);
        let outcome = match server_resolver(*server, share) {
            Ok(resolver) => lookup(&resolver, name.clone(), rtype, now + share).await,
            Err(e) => Err(Failure::Protocol(format!("cannot set up a resolver: {e}"))),
        };
        match outcome {
            Ok(records) => {
                return Ok(Answer {
                    server: server.to_string(),
                    records,
                    asked: vec![name.clone()],
                });
            }
            Err(f) => failures.push((server.to_string(), f)),
        }
    }
    if failures.is_empty() {
        let list = servers
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(CheckOutcome::down(
            0.0,
            FailureReason::Timeout,
            format!("no time left to ask {list}"),
        ));
    }
    Err(failed(failures, &format!("{shown} {rtype}")))
}

/// Ask the system resolver (which tries its name servers and search domains itself).
async fn ask_system(
    system: System,
    name: Name,
    rtype: RecordType,
    shown: &str,
    attempt: &Attempt,
) -> Result<Answer, CheckOutcome> {
    let mut asked = vec![name.clone()];
    if !name.is_fqdn() {
        asked.extend(
            system
                .search
                .iter()
                .filter_map(|s| name.clone().append_domain(s).ok()),
        );
    }
    match lookup(&system.resolver, name, rtype, attempt.soft_deadline()).await {
        Ok(records) => Ok(Answer {
            server: system.label,
            records,
            asked,
        }),
        Err(f) => Err(failed(vec![(system.label, f)], &format!("{shown} {rtype}"))),
    }
}

/// The check's outcome when no server gave a usable answer: the most telling failure's
/// reason, every failure in the message.
fn failed(failures: Vec<(String, Failure)>, what: &str) -> CheckOutcome {
    let msg = failures
        .iter()
        .map(|(s, f)| f.describe(s, what))
        .collect::<Vec<_>>()
        .join("; ");
    let Some(worst) = failures.iter().max_by_key(|(_, f)| f.weight()) else {
        return CheckOutcome::down(0.0, FailureReason::Timeout, msg);
    };
    let mut down = CheckOutcome::down(0.0, worst.1.reason(), msg);
    if failures.len() == 1 {
        down = down.with("server", worst.0.clone());
    }
    down
}

/// One lookup, bounded by `deadline` (hickory's own timeouts are set to fit in it too).
async fn lookup(
    resolver: &Resolver<Runtime>,
    name: Name,
    rtype: RecordType,
    deadline: Instant,
) -> Result<Result<Lookup, NoRecords>, Failure> {
    let waited = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout_at(deadline, resolver.lookup(name, rtype)).await {
        Err(_) => Err(Failure::Timeout(waited)),
        Ok(Ok(lookup)) => Ok(Ok(lookup)),
        Ok(Err(e)) => classify(e, waited),
    }
}

/// What a hickory error means for the check. hickory turns the response codes into errors
/// (`DnsError::from_response` in hickory-net's `error.rs`): NXDOMAIN and NOERROR without an
/// answer become `NoRecordsFound` carrying the code, SERVFAIL, REFUSED and the other error
/// codes `ResponseCode`.
fn classify(e: NetError, waited: Duration) -> Result<Result<Lookup, NoRecords>, Failure> {
    Err(match e {
        NetError::Dns(DnsError::NoRecordsFound(negative)) => return Ok(Err(negative)),
        NetError::Dns(DnsError::ResponseCode(code)) => Failure::Rcode(code),
        NetError::Timeout => Failure::Timeout(waited),
        NetError::Io(e) if e.kind() == io::ErrorKind::TimedOut => Failure::Timeout(waited),
        // TCP is only used after a truncated UDP answer; a failure there is `Truncated`.
        NetError::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Failure::Connect(format!("over UDP: nothing answers on this port ({e})"))
        }
        NetError::Io(e) if is_connect_kind(e.kind()) => Failure::Connect(format!("over UDP: {e}")),
        NetError::Truncated => Failure::Connect(
            "over TCP (the UDP answer was truncated and asking again over TCP failed)".into(),
        ),
        // What the pool reports when every server failed with an I/O error: it keeps the
        // error it started with over I/O errors (`most_specific` in hickory-resolver's
        // `name_server_pool.rs`). UDP is tried first, so that is where it failed.
        NetError::NoConnections => Failure::Connect(
            "over UDP: no connection could be made (refused or unreachable)".into(),
        ),
        NetError::Proto(e) => Failure::Protocol(e.to_string()),
        other => Failure::Protocol(other.to_string()),
    })
}

/// Why one server gave no usable answer.
enum Failure {
    /// No answer in time.
    Timeout(Duration),
    /// The server could not be reached.
    Connect(String),
    /// The answer did not parse or did not fit the query.
    Protocol(String),
    /// An error response code.
    Rcode(ResponseCode),
}

impl Failure {
    /// How much a failure says about the server: the most telling one is reported.
    fn weight(&self) -> u8 {
        match self {
            Failure::Timeout(_) => 0,
            Failure::Connect(_) => 1,
            Failure::Protocol(_) => 2,
            Failure::Rcode(_) => 3,
        }
    }

    fn reason(&self) -> FailureReason {
        match self {
            Failure::Timeout(_) => FailureReason::Timeout,
            Failure::Connect(_) => FailureReason::Connect,
            Failure::Protocol(_) => FailureReason::Protocol,
            Failure::Rcode(_) => FailureReason::DnsServfail,
        }
    }

    fn describe(&self, server: &str, query: &str) -> String {
        match self {
            Failure::Timeout(d) => format!("no answer from {server} within {}", human_duration(*d)),
            Failure::Connect(e) => format!("cannot reach {server} {e}"),
            Failure::Protocol(e) => format!("bad answer from {server}: {e}"),
            Failure::Rcode(code) => format!("{server} answered {} for {query}", rcode_name(*code)),
        }
    }
}

/// hickory's Tokio runtime, except that its UDP sockets are connected to the server: Linux
/// reports an ICMP "port unreachable" only to a connected socket, so a closed port is
/// "connection refused" at once instead of a timeout. hickory asks for unconnected sockets
/// because it passes the server's address with each datagram (hickory-net `runtime.rs`,
/// `RuntimeProvider::bind_udp`); each socket it binds only ever talks to that one server
/// (`NextRandomUdpSocket` in `udp/udp_stream.rs`), which the connected socket ensures.
#[derive(Clone, Default)]
struct Runtime(TokioRuntimeProvider);

type TokioTcp = <TokioRuntimeProvider as RuntimeProvider>::Tcp;

impl RuntimeProvider for Runtime {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = ConnectedUdp;
    type Tcp = TokioTcp;

    fn create_handle(&self) -> Self::Handle {
        self.0.create_handle()
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<TokioTcp>>>> {
        self.0.connect_tcp(server_addr, bind_addr, timeout)
    }

    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<ConnectedUdp>>>> {
        Box::pin(async move {
            let socket = tokio::net::UdpSocket::bind(local_addr).await?;
            socket.connect(server_addr).await?;
            Ok(ConnectedUdp {
                socket,
                peer: server_addr,
            })
        })
    }
}

/// A UDP socket connected to its one server.
struct ConnectedUdp {
    socket: tokio::net::UdpSocket,
    peer: SocketAddr,
}

/// A boxed future, as `async_trait` (which `DnsUdpSocket` is declared with) expects.
type BoxIo<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

impl DnsUdpSocket for ConnectedUdp {
    type Time = TokioTime;

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut read = tokio::io::ReadBuf::new(buf);
        ready!(self.socket.poll_recv(cx, &mut read))?;
        Poll::Ready(Ok((read.filled().len(), self.peer)))
    }

    /// hickory's UDP client waits with this one. Tokio's `recv` also wakes on the socket's
    /// error state, which its `poll_recv` (read readiness only) does not: without it the
    /// "connection refused" would never be seen.
    fn recv_from<'life0, 'life1, 'async_trait>(
        &'life0 self,
        buf: &'life1 mut [u8],
    ) -> BoxIo<'async_trait, (usize, SocketAddr)>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { Ok((self.socket.recv(buf).await?, self.peer)) })
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        _target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.socket.poll_send(cx, buf)
    }
}

/// The last target of the CNAME chain in the answer, if any.
fn cname_target(answers: &[Record]) -> Option<String> {
    answers.iter().rev().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(name_text(&c.0)),
        _ => None,
    })
}

/// DNS names as shown and compared: ASCII, lowercase, no trailing dot.
fn name_text(name: &Name) -> String {
    let s = name.to_ascii().to_ascii_lowercase();
    match s.strip_suffix('.') {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => s,
    }
}

/// One record of the answer: how it is shown, and the normalised forms an expected value
/// may take to match it.
struct Value {
    shown: String,
    keys: Vec<String>,
}

impl Value {
    fn of(record: &Record) -> Option<Value> {
        let rtype = record.record_type();
        let (shown, forms): (String, Vec<String>) = match &record.data {
            RData::A(a) => (a.0.to_string(), vec![]),
            RData::AAAA(a) => (a.0.to_string(), vec![]),
            RData::CNAME(n) => (name_text(&n.0), vec![]),
            RData::NS(n) => (name_text(&n.0), vec![]),
            RData::PTR(n) => (name_text(&n.0), vec![]),
            RData::MX(mx) => {
                let exchange = name_text(&mx.exchange);
                (format!("{} {exchange}", mx.preference), vec![exchange])
            }
            RData::SRV(srv) => {
                let target = name_text(&srv.target);
                (
                    format!("{} {} {} {target}", srv.priority, srv.weight, srv.port),
                    vec![target],
                )
            }
            RData::CAA(caa) => {
                let value = String::from_utf8_lossy(&caa.value).into_owned();
                (
                    format!("{} {} \"{value}\"", caa.flags(), caa.tag),
                    vec![format!("{} {value}", caa.tag), value],
                )
            }
            RData::SOA(soa) => {
                let mname = name_text(&soa.mname);
                (
                    format!(
                        "{mname} {} {} {} {} {} {}",
                        name_text(&soa.rname),
                        soa.serial,
                        soa.refresh,
                        soa.retry,
                        soa.expire,
                        soa.minimum
                    ),
                    vec![mname],
                )
            }
            RData::TXT(txt) => {
                let text: Vec<u8> = txt
                    .txt_data
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                let text = String::from_utf8_lossy(&text).into_owned();
                let keys = vec![normalise(&text, rtype)];
                return Some(Value {
                    shown: format!("\"{text}\""),
                    keys,
                });
            }
            _ => return None,
        };
        let keys = std::iter::once(shown.as_str())
            .chain(forms.iter().map(String::as_str))
            .map(|f| normalise(f, rtype))
            .collect();
        Some(Value { shown, keys })
    }
}

/// An answer or expected value in comparable form. TXT: trimmed, one pair of surrounding
/// quotes dropped, otherwise exact. Others: words lowercased, quotes and trailing dots
/// dropped, IP addresses in canonical form.
fn normalise(value: &str, rtype: RecordType) -> String {
    let value = value.trim();
    if rtype == RecordType::TXT {
        return value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .to_string();
    }
    value
        .split_whitespace()
        .map(|word| {
            let word = word.trim_matches('"');
            match word.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => {
                    let w = word.to_ascii_lowercase();
                    match w.strip_suffix('.') {
                        Some(t) if !t.is_empty() => t.to_string(),
                        _ => w,
                    }
                }
            }
        })
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The mnemonic of a response code.
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("response code {}", u16::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_and_without_port() {
        let p = |s: &str| parse_server(s).map(|a| a.to_string());
        assert_eq!(p("10.0.0.10").as_deref(), Some("10.0.0.10:53"));
        assert_eq!(p(" 10.0.0.10:5353 ").as_deref(), Some("10.0.0.10:5353"));
        assert_eq!(p("::1").as_deref(), Some("[::1]:53"));
        assert_eq!(p("[::1]").as_deref(), Some("[::1]:53"));
        assert_eq!(p("[::1]:5353").as_deref(), Some("[::1]:5353"));
        assert_eq!(p("dns.example.com"), None);
        assert_eq!(p("10.0.0.10:0"), None);
        assert_eq!(p("10.0.0.10:99999"), None);
    }

    #[test]
    fn ptr_names_come_from_addresses() {
        let n = |d: &str, t| query_name(d, t).map(|n| n.to_ascii());
        assert_eq!(
            n("192.0.2.10", RecordType::PTR).as_deref(),
            Ok("10.2.0.192.in-addr.arpa.")
        );
        assert_eq!(
            n("2001:db8::1", RecordType::PTR).as_deref(),
            Ok("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.")
        );
        assert_eq!(
            n("10.2.0.192.in-addr.arpa", RecordType::PTR).as_deref(),
            Ok("10.2.0.192.in-addr.arpa.")
        );
        assert_eq!(
            n("_sip._tcp.Example.com.", RecordType::SRV).as_deref(),
            Ok("_sip._tcp.Example.com.")
        );
        assert!(query_name("", RecordType::A).is_err());
    }

    #[test]
    fn values_normalise() {
        assert_eq!(
            normalise(" 10  Mail.Example.COM. ", RecordType::MX),
            "10 mail.example.com"
        );
        assert_eq!(normalise("2001:DB8:0::1", RecordType::AAAA), "2001:db8::1");
        assert_eq!(
            normalise("0 issue \"LetsEncrypt.org\"", RecordType::CAA),
            "0 issue letsencrypt.org"
        );
        assert_eq!(normalise("\"v=spf1 -all\"", RecordType::TXT), "v=spf1 -all");
        assert_eq!(normalise("Token=AbC", RecordType::TXT), "Token=AbC");
        assert_eq!(normalise(".", RecordType::NS), ".");
    }

    #[test]
    fn resolvers_have_no_cache_and_fit_their_time() {
        let short = options(ResolverOpts::default(), Duration::from_millis(900));
        assert_eq!(short.cache_size, 0);
        assert_eq!(short.positive_max_ttl, Some(Duration::ZERO));
        assert_eq!(short.negative_max_ttl, Some(Duration::ZERO));
        assert_eq!(
            (short.attempts, short.timeout),
            (0, Duration::from_millis(900))
        );
        assert_eq!(short.edns_payload_len, EDNS_PAYLOAD);
        let long = options(ResolverOpts::default(), Duration::from_secs(9));
        assert_eq!(
            (long.attempts, long.timeout),
            (1, Duration::from_millis(4500))
        );
    }

    #[test]
    fn the_system_resolver_keeps_the_search_list() {
        // What the system path keeps from resolv.conf: ndots and the search list, applied
        // to the relative name; the time budget and the cache are the check's.
        let (config, opts) = hickory_resolver::system_conf::parse_resolv_conf(
            "nameserver 10.0.0.10\nsearch svc.cluster.local cluster.local\noptions ndots:5\n",
        )
        .unwrap();
        let opts = options(opts, Duration::from_secs(1));
        assert_eq!(opts.ndots, 5);
        assert_eq!(opts.cache_size, 0);
        assert_eq!(config.search().len(), 2);
        let name = relative(query_name("web", RecordType::A).unwrap());
        assert!(!name.is_fqdn());
        let searched = name.append_domain(&config.search()[0]).unwrap();
        assert_eq!(searched.to_ascii(), "web.svc.cluster.local.");
    }

    #[test]
    fn rcodes_have_their_mnemonics() {
        assert_eq!(rcode_name(ResponseCode::ServFail), "SERVFAIL");
        assert_eq!(rcode_name(ResponseCode::Refused), "REFUSED");
        assert_eq!(rcode_name(ResponseCode::BADCOOKIE), "response code 23");
    }
}
