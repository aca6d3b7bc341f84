//! The `tcp` checker: connect, optionally wrap in TLS, optionally send text and expect a
//! reply containing some text.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;
use kubekuma_crds::monitor::{MonitorSpec, TcpTarget};
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::findings::Sink;
use crate::rules::{host_ok, port};

use super::{
    Attempt, CheckContext, cert_info, error_chain, excerpt, find_tls_error, human_duration,
    is_connect_kind, latency_exceeded, resolve,
};

/// Most reply bytes kept while looking for `expect`.
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// Most characters of a reply quoted in a message.
const EXCERPT_CHARS: usize = 60;

/// A `tcp` monitor's target with its defaults filled in and its numbers checked.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpPlan {
    /// The host as written, without `[]` around an IPv6 address.
    host: String,
    /// The port.
    port: u16,
    /// `host:port` (`[v6]:port`) for messages.
    peer: String,
    /// Bytes to send after connecting (escapes such as `\r\n` unescaped).
    send: Option<Vec<u8>>,
    /// Bytes the reply must contain (not empty).
    expect: Option<Vec<u8>>,
    /// TLS, when enabled: whether to verify, and the server name when not the host.
    tls: Option<(bool, Option<String>)>,
    /// `successCriteria.tcp.maxLatencyMs`.
    max_latency_ms: Option<i64>,
}

/// The plan of a `tcp` monitor: `spec.target.tcp` checked.
pub(crate) fn plan(spec: &MonitorSpec, sink: &mut Sink<'_>) -> Option<TcpPlan> {
    let target = spec.target.tcp.as_ref()?;
    host_ok(sink, "spec.target.tcp.host", &target.host);
    port(sink, "spec.target.tcp.port", Some(target.port));
    let port = u16::try_from(target.port).ok().filter(|p| *p != 0)?;
    Some(TcpPlan {
        host: target
            .host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        peer: peer_name(target),
        send: target.send.as_deref().map(unescape),
        expect: target
            .expect
            .as_deref()
            .map(unescape)
            .filter(|e| !e.is_empty()),
        tls: target
            .tls
            .as_ref()
            .filter(|t| t.enabled.unwrap_or(false))
            .map(|t| {
                let sni = t.sni.as_deref().map(str::trim).filter(|s| !s.is_empty());
                (t.verify.unwrap_or(true), sni.map(str::to_string))
            }),
        max_latency_ms: spec
            .success_criteria
            .as_ref()
            .and_then(|c| c.tcp.as_ref())
            .and_then(|c| c.max_latency_ms),
    })
}

/// Run a `tcp` monitor's check.
pub(crate) async fn check(ctx: &CheckContext, plan: &TcpPlan, attempt: &Attempt) -> CheckOutcome {
    match probe(ctx, plan, attempt).await {
        Ok(mut up) => {
            if let Some(msg) = latency_exceeded(attempt, plan.max_latency_ms) {
                let mut down = CheckOutcome::down(
                    0.0,
                    FailureReason::Assertion,
                    format!("{} {msg}", plan.peer),
                );
                down.cert = up.cert.take();
                down.metadata = std::mem::take(&mut up.metadata);
                down
            } else {
                up
            }
        }
        Err(down) => down,
    }
}

/// `host:port` (`[v6]:port`) for messages.
fn peer_name(target: &TcpTarget) -> String {
    let host = target.host.trim();
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", target.port)
    } else {
        format!("{host}:{}", target.port)
    }
}

async fn probe(
    ctx: &CheckContext,
    plan: &TcpPlan,
    attempt: &Attempt,
) -> Result<CheckOutcome, CheckOutcome> {
    let peer = plan.peer.as_str();
    let config = |msg: String| CheckOutcome::down(0.0, FailureReason::Config, msg);
    let host = plan.host.as_str();
    let addrs = resolve(host, plan.port).await?;

    let mut last_err = None;
    let mut connected = None;
    for addr in &addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                connected = Some((s, *addr));
                break;
            }
            Err(e) => last_err = Some((e, *addr)),
        }
    }
    let Some((stream, addr)) = connected else {
        let (reason, message) = match last_err {
            Some((e, a)) if e.kind() == std::io::ErrorKind::TimedOut => (
                FailureReason::Timeout,
                format!("connecting to {} timed out: {e}", via(peer, a)),
            ),
            Some((e, a)) => (
                FailureReason::Connect,
                format!("cannot connect to {}: {e}", via(peer, a)),
            ),
            None => (FailureReason::Connect, format!("cannot connect to {peer}")),
        };
        return Err(CheckOutcome::down(0.0, reason, message));
    };

    let (send, expect) = (plan.send.as_deref(), plan.expect.as_deref());

    let mut outcome = match &plan.tls {
        None => {
            let mut stream = stream;
            exchange(&mut stream, peer, send, expect, attempt).await?;
            CheckOutcome::up(0.0)
        }
        Some((verify, sni)) => {
            let config = ctx.tls_config(*verify, &[]).map_err(config)?;
            let name = sni.as_deref().unwrap_or(host).to_string();
            let server_name = ServerName::try_from(name.clone()).map_err(|_| {
                CheckOutcome::down(
                    0.0,
                    FailureReason::Config,
                    format!("{name:?} is not a valid TLS server name"),
                )
            })?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let mut stream = connector.connect(server_name, stream).await.map_err(|e| {
                let chain = error_chain(&e);
                let why = match find_tls_error(&chain) {
                    Some(tls) => tls.to_string(),
                    None => e.to_string(),
                };
                CheckOutcome::down(
                    0.0,
                    FailureReason::Tls,
                    format!("TLS handshake with {peer} failed: {why}"),
                )
            })?;
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|der| cert_info(der, Utc::now()));
            let result = exchange(&mut stream, peer, send, expect, attempt).await;
            let mut outcome = match result {
                Ok(()) => CheckOutcome::up(0.0),
                Err(down) => down,
            };
            outcome.cert = cert;
            if !outcome.up {
                return Err(outcome);
            }
            outcome
        }
    };
    outcome = outcome.with("address", addr.to_string());
    Ok(outcome)
}

/// `peer`, or `peer (address)` when the address says more than the name.
fn via(peer: &str, addr: SocketAddr) -> String {
    if addr.to_string() == peer {
        peer.to_string()
    } else {
        format!("{peer} ({addr})")
    }
}

/// Send `send`, then read until the reply contains `expect`, the peer closes, or the
/// attempt's soft deadline passes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    peer: &str,
    send: Option<&[u8]>,
    expect: Option<&[u8]>,
    attempt: &Attempt,
) -> Result<(), CheckOutcome> {
    if let Some(bytes) = send.filter(|b| !b.is_empty()) {
        let written = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        written.await.map_err(|e| {
            CheckOutcome::down(0.0, io_reason(&e), format!("sending to {peer} failed: {e}"))
        })?;
    }
    let Some(expect) = expect else {
        return Ok(());
    };

    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = attempt.soft_deadline();
    let ended = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break Ended::Deadline,
            Ok(Ok(0)) => break Ended::Closed,
            Ok(Ok(n)) => {
                reply.extend_from_slice(&buf[..n]);
                if contains(&reply, expect) {
                    return Ok(());
                }
                if reply.len() >= MAX_REPLY_BYTES {
                    break Ended::TooLong;
                }
            }
            // A TLS peer that closes without close_notify.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ended::Closed,
            Ok(Err(e)) => {
                return Err(CheckOutcome::down(
                    0.0,
                    io_reason(&e),
                    format!("reading the reply of {peer} failed: {e}"),
                ));
            }
        }
    };
    let wanted = excerpt(expect, EXCERPT_CHARS);
    if reply.is_empty() {
        return Err(match ended {
            Ended::Deadline => CheckOutcome::down(
                0.0,
                FailureReason::Timeout,
                format!(
                    "no reply from {peer} within {} (expected \"{wanted}\")",
                    human_duration(attempt.timeout())
                ),
            ),
            Ended::Closed | Ended::TooLong => CheckOutcome::down(
                0.0,
                FailureReason::Body,
                format!("{peer} closed the connection without a reply (expected \"{wanted}\")"),
            ),
        });
    }
    let why = match ended {
        Ended::Deadline => "no more data in time",
        Ended::Closed => "then closed the connection",
        Ended::TooLong => "reply too long",
    };
    Err(CheckOutcome::down(
        0.0,
        FailureReason::Body,
        format!(
            "expected \"{wanted}\" in the reply of {peer}, got \"{}\" ({why})",
            excerpt(&reply, EXCERPT_CHARS)
        ),
    ))
}

enum Ended {
    Deadline,
    Closed,
    TooLong,
}

fn io_reason(e: &std::io::Error) -> FailureReason {
    if e.kind() == std::io::ErrorKind::TimedOut {
        FailureReason::Timeout
    } else if is_connect_kind(e.kind()) {
        FailureReason::Connect
    } else if find_tls_error(&error_chain(e)).is_some() {
        FailureReason::Tls
    } else {
        FailureReason::Connect
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// `\n`, `\r`, `\t` and `\\` as in the manifest's text; other backslashes stay as they are.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_interpreted() {
        assert_eq!(unescape(r"PING\r\n"), b"PING\r\n");
        assert_eq!(unescape(r"a\tb\\n\q"), b"a\tb\\n\\q");
        assert_eq!(unescape("trailing\\"), b"trailing\\");
    }

    #[test]
    fn contains_finds_bytes() {
        assert!(contains(b"+PONG\r\n", b"PONG"));
        assert!(!contains(b"PON", b"PONG"));
    }
}
