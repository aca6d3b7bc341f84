//! The `dns` checker against an in-process hickory-server on 127.0.0.1 (UDP and TCP on one
//! port) serving zones parsed from text, and against small UDP responders that answer
//! SERVFAIL, only truncated answers, or nothing at all.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use kubekuma_agent::checks::{self, CheckContext};
use kubekuma_agent::secrets::SecretStore;
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use tokio::net::{TcpListener, UdpSocket};

const NS: &str = "dns";
const TIMEOUT: Duration = Duration::from_secs(3);
const SHORT: Duration = Duration::from_millis(800);
/// TXT records at big.example.test, together far over 1232 bytes: UDP answers are truncated.
const BIG_TXT: usize = 12;

const ZONE: &str = r#"
$ORIGIN example.test.
$TTL 300
@         IN SOA   ns1.example.test. hostmaster.example.test. 2024010101 3600 600 86400 300
@         IN NS    ns1.example.test.
@         IN NS    ns2.example.test.
ns1       IN A     192.0.2.53
ns2       IN A     192.0.2.54
www       IN A     192.0.2.10
www       IN A     192.0.2.11
www       IN AAAA  2001:db8::10
v4only    IN A     192.0.2.20
alias     IN CNAME www.example.test.
dangling  IN CNAME missing.example.test.
to-v4     IN CNAME v4only.example.test.
@         IN MX    10 mail.example.test.
@         IN MX    20 backup.example.test.
mail      IN A     192.0.2.25
@         IN TXT   "v=spf1 mx -all"
@         IN TXT   "hello" " world"
_sip._tcp IN SRV   10 5 5060 sip.example.test.
@         IN CAA   0 issue "letsencrypt.org"
"#;

const REVERSE_V4: &str = r#"
$ORIGIN 2.0.192.in-addr.arpa.
$TTL 300
@   IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 300
@   IN NS  ns1.example.test.
10  IN PTR www.example.test.
"#;

fn reverse_v6() -> String {
    let name = Name::from("2001:db8::10".parse::<IpAddr>().unwrap()).to_ascii();
    format!(
        "$ORIGIN 8.b.d.0.1.0.0.2.ip6.arpa.\n$TTL 300\n\
         @ IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 300\n\
         @ IN NS ns1.example.test.\n\
         {name} IN PTR www.example.test.\n"
    )
}

fn forward_zone() -> String {
    let mut zone = ZONE.to_string();
    for i in 0..BIG_TXT {
        zone.push_str(&format!("big IN TXT \"{i:02}-{}\"\n", "x".repeat(150)));
    }
    zone
}

fn catalog() -> Catalog {
    let mut catalog = Catalog::new();
    for text in [forward_zone(), REVERSE_V4.to_string(), reverse_v6()] {
        let (origin, records) = Parser::new(text, None, None).parse().unwrap();
        let handler: InMemoryZoneHandler =
            InMemoryZoneHandler::new(origin.clone(), records, ZoneType::Primary, AxfrPolicy::Deny)
                .unwrap();
        let handlers: Vec<Arc<dyn ZoneHandler>> = vec![Arc::new(handler)];
        catalog.upsert(LowerName::from(origin), handlers);
    }
    catalog
}

/// A TCP listener and a UDP socket on the same 127.0.0.1 port.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..20 {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        if let Ok(udp) = UdpSocket::bind(tcp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// hickory-server answering from the test zones on `udp` and/or `tcp`; runs until the
/// test's runtime ends.
fn serve(udp: Option<UdpSocket>, tcp: Option<TcpListener>) {
    let mut server = Server::new(catalog());
    if let Some(udp) = udp {
        server.register_socket(udp);
    }
    if let Some(tcp) = tcp {
        server.register_listener(tcp, Duration::from_secs(5), 65_535);
    }
    tokio::spawn(async move {
        let _ = server.block_until_done().await;
    });
}

/// The zones over UDP and TCP.
pub(crate) async fn zone_server() -> SocketAddr {
    let (udp, tcp) = bind_pair().await;
    let addr = udp.local_addr().unwrap();
    serve(Some(udp), Some(tcp));
    addr
}

/// What a hand-made UDP responder does with each query.
#[derive(Clone, Copy)]
enum Reply {
    /// Never answer.
    Silent,
    /// Answer SERVFAIL.
    ServFail,
    /// Answer an empty response with the TC bit set.
    Truncated,
    /// Answer NXDOMAIN with a CNAME to missing.example.test.
    NxCname,
}

async fn responder(sock: UdpSocket, reply: Reply) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let query = Message::from_vec(&buf[..n]).unwrap();
        let mut answer = Message::response(query.metadata.id, OpCode::Query);
        answer.metadata.message_type = MessageType::Response;
        answer.queries = query.queries.clone();
        match reply {
            Reply::Silent => continue,
            Reply::ServFail => answer.metadata.response_code = ResponseCode::ServFail,
            Reply::Truncated => answer.metadata.truncation = true,
            Reply::NxCname => {
                answer.metadata.response_code = ResponseCode::NXDomain;
                let name = query.queries[0].name().clone();
                let target = Name::from_ascii("missing.example.test.").unwrap();
                answer.add_answer(Record::from_rdata(name, 300, RData::CNAME(CNAME(target))));
            }
        }
        let _ = sock.send_to(&answer.to_vec().unwrap(), peer).await;
    }
}

/// A UDP responder on its own port (nothing listens on TCP there).
async fn udp_responder(reply: Reply) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(responder(sock, reply));
    addr
}

fn ctx_with(servers: &[String]) -> CheckContext {
    let settings = EffectiveSettings {
        dns_servers: servers.to_vec(),
        ..Default::default()
    };
    CheckContext::new(settings, Arc::new(SecretStore::default()))
}

fn spec(
    domain: &str,
    record_type: &str,
    server: Option<&str>,
    expected: &[&str],
    extra: &str,
) -> MonitorSpec {
    let mut yaml = format!(
        "type: dns\ntarget:\n  dns:\n    domain: {}\n    recordType: {record_type}\n",
        serde_json::to_string(domain).unwrap()
    );
    if let Some(s) = server {
        yaml.push_str(&format!(
            "    server: {}\n",
            serde_json::to_string(s).unwrap()
        ));
    }
    if !expected.is_empty() {
        yaml.push_str(&format!(
            "    expected:\n      values: {}\n",
            serde_json::to_string(expected).unwrap()
        ));
    }
    yaml.push_str(extra);
    serde_yaml_ng::from_str(&yaml).unwrap()
}

async fn check(server: SocketAddr, domain: &str, rtype: &str, expected: &[&str]) -> CheckOutcome {
    let spec = spec(domain, rtype, Some(&server.to_string()), expected, "");
    checks::run_spec(&ctx_with(&[]), NS, &spec, TIMEOUT).await
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

#[tokio::test]
async fn every_record_type_is_up_and_matches_its_expected_values() {
    let server = zone_server().await;
    // (domain, type, expected values, summary)
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "www.example.test",
            "A",
            &["192.0.2.10", "192.0.2.11"],
            "A 192.0.2.10, 192.0.2.11",
        ),
        (
            "www.example.test.",
            "AAAA",
            &["2001:DB8:0::10"],
            "AAAA 2001:db8::10",
        ),
        (
            "alias.example.test",
            "CNAME",
            &["WWW.example.test."],
            "CNAME www.example.test",
        ),
        (
            "example.test",
            "MX",
            &["10 mail.example.test", "backup.example.test."],
            "MX 10 mail.example.test, 20 backup.example.test",
        ),
        (
            "example.test",
            "TXT",
            &["v=spf1 mx -all", "hello world"],
            "TXT \"hello world\", \"v=spf1 mx -all\"",
        ),
        (
            "example.test",
            "NS",
            &["ns1.example.test", "NS2.example.test."],
            "NS ns1.example.test, ns2.example.test",
        ),
        (
            "_sip._tcp.example.test",
            "SRV",
            &["10 5 5060 sip.example.test."],
            "SRV 10 5 5060 sip.example.test",
        ),
        (
            "example.test",
            "CAA",
            &["0 issue \"letsencrypt.org\""],
            "CAA 0 issue \"letsencrypt.org\"",
        ),
        (
            "example.test",
            "SOA",
            &["ns1.example.test"],
            "SOA ns1.example.test hostmaster.example.test 2024010101 3600 600 86400 300",
        ),
        (
            "192.0.2.10",
            "PTR",
            &["www.example.test"],
            "PTR www.example.test",
        ),
        (
            "10.2.0.192.in-addr.arpa",
            "PTR",
            &["www.example.test."],
            "PTR www.example.test",
        ),
        (
            "2001:db8::10",
            "PTR",
            &["www.example.test"],
            "PTR www.example.test",
        ),
    ];
    for (domain, rtype, expected, summary) in cases {
        let o = check(server, domain, rtype, expected).await;
        assert!(o.up, "{rtype} {domain}: expected up, got {o:?}");
        assert_eq!(o.reason, None, "{rtype} {domain}");
        assert_eq!(msg(&o), *summary, "{rtype} {domain}");
        assert_eq!(o.metadata["server"], server.to_string(), "{rtype} {domain}");
    }
}

#[tokio::test]
async fn short_forms_of_mx_srv_and_caa_values_match() {
    let server = zone_server().await;
    for (domain, rtype, expected) in [
        ("example.test", "MX", "mail.example.test"),
        ("_sip._tcp.example.test", "SRV", "sip.example.test"),
        ("example.test", "CAA", "issue letsencrypt.org"),
        ("example.test", "CAA", "letsencrypt.org"),
    ] {
        let o = check(server, domain, rtype, &[expected]).await;
        assert!(o.up, "{rtype} {expected:?}: {o:?}");
    }
}

#[tokio::test]
async fn an_a_lookup_through_a_cname_reports_the_addresses() {
    let server = zone_server().await;
    let o = check(server, "alias.example.test", "A", &["192.0.2.11"]).await;
    assert!(o.up, "{o:?}");
    assert_eq!(msg(&o), "A 192.0.2.10, 192.0.2.11");
    assert_eq!(
        o.metadata["records"],
        serde_json::json!(["192.0.2.10", "192.0.2.11"])
    );
}

#[tokio::test]
async fn a_missing_expected_value_is_an_assertion_naming_what_was_found() {
    let server = zone_server().await;
    let o = check(
        server,
        "www.example.test",
        "A",
        &["192.0.2.10", "192.0.2.99"],
    )
    .await;
    assert_down(&o, FailureReason::Assertion, &[]);
    assert_eq!(
        msg(&o),
        "expected A 192.0.2.99 for www.example.test, found 192.0.2.10, 192.0.2.11"
    );

    // TXT compares the joined text exactly, case included.
    let o = check(server, "example.test", "TXT", &["V=SPF1 MX -ALL"]).await;
    assert_down(
        &o,
        FailureReason::Assertion,
        &["expected TXT V=SPF1 MX -ALL", "\"v=spf1 mx -all\""],
    );
}

#[tokio::test]
async fn nxdomain_is_a_dns_failure() {
    let server = zone_server().await;
    let o = check(server, "nope.example.test", "A", &[]).await;
    assert_down(&o, FailureReason::Dns, &[]);
    assert_eq!(msg(&o), "nope.example.test: no such domain (NXDOMAIN)");
}

#[tokio::test]
async fn no_records_of_the_type_is_a_dns_failure() {
    let server = zone_server().await;
    let o = check(server, "v4only.example.test", "AAAA", &[]).await;
    assert_down(&o, FailureReason::Dns, &[]);
    assert_eq!(msg(&o), "no AAAA records for v4only.example.test");
}

#[tokio::test]
async fn a_cname_without_an_answer_is_a_dns_failure_naming_the_cname() {
    // The CNAME's target has no record of the type: hickory-resolver follows the CNAME and
    // gets NOERROR without records.
    let server = zone_server().await;
    let o = check(server, "to-v4.example.test", "AAAA", &[]).await;
    assert_down(&o, FailureReason::Dns, &[]);
    assert_eq!(
        msg(&o),
        "no AAAA records for to-v4.example.test (CNAME v4only.example.test)"
    );
    // The CNAME's target does not exist: hickory-server answers NOERROR with only the CNAME,
    // and NXDOMAIN when asked for the target.
    let o = check(server, "dangling.example.test", "A", &[]).await;
    assert_down(&o, FailureReason::Dns, &[]);
    assert_eq!(
        msg(&o),
        "dangling.example.test: CNAME missing.example.test does not exist (NXDOMAIN)"
    );
    // Others answer NXDOMAIN with the CNAME.
    let server = udp_responder(Reply::NxCname).await;
    let o = check(server, "dangling.example.test", "A", &[]).await;
    assert_down(&o, FailureReason::Dns, &[]);
    assert_eq!(
        msg(&o),
        "dangling.example.test: CNAME missing.example.test does not exist (NXDOMAIN)"
    );
}

#[tokio::test]
async fn a_refused_query_is_dns_servfail() {
    // The catalog serves no zone for example.org, so hickory-server answers REFUSED.
    let server = zone_server().await;
    let o = check(server, "www.example.org", "A", &[]).await;
    assert_down(&o, FailureReason::DnsServfail, &[]);
    assert_eq!(
        msg(&o),
        format!("{server} answered REFUSED for www.example.org A")
    );
}

#[tokio::test]
async fn servfail_is_dns_servfail() {
    let server = udp_responder(Reply::ServFail).await;
    let o = check(server, "www.example.test", "A", &[]).await;
    assert_down(&o, FailureReason::DnsServfail, &[]);
    assert_eq!(
        msg(&o),
        format!("{server} answered SERVFAIL for www.example.test A")
    );
}

#[tokio::test]
async fn a_silent_server_is_a_timeout() {
    let server = udp_responder(Reply::Silent).await;
    let spec = spec("www.example.test", "A", Some(&server.to_string()), &[], "");
    let o = checks::run_spec(&ctx_with(&[]), NS, &spec, SHORT).await;
    assert_down(
        &o,
        FailureReason::Timeout,
        &[&format!("no answer from {server} within")],
    );
}

#[tokio::test]
async fn a_closed_udp_port_is_a_connect_failure() {
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let o = check(closed, "www.example.test", "A", &[]).await;
    assert_down(
        &o,
        FailureReason::Connect,
        &[&format!("cannot reach {closed} over UDP")],
    );
}

#[tokio::test]
async fn a_large_answer_truncated_over_udp_is_asked_again_over_tcp() {
    let server = zone_server().await;
    // The premise: over UDP the server truncates this answer.
    let mut query = Message::query();
    query.add_query(Query::query(
        Name::from_ascii("big.example.test.").unwrap(),
        RecordType::TXT,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    query.set_edns(edns);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&query.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let n = sock.recv(&mut buf).await.unwrap();
    assert!(Message::from_vec(&buf[..n]).unwrap().metadata.truncation);

    let o = check(server, "big.example.test", "TXT", &[]).await;
    assert!(o.up, "{o:?}");
    assert_eq!(
        o.metadata["records"].as_array().map(Vec::len),
        Some(BIG_TXT),
        "{o:?}"
    );
}

#[tokio::test]
async fn an_answer_truncated_over_udp_is_asked_again_over_tcp() {
    // UDP always answers truncated; only the zone server on TCP has the records.
    let (udp, tcp) = bind_pair().await;
    let addr = udp.local_addr().unwrap();
    tokio::spawn(responder(udp, Reply::Truncated));
    serve(None, Some(tcp));
    let o = check(addr, "www.example.test", "A", &["192.0.2.10"]).await;
    assert!(o.up, "{o:?}");
    assert_eq!(msg(&o), "A 192.0.2.10, 192.0.2.11");
}

#[tokio::test]
async fn a_truncated_answer_without_tcp_is_a_connect_failure() {
    let server = udp_responder(Reply::Truncated).await;
    let o = check(server, "www.example.test", "A", &[]).await;
    assert_down(
        &o,
        FailureReason::Connect,
        &[&format!("cannot reach {server} over TCP")],
    );
}

#[tokio::test]
async fn settings_servers_are_used_without_a_server_and_in_order() {
    let zone = zone_server().await;
    let silent = udp_responder(Reply::Silent).await;
    let no_server = spec("www.example.test", "A", None, &["192.0.2.10"], "");

    let o = checks::run_spec(&ctx_with(&[zone.to_string()]), NS, &no_server, TIMEOUT).await;
    assert!(o.up, "{o:?}");
    assert_eq!(o.metadata["server"], zone.to_string());

    // The first server never answers: the second one does within the same attempt.
    let ctx = ctx_with(&[silent.to_string(), zone.to_string()]);
    let o = checks::run_spec(&ctx, NS, &no_server, TIMEOUT).await;
    assert!(o.up, "{o:?}");
    assert_eq!(o.metadata["server"], zone.to_string());

    // Only silent servers: a timeout naming them.
    let ctx = ctx_with(&[silent.to_string()]);
    let o = checks::run_spec(&ctx, NS, &no_server, SHORT).await;
    assert_down(&o, FailureReason::Timeout, &[&silent.to_string()]);

    // spec.target.dns.server wins over the settings.
    let with_server = spec("www.example.test", "A", Some(&zone.to_string()), &[], "");
    let o = checks::run_spec(&ctx, NS, &with_server, TIMEOUT).await;
    assert!(o.up, "{o:?}");
}

#[tokio::test]
async fn a_server_that_is_not_an_address_is_a_config_failure() {
    let spec = spec("www.example.test", "A", Some("dns.example.test"), &[], "");
    let o = checks::run_spec(&ctx_with(&[]), NS, &spec, TIMEOUT).await;
    assert_down(
        &o,
        FailureReason::Config,
        &["spec.target.dns.server", "\"dns.example.test\""],
    );

    let spec = self::spec("www.example.test", "A", None, &[], "");
    let o = checks::run_spec(&ctx_with(&["nameserver".into()]), NS, &spec, TIMEOUT).await;
    assert_down(&o, FailureReason::Config, &["networking.dns.servers[0]"]);
}

#[tokio::test]
async fn the_latency_bound_is_an_assertion() {
    let server = zone_server().await;
    let spec = spec(
        "www.example.test",
        "A",
        Some(&server.to_string()),
        &[],
        "successCriteria:\n  dns:\n    maxLatencyMs: 0\n",
    );
    let o = checks::run_spec(&ctx_with(&[]), NS, &spec, TIMEOUT).await;
    assert_down(
        &o,
        FailureReason::Assertion,
        &["www.example.test A: took", "more than maxLatencyMs 0"],
    );
    assert_eq!(
        o.metadata["records"],
        serde_json::json!(["192.0.2.10", "192.0.2.11"])
    );
}

#[tokio::test]
async fn without_a_server_the_system_resolver_is_asked() {
    // No server in the spec or the settings: hickory's system resolver (/etc/resolv.conf,
    // /etc/hosts). It answers `localhost` without the network (from the hosts file, or as
    // RFC 6761 asks), so this only needs a resolv.conf with a nameserver.
    let spec = spec("localhost", "A", None, &["127.0.0.1"], "");
    let o = checks::run_spec(&ctx_with(&[]), NS, &spec, TIMEOUT).await;
    assert!(o.up, "{o:?}");
    assert_eq!(msg(&o), "A 127.0.0.1");
    let server = o.metadata["server"].as_str().unwrap_or_default();
    assert!(server.starts_with("system resolver ("), "{server:?}");

    // Names under `invalid.` never exist (RFC 6761): NXDOMAIN without asking anyone.
    let spec = self::spec("nothing.invalid.", "A", None, &[], "");
    let o = checks::run_spec(&ctx_with(&[]), NS, &spec, TIMEOUT).await;
    assert_down(&o, FailureReason::Dns, &[]);
    assert_eq!(msg(&o), "nothing.invalid: no such domain (NXDOMAIN)");
}
