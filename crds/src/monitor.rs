//! The `Monitor` kind: what to check, how often, what counts as success, who to tell.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, LocalRef};
use crate::compat::{Headers, NotifyOn, Retries};

/// A check that KubeKuma runs on a schedule.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "monitoring.kubekuma.io",
    version = "v1",
    kind = "Monitor",
    namespaced,
    status = "MonitorStatus",
    shortname = "mon",
    category = "kubekuma",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.lastResult.state"}"#,
    printcolumn = r#"{"name":"Uptime 24h","type":"number","jsonPath":".status.uptime.last24h"}"#,
    printcolumn = r#"{"name":"Latency ms","type":"integer","jsonPath":".status.lastResult.latencyMs"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MonitorSpec {
    /// Whether checks run; a disabled monitor is `paused`. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The kind of check; `spec.target` must hold the block of the same name.
    #[serde(rename = "type")]
    pub type_: MonitorType,
    /// A short public description, shown on status pages: at most 4096 characters; line
    /// breaks allowed, no other control, zero-width or bidirectional override characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When and how persistently to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// What to check, keyed by monitor type.
    pub target: Target,
    /// What counts as success, keyed by monitor type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_criteria: Option<SuccessCriteria>,
    /// Alert routing for this monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerting: Option<Alerting>,
    /// Free-form tags, matched by policies' `matchTags`: each at most 200 characters, no
    /// control, zero-width or bidirectional override characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Extra key/value data passed to notifications (runbook links, owners, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Locations (agents' `--location`) that run this monitor: DNS-1123 labels, at most
    /// 32, no duplicates. Absent or empty: every location that reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
    /// How many fresh locations must see the monitor down before it is down: a count
    /// (`2`, at least 1 and, with `locations` listed, at most their number) or a
    /// percentage (`"50%"`, 1-100) of the locations that run it and report fresh results.
    /// Default: KubeKumaSettings `spec.locations.defaultQuorum`, else a majority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quorum_schema")]
    pub quorum: Option<Quorum>,
}

/// How many locations must agree, as written: a count or a percentage (`"50%"`).
/// Decoding refuses any other shape; the ranges are checked by `kubekuma validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// This many locations.
    Count(i64),
    /// This percentage of the fresh locations that run the monitor (rounded up).
    Percent(i64),
}

impl<'de> Deserialize<'de> for Quorum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = serde_json::Value::deserialize(d)?;
        let shape = "expected a count such as 2 or a percentage such as \"50%\"";
        let got = || D::Error::custom(format!("{shape}, got {}", crate::compat::describe(&v)));
        match &v {
            serde_json::Value::Number(n) => n.as_i64().map(Quorum::Count).ok_or_else(got),
            serde_json::Value::String(s) => s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i64>().ok())
                .map(Quorum::Percent)
                .ok_or_else(got),
            _ => Err(got()),
        }
    }
}

impl Serialize for Quorum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Quorum::Count(n) => s.serialize_i64(*n),
            Quorum::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

impl JsonSchema for Quorum {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quorum".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        quorum_schema(g)
    }
}

/// Schema of [`Quorum`]: Kubernetes' int-or-string.
pub fn quorum_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "How many locations must agree: a count (2) or a percentage (\"50%\").",
        "x-kubernetes-int-or-string": true,
    })
}

/// The quorum in force for one monitor, checked: what the consensus counts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum QuorumRule {
    /// More than half of the fresh locations (`n / 2 + 1`): the default.
    #[default]
    Majority,
    /// At least this many fresh locations (at least 1).
    Count(u32),
    /// At least this percentage (1-100) of the fresh locations, rounded up.
    Percent(u32),
}

impl QuorumRule {
    /// The rule of a validated [`Quorum`] (values out of range are clamped: validation
    /// refused them before).
    pub fn of(q: Quorum) -> Self {
        match q {
            Quorum::Count(n) => QuorumRule::Count(n.clamp(1, i64::from(u32::MAX)) as u32),
            Quorum::Percent(p) => QuorumRule::Percent(p.clamp(1, 100) as u32),
        }
    }

    /// How many of `fresh` locations must see the monitor down: never more than `fresh`
    /// (a quorum larger than the fresh locations needs all of them) and never less than
    /// 1. With no fresh location, 1 (nothing can be down).
    pub fn needed(self, fresh: usize) -> usize {
        let want = match self {
            QuorumRule::Majority => fresh / 2 + 1,
            QuorumRule::Count(n) => n as usize,
            QuorumRule::Percent(p) => (fresh * p as usize).div_ceil(100),
        };
        want.min(fresh).max(1)
    }
}

/// The eleven kinds of check.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
    strum::VariantArray,
)]
#[serde(rename_all = "camelCase")]
pub enum MonitorType {
    /// HTTP(S) request.
    Http,
    /// HTTP(S) request plus a keyword or regex match on the body.
    Keyword,
    /// HTTP(S) request plus a JSONPath query on the body.
    JsonQuery,
    /// TCP connect, optional send/expect.
    Tcp,
    /// DNS resolution.
    Dns,
    /// ICMP echo, with a TCP fallback.
    Ping,
    /// WebSocket handshake and optional message exchange.
    Websocket,
    /// Heartbeats pushed to KubeKuma by the monitored system.
    Push,
    /// Steam (Source engine) game server query.
    Steam,
    /// Health of a Kubernetes resource.
    #[serde(alias = "k8s")]
    Kubernetes,
    /// Docker container state and health.
    Docker,
}

// The build fails when a monitor type is added without being listed in `ALL`.
const _: () = {
    let mut listed = [0u8; MonitorType::ALL.len()];
    let mut i = 0;
    while i < listed.len() {
        listed[i] = MonitorType::ALL[i] as u8;
        i += 1;
    }
    assert!(crate::lists_every_variant(
        &listed,
        <MonitorType as strum::VariantArray>::VARIANTS.len()
    ));
};

impl MonitorType {
    /// Every monitor type, in the order of the specification's table (the compiler checks
    /// that none is missing).
    pub const ALL: [MonitorType; 11] = [
        MonitorType::Http,
        MonitorType::Keyword,
        MonitorType::JsonQuery,
        MonitorType::Tcp,
        MonitorType::Dns,
        MonitorType::Ping,
        MonitorType::Websocket,
        MonitorType::Push,
        MonitorType::Steam,
        MonitorType::Kubernetes,
        MonitorType::Docker,
    ];

    /// The name used in manifests, metrics labels and `spec.target` keys.
    pub fn as_str(self) -> &'static str {
        match self {
            MonitorType::Http => "http",
            MonitorType::Keyword => "keyword",
            MonitorType::JsonQuery => "jsonQuery",
            MonitorType::Tcp => "tcp",
            MonitorType::Dns => "dns",
            MonitorType::Ping => "ping",
            MonitorType::Websocket => "websocket",
            MonitorType::Push => "push",
            MonitorType::Steam => "steam",
            MonitorType::Kubernetes => "kubernetes",
            MonitorType::Docker => "docker",
        }
    }
}

impl std::fmt::Display for MonitorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When and how persistently a monitor is checked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Seconds between checks. Default 60; at least the settings' `scheduler.minIntervalSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<i64>,
    /// Seconds before one attempt times out. Default: settings' `scheduler.defaultTimeoutSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Retries before the monitor is declared down (count, or `{maxRetries, retryIntervalSeconds}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::compat::retries_schema")]
    pub retries: Option<Retries>,
    /// Seconds between retries of a failed check. Default: the interval, capped at 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval_seconds: Option<i64>,
    /// Seconds to wait after the monitor appears before its first check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i64>,
    /// Seconds a failure must persist (after retries) before the monitor is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_down_seconds: Option<i64>,
    /// Random spread of each run time, in percent of the interval. Default: settings' `scheduler.jitterPercent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_percent: Option<i64>,
}

/// What to check. Exactly the block named by `spec.type` is used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Target of an `http` monitor (also the HTTP part of `keyword`/`jsonQuery` in the original's manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTarget>,
    /// Target of a `keyword` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<KeywordTarget>,
    /// Target of a `jsonQuery` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_query: Option<JsonQueryTarget>,
    /// Target of a `tcp` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpTarget>,
    /// Target of a `dns` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsTarget>,
    /// Target of a `ping` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingTarget>,
    /// Target of a `websocket` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebsocketTarget>,
    /// Target of a `push` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushTarget>,
    /// Target of a `steam` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steam: Option<SteamTarget>,
    /// Target of a `kubernetes` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "k8s")]
    pub kubernetes: Option<KubernetesTarget>,
    /// Target of a `docker` monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerTarget>,
}

/// HTTP methods a monitor may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(clippy::upper_case_acronyms)]
pub enum HttpMethod {
    /// GET
    GET,
    /// HEAD
    HEAD,
    /// POST
    POST,
    /// PUT
    PUT,
    /// PATCH
    PATCH,
    /// DELETE
    DELETE,
    /// OPTIONS
    OPTIONS,
}

impl HttpMethod {
    /// The method as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::GET => "GET",
            HttpMethod::HEAD => "HEAD",
            HttpMethod::POST => "POST",
            HttpMethod::PUT => "PUT",
            HttpMethod::PATCH => "PATCH",
            HttpMethod::DELETE => "DELETE",
            HttpMethod::OPTIONS => "OPTIONS",
        }
    }
}

/// TLS options of the original implementation's HTTP target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpTls {
    /// Verify the server certificate (default true); `false` equals `skipTLSVerify: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
    /// Server name to send in the TLS handshake instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Report `certExpiring` this many days before the certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_before_days: Option<i64>,
}

/// An HTTP(S) request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpTarget {
    /// `http://` or `https://` URL; may contain `${SECRET:name:key}`.
    pub url: String,
    /// Request method. Default GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Request headers (map, or list of `{name, value}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::compat::headers_schema")]
    pub headers: Option<Headers>,
    /// Request body; may contain `${SECRET:name:key}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Follow redirects. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_redirects: Option<bool>,
    /// Most redirects to follow. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_redirects: Option<i64>,
    /// Accept any server certificate. Default false.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "skipTLSVerify",
        alias = "skipTlsVerify"
    )]
    pub skip_tls_verify: Option<bool>,
    /// TLS options (original implementation's spelling of skipTLSVerify and more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HttpTls>,
    /// Expected Content-Type prefix (original implementation's place for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_content_type: Option<String>,
    /// Most body bytes read. Default 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<i64>,
}

impl HttpTarget {
    /// Whether certificate verification is switched off, in either spelling.
    pub fn skips_tls_verify(&self) -> bool {
        self.skip_tls_verify.unwrap_or(false)
            || self.tls.as_ref().and_then(|t| t.verify) == Some(false)
    }
}

/// An HTTP request whose body must (or, inverted, must not) contain a keyword.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeywordTarget {
    /// The HTTP request.
    #[serde(flatten)]
    pub http: HttpTarget,
    /// Text to look for in the response body.
    pub keyword: String,
    /// Treat `keyword` as a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<bool>,
    /// Down when the keyword is present instead of absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invert: Option<bool>,
    /// Match case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_insensitive: Option<bool>,
}

/// How a JSON query's result is compared with the expected value.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JsonComparison {
    /// Result equals expected.
    Equals,
    /// Result differs from expected.
    NotEquals,
    /// Number below expected.
    LessThan,
    /// Number at most expected.
    LessThanOrEqual,
    /// Number above expected.
    GreaterThan,
    /// Number at least expected.
    GreaterThanOrEqual,
    /// String contains expected, or list contains an element equal to expected.
    Contains,
    /// The query matched at least one node.
    Exists,
}

/// An HTTP request whose JSON body is queried with JSONPath (RFC 9535).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JsonQueryTarget {
    /// The HTTP request.
    #[serde(flatten)]
    pub http: HttpTarget,
    /// JSONPath query, e.g. `$.status`.
    pub query: String,
    /// Expected value (any JSON value); not needed for `exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::compat::any_value_schema")]
    pub expected: Option<serde_json::Value>,
    /// Comparison of result and expected. Default `equals` (`exists` when no expected value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<JsonComparison>,
}

/// TLS options of a TCP target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpTls {
    /// Wrap the connection in TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Verify the server certificate. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
    /// Server name for the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

/// A TCP connection, with optional bytes to send and a reply to expect.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpTarget {
    /// Host name or IP address.
    pub host: String,
    /// Port, 1-65535.
    pub port: i64,
    /// Text to send after connecting (`\n`, `\r` escapes allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// Text the reply must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// TLS options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TcpTls>,
}

/// DNS record types a `dns` monitor can query.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum DnsRecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    AAAA,
    /// Canonical name.
    CNAME,
    /// Mail exchanger.
    MX,
    /// Text.
    TXT,
    /// Name server.
    NS,
    /// Service locator.
    SRV,
    /// Certification authority authorization.
    CAA,
    /// Start of authority.
    SOA,
    /// Pointer (reverse lookup).
    PTR,
}

/// Values a DNS answer must contain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsExpected {
    /// Every value here must appear in the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A DNS lookup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsTarget {
    /// Name to resolve (`name` in the original implementation).
    #[serde(alias = "name")]
    pub domain: String,
    /// Record type. Default A.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_type: Option<DnsRecordType>,
    /// Resolver as `ip` or `ip:port`; default the settings' `networking.dns.servers`, else the system resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Values the answer must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<DnsExpected>,
}

/// An ICMP echo, with a TCP connect as fallback.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PingTarget {
    /// Host name or IP address.
    pub host: String,
    /// Echo requests per check (`packetCount` in the original implementation). Default 1.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "packetCount"
    )]
    pub count: Option<i64>,
    /// TCP connect instead when ICMP is not permitted: a port, true for port 443, or
    /// false (the default when absent) for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tcp_fallback_schema")]
    pub tcp_fallback: Option<TcpFallback>,
}

/// The port a ping's `tcpFallback: true` connects to (HTTPS, the port most hosts that
/// drop ICMP still answer on).
pub const DEFAULT_TCP_FALLBACK_PORT: i64 = 443;

/// A ping's `tcpFallback`, written as users write it: `true` / `false`, or a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpFallback {
    /// `true` or `false`.
    Enabled(bool),
    /// A port number (range checked by `kubekuma validate`).
    Port(i64),
}

impl TcpFallback {
    /// The port to connect to, if any: `true` means [`DEFAULT_TCP_FALLBACK_PORT`].
    pub fn port(self) -> Option<i64> {
        match self {
            TcpFallback::Enabled(true) => Some(DEFAULT_TCP_FALLBACK_PORT),
            TcpFallback::Enabled(false) => None,
            TcpFallback::Port(p) => Some(p),
        }
    }
}

impl<'de> Deserialize<'de> for TcpFallback {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(b) => Ok(TcpFallback::Enabled(b)),
            serde_json::Value::Number(n) => n.as_i64().map(TcpFallback::Port).ok_or_else(|| {
                D::Error::custom(format!("expected a port number or true/false, got {n}"))
            }),
            other => Err(D::Error::custom(format!(
                "expected a port number or true/false, got {}",
                crate::compat::describe(&other)
            ))),
        }
    }
}

impl Serialize for TcpFallback {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            TcpFallback::Enabled(b) => s.serialize_bool(b),
            TcpFallback::Port(p) => s.serialize_i64(p),
        }
    }
}

/// Schema for [`TcpFallback`]: a boolean or an integer, which a structural schema cannot
/// say, so it is kept as written and checked by `kubekuma validate`.
fn tcp_fallback_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "TCP connect instead when ICMP is not permitted: a port, true for port 443, or false for none.",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A WebSocket handshake and optional message exchange.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebsocketTarget {
    /// `ws://` or `wss://` URL.
    pub url: String,
    /// Text message to send after the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Reply the server must send (exact, or a regex when `regex` is true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_response: Option<String>,
    /// Treat `expectedResponse` as a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<bool>,
    /// Handshake headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::compat::headers_schema")]
    pub headers: Option<Headers>,
    /// Accept any server certificate.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "skipTLSVerify",
        alias = "skipTlsVerify"
    )]
    pub skip_tls_verify: Option<bool>,
}

/// Heartbeats pushed to `/api/v1/push/<token>`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushTarget {
    /// Token in the push URL; generated and written to status when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Seconds within which a push is expected. Default: the schedule's interval.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "interval")]
    pub interval_seconds: Option<i64>,
    /// Extra seconds of tolerance before the monitor is down. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "grace")]
    pub grace_seconds: Option<i64>,
}

/// A Steam (Source engine) game server, queried with A2S_INFO.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SteamTarget {
    /// Host name or IP address.
    pub host: String,
    /// Query port (UDP). Default 27015.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// A Kubernetes resource whose health is checked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesTarget {
    /// API version, e.g. `apps/v1`.
    pub api_version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace; default the monitor's namespace (ignored for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the resource.
    pub name: String,
}

/// A Docker container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerTarget {
    /// Container name or ID.
    pub container: String,
    /// Engine endpoint: `unix:///var/run/docker.sock` (default), `tcp://host:2375` or `http(s)://host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// What counts as success, keyed by monitor type.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuccessCriteria {
    /// Criteria for `http`, and the HTTP part of `keyword` and `jsonQuery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCriteria>,
    /// Extra body criteria (original implementation's keyword form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<KeywordCriteria>,
    /// Criteria for `jsonQuery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_query: Option<LatencyCriteria>,
    /// Criteria for `tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<LatencyCriteria>,
    /// Criteria for `dns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<LatencyCriteria>,
    /// Criteria for `ping`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingCriteria>,
    /// Criteria for `websocket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<LatencyCriteria>,
    /// Criteria for `steam`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steam: Option<SteamCriteria>,
    /// Criteria for `kubernetes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesCriteria>,
    /// Criteria for `docker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerCriteria>,
}

/// HTTP success criteria.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCriteria {
    /// Accepted status codes (`acceptedStatusCodes` in the original). Default 200-299.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "acceptedStatusCodes"
    )]
    pub status_codes: Option<Vec<i64>>,
    /// Slowest acceptable response (`latencyMsUnder` in the original).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "latencyMsUnder"
    )]
    pub max_latency_ms: Option<i64>,
    /// Required Content-Type prefix, e.g. `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// Body criteria in the original implementation's keyword form.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeywordCriteria {
    /// Every one of these must appear in the body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contains: Vec<String>,
    /// None of these may appear in the body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_contains: Vec<String>,
}

/// Only a latency bound.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyCriteria {
    /// Slowest acceptable check, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<i64>,
}

/// Ping success criteria.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PingCriteria {
    /// Slowest acceptable average round trip, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<i64>,
    /// Highest acceptable packet loss, in percent. Default: up while any reply arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_loss_percent: Option<i64>,
}

/// Steam success criteria.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SteamCriteria {
    /// Slowest acceptable query, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<i64>,
    /// Fewest players for the server to count as up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_players: Option<i64>,
}

/// Kubernetes success criteria.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesCriteria {
    /// Lowest acceptable share of ready/available replicas, in percent. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_percent: Option<i64>,
    /// Condition type that must be `True` for kinds other than workloads, pods, nodes and services. Default `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_type: Option<String>,
}

/// Docker success criteria.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerCriteria {
    /// Require a health check that reports healthy (also down while it is starting or
    /// when the container has none). Default false: only an `unhealthy` report is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_healthy: Option<bool>,
}

/// Alert routing of one monitor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alerting {
    /// Route through this NotificationPolicy only (same namespace), instead of every matching one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<LocalRef>,
    /// Repeat the down notification every this many minutes while down; 0 = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_interval_minutes: Option<i64>,
    /// Which events notify (list, or object of booleans). Default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::compat::notify_on_schema")]
    pub notify_on: Option<NotifyOn>,
}

/// The states a monitor can be in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MonitorState {
    /// The last check succeeded.
    Up,
    /// Checks failed past retries and grace.
    Down,
    /// No result yet.
    Pending,
    /// Changing state too often.
    Flapping,
    /// Disabled.
    Paused,
}

impl MonitorState {
    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            MonitorState::Up => "up",
            MonitorState::Down => "down",
            MonitorState::Pending => "pending",
            MonitorState::Flapping => "flapping",
            MonitorState::Paused => "paused",
        }
    }
}

/// The latest result, as written to status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastResult {
    /// State after this result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MonitorState>,
    /// When the check ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
    /// Latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// Attempts used, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    /// Classified failure reason (dns, connect, tls, timeout, status, assertion, body, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable details, free of secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Uptime percentages over rolling windows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UptimeSummary {
    /// Last hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last1h: Option<f64>,
    /// Last 24 hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last24h: Option<f64>,
    /// Last 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last7d: Option<f64>,
    /// Last 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last30d: Option<f64>,
}

/// TLS certificate facts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertStatus {
    /// Expiry of the leaf certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Whole days until expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_until_expiry: Option<i64>,
}

/// What the agent reports about a monitor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorStatus {
    /// The `metadata.generation` the agent last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` and `Ready` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The latest result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<LastResult>,
    /// Uptime over rolling windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<UptimeSummary>,
    /// TLS certificate facts (HTTP-based monitors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<CertStatus>,
    /// When the next check is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
    /// The generated token of a push monitor without `spec.target.push.token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_token: Option<String>,
}

impl MonitorSpec {
    /// Whether checks run (default true).
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}
