//! The `dns` checker: one query of the monitor's record type, sent over UDP (retransmitted
//! until the attempt's soft deadline, repeated over TCP when the answer is truncated) to the
//! monitor's `server`, else the settings' `networking.dns.servers` in order, else the
//! name servers of `/etc/resolv.conf`. Nothing is cached between checks.
//!
//! The name is always queried as absolute (no search domains); for PTR an IP address is
//! turned into its `in-addr.arpa`/`ip6.arpa` name. The response code decides the reason:
//! NXDOMAIN and empty answers are `dns`, SERVFAIL, REFUSED and other error codes are
//! `dnsServfail` (the next server is tried first). Expected values are compared
//! case-insensitively with trailing dots ignored, except TXT, whose joined text must match
//! exactly.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use kubekuma_crds::monitor::{DnsRecordType, DnsTarget, MonitorSpec};
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::{Attempt, CheckContext, excerpt, human_duration, is_connect_kind, latency_exceeded};

/// Port of a server given without one.
const DNS_PORT: u16 = 53;
/// UDP payload size announced with EDNS (the DNS flag day 2020 recommendation).
const EDNS_PAYLOAD: u16 = 1232;
/// Most characters of an answer quoted in a message.
const EXCERPT_CHARS: usize = 120;
/// Most records kept in the outcome's metadata.
const MAX_METADATA_RECORDS: usize = 50;
/// Shortest and longest pause before a UDP query is sent again (a third of the time the
/// server has, within these bounds).
const MIN_RETRANSMIT: Duration = Duration::from_millis(100);
const MAX_RETRANSMIT: Duration = Duration::from_secs(2);

/// Run one `dns` check.
pub(crate) async fn check(
    ctx: &CheckContext,
    _namespace: &str,
    spec: &MonitorSpec,
    attempt: &Attempt,
) -> CheckOutcome {
    let Some(target) = spec.target.dns.as_ref() else {
        return CheckOutcome::down(
            0.0,
            FailureReason::Config,
            "spec.target.dns is missing for a dns monitor",
        );
    };
    let max_latency = spec
        .success_criteria
        .as_ref()
        .and_then(|c| c.dns.as_ref())
        .and_then(|c| c.max_latency_ms);
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
    let config = |msg: String| CheckOutcome::down(0.0, FailureReason::Config, msg);
    let rtype = record_type(target);
    let shown = shown_domain(target);
    let name = query_name(&target.domain, rtype).map_err(config)?;
    let servers = servers(ctx, target).await.map_err(config)?;
    let query = Query::query(name, rtype);

    let (server, response) = ask(&servers, &query, &shown, attempt).await?;
    let with_server = |o: CheckOutcome| o.with("server", server.to_string());

    let cname = cname_target(&response);
    if response.metadata.response_code == ResponseCode::NXDomain {
        let msg = match cname {
            Some(t) => format!("{shown}: CNAME {t} does not exist (NXDOMAIN)"),
            None => format!("{shown}: no such domain (NXDOMAIN)"),
        };
        return Err(with_server(CheckOutcome::down(
            0.0,
            FailureReason::Dns,
            msg,
        )));
    }
    let mut values: Vec<Value> = response
        .answers
        .iter()
        .filter(|r| r.record_type() == rtype)
        .filter_map(Value::of)
        .collect();
    values.sort_by(|a, b| a.shown.cmp(&b.shown));
    values.dedup_by(|a, b| a.shown == b.shown);
    if values.is_empty() {
        let msg = match cname {
            Some(t) => format!("no {rtype} records for {shown} (CNAME {t})"),
            None => format!("no {rtype} records for {shown}"),
        };
        return Err(with_server(CheckOutcome::down(
            0.0,
            FailureReason::Dns,
            msg,
        )));
    }

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
    let finish = |o: CheckOutcome| with_server(o).with("records", records.clone());

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

/// The servers to ask, in order.
async fn servers(ctx: &CheckContext, target: &DnsTarget) -> Result<Vec<SocketAddr>, String> {
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
    if !out.is_empty() {
        return Ok(out);
    }
    let system = tokio::task::spawn_blocking(hickory_resolver::system_conf::read_system_conf)
        .await
        .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
        .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?;
    for ns in system.0.name_servers() {
        let addr = SocketAddr::new(ns.ip, DNS_PORT);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    if out.is_empty() {
        return Err(
            "no DNS server: none given, none in the settings, none in /etc/resolv.conf".into(),
        );
    }
    Ok(out)
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

    fn describe(&self, server: SocketAddr, query: &str) -> String {
        match self {
            Failure::Timeout(d) => format!("no answer from {server} within {}", human_duration(*d)),
            Failure::Connect(e) => format!("cannot reach {server} {e}"),
            Failure::Protocol(e) => format!("bad answer from {server}: {e}"),
            Failure::Rcode(code) => format!("{server} answered {} for {query}", rcode_name(*code)),
        }
    }
}

/// Ask the servers in turn until one answers NOERROR or NXDOMAIN. Each server gets an
/// equal share of the time left before the attempt's soft deadline.
async fn ask(
    servers: &[SocketAddr],
    query: &Query,
    shown: &str,
    attempt: &Attempt,
) -> Result<(SocketAddr, Message), CheckOutcome> {
    let deadline = attempt.soft_deadline();
    let mut failures: Vec<(SocketAddr, Failure)> = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            break;
        }
        let share = left / u32::try_from(servers.len() - i).unwrap_or(u32::MAX);
        match exchange(*server, query, now + share).await {
            Ok(m)
                if matches!(
                    m.metadata.response_code,
                    ResponseCode::NoError | ResponseCode::NXDomain
                ) =>
            {
                return Ok((*server, m));
            }
            Ok(m) => failures.push((*server, Failure::Rcode(m.metadata.response_code))),
            Err(f) => failures.push((*server, f)),
        }
    }
    let what = format!("{shown} {}", query.query_type());
    let Some(worst) = failures.iter().max_by_key(|(_, f)| f.weight()) else {
        return Err(CheckOutcome::down(
            0.0,
            FailureReason::Timeout,
            format!("no time left to ask {}", list(servers)),
        ));
    };
    let msg = failures
        .iter()
        .map(|(s, f)| f.describe(*s, &what))
        .collect::<Vec<_>>()
        .join("; ");
    let mut down = CheckOutcome::down(0.0, worst.1.reason(), msg);
    if failures.len() == 1 {
        down = down.with("server", worst.0.to_string());
    }
    Err(down)
}

fn list(servers: &[SocketAddr]) -> String {
    servers
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One query to one server: UDP, then TCP when the UDP answer is truncated.
async fn exchange(
    server: SocketAddr,
    query: &Query,
    deadline: Instant,
) -> Result<Message, Failure> {
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    request.set_edns(edns);
    let id = request.metadata.id;
    let bytes = request
        .to_vec()
        .map_err(|e| Failure::Protocol(format!("cannot encode the query: {e}")))?;
    let started = Instant::now();
    let answer = udp(server, &bytes, id, query, deadline, started).await?;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    tcp(server, &bytes, id, query, deadline, started).await
}

async fn udp(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    query: &Query,
    deadline: Instant,
    started: Instant,
) -> Result<Message, Failure> {
    let connect = |e: std::io::Error| Failure::Connect(format!("over UDP: {e}"));
    let bind: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.map_err(connect)?;
    // Connected, so that an ICMP "port unreachable" comes back as an error.
    sock.connect(server).await.map_err(connect)?;
    let interval =
        (deadline.saturating_duration_since(started) / 3).clamp(MIN_RETRANSMIT, MAX_RETRANSMIT);
    let mut buf = vec![0u8; 65_535];
    loop {
        sock.send(request).await.map_err(connect)?;
        let resend = (Instant::now() + interval).min(deadline);
        loop {
            match tokio::time::timeout_at(resend, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) if is_connect_kind(e.kind()) => {
                    return Err(Failure::Connect(format!(
                        "over UDP: nothing answers on this port ({e})"
                    )));
                }
                Ok(Err(e)) => return Err(connect(e)),
                Ok(Ok(n)) => {
                    let answer = Message::from_vec(&buf[..n])
                        .map_err(|e| Failure::Protocol(format!("malformed answer: {e}")))?;
                    // A late answer to nothing we asked: keep waiting.
                    if fits(&answer, id, query) {
                        return Ok(answer);
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Failure::Timeout(
                deadline.saturating_duration_since(started),
            ));
        }
    }
}

async fn tcp(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    query: &Query,
    deadline: Instant,
    started: Instant,
) -> Result<Message, Failure> {
    let timeout = || Failure::Timeout(deadline.saturating_duration_since(started));
    let connect = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            Failure::Timeout(deadline.saturating_duration_since(started))
        } else {
            Failure::Connect(format!("over TCP (the UDP answer was truncated): {e}"))
        }
    };
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.map_err(connect)?;
        let len = u16::try_from(request.len())
            .map_err(|_| Failure::Protocol("query too long for TCP".into()))?;
        let mut framed = Vec::with_capacity(request.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(request);
        stream.write_all(&framed).await.map_err(connect)?;
        loop {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.map_err(connect)?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await.map_err(connect)?;
            let answer = Message::from_vec(&buf)
                .map_err(|e| Failure::Protocol(format!("malformed answer over TCP: {e}")))?;
            if fits(&answer, id, query) {
                return Ok(answer);
            }
        }
    };
    tokio::time::timeout_at(deadline, exchange)
        .await
        .unwrap_or_else(|_| Err(timeout()))
}

/// Whether `answer` answers our query (some servers leave the question out of errors).
fn fits(answer: &Message, id: u16, query: &Query) -> bool {
    answer.metadata.id == id
        && answer.metadata.message_type == MessageType::Response
        && answer.queries.first().is_none_or(|q| {
            q.query_type() == query.query_type() && q.name().eq_ignore_root(query.name())
        })
}

/// The last target of the CNAME chain in the answer, if any.
fn cname_target(answer: &Message) -> Option<String> {
    answer.answers.iter().rev().find_map(|r| match &r.data {
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
    fn rcodes_have_their_mnemonics() {
        assert_eq!(rcode_name(ResponseCode::ServFail), "SERVFAIL");
        assert_eq!(rcode_name(ResponseCode::Refused), "REFUSED");
        assert_eq!(rcode_name(ResponseCode::BADCOOKIE), "response code 23");
    }
}
