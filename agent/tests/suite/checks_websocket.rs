//! The `websocket` check against a local tungstenite server, plain and over TLS with an
//! rcgen CA: handshake, message and reply (exact and regex), close handshake.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kubekuma_agent::catalog::secrets::SecretStore;
use kubekuma_agent::checks::{self, CheckContext};
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_tungstenite::tungstenite::Message;

/// An echo server that prefixes replies with "echo: "; closes cleanly.
async fn server(tls: Option<Arc<rustls::ServerConfig>>) -> u16 {
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
                async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: S) {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        match m {
                            Message::Text(t) => {
                                let _ = ws
                                    .send(Message::text(format!("echo: {}", t.as_str())))
                                    .await;
                            }
                            Message::Close(_) => break,
                            _ => {}
                        }
                    }
                }
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(stream).await {
                            echo(s).await
                        }
                    }
                    None => echo(stream).await,
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
    let spec: MonitorSpec = serde_yaml_ng::from_str(&yaml).unwrap();
    let ctx = CheckContext::new(
        EffectiveSettings::default(),
        Arc::new(SecretStore::default()),
    )
    .with_extra_roots(roots);
    checks::run(&ctx, "ns", &spec, Duration::from_secs(3)).await
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
