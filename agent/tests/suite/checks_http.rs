//! The `http` checker against an in-process hyper server on 127.0.0.1 (plain and TLS with
//! rcgen certificates): statuses, redirects, timeouts, criteria, secrets, TLS failures.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{Datelike, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kubekuma_agent::checks::{CheckContext, run_spec as run};
use kubekuma_agent::secrets::{SecretStore, SecretValue};
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::monitor::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::net::TcpListener;

const SECRET: &str = "s3cr3t-Value-42";
const NS: &str = "prod";
const UA: &str = "KubeKuma-test/1.0";
const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- PKI

struct Ca {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "KubeKuma test CA");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf for `names`, valid from `from` to `until` (y, m, d).
fn leaf(
    ca: &Ca,
    names: &[&str],
    from: (i32, u8, u8),
    until: (i32, u8, u8),
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (
        vec![cert.der().clone(), ca.der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// A leaf valid from a year ago until `days` days from today (midnight UTC).
fn leaf_expiring_in(
    ca: &Ca,
    names: &[&str],
    days: i64,
) -> (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    chrono::NaiveDate,
) {
    let until = (Utc::now() + chrono::Duration::days(days)).date_naive();
    let (chain, key) = leaf(
        ca,
        names,
        (Utc::now().year() - 1, 1, 1),
        (until.year(), until.month() as u8, until.day() as u8),
    );
    (chain, key, until)
}

fn server_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Arc<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

// ---------------------------------------------------------------- server

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Server {
    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn route(req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    seen.lock().unwrap().push(Seen {
        method,
        path: path.clone(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });

    let reply = |status: u16, ctype: &str, body: &str| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["ok"] => reply(200, "text/plain; charset=utf-8", "hello"),
        ["json"] => reply(200, "application/json", "{\"ok\":true}"),
        ["status", code] => reply(code.parse().unwrap(), "text/plain", "status"),
        ["redirect", n] => {
            let n: u32 = n.parse().unwrap();
            if n == 0 {
                reply(200, "text/plain", "landed")
            } else {
                Response::builder()
                    .status(302)
                    .header("location", format!("/redirect/{}", n - 1))
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            }
        }
        ["delay", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            reply(200, "text/plain", "late")
        }
        ["slow"] => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            reply(200, "text/plain", "too late")
        }
        ["big"] => reply(200, "text/plain", &"x".repeat(10_000)),
        _ => reply(404, "text/plain", "not found"),
    }
}

async fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (seen2, conns2) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            conns2.fetch_add(1, Ordering::SeqCst);
            let seen = seen2.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(route(req, seen).await) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(acceptor) => {
                        // Handshake failures (expired, wrong name) are the client's to report.
                        if let Ok(tls) = acceptor.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    Server {
        addr,
        seen,
        connections,
    }
}

// ---------------------------------------------------------------- helpers

fn secrets() -> Arc<SecretStore> {
    let mut s = SecretStore::default();
    s.insert(
        NS,
        "api-token",
        [(
            "token".to_string(),
            SecretValue::new(SECRET.as_bytes().to_vec()),
        )]
        .into(),
    );
    Arc::new(s)
}

fn ctx() -> CheckContext {
    let settings = EffectiveSettings {
        user_agent: UA.to_string(),
        ..EffectiveSettings::default()
    };
    CheckContext::new(settings, secrets())
}

fn ctx_trusting(ca: &Ca) -> CheckContext {
    ctx().with_extra_roots(vec![ca.der.clone()])
}

/// An `http` monitor from its manifest's `target.http` and `successCriteria.http` blocks.
fn http_spec(target: serde_json::Value, criteria: serde_json::Value) -> MonitorSpec {
    let mut spec = json!({ "type": "http", "target": { "http": target } });
    if !criteria.is_null() {
        spec["successCriteria"] = json!({ "http": criteria });
    }
    serde_json::from_value(spec).unwrap()
}

async fn check(
    ctx: &CheckContext,
    target: serde_json::Value,
    criteria: serde_json::Value,
) -> CheckOutcome {
    run(ctx, NS, &http_spec(target, criteria), TIMEOUT).await
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
    assert!(!msg(o).contains(SECRET), "secret in message {:?}", msg(o));
}

#[track_caller]
fn assert_up(o: &CheckOutcome) {
    assert!(o.up, "expected up, got {o:?}");
    assert_eq!(o.reason, None);
    assert_eq!(o.message, None);
}

fn status_of(o: &CheckOutcome) -> Option<u64> {
    o.metadata.get("statusCode").and_then(|v| v.as_u64())
}

async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

// ---------------------------------------------------------------- status codes

#[tokio::test]
async fn status_200_is_up_with_latency_and_status_code() {
    let s = serve(None).await;
    let o = check(&ctx(), json!({ "url": s.url("http", "/ok") }), json!(null)).await;
    assert_up(&o);
    assert_eq!(status_of(&o), Some(200));
    assert!(o.latency_ms > 0.0 && o.latency_ms < TIMEOUT.as_secs_f64() * 1000.0);
    assert_eq!(o.cert, None, "plain HTTP has no certificate");
    let seen = s.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].headers.get("user-agent").map(String::as_str),
        Some(UA)
    );
}

#[tokio::test]
async fn status_503_is_down_status() {
    let s = serve(None).await;
    let o = check(
        &ctx(),
        json!({ "url": s.url("http", "/status/503") }),
        json!(null),
    )
    .await;
    assert_down(
        &o,
        FailureReason::Status,
        &["HTTP 503, expected 200-299", &s.url("http", "/status/503")],
    );
    assert_eq!(status_of(&o), Some(503));
}

#[tokio::test]
async fn custom_status_codes_decide() {
    let s = serve(None).await;
    let up = check(
        &ctx(),
        json!({ "url": s.url("http", "/status/503") }),
        json!({ "statusCodes": [503] }),
    )
    .await;
    assert_up(&up);
    assert_eq!(status_of(&up), Some(503));

    let down = check(
        &ctx(),
        json!({ "url": s.url("http", "/ok") }),
        json!({ "statusCodes": [201, 202, 204] }),
    )
    .await;
    assert_down(
        &down,
        FailureReason::Status,
        &["HTTP 200, expected 201-202, 204"],
    );

    // the original implementation's spelling
    let alias = check(
        &ctx(),
        json!({ "url": s.url("http", "/status/418") }),
        json!({ "acceptedStatusCodes": [418] }),
    )
    .await;
    assert_up(&alias);
}

#[tokio::test]
async fn method_and_plain_body_are_sent() {
    let s = serve(None).await;
    let o = check(
        &ctx(),
        json!({ "url": s.url("http", "/ok"), "method": "POST", "body": "ping" }),
        json!(null),
    )
    .await;
    assert_up(&o);
    let seen = s.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].body.as_str()),
        ("POST", "ping")
    );
}

// ---------------------------------------------------------------- redirects

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    let s = serve(None).await;
    let o = check(
        &ctx(),
        json!({ "url": s.url("http", "/redirect/3") }),
        json!(null),
    )
    .await;
    assert_up(&o);
    assert_eq!(status_of(&o), Some(200));
    let paths: Vec<String> = s.seen().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/redirect/3", "/redirect/2", "/redirect/1", "/redirect/0"]
    );

    let exactly = check(
        &ctx(),
        json!({ "url": s.url("http", "/redirect/3"), "maxRedirects": 3 }),
        json!(null),
    )
    .await;
    assert_up(&exactly);
}

#[tokio::test]
async fn too_many_redirects_is_down() {
    let s = serve(None).await;
    let o = check(
        &ctx(),
        json!({ "url": s.url("http", "/redirect/3"), "maxRedirects": 2 }),
        json!(null),
    )
    .await;
    assert_down(
        &o,
        FailureReason::Status,
        &["too many redirects", "maxRedirects 2"],
    );
}

#[tokio::test]
async fn unfollowed_redirect_is_judged_by_status_codes() {
    let s = serve(None).await;
    let down = check(
        &ctx(),
        json!({ "url": s.url("http", "/redirect/1"), "followRedirects": false }),
        json!(null),
    )
    .await;
    assert_down(
        &down,
        FailureReason::Status,
        &["HTTP 302, expected 200-299"],
    );
    assert_eq!(s.seen().len(), 1, "the redirect must not be followed");

    let up = check(
        &ctx(),
        json!({ "url": s.url("http", "/redirect/1"), "followRedirects": false }),
        json!({ "statusCodes": [301, 302] }),
    )
    .await;
    assert_up(&up);
    assert_eq!(status_of(&up), Some(302));
}

// ---------------------------------------------------------------- time

#[tokio::test]
async fn slow_endpoint_times_out() {
    let s = serve(None).await;
    let spec = http_spec(json!({ "url": s.url("http", "/slow") }), json!(null));
    let o = run(&ctx(), NS, &spec, Duration::from_millis(300)).await;
    assert_down(&o, FailureReason::Timeout, &["no answer within 300ms"]);
    assert!(o.latency_ms >= 300.0, "{o:?}");
}

#[tokio::test]
async fn max_latency_exceeded_is_an_assertion() {
    let s = serve(None).await;
    let o = check(
        &ctx(),
        json!({ "url": s.url("http", "/delay/200") }),
        json!({ "maxLatencyMs": 50 }),
    )
    .await;
    assert_down(
        &o,
        FailureReason::Assertion,
        &["more than maxLatencyMs 50", "HTTP 200"],
    );
    assert_eq!(status_of(&o), Some(200));

    let within = check(
        &ctx(),
        json!({ "url": s.url("http", "/ok") }),
        json!({ "maxLatencyMs": 5000 }),
    )
    .await;
    assert_up(&within);
}

// ---------------------------------------------------------------- content

#[tokio::test]
async fn content_type_mismatch_is_an_assertion() {
    let s = serve(None).await;
    let o = check(
        &ctx(),
        json!({ "url": s.url("http", "/ok") }),
        json!({ "contentType": "application/json" }),
    )
    .await;
    assert_down(
        &o,
        FailureReason::Assertion,
        &["Content-Type is \"text/plain; charset=utf-8\", expected \"application/json\""],
    );

    let ok = check(
        &ctx(),
        json!({ "url": s.url("http", "/json") }),
        json!({ "contentType": "Application/JSON" }),
    )
    .await;
    assert_up(&ok);

    // the original implementation's place for it: a case-insensitive prefix
    let legacy = check(
        &ctx(),
        json!({ "url": s.url("http", "/ok"), "expectedContentType": "TEXT/PLAIN" }),
        json!(null),
    )
    .await;
    assert_up(&legacy);
    let legacy_down = check(
        &ctx(),
        json!({ "url": s.url("http", "/ok"), "expectedContentType": "application/json" }),
        json!(null),
    )
    .await;
    assert_down(
        &legacy_down,
        FailureReason::Assertion,
        &["expected \"application/json\""],
    );
}

#[tokio::test]
async fn body_is_read_at_most_max_body_bytes() {
    let s = serve(None).await;
    let o = check(
        &ctx(),
        json!({ "url": s.url("http", "/big"), "maxBodyBytes": 100 }),
        json!(null),
    )
    .await;
    assert_up(&o);
    assert_eq!(o.metadata.get("bodyBytes"), Some(&json!(100)));
    assert_eq!(o.metadata.get("bodyTruncated"), Some(&json!(true)));

    let whole = check(&ctx(), json!({ "url": s.url("http", "/big") }), json!(null)).await;
    assert_eq!(whole.metadata.get("bodyBytes"), Some(&json!(10_000)));
    assert_eq!(whole.metadata.get("bodyTruncated"), None);
}

// ---------------------------------------------------------------- secrets

#[tokio::test]
async fn secrets_reach_the_server_but_never_a_message() {
    let s = serve(None).await;
    let target = |path: &str| {
        json!({
            "url": format!("http://probe:${{SECRET:api-token:token}}@{}{path}?token=${{SECRET:api-token:token}}", s.addr),
            "method": "POST",
            "headers": { "X-Api-Key": "Bearer ${SECRET:api-token:token}", "X-Plain": "visible" },
            "body": "{\"key\":\"${SECRET:api-token:token}\"}",
        })
    };
    let up = check(&ctx(), target("/ok"), json!(null)).await;
    assert_up(&up);
    let seen = s.seen();
    assert_eq!(
        seen[0].headers.get("x-api-key").map(String::as_str),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(
        seen[0].headers.get("x-plain").map(String::as_str),
        Some("visible")
    );
    assert_eq!(seen[0].body, format!("{{\"key\":\"{SECRET}\"}}"));
    // userinfo in the URL becomes basic auth, with the secret resolved
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("probe:{SECRET}"));
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some(format!("Basic {basic}").as_str())
    );

    // A failure prints the URL: without userinfo and query string.
    let down = check(&ctx(), target("/status/500"), json!(null)).await;
    assert_down(
        &down,
        FailureReason::Status,
        &["HTTP 500", &format!("(http://{}/status/500)", s.addr)],
    );
    assert!(!msg(&down).contains("probe"), "{}", msg(&down));
    assert!(!msg(&down).contains("token="), "{}", msg(&down));
}

#[tokio::test]
async fn secret_in_url_path_is_redacted_from_messages() {
    let port = closed_port().await;
    let o = check(
        &ctx(),
        json!({ "url": format!("http://127.0.0.1:{port}/hook/${{SECRET:api-token:token}}/ping") }),
        json!(null),
    )
    .await;
    assert_down(
        &o,
        FailureReason::Connect,
        &[&format!(
            "cannot connect to http://127.0.0.1:{port}/hook/<redacted>/ping"
        )],
    );
}

#[tokio::test]
async fn unresolvable_secret_is_a_config_failure_naming_the_reference() {
    let s = serve(None).await;
    let o = check(
        &ctx(),
        json!({
            "url": s.url("http", "/ok"),
            "headers": { "Authorization": "Bearer ${SECRET:api-token:nope}" },
        }),
        json!(null),
    )
    .await;
    assert_down(
        &o,
        FailureReason::Config,
        &[
            "spec.target.http.headers.Authorization",
            "${SECRET:api-token:nope}",
            "Secret prod/api-token has no key \"nope\"",
        ],
    );
    assert!(s.seen().is_empty(), "nothing may be sent");

    let missing = check(
        &ctx(),
        json!({ "url": "http://127.0.0.1:1/${SECRET:other:key}" }),
        json!(null),
    )
    .await;
    assert_down(
        &missing,
        FailureReason::Config,
        &[
            "spec.target.http.url",
            "${SECRET:other:key}",
            "Secret prod/other not found",
        ],
    );
}

// ---------------------------------------------------------------- network failures

#[tokio::test]
async fn connection_refused_is_connect() {
    let port = closed_port().await;
    let o = check(
        &ctx(),
        json!({ "url": format!("http://127.0.0.1:{port}/") }),
        json!(null),
    )
    .await;
    assert_down(
        &o,
        FailureReason::Connect,
        &[
            &format!("cannot connect to http://127.0.0.1:{port}/"),
            "refused",
        ],
    );
}

#[tokio::test]
async fn unresolvable_host_is_dns() {
    let o = check(
        &ctx(),
        json!({ "url": "http://nonexistent.invalid/health" }),
        json!(null),
    )
    .await;
    assert_down(
        &o,
        FailureReason::Dns,
        &[
            "cannot resolve host nonexistent.invalid",
            "http://nonexistent.invalid/health",
        ],
    );
}

#[tokio::test]
async fn each_check_opens_a_fresh_connection() {
    let s = serve(None).await;
    let ctx = ctx();
    for _ in 0..3 {
        let o = check(&ctx, json!({ "url": s.url("http", "/ok") }), json!(null)).await;
        assert_up(&o);
    }
    assert_eq!(s.connections.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------- TLS

#[tokio::test]
async fn valid_certificate_is_up_and_expiry_is_captured() {
    let ca = ca();
    let (chain, key, until) = leaf_expiring_in(&ca, &["127.0.0.1"], 30);
    let s = serve(Some(server_tls(chain, key))).await;
    let o = check(
        &ctx_trusting(&ca),
        json!({ "url": s.url("https", "/ok") }),
        json!(null),
    )
    .await;
    assert_up(&o);
    let cert = o.cert.expect("certificate captured");
    assert_eq!(cert.expires_at.date_naive(), until);
    let expected = (cert.expires_at - Utc::now()).num_days();
    assert!(
        (cert.days_left - 30).abs() <= 1,
        "days_left {}",
        cert.days_left
    );
    assert!((cert.days_left - expected).abs() <= 1);
}

#[tokio::test]
async fn certificate_is_captured_when_the_status_is_wrong() {
    let ca = ca();
    let (chain, key, until) = leaf_expiring_in(&ca, &["127.0.0.1"], 10);
    let s = serve(Some(server_tls(chain, key))).await;
    let o = check(
        &ctx_trusting(&ca),
        json!({ "url": s.url("https", "/status/503") }),
        json!(null),
    )
    .await;
    assert_down(&o, FailureReason::Status, &["HTTP 503"]);
    let cert = o.cert.expect("certificate captured");
    assert_eq!(cert.expires_at.date_naive(), until);
    assert!(
        (cert.days_left - 10).abs() <= 1,
        "days_left {}",
        cert.days_left
    );
}

#[tokio::test]
async fn expired_certificate_is_tls() {
    let ca = ca();
    let (chain, key) = leaf(&ca, &["127.0.0.1"], (2020, 1, 1), (2021, 1, 1));
    let s = serve(Some(server_tls(chain, key))).await;
    let o = check(
        &ctx_trusting(&ca),
        json!({ "url": s.url("https", "/ok") }),
        json!(null),
    )
    .await;
    assert_down(
        &o,
        FailureReason::Tls,
        &[
            &format!("TLS handshake with {} failed", s.url("https", "/ok")),
            "expired",
        ],
    );
    assert_eq!(o.cert, None);
}

#[tokio::test]
async fn wrong_host_name_is_tls_unless_verification_is_skipped() {
    let ca = ca();
    let (chain, key, _) = leaf_expiring_in(&ca, &["other.example"], 30);
    let s = serve(Some(server_tls(chain, key))).await;
    let ctx = ctx_trusting(&ca);
    let o = check(&ctx, json!({ "url": s.url("https", "/ok") }), json!(null)).await;
    assert_down(
        &o,
        FailureReason::Tls,
        &["TLS handshake", "not valid for name"],
    );

    let skipped = check(
        &ctx,
        json!({ "url": s.url("https", "/ok"), "skipTLSVerify": true }),
        json!(null),
    )
    .await;
    assert_up(&skipped);
    assert!(
        skipped.cert.is_some(),
        "certificate is captured without verification too"
    );

    let original_spelling = check(
        &ctx,
        json!({ "url": s.url("https", "/ok"), "tls": { "verify": false } }),
        json!(null),
    )
    .await;
    assert_up(&original_spelling);
}

#[tokio::test]
async fn untrusted_issuer_is_tls() {
    let ca = ca();
    let (chain, key, _) = leaf_expiring_in(&ca, &["127.0.0.1"], 30);
    let s = serve(Some(server_tls(chain, key))).await;
    // The default context trusts only the system roots, not the test CA.
    let o = check(&ctx(), json!({ "url": s.url("https", "/ok") }), json!(null)).await;
    assert_down(&o, FailureReason::Tls, &["TLS handshake", "UnknownIssuer"]);
}

#[tokio::test]
async fn https_to_a_plain_http_server_is_tls() {
    let s = serve(None).await;
    let o = check(&ctx(), json!({ "url": s.url("https", "/ok") }), json!(null)).await;
    assert_down(&o, FailureReason::Tls, &["TLS handshake"]);
}

// ---------------------------------------------------------------- dispatch

#[tokio::test]
async fn missing_target_block_is_config() {
    let spec: MonitorSpec = serde_json::from_value(json!({
        "type": "http",
        "target": { "tcp": { "host": "127.0.0.1", "port": 80 } },
    }))
    .unwrap();
    let o = run(&ctx(), NS, &spec, TIMEOUT).await;
    assert_down(
        &o,
        FailureReason::Config,
        &["spec.target.http: required for type http (found target.tcp)"],
    );
}

/// A server that presents `chain` only to clients that name `name` in the TLS handshake
/// (SNI) and refuses the handshake otherwise.
fn sni_only_tls(
    name: &'static str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Arc<rustls::ServerConfig> {
    #[derive(Debug)]
    struct ForName(&'static str, Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for ForName {
        fn resolve(
            &self,
            hello: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            (hello.server_name() == Some(self.0)).then(|| self.1.clone())
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let signing = provider.key_provider.load_private_key(key).unwrap();
    let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signing));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ForName(name, certified)));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// `tls.sni`: the handshake names the given server (the certificate is verified against
/// it), while the request still goes to the URL's address with the URL's host in `Host`,
/// redirects included; an invalid name is a configuration error.
#[tokio::test]
async fn tls_sni_names_the_server_while_the_request_goes_to_the_url() {
    let ca = ca();
    let (chain, key, until) = leaf_expiring_in(&ca, &["api.internal.test"], 30);
    let s = serve(Some(sni_only_tls("api.internal.test", chain, key))).await;
    let ctx = ctx_trusting(&ca);

    // Without it, a client names no server for an IP address: the handshake is refused.
    let o = check(&ctx, json!({ "url": s.url("https", "/ok") }), json!(null)).await;
    assert_down(&o, FailureReason::Tls, &[]);
    assert!(s.seen().is_empty());

    let o = check(
        &ctx,
        json!({ "url": s.url("https", "/ok"), "tls": { "sni": "api.internal.test" } }),
        json!(null),
    )
    .await;
    assert_up(&o);
    assert_eq!(
        o.cert
            .expect("certificate captured")
            .expires_at
            .date_naive(),
        until
    );
    let o = check(
        &ctx,
        json!({ "url": s.url("https", "/redirect/2"), "tls": { "sni": "API.internal.test" } }),
        json!(null),
    )
    .await;
    assert_up(&o);
    let seen = s.seen();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/ok", "/redirect/2", "/redirect/1", "/redirect/0"]);
    for r in &seen {
        assert_eq!(r.headers["host"], s.addr.to_string(), "{r:?}");
    }

    // Down messages show the URL as written.
    let o = check(
        &ctx,
        json!({ "url": s.url("https", "/status/503"), "tls": { "sni": "api.internal.test" } }),
        json!(null),
    )
    .await;
    assert_down(&o, FailureReason::Status, &[&s.url("https", "/status/503")]);

    // A name the certificate does not cover fails verification like any wrong name.
    let o = check(
        &ctx,
        json!({ "url": s.url("https", "/ok"), "tls": { "sni": "other.internal.test" } }),
        json!(null),
    )
    .await;
    assert_down(&o, FailureReason::Tls, &[]);

    for bad in ["not a name", "10.0.0.1"] {
        let o = check(
            &ctx,
            json!({ "url": s.url("https", "/ok"), "tls": { "sni": bad } }),
            json!(null),
        )
        .await;
        assert_down(
            &o,
            FailureReason::Config,
            &["spec.target.http.tls.sni", bad],
        );
    }
}
