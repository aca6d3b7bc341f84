//! The `ping` checker: ICMP echo requests (an unprivileged datagram socket first, a raw
//! socket when settings allow), with a TCP connect as fallback where ICMP is not permitted.
//!
//! The requests go out spaced (200 ms apart, closer when `count` would not fit in the
//! timeout) with distinct sequence numbers; each waits for its reply until the attempt's
//! soft deadline. A reply is an echo reply; an ICMP error for a request (destination
//! unreachable, time exceeded) counts as lost, and when no request got a reply the error
//! is the reason (`connect`) rather than a timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kubekuma_crds::monitor::{MonitorSpec, PingCriteria, PingTarget, TcpFallback};

use crate::findings::Sink;
use crate::rules::{host_ok, port, range};
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use surge_ping::{Client, Config, ICMP, IcmpPacket, PingIdentifier, PingSequence, SurgeError};
use tokio::net::TcpStream;

use super::{Attempt, CheckContext, human_duration, resolve};

/// Time between two echo requests of one check, when the timeout leaves room for it.
const SPACING: Duration = Duration::from_millis(200);
/// Payload of each echo request (the 56 bytes `ping` sends by default).
const PAYLOAD: [u8; 56] = [0x4b; 56];
/// The message prefix of a check that fell back to TCP.
const NOT_PERMITTED: &str = "ICMP not permitted here (net.ipv4.ping_group_range / CAP_NET_RAW)";

/// Run a `ping` monitor's check.
pub(crate) async fn check(ctx: &CheckContext, plan: &PingPlan, attempt: &Attempt) -> CheckOutcome {
    let privileged = ctx.settings().ping_privileged;
    let addrs = match resolve(&plan.host, 0).await {
        Ok(addrs) => addrs,
        Err(down) => return down,
    };
    let icmp = open_icmp(addrs[0].ip(), privileged);
    probe(plan, privileged, &addrs, icmp, attempt).await
}

/// The plan of a `ping` monitor: `spec.target.ping` checked.
pub(crate) fn plan(spec: &MonitorSpec, sink: &mut Sink<'_>) -> Option<PingPlan> {
    let target = spec.target.ping.as_ref()?;
    let criteria = spec
        .success_criteria
        .as_ref()
        .and_then(|c| c.ping.clone())
        .unwrap_or_default();
    PingPlan::new(target, criteria, sink)
}

/// A ping target with its defaults filled in and its numbers checked.
#[derive(Clone, Debug, PartialEq)]
pub struct PingPlan {
    /// The host as written, without `[]` around an IPv6 address.
    host: String,
    /// Echo requests to send.
    count: u16,
    /// Port to TCP-connect to when ICMP is not permitted.
    tcp_fallback: Option<u16>,
    criteria: PingCriteria,
}

impl PingPlan {
    fn new(target: &PingTarget, criteria: PingCriteria, sink: &mut Sink<'_>) -> Option<Self> {
        host_ok(sink, "spec.target.ping.host", &target.host);
        range(sink, "spec.target.ping.count", target.count, 1, 100);
        let fallback = target.tcp_fallback.and_then(TcpFallback::port);
        port(sink, "spec.target.ping.tcpFallback", fallback);
        let host = target
            .host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let count = u16::try_from(target.count.unwrap_or(1))
            .ok()
            .filter(|c| (1..=100).contains(c))?;
        let tcp_fallback = match fallback {
            Some(p) => Some(u16::try_from(p).ok().filter(|p| *p != 0)?),
            None => None,
        };
        if host.is_empty() {
            return None;
        }
        Some(PingPlan {
            host,
            count,
            tcp_fallback,
            criteria,
        })
    }

    /// `host`, or `host (address)` when the address says more than the name.
    fn peer(&self, ip: IpAddr) -> String {
        if ip.to_string() == self.host {
            self.host.clone()
        } else {
            format!("{} ({ip})", self.host)
        }
    }
}

/// An ICMP socket, or why there is none.
enum IcmpSocket {
    /// A socket to send echo requests on; `raw` when it is a raw socket.
    Ready { client: Client, raw: bool },
    /// The kernel refused ICMP sockets (or only a raw one was possible and settings
    /// forbid raw sockets).
    NotPermitted,
    /// Opening the socket failed for another reason (no IPv6, no file descriptors, …).
    Failed(std::io::Error),
}

/// Open an ICMP socket for `ip`'s family: the unprivileged datagram socket first, then a
/// raw socket, which is used only when `privileged` is set.
///
/// surge-ping tries the raw socket by itself when the datagram socket is refused; without
/// `privileged` such a raw socket is closed again unused, so a check never sends through a
/// raw socket that settings forbid.
fn open_icmp(ip: IpAddr, privileged: bool) -> IcmpSocket {
    let kind = match ip {
        IpAddr::V4(_) => ICMP::V4,
        IpAddr::V6(_) => ICMP::V6,
    };
    // The default hint is the datagram socket.
    let config = Config::builder().kind(kind).build();
    let dgram = config.sock_type_hint;
    match Client::new(&config) {
        Ok(client) => {
            let raw = client.get_socket().get_type() != dgram;
            if raw && !privileged {
                IcmpSocket::NotPermitted
            } else {
                IcmpSocket::Ready { client, raw }
            }
        }
        Err(e) => classify_open_error(e),
    }
}

/// EPERM/EACCES mean ICMP is not permitted; anything else is a failure of its own.
fn classify_open_error(e: std::io::Error) -> IcmpSocket {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        IcmpSocket::NotPermitted
    } else {
        IcmpSocket::Failed(e)
    }
}

/// Ping `addrs[0]` over `icmp`, or fall back to TCP when ICMP is not permitted.
async fn probe(
    plan: &PingPlan,
    privileged: bool,
    addrs: &[SocketAddr],
    icmp: IcmpSocket,
    attempt: &Attempt,
) -> CheckOutcome {
    let addr = addrs[0];
    let peer = plan.peer(addr.ip());
    match icmp {
        IcmpSocket::Ready { client, raw } => {
            let replies = echo(&client, addr, plan.count, attempt).await;
            verdict(plan, &peer, &replies, attempt)
                .with("address", addr.ip().to_string())
                .with("method", "icmp")
                .with("socket", if raw { "raw" } else { "datagram" })
        }
        IcmpSocket::Failed(e) => CheckOutcome::down(
            0.0,
            FailureReason::Connect,
            format!("cannot open an ICMP socket to ping {peer}: {e}"),
        ),
        IcmpSocket::NotPermitted => match plan.tcp_fallback {
            Some(port) => tcp_fallback(plan, addrs, port, attempt).await,
            None => CheckOutcome::down(0.0, FailureReason::Config, how_to_enable(privileged)),
        },
    }
}

/// Why a check without `tcpFallback` cannot ping, and the ways to let it.
fn how_to_enable(privileged: bool) -> String {
    let raw = if privileged {
        "grant the agent CAP_NET_RAW"
    } else {
        "grant the agent CAP_NET_RAW and set KubeKumaSettings spec.networking.ping.privileged to true"
    };
    format!(
        "ICMP not permitted here: allow unprivileged ICMP sockets for the agent's group with the \
         sysctl net.ipv4.ping_group_range (e.g. \"0 2147483647\"), or {raw}, or set \
         spec.target.ping.tcpFallback to a port to TCP-connect to instead (true for port 443)"
    )
}

/// What became of one echo request.
#[derive(Clone, Debug, PartialEq)]
enum Reply {
    /// An echo reply after this round trip.
    Echo(Duration),
    /// An ICMP error answered the request (`destination unreachable from 192.0.2.1`).
    Error(String),
    /// No answer by the soft deadline.
    Lost,
    /// The request could not be sent (network unreachable, …).
    NotSent(String),
}

/// Send `count` echo requests to `addr`, spaced, and collect what became of each.
async fn echo(client: &Client, addr: SocketAddr, count: u16, attempt: &Attempt) -> Vec<Reply> {
    let deadline = attempt.soft_deadline();
    let start = tokio::time::Instant::now();
    // Leave at least half of the time left for the last request's reply.
    let budget = deadline.saturating_duration_since(start);
    let spacing = SPACING.min(budget / (2 * u32::from(count)));
    let ident = PingIdentifier(rand::random());
    let requests = (0..count).map(|seq| {
        let client = client.clone();
        async move {
            tokio::time::sleep_until(start + spacing * u32::from(seq)).await;
            let mut pinger = client.pinger(addr.ip(), ident).await;
            if let SocketAddr::V6(v6) = addr {
                pinger.scope_id(v6.scope_id());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Reply::Lost;
            }
            pinger.timeout(left);
            match pinger.ping(PingSequence(seq), &PAYLOAD).await {
                Ok((packet, rtt)) => match icmp_error(&packet) {
                    None => Reply::Echo(rtt),
                    Some(error) => Reply::Error(error),
                },
                Err(SurgeError::Timeout { .. }) => Reply::Lost,
                // Sending failed (network unreachable, …).
                Err(SurgeError::IOError(e)) => Reply::NotSent(e.to_string()),
                Err(e) => Reply::NotSent(e.to_string()),
            }
        }
    });
    futures::future::join_all(requests).await
}

/// `None` for an echo reply, else what the ICMP error says and who sent it.
fn icmp_error(packet: &IcmpPacket) -> Option<String> {
    let (what, from) = match packet {
        IcmpPacket::V4(p) => {
            let what = match (p.get_icmp_type().0, p.get_icmp_code().0) {
                (0, _) => return None,
                (3, 0) => "network unreachable".to_string(),
                (3, 1) => "host unreachable".to_string(),
                (3, 13) => "communication administratively prohibited".to_string(),
                (3, code) => format!("destination unreachable (code {code})"),
                (11, _) => "time exceeded".to_string(),
                (ty, code) => format!("ICMP type {ty} code {code}"),
            };
            (what, IpAddr::V4(p.get_source()))
        }
        IcmpPacket::V6(p) => {
            let what = match (p.get_icmpv6_type().0, p.get_icmpv6_code().0) {
                (129, _) => return None,
                (1, 0) => "no route to destination".to_string(),
                (1, 1) => "communication administratively prohibited".to_string(),
                (1, 3) => "address unreachable".to_string(),
                (1, code) => format!("destination unreachable (code {code})"),
                (2, _) => "packet too big".to_string(),
                (3, _) => "time exceeded".to_string(),
                (ty, code) => format!("ICMPv6 type {ty} code {code}"),
            };
            (what, IpAddr::V6(p.get_source()))
        }
    };
    Some(format!("{what} from {from}"))
}

/// Counts and round trips of one check's echo requests.
#[derive(Clone, Debug, PartialEq)]
struct Summary {
    sent: usize,
    received: usize,
    loss_percent: f64,
    /// Min, average and max round trip in milliseconds, when there was a reply.
    rtt_ms: Option<(f64, f64, f64)>,
}

impl Summary {
    fn of(replies: &[Reply]) -> Self {
        let rtts: Vec<f64> = replies
            .iter()
            .filter_map(|r| match r {
                Reply::Echo(rtt) => Some(rtt.as_secs_f64() * 1000.0),
                _ => None,
            })
            .collect();
        let sent = replies.len();
        let received = rtts.len();
        let loss_percent = if sent == 0 {
            100.0
        } else {
            (sent - received) as f64 * 100.0 / sent as f64
        };
        let rtt_ms = (!rtts.is_empty()).then(|| {
            let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
            let max = rtts.iter().copied().fold(0.0, f64::max);
            let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
            (min, avg, max)
        });
        Summary {
            sent,
            received,
            loss_percent,
            rtt_ms,
        }
    }

    /// `5/5 replies, 0% loss, rtt min/avg/max 0.051/0.067/0.102 ms`.
    fn text(&self) -> String {
        let mut text = format!(
            "{}/{} {}, {}% loss",
            self.received,
            self.sent,
            if self.sent == 1 { "reply" } else { "replies" },
            percent(self.loss_percent)
        );
        if let Some((min, avg, max)) = self.rtt_ms {
            text.push_str(&format!(", rtt min/avg/max {min:.3}/{avg:.3}/{max:.3} ms"));
        }
        text
    }

    /// The counts and round trips as metadata; the average round trip as the latency
    /// (kept by `checks::run`).
    fn annotate(&self, mut outcome: CheckOutcome) -> CheckOutcome {
        if let Some((_, avg, _)) = self.rtt_ms {
            outcome.latency_ms = avg;
        }
        outcome = outcome
            .with("sent", self.sent as u64)
            .with("received", self.received as u64)
            .with("packetLossPercent", self.loss_percent);
        if let Some((min, avg, max)) = self.rtt_ms {
            outcome = outcome
                .with("rttMinMs", min)
                .with("rttAvgMs", avg)
                .with("rttMaxMs", max);
        }
        outcome
    }
}

/// `0`, `40`, `33.3`.
fn percent(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}

/// Up or down from what became of the echo requests and the success criteria.
fn verdict(plan: &PingPlan, peer: &str, replies: &[Reply], attempt: &Attempt) -> CheckOutcome {
    let summary = Summary::of(replies);
    let outcome = if summary.received == 0 {
        let requests = if summary.sent == 1 {
            "1 echo request".to_string()
        } else {
            format!("{} echo requests", summary.sent)
        };
        let errors: Vec<&str> = replies
            .iter()
            .filter_map(|r| match r {
                Reply::Error(e) => Some(e.as_str()),
                _ => None,
            })
            .collect();
        let not_sent = replies.iter().find_map(|r| match r {
            Reply::NotSent(e) => Some(e.as_str()),
            _ => None,
        });
        if let Some(first) = errors.first() {
            CheckOutcome::down(
                0.0,
                FailureReason::Connect,
                format!("no echo reply from {peer} to {requests}: {first}"),
            )
        } else if let Some(e) = not_sent {
            CheckOutcome::down(
                0.0,
                FailureReason::Connect,
                format!("cannot send echo requests to {peer}: {e}"),
            )
        } else {
            CheckOutcome::down(
                0.0,
                FailureReason::Timeout,
                format!(
                    "no reply from {peer} to {requests} within {}",
                    human_duration(attempt.timeout())
                ),
            )
        }
    } else {
        let stats = format!("{peer}: {}", summary.text());
        let max_loss = plan.criteria.max_packet_loss_percent;
        let max_latency = plan.criteria.max_latency_ms;
        let avg = summary.rtt_ms.map(|(_, avg, _)| avg).unwrap_or(0.0);
        if let Some(max) = max_loss.filter(|max| summary.loss_percent > *max as f64) {
            CheckOutcome::down(
                0.0,
                FailureReason::Assertion,
                format!("{stats}: loss more than maxPacketLossPercent {max}"),
            )
        } else if let Some(max) = max_latency.filter(|max| avg > *max as f64) {
            CheckOutcome::down(
                0.0,
                FailureReason::Assertion,
                format!("{stats}: average rtt {avg:.3} ms, more than maxLatencyMs {max}"),
            )
        } else {
            let mut up = CheckOutcome::up(0.0);
            up.message = Some(stats);
            up
        }
    };
    summary.annotate(outcome)
}

/// Connect to `port` on the addresses in turn instead of pinging, saying so.
async fn tcp_fallback(
    plan: &PingPlan,
    addrs: &[SocketAddr],
    port: u16,
    attempt: &Attempt,
) -> CheckOutcome {
    let prefix = format!("{NOT_PERMITTED}; TCP connect to port {port} instead");
    let deadline = attempt.soft_deadline();
    let mut last_err = None;
    for addr in addrs {
        let addr = SocketAddr::new(addr.ip(), port);
        let started = tokio::time::Instant::now();
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let took = started.elapsed().as_secs_f64() * 1000.0;
                drop(stream);
                let peer = format!("{} ({addr})", plan.host);
                let mut outcome = match plan.criteria.max_latency_ms {
                    Some(max) if took > max as f64 => CheckOutcome::down(
                        0.0,
                        FailureReason::Assertion,
                        format!(
                            "{prefix}: connecting to {peer} took {took:.0} ms, more than maxLatencyMs {max}"
                        ),
                    ),
                    _ => {
                        let mut up = CheckOutcome::up(0.0);
                        up.message = Some(format!("{prefix}: connected to {peer} in {took:.1} ms"));
                        up
                    }
                };
                outcome = outcome
                    .with("address", addr.ip().to_string())
                    .with("method", "tcp")
                    .with("port", u64::from(port));
                return outcome;
            }
            Ok(Err(e)) => last_err = Some((e, addr)),
            Err(_) => {
                return CheckOutcome::down(
                    0.0,
                    FailureReason::Timeout,
                    format!(
                        "{prefix}: no connection to {} ({addr}) within {}",
                        plan.host,
                        human_duration(attempt.timeout())
                    ),
                )
                .with("method", "tcp");
            }
        }
    }
    let (reason, message) = match last_err {
        Some((e, addr)) if e.kind() == std::io::ErrorKind::TimedOut => (
            FailureReason::Timeout,
            format!(
                "{prefix}: connecting to {} ({addr}) timed out: {e}",
                plan.host
            ),
        ),
        Some((e, addr)) => (
            FailureReason::Connect,
            format!("{prefix}: cannot connect to {} ({addr}): {e}", plan.host),
        ),
        None => (
            FailureReason::Connect,
            format!("{prefix}: cannot connect to {}", plan.host),
        ),
    };
    CheckOutcome::down(0.0, reason, message).with("method", "tcp")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// The plan of a target, or the errors its rules report (`path: message`).
    fn plan(yaml: &str, criteria: &str) -> Result<PingPlan, String> {
        let target: PingTarget = serde_yaml_ng::from_str(yaml).unwrap();
        let criteria: PingCriteria = if criteria.is_empty() {
            PingCriteria::default()
        } else {
            serde_yaml_ng::from_str(criteria).unwrap()
        };
        let mut sink = Sink::detached();
        match PingPlan::new(&target, criteria, &mut sink) {
            Some(p) if !sink.has_errors() => Ok(p),
            _ => Err(sink.plan_error().to_string()),
        }
    }

    fn loopback() -> Vec<SocketAddr> {
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)]
    }

    fn ms(n: u64) -> Reply {
        Reply::Echo(Duration::from_millis(n))
    }

    fn attempt() -> Attempt {
        Attempt::start(Duration::from_secs(5))
    }

    fn msg(o: &CheckOutcome) -> &str {
        o.message.as_deref().unwrap_or("")
    }

    #[test]
    fn plans_fill_defaults_and_reject_bad_numbers() {
        let p = plan("{host: '[::1]'}", "").unwrap();
        assert_eq!((p.host.as_str(), p.count, p.tcp_fallback), ("::1", 1, None));
        let p = plan("{host: h, packetCount: 5, tcpFallback: 443}", "").unwrap();
        assert_eq!((p.count, p.tcp_fallback), (5, Some(443)));
        // As users write it: true is the default port, false is no fallback.
        let p = plan("{host: h, tcpFallback: true}", "").unwrap();
        assert_eq!(p.tcp_fallback, Some(443));
        let p = plan("{host: h, tcpFallback: false}", "").unwrap();
        assert_eq!(p.tcp_fallback, None);
        let e = serde_yaml_ng::from_str::<PingTarget>("{host: h, tcpFallback: 'on'}").unwrap_err();
        assert!(
            e.to_string()
                .contains("expected a port number or true/false, got"),
            "{e}"
        );
        // Both forms are written back as they were written.
        for yaml in ["{host: h, tcpFallback: true}", "{host: h, tcpFallback: 80}"] {
            let t: PingTarget = serde_yaml_ng::from_str(yaml).unwrap();
            let back: PingTarget =
                serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&t).unwrap()).unwrap();
            assert_eq!(back, t);
        }
        for (yaml, part) in [
            (
                "{host: h, count: 0}",
                "spec.target.ping.count: must be at least 1, got 0",
            ),
            (
                "{host: h, count: 101}",
                "spec.target.ping.count: must be at most 100, got 101",
            ),
            (
                "{host: h, tcpFallback: 0}",
                "spec.target.ping.tcpFallback: must be at least 1, got 0",
            ),
            (
                "{host: h, tcpFallback: 70000}",
                "spec.target.ping.tcpFallback: must be at most 65535, got 70000",
            ),
            ("{host: ''}", "spec.target.ping.host: must not be empty"),
            (
                "{host: ' '}",
                "spec.target.ping.host: must be a host name or IP address",
            ),
        ] {
            let errors = plan(yaml, "").unwrap_err();
            assert!(errors.contains(part), "{yaml}: {errors}");
        }
    }

    #[test]
    fn summaries_count_replies_and_round_trips() {
        let s = Summary::of(&[ms(1), Reply::Lost, ms(3)]);
        assert_eq!((s.sent, s.received), (3, 2));
        assert_eq!(
            s.text(),
            "2/3 replies, 33.3% loss, rtt min/avg/max 1.000/2.000/3.000 ms"
        );
        let s = Summary::of(&[Reply::Echo(Duration::ZERO)]);
        assert_eq!(
            s.text(),
            "1/1 reply, 0% loss, rtt min/avg/max 0.000/0.000/0.000 ms"
        );
        let s = Summary::of(&[Reply::Lost, Reply::Error("x".into())]);
        assert_eq!(
            (s.text().as_str(), s.rtt_ms),
            ("0/2 replies, 100% loss", None)
        );
    }

    #[test]
    fn any_reply_is_up_by_default() {
        let p = plan("{host: h.example, count: 3}", "").unwrap();
        let o = verdict(
            &p,
            "h.example (192.0.2.7)",
            &[Reply::Lost, ms(2), Reply::Lost],
            &attempt(),
        );
        assert!(o.up, "{o:?}");
        assert_eq!(
            msg(&o),
            "h.example (192.0.2.7): 1/3 replies, 66.7% loss, rtt min/avg/max 2.000/2.000/2.000 ms"
        );
        assert_eq!(o.metadata["sent"], 3);
        assert_eq!(o.metadata["received"], 1);
        assert_eq!(o.metadata["rttAvgMs"], 2.0);
    }

    #[test]
    fn too_much_loss_or_latency_is_an_assertion() {
        let replies = [ms(10), Reply::Lost, ms(30), ms(20), ms(40)];
        let p = plan("{host: h, count: 5}", "{maxPacketLossPercent: 20}").unwrap();
        assert!(verdict(&p, "h", &replies, &attempt()).up);
        let p = plan("{host: h, count: 5}", "{maxPacketLossPercent: 10}").unwrap();
        let o = verdict(&p, "h", &replies, &attempt());
        assert_eq!(o.reason, Some(FailureReason::Assertion), "{o:?}");
        assert!(msg(&o).ends_with("20% loss, rtt min/avg/max 10.000/25.000/40.000 ms: loss more than maxPacketLossPercent 10"), "{o:?}");
        let p = plan("{host: h, count: 5}", "{maxLatencyMs: 25}").unwrap();
        assert!(
            verdict(&p, "h", &replies, &attempt()).up,
            "the average counts, not the max"
        );
        let p = plan("{host: h, count: 5}", "{maxLatencyMs: 24}").unwrap();
        let o = verdict(&p, "h", &replies, &attempt());
        assert_eq!(o.reason, Some(FailureReason::Assertion), "{o:?}");
        assert!(
            msg(&o).ends_with("average rtt 25.000 ms, more than maxLatencyMs 24"),
            "{o:?}"
        );
    }

    #[test]
    fn no_reply_is_a_timeout_unless_something_said_why() {
        let p = plan("{host: h, count: 5}", "").unwrap();
        let lost = vec![Reply::Lost; 5];
        let o = verdict(&p, "h", &lost, &attempt());
        assert_eq!(o.reason, Some(FailureReason::Timeout), "{o:?}");
        assert_eq!(msg(&o), "no reply from h to 5 echo requests within 5s");
        assert_eq!(o.metadata["packetLossPercent"], 100.0);

        let unreachable = [
            Reply::Lost,
            Reply::Error("host unreachable from 192.0.2.1".into()),
        ];
        let o = verdict(&p, "h", &unreachable, &attempt());
        assert_eq!(o.reason, Some(FailureReason::Connect), "{o:?}");
        assert_eq!(
            msg(&o),
            "no echo reply from h to 2 echo requests: host unreachable from 192.0.2.1"
        );

        let not_sent = [Reply::NotSent(
            "Network is unreachable (os error 101)".into(),
        )];
        let o = verdict(&p, "h", &not_sent, &attempt());
        assert_eq!(o.reason, Some(FailureReason::Connect), "{o:?}");
        assert_eq!(
            msg(&o),
            "cannot send echo requests to h: Network is unreachable (os error 101)"
        );
    }

    #[test]
    fn refused_sockets_mean_not_permitted() {
        use std::io::{Error, ErrorKind};
        assert!(matches!(
            classify_open_error(Error::from(ErrorKind::PermissionDenied)),
            IcmpSocket::NotPermitted
        ));
        // EPERM and EACCES both read as PermissionDenied.
        for errno in [1, 13] {
            assert!(matches!(
                classify_open_error(Error::from_raw_os_error(errno)),
                IcmpSocket::NotPermitted
            ));
        }
        // EAFNOSUPPORT (no IPv6) is a failure of its own.
        assert!(matches!(
            classify_open_error(Error::from_raw_os_error(97)),
            IcmpSocket::Failed(_)
        ));
    }

    #[tokio::test]
    async fn without_icmp_the_fallback_connects_and_says_so() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let yaml = format!("{{host: 127.0.0.1, count: 3, tcpFallback: {port}}}");
        let p = plan(&yaml, "").unwrap();
        let o = probe(&p, false, &loopback(), IcmpSocket::NotPermitted, &attempt()).await;
        assert!(o.up, "{o:?}");
        assert!(
            msg(&o).starts_with(&format!(
                "ICMP not permitted here (net.ipv4.ping_group_range / CAP_NET_RAW); TCP connect to port {port} instead: connected to 127.0.0.1 (127.0.0.1:{port}) in "
            )),
            "{o:?}"
        );
        assert_eq!(o.metadata["method"], "tcp");
        assert_eq!(o.metadata["address"], "127.0.0.1");

        drop(listener);
        let o = probe(&p, false, &loopback(), IcmpSocket::NotPermitted, &attempt()).await;
        assert_eq!(o.reason, Some(FailureReason::Connect), "{o:?}");
        assert!(
            msg(&o).contains(&format!(
                "TCP connect to port {port} instead: cannot connect to 127.0.0.1 (127.0.0.1:{port}): "
            )),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn without_icmp_or_fallback_the_message_says_how_to_enable_it() {
        for privileged in [false, true] {
            let p = plan("{host: 127.0.0.1}", "").unwrap();
            let o = probe(
                &p,
                privileged,
                &loopback(),
                IcmpSocket::NotPermitted,
                &attempt(),
            )
            .await;
            assert_eq!(o.reason, Some(FailureReason::Config), "{o:?}");
            for part in [
                "net.ipv4.ping_group_range",
                "CAP_NET_RAW",
                "spec.target.ping.tcpFallback",
            ] {
                assert!(msg(&o).contains(part), "{o:?}");
            }
            assert_eq!(
                msg(&o).contains("spec.networking.ping.privileged to true"),
                !privileged,
                "{o:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_socket_that_cannot_open_is_a_connect_failure() {
        let p = plan("{host: 127.0.0.1, tcpFallback: 9}", "").unwrap();
        let failed = IcmpSocket::Failed(std::io::Error::from_raw_os_error(97));
        let o = probe(&p, true, &loopback(), failed, &attempt()).await;
        assert_eq!(o.reason, Some(FailureReason::Connect), "{o:?}");
        assert!(
            msg(&o).starts_with("cannot open an ICMP socket to ping 127.0.0.1: "),
            "{o:?}"
        );
    }
}
