//! The `websocket` checker: the opening handshake over ws:// or wss:// (tokio-tungstenite,
//! the same TLS roots as HTTP), an optional text message, an optional expected reply
//! (exact, or a regex: the server's first data message must match), then the close
//! handshake.
//!
//! The close handshake is bounded: after a good exchange the checker sends Close and waits
//! at most 2 s (less when the attempt's timeout is nearer) for the server's Close. A server
//! that does not answer it is still up, with the message "closed without close handshake
//! (…)"; metadata `closeHandshake` tells whether it completed. The latency, and what
//! `maxLatencyMs` judges, is the time up to the end of the exchange, before the close
//! handshake.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kubekuma_crds::monitor::{MonitorSpec, WebsocketTarget};
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream, connect_async_tls_with_config,
};

use super::http::display_url;
use super::{
    Attempt, CheckContext, Pattern, excerpt, human_duration, is_connect_kind, latency_exceeded,
};
use crate::findings::Sink;
use crate::rules::{headers_ok, regex_ok, url_ok};

/// A `websocket` monitor's target and latency bound, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct WebsocketPlan {
    /// The namespace the `${SECRET:…}` references of URL and headers resolve in.
    namespace: String,
    /// The target as written: URL and headers may hold secret references, resolved at
    /// check time.
    target: WebsocketTarget,
    /// `expectedResponse` compiled, when `regex` is set.
    pattern: Option<Pattern>,
    /// `successCriteria.websocket.maxLatencyMs`.
    max_latency_ms: Option<i64>,
}

/// The plan of a `websocket` monitor: `spec.target.websocket` checked.
pub(crate) fn plan(
    namespace: &str,
    spec: &MonitorSpec,
    sink: &mut Sink<'_>,
) -> Option<WebsocketPlan> {
    let w = spec.target.websocket.as_ref()?;
    url_ok(sink, "spec.target.websocket.url", &w.url, &["ws", "wss"]);
    headers_ok(sink, "spec.target.websocket.headers", &w.headers);
    let mut pattern = None;
    if w.regex == Some(true) {
        match &w.expected_response {
            Some(p) => {
                pattern = regex_ok(sink, "spec.target.websocket.expectedResponse", p).map(Pattern)
            }
            None => sink.warn(
                "spec.target.websocket.regex",
                "has no effect without expectedResponse",
            ),
        }
    }
    Some(WebsocketPlan {
        namespace: namespace.to_string(),
        target: w.clone(),
        pattern,
        max_latency_ms: spec
            .success_criteria
            .as_ref()
            .and_then(|c| c.websocket.as_ref())
            .and_then(|w| w.max_latency_ms),
    })
}

/// Run one WebSocket check.
pub(crate) async fn check(
    ctx: &CheckContext,
    plan: &WebsocketPlan,
    attempt: &Attempt,
) -> CheckOutcome {
    let fail = |(reason, msg): Failed| CheckOutcome::down(attempt.elapsed_ms(), reason, msg);
    let (request, url, shown) = match request(ctx, plan) {
        Ok(r) => r,
        Err(f) => return fail(f),
    };
    let mut ws = match connect(ctx, &plan.target, &url, &shown, request).await {
        Ok(ws) => ws,
        Err(f) => return fail(f),
    };
    // Waits for the server end shortly before the attempt's timeout, so that they fail with
    // a message of their own rather than the generic one of the timeout.
    let deadline = attempt.soft_deadline();
    if let Err(f) = exchange(&mut ws, plan, &shown, deadline, attempt).await {
        return fail(f);
    }
    finish(&mut ws, plan, deadline, attempt).await
}

/// Why a step of the check failed: the reason and the message of the down outcome.
type Failed = (FailureReason, String);

/// Resolves the URL and header secrets and builds the handshake request; also returns the
/// parsed URL and the URL as shown in messages (without credentials).
fn request(
    ctx: &CheckContext,
    plan: &WebsocketPlan,
) -> Result<(Request, url::Url, String), Failed> {
    let (namespace, target) = (plan.namespace.as_str(), &plan.target);
    let raw = ctx.secrets().resolve(namespace, &target.url).map_err(|e| {
        (
            FailureReason::Config,
            format!("spec.target.websocket.url: {e}"),
        )
    })?;
    let url = match url::Url::parse(&raw) {
        Ok(u) if matches!(u.scheme(), "ws" | "wss") => u,
        _ => {
            return Err((
                FailureReason::Config,
                "spec.target.websocket.url is not a ws:// or wss:// URL".into(),
            ));
        }
    };
    let shown = display_url(&url);
    let mut request = raw
        .as_str()
        .into_client_request()
        .map_err(|e| (FailureReason::Config, format!("{shown}: {e}")))?;
    for (name, value) in target.headers.iter().flat_map(|h| h.0.iter()) {
        let value = ctx.secrets().resolve(namespace, value).map_err(|e| {
            (
                FailureReason::Config,
                format!("spec.target.websocket.headers.{name}: {e}"),
            )
        })?;
        let (Ok(n), Ok(v)) = (
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            return Err((
                FailureReason::Config,
                format!("spec.target.websocket.headers.{name}: not a valid header"),
            ));
        };
        request.headers_mut().insert(n, v);
    }
    Ok((request, url, shown))
}

/// The connection a check talks over.
type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects (TLS for wss://) and runs the opening handshake.
async fn connect(
    ctx: &CheckContext,
    target: &WebsocketTarget,
    url: &url::Url,
    shown: &str,
    request: Request,
) -> Result<Socket, Failed> {
    let connector = if url.scheme() == "wss" {
        match ctx.tls_config(!target.skip_tls_verify.unwrap_or(false), &[b"http/1.1"]) {
            Ok(c) => Some(Connector::Rustls(Arc::new(c))),
            Err(e) => return Err((FailureReason::Config, e)),
        }
    } else {
        Some(Connector::Plain)
    };
    match connect_async_tls_with_config(request, None, true, connector).await {
        Ok((ws, _response)) => Ok(ws),
        Err(e) => Err(connect_failed(shown, e)),
    }
}

/// The reason and message of a failed connection or opening handshake.
fn connect_failed(shown: &str, error: WsError) -> Failed {
    match error {
        WsError::Http(resp) => (
            FailureReason::Status,
            format!(
                "{shown}: the handshake was answered with HTTP {}, expected 101",
                resp.status().as_u16()
            ),
        ),
        WsError::Tls(e) => (FailureReason::Tls, format!("{shown}: TLS: {e}")),
        WsError::Io(e) if is_connect_kind(e.kind()) => {
            (FailureReason::Connect, format!("{shown}: {e}"))
        }
        WsError::Io(e) => {
            // Name resolution failures surface as I/O errors of the lookup.
            let text = e.to_string();
            let reason = if text.contains("lookup")
                || text.contains("resolve")
                || text.contains("Name or service")
            {
                FailureReason::Dns
            } else if e
                .get_ref()
                .is_some_and(|inner| inner.to_string().contains("certificate"))
                || text.contains("certificate")
            {
                FailureReason::Tls
            } else {
                FailureReason::Connect
            };
            (reason, format!("{shown}: {text}"))
        }
        e => (FailureReason::Protocol, format!("{shown}: {e}")),
    }
}

/// Sends the message, if any, then waits for the expected reply, if any, and compares it.
async fn exchange(
    ws: &mut Socket,
    plan: &WebsocketPlan,
    shown: &str,
    deadline: tokio::time::Instant,
    attempt: &Attempt,
) -> Result<(), Failed> {
    let target = &plan.target;
    if let Some(m) = &target.message
        && let Err(e) = ws.send(Message::text(m.clone())).await
    {
        return Err((
            FailureReason::Protocol,
            format!("{shown}: cannot send the message: {e}"),
        ));
    }
    let Some(expected) = &target.expected_response else {
        return Ok(());
    };
    let reply = read_reply(ws, plan, expected, shown, deadline, attempt).await?;
    let text = String::from_utf8_lossy(&reply);
    let matched = match &plan.pattern {
        Some(re) => re.0.is_match(&text),
        None => text == expected.as_str(),
    };
    if !matched {
        return Err((
            FailureReason::Body,
            format!(
                "reply {:?} does not match the expected response",
                excerpt(&reply, 60)
            ),
        ));
    }
    Ok(())
}

/// Reads until the server's first data message (text or binary) and returns its bytes;
/// control frames are skipped, a close, an end or a timeout is a failure.
async fn read_reply(
    ws: &mut Socket,
    plan: &WebsocketPlan,
    expected: &str,
    shown: &str,
    deadline: tokio::time::Instant,
    attempt: &Attempt,
) -> Result<Vec<u8>, Failed> {
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, ws.next()).await else {
            return Err(no_reply(plan, expected, shown, attempt));
        };
        match next {
            Some(Ok(Message::Text(t))) => return Ok(t.as_bytes().to_vec()),
            Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(frame))) => {
                let why = match frame {
                    Some(f) if f.reason.is_empty() => {
                        format!(" (close code {})", u16::from(f.code))
                    }
                    Some(f) => format!(
                        " (close code {}, {:?})",
                        u16::from(f.code),
                        excerpt(f.reason.as_bytes(), 60)
                    ),
                    None => String::new(),
                };
                return Err((
                    FailureReason::Body,
                    format!("{shown}: the server closed the connection before replying{why}"),
                ));
            }
            None | Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                return Err((
                    FailureReason::Body,
                    format!(
                        "{shown}: the server ended the connection before replying, without a close handshake"
                    ),
                ));
            }
            Some(Err(WsError::Io(e))) if is_connect_kind(e.kind()) => {
                return Err((
                    FailureReason::Connect,
                    format!("{shown}: the connection broke before a reply: {e}"),
                ));
            }
            Some(Err(e)) => return Err((FailureReason::Protocol, format!("{shown}: {e}"))),
        }
    }
}

/// The timeout failure when no reply came in time, saying what was expected.
fn no_reply(plan: &WebsocketPlan, expected: &str, shown: &str, attempt: &Attempt) -> Failed {
    let what = if plan.target.message.is_some() {
        "no reply to the message"
    } else {
        "no message from the server"
    };
    let expected = if plan.pattern.is_some() {
        format!("a match of {:?}", shorten(expected))
    } else {
        format!("{:?}", shorten(expected))
    };
    (
        FailureReason::Timeout,
        format!(
            "{shown}: {what} within {} (expected {expected})",
            human_duration(attempt.timeout())
        ),
    )
}

/// Judges the latency of the exchange, then runs the bounded close handshake and builds
/// the outcome.
async fn finish(
    ws: &mut Socket,
    plan: &WebsocketPlan,
    deadline: tokio::time::Instant,
    attempt: &Attempt,
) -> CheckOutcome {
    // maxLatencyMs judges the exchange; the close handshake below is not part of it.
    let too_slow = latency_exceeded(attempt, plan.max_latency_ms);
    let exchange_ms = attempt.elapsed_ms();
    let wait = CLOSE_WAIT.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let closed = match tokio::time::timeout(wait, close(ws)).await {
        Ok(closed) => closed,
        Err(_) => Closed::Without(format!("no Close reply within {}", human_duration(wait))),
    };
    let mut outcome = match too_slow {
        Some(msg) => CheckOutcome::down(exchange_ms, FailureReason::Assertion, msg),
        None => {
            let mut up = CheckOutcome::up(exchange_ms);
            up.message = Some(match &closed {
                Closed::Completed => "close handshake completed".to_string(),
                Closed::Without(why) => format!("closed without close handshake ({why})"),
            });
            up
        }
    };
    outcome = outcome.with("closeHandshake", matches!(closed, Closed::Completed));
    outcome
}

/// Longest wait for the server's Close frame after ours.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How the close handshake ended.
enum Closed {
    /// The server answered our Close with its own.
    Completed,
    /// It did not, and why.
    Without(String),
}

/// Send Close, then read until the server's Close. Messages still in flight are skipped.
async fn close<S>(ws: &mut WebSocketStream<S>) -> Closed
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = ws.close(None).await {
        return Closed::Without(format!("cannot send Close: {e}"));
    }
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(_))) => return Closed::Completed,
            Some(Ok(_)) => continue,
            None | Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                return Closed::Without("the server ended the connection instead".into());
            }
            Some(Err(e)) => return Closed::Without(e.to_string()),
        }
    }
}

/// An expected response cut to 60 characters for a message, `…` when cut.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}
