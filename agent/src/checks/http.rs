//! The `http` checker: one request over a fresh connection, judged by status code,
//! content type and latency; the peer's TLS certificate expiry is recorded.
//!
//! `tls.sni` (https only) names a server in the TLS handshake other than the URL's host:
//! the connection still goes to the URL's host (resolved first), the certificate is
//! verified against the name, and the request carries the URL's host in `Host`.
//!
//! [`fetch`] and [`judge`] are split so that the `keyword` and `jsonQuery` checkers can
//! reuse the request and add their own body criteria.

use chrono::Utc;
use kubekuma_crds::monitor::HttpCriteria;
use kubekuma_crds::monitor::{HttpMethod, HttpTarget, MonitorSpec};
use kubekuma_crds::results::{CertInfo, CheckOutcome, FailureReason};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use super::{
    Attempt, CheckContext, cert_info, error_chain, excerpt, find_tls_error, is_connect_kind,
    latency_exceeded, lock,
};
use crate::findings::Sink;
use crate::rules::{headers_ok, range, secret_syntax, url_ok};
use crate::secrets::secret_refs;

/// Body bytes read when `maxBodyBytes` is not set: 1 MiB.
const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Redirects followed when `maxRedirects` is not set.
const DEFAULT_MAX_REDIRECTS: usize = 10;
/// Secret values shorter than this are not scrubbed from messages (they would mangle them).
const MIN_SCRUB_LEN: usize = 4;

/// What distinguishes one cached HTTP client from another.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    skip_verify: bool,
    /// `None`: do not follow redirects; `Some(n)`: follow at most `n`.
    redirects: Option<usize>,
    user_agent: String,
    /// `tls.sni`: the name connections to it go to these addresses (the URL's host's),
    /// so the TLS handshake names it while the request goes where the URL says.
    sni: Option<(String, Vec<std::net::SocketAddr>)>,
}

/// One HTTP exchange that produced a response.
#[derive(Clone, Debug)]
pub(crate) struct Exchange {
    /// Final status code (after redirects).
    pub status: u16,
    /// Final URL, without userinfo and query, safe for messages.
    pub url: String,
    /// The `Content-Type` header of the final response.
    pub content_type: Option<String>,
    /// The first `maxBodyBytes` of the body.
    pub body: Vec<u8>,
    /// The body was longer than what was read.
    pub truncated: bool,
    /// Leaf certificate of the final response's TLS connection.
    pub cert: Option<CertInfo>,
}

/// An HTTP request and its `successCriteria.http`, checked (also the request of the
/// `keyword` and `jsonQuery` checkers).
#[derive(Clone, Debug, PartialEq)]
pub struct HttpPlan {
    /// The namespace the `${SECRET:…}` references of URL, headers and body resolve in.
    namespace: String,
    /// The target as written: URL, headers and body may hold secret references, resolved
    /// at check time.
    target: HttpTarget,
    /// The URL, parsed, when it holds no secret reference.
    url: Option<Url>,
    /// The method.
    method: reqwest::Method,
    /// `None`: do not follow redirects; `Some(n)`: follow at most `n`.
    redirects: Option<usize>,
    /// Most body bytes read.
    max_body_bytes: usize,
    /// `successCriteria.http`.
    criteria: HttpCriteria,
}

/// The rules of an HTTP request block at `base` (`spec.target.http`, or the request of a
/// `keyword` / `jsonQuery` target).
pub(crate) fn rules(sink: &mut Sink<'_>, base: &str, h: &HttpTarget) {
    url_ok(sink, &format!("{base}.url"), &h.url, &["http", "https"]);
    headers_ok(sink, &format!("{base}.headers"), &h.headers);
    if let Some(body) = &h.body {
        secret_syntax(sink, &format!("{base}.body"), body);
    }
    range(
        sink,
        &format!("{base}.maxRedirects"),
        h.max_redirects,
        0,
        50,
    );
    range(
        sink,
        &format!("{base}.maxBodyBytes"),
        h.max_body_bytes,
        1,
        64 * 1024 * 1024,
    );
    if let Some(tls) = &h.tls {
        range(
            sink,
            &format!("{base}.tls.warnBeforeDays"),
            tls.warn_before_days,
            0,
            3650,
        );
        if tls.verify == Some(true) && h.skip_tls_verify == Some(true) {
            sink.warn(
                &format!("{base}.tls.verify"),
                "contradicts skipTLSVerify: true; certificates will not be verified",
            );
        }
    }
}

impl HttpPlan {
    /// The plan of a request already checked with [`rules`], judged by the monitor's
    /// `successCriteria.http`.
    pub(crate) fn new(namespace: &str, target: &HttpTarget, spec: &MonitorSpec) -> HttpPlan {
        let url = if secret_refs(&target.url).next().is_none() {
            Url::parse(&target.url).ok()
        } else {
            None
        };
        let method = match target.method.unwrap_or(HttpMethod::GET) {
            HttpMethod::GET => reqwest::Method::GET,
            HttpMethod::HEAD => reqwest::Method::HEAD,
            HttpMethod::POST => reqwest::Method::POST,
            HttpMethod::PUT => reqwest::Method::PUT,
            HttpMethod::PATCH => reqwest::Method::PATCH,
            HttpMethod::DELETE => reqwest::Method::DELETE,
            HttpMethod::OPTIONS => reqwest::Method::OPTIONS,
        };
        let redirects = if target.follow_redirects.unwrap_or(true) {
            Some(
                target
                    .max_redirects
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(DEFAULT_MAX_REDIRECTS),
            )
        } else {
            None
        };
        let max_body_bytes = match target.max_body_bytes {
            Some(n) => usize::try_from(n).unwrap_or(DEFAULT_MAX_BODY_BYTES),
            None => DEFAULT_MAX_BODY_BYTES,
        };
        HttpPlan {
            namespace: namespace.to_string(),
            target: target.clone(),
            url,
            method,
            redirects,
            max_body_bytes,
            criteria: spec
                .success_criteria
                .as_ref()
                .and_then(|c| c.http.clone())
                .unwrap_or_default(),
        }
    }
}

/// The plan of an `http` monitor: `spec.target.http` checked.
pub(crate) fn plan(namespace: &str, spec: &MonitorSpec, sink: &mut Sink<'_>) -> Option<HttpPlan> {
    let target = spec.target.http.as_ref()?;
    rules(sink, "spec.target.http", target);
    Some(HttpPlan::new(namespace, target, spec))
}

/// Run an `http` monitor's check.
pub(crate) async fn check(ctx: &CheckContext, plan: &HttpPlan, attempt: &Attempt) -> CheckOutcome {
    match fetch_and_judge(ctx, plan, attempt).await {
        Ok(passed) => scrub(passed.judged, &passed.secrets),
        Err(down) => down,
    }
}

/// An HTTP exchange that met the `http` criteria, for checkers that go on to judge the body.
pub(crate) struct Passed {
    /// The response.
    pub exchange: Exchange,
    /// The up outcome of the HTTP criteria (latency, certificate, status code).
    pub judged: CheckOutcome,
    /// Secret values to scrub from any message built later.
    pub secrets: Vec<String>,
}

/// Send the plan's request and judge it by the monitor's `successCriteria.http`, as the
/// `http` checker does. `Err` is the finished, scrubbed down outcome.
pub(crate) async fn fetch_and_judge(
    ctx: &CheckContext,
    plan: &HttpPlan,
    attempt: &Attempt,
) -> Result<Passed, CheckOutcome> {
    let secrets = secret_values(ctx, &plan.namespace, &plan.target);
    let exchange = match fetch(ctx, plan, attempt).await {
        Ok(e) => e,
        Err(down) => return Err(scrub(down, &secrets)),
    };
    let judged = judge(&exchange, &plan.target, &plan.criteria, attempt);
    if !judged.up {
        return Err(scrub(judged, &secrets));
    }
    Ok(Passed {
        exchange,
        judged,
        secrets,
    })
}

/// Send the plan's request and read its response (at most `maxBodyBytes`).
/// `Err` is a finished down outcome (config, dns, connect, tls, body, …).
pub(crate) async fn fetch(
    ctx: &CheckContext,
    plan: &HttpPlan,
    attempt: &Attempt,
) -> Result<Exchange, CheckOutcome> {
    let (namespace, target) = (plan.namespace.as_str(), &plan.target);
    let url = target_url(ctx, plan)?;
    let shown = display_url(&url);
    let mut headers = request_headers(ctx, namespace, target)?;
    let body = match &target.body {
        Some(b) => Some(
            ctx.secrets()
                .resolve(namespace, b)
                .map_err(|e| config(format!("spec.target.http.body: {e}")))?,
        ),
        None => None,
    };
    let (sni, request_url) = route(&url, target, &mut headers).await?;

    let key = ClientKey {
        skip_verify: target.skips_tls_verify(),
        redirects: plan.redirects,
        user_agent: ctx.settings().user_agent.clone(),
        sni: sni.map(|route| (route.name(), route.addrs)),
    };
    let client = client(ctx, &key).map_err(config)?;

    let mut request = client
        .request(plan.method.clone(), request_url.clone())
        .headers(headers);
    if let Some(body) = body {
        request = request.body(body);
    }

    let mut response = request
        .send()
        .await
        .map_err(|e| request_failed(&e, &url, &shown, &key, attempt))?;

    let status = response.status().as_u16();
    // Without a redirect, the URL as written (not the `tls.sni` name it was sent to).
    let final_url = if *response.url() == request_url {
        shown.clone()
    } else {
        display_url(response.url())
    };
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let cert = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .and_then(|der| cert_info(der, Utc::now()));

    let (body, truncated) = match read_body(&mut response, plan.max_body_bytes).await {
        Ok(read) => read,
        Err(root) => {
            let mut down = CheckOutcome::down(
                0.0,
                FailureReason::Body,
                format!("HTTP {status} from {final_url}, but reading the body failed: {root}"),
            )
            .with("statusCode", status);
            down.cert = cert;
            return Err(down);
        }
    };

    Ok(Exchange {
        status,
        url: final_url,
        content_type,
        body,
        truncated,
        cert,
    })
}

/// A configuration failure (found before anything was sent, so no latency).
fn config(msg: String) -> CheckOutcome {
    CheckOutcome::down(0.0, FailureReason::Config, msg)
}

/// The URL to check: the plan's, or (when it holds secret references) resolved now; http
/// or https only.
fn target_url(ctx: &CheckContext, plan: &HttpPlan) -> Result<Url, CheckOutcome> {
    let url = match &plan.url {
        Some(url) => url.clone(),
        None => {
            let raw_url = ctx
                .secrets()
                .resolve(&plan.namespace, &plan.target.url)
                .map_err(|e| config(format!("spec.target.http.url: {e}")))?;
            Url::parse(&raw_url).map_err(|e| {
                config(format!(
                    "spec.target.http.url is not a valid URL ({e}); check it and any secret it uses"
                ))
            })?
        }
    };
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(config(format!(
            "spec.target.http.url must be http:// or https://, got {}://",
            url.scheme()
        )));
    }
    Ok(url)
}

/// The target's headers with their secrets resolved; a value that came from a secret is
/// marked sensitive.
fn request_headers(
    ctx: &CheckContext,
    namespace: &str,
    target: &HttpTarget,
) -> Result<HeaderMap, CheckOutcome> {
    let mut headers = HeaderMap::new();
    for (name, value) in target.headers.iter().flat_map(|h| h.0.iter()) {
        let path = format!("spec.target.http.headers.{name}");
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| config(format!("{path}: invalid header name")))?;
        let resolved = ctx
            .secrets()
            .resolve(namespace, value)
            .map_err(|e| config(format!("{path}: {e}")))?;
        let mut hv = HeaderValue::from_str(&resolved)
            .map_err(|_| config(format!("{path}: the value is not a valid header value")))?;
        if secret_refs(value).next().is_some() {
            hv.set_sensitive(true);
        }
        headers.append(header, hv);
    }
    Ok(headers)
}

/// Where the request goes: with `tls.sni` (https only), to the name instead of the URL's
/// host, with that name resolved to the host's addresses and the host kept in `Host`;
/// otherwise to the URL.
async fn route(
    url: &Url,
    target: &HttpTarget,
    headers: &mut HeaderMap,
) -> Result<(Option<SniRoute>, Url), CheckOutcome> {
    let sni = match target
        .tls
        .as_ref()
        .and_then(|t| t.sni.as_deref())
        .map(str::trim)
    {
        Some(name) if !name.is_empty() && url.scheme() == "https" => {
            Some(sni_route(url, name).await?)
        }
        _ => None,
    };
    let request_url = match &sni {
        Some(route) => {
            if !headers.contains_key(reqwest::header::HOST) {
                headers.insert(reqwest::header::HOST, route.host.clone());
            }
            route.url.clone()
        }
        None => url.clone(),
    };
    Ok((sni, request_url))
}

/// Reads the body up to `limit` bytes: the bytes and whether it was cut; on a read error,
/// the innermost cause.
async fn read_body(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), String> {
    let mut body = Vec::new();
    let mut truncated = false;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                let chain = error_chain(&e);
                return Err(chain.last().map(|e| e.to_string()).unwrap_or_default());
            }
        }
    }
    Ok((body, truncated))
}

/// Where a request with `tls.sni` goes: `url` is the monitor's URL with its host replaced
/// by the server name (which the client resolves to `addrs`, the original host's
/// addresses), and `host` the original host (and port), sent as the `Host` header.
struct SniRoute {
    url: Url,
    addrs: Vec<std::net::SocketAddr>,
    host: HeaderValue,
}

impl SniRoute {
    /// The server name, as the URL carries it (lowercase, IDNA-encoded): what the client's
    /// resolver override has to match.
    fn name(&self) -> String {
        self.url.host_str().unwrap_or_default().to_string()
    }
}

/// The route of a request whose TLS handshake names `name` instead of `url`'s host, as
/// `curl --connect-to` or `openssl s_client -servername` do: the certificate is verified
/// against `name`. `Err` is a finished down outcome (an invalid name is `config`, a host
/// that does not resolve `dns`).
async fn sni_route(url: &Url, name: &str) -> Result<SniRoute, CheckOutcome> {
    let config = |msg: String| CheckOutcome::down(0.0, FailureReason::Config, msg);
    let domain = match url::Host::parse(name) {
        Ok(url::Host::Domain(d)) if rustls::pki_types::ServerName::try_from(d.as_str()).is_ok() => {
            d
        }
        _ => {
            return Err(config(format!(
                "spec.target.http.tls.sni: {:?} is not a DNS name",
                excerpt(name.as_bytes(), 60)
            )));
        }
    };
    let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
        return Err(config(
            "spec.target.http.url has no host to send the tls.sni request to".into(),
        ));
    };
    let addrs = match host {
        url::Host::Ipv4(ip) => vec![(ip, port).into()],
        url::Host::Ipv6(ip) => vec![(ip, port).into()],
        url::Host::Domain(d) => super::resolve(d, port).await?,
    };
    let mut routed = url.clone();
    routed
        .set_host(Some(&domain))
        .map_err(|e| config(format!("spec.target.http.tls.sni: {e}")))?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let host = HeaderValue::from_str(&authority)
        .map_err(|_| config("spec.target.http.url: the host is not a valid header".into()))?;
    Ok(SniRoute {
        url: routed,
        addrs,
        host,
    })
}

/// Apply the status, content-type and latency criteria to a response.
pub(crate) fn judge(
    exchange: &Exchange,
    target: &HttpTarget,
    criteria: &HttpCriteria,
    attempt: &Attempt,
) -> CheckOutcome {
    let accepted = criteria.status_codes.as_deref();
    let status_ok = match accepted {
        Some(codes) => codes.contains(&i64::from(exchange.status)),
        None => (200..300).contains(&exchange.status),
    };
    let want_type = criteria
        .content_type
        .as_deref()
        .or(target.expected_content_type.as_deref())
        .map(str::trim)
        .filter(|t| !t.is_empty());

    let mut outcome = if !status_ok {
        CheckOutcome::down(
            0.0,
            FailureReason::Status,
            format!(
                "HTTP {}, expected {} ({})",
                exchange.status,
                describe_codes(accepted),
                exchange.url
            ),
        )
    } else if let Some(msg) = want_type.and_then(|want| content_type_mismatch(exchange, want)) {
        CheckOutcome::down(0.0, FailureReason::Assertion, msg)
    } else if let Some(msg) = latency_exceeded(attempt, criteria.max_latency_ms) {
        CheckOutcome::down(
            0.0,
            FailureReason::Assertion,
            format!("HTTP {} from {} {msg}", exchange.status, exchange.url),
        )
    } else {
        CheckOutcome::up(0.0)
    };
    outcome.cert = exchange.cert.clone();
    outcome = outcome
        .with("statusCode", exchange.status)
        .with("bodyBytes", exchange.body.len() as u64);
    if exchange.truncated {
        outcome = outcome.with("bodyTruncated", true);
    }
    outcome
}

fn content_type_mismatch(exchange: &Exchange, want: &str) -> Option<String> {
    match &exchange.content_type {
        Some(got)
            if got
                .trim()
                .to_ascii_lowercase()
                .starts_with(&want.to_ascii_lowercase()) =>
        {
            None
        }
        Some(got) => Some(format!(
            "Content-Type is \"{}\", expected \"{}\" ({})",
            excerpt(got.as_bytes(), 60),
            excerpt(want.as_bytes(), 60),
            exchange.url
        )),
        None => Some(format!(
            "no Content-Type header, expected \"{}\" ({})",
            excerpt(want.as_bytes(), 60),
            exchange.url
        )),
    }
}

/// `200-299`, or the accepted list with consecutive codes as ranges (`200-204, 301`).
fn describe_codes(accepted: Option<&[i64]>) -> String {
    let Some(codes) = accepted else {
        return "200-299".to_string();
    };
    let mut codes = codes.to_vec();
    codes.sort_unstable();
    codes.dedup();
    if codes.is_empty() {
        return "no status code (statusCodes is empty)".to_string();
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < codes.len() {
        let start = codes[i];
        let mut end = start;
        while i + 1 < codes.len() && codes[i + 1] == end + 1 {
            i += 1;
            end = codes[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(", ")
}

/// The cached client for `key`, built on first use. Every client keeps no idle
/// connections, so each check connects (and handshakes) afresh.
fn client(ctx: &CheckContext, key: &ClientKey) -> Result<reqwest::Client, String> {
    let mut clients = lock(&ctx.http_clients);
    if let Some(c) = clients.get(key) {
        return Ok(c.clone());
    }
    let tls = ctx.tls_config(!key.skip_verify, &[b"h2", b"http/1.1"])?;
    let redirect = match key.redirects {
        Some(n) => reqwest::redirect::Policy::limited(n),
        None => reqwest::redirect::Policy::none(),
    };
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        .user_agent(key.user_agent.as_str())
        .redirect(redirect)
        .pool_max_idle_per_host(0);
    if let Some((name, addrs)) = &key.sni {
        builder = builder.resolve_to_addrs(name, addrs);
    }
    let built = builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))?;
    if clients.len() >= super::MAX_CACHED_CLIENTS {
        clients.clear();
    }
    clients.insert(key.clone(), built.clone());
    Ok(built)
}

/// Classify an error from sending a request into a down outcome.
fn request_failed(
    err: &reqwest::Error,
    url: &Url,
    shown: &str,
    key: &ClientKey,
    attempt: &Attempt,
) -> CheckOutcome {
    let at = err
        .url()
        .map(display_url)
        .unwrap_or_else(|| shown.to_string());
    let chain = error_chain(err);
    let root = chain
        .iter()
        .skip(1)
        .last()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "unknown error".to_string());
    let host = err
        .url()
        .unwrap_or(url)
        .host_str()
        .unwrap_or("")
        .to_string();
    let io_kind = chain
        .iter()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map(|e| e.kind());
    let https = err.url().unwrap_or(url).scheme() == "https";

    let (reason, message) = if err.is_redirect() {
        let max = key.redirects.unwrap_or(0);
        (
            FailureReason::Status,
            format!("too many redirects: more than maxRedirects {max}, gave up at {at}"),
        )
    } else if err.is_dns() {
        (
            FailureReason::Dns,
            format!("cannot resolve host {host} ({at}): {root}"),
        )
    } else if let Some(tls) = find_tls_error(&chain) {
        (
            FailureReason::Tls,
            format!("TLS handshake with {at} failed: {tls}"),
        )
    } else if io_kind.is_some_and(is_connect_kind) {
        (
            FailureReason::Connect,
            format!("cannot connect to {at}: {root}"),
        )
    } else if io_kind == Some(std::io::ErrorKind::TimedOut) {
        (
            FailureReason::Timeout,
            format!(
                "connection to {at} timed out within {}: {root}",
                super::human_duration(attempt.timeout())
            ),
        )
    } else if err.is_connect() && https {
        (
            FailureReason::Tls,
            format!("TLS handshake with {at} failed: {root}"),
        )
    } else if err.is_connect() {
        (
            FailureReason::Connect,
            format!("cannot connect to {at}: {root}"),
        )
    } else if err.is_body() || err.is_decode() {
        (
            FailureReason::Body,
            format!("reading the response of {at} failed: {root}"),
        )
    } else if chain
        .iter()
        .filter_map(|e| e.downcast_ref::<hyper::Error>())
        .any(|e| e.is_incomplete_message() || e.is_canceled() || e.is_closed())
    {
        (
            FailureReason::Connect,
            format!("{at} closed the connection before a complete response: {root}"),
        )
    } else {
        (
            FailureReason::Protocol,
            format!("invalid HTTP response from {at}: {root}"),
        )
    };
    CheckOutcome::down(0.0, reason, message)
}

/// A URL as it may appear in messages: no userinfo, query or fragment.
pub(crate) fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The values of the secrets `target` refers to, to scrub from messages.
pub(crate) fn secret_values(
    ctx: &CheckContext,
    namespace: &str,
    target: &HttpTarget,
) -> Vec<String> {
    let texts = std::iter::once(target.url.as_str())
        .chain(
            target
                .headers
                .iter()
                .flat_map(|h| h.0.values().map(String::as_str)),
        )
        .chain(target.body.as_deref());
    let mut values: Vec<String> = texts
        .flat_map(secret_refs)
        .filter_map(Result::ok)
        .filter_map(|r| ctx.secrets().get(namespace, &r.name, &r.key))
        .map(|v| v.expose_str())
        .filter(|v| v.len() >= MIN_SCRUB_LEN)
        .collect();
    // Longest first, so a value containing another is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values
}

/// Last line of defence: no secret value survives into a message.
pub(crate) fn scrub(mut outcome: CheckOutcome, secrets: &[String]) -> CheckOutcome {
    if let Some(msg) = outcome.message.as_mut() {
        for s in secrets {
            if msg.contains(s.as_str()) {
                *msg = msg.replace(s.as_str(), "<redacted>");
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_described_as_ranges() {
        assert_eq!(describe_codes(None), "200-299");
        assert_eq!(
            describe_codes(Some(&[204, 200, 201, 202, 301])),
            "200-202, 204, 301"
        );
        assert_eq!(describe_codes(Some(&[418])), "418");
    }

    #[test]
    fn urls_lose_credentials_and_query() {
        let u = Url::parse("https://user:pw@example.com:8443/a/b?token=x#frag").unwrap();
        assert_eq!(display_url(&u), "https://example.com:8443/a/b");
    }
}
