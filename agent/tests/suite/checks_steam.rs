//! The `steam` check against local UDP responders that implement Valve's Source server
//! query protocol as documented: A2S_INFO, with the S2C_CHALLENGE step.

use std::sync::Arc;
use std::time::Duration;

use kubekuma_agent::checks::{self, CheckContext};
use kubekuma_agent::secrets::SecretStore;
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use tokio::net::UdpSocket;

const CHALLENGE: [u8; 4] = [0x4B, 0x55, 0x4D, 0x41];

fn info_reply(players: u8) -> Vec<u8> {
    let mut v = vec![0xFF, 0xFF, 0xFF, 0xFF, 0x49, 17];
    for s in ["KubeKuma Test Server", "de_dust2", "csgo", "Counter-Strike"] {
        v.extend_from_slice(s.as_bytes());
        v.push(0);
    }
    v.extend_from_slice(&730u16.to_le_bytes());
    v.extend_from_slice(&[players, 24, 2, b'd', b'l', 0, 1]);
    v.extend_from_slice(b"1.38.7.9\0");
    v
}

/// A responder: challenges requests without the right challenge, then answers. Mode
/// `lossy` loses the first request and the first request carrying the challenge, as a
/// network dropping datagrams would.
pub(crate) async fn responder(mode: &'static str) -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let (mut lost_plain, mut lost_challenged) = (false, false);
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let req = &buf[..n];
            assert_eq!(&req[..4], &[0xFF; 4]);
            assert_eq!(&req[4..25], b"TSource Engine Query\0");
            if mode == "lossy" {
                let lost = if req[25..] == CHALLENGE {
                    &mut lost_challenged
                } else {
                    &mut lost_plain
                };
                if !*lost {
                    *lost = true;
                    continue;
                }
            }
            let reply = match mode {
                "silent" => continue,
                "garbage" => b"\xFF\xFF\xFF\xFFIbroken".to_vec(),
                _ if req[25..] != CHALLENGE => {
                    let mut c = vec![0xFF, 0xFF, 0xFF, 0xFF, 0x41];
                    c.extend_from_slice(&CHALLENGE);
                    c
                }
                "empty" => info_reply(0),
                _ => info_reply(7),
            };
            let _ = sock.send_to(&reply, peer).await;
        }
    });
    port
}

async fn run(port: u16, extra: &str) -> CheckOutcome {
    run_within(port, extra, Duration::from_millis(800)).await
}

async fn run_within(port: u16, extra: &str, timeout: Duration) -> CheckOutcome {
    let spec: MonitorSpec = serde_yaml_ng::from_str(&format!(
        "type: steam\ntarget:\n  steam: {{host: 127.0.0.1, port: {port}}}\n{extra}"
    ))
    .unwrap();
    let ctx = CheckContext::new(
        EffectiveSettings::default(),
        Arc::new(SecretStore::default()),
    );
    checks::run_spec(&ctx, "ns", &spec, timeout).await
}

#[tokio::test]
async fn answers_after_the_challenge_with_name_map_and_players() {
    let port = responder("ok").await;
    let o = run(port, "").await;
    assert!(o.up, "{o:?}");
    assert_eq!(o.metadata["serverName"], "KubeKuma Test Server");
    assert_eq!(o.metadata["map"], "de_dust2");
    assert_eq!(o.metadata["players"], 7);
    assert_eq!(o.metadata["maxPlayers"], 24);
    assert_eq!(o.metadata["bots"], 2);
    assert_eq!(
        o.message.as_deref(),
        Some("\"KubeKuma Test Server\", map de_dust2, 7/24 players (2 bots)")
    );
    assert!(!o.metadata.contains_key("retransmits"), "{o:?}");
}

#[tokio::test]
async fn lost_datagrams_are_retransmitted_in_both_steps() {
    let port = responder("lossy").await;
    let o = run_within(port, "", Duration::from_secs(3)).await;
    assert!(o.up, "{o:?}");
    assert_eq!(
        o.message.as_deref(),
        Some("\"KubeKuma Test Server\", map de_dust2, 7/24 players (2 bots)")
    );
    assert_eq!(o.metadata["players"], 7);
    assert_eq!(o.metadata["retransmits"], 2, "{o:?}");
}

#[tokio::test]
async fn min_players_is_a_criterion() {
    let port = responder("empty").await;
    let o = run(port, "successCriteria:\n  steam: {minPlayers: 1}\n").await;
    assert_eq!(o.reason, Some(FailureReason::Assertion));
    assert_eq!(
        o.message.as_deref(),
        Some("0 players on \"KubeKuma Test Server\", expected at least 1")
    );
}

#[tokio::test]
async fn malformed_silent_and_closed() {
    let o = run(responder("garbage").await, "").await;
    assert_eq!(o.reason, Some(FailureReason::Protocol), "{o:?}");
    assert!(
        o.message
            .as_deref()
            .unwrap()
            .contains("malformed A2S_INFO reply")
    );
    let port = responder("silent").await;
    let o = run(port, "").await;
    assert_eq!(o.reason, Some(FailureReason::Timeout), "{o:?}");
    let msg = o.message.as_deref().unwrap();
    assert!(
        msg.starts_with(&format!(
            "127.0.0.1:{port}: no answer to A2S_INFO within 800ms ("
        )) && msg.ends_with(" requests sent)"),
        "retransmitted, then gave up before the timeout: {msg}"
    );
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let o = run(closed, "").await;
    assert_eq!(o.reason, Some(FailureReason::Connect), "{o:?}");
}
