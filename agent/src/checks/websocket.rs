//! The `websocket` checker: the opening handshake over ws:// or wss:// (tokio-tungstenite,
//! the same TLS roots as HTTP), an optional text message, an optional expected reply
//! (exact, or a regex), then the close handshake.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use kubekuma_crds::monitor::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, connect_async_tls_with_config};

use super::http::display_url;
use super::{Attempt, CheckContext, excerpt, is_connect_kind, latency_exceeded};

/// Run one WebSocket check.
pub(crate) async fn check(
    ctx: &CheckContext,
    namespace: &str,
    spec: &MonitorSpec,
    attempt: &Attempt,
) -> CheckOutcome {
    let fail = |reason, msg: String| CheckOutcome::down(attempt.elapsed_ms(), reason, msg);
    let Some(target) = spec.target.websocket.as_ref() else {
        return fail(
            FailureReason::Config,
            "spec.target.websocket is missing for a websocket monitor".into(),
        );
    };
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
    if let Some(m) = &target.message
        && let Err(e) = ws.send(Message::text(m.clone())).await
    {
        return fail(
            FailureReason::Protocol,
            format!("{shown}: cannot send the message: {e}"),
        );
    }
    if let Some(expected) = &target.expected_response {
        let reply = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => break t.as_bytes().to_vec(),
                Some(Ok(Message::Binary(b))) => break b.to_vec(),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => {
                    return fail(
                        FailureReason::Body,
                        format!("{shown}: the server closed before replying"),
                    );
                }
                Some(Err(e)) => return fail(FailureReason::Protocol, format!("{shown}: {e}")),
            }
        };
        let text = String::from_utf8_lossy(&reply);
        let matched = if target.regex.unwrap_or(false) {
            match regex::Regex::new(expected) {
                Ok(re) => re.is_match(&text),
                Err(e) => {
                    return fail(
                        FailureReason::Config,
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
        } else {
            text == expected.as_str()
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
    // Close handshake: send Close, then read until the server's Close (or the end).
    let _ = ws.close(None).await;
    while let Some(Ok(_)) = ws.next().await {}
    let max = spec
        .success_criteria
        .as_ref()
        .and_then(|c| c.websocket.as_ref())
        .and_then(|w| w.max_latency_ms);
    match latency_exceeded(attempt, max) {
        Some(msg) => fail(FailureReason::Assertion, msg),
        None => CheckOutcome::up(attempt.elapsed_ms()),
    }
}
