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
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, WebSocketStream, connect_async_tls_with_config};

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
    let fail = |reason, msg: String| CheckOutcome::down(attempt.elapsed_ms(), reason, msg);
    let (namespace, target) = (plan.namespace.as_str(), &plan.target);
    let raw = match ctx.secrets().resolve(namespace, &target.url) {
        Ok(u) => u,
        Err(e) => {
            return fail(
                FailureReason::Config,
                format!("spec.target.websocket.url: {e}"),
            );
        }
    };
    let url = match url::Url::parse(&raw) {
        Ok(u) if matches!(u.scheme(), "ws" | "wss") => u,
        _ => {
            return fail(
                FailureReason::Config,
                "spec.target.websocket.url is not a ws:// or wss:// URL".into(),
            );
        }
    };
    let shown = display_url(&url);
    let mut request = match raw.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return fail(FailureReason::Config, format!("{shown}: {e}")),
    };
    for (name, value) in target.headers.iter().flat_map(|h| h.0.iter()) {
        let value = match ctx.secrets().resolve(namespace, value) {
            Ok(v) => v,
            Err(e) => {
                return fail(
                    FailureReason::Config,
                    format!("spec.target.websocket.headers.{name}: {e}"),
                );
            }
        };
        let (Ok(n), Ok(v)) = (
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            return fail(
                FailureReason::Config,
                format!("spec.target.websocket.headers.{name}: not a valid header"),
            );
        };
        request.headers_mut().insert(n, v);
    }
    let connector = if url.scheme() == "wss" {
        match ctx.tls_config(!target.skip_tls_verify.unwrap_or(false), &[b"http/1.1"]) {
            Ok(c) => Some(Connector::Rustls(Arc::new(c))),
            Err(e) => return fail(FailureReason::Config, e),
        }
    } else {
        Some(Connector::Plain)
    };
    let (mut ws, _response) =
        match connect_async_tls_with_config(request, None, true, connector).await {
            Ok(pair) => pair,
            Err(WsError::Http(resp)) => {
                return fail(
                    FailureReason::Status,
                    format!(
                        "{shown}: the handshake was answered with HTTP {}, expected 101",
                        resp.status().as_u16()
                    ),
                );
            }
            Err(WsError::Tls(e)) => return fail(FailureReason::Tls, format!("{shown}: TLS: {e}")),
            Err(WsError::Io(e)) if is_connect_kind(e.kind()) => {
                return fail(FailureReason::Connect, format!("{shown}: {e}"));
            }
            Err(WsError::Io(e)) => {
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
                return fail(reason, format!("{shown}: {text}"));
            }
            Err(e) => return fail(FailureReason::Protocol, format!("{shown}: {e}")),
        };
    // Waits for the server end shortly before the attempt's timeout, so that they fail with
    // a message of their own rather than the generic one of the timeout.
    let deadline = attempt.soft_deadline();
    if let Some(m) = &target.message
        && let Err(e) = ws.send(Message::text(m.clone())).await
    {
        return fail(
            FailureReason::Protocol,
            format!("{shown}: cannot send the message: {e}"),
        );
    }
    if let Some(expected) = &target.expected_response {
        let regex = plan.pattern.is_some();
        let reply = loop {
            let next = match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let what = if target.message.is_some() {
                        "no reply to the message"
                    } else {
                        "no message from the server"
                    };
                    let expected = if regex {
                        format!("a match of {:?}", shorten(expected))
                    } else {
                        format!("{:?}", shorten(expected))
                    };
                    return fail(
                        FailureReason::Timeout,
                        format!(
                            "{shown}: {what} within {} (expected {expected})",
                            human_duration(attempt.timeout())
                        ),
                    );
                }
            };
            match next {
                Some(Ok(Message::Text(t))) => break t.as_bytes().to_vec(),
                Some(Ok(Message::Binary(b))) => break b.to_vec(),
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
                    return fail(
                        FailureReason::Body,
                        format!("{shown}: the server closed the connection before replying{why}"),
                    );
                }
                None
                | Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                    return fail(
                        FailureReason::Body,
                        format!(
                            "{shown}: the server ended the connection before replying, without a close handshake"
                        ),
                    );
                }
                Some(Err(WsError::Io(e))) if is_connect_kind(e.kind()) => {
                    return fail(
                        FailureReason::Connect,
                        format!("{shown}: the connection broke before a reply: {e}"),
                    );
                }
                Some(Err(e)) => return fail(FailureReason::Protocol, format!("{shown}: {e}")),
            }
        };
        let text = String::from_utf8_lossy(&reply);
        let matched = match &plan.pattern {
            Some(re) => re.0.is_match(&text),
            None => text == expected.as_str(),
        };
        if !matched {
            return fail(
                FailureReason::Body,
                format!(
                    "reply {:?} does not match the expected response",
                    excerpt(&reply, 60)
                ),
            );
        }
    }
    // maxLatencyMs judges the exchange; the close handshake below is not part of it.
    let too_slow = latency_exceeded(attempt, plan.max_latency_ms);
    let exchange_ms = attempt.elapsed_ms();
    let wait = CLOSE_WAIT.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let closed = match tokio::time::timeout(wait, close(&mut ws)).await {
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
