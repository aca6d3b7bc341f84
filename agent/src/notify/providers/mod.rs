//! The eight notification services, one file each, behind the matches of
//! [`ProviderPlan`] and [`send`].
//!
//! Each file owns its plan (the checked configuration) and the `plan` constructor with
//! its type's validation rules; the catalog plans every provider once and delivery sends
//! through the plan. A provider gets a rendered [`Message`] and sends exactly the request
//! its service expects. Credentials come only from Secret references, resolved through the
//! [`SecretStore`] at send time; no error message, log line or outcome ever contains them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kubekuma_crds::common::SecretKeyRef;
use kubekuma_crds::{NotificationProviderSpec, ProviderType};

use crate::findings::{PlanError, Sink};
use crate::rules::url_ok;
use crate::secrets::SecretStore;

pub mod apprise;
pub mod discord;
pub mod gotify;
pub mod pushover;
pub mod slack;
pub mod smtp;
pub mod telegram;
pub mod webhook;

/// One notification, rendered and ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Short title (e-mail subject, embed title, first line).
    pub title: String,
    /// The body text.
    pub body: String,
    /// `down`, `up`, `flapping`, `certExpiring`, `reminder` or `test`.
    pub event: String,
    /// The monitor's current state (`up`, `down`, …).
    pub state: String,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// The spec's AlertEvent as JSON (webhooks send it; templates read it).
    pub event_json: serde_json::Value,
}

impl Message {
    /// A test message (`kubekuma notify test`, the admin API's and console's "send
    /// test"): a `test` event of a made-up monitor `kubekuma/notify-test`.
    pub fn test(title: String, message: String) -> Message {
        let now = Utc::now();
        Message {
            title,
            body: message.clone(),
            event: "test".into(),
            state: "up".into(),
            timestamp: now,
            event_json: serde_json::json!({
                "monitorId": "kubekuma/notify-test",
                "monitorNamespace": "kubekuma",
                "monitorName": "notify-test",
                "previousState": "up",
                "currentState": "up",
                "message": message,
                "timestamp": now.to_rfc3339(),
                "isStateChange": false,
                "kind": "test",
                "labels": {},
                "annotations": {},
            }),
        }
    }
}

/// What a successful send reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivered {
    /// A short description for the outbox (e.g. `HTTP 200`, `250 OK`); never secrets.
    pub detail: String,
}

/// Why a send failed. Retryable failures are tried again with backoff; the others are
/// recorded as failed at once.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SendError {
    /// The provider's settings cannot work (a missing Secret key, a bad URL, …).
    #[error("configuration: {0}")]
    Config(String),
    /// The service refused the request (4xx other than 408/429): retrying will not help.
    #[error("rejected: {0}")]
    Rejected(String),
    /// A network error, a timeout, 408/429 or 5xx: worth retrying.
    #[error("temporary: {0}")]
    Temporary(String),
}

impl SendError {
    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, SendError::Temporary(_))
    }
}

/// What providers share: the HTTP client, the Secrets, the time limit.
#[derive(Clone, Debug)]
pub struct ProviderContext {
    pub http: reqwest::Client,
    pub secrets: Arc<SecretStore>,
    /// Upper bound for one send.
    pub timeout: Duration,
    /// The `apprise` program (default `apprise` on PATH).
    pub apprise_program: String,
}

impl ProviderContext {
    /// A context with a fresh HTTP client (rustls, webpki roots) and a 30 s limit.
    pub fn new(secrets: Arc<SecretStore>) -> Self {
        ProviderContext {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .user_agent(concat!("kubekuma/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            secrets,
            timeout: Duration::from_secs(30),
            apprise_program: "apprise".into(),
        }
    }
}

/// An http(s) URL field checked by the shared rules, and on success `raw` (without its
/// trailing `/`) followed by `suffix` as the URL a provider sends to.
fn endpoint(sink: &mut Sink<'_>, path: &str, raw: &str, suffix: &str) -> Option<url::Url> {
    let errors = |sink: &Sink<'_>| {
        sink.findings
            .iter()
            .filter(|f| f.severity == crate::findings::Severity::Error)
            .count()
    };
    let before = errors(sink);
    url_ok(sink, path, raw, &["http", "https"]);
    let reported = errors(sink) > before;
    match url::Url::parse(&format!("{}{suffix}", raw.trim_end_matches('/'))) {
        Ok(u) if !reported => Some(u),
        Ok(_) => None,
        Err(e) => {
            if !reported {
                sink.error(path, format!("is not a valid URL: {e}"));
            }
            None
        }
    }
}

/// The plan of a configuration block checked on its own at `spec.config.<type>` (tests,
/// one-off sends): the plan, or the errors that make none.
fn alone<C, P>(
    namespace: &str,
    ty: ProviderType,
    config: &C,
    plan: impl FnOnce(&str, &str, &C, &mut Sink<'_>) -> Option<P>,
) -> Result<P, PlanError> {
    let mut sink = Sink::detached();
    let base = format!("spec.config.{ty}");
    match plan(namespace, &base, config, &mut sink) {
        Some(p) if !sink.has_errors() => Ok(p),
        _ => Err(sink.plan_error()),
    }
}

/// A NotificationProvider's checked plan: one variant per provider type.
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderPlan {
    /// Slack.
    Slack(slack::SlackPlan),
    /// Discord.
    Discord(discord::DiscordPlan),
    /// Telegram.
    Telegram(telegram::TelegramPlan),
    /// SMTP.
    Smtp(smtp::SmtpPlan),
    /// Webhook.
    Webhook(webhook::WebhookPlan),
    /// Gotify.
    Gotify(gotify::GotifyPlan),
    /// Pushover.
    Pushover(pushover::PushoverPlan),
    /// Apprise.
    Apprise(apprise::ApprisePlan),
}

impl ProviderPlan {
    /// The plan of a provider in `namespace`, reporting what is wrong with its
    /// configuration to `sink`. `None` when the sink holds an error.
    pub fn new(
        namespace: &str,
        spec: &NotificationProviderSpec,
        sink: &mut Sink<'_>,
    ) -> Option<ProviderPlan> {
        let (base, block) = block_path(spec);
        let Some(block) = block else {
            sink.error(&base, format!("required for type {}", spec.type_));
            return None;
        };
        let b = base.as_str();
        let plan = match block {
            Block::Slack(c) => slack::plan(namespace, b, c, sink).map(ProviderPlan::Slack),
            Block::Discord(c) => discord::plan(namespace, b, c, sink).map(ProviderPlan::Discord),
            Block::Telegram(c) => telegram::plan(namespace, b, c, sink).map(ProviderPlan::Telegram),
            Block::Smtp(c) => smtp::plan(namespace, b, c, sink).map(ProviderPlan::Smtp),
            Block::Webhook(c) => webhook::plan(namespace, b, c, sink).map(ProviderPlan::Webhook),
            Block::Gotify(c) => gotify::plan(namespace, b, c, sink).map(ProviderPlan::Gotify),
            Block::Pushover(c) => pushover::plan(namespace, b, c, sink).map(ProviderPlan::Pushover),
            Block::Apprise(c) => apprise::plan(namespace, b, c, sink).map(ProviderPlan::Apprise),
        };
        plan.filter(|_| !sink.has_errors())
    }

    /// The plan of a provider checked on its own (`kubekuma notify test` of a provider
    /// not in a catalog, tests); the catalog plans its providers itself.
    pub fn of(namespace: &str, spec: &NotificationProviderSpec) -> Result<ProviderPlan, PlanError> {
        let mut sink = Sink::detached();
        ProviderPlan::new(namespace, spec, &mut sink).ok_or_else(|| sink.plan_error())
    }

    /// Every Secret reference, with its field path.
    pub fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        match self {
            ProviderPlan::Slack(p) => p.secret_refs(),
            ProviderPlan::Discord(p) => p.secret_refs(),
            ProviderPlan::Telegram(p) => p.secret_refs(),
            ProviderPlan::Smtp(p) => p.secret_refs(),
            ProviderPlan::Webhook(p) => p.secret_refs(),
            ProviderPlan::Gotify(p) => p.secret_refs(),
            ProviderPlan::Pushover(p) => p.secret_refs(),
            ProviderPlan::Apprise(p) => p.secret_refs(),
        }
    }

    /// The string fields that may hold `${SECRET:…}`, with their paths.
    pub fn secret_strings(&self) -> Vec<(String, String)> {
        match self {
            ProviderPlan::Webhook(w) => w.secret_strings(),
            ProviderPlan::Slack(_)
            | ProviderPlan::Discord(_)
            | ProviderPlan::Telegram(_)
            | ProviderPlan::Smtp(_)
            | ProviderPlan::Gotify(_)
            | ProviderPlan::Pushover(_)
            | ProviderPlan::Apprise(_) => Vec::new(),
        }
    }
}

/// The configuration block of a provider's type, in either place.
enum Block<'a> {
    Slack(&'a kubekuma_crds::notification::SlackConfig),
    Discord(&'a kubekuma_crds::notification::DiscordConfig),
    Telegram(&'a kubekuma_crds::notification::TelegramConfig),
    Smtp(&'a kubekuma_crds::notification::SmtpConfig),
    Webhook(&'a kubekuma_crds::notification::WebhookConfig),
    Gotify(&'a kubekuma_crds::notification::GotifyConfig),
    Pushover(&'a kubekuma_crds::notification::PushoverConfig),
    Apprise(&'a kubekuma_crds::notification::AppriseConfig),
}

/// The path and block of a provider's configuration (`spec.config.<type>`, or the
/// original implementation's `spec.<type>`).
fn block_path(spec: &NotificationProviderSpec) -> (String, Option<Block<'_>>) {
    let cfg = spec.config.as_ref();
    let ty = spec.type_;
    let in_config = match ty {
        ProviderType::Slack => cfg.and_then(|c| c.slack.as_ref()).map(Block::Slack),
        ProviderType::Discord => cfg.and_then(|c| c.discord.as_ref()).map(Block::Discord),
        ProviderType::Telegram => cfg.and_then(|c| c.telegram.as_ref()).map(Block::Telegram),
        ProviderType::Smtp => cfg.and_then(|c| c.smtp.as_ref()).map(Block::Smtp),
        ProviderType::Webhook => cfg.and_then(|c| c.webhook.as_ref()).map(Block::Webhook),
        ProviderType::Gotify => cfg.and_then(|c| c.gotify.as_ref()).map(Block::Gotify),
        ProviderType::Pushover => cfg.and_then(|c| c.pushover.as_ref()).map(Block::Pushover),
        ProviderType::Apprise => cfg.and_then(|c| c.apprise.as_ref()).map(Block::Apprise),
    };
    if in_config.is_some() {
        return (format!("spec.config.{ty}"), in_config);
    }
    let top = match ty {
        ProviderType::Slack => spec.slack.as_ref().map(Block::Slack),
        ProviderType::Discord => spec.discord.as_ref().map(Block::Discord),
        ProviderType::Webhook => spec.webhook.as_ref().map(Block::Webhook),
        _ => None,
    };
    (
        if top.is_some() {
            format!("spec.{ty}")
        } else {
            format!("spec.config.{ty}")
        },
        top,
    )
}

/// Send `msg` through a provider's plan.
pub async fn send(
    ctx: &ProviderContext,
    plan: &ProviderPlan,
    msg: &Message,
) -> Result<Delivered, SendError> {
    match plan {
        ProviderPlan::Slack(p) => slack::send(ctx, p, msg).await,
        ProviderPlan::Discord(p) => discord::send(ctx, p, msg).await,
        ProviderPlan::Telegram(p) => telegram::send(ctx, p, msg).await,
        ProviderPlan::Smtp(p) => smtp::send(ctx, p, msg).await,
        ProviderPlan::Webhook(p) => webhook::send(ctx, p, msg).await,
        ProviderPlan::Gotify(p) => gotify::send(ctx, p, msg).await,
        ProviderPlan::Pushover(p) => pushover::send(ctx, p, msg).await,
        ProviderPlan::Apprise(p) => apprise::send(ctx, p, msg).await,
    }
}
