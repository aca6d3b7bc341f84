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

/// A provider's configuration of one kind, checked by that kind's `plan`, with the
/// namespace its Secret references resolve in and the path its block sits at.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked<C> {
    namespace: String,
    /// `spec.config.<type>`, or the original implementation's `spec.<type>`.
    base: String,
    config: C,
}

impl<C> Checked<C> {
    fn new(namespace: &str, base: &str, config: &C) -> Self
    where
        C: Clone,
    {
        Checked {
            namespace: namespace.to_string(),
            base: base.to_string(),
            config: config.clone(),
        }
    }

    /// The namespace its Secret references resolve in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The checked configuration.
    pub fn config(&self) -> &C {
        &self.config
    }

    /// The field path of `field` in the configuration block.
    fn path(&self, field: &str) -> String {
        format!("{}.{field}", self.base)
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
            Block::Slack(c) => ProviderPlan::Slack(slack::plan(namespace, b, c, sink)),
            Block::Discord(c) => ProviderPlan::Discord(discord::plan(namespace, b, c, sink)),
            Block::Telegram(c) => ProviderPlan::Telegram(telegram::plan(namespace, b, c, sink)),
            Block::Smtp(c) => ProviderPlan::Smtp(smtp::plan(namespace, b, c, sink)),
            Block::Webhook(c) => ProviderPlan::Webhook(webhook::plan(namespace, b, c, sink)),
            Block::Gotify(c) => ProviderPlan::Gotify(gotify::plan(namespace, b, c, sink)),
            Block::Pushover(c) => ProviderPlan::Pushover(pushover::plan(namespace, b, c, sink)),
            Block::Apprise(c) => ProviderPlan::Apprise(apprise::plan(namespace, b, c, sink)),
        };
        (!sink.has_errors()).then_some(plan)
    }

    /// The plan of a provider checked on its own (`kubekuma notify test` of a provider
    /// not in a catalog, tests); the catalog plans its providers itself.
    pub fn of(namespace: &str, spec: &NotificationProviderSpec) -> Result<ProviderPlan, PlanError> {
        let mut sink = Sink::detached();
        ProviderPlan::new(namespace, spec, &mut sink).ok_or_else(|| sink.plan_error())
    }

    /// Every Secret reference, with its field path.
    pub fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        let mut v = Vec::new();
        let mut add = |path: String, r: &Option<SecretKeyRef>| {
            if let Some(r) = r {
                v.push((path, r.clone()));
            }
        };
        match self {
            ProviderPlan::Slack(p) => add(
                p.path("webhookUrlSecretRef"),
                &Some(p.config.webhook_url_secret_ref.clone()),
            ),
            ProviderPlan::Discord(p) => add(
                p.path("webhookUrlSecretRef"),
                &Some(p.config.webhook_url_secret_ref.clone()),
            ),
            ProviderPlan::Telegram(p) => add(
                p.path("botTokenSecretRef"),
                &Some(p.config.bot_token_secret_ref.clone()),
            ),
            ProviderPlan::Smtp(p) => {
                add(p.path("passwordSecretRef"), &p.config.password_secret_ref)
            }
            ProviderPlan::Webhook(p) => {
                add(p.path("urlSecretRef"), &p.config.url_secret_ref);
                add(p.path("hmacSecretRef"), &p.config.hmac_secret_ref);
            }
            ProviderPlan::Gotify(p) => add(
                p.path("tokenSecretRef"),
                &Some(p.config.token_secret_ref.clone()),
            ),
            ProviderPlan::Pushover(p) => {
                add(
                    p.path("userKeySecretRef"),
                    &Some(p.config.user_key_secret_ref.clone()),
                );
                add(
                    p.path("apiTokenSecretRef"),
                    &Some(p.config.api_token_secret_ref.clone()),
                );
            }
            ProviderPlan::Apprise(p) => add(p.path("urlsSecretRef"), &p.config.urls_secret_ref),
        }
        v
    }

    /// The string fields that may hold `${SECRET:…}`, with their paths.
    pub fn secret_strings(&self) -> Vec<(String, String)> {
        match self {
            ProviderPlan::Webhook(w) => w
                .config
                .url
                .iter()
                .map(|u| (w.path("url"), u.clone()))
                .chain(
                    w.config
                        .headers
                        .iter()
                        .flat_map(|h| h.0.iter())
                        .map(|(k, v)| (w.path(&format!("headers.{k}")), v.clone())),
                )
                .collect(),
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
        ProviderPlan::Slack(p) => slack::send(ctx, &p.namespace, &p.config, msg).await,
        ProviderPlan::Discord(p) => discord::send(ctx, &p.namespace, &p.config, msg).await,
        ProviderPlan::Telegram(p) => telegram::send(ctx, &p.namespace, &p.config, msg).await,
        ProviderPlan::Smtp(p) => smtp::send(ctx, &p.namespace, &p.config, msg).await,
        ProviderPlan::Webhook(p) => webhook::send(ctx, &p.namespace, &p.config, msg).await,
        ProviderPlan::Gotify(p) => gotify::send(ctx, &p.namespace, &p.config, msg).await,
        ProviderPlan::Pushover(p) => pushover::send(ctx, &p.namespace, &p.config, msg).await,
        ProviderPlan::Apprise(p) => apprise::send(ctx, &p.namespace, &p.config, msg).await,
    }
}
