//! The `ping` checker: echo requests to 127.0.0.1 and ::1, the TCP fallback to a local
//! listener and to a closed port, the explanation when ICMP is not permitted, an
//! unresolvable host and a host that never replies.
//!
//! Whether this process may open ICMP sockets depends on where the tests run (root or
//! CAP_NET_RAW for raw sockets; the sysctl `net.ipv4.ping_group_range` for unprivileged
//! ones). Each test reads that from `/proc` independently of the checker and asserts the
//! behaviour expected there: echo replies when ICMP is possible, the fallback (or the
//! explanation) when it is not. The forced fallback is also covered by the unit tests in
//! `agent/src/checks/ping.rs`, whatever the environment. The unprivileged datagram socket
//! is exercised through `kubekuma check` in a network namespace of its own
//! (`unshare --net`), whose `ping_group_range` the test sets.

use std::sync::Arc;
use std::time::Duration;

use kubekuma_agent::checks::{CheckContext, run_spec as run};
use kubekuma_agent::secrets::SecretStore;
use kubekuma_crds::KubeKumaSettingsSpec;
use kubekuma_crds::monitor::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use tokio::net::TcpListener;

const NS: &str = "prod";
const TIMEOUT: Duration = Duration::from_secs(10);

/// A context whose settings allow raw ICMP sockets or not.
fn ctx(privileged: bool) -> CheckContext {
    let settings: KubeKumaSettingsSpec = serde_yaml_ng::from_str(&format!(
        "networking:\n  ping:\n    privileged: {privileged}\n"
    ))
    .unwrap();
    let settings = settings.effective();
    assert_eq!(settings.ping_privileged, privileged);
    CheckContext::new(settings, Arc::new(SecretStore::default()))
}

/// A `ping` monitor from the YAML of its `spec.target.ping` (and optional criteria).
fn spec(target: &str, criteria: &str) -> MonitorSpec {
    let mut yaml = format!("type: ping\ntarget:\n  ping: {target}\n");
    if !criteria.is_empty() {
        yaml.push_str(&format!("successCriteria:\n  ping: {criteria}\n"));
    }
    serde_yaml_ng::from_str(&yaml).unwrap()
}

async fn check(privileged: bool, target: &str, timeout: Duration) -> CheckOutcome {
    let o = run(&ctx(privileged), NS, &spec(target, ""), timeout).await;
    eprintln!("{target} (privileged: {privileged}): {o:?}");
    o
}

fn msg(o: &CheckOutcome) -> &str {
    o.message.as_deref().unwrap_or("")
}

#[track_caller]
fn assert_down(o: &CheckOutcome, reason: FailureReason, parts: &[&str]) {
    assert!(!o.up, "expected down ({reason}), got {o:?}");
    assert_eq!(o.reason, Some(reason), "{o:?}");
    for p in parts {
        assert!(msg(o).contains(p), "message {:?} lacks {p:?}", msg(o));
    }
}

/// Up over ICMP with every one of `count` echo requests answered.
#[track_caller]
fn assert_all_replied(o: &CheckOutcome, count: u64) {
    assert!(o.up, "expected up, got {o:?}");
    assert_eq!(o.reason, None, "{o:?}");
    let plural = if count == 1 { "reply" } else { "replies" };
    for p in [
        format!("{count}/{count} {plural}"),
        "0% loss".to_string(),
        "rtt min/avg/max".to_string(),
    ] {
        assert!(msg(o).contains(&p), "message {:?} lacks {p:?}", msg(o));
    }
    assert_eq!(o.metadata["method"], "icmp", "{o:?}");
    assert_eq!(o.metadata["sent"], count, "{o:?}");
    assert_eq!(o.metadata["received"], count, "{o:?}");
    assert_eq!(o.metadata["packetLossPercent"], 0.0, "{o:?}");
    // The latency is the average round trip, not the attempt's duration.
    assert_eq!(
        serde_json::json!(o.latency_ms),
        o.metadata["rttAvgMs"],
        "{o:?}"
    );
}

/// Up through the TCP fallback to `port`, saying so.
#[track_caller]
fn assert_fell_back_up(o: &CheckOutcome, port: u16) {
    assert!(o.up, "expected up, got {o:?}");
    assert_eq!(o.reason, None, "{o:?}");
    for p in [
        "ICMP not permitted here".to_string(),
        format!("TCP connect to port {port} instead"),
        "connected to 127.0.0.1".to_string(),
    ] {
        assert!(msg(o).contains(&p), "message {:?} lacks {p:?}", msg(o));
    }
    assert_eq!(o.metadata["method"], "tcp", "{o:?}");
}

/// A line of `/proc/self/status`, e.g. `CapEff`.
fn proc_status(field: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// Whether the kernel lets this process open unprivileged (datagram) ICMP sockets: one of
/// its groups lies within `net.ipv4.ping_group_range`.
fn datagram_icmp_allowed() -> bool {
    let Ok(range) = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range") else {
        return false;
    };
    let mut bounds = range.split_whitespace().map(|n| n.parse::<u64>());
    let (Some(Ok(low)), Some(Ok(high))) = (bounds.next(), bounds.next()) else {
        return false;
    };
    let egid = proc_status("Gid").and_then(|g| g.split_whitespace().nth(1)?.parse::<u64>().ok());
    let groups = proc_status("Groups").unwrap_or_default();
    egid.into_iter()
        .chain(groups.split_whitespace().filter_map(|g| g.parse().ok()))
        .any(|g| (low..=high).contains(&g))
}

/// Whether this process may open raw sockets (CAP_NET_RAW, bit 13 of the effective set).
fn raw_icmp_allowed() -> bool {
    proc_status("CapEff")
        .and_then(|caps| u64::from_str_radix(&caps, 16).ok())
        .is_some_and(|caps| caps & (1 << 13) != 0)
}

/// Whether a check with these settings can send echo requests here.
fn icmp_possible(privileged: bool) -> bool {
    datagram_icmp_allowed() || (privileged && raw_icmp_allowed())
}

/// Whether ::1 is usable (IPv6 may be disabled in a container).
fn ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

/// A port on 127.0.0.1 that accepts connections for as long as the test runs.
pub(crate) async fn listening_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    port
}

/// A port on 127.0.0.1 that refuses connections.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn pings_ipv4_loopback() {
    let o = check(true, "{host: 127.0.0.1, count: 3}", TIMEOUT).await;
    if icmp_possible(true) {
        assert_all_replied(&o, 3);
        assert!(msg(&o).starts_with("127.0.0.1: "), "{o:?}");
        assert_eq!(o.metadata["address"], "127.0.0.1");
    } else {
        assert_down(&o, FailureReason::Config, &["ICMP not permitted here"]);
    }
}

#[tokio::test]
async fn pings_ipv6_loopback() {
    for host in ["'::1'", "'[::1]'"] {
        let o = check(true, &format!("{{host: {host}, count: 3}}"), TIMEOUT).await;
        if !ipv6_loopback() {
            assert!(!o.up, "{o:?}");
        } else if icmp_possible(true) {
            assert_all_replied(&o, 3);
            assert_eq!(o.metadata["address"], "::1");
        } else {
            assert_down(&o, FailureReason::Config, &["ICMP not permitted here"]);
        }
    }
}

#[tokio::test]
async fn pings_a_host_name_once_by_default() {
    let o = check(true, "{host: localhost}", TIMEOUT).await;
    if !icmp_possible(true) {
        assert_down(&o, FailureReason::Config, &["ICMP not permitted here"]);
    } else if o.up {
        assert_all_replied(&o, 1);
        assert!(msg(&o).starts_with("localhost ("), "{o:?}");
    } else {
        // Only where localhost resolves to ::1 first and IPv6 is off.
        assert_eq!(o.metadata.get("address"), Some(&"::1".into()), "{o:?}");
        assert!(!ipv6_loopback(), "{o:?}");
    }
}

#[tokio::test]
async fn falls_back_to_tcp_when_icmp_is_not_permitted() {
    let port = listening_port().await;
    let target = format!("{{host: 127.0.0.1, count: 2, tcpFallback: {port}}}");
    let o = check(false, &target, TIMEOUT).await;
    if icmp_possible(false) {
        // Unprivileged ICMP works here, so no fallback is needed.
        assert_all_replied(&o, 2);
        assert_eq!(o.metadata["socket"], "datagram");
    } else {
        assert_fell_back_up(&o, port);
        assert_eq!(o.metadata["port"], u64::from(port));
    }
}

#[tokio::test]
async fn fallback_to_a_closed_port_is_down() {
    let port = closed_port().await;
    let target = format!("{{host: 127.0.0.1, tcpFallback: {port}}}");
    let o = check(false, &target, TIMEOUT).await;
    if icmp_possible(false) {
        assert_all_replied(&o, 1);
    } else {
        assert_down(
            &o,
            FailureReason::Connect,
            &[
                "ICMP not permitted here",
                &format!("TCP connect to port {port} instead"),
                &format!("cannot connect to 127.0.0.1 (127.0.0.1:{port})"),
            ],
        );
    }
}

#[tokio::test]
async fn without_fallback_explains_how_to_enable_icmp() {
    let o = check(false, "{host: 127.0.0.1}", TIMEOUT).await;
    if icmp_possible(false) {
        assert_all_replied(&o, 1);
    } else {
        assert_down(
            &o,
            FailureReason::Config,
            &[
                "ICMP not permitted here",
                "net.ipv4.ping_group_range",
                "CAP_NET_RAW",
                "spec.networking.ping.privileged",
                "spec.target.ping.tcpFallback",
            ],
        );
    }
}

#[tokio::test]
async fn raw_sockets_are_used_only_when_settings_allow() {
    // As root without unprivileged ICMP (as on the machine these tests were written on),
    // settings decide between a raw socket and the explanation.
    let privileged = check(true, "{host: 127.0.0.1}", TIMEOUT).await;
    let unprivileged = check(false, "{host: 127.0.0.1}", TIMEOUT).await;
    match (datagram_icmp_allowed(), raw_icmp_allowed()) {
        (true, _) => {
            assert_eq!(privileged.metadata["socket"], "datagram", "{privileged:?}");
            assert_eq!(
                unprivileged.metadata["socket"], "datagram",
                "{unprivileged:?}"
            );
        }
        (false, true) => {
            assert_all_replied(&privileged, 1);
            assert_eq!(privileged.metadata["socket"], "raw", "{privileged:?}");
            assert_down(
                &unprivileged,
                FailureReason::Config,
                &["ICMP not permitted"],
            );
        }
        (false, false) => {
            assert_down(&privileged, FailureReason::Config, &["ICMP not permitted"]);
            assert_down(
                &unprivileged,
                FailureReason::Config,
                &["ICMP not permitted"],
            );
        }
    }
}

#[tokio::test]
async fn an_unresolvable_host_is_a_dns_failure() {
    for privileged in [true, false] {
        let o = check(
            privileged,
            "{host: nothing.invalid, count: 2, tcpFallback: 443}",
            TIMEOUT,
        )
        .await;
        assert_down(&o, FailureReason::Dns, &["nothing.invalid"]);
    }
}

#[tokio::test]
async fn a_host_that_never_replies_is_down() {
    // 198.51.100.1 (TEST-NET-2, RFC 5737) belongs to nobody: requests to it get no reply,
    // or an ICMP error / a local "unreachable" where there is no route. (No tcpFallback:
    // some sandboxes accept TCP connections to any address through a transparent proxy.)
    let o = check(
        true,
        "{host: 198.51.100.1, count: 2}",
        Duration::from_secs(2),
    )
    .await;
    assert!(!o.up, "{o:?}");
    if icmp_possible(true) {
        assert!(
            matches!(
                o.reason,
                Some(FailureReason::Timeout | FailureReason::Connect)
            ),
            "{o:?}"
        );
        assert_eq!(o.metadata["method"], "icmp", "{o:?}");
        assert_eq!(o.metadata["sent"], 2, "{o:?}");
        assert_eq!(o.metadata["received"], 0, "{o:?}");
        assert_eq!(o.metadata["packetLossPercent"], 100.0, "{o:?}");
        assert!(msg(&o).contains("198.51.100.1"), "{o:?}");
        if o.reason == Some(FailureReason::Timeout) {
            assert!(
                msg(&o).contains("no reply from 198.51.100.1 to 2 echo requests within 2s"),
                "{o:?}"
            );
        }
    } else {
        assert_down(&o, FailureReason::Config, &["ICMP not permitted here"]);
    }
}

/// `kubekuma check` of a ping to 127.0.0.1 in a new network namespace whose
/// `net.ipv4.ping_group_range` is set to `range` (the sysctl belongs to the network
/// namespace, so this machine's own setting is untouched). `None` when this process may
/// not create network namespaces (`unshare --net` needs CAP_SYS_ADMIN).
fn check_in_netns(range: &str) -> Option<std::process::Output> {
    let usable = std::process::Command::new("unshare")
        .args(["--net", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ping.yaml"),
        "apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {name: lo, namespace: t}\n\
         spec:\n  type: ping\n  target:\n    ping: {host: 127.0.0.1, count: 3}\n",
    )
    .unwrap();
    let script = format!(
        "ip link set lo up && echo '{range}' > /proc/sys/net/ipv4/ping_group_range && exec \"$0\" check \"$1\""
    );
    let out = std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .arg(env!("CARGO_BIN_EXE_kubekuma"))
        .arg(dir.path())
        .output()
        .expect("unshare runs");
    eprintln!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out)
}

/// The unprivileged datagram ICMP socket, wherever this process cannot use it itself: in a
/// network namespace that allows it for group 0 (this process's), a ping with default
/// settings (raw sockets not allowed) gets every reply, which only the datagram socket
/// can deliver; with the range closed, the same check is refused with the explanation.
#[test]
fn datagram_sockets_work_where_the_group_range_allows_them() {
    let gid = proc_status("Gid").and_then(|g| g.split_whitespace().nth(1)?.parse::<u64>().ok());
    if gid != Some(0) {
        eprintln!("skipped: this test runs the check as group 0 (root); this process is not");
        return;
    }
    let Some(allowed) = check_in_netns("0 0") else {
        eprintln!("skipped: `unshare --net` is not permitted here");
        return;
    };
    let stdout = String::from_utf8_lossy(&allowed.stdout);
    assert!(allowed.status.success(), "{stdout}");
    assert!(
        stdout.contains("t/lo") && stdout.contains(" up ") && stdout.contains("3/3 replies"),
        "{stdout}"
    );

    let refused = check_in_netns("1 0").expect("unshare worked a moment ago");
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(" down ") && stdout.contains("ICMP not permitted here"),
        "{stdout}"
    );
}
