//! The `websocket` check against a local tungstenite server, plain and over TLS with an
//! rcgen CA: handshake, message and reply (exact and regex), the close handshake (answered
//! or not), a server that closes instead of replying or never replies, and a plain TCP
//! responder that refuses the upgrade with HTTP 404.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kubekuma_agent::checks::{self, CheckContext};
use kubekuma_agent::secrets::SecretStore;
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// An echo server that prefixes replies with "echo: "; answers Close with Close.
pub(crate) async fn server(tls: Option<Arc<rustls::ServerConfig>>) -> u16 {
    server_with(tls, Mode::Echo).await
}

/// How the test server behaves after the opening handshake.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Echo text messages, answer Close with Close.
    Echo,
    /// Echo, but never answer Close (the connection stays open, silent).
    NoCloseReply,
    /// Answer a text message with Close (1001 "going away") instead of a reply.
    CloseOnMessage,
    /// Read messages but never reply.
    Silent,
}

async fn server_with(tls: Option<Arc<rustls::ServerConfig>>, mode: Mode) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
                    s: S,
                    mode: Mode,
                ) {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    // Ends after Close: tungstenite queues the Close reply on reading the
                    // client's Close and sends it on the next read, which then ends.
                    while let Some(Ok(m)) = ws.next().await {
                        match (m, mode) {
                            (Message::Text(_), Mode::Silent) => {}
                            (Message::Text(_), Mode::CloseOnMessage) => {
                                let _ = ws
                                    .close(Some(CloseFrame {
                                        code: CloseCode::Away,
                                        reason: "going away".into(),
                                    }))
                                    .await;
                            }
                            (Message::Text(t), _) => {
                                let _ = ws
                                    .send(Message::text(format!("echo: {}", t.as_str())))
                                    .await;
                            }
                            (Message::Close(_), Mode::NoCloseReply) => {
                                // Hold the connection without ever sending the reply.
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                return;
                            }
                            _ => {}
                        }
                    }
                }
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(stream).await {
                            serve(s, mode).await
                        }
                    }
                    None => serve(stream, mode).await,
                }
            });
        }
    });
    port
}

fn pki() -> (CertificateDer<'static>, Arc<rustls::ServerConfig>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap().der().clone();
    let issuer = Issuer::new(ca_params, ca_key);
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, &issuer).unwrap().der().clone();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf, ca.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    (ca, Arc::new(config))
}

async fn run(yaml: String, roots: Vec<CertificateDer<'static>>) -> CheckOutcome {
    run_within(yaml, roots, Duration::from_secs(3)).await
}

async fn run_within(
    yaml: String,
    roots: Vec<CertificateDer<'static>>,
    timeout: Duration,
) -> CheckOutcome {
    let spec: MonitorSpec = serde_yaml_ng::from_str(&yaml).unwrap();
    let ctx = CheckContext::new(
        EffectiveSettings::default(),
        Arc::new(SecretStore::default()),
    )
    .with_extra_roots(roots);
    checks::run_spec(&ctx, "ns", &spec, timeout).await
}

fn ws(url: String, extra: &str) -> String {
    format!("type: websocket\ntarget:\n  websocket:\n    url: \"{url}\"\n{extra}")
}

#[tokio::test]
async fn plain_handshake_message_and_reply() {
    let port = server(None).await;
    let url = format!("ws://127.0.0.1:{port}/socket");
    assert!(run(ws(url.clone(), ""), vec![]).await.up);
    let o = run(
        ws(
            url.clone(),
            "    message: ping\n    expectedResponse: 'echo: ping'\n",
        ),
        vec![],
    )
    .await;
    assert!(o.up, "{o:?}");
    let o = run(
        ws(
            url.clone(),
            "    message: ping\n    expectedResponse: '^echo: p.ng$'\n    regex: true\n",
        ),
        vec![],
    )
    .await;
    assert!(o.up, "{o:?}");
    let o = run(
        ws(url, "    message: ping\n    expectedResponse: pong\n"),
        vec![],
    )
    .await;
    assert_eq!(o.reason, Some(FailureReason::Body));
    assert_eq!(
        o.message.as_deref(),
        Some("reply \"echo: ping\" does not match the expected response")
    );
}

#[tokio::test]
async fn tls_with_a_trusted_ca_and_failures() {
    let (ca, config) = pki();
    let port = server(Some(config)).await;
    let url = format!("wss://localhost:{port}/socket");
    let o = run(
        ws(
            url.clone(),
            "    message: hi\n    expectedResponse: 'echo: hi'\n",
        ),
        vec![ca],
    )
    .await;
    assert!(o.up, "{o:?}");
    let o = run(ws(url.clone(), ""), vec![]).await;
    assert_eq!(o.reason, Some(FailureReason::Tls), "untrusted CA: {o:?}");
    assert!(run(ws(url, "    skipTLSVerify: true\n"), vec![]).await.up);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = run(ws(format!("ws://127.0.0.1:{closed}/"), ""), vec![]).await;
    assert_eq!(o.reason, Some(FailureReason::Connect), "{o:?}");
}

#[tokio::test]
async fn close_handshake_completes_with_a_well_behaved_server() {
    let port = server(None).await;
    let url = format!("ws://127.0.0.1:{port}/socket");
    for extra in [
        "",
        "    message: ping\n    expectedResponse: 'echo: ping'\n",
    ] {
        let o = run(ws(url.clone(), extra), vec![]).await;
        assert!(o.up, "{o:?}");
        assert_eq!(o.message.as_deref(), Some("close handshake completed"));
        assert_eq!(o.metadata["closeHandshake"], true, "{o:?}");
    }
}

#[tokio::test]
async fn a_server_that_never_answers_close_is_still_up() {
    let port = server_with(None, Mode::NoCloseReply).await;
    let url = format!("ws://127.0.0.1:{port}/socket");
    let o = run(
        ws(
            url,
            "    message: ping\n    expectedResponse: 'echo: ping'\n",
        ),
        vec![],
    )
    .await;
    assert!(o.up, "{o:?}");
    assert_eq!(o.reason, None);
    assert_eq!(
        o.message.as_deref(),
        Some("closed without close handshake (no Close reply within 2s)")
    );
    assert_eq!(o.metadata["closeHandshake"], false, "{o:?}");
    // The latency is the exchange's: the 2 s spent waiting for the Close are not in it
    // (a structural bound, not a speed target: with the wait it is at least 2,000 ms).
    assert!(o.latency_ms < 2000.0, "{o:?}");
}

#[tokio::test]
async fn a_handshake_answered_without_101_is_a_status_failure() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the upgrade request up to its blank line, then refuse it.
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let o = run(ws(format!("ws://127.0.0.1:{port}/socket"), ""), vec![]).await;
    assert_eq!(o.reason, Some(FailureReason::Status), "{o:?}");
    assert_eq!(
        o.message,
        Some(format!(
            "ws://127.0.0.1:{port}/socket: the handshake was answered with HTTP 404, expected 101"
        ))
    );
}

#[tokio::test]
async fn a_server_closing_before_replying_is_down_with_its_close_code() {
    let port = server_with(None, Mode::CloseOnMessage).await;
    let url = format!("ws://127.0.0.1:{port}/socket");
    let o = run(
        ws(
            url.clone(),
            "    message: ping\n    expectedResponse: 'echo: ping'\n",
        ),
        vec![],
    )
    .await;
    assert_eq!(o.reason, Some(FailureReason::Body), "{o:?}");
    assert_eq!(
        o.message,
        Some(format!(
            "{url}: the server closed the connection before replying (close code 1001, \"going away\")"
        ))
    );
}

#[tokio::test]
async fn no_reply_within_the_timeout_says_what_was_expected() {
    let port = server_with(None, Mode::Silent).await;
    let url = format!("ws://127.0.0.1:{port}/socket");
    let o = run_within(
        ws(
            url.clone(),
            "    message: ping\n    expectedResponse: '^echo: p.ng$'\n    regex: true\n",
        ),
        vec![],
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(o.reason, Some(FailureReason::Timeout), "{o:?}");
    assert_eq!(
        o.message,
        Some(format!(
            "{url}: no reply to the message within 1s (expected a match of \"^echo: p.ng$\")"
        ))
    );
}
