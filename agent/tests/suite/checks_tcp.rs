//! The `tcp` checker against tiny servers on 127.0.0.1: connect, refused, send/expect,
//! a mismatching reply, latency, and TLS-wrapped TCP with an rcgen CA.

use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, Utc};
use kubekuma_agent::checks::{CheckContext, run_spec as run};
use kubekuma_agent::secrets::SecretStore;
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::monitor::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const NS: &str = "prod";
const TIMEOUT: Duration = Duration::from_secs(10);

fn ctx() -> CheckContext {
    CheckContext::new(
        EffectiveSettings::default(),
        Arc::new(SecretStore::default()),
    )
}

fn tcp_spec(target: serde_json::Value, criteria: serde_json::Value) -> MonitorSpec {
    let mut spec = json!({ "type": "tcp", "target": { "tcp": target } });
    if !criteria.is_null() {
        spec["successCriteria"] = json!({ "tcp": criteria });
    }
    serde_json::from_value(spec).unwrap()
}

async fn check(ctx: &CheckContext, target: serde_json::Value) -> CheckOutcome {
    run(ctx, NS, &tcp_spec(target, json!(null)), TIMEOUT).await
}

fn msg(o: &CheckOutcome) -> &str {
    o.message.as_deref().unwrap_or("")
}

#[track_caller]
fn assert_down(o: &CheckOutcome, reason: FailureReason, parts: &[&str]) {
    eprintln!("{:?}: {}", o.reason, msg(o));
    assert!(!o.up, "expected down ({reason}), got {o:?}");
    assert_eq!(o.reason, Some(reason), "{o:?}");
    for p in parts {
        assert!(msg(o).contains(p), "message {:?} lacks {p:?}", msg(o));
    }
}

#[track_caller]
fn assert_up(o: &CheckOutcome) {
    assert!(o.up, "expected up, got {o:?}");
    assert_eq!((o.reason, o.message.as_deref()), (None, None));
}

/// What a test server does with one connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Accept and hold the connection open.
    Hold,
    /// Answer `+PONG\r\n` to exactly `PING\r\n`, `-ERR\r\n` to anything else.
    Pong,
    /// Send a long banner, then close.
    Banner,
    /// Wait 200 ms, then send `READY\n`.
    Late,
}

async fn behave<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, b: Behaviour) {
    match b {
        Behaviour::Hold => {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
        }
        Behaviour::Pong => {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while !got.ends_with(b"\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let reply: &[u8] = if got == b"PING\r\n" {
                b"+PONG\r\n"
            } else {
                b"-ERR\r\n"
            };
            let _ = s.write_all(reply).await;
            let _ = s.flush().await;
            let _ = s.read(&mut buf).await;
        }
        Behaviour::Banner => {
            let _ = s
                .write_all(
                    b"220 mail.example ESMTP ready\r\nthis banner goes on for much longer than sixty characters\r\n",
                )
                .await;
            let _ = s.shutdown().await;
        }
        Behaviour::Late => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = s.write_all(b"READY\n").await;
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
        }
    }
}

async fn serve(b: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(stream).await {
                            behave(tls, b).await;
                        }
                    }
                    None => behave(stream, b).await,
                }
            });
        }
    });
    port
}

async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

// ---------------------------------------------------------------- plain TCP

#[tokio::test]
async fn connect_is_up() {
    let port = serve(Behaviour::Hold, None).await;
    let o = check(&ctx(), json!({ "host": "127.0.0.1", "port": port })).await;
    assert_up(&o);
    assert_eq!(
        o.metadata.get("address"),
        Some(&json!(format!("127.0.0.1:{port}")))
    );
    assert_eq!(o.cert, None);
    assert!(o.latency_ms > 0.0);
}

#[tokio::test]
async fn refused_is_connect() {
    let port = closed_port().await;
    let o = check(&ctx(), json!({ "host": "127.0.0.1", "port": port })).await;
    assert_down(
        &o,
        FailureReason::Connect,
        &[&format!("cannot connect to 127.0.0.1:{port}"), "refused"],
    );
}

#[tokio::test]
async fn unresolvable_host_is_dns() {
    let o = check(&ctx(), json!({ "host": "nonexistent.invalid", "port": 80 })).await;
    assert_down(
        &o,
        FailureReason::Dns,
        &["cannot resolve host nonexistent.invalid"],
    );
}

#[tokio::test]
async fn send_with_escapes_and_expect_is_up() {
    let port = serve(Behaviour::Pong, None).await;
    // As written in a YAML manifest without interpretation: backslash sequences.
    let o = check(
        &ctx(),
        json!({ "host": "127.0.0.1", "port": port, "send": "PING\\r\\n", "expect": "+PONG" }),
    )
    .await;
    assert_up(&o);
}

#[tokio::test]
async fn expect_mismatch_is_body_with_a_short_excerpt() {
    let port = serve(Behaviour::Pong, None).await;
    let spec = tcp_spec(
        json!({ "host": "127.0.0.1", "port": port, "send": "PING\n", "expect": "+PONG" }),
        json!(null),
    );
    let o = run(&ctx(), NS, &spec, Duration::from_secs(1)).await;
    // "PING\n" without \r gets -ERR; the server then holds the connection open, so the
    // checker stops at its soft deadline and reports what it got.
    assert_down(
        &o,
        FailureReason::Body,
        &[
            &format!("expected \"+PONG\" in the reply of 127.0.0.1:{port}"),
            "got \"-ERR\\r\\n\"",
            "no more data in time",
        ],
    );
}

#[tokio::test]
async fn long_banner_mismatch_is_cut_to_sixty_characters() {
    let port = serve(Behaviour::Banner, None).await;
    let o = check(
        &ctx(),
        json!({ "host": "127.0.0.1", "port": port, "expect": "SSH-2.0" }),
    )
    .await;
    let excerpt = "220 mail.example ESMTP ready\\r\\nthis banner goes on for much l…";
    assert_down(
        &o,
        FailureReason::Body,
        &[
            "expected \"SSH-2.0\"",
            &format!("got \"{excerpt}\""),
            "then closed the connection",
        ],
    );
    assert!(msg(&o).len() < 200, "{}", msg(&o));
}

#[tokio::test]
async fn silence_is_timeout_when_a_reply_is_expected() {
    let port = serve(Behaviour::Hold, None).await;
    let spec = tcp_spec(
        json!({ "host": "127.0.0.1", "port": port, "expect": "hello" }),
        json!(null),
    );
    let o = run(&ctx(), NS, &spec, Duration::from_millis(300)).await;
    assert_down(
        &o,
        FailureReason::Timeout,
        &[&format!("no reply from 127.0.0.1:{port} within 300ms")],
    );
}

#[tokio::test]
async fn max_latency_exceeded_is_an_assertion() {
    let port = serve(Behaviour::Late, None).await;
    let target = json!({ "host": "127.0.0.1", "port": port, "expect": "READY" });
    let slow = run(
        &ctx(),
        NS,
        &tcp_spec(target.clone(), json!({ "maxLatencyMs": 50 })),
        TIMEOUT,
    )
    .await;
    assert_down(
        &slow,
        FailureReason::Assertion,
        &[
            &format!("127.0.0.1:{port} took"),
            "more than maxLatencyMs 50",
        ],
    );
    let fine = run(
        &ctx(),
        NS,
        &tcp_spec(target, json!({ "maxLatencyMs": 5000 })),
        TIMEOUT,
    )
    .await;
    assert_up(&fine);
}

#[tokio::test]
async fn invalid_port_is_config() {
    let o = check(&ctx(), json!({ "host": "127.0.0.1", "port": 70000 })).await;
    assert_down(
        &o,
        FailureReason::Config,
        &["spec.target.tcp.port: must be at most 65535, got 70000"],
    );
}

// ---------------------------------------------------------------- TLS

struct Pki {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    until: chrono::NaiveDate,
}

/// A CA and a leaf for `names` it signed, expiring in 20 days.
fn pki(names: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "KubeKuma TCP test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap().der().clone();
    let issuer = Issuer::new(ca_params, ca_key);

    let until = (Utc::now() + chrono::Duration::days(20)).date_naive();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.not_before = rcgen::date_time_ymd(Utc::now().year() - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
    let key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, &issuer).unwrap().der().clone();
    Pki {
        chain: vec![leaf, ca.clone()],
        ca,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        until,
    }
}

fn server_tls(p: &Pki) -> Arc<rustls::ServerConfig> {
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(p.chain.clone(), p.key.clone_key())
        .unwrap(),
    )
}

#[tokio::test]
async fn tls_with_trusted_ca_sends_expects_and_captures_the_certificate() {
    let p = pki(&["127.0.0.1"]);
    let port = serve(Behaviour::Pong, Some(server_tls(&p))).await;
    let ctx = ctx().with_extra_roots(vec![p.ca.clone()]);
    let o = check(
        &ctx,
        json!({
            "host": "127.0.0.1", "port": port, "send": "PING\\r\\n", "expect": "+PONG",
            "tls": { "enabled": true },
        }),
    )
    .await;
    assert_up(&o);
    let cert = o.cert.expect("certificate captured");
    assert_eq!(cert.expires_at.date_naive(), p.until);
    assert!(
        (cert.days_left - 20).abs() <= 1,
        "days_left {}",
        cert.days_left
    );
}

#[tokio::test]
async fn tls_sni_names_the_certificate_to_verify() {
    let p = pki(&["db.internal.example"]);
    let port = serve(Behaviour::Hold, Some(server_tls(&p))).await;
    let ctx = ctx().with_extra_roots(vec![p.ca.clone()]);
    let wrong = check(
        &ctx,
        json!({ "host": "127.0.0.1", "port": port, "tls": { "enabled": true } }),
    )
    .await;
    assert_down(
        &wrong,
        FailureReason::Tls,
        &[
            &format!("TLS handshake with 127.0.0.1:{port} failed"),
            "not valid for name",
        ],
    );
    let right = check(
        &ctx,
        json!({
            "host": "127.0.0.1", "port": port,
            "tls": { "enabled": true, "sni": "db.internal.example" },
        }),
    )
    .await;
    assert_up(&right);
    assert!(right.cert.is_some());
}

#[tokio::test]
async fn tls_untrusted_is_tls_unless_verify_is_false() {
    let p = pki(&["127.0.0.1"]);
    let port = serve(Behaviour::Hold, Some(server_tls(&p))).await;
    let o = check(
        &ctx(),
        json!({ "host": "127.0.0.1", "port": port, "tls": { "enabled": true } }),
    )
    .await;
    assert_down(&o, FailureReason::Tls, &["TLS handshake", "UnknownIssuer"]);

    let unverified = check(
        &ctx(),
        json!({ "host": "127.0.0.1", "port": port, "tls": { "enabled": true, "verify": false } }),
    )
    .await;
    assert_up(&unverified);
    assert!(unverified.cert.is_some());
}

#[tokio::test]
async fn tls_against_a_plain_server_is_tls() {
    let port = serve(Behaviour::Banner, None).await;
    let o = check(
        &ctx(),
        json!({ "host": "127.0.0.1", "port": port, "tls": { "enabled": true } }),
    )
    .await;
    assert_down(
        &o,
        FailureReason::Tls,
        &[&format!("TLS handshake with 127.0.0.1:{port} failed")],
    );
}
