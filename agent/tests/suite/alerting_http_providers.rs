//! The HTTP notification providers (Slack, Discord, Telegram, webhook, Gotify, Pushover)
//! against one in-process hyper server on 127.0.0.1 that records every request and answers
//! as the real service does: the exact requests, the classification of failures, and
//! that no error ever quotes a webhook URL or a token.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kubekuma_agent::notify::providers::{self, Message, ProviderContext, ProviderPlan, SendError};
use kubekuma_agent::secrets::{SecretStore, SecretValue};
use kubekuma_crds::NotificationProviderSpec;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const NS: &str = "prod";
const SLACK_PATH: &str = "/slack/services/T000/B000/slackSECRETpath";
const DISCORD_PATH: &str = "/discord/api/webhooks/123/discordSECRETpath";
const TG_TOKEN: &str = "123456:tgSECRETtoken";
const GOTIFY_TOKEN: &str = "gotifySECRETtoken";
const PO_TOKEN: &str = "poSECRETapptoken";
const PO_USER: &str = "poSECRETuserkey";
const HMAC_KEY: &str = "hmacSECRETkey";
const BEARER: &str = "bearerSECRETvalue";

// ---------------------------------------------------------------- the fake services

/// One request as the server received it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no header {name} in {:?}", self.headers))
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn form(&self) -> BTreeMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn only(&self) -> Seen {
        let all = self.requests();
        assert_eq!(all.len(), 1, "{all:#?}");
        all.into_iter().next().unwrap()
    }
}

async fn serve() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(answer(req, seen).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Server { addr, seen }
}

fn reply(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Records the request and answers like the service its path belongs to. A path with
/// `/status/NNN` answers NNN with an error page that echoes the whole request, which
/// the providers must not quote.
async fn answer(req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let s = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    seen.lock().unwrap().push(s.clone());
    let path = s.path.as_str();

    if let Some(rest) = path.split("/status/").nth(1) {
        let code: u16 = rest[..3].parse().unwrap();
        let echo = format!(
            "<html>error for {path}?{} headers {:?} body {}</html>",
            s.query.clone().unwrap_or_default(),
            s.headers,
            String::from_utf8_lossy(&body)
        );
        return reply(code, "text/html", echo);
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(10)).await;
        return reply(200, "text/plain", "ok".into());
    }
    if path.starts_with("/slack/") {
        return reply(200, "text/plain", "ok".into());
    }
    if path.starts_with("/discord/") {
        return Response::builder()
            .status(204)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    if path.ends_with("/sendMessage") {
        if path.contains(":bad") {
            let b = json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"});
            return reply(400, "application/json", b.to_string());
        }
        let b = json!({"ok": true, "result": {"message_id": 1, "chat": {"id": -100}}});
        return reply(200, "application/json", b.to_string());
    }
    if path.ends_with("/message") {
        if s.headers.get("x-gotify-key").and_then(|v| v.to_str().ok()) != Some(GOTIFY_TOKEN) {
            let b = json!({"error": "Unauthorized", "errorCode": 401,
                "errorDescription": format!("you need to provide a valid access token ({:?})", s.headers.get("x-gotify-key"))});
            return reply(401, "application/json", b.to_string());
        }
        let b = json!({"id": 7, "appid": 1, "title": "t", "message": "m", "priority": 5});
        return reply(200, "application/json", b.to_string());
    }
    if path.ends_with("/1/messages.json") {
        if s.form().get("user").map(String::as_str) == Some("bad-user") {
            let b = json!({"user": "invalid", "errors": ["user identifier is not a valid user, group, or subscribed user key"],
                "status": 0, "request": "5042853c"});
            return reply(400, "application/json", b.to_string());
        }
        return reply(
            200,
            "application/json",
            json!({"status": 1, "request": "647d2300"}).to_string(),
        );
    }
    reply(200, "application/json", "{}".into())
}

/// A port with nothing listening.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

// ---------------------------------------------------------------- inputs

fn secrets(entries: &[(&str, &str, &str)]) -> SecretStore {
    let mut by_name: BTreeMap<&str, BTreeMap<String, SecretValue>> = BTreeMap::new();
    for (name, key, value) in entries {
        by_name
            .entry(name)
            .or_default()
            .insert(key.to_string(), SecretValue::new(value.as_bytes().to_vec()));
    }
    let mut store = SecretStore::default();
    for (name, data) in by_name {
        store.insert(NS, name, data);
    }
    store
}

fn ctx(store: SecretStore) -> ProviderContext {
    let mut c = ProviderContext::new(Arc::new(store));
    c.timeout = Duration::from_secs(5);
    c
}

/// A provider as a user writes it.
fn spec(yaml: &str) -> NotificationProviderSpec {
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 5).unwrap()
}

fn message(event: &str, state: &str) -> Message {
    Message {
        title: "Monitor <api> is down".into(),
        body: "GET https://api.example.com: connection refused & retried (3x)".into(),
        event: event.into(),
        state: state.into(),
        timestamp: at(),
        event_json: json!({
            "monitorId": "prod/api",
            "monitorNamespace": "prod",
            "monitorName": "api",
            "previousState": "up",
            "currentState": state,
            "reason": "connectionRefused",
            "message": "connection refused",
            "latencyMs": 12,
            "timestamp": "2026-11-26T12:00:05Z",
            "isStateChange": true,
            "labels": {"team": "core"},
            "annotations": {}
        }),
    }
}

async fn send(
    c: &ProviderContext,
    s: &NotificationProviderSpec,
    m: &Message,
) -> Result<String, SendError> {
    let plan = ProviderPlan::of(NS, s).map_err(|e| SendError::Config(e.to_string()))?;
    providers::send(c, &plan, m).await.map(|d| d.detail)
}

// ---------------------------------------------------------------- Slack

#[tokio::test]
async fn slack_posts_text_with_channel_username_and_icon() {
    let srv = serve().await;
    let c = ctx(secrets(&[("slack-webhook", "url", &srv.url(SLACK_PATH))]));
    let s = spec(
        r##"
type: slack
config:
  slack:
    webhookUrlSecretRef: {name: slack-webhook, key: url}
    channel: "#alerts-critical"
    username: KubeKuma
    iconEmoji: ":rotating_light:"
"##,
    );
    assert_eq!(
        send(&c, &s, &message("down", "down")).await.unwrap(),
        "HTTP 200"
    );
    let r = srv.only();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", SLACK_PATH));
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.json(),
        json!({
            "text": "*Monitor &lt;api&gt; is down*\nGET https://api.example.com: connection refused &amp; retried (3x)",
            "channel": "#alerts-critical",
            "username": "KubeKuma",
            "icon_emoji": ":rotating_light:"
        })
    );
}

#[tokio::test]
async fn slack_reads_the_top_level_form_and_a_trailing_newline_in_the_secret() {
    let srv = serve().await;
    let url = format!("{}\n", srv.url(SLACK_PATH));
    let c = ctx(secrets(&[("slack-webhook", "url", &url)]));
    let s = spec(
        r#"
type: slack
slack:
  webhookUrlSecretRef: {name: slack-webhook, key: url}
"#,
    );
    let mut m = message("up", "up");
    m.title = "api is up".into();
    m.body = String::new();
    send(&c, &s, &m).await.unwrap();
    assert_eq!(srv.only().json(), json!({"text": "*api is up*"}));
}

// ---------------------------------------------------------------- Discord

#[tokio::test]
async fn discord_sends_one_embed_coloured_by_event() {
    let srv = serve().await;
    let c = ctx(secrets(&[("discord", "webhook", &srv.url(DISCORD_PATH))]));
    let s = spec(
        r#"
type: discord
config:
  discord:
    webhookUrlSecretRef: {name: discord, key: webhook}
    username: KubeKuma
    avatarUrl: https://example.com/kuma.png
"#,
    );
    let m = message("down", "down");
    assert_eq!(send(&c, &s, &m).await.unwrap(), "HTTP 204");
    let r = srv.only();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", DISCORD_PATH));
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.json(),
        json!({
            "username": "KubeKuma",
            "avatar_url": "https://example.com/kuma.png",
            "embeds": [{
                "title": m.title,
                "description": m.body,
                "color": 0xE74C3C,
                "timestamp": "2026-11-26T12:00:05Z"
            }],
            "allowed_mentions": {"parse": []}
        })
    );

    for (event, state, colour) in [
        ("up", "up", 0x2ECC71),
        ("reminder", "down", 0xE74C3C),
        ("flapping", "down", 0xF1C40F),
        ("certExpiring", "up", 0xF1C40F),
    ] {
        send(&c, &s, &message(event, state)).await.unwrap();
        let last = srv.requests().pop().unwrap().json();
        assert_eq!(last["embeds"][0]["color"], json!(colour), "{event}");
    }
}

#[tokio::test]
async fn discord_truncates_to_its_limits_on_char_boundaries() {
    let srv = serve().await;
    let c = ctx(secrets(&[("discord", "webhook", &srv.url(DISCORD_PATH))]));
    // The original implementation's place for the block.
    let s = spec(
        r#"
type: discord
discord:
  webhookUrlSecretRef: {name: discord, key: webhook}
"#,
    );
    let mut m = message("down", "down");
    m.title = "é".repeat(300);
    m.body = "ü".repeat(5000);
    send(&c, &s, &m).await.unwrap();
    let body = srv.only().json();
    let embed = &body["embeds"][0];
    let title = embed["title"].as_str().unwrap();
    let description = embed["description"].as_str().unwrap();
    assert_eq!(title.chars().count(), 256);
    assert!(title.ends_with("é…"));
    assert_eq!(description.chars().count(), 4096);
    assert!(description.ends_with("ü…"));
    assert!(body.get("username").is_none());
}

// ---------------------------------------------------------------- Telegram

fn telegram_spec(api: &str, mode: Option<&str>) -> NotificationProviderSpec {
    let mode = mode.map(|m| format!("parseMode: {m}")).unwrap_or_default();
    spec(&format!(
        r#"
type: telegram
config:
  telegram:
    botTokenSecretRef: {{name: telegram, key: token}}
    chatId: "-1001234567890"
    apiUrl: {api}
    {mode}
"#
    ))
}

#[tokio::test]
async fn telegram_sends_html_by_default_with_escaping() {
    let srv = serve().await;
    let c = ctx(secrets(&[("telegram", "token", TG_TOKEN)]));
    let s = telegram_spec(&srv.url("/"), None);
    assert_eq!(
        send(&c, &s, &message("down", "down")).await.unwrap(),
        "HTTP 200"
    );
    let r = srv.only();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/bot{TG_TOKEN}/sendMessage"));
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.json(),
        json!({
            "chat_id": "-1001234567890",
            "parse_mode": "HTML",
            "text": "<b>Monitor &lt;api&gt; is down</b>\n\nGET https://api.example.com: connection refused &amp; retried (3x)"
        })
    );
}

#[tokio::test]
async fn telegram_escapes_markdown_v2_and_legacy_markdown() {
    let srv = serve().await;
    let c = ctx(secrets(&[("telegram", "token", TG_TOKEN)]));
    let mut m = message("down", "down");
    m.title = "api_v2 is down!".into();
    m.body = "HTTP 503 (1.5 s) - see [runbook]".into();

    send(&c, &telegram_spec(&srv.url(""), Some("MarkdownV2")), &m)
        .await
        .unwrap();
    let v2 = srv.requests().pop().unwrap().json();
    assert_eq!(v2["parse_mode"], "MarkdownV2");
    assert_eq!(
        v2["text"],
        "*api\\_v2 is down\\!*\n\nHTTP 503 \\(1\\.5 s\\) \\- see \\[runbook\\]"
    );

    send(&c, &telegram_spec(&srv.url(""), Some("Markdown")), &m)
        .await
        .unwrap();
    let legacy = srv.requests().pop().unwrap().json();
    assert_eq!(legacy["parse_mode"], "Markdown");
    assert_eq!(
        legacy["text"],
        "api\\_v2 is down!\n\nHTTP 503 (1.5 s) - see \\[runbook]"
    );
}

#[tokio::test]
async fn telegram_refusal_quotes_the_description_never_the_token() {
    let srv = serve().await;
    let token = "999:bad-tgSECRET";
    let c = ctx(secrets(&[("telegram", "token", token)]));
    let err = send(
        &c,
        &telegram_spec(&srv.url(""), None),
        &message("down", "down"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        SendError::Rejected("HTTP 400: Bad Request: chat not found".into())
    );
    assert!(!err.to_string().contains("tgSECRET"));
}

// ---------------------------------------------------------------- webhook

fn hmac_hex(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn webhook_posts_the_event_json_signed_with_hmac() {
    let srv = serve().await;
    let c = ctx(secrets(&[
        ("hook", "url", &srv.url("/hooks/kubekuma")),
        ("hook", "hmac", HMAC_KEY),
        ("api-token", "token", BEARER),
    ]));
    let s = spec(
        r#"
type: webhook
config:
  webhook:
    urlSecretRef: {name: hook, key: url}
    headers:
      Authorization: "Bearer ${SECRET:api-token:token}"
      X-Team: core
    hmacSecretRef: {name: hook, key: hmac}
"#,
    );
    let m = message("down", "down");
    assert_eq!(send(&c, &s, &m).await.unwrap(), "HTTP 200");
    let r = srv.only();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/hooks/kubekuma")
    );
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("authorization"), format!("Bearer {BEARER}"));
    assert_eq!(r.header("x-team"), "core");
    assert_eq!(r.json(), m.event_json);
    // The signature, recomputed independently over the bytes received.
    let sig = r.header("x-kubekuma-signature");
    assert_eq!(sig, format!("sha256={}", hmac_hex(HMAC_KEY, &r.body)));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HMAC_KEY.as_bytes()).unwrap();
    mac.update(&r.body);
    mac.verify_slice(&hex::decode(sig.trim_start_matches("sha256=")).unwrap())
        .unwrap();
}

#[tokio::test]
async fn webhook_renders_its_body_template_with_method_headers_and_content_type() {
    let srv = serve().await;
    let c = ctx(secrets(&[
        ("hook", "hmac", HMAC_KEY),
        ("api-token", "token", BEARER),
    ]));
    let s = spec(&format!(
        r#"
type: webhook
webhook:
  url: "{}"
  method: put
  headers:
    - name: X-Api-Key
      value: "${{SECRET:api-token:token}}"
  contentType: text/plain; charset=utf-8
  bodyTemplate: "{{{{ monitorNamespace }}}}/{{{{ monitorName }}}} is {{{{ currentState | upper }}}} ({{{{ title }}}}), team {{{{ labels.team }}}}"
  hmacSecretRef: {{name: hook, key: hmac}}
  signatureHeader: X-Hub-Signature-256
"#,
        srv.url("/in?source=kubekuma")
    ));
    send(&c, &s, &message("down", "down")).await.unwrap();
    let r = srv.only();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("PUT", "/in"));
    assert_eq!(r.query.as_deref(), Some("source=kubekuma"));
    assert_eq!(r.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(r.header("x-api-key"), BEARER);
    assert_eq!(
        String::from_utf8(r.body.to_vec()).unwrap(),
        "prod/api is DOWN (Monitor <api> is down), team core"
    );
    assert_eq!(
        r.header("x-hub-signature-256"),
        format!("sha256={}", hmac_hex(HMAC_KEY, &r.body))
    );
    assert!(r.headers.get("x-kubekuma-signature").is_none());
}

#[tokio::test]
async fn a_broken_webhook_body_template_sends_the_default_body() {
    let srv = serve().await;
    let c = ctx(secrets(&[]));
    let s = spec(&format!(
        "type: webhook\nwebhook: {{url: '{}', bodyTemplate: '{{{{ unclosed'}}",
        srv.url("/in")
    ));
    let m = message("down", "down");
    send(&c, &s, &m).await.unwrap();
    assert_eq!(srv.only().json(), m.event_json);
}

#[tokio::test]
async fn webhook_configuration_errors_name_the_field() {
    let c = ctx(secrets(&[("api-token", "token", BEARER)]));
    let m = message("down", "down");
    // A Secret reference that does not resolve is known only at send time.
    let s = spec(
        "type: webhook\nwebhook: {url: 'http://127.0.0.1:9/x', headers: {Authorization: '${SECRET:api-token:nope}'}}",
    );
    let err = send(&c, &s, &m).await.unwrap_err().to_string();
    let want = "configuration: header Authorization: secret reference ${SECRET:api-token:nope} cannot be resolved: Secret prod/api-token has no key \"nope\" (keys: token)";
    assert!(err.starts_with(want), "{err}");
    assert!(!err.contains(BEARER), "{err}");
    // What the catalog refuses makes no plan, and the plan's errors name the field.
    let refused = [
        (
            "webhook: {url: 'http://127.0.0.1:9/x', method: 'NOT A METHOD'}",
            "spec.webhook.method: unknown value \"NOT A METHOD\", expected one of GET, POST, PUT, PATCH, DELETE",
        ),
        (
            "webhook: {method: POST}",
            "spec.webhook.url: required (or urlSecretRef)",
        ),
        (
            "webhook: {url: 'http://127.0.0.1:9/x', contentType: \"a\\nb\"}",
            "spec.webhook.contentType: \"a\\nb\" is not a valid header value",
        ),
        (
            "webhook: {url: 'http://127.0.0.1:9/x', hmacSecretRef: {name: h, key: k}, signatureHeader: 'X Sig'}",
            "spec.webhook.signatureHeader: \"X Sig\" is not a valid header name",
        ),
    ];
    for (block, want) in refused {
        let s = spec(&format!("type: webhook\n{block}"));
        let err = ProviderPlan::of(NS, &s).unwrap_err().to_string();
        assert_eq!(err, want);
    }
}

// ---------------------------------------------------------------- Gotify

#[tokio::test]
async fn gotify_posts_message_with_the_token_in_a_header() {
    let srv = serve().await;
    let c = ctx(secrets(&[("gotify", "token", GOTIFY_TOKEN)]));
    let s = spec(&format!(
        r#"
type: gotify
config:
  gotify:
    url: {}
    tokenSecretRef: {{name: gotify, key: token}}
"#,
        srv.url("/gotify/")
    ));
    let m = message("down", "down");
    assert_eq!(send(&c, &s, &m).await.unwrap(), "HTTP 200");
    let r = srv.only();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/gotify/message")
    );
    assert_eq!(r.query, None);
    assert_eq!(r.header("x-gotify-key"), GOTIFY_TOKEN);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.json(),
        json!({"title": m.title, "message": m.body, "priority": 5})
    );
}

#[tokio::test]
async fn gotify_uses_the_configured_priority_and_reports_a_bad_token() {
    let srv = serve().await;
    let c = ctx(secrets(&[("gotify", "token", "wrongSECRETtoken")]));
    let s = spec(&format!(
        "type: gotify\nconfig: {{gotify: {{url: '{}', tokenSecretRef: {{name: gotify, key: token}}, priority: 8}}}}",
        srv.url("")
    ));
    let err = send(&c, &s, &message("down", "down")).await.unwrap_err();
    let SendError::Rejected(text) = &err else {
        panic!("{err:?}")
    };
    assert!(
        text.starts_with("HTTP 401: {\"error\":\"Unauthorized\""),
        "{text}"
    );
    assert!(!text.contains("wrongSECRETtoken"), "{text}");
    assert_eq!(srv.only().json()["priority"], 8);
}

// ---------------------------------------------------------------- Pushover

fn pushover_spec(api: &str, extra: &str) -> NotificationProviderSpec {
    spec(&format!(
        r#"
type: pushover
config:
  pushover:
    userKeySecretRef: {{name: pushover, key: user}}
    apiTokenSecretRef: {{name: pushover, key: token}}
    apiUrl: {api}
    {extra}
"#
    ))
}

#[tokio::test]
async fn pushover_posts_the_form_with_priority_sound_and_device() {
    let srv = serve().await;
    let c = ctx(secrets(&[
        ("pushover", "user", PO_USER),
        ("pushover", "token", PO_TOKEN),
    ]));
    let m = message("down", "down");
    let s = pushover_spec(&srv.url(""), "sound: siren\n    device: phone");
    assert_eq!(send(&c, &s, &m).await.unwrap(), "HTTP 200");
    let r = srv.only();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/1/messages.json")
    );
    assert_eq!(
        r.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    let want: BTreeMap<String, String> = [
        ("token", PO_TOKEN),
        ("user", PO_USER),
        ("title", m.title.as_str()),
        ("message", m.body.as_str()),
        ("timestamp", at().timestamp().to_string().as_str()),
        ("sound", "siren"),
        ("device", "phone"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(r.form(), want);
}

#[tokio::test]
async fn pushover_emergency_priority_sets_retry_and_expire() {
    let srv = serve().await;
    let c = ctx(secrets(&[
        ("pushover", "user", PO_USER),
        ("pushover", "token", PO_TOKEN),
    ]));
    send(
        &c,
        &pushover_spec(&srv.url(""), "priority: 2"),
        &message("down", "down"),
    )
    .await
    .unwrap();
    send(
        &c,
        &pushover_spec(&srv.url(""), "priority: 1"),
        &message("down", "down"),
    )
    .await
    .unwrap();
    let [emergency, high] = <[Seen; 2]>::try_from(srv.requests()).unwrap();
    let emergency = emergency.form();
    assert_eq!(emergency["priority"], "2");
    assert_eq!(emergency["retry"], "60");
    assert_eq!(emergency["expire"], "3600");
    let high = high.form();
    assert_eq!(high["priority"], "1");
    assert!(!high.contains_key("retry") && !high.contains_key("expire"));
}

#[tokio::test]
async fn pushover_refusal_quotes_its_errors_never_the_keys() {
    let srv = serve().await;
    let c = ctx(secrets(&[
        ("pushover", "user", "bad-user"),
        ("pushover", "token", PO_TOKEN),
    ]));
    let err = send(
        &c,
        &pushover_spec(&srv.url(""), ""),
        &message("down", "down"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        SendError::Rejected(
            "HTTP 400: user identifier is not a valid user, group, or subscribed user key".into()
        )
    );
}

// ---------------------------------------------------------------- failures, for every provider

/// Every provider, pointed at `base` (a URL prefix), with the Secrets it needs.
fn all_providers(base: &str) -> (SecretStore, Vec<(&'static str, NotificationProviderSpec)>) {
    let store = secrets(&[
        ("slack-webhook", "url", &format!("{base}{SLACK_PATH}")),
        ("discord", "webhook", &format!("{base}{DISCORD_PATH}")),
        ("telegram", "token", TG_TOKEN),
        ("hook", "url", &format!("{base}/hooks/hookSECRETpath")),
        ("gotify", "token", GOTIFY_TOKEN),
        ("pushover", "user", PO_USER),
        ("pushover", "token", PO_TOKEN),
    ]);
    let specs = vec![
        (
            "slack",
            spec(
                "type: slack\nconfig: {slack: {webhookUrlSecretRef: {name: slack-webhook, key: url}}}",
            ),
        ),
        (
            "discord",
            spec(
                "type: discord\nconfig: {discord: {webhookUrlSecretRef: {name: discord, key: webhook}}}",
            ),
        ),
        ("telegram", telegram_spec(base, None)),
        (
            "webhook",
            spec("type: webhook\nconfig: {webhook: {urlSecretRef: {name: hook, key: url}}}"),
        ),
        (
            "gotify",
            spec(&format!(
                "type: gotify\nconfig: {{gotify: {{url: '{base}', tokenSecretRef: {{name: gotify, key: token}}}}}}"
            )),
        ),
        ("pushover", pushover_spec(base, "")),
    ];
    (store, specs)
}

const LEAKS: [&str; 6] = [
    "slackSECRETpath",
    "discordSECRETpath",
    "tgSECRETtoken",
    "hookSECRETpath",
    "gotifySECRETtoken",
    "poSECRET",
];

fn assert_no_leak(provider: &str, err: &SendError) {
    let text = format!("{err} {err:?}");
    for leak in LEAKS {
        assert!(!text.contains(leak), "{provider} leaks {leak}: {text}");
    }
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_temporary_other_4xx_rejected() {
    let srv = serve().await;
    for (code, temporary) in [
        (500, true),
        (503, true),
        (429, true),
        (408, true),
        (400, false),
        (404, false),
    ] {
        let (store, specs) = all_providers(&srv.url(&format!("/status/{code}")));
        let c = ctx(store);
        for (name, s) in specs {
            let err = send(&c, &s, &message("down", "down")).await.unwrap_err();
            assert_no_leak(name, &err);
            let text = match (&err, temporary) {
                (SendError::Temporary(t), true) | (SendError::Rejected(t), false) => t,
                _ => panic!("{name}, HTTP {code}: {err:?}"),
            };
            assert!(
                text.starts_with(&format!("HTTP {code}: <html>error for ")),
                "{name}: {text}"
            );
            // A short excerpt of the answer, not all of it.
            assert!(text.chars().count() <= 210, "{name}: {text}");
        }
    }
}

#[tokio::test]
async fn refused_connections_and_timeouts_are_temporary() {
    let port = closed_port().await;
    let (store, specs) = all_providers(&format!("http://127.0.0.1:{port}"));
    let c = ctx(store);
    for (name, s) in &specs {
        let err = send(&c, s, &message("down", "down")).await.unwrap_err();
        assert!(matches!(err, SendError::Temporary(_)), "{name}: {err:?}");
        assert!(
            !err.to_string().contains(&port.to_string()),
            "{name}: {err}"
        );
        assert_no_leak(name, &err);
    }

    let srv = serve().await;
    let mut c = ctx(SecretStore::default());
    c.timeout = Duration::from_millis(300);
    let s = spec(&format!(
        "type: webhook\nconfig: {{webhook: {{url: '{}'}}}}",
        srv.url("/slow")
    ));
    let started = std::time::Instant::now();
    let err = send(&c, &s, &message("down", "down")).await.unwrap_err();
    assert!(matches!(err, SendError::Temporary(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn missing_secrets_are_configuration_errors_naming_secret_and_key() {
    let srv = serve().await;
    let (_, specs) = all_providers(&srv.url(""));
    // The Secrets are absent, or present without the key.
    let empty = ctx(SecretStore::default());
    let wrong_keys = ctx(secrets(&[
        ("slack-webhook", "other", "x"),
        ("discord", "other", "x"),
        ("telegram", "other", "x"),
        ("hook", "other", "x"),
        ("gotify", "other", "x"),
        ("pushover", "other", "x"),
    ]));
    let names = [
        ("slack", "webhookUrlSecretRef", "slack-webhook", "url"),
        ("discord", "webhookUrlSecretRef", "discord", "webhook"),
        ("telegram", "botTokenSecretRef", "telegram", "token"),
        ("webhook", "urlSecretRef", "hook", "url"),
        ("gotify", "tokenSecretRef", "gotify", "token"),
        ("pushover", "apiTokenSecretRef", "pushover", "token"),
    ];
    for ((name, s), (expect, field, secret, key)) in specs.iter().zip(names) {
        assert_eq!(*name, expect);
        let err = send(&empty, s, &message("down", "down")).await.unwrap_err();
        assert_eq!(
            err,
            SendError::Config(format!("{field}: Secret {NS}/{secret} not found")),
            "{name}"
        );
        let err = send(&wrong_keys, s, &message("down", "down"))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SendError::Config(format!(
                "{field}: Secret {NS}/{secret} has no key \"{key}\" (keys: other)"
            )),
            "{name}"
        );
    }
    assert!(srv.requests().is_empty());
}

#[tokio::test]
async fn a_type_without_its_block_is_a_configuration_error() {
    let c = ctx(SecretStore::default());
    let err = send(
        &c,
        &spec("type: gotify\nconfig: {}"),
        &message("down", "down"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SendError::Config(_)), "{err:?}");
}
