//! The SMTP provider against a real aiosmtpd server (plain, AUTH, STARTTLS, implicit TLS,
//! 4xx/5xx replies, server down) and the Apprise provider through the real `apprise` CLI
//! delivering to a local `json://` endpoint, and against a fake Apprise API server.
//! aiosmtpd and apprise come from PyPI; `tests/run` installs both.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kubekuma_agent::notify::providers::apprise::ApprisePlan;
use kubekuma_agent::notify::providers::smtp::SmtpPlan;
use kubekuma_agent::notify::providers::{
    Delivered, Message, ProviderContext, SendError, apprise as apprise_provider, smtp,
};
use kubekuma_agent::secrets::{SecretStore, SecretValue};
use kubekuma_crds::notification::{AppriseConfig, SmtpConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};

const NS: &str = "prod";
const PASSWORD: &str = "Sm7p-pa55word!";
const TOKEN: &str = "hookTOKENx9f3k2";

fn msg(event: &str, title: &str, body: &str) -> Message {
    Message {
        title: title.into(),
        body: body.into(),
        event: event.into(),
        state: if event == "up" { "up" } else { "down" }.into(),
        timestamp: Utc::now(),
        event_json: json!({}),
    }
}

fn ctx(secrets: SecretStore) -> ProviderContext {
    let mut ctx = ProviderContext::new(Arc::new(secrets));
    ctx.timeout = Duration::from_secs(15);
    ctx
}

fn secret(name: &str, key: &str, value: &str) -> SecretStore {
    let mut s = SecretStore::default();
    s.insert(
        NS,
        name,
        BTreeMap::from([(key.to_string(), SecretValue::new(value.as_bytes().to_vec()))]),
    );
    s
}

/// Plan a configuration the catalog accepts and send through it.
async fn send_smtp(
    c: &ProviderContext,
    config: &SmtpConfig,
    m: &Message,
) -> Result<Delivered, SendError> {
    let plan = SmtpPlan::of(NS, config).expect("an SMTP configuration the catalog accepts");
    smtp::send(c, &plan, m).await
}

/// Plan a configuration the catalog accepts and send through it.
async fn send_apprise(
    c: &ProviderContext,
    config: &AppriseConfig,
    m: &Message,
) -> Result<Delivered, SendError> {
    let plan = ApprisePlan::of(NS, config).expect("an Apprise configuration the catalog accepts");
    apprise_provider::send(c, &plan, m).await
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------- the aiosmtpd peer

/// An aiosmtpd server; it prints `{"port": N}`, then one JSON line per message received.
/// Recipients `busy@…` get a 451 and `nobody@…` a 550.
const SMTP_PEER: &str = r#"
import asyncio, email, email.policy, json, ssl, sys
from aiosmtpd.smtp import SMTP, AuthResult

cfg = json.loads(sys.argv[1])

def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("busy@"):
            return "451 4.3.0 mailbox busy, try again later"
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        m = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        emit({
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(m["From"]),
            "to": str(m["To"]),
            "subject": str(m["Subject"]),
            "content_type": m.get_content_type(),
            "charset": m.get_content_charset(),
            "body": m.get_content(),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "user": session.auth_data.login.decode() if session.authenticated else None,
        })
        return "250 2.0.0 Ok: queued as KK42"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login.decode() == cfg["user"] and auth_data.password.decode() == cfg["password"]
    return AuthResult(success=ok, handled=False, auth_data=auth_data)

async def main():
    loop = asyncio.get_running_loop()
    ctx = None
    if cfg.get("cert"):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cfg["cert"], cfg["key"])
    mode = cfg["mode"]
    def factory():
        kw = {"hostname": "smtp.test", "loop": loop}
        if mode == "starttls":
            kw.update(tls_context=ctx, require_starttls=True)
        if cfg.get("user"):
            kw.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=(mode == "starttls"))
        return SMTP(Handler(), **kw)
    srv = await loop.create_server(factory, "127.0.0.1", 0, ssl=ctx if mode == "tls" else None)
    emit({"port": srv.sockets[0].getsockname()[1]})
    await srv.serve_forever()

asyncio.run(main())
"#;

struct SmtpPeer {
    port: u16,
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl SmtpPeer {
    /// `mode`: `none`, `starttls` or `tls`; `user`: require AUTH with this name and [`PASSWORD`].
    async fn start(mode: &str, user: Option<&str>) -> SmtpPeer {
        let ok = std::process::Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 cannot import aiosmtpd (the SMTP test peer); tests/run installs it \
             (python3 -m pip install aiosmtpd)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = json!({ "mode": mode, "user": user, "password": PASSWORD });
        if mode != "none" {
            let cert = rcgen::generate_simple_self_signed(vec!["smtp.test".to_string()]).unwrap();
            let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&c, cert.cert.pem()).unwrap();
            std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
            cfg["cert"] = c.to_str().unwrap().into();
            cfg["key"] = k.to_str().unwrap().into();
        }
        let mut child = Command::new("python3")
            .args(["-c", SMTP_PEER, &cfg.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("aiosmtpd did not start")
            .unwrap()
            .expect("aiosmtpd exited");
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .unwrap() as u16;
        SmtpPeer {
            port,
            lines,
            _child: child,
            _dir: dir,
        }
    }

    async fn received(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("no message reached aiosmtpd")
            .unwrap()
            .expect("aiosmtpd exited");
        serde_json::from_str(&line).unwrap()
    }

    /// Whether a message arrives within a short while.
    async fn nothing_received(&mut self) -> bool {
        tokio::time::timeout(Duration::from_millis(500), self.lines.next_line())
            .await
            .is_err()
    }

    fn config(&self, extra: Value) -> SmtpConfig {
        let mut v = json!({
            "host": "127.0.0.1",
            "port": self.port,
            "security": "none",
            "from": "KubeKuma <alerts@example.com>",
            "to": ["ops@example.com"],
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }
}

fn with_password() -> SecretStore {
    secret("smtp-auth", "password", PASSWORD)
}

// ---------------------------------------------------------------- SMTP

#[tokio::test]
async fn smtp_plain_delivers_the_exact_message() {
    let mut peer = SmtpPeer::start("none", None).await;
    let config = peer.config(json!({
        "to": ["ops@example.com", "Dev Team <dev@example.com>"],
    }));
    let m = msg(
        "down",
        "[DOWN] web — Überwachung",
        "web is down\nreason: connection refused ✗",
    );
    let delivered = send_smtp(&ctx(SecretStore::default()), &config, &m)
        .await
        .unwrap();
    assert_eq!(delivered.detail, "250 2.0.0 Ok: queued as KK42");

    let got = peer.received().await;
    assert_eq!(got["mail_from"], "alerts@example.com");
    assert_eq!(
        got["rcpt_tos"],
        json!(["ops@example.com", "dev@example.com"])
    );
    assert_eq!(got["from"], "KubeKuma <alerts@example.com>");
    assert_eq!(got["to"], "ops@example.com, Dev Team <dev@example.com>");
    assert_eq!(got["subject"], m.title);
    assert_eq!(got["content_type"], "text/plain");
    assert_eq!(got["charset"], "utf-8");
    let body = got["body"].as_str().unwrap().replace("\r\n", "\n");
    assert_eq!(body.trim_end_matches('\n'), m.body);
    assert_eq!(got["tls"], false);
    assert_eq!(got["user"], Value::Null);
}

#[tokio::test]
async fn smtp_auth_accepts_the_password_and_rejects_a_wrong_one() {
    let mut peer = SmtpPeer::start("none", Some("kuma")).await;
    let config = peer.config(json!({
        "username": "kuma",
        "passwordSecretRef": {"name": "smtp-auth", "key": "password"},
    }));
    let m = msg("up", "[UP] web", "web is up");
    send_smtp(&ctx(with_password()), &config, &m).await.unwrap();
    assert_eq!(peer.received().await["user"], "kuma");

    let wrong = secret("smtp-auth", "password", "not-the-password");
    let err = send_smtp(&ctx(wrong), &config, &m).await.unwrap_err();
    let SendError::Rejected(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.contains("535"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(peer.nothing_received().await);

    // Without credentials the server refuses the sender: a permanent 530.
    let anonymous = peer.config(json!({}));
    let err = send_smtp(&ctx(SecretStore::default()), &anonymous, &m)
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Rejected(_)), "{err:?}");
}

#[tokio::test]
async fn smtp_starttls_with_skip_tls_verify() {
    let mut peer = SmtpPeer::start("starttls", Some("kuma")).await;
    let config = peer.config(json!({
        "security": "starttls",
        "skipTLSVerify": true,
        "username": "kuma",
        "passwordSecretRef": {"name": "smtp-auth", "key": "password"},
    }));
    let m = msg("down", "[DOWN] db", "db is down");
    send_smtp(&ctx(with_password()), &config, &m).await.unwrap();
    let got = peer.received().await;
    assert_eq!(
        (got["tls"].clone(), got["user"].clone()),
        (json!(true), json!("kuma"))
    );

    // The self-signed certificate is refused without skipTLSVerify, before any login.
    let strict = peer.config(json!({
        "security": "starttls",
        "username": "kuma",
        "passwordSecretRef": {"name": "smtp-auth", "key": "password"},
    }));
    let err = send_smtp(&ctx(with_password()), &strict, &m)
        .await
        .unwrap_err();
    let SendError::Temporary(text) = &err else {
        panic!("{err:?}")
    };
    assert!(
        text.ends_with(": Connection error: invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(peer.nothing_received().await);
}

#[tokio::test]
async fn smtp_implicit_tls() {
    let mut peer = SmtpPeer::start("tls", None).await;
    let config = peer.config(json!({"security": "tls", "skipTlsVerify": true}));
    let m = msg("flapping", "[FLAPPING] api", "api is flapping");
    let delivered = send_smtp(&ctx(SecretStore::default()), &config, &m)
        .await
        .unwrap();
    assert!(delivered.detail.starts_with("250 "), "{delivered:?}");
    let got = peer.received().await;
    assert_eq!(got["tls"], true);
    assert_eq!(got["subject"], "[FLAPPING] api");

    // STARTTLS against an implicit-TLS port: both sides wait for the other to speak first,
    // so the time limit ends it; never plaintext.
    let wrong = peer.config(json!({"security": "starttls", "skipTlsVerify": true}));
    let mut c = ctx(SecretStore::default());
    c.timeout = Duration::from_secs(1);
    let err = send_smtp(&c, &wrong, &m).await.unwrap_err();
    assert!(err.retryable(), "{err:?}");
    assert!(peer.nothing_received().await);
}

#[tokio::test]
async fn smtp_reply_codes_decide_retry() {
    let mut peer = SmtpPeer::start("none", None).await;
    let m = msg("down", "t", "b");
    let c = ctx(SecretStore::default());

    let busy = peer.config(json!({"to": ["busy@example.com"]}));
    let err = send_smtp(&c, &busy, &m).await.unwrap_err();
    let SendError::Temporary(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.contains("451"), "{text}");

    let unknown = peer.config(json!({"to": ["nobody@example.com"]}));
    let err = send_smtp(&c, &unknown, &m).await.unwrap_err();
    let SendError::Rejected(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.contains("550"), "{text}");
    assert!(peer.nothing_received().await);
}

#[tokio::test]
async fn smtp_server_down_is_temporary() {
    let port = free_port();
    let config: SmtpConfig = serde_json::from_value(json!({
        "host": "127.0.0.1", "port": port, "security": "none",
        "from": "alerts@example.com", "to": ["ops@example.com"],
    }))
    .unwrap();
    let err = send_smtp(
        &ctx(SecretStore::default()),
        &config,
        &msg("down", "t", "b"),
    )
    .await
    .unwrap_err();
    let SendError::Temporary(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.starts_with(&format!("127.0.0.1:{port}: ")), "{text}");
}

#[tokio::test]
async fn smtp_configuration_errors_name_the_field() {
    let base = json!({
        "host": "127.0.0.1", "port": free_port(), "security": "none",
        "from": "alerts@example.com", "to": ["ops@example.com"],
    });
    let config = |change: &Value| -> SmtpConfig {
        let mut v = base.clone();
        for (k, x) in change.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    };
    // What the catalog refuses makes no plan.
    let refused = [
        (json!({"from": "not an address"}), "spec.config.smtp.from: "),
        (
            json!({"to": ["ok@example.com", "@@"]}),
            "spec.config.smtp.to[1]: ",
        ),
        (json!({"to": []}), "spec.config.smtp.to: "),
        (json!({"port": 70000}), "spec.config.smtp.port: "),
        (
            json!({"username": "kuma"}),
            "spec.config.smtp.passwordSecretRef: is required with username",
        ),
    ];
    for (change, want) in refused {
        let err = SmtpPlan::of(NS, &config(&change)).unwrap_err().to_string();
        assert!(err.starts_with(want), "{change}: {err}");
    }
    // A Secret missing at send time is known only then.
    let at_send = [
        (
            json!({"username": "kuma", "passwordSecretRef": {"name": "missing", "key": "pw"}}),
            "spec.config.smtp.passwordSecretRef: Secret prod/missing not found",
        ),
        (
            json!({"username": "kuma", "passwordSecretRef": {"name": "smtp-auth", "key": "pw"}}),
            "spec.config.smtp.passwordSecretRef: Secret prod/smtp-auth has no key \"pw\"",
        ),
    ];
    for (change, want) in at_send {
        let err = send_smtp(
            &ctx(with_password()),
            &config(&change),
            &msg("down", "t", "b"),
        )
        .await
        .unwrap_err();
        let SendError::Config(text) = &err else {
            panic!("{change}: {err:?}")
        };
        assert!(text.starts_with(want), "{change}: {text}");
        assert!(!text.contains(PASSWORD), "{text}");
    }
}

// ---------------------------------------------------------------- HTTP sinks

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

struct Sink {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A hyper server recording every request and answering `status` with `reply`.
async fn sink(status: u16, reply: Value) -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (seen, reply) = (seen2.clone(), reply.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (seen, reply) = (seen.clone(), reply.clone());
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let content_type = req
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        let bytes = req.into_body().collect().await.unwrap().to_bytes();
                        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        seen.lock().unwrap().push(Seen {
                            method,
                            path,
                            content_type,
                            body,
                        });
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(reply.to_string())))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Sink { addr, seen }
}

impl Sink {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------- Apprise CLI

fn require_apprise() {
    let ok = std::process::Command::new("apprise")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the apprise CLI is not on PATH; tests/run installs it (python3 -m pip install apprise)"
    );
}

fn apprise_config(v: Value) -> AppriseConfig {
    serde_json::from_value(v).unwrap()
}

fn urls_secret(urls: &str) -> SecretStore {
    secret("apprise-urls", "urls", urls)
}

#[tokio::test]
async fn apprise_cli_delivers_to_json_endpoints() {
    require_apprise();
    let (a, b) = (sink(200, json!({})).await, sink(200, json!({})).await);
    let config = apprise_config(json!({
        "urls": [format!("json://{}/public", a.addr)],
        "urlsSecretRef": {"name": "apprise-urls", "key": "urls"},
    }));
    let secrets = urls_secret(&format!("json://{}/{TOKEN}\n", b.addr));
    let m = msg("down", "[DOWN] web", "web is down\nsince 12:00");
    let delivered = send_apprise(&ctx(secrets), &config, &m).await.unwrap();
    assert_eq!(delivered.detail, "apprise: sent to 2 URL(s)");

    for (sink, path) in [(&a, "/public".to_string()), (&b, format!("/{TOKEN}"))] {
        let seen = sink.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let s = &seen[0];
        assert_eq!(
            (s.method.as_str(), s.path.as_str()),
            ("POST", path.as_str())
        );
        assert_eq!(s.body["title"], m.title);
        assert_eq!(s.body["message"], m.body);
        assert_eq!(s.body["type"], "failure");
    }

    let m = msg("up", "[UP] web", "web is up");
    send_apprise(
        &ctx(SecretStore::default()),
        &apprise_config(json!({
            "urls": [format!("json://{}/public", a.addr)],
        })),
        &m,
    )
    .await
    .unwrap();
    assert_eq!(a.seen()[1].body["type"], "success");
}

#[tokio::test]
async fn apprise_cli_failures_never_show_tokens() {
    require_apprise();
    let failing = sink(500, json!({})).await;
    let down = free_port();
    let config = apprise_config(json!({"urlsSecretRef": {"name": "apprise-urls", "key": "urls"}}));
    let m = msg("down", "t", "b");

    for (url, said) in [
        (format!("json://{}/{TOKEN}", failing.addr), "error=500"),
        (
            format!("json://user:{TOKEN}@127.0.0.1:{down}/x"),
            "A Connection error occurred",
        ),
    ] {
        let err = send_apprise(&ctx(urls_secret(&url)), &config, &m)
            .await
            .unwrap_err();
        let SendError::Temporary(text) = &err else {
            panic!("{err:?}")
        };
        assert!(
            text.starts_with("apprise failed (exit 1): WARNING - "),
            "{text}"
        );
        assert!(text.contains(said), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
    }
    assert_eq!(failing.seen().len(), 1);

    // A schema Apprise does not know: it drops the URL and says so, naming it.
    let unknown = format!("nosuchservice://{TOKEN}/x");
    let err = send_apprise(&ctx(urls_secret(&unknown)), &config, &m)
        .await
        .unwrap_err();
    let SendError::Config(text) = &err else {
        panic!("{err:?}")
    };
    assert!(
        text.starts_with("apprise recognised none of the URLs"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
}

#[cfg(unix)]
#[tokio::test]
async fn apprise_cli_gets_urls_by_environment_not_arguments() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fake = |name: &str, script: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_str().unwrap().to_string()
    };
    let out = dir.path().display();
    let recorder = fake(
        "record",
        &format!("printf '%s\\n' \"$@\" > {out}/args; printf '%s' \"$APPRISE_URLS\" > {out}/env"),
    );
    let secret_urls = format!("json://127.0.0.1:1/{TOKEN}, tgram://123:{TOKEN}/chat");
    let config = apprise_config(json!({
        "urls": ["json://127.0.0.1:1/plain"],
        "urlsSecretRef": {"name": "apprise-urls", "key": "urls"},
    }));
    let mut c = ctx(urls_secret(&secret_urls));
    c.apprise_program = recorder;
    let m = msg("certExpiring", "-t cert", "--body expires soon");
    send_apprise(&c, &config, &m).await.unwrap();
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        [
            "-v",
            "--title=-t cert",
            "--body=--body expires soon",
            "--notification-type=warning"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("env")).unwrap(),
        format!("json://127.0.0.1:1/plain json://127.0.0.1:1/{TOKEN} tgram://123:{TOKEN}/chat")
    );

    // Stuck: killed at the time limit.
    c.apprise_program = fake("stuck", "exec sleep 30");
    c.timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let err = send_apprise(&c, &config, &m).await.unwrap_err();
    assert!(matches!(err, SendError::Temporary(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Missing program, missing Secret, no URL at all.
    c.apprise_program = dir.path().join("absent").display().to_string();
    c.timeout = Duration::from_secs(5);
    let err = send_apprise(&c, &config, &m).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Config(t) if t.starts_with("cannot run the apprise program")),
        "{err:?}"
    );
    let err = send_apprise(&ctx(SecretStore::default()), &config, &m)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SendError::Config(
            "spec.config.apprise.urlsSecretRef: Secret prod/apprise-urls not found".into()
        )
    );
    // No URL at all is refused by the plan; a Secret that holds none, at send time.
    let err = ApprisePlan::of(NS, &AppriseConfig::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.config.apprise.urls: must list at least one Apprise URL (or set urlsSecretRef)"
    );
    let secret_only = apprise_config(json!({
        "urlsSecretRef": {"name": "apprise-urls", "key": "urls"},
    }));
    let err = send_apprise(&ctx(urls_secret(" \n")), &secret_only, &m)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SendError::Config(
            "spec.config.apprise: set urls or urlsSecretRef (or serverUrl with an Apprise API server)"
                .into()
        )
    );
    let bad = urls_secret(&format!("{TOKEN} json://x"));
    let err = send_apprise(&ctx(bad), &config, &m).await.unwrap_err();
    let SendError::Config(text) = &err else {
        panic!("{err:?}")
    };
    assert!(
        text.starts_with("spec.config.apprise.urlsSecretRef: "),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
}

// ---------------------------------------------------------------- Apprise API server

#[tokio::test]
async fn apprise_server_mode_posts_the_stateless_notify() {
    let server = sink(200, json!({})).await;
    let config = apprise_config(json!({
        "urls": ["json://hooks.example/plain"],
        "urlsSecretRef": {"name": "apprise-urls", "key": "urls"},
        "serverUrl": format!("http://{}/", server.addr),
    }));
    let secrets = urls_secret(&format!("discord://1234/{TOKEN}"));
    let m = msg("up", "[UP] web", "web is up");
    let delivered = send_apprise(&ctx(secrets), &config, &m).await.unwrap();
    assert_eq!(delivered.detail, "HTTP 200");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/notify"));
    assert_eq!(s.content_type, "application/json");
    assert_eq!(
        s.body,
        json!({
            "urls": format!("json://hooks.example/plain, discord://1234/{TOKEN}"),
            "title": "[UP] web",
            "body": "web is up",
            "type": "success",
        })
    );

    // Without URLs the server's own stateless URLs apply: no `urls` field. The catalog
    // refuses a provider with neither urls nor urlsSecretRef; a Secret holding no URL
    // reaches the server that way.
    let bare = apprise_config(json!({"serverUrl": format!("http://{}/prefix", server.addr)}));
    let err = ApprisePlan::of(NS, &bare).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.config.apprise.urls: must list at least one Apprise URL (or set urlsSecretRef)"
    );
    let empty = apprise_config(json!({
        "serverUrl": format!("http://{}/prefix", server.addr),
        "urlsSecretRef": {"name": "apprise-urls", "key": "urls"},
    }));
    send_apprise(&ctx(urls_secret("\n")), &empty, &msg("test", "t", "b"))
        .await
        .unwrap();
    let s = &server.seen()[1];
    assert_eq!(s.path, "/prefix/notify");
    assert_eq!(s.body, json!({"title": "t", "body": "b", "type": "info"}));
}

#[tokio::test]
async fn apprise_server_errors_are_classified_without_tokens() {
    let secrets = || urls_secret(&format!("discord://1234/{TOKEN}"));
    let m = msg("down", "t", "b");
    for (status, want_retry) in [
        (424, true),
        (500, true),
        (429, true),
        (400, false),
        (204, false),
    ] {
        let server = sink(
            status,
            json!({"error": format!("could not send to discord://1234/{TOKEN}")}),
        )
        .await;
        let config = apprise_config(json!({
            "urlsSecretRef": {"name": "apprise-urls", "key": "urls"},
            "serverUrl": format!("http://{}", server.addr),
        }));
        let err = send_apprise(&ctx(secrets()), &config, &m)
            .await
            .unwrap_err();
        assert_eq!(err.retryable(), want_retry, "{status}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("HTTP {status}")), "{text}");
        assert!(!text.contains(TOKEN) && !text.contains("1234"), "{text}");
    }

    // Nothing listening: temporary, and the message names the server only.
    let config = apprise_config(json!({
        "urlsSecretRef": {"name": "apprise-urls", "key": "urls"},
        "serverUrl": format!("http://127.0.0.1:{}/", free_port()),
    }));
    let err = send_apprise(&ctx(secrets()), &config, &m)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SendError::Temporary(t) if t.starts_with("Apprise API server 127.0.0.1: ")),
        "{err:?}"
    );
    assert!(!err.to_string().contains(TOKEN));

    // A server URL that is not http(s) makes no plan.
    let bad = apprise_config(json!({"urls": ["json://x"], "serverUrl": "ftp://x"}));
    let err = ApprisePlan::of(NS, &bad).unwrap_err().to_string();
    assert!(
        err.starts_with("spec.config.apprise.serverUrl: must be an http:// or https:// URL"),
        "{err}"
    );
}
