//! Generic HTTP webhook: method, headers, a body template and an optional HMAC-SHA256
//! signature of the body. It also holds the plumbing the other HTTP providers share:
//! reading Secrets, sending with the time limit, classifying the answer, and keeping
//! URLs and tokens out of every error message.

use std::error::Error as _;

use hmac::{Hmac, KeyInit, Mac};
use kubekuma_crds::ProviderType;
use kubekuma_crds::common::SecretKeyRef;
use kubekuma_crds::notification::WebhookConfig;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use sha2::Sha256;

use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::{PlanError, Sink};
use crate::rules::{headers_ok, url_ok};
use crate::secrets::{SecretValue, secret_refs};

/// Header of the signature when `signatureHeader` is not set.
const DEFAULT_SIGNATURE_HEADER: &str = "X-KubeKuma-Signature";
/// How much of an answer is read; the rest is dropped.
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// How much of an answer an error message quotes.
const EXCERPT_CHARS: usize = 200;

/// Where a webhook sends to.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    /// The URL held in a Secret key (`urlSecretRef`).
    Secret(SecretKeyRef),
    /// `url` as written; it may hold `${SECRET:name:key}` references.
    Text(String),
}

/// A Webhook provider's checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookPlan {
    /// The namespace its Secret references resolve in.
    namespace: String,
    /// The path of its configuration block.
    base: String,
    /// Where it sends to.
    target: Target,
    /// GET, POST, PUT, PATCH or DELETE (default POST).
    method: Method,
    /// Extra headers: the parsed name, the name as written (for messages) and the value
    /// as written (it may hold `${SECRET:…}`).
    headers: Vec<(HeaderName, String, String)>,
    /// `url` as written (even beside `urlSecretRef`), for [`WebhookPlan::secret_strings`].
    raw_url: Option<String>,
    /// The headers as written, for [`WebhookPlan::secret_strings`].
    raw_headers: Vec<(String, String)>,
    /// The Content-Type to set: `contentType`, else `application/json` unless a header
    /// sets one.
    content_type: Option<HeaderValue>,
    /// `bodyTemplate`.
    body_template: Option<String>,
    /// The Secret key holding the HMAC key and the header carrying the signature.
    hmac: Option<(SecretKeyRef, HeaderName)>,
}

impl WebhookPlan {
    /// The plan of a Webhook block checked on its own at `spec.config.webhook`.
    pub fn of(namespace: &str, config: &WebhookConfig) -> Result<WebhookPlan, PlanError> {
        super::alone(namespace, ProviderType::Webhook, config, plan)
    }

    /// Its Secret references with their field paths.
    pub(super) fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        let mut v = Vec::new();
        if let Target::Secret(r) = &self.target {
            v.push((format!("{}.urlSecretRef", self.base), r.clone()));
        }
        if let Some((r, _)) = &self.hmac {
            v.push((format!("{}.hmacSecretRef", self.base), r.clone()));
        }
        v
    }

    /// The string fields that may hold `${SECRET:…}`, with their paths.
    pub(super) fn secret_strings(&self) -> Vec<(String, String)> {
        self.raw_url
            .iter()
            .map(|u| (format!("{}.url", self.base), u.clone()))
            .chain(
                self.raw_headers
                    .iter()
                    .map(|(k, v)| (format!("{}.headers.{k}", self.base), v.clone())),
            )
            .collect()
    }
}

/// The plan of a Webhook provider: its configuration block at `base` checked.
pub(crate) fn plan(
    namespace: &str,
    base: &str,
    c: &WebhookConfig,
    sink: &mut Sink<'_>,
) -> Option<WebhookPlan> {
    match (&c.url, &c.url_secret_ref) {
        (None, None) => sink.error(&format!("{base}.url"), "required (or urlSecretRef)"),
        (Some(u), _) => url_ok(sink, &format!("{base}.url"), u, &["http", "https"]),
        _ => {}
    }
    let method = match &c.method {
        None => Some(Method::POST),
        Some(m) => match m.to_ascii_uppercase().as_str() {
            "GET" => Some(Method::GET),
            "POST" => Some(Method::POST),
            "PUT" => Some(Method::PUT),
            "PATCH" => Some(Method::PATCH),
            "DELETE" => Some(Method::DELETE),
            _ => {
                sink.error(
                    &format!("{base}.method"),
                    format!("unknown value {m:?}, expected one of GET, POST, PUT, PATCH, DELETE"),
                );
                None
            }
        },
    };
    headers_ok(sink, &format!("{base}.headers"), &c.headers);
    let raw_headers: Vec<(String, String)> = c
        .headers
        .iter()
        .flat_map(|h| h.0.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // headers_ok refuses what is not a header name; what is left parses.
    let headers: Vec<(HeaderName, String, String)> = raw_headers
        .iter()
        .filter_map(|(k, v)| {
            let name = HeaderName::from_bytes(k.as_bytes()).ok()?;
            Some((name, k.clone(), v.clone()))
        })
        .collect();
    if let Some(t) = &c.body_template {
        use crate::notify::template::{Part, Unusable, check};
        match check(t, Part::WebhookBody) {
            Err(Unusable::Broken(e)) => sink.warn(
                &format!("{base}.bodyTemplate"),
                format!("template does not work (the default body is used): {e}"),
            ),
            // Over a limit: refused, so it never costs the agent time or memory.
            Err(Unusable::OverLimit(e)) => sink.error(&format!("{base}.bodyTemplate"), e),
            Ok(()) => {}
        }
    }
    let content_type = match &c.content_type {
        Some(ct) => match HeaderValue::from_str(ct) {
            Ok(v) => Some(Some(v)),
            Err(_) => {
                sink.error(
                    &format!("{base}.contentType"),
                    format!("{ct:?} is not a valid header value"),
                );
                None
            }
        },
        None if headers.iter().any(|(n, _, _)| n == CONTENT_TYPE) => Some(None),
        None => Some(Some(HeaderValue::from_static("application/json"))),
    };
    let hmac = match &c.hmac_secret_ref {
        None => Some(None),
        Some(r) => {
            let name = c
                .signature_header
                .as_deref()
                .unwrap_or(DEFAULT_SIGNATURE_HEADER);
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(header) => Some(Some((r.clone(), header))),
                Err(_) => {
                    sink.error(
                        &format!("{base}.signatureHeader"),
                        format!("{name:?} is not a valid header name"),
                    );
                    None
                }
            }
        }
    };
    let target = match (&c.url_secret_ref, &c.url) {
        (Some(r), _) => Target::Secret(r.clone()),
        (None, Some(u)) => Target::Text(u.clone()),
        (None, None) => return None,
    };
    Some(WebhookPlan {
        namespace: namespace.to_string(),
        base: base.to_string(),
        target,
        method: method?,
        headers,
        raw_url: c.url.clone(),
        raw_headers,
        content_type: content_type?,
        body_template: c.body_template.clone(),
        hmac: hmac?,
    })
}

/// Send `msg` to the webhook of `plan`.
pub async fn send(
    ctx: &ProviderContext,
    plan: &WebhookPlan,
    msg: &Message,
) -> Result<Delivered, SendError> {
    let namespace = plan.namespace.as_str();
    let mut redact = Vec::new();
    let url = match &plan.target {
        Target::Secret(r) => secret(ctx, namespace, r, "urlSecretRef")?,
        Target::Text(raw) => {
            redact.extend(secrets_in(ctx, namespace, raw));
            ctx.secrets
                .resolve(namespace, raw)
                .map_err(|e| SendError::Config(format!("url: {e}")))?
        }
    };
    redact.extend(url_parts(&url));

    let mut headers = HeaderMap::new();
    for (header, name, raw) in &plan.headers {
        let value = ctx
            .secrets
            .resolve(namespace, raw)
            .map_err(|e| SendError::Config(format!("header {name}: {e}")))?;
        let hidden = secrets_in(ctx, namespace, raw);
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            SendError::Config(format!(
                "header {name}: the value is not a valid header value"
            ))
        })?;
        value.set_sensitive(!hidden.is_empty());
        redact.extend(hidden);
        headers.insert(header.clone(), value);
    }
    if let Some(ct) = &plan.content_type {
        headers.insert(CONTENT_TYPE, ct.clone());
    }

    let method = plan.method.clone();
    let has_body = !matches!(method, Method::GET | Method::HEAD);
    let body = match (&plan.body_template, has_body) {
        (_, false) => Vec::new(),
        (Some(template), true) => match render(template, msg) {
            Ok(text) => text.into_bytes(),
            // A broken template never drops the notification: the default body goes.
            Err(e) => {
                tracing::warn!(error = %e, "webhook bodyTemplate failed; sending the default JSON body");
                serde_json::to_vec(&msg.event_json)
                    .map_err(|e| SendError::Config(format!("the event cannot be encoded: {e}")))?
            }
        },
        (None, true) => serde_json::to_vec(&msg.event_json)
            .map_err(|e| SendError::Config(format!("the event cannot be encoded: {e}")))?,
    };

    if let Some((r, header)) = &plan.hmac {
        let key = secret_value(ctx, namespace, r, "hmacSecretRef")?;
        redact.push(key.expose_str());
        let value = HeaderValue::from_str(&format!("sha256={}", sign(key.expose(), &body)))
            .map_err(|_| SendError::Config("the signature is not a valid header value".into()))?;
        headers.insert(header.clone(), value);
    }

    let mut req = ctx.http.request(method, &url).headers(headers);
    if has_body {
        req = req.body(body);
    }
    execute(ctx, req, redact).await?.outcome(None)
}

/// Hex HMAC-SHA256 of `body` with `key`.
fn sign(key: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `bodyTemplate` rendered with the event's fields (plus `title`, `body`, `event` and
/// `state` unless the event has fields of those names).
/// The body template with the event's variables (see [`crate::notify::template`]) plus
/// `title`, `body` and `event` (the kind); Go-style names are accepted.
fn render(template: &str, msg: &Message) -> Result<String, crate::notify::template::TemplateError> {
    let mut vars = match &msg.event_json {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    for (k, v) in [
        ("title", &msg.title),
        ("body", &msg.body),
        ("event", &msg.event),
        ("state", &msg.state),
    ] {
        vars.entry(k)
            .or_insert_with(|| serde_json::Value::String(v.clone()));
    }
    crate::notify::template::render_json(
        template,
        &serde_json::Value::Object(vars),
        crate::notify::template::Part::WebhookBody,
    )
}

// ---------------------------------------------------------------- shared by the HTTP providers

/// A Secret value as trimmed text (Secrets written from files often end in a newline).
pub(super) fn secret(
    ctx: &ProviderContext,
    namespace: &str,
    r: &SecretKeyRef,
    field: &str,
) -> Result<String, SendError> {
    let value = secret_value(ctx, namespace, r, field)?
        .expose_str()
        .trim()
        .to_string();
    if value.is_empty() {
        return Err(SendError::Config(format!(
            "{field}: key {:?} of Secret {namespace}/{} is empty",
            r.key, r.name
        )));
    }
    Ok(value)
}

/// A Secret value as stored; a missing Secret or key is a configuration error naming
/// both, never a value.
fn secret_value<'a>(
    ctx: &'a ProviderContext,
    namespace: &str,
    r: &SecretKeyRef,
    field: &str,
) -> Result<&'a SecretValue, SendError> {
    ctx.secrets.get(namespace, &r.name, &r.key).ok_or_else(|| {
        SendError::Config(format!(
            "{field}: {}",
            ctx.secrets.why_missing(namespace, &r.name, &r.key)
        ))
    })
}

/// The values of the `${SECRET:name:key}` references in `text`.
fn secrets_in(ctx: &ProviderContext, namespace: &str, text: &str) -> Vec<String> {
    secret_refs(text)
        .flatten()
        .filter_map(|r| ctx.secrets.get(namespace, &r.name, &r.key))
        .map(SecretValue::expose_str)
        .collect()
}

/// A secret URL and its path (services echo the path in error pages), for [`scrub`].
/// POST `body` as JSON to the URL held in the Secret key `r` (Slack, Discord): the URL is
/// the credential, so it and its path are redacted from every error.
pub(super) async fn post_json_to_secret_url(
    ctx: &ProviderContext,
    namespace: &str,
    r: &SecretKeyRef,
    field: &str,
    body: &serde_json::Value,
) -> Result<Delivered, SendError> {
    let url = secret(ctx, namespace, r, field)?;
    let req = ctx.http.post(&url).json(body);
    execute(ctx, req, url_parts(&url)).await?.outcome(None)
}

pub(super) fn url_parts(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    if let Ok(u) = url::Url::parse(url)
        && u.path().len() > 1
    {
        out.push(u.path().to_string());
    }
    out
}

/// What a service answered.
pub(super) struct Reply {
    pub status: StatusCode,
    /// The first [`MAX_REPLY_BYTES`] of the body, lossily decoded.
    pub body: String,
    redact: Vec<String>,
}

impl Reply {
    /// 2xx is delivered; 408, 429 and 5xx are temporary; anything else is rejected,
    /// quoting `reason` (a service's own error text) or an excerpt of the body.
    pub(super) fn outcome(&self, reason: Option<&str>) -> Result<Delivered, SendError> {
        let code = self.status.as_u16();
        if self.status.is_success() {
            return Ok(Delivered {
                detail: format!("HTTP {code}"),
            });
        }
        let text = self.describe(reason.unwrap_or(&self.body));
        if code == 408 || code == 429 || self.status.is_server_error() {
            Err(SendError::Temporary(text))
        } else {
            Err(SendError::Rejected(text))
        }
    }

    /// A refusal the service reports with a success status (`{"ok":false}`).
    pub(super) fn rejected(&self, reason: &str) -> SendError {
        SendError::Rejected(self.describe(reason))
    }

    /// The body as JSON, if it is.
    pub(super) fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    fn describe(&self, reason: &str) -> String {
        let code = self.status.as_u16();
        let why = truncate(
            &scrub(reason, &self.redact)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            EXCERPT_CHARS,
        );
        if why.is_empty() {
            format!("HTTP {code}")
        } else {
            format!("HTTP {code}: {why}")
        }
    }
}

/// Send `req` within the context's time limit and read the answer. `redact` lists the
/// credentials in the request, removed from any message that could quote them.
pub(super) async fn execute(
    ctx: &ProviderContext,
    req: RequestBuilder,
    redact: Vec<String>,
) -> Result<Reply, SendError> {
    let mut resp = req
        .timeout(ctx.timeout)
        .send()
        .await
        .map_err(|e| network(e, &redact))?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| network(e, &redact))? {
        let room = MAX_REPLY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_REPLY_BYTES {
            break;
        }
    }
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        redact,
    })
}

/// A request that failed before an answer: a bad request is a configuration error, the
/// rest (refused, reset, timed out) is temporary. The URL is never part of the text.
fn network(e: reqwest::Error, redact: &[String]) -> SendError {
    let builder = e.is_builder();
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let text = scrub(&text, redact);
    if builder {
        SendError::Config(format!("the request cannot be built: {text}"))
    } else {
        SendError::Temporary(text)
    }
}

/// `text` with every credential in `redact` replaced by `<redacted>`.
fn scrub(text: &str, redact: &[String]) -> String {
    let mut redact: Vec<&str> = redact
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    // Longer first, so a URL goes whole before the token inside it.
    redact.sort_by_key(|s| std::cmp::Reverse(s.len()));
    redact
        .into_iter()
        .fold(text.to_string(), |t, s| t.replace(s, "<redacted>"))
}

/// At most `max` characters of `s`, ending in `…` when cut (never inside a character).
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// How an event reads: bad news, good news, or neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tone {
    Down,
    Up,
    Other,
}

/// `down` (and reminders while down) is bad news, `up` good news.
pub(super) fn tone(msg: &Message) -> Tone {
    match msg.event.as_str() {
        "down" => Tone::Down,
        "up" => Tone::Up,
        "reminder" if msg.state == "down" => Tone::Down,
        _ => Tone::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("ééé", 0), "…");
    }

    #[test]
    fn scrubs_longest_first() {
        let redact = vec!["tok".to_string(), "http://x/tok".to_string()];
        assert_eq!(
            scrub("for http://x/tok and tok", &redact),
            "for <redacted> and <redacted>"
        );
    }

    #[test]
    fn signs_like_the_rfc_4231_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
