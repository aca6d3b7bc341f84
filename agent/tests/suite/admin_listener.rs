//! The listener under attack, through the real `admin::serve_with` on 127.0.0.1: slow
//! connections (a header line now and then, or one byte and silence) from one address and
//! from many, a slow body, forged `X-Forwarded-For`, and the security headers and
//! redirects of what it serves. Other loopback addresses (127.0.0.2, …) stand for other
//! clients.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kubekuma_agent::admin::listen::ListenOptions;
use kubekuma_agent::admin::{self, Api, Health};
use kubekuma_agent::checks::{CheckContext, run_spec};
use kubekuma_agent::secrets::SecretStore;
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::monitor::MonitorSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// Long enough for anything this test waits for; a connection the listener never closes
/// makes the test fail here instead of hanging.
const GIVE_UP: Duration = Duration::from_secs(60);

fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

struct Server {
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

async fn start(api: Api, opts: ListenOptions) -> Server {
    let (stop, stop_rx) = watch::channel(false);
    let (addr, _task) = admin::serve_with("127.0.0.1:0", Arc::new(api), opts, stop_rx)
        .await
        .unwrap();
    Server { addr, _stop: stop }
}

fn health_api() -> Api {
    let health = Arc::new(Health::default());
    health.set_ready(true);
    Api::new(health)
}

async fn connect_from(local: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(local, 0))?;
    s.connect(to).await
}

/// A client at `local`.
fn client_at(local: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A slow client on `s`: the start of a request, then one header line every `every`,
/// never the end. Returns the number of lines it sent before the listener closed the
/// connection.
async fn slow_headers(mut s: TcpStream, every: Duration) -> usize {
    if s.write_all(b"GET /health HTTP/1.1\r\nhost: kubekuma\r\n")
        .await
        .is_err()
    {
        return 0;
    }
    let mut lines = 0;
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            // Closed (or, which would be wrong too, answered): either way it is over.
            _ = s.read(&mut buf) => return lines,
            _ = tokio::time::sleep(every) => {
                if s.write_all(format!("x-slow-{lines}: still here\r\n").as_bytes()).await.is_err() {
                    return lines;
                }
                lines += 1;
            }
        }
    }
}

/// A client that sends `hello` (one byte, not enough to tell HTTP/1 from HTTP/2; or the
/// HTTP/2 preface and settings, and no request) and nothing more. Returns once the
/// listener closed the connection.
async fn silent(local: IpAddr, to: SocketAddr, hello: &'static [u8]) {
    let Ok(mut s) = connect_from(local, to).await else {
        return;
    };
    let _ = s.write_all(hello).await;
    let mut buf = [0u8; 256];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn tcp_spec(port: u16) -> MonitorSpec {
    serde_json::from_value(serde_json::json!({
        "type": "tcp",
        "target": { "tcp": { "host": "127.0.0.1", "port": port } }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_are_cut_and_health_answers_throughout() {
    let opts = ListenOptions {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        max_connections: Some(24),
        max_per_client: Some(8),
        health_slots: 4,
        ..ListenOptions::default()
    };
    let server = start(health_api(), opts).await;

    // The attack: 200 connections from 127.0.0.1 sending a header line every 150 ms, and
    // 20 from 127.0.0.3 that send one byte, or open HTTP/2 without a request, and go
    // silent. Without limits every one of
    // them is held for as long as it trickles.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let s = connect_from(lo(1), server.addr).await.unwrap();
        slow.push(tokio::spawn(slow_headers(s, Duration::from_millis(150))));
    }
    let silent: Vec<_> = (0..20)
        .map(|n| {
            let hello: &'static [u8] = if n % 2 == 0 { b"G" } else { H2_HELLO };
            tokio::spawn(silent(lo(3), server.addr, hello))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile a fresh client is answered, with the security headers.
    let fresh = client_at(lo(2));
    for _ in 0..5 {
        let r = fresh
            .get(format!("http://{}/health", server.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Over HTTP/2 too.
    let h2 = reqwest::Client::builder()
        .local_address(lo(2))
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .get(format!("http://{}/health", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_2)
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    // And a TCP check of another service still works.
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = target.accept().await {
            drop(s);
        }
    });
    let ctx = CheckContext::new(
        EffectiveSettings::default(),
        Arc::new(SecretStore::default()),
    );
    let outcome = run_spec(&ctx, "default", &tcp_spec(port), Duration::from_secs(10)).await;
    assert!(outcome.up, "{outcome:?}");

    // Every slow connection is closed: those beyond the per-client limit at once, the
    // (at most) eight admitted by the header timeout while they still trickle.
    let lines = tokio::time::timeout(GIVE_UP, futures::future::join_all(slow))
        .await
        .expect("the listener closes every slow connection");
    let lines: Vec<usize> = lines.into_iter().map(|r| r.unwrap()).collect();
    let held = lines.iter().filter(|&&n| n >= 3).count();
    assert!(
        (1..=8).contains(&held),
        "{held} connections held for a while: {lines:?}"
    );
    tokio::time::timeout(GIVE_UP, futures::future::join_all(silent))
        .await
        .expect("the listener closes connections that never finish a request");

    // After the attack the first address is welcome again.
    let r = client_at(lo(1))
        .get(format!("http://{}/ready", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_slots_answer_when_every_other_slot_is_taken() {
    let opts = ListenOptions {
        // Long: the attackers must hold their slots while this test asks.
        header_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(20),
        max_connections: Some(24),
        max_per_client: Some(8),
        health_slots: 4,
        ..ListenOptions::default()
    };
    let server = start(health_api(), opts).await;
    // Four addresses, eight connections each: the 20 general slots are gone.
    let mut held = Vec::new();
    for a in 11..=14 {
        for _ in 0..8 {
            let mut s = connect_from(lo(a), server.addr).await.unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // An address that holds nothing gets a health slot: /health answers ...
    let r = client_at(lo(21))
        .get(format!("http://{}/health", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["connection"], "close");
    // ... and everything else is politely refused there.
    let r = client_at(lo(22))
        .get(format!("http://{}/api/v1/monitors", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "busy");
    // An attacking address (127.0.0.13 holds four general slots, below its limit of
    // eight) cannot take a health slot as well.
    let refused = client_at(lo(13))
        .get(format!("http://{}/health", server.addr))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_and_an_idle_connection_is_closed() {
    let opts = ListenOptions {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        ..ListenOptions::default()
    };
    let server = start(health_api(), opts).await;
    let mut s = connect_from(lo(1), server.addr).await.unwrap();
    s.write_all(
        b"POST /api/v1/push/abcdefgh HTTP/1.1\r\nhost: k\r\ncontent-length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(GIVE_UP, s.read_to_string(&mut reply))
        .await
        .expect("the listener gives up on the body")
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("request_timeout"), "{reply}");

    // A keep-alive connection that asked once and then stays silent is closed.
    let mut s = connect_from(lo(1), server.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: k\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(GIVE_UP, s.read_to_end(&mut all))
        .await
        .expect("an idle connection is closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
}

/// Ten unknown push tokens from one client, then 429: who "one client" is shows whose
/// address the listener used.
async fn push(client: &reqwest::Client, addr: SocketAddr, forwarded: Option<&str>) -> u16 {
    let mut req = client.get(format!("http://{addr}/api/v1/push/unknown-token"));
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    // Nobody trusted: a client forging a new address each time is still one client.
    let server = start(health_api(), ListenOptions::default()).await;
    let c = client_at(lo(1));
    for n in 0..10 {
        let forged = format!("198.51.100.{n}");
        assert_eq!(push(&c, server.addr, Some(&forged)).await, 404);
    }
    assert_eq!(push(&c, server.addr, Some("198.51.100.99")).await, 429);

    // 127.0.0.31 is a trusted proxy: the clients it names have budgets of their own.
    let server = start(
        health_api(),
        ListenOptions {
            trusted_proxies: vec!["127.0.0.31/32".parse().unwrap()],
            ..ListenOptions::default()
        },
    )
    .await;
    let proxy = client_at(lo(31));
    for _ in 0..10 {
        assert_eq!(push(&proxy, server.addr, Some("198.51.100.1")).await, 404);
    }
    assert_eq!(push(&proxy, server.addr, Some("198.51.100.1")).await, 429);
    assert_eq!(push(&proxy, server.addr, Some("198.51.100.2")).await, 404);
    // What the client put in front of the proxy's entry changes nothing.
    assert_eq!(
        push(&proxy, server.addr, Some("203.0.113.7, 198.51.100.1")).await,
        429
    );
    // Another, untrusted peer of the same listener is not believed.
    let other = client_at(lo(32));
    for n in 0..10 {
        let forged = format!("192.0.2.{n}");
        assert_eq!(push(&other, server.addr, Some(&forged)).await, 404);
    }
    assert_eq!(push(&other, server.addr, Some("192.0.2.200")).await, 429);
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_redirects_stay_home() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("status")).unwrap();
    std::fs::write(dir.path().join("status/index.html"), "<p>up</p>").unwrap();
    std::fs::write(dir.path().join("status/status.json"), "{}").unwrap();
    let server = start(
        health_api().with_site(dir.path().to_path_buf()),
        ListenOptions::default(),
    )
    .await;
    let c = client_at(lo(1));
    let get = |path: &str| c.get(format!("http://{}{path}", server.addr)).send();
    for (path, status, html) in [
        ("/health", 200, false),
        ("/ready", 200, false),
        ("/status/", 200, true),
        ("/status/status.json", 200, false),
        ("/nothing-here", 404, false),
        ("/api/v1/push/unknown", 404, false),
        ("/api/v1/monitors", 404, false),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        if html {
            assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        } else {
            assert!(csp.starts_with("default-src 'none'"), "{path}: {csp}");
        }
    }
    // `//status` is the same folder: its redirect is `/status/`, not the
    // protocol-relative `//status/` (another host to a browser).
    for path in ["/status", "//status", "///status", "/./status"] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 301, "{path}");
        assert_eq!(r.headers()["location"], "/status/", "{path}");
    }
}

/// A client that keeps a slow connection open from `local` until `stop`, opening a new
/// one whenever the listener closes it.
async fn keep_attacking(local: IpAddr, to: SocketAddr, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if let Ok(s) = connect_from(local, to).await {
            slow_headers(s, Duration::from_millis(300)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The attack of the issue against the real binary with few descriptors (`ulimit -n
/// 320`): a thousand slow connections from ten addresses, reopened as soon as they are
/// closed. The agent's own check of another service keeps running (it would fail with
/// "Too many open files" if the listener took every descriptor), and `/health` keeps
/// answering a client that holds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_with_few_descriptors_keeps_checking_while_attacked() {
    // This process holds a thousand client sockets.
    kubekuma_agent::admin::listen::raise_nofile_limit();
    let dir = tempfile::tempdir().unwrap();
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = target.local_addr().unwrap().port();
    let checks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let checks = checks.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = target.accept().await {
                checks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        });
    }
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("m.yaml"),
        format!(
            "apiVersion: monitoring.kubekuma.io/v1\nkind: KubeKumaSettings\nmetadata: {{name: kubekuma}}\nspec:\n  scheduler: {{minIntervalSeconds: 1, jitterPercent: 0}}\n---\napiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {{name: other-service, namespace: e2e}}\nspec:\n  type: tcp\n  schedule: {{intervalSeconds: 1, timeoutSeconds: 1}}\n  target:\n    tcp: {{host: 127.0.0.1, port: {target_port}}}\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 320 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_kubekuma"))
        .args([
            "agent",
            "--listen",
            &addr.to_string(),
            "--header-timeout",
            "2",
        ])
        .arg("--config")
        .arg(&manifests)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("SESSION_SECRET", "0123456789abcdef0123456789abcdef-test")
        .env("LOG_LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let watcher = client_at(lo(2));
    let health = format!("http://{addr}/health");
    let mut started = false;
    for _ in 0..600 {
        if watcher
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started, "the agent did not start");

    let (stop, stop_rx) = watch::channel(false);
    let mut attackers = Vec::new();
    for a in [1u8, 3, 4, 5, 6, 7, 8, 9, 10, 11] {
        for _ in 0..100 {
            attackers.push(tokio::spawn(keep_attacking(lo(a), addr, stop_rx.clone())));
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Under attack: the check of the other service still reaches it, again and again ...
    let before = checks.load(std::sync::atomic::Ordering::SeqCst);
    let checked = tokio::time::timeout(GIVE_UP, async {
        while checks.load(std::sync::atomic::Ordering::SeqCst) < before + 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // ... and /health answers a client that holds no connection.
    let mut answered = false;
    for _ in 0..50 {
        if watcher
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send_replace(true);
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    for a in attackers {
        a.abort();
    }
    assert!(
        checked.is_ok(),
        "the agent stopped checking under attack: {log}"
    );
    assert!(answered, "/health did not answer under attack: {log}");
    assert!(!log.contains("Too many open files"), "{log}");
}
