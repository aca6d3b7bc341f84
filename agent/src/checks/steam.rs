//! The `steam` checker: Valve's Source server query A2S_INFO over UDP, including the
//! challenge step (a server may answer the first request with `S2C_CHALLENGE` and a
//! 4-byte number that the client repeats). Reports server name, map and player counts.
//!
//! UDP may lose a datagram: a request not answered within 1 s (a quarter of a shorter
//! timeout) is sent again, the wait doubling each time, until shortly before the timeout.

use std::net::SocketAddr;
use std::time::Duration;

use kubekuma_crds::monitor::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use tokio::net::UdpSocket;

use super::{Attempt, CheckContext, excerpt, human_duration, is_connect_kind, latency_exceeded};
use crate::findings::Sink;
use crate::rules::{host_ok, port};

/// Single-packet header.
const SINGLE: [u8; 4] = [0xFF, 0xFF, 0xFF, 0xFF];
/// A2S_INFO request payload after the header.
const INFO_REQUEST: &[u8] = b"TSource Engine Query\0";
/// Default query port.
const DEFAULT_PORT: u16 = 27015;

/// What A2S_INFO told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerInfo {
    /// Server name.
    pub name: String,
    /// Current map.
    pub map: String,
    /// Game description.
    pub game: String,
    /// Players now.
    pub players: u8,
    /// Player slots.
    pub max_players: u8,
    /// Bots among the players.
    pub bots: u8,
}

fn request(challenge: Option<[u8; 4]>) -> Vec<u8> {
    let mut v = SINGLE.to_vec();
    v.extend_from_slice(INFO_REQUEST);
    if let Some(c) = challenge {
        v.extend_from_slice(&c);
    }
    v
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.at).ok_or("reply ends early")?;
        self.at += 1;
        Ok(v)
    }
    fn string(&mut self) -> Result<String, String> {
        let rest = self.b.get(self.at..).ok_or("reply ends early")?;
        let end = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or("unterminated string in reply")?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(s)
    }
    fn skip(&mut self, n: usize) -> Result<(), String> {
        if self.at + n > self.b.len() {
            return Err("reply ends early".into());
        }
        self.at += n;
        Ok(())
    }
}

/// Parse an `S2A_INFO` (0x49) reply, header included.
pub(crate) fn parse_info(reply: &[u8]) -> Result<ServerInfo, String> {
    if reply.len() < 5 || reply[..4] != SINGLE {
        return Err("not a single-packet Source query reply".into());
    }
    if reply[4] != 0x49 {
        return Err(format!(
            "unexpected reply type 0x{:02X}, expected S2A_INFO (0x49)",
            reply[4]
        ));
    }
    let mut r = Reader { b: reply, at: 5 };
    let _protocol = r.byte()?;
    let name = r.string()?;
    let map = r.string()?;
    let _folder = r.string()?;
    let game = r.string()?;
    r.skip(2)?; // Steam application id (little-endian short)
    let players = r.byte()?;
    let max_players = r.byte()?;
    let bots = r.byte()?;
    Ok(ServerInfo {
        name,
        map,
        game,
        players,
        max_players,
        bots,
    })
}

/// A `steam` monitor's server and criteria, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct SteamPlan {
    /// The host, without `[]` around an IPv6 address.
    host: String,
    /// The query port (27015 when not given).
    port: u16,
    /// `successCriteria.steam.minPlayers`.
    min_players: Option<i64>,
    /// `successCriteria.steam.maxLatencyMs`.
    max_latency_ms: Option<i64>,
}

/// The plan of a `steam` monitor: `spec.target.steam` checked.
pub(crate) fn plan(spec: &MonitorSpec, sink: &mut Sink<'_>) -> Option<SteamPlan> {
    let target = spec.target.steam.as_ref()?;
    host_ok(sink, "spec.target.steam.host", &target.host);
    port(sink, "spec.target.steam.port", target.port);
    let port = match target.port {
        None => DEFAULT_PORT,
        Some(p) => u16::try_from(p).ok().filter(|p| *p > 0)?,
    };
    let criteria = spec
        .success_criteria
        .as_ref()
        .and_then(|c| c.steam.as_ref());
    Some(SteamPlan {
        host: target
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        min_players: criteria.and_then(|s| s.min_players),
        max_latency_ms: criteria.and_then(|s| s.max_latency_ms),
    })
}

/// Run one A2S_INFO query.
pub(crate) async fn check(
    _ctx: &CheckContext,
    plan: &SteamPlan,
    attempt: &Attempt,
) -> CheckOutcome {
    let (sock, addr) = match open(plan, attempt).await {
        Ok(pair) => pair,
        Err(o) => return o,
    };
    match query(&sock, addr, attempt).await {
        Ok((info, retransmits)) => judge(plan, attempt, &info, retransmits),
        Err(o) => o,
    }
}

/// A down outcome at the attempt's elapsed time.
fn down(attempt: &Attempt, reason: FailureReason, msg: String) -> CheckOutcome {
    CheckOutcome::down(attempt.elapsed_ms(), reason, msg)
}

/// Resolves the host and opens a UDP socket connected to its first address.
async fn open(
    plan: &SteamPlan,
    attempt: &Attempt,
) -> Result<(UdpSocket, SocketAddr), CheckOutcome> {
    let (host, port) = (plan.host.as_str(), plan.port);
    let addr: SocketAddr = match tokio::net::lookup_host((host, port))
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(a)) => a,
        Ok(None) | Err(_) => {
            return Err(CheckOutcome::down(
                attempt.elapsed_ms(),
                FailureReason::Dns,
                format!("{host} does not resolve"),
            ));
        }
    };
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap_or(addr);
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            return Err(down(
                attempt,
                FailureReason::Connect,
                format!("cannot open a UDP socket: {e}"),
            ));
        }
    };
    if let Err(e) = sock.connect(addr).await {
        return Err(down(
            attempt,
            FailureReason::Connect,
            format!("{addr}: {e}"),
        ));
    }
    Ok((sock, addr))
}

/// Sends A2S_INFO (again with the server's challenge when it asks for one) until a reply
/// comes: the parsed server info and how many requests were sent again.
async fn query(
    sock: &UdpSocket,
    addr: SocketAddr,
    attempt: &Attempt,
) -> Result<(ServerInfo, u32), CheckOutcome> {
    let send_failed =
        |e: std::io::Error| down(attempt, FailureReason::Connect, format!("{addr}: {e}"));
    // UDP may lose a datagram either way: a request unanswered within `interval` is sent
    // again, the interval doubling each time, until the attempt's soft deadline.
    let deadline = attempt.soft_deadline();
    let mut interval = first_resend_interval(attempt.timeout());
    let mut challenge = None;
    let mut challenges = 0u32;
    let mut retransmits = 0u32;
    let mut buf = vec![0u8; 1400];
    sock.send(&request(challenge)).await.map_err(send_failed)?;
    let mut resend_at = tokio::time::Instant::now() + interval;
    loop {
        let received =
            match tokio::time::timeout_at(resend_at.min(deadline), sock.recv(&mut buf)).await {
                Ok(r) => r,
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(no_answer(addr, challenge.is_some(), retransmits, attempt));
                }
                Err(_) => {
                    retransmits += 1;
                    interval *= 2;
                    sock.send(&request(challenge)).await.map_err(send_failed)?;
                    resend_at = tokio::time::Instant::now() + interval;
                    continue;
                }
            };
        let n = match received {
            Ok(n) => n,
            Err(e) if is_connect_kind(e.kind()) => {
                return Err(down(
                    attempt,
                    FailureReason::Connect,
                    format!("{addr}: no server on this port ({e})"),
                ));
            }
            Err(e) => return Err(send_failed(e)),
        };
        let reply = &buf[..n];
        if reply.len() >= 9 && reply[..4] == SINGLE && reply[4] == 0x41 {
            // At most two challenges, plus one per retransmitted request (whose late
            // answer may be a challenge too): a server that keeps challenging is broken.
            challenges += 1;
            if challenges > 2 + retransmits {
                return Err(down(
                    attempt,
                    FailureReason::Protocol,
                    format!("{addr}: the server kept answering with challenges"),
                ));
            }
            challenge = Some([reply[5], reply[6], reply[7], reply[8]]);
            sock.send(&request(challenge)).await.map_err(send_failed)?;
            resend_at = tokio::time::Instant::now() + interval;
            continue;
        }
        return Ok((parse_reply(reply, addr, attempt)?, retransmits));
    }
}

/// The timeout failure when no answer came before the soft deadline.
fn no_answer(
    addr: SocketAddr,
    challenged: bool,
    retransmits: u32,
    attempt: &Attempt,
) -> CheckOutcome {
    let step = if challenged {
        "to the challenge reply"
    } else {
        "to A2S_INFO"
    };
    down(
        attempt,
        FailureReason::Timeout,
        format!(
            "{addr}: no answer {step} within {} ({} request{} sent)",
            human_duration(attempt.timeout()),
            retransmits + 1,
            if retransmits == 0 { "" } else { "s" }
        ),
    )
    .with("retransmits", retransmits)
}

/// A reply that is not a challenge: split replies are refused, the rest parsed.
fn parse_reply(
    reply: &[u8],
    addr: SocketAddr,
    attempt: &Attempt,
) -> Result<ServerInfo, CheckOutcome> {
    if reply.len() >= 4 && reply[..4] == [0xFE, 0xFF, 0xFF, 0xFF] {
        return Err(down(
            attempt,
            FailureReason::Protocol,
            format!("{addr}: split replies to A2S_INFO are not supported"),
        ));
    }
    parse_info(reply).map_err(|e| {
        down(
            attempt,
            FailureReason::Protocol,
            format!("{addr}: malformed A2S_INFO reply: {e}"),
        )
    })
}

/// The outcome for a server's info: the player and latency bounds judged, the info as
/// metadata.
fn judge(plan: &SteamPlan, attempt: &Attempt, info: &ServerInfo, retransmits: u32) -> CheckOutcome {
    let (min_players, max_latency) = (plan.min_players, plan.max_latency_ms);
    let mut o = if let Some(min) = min_players.filter(|m| i64::from(info.players) < *m) {
        down(
            attempt,
            FailureReason::Assertion,
            format!(
                "{} players on {:?}, expected at least {min}",
                info.players, info.name
            ),
        )
    } else if let Some(msg) = latency_exceeded(attempt, max_latency) {
        down(attempt, FailureReason::Assertion, msg)
    } else {
        let mut up = CheckOutcome::up(attempt.elapsed_ms());
        up.message = Some(summary(info));
        up
    };
    if retransmits > 0 {
        o = o.with("retransmits", retransmits);
    }
    o = o
        .with("serverName", info.name.clone())
        .with("map", info.map.clone())
        .with("game", info.game.clone())
        .with("players", info.players)
        .with("maxPlayers", info.max_players)
        .with("bots", info.bots);
    o
}

/// How long to wait for an answer before sending a request again: 1 s, or a quarter of a
/// short timeout so that at least one retransmission fits (never below 100 ms).
fn first_resend_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// `"My Server", map de_dust2, 5/24 players (2 bots)`: the server's texts made safe and
/// short (the same words `kubekuma check` shows for a result without a message).
fn summary(info: &ServerInfo) -> String {
    let name: String = match info.name.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &info.name[..at]),
        None => info.name.clone(),
    };
    let map = match info.map.as_str() {
        "" => String::new(),
        map => format!(", map {}", excerpt(map.as_bytes(), 60)),
    };
    let bots = match info.bots {
        0 => String::new(),
        n => format!(" ({n} bots)"),
    };
    format!(
        "{name:?}{map}, {}/{} players{bots}",
        info.players, info.max_players
    )
}
