//! The eight notification services, one file each, behind one `match` in [`send`].
//!
//! A provider gets a rendered [`Message`] and sends exactly the request its service
//! expects. Credentials come only from Secret references, resolved through the
//! [`SecretStore`] at send time; no error message, log line or outcome ever contains them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kubekuma_crds::{NotificationProviderSpec, ProviderType};

use crate::catalog::secrets::SecretStore;

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

/// Send `msg` through the provider `spec` of namespace `namespace`.
pub async fn send(
    ctx: &ProviderContext,
    namespace: &str,
    spec: &NotificationProviderSpec,
    msg: &Message,
) -> Result<Delivered, SendError> {
    let config = spec.config.as_ref();
    let missing = || {
        SendError::Config(format!(
            "spec.config.{} is missing for a provider of type {}",
            spec.type_, spec.type_
        ))
    };
    match spec.type_ {
        ProviderType::Slack => {
            let c = config
                .and_then(|c| c.slack.as_ref())
                .or(spec.slack.as_ref());
            slack::send(ctx, namespace, c.ok_or_else(missing)?, msg).await
        }
        ProviderType::Discord => {
            let c = config
                .and_then(|c| c.discord.as_ref())
                .or(spec.discord.as_ref());
            discord::send(ctx, namespace, c.ok_or_else(missing)?, msg).await
        }
        ProviderType::Telegram => {
            let c = config.and_then(|c| c.telegram.as_ref());
            telegram::send(ctx, namespace, c.ok_or_else(missing)?, msg).await
        }
        ProviderType::Smtp => {
            let c = config.and_then(|c| c.smtp.as_ref());
            smtp::send(ctx, namespace, c.ok_or_else(missing)?, msg).await
        }
        ProviderType::Webhook => {
            let c = config
                .and_then(|c| c.webhook.as_ref())
                .or(spec.webhook.as_ref());
            webhook::send(ctx, namespace, c.ok_or_else(missing)?, msg).await
        }
        ProviderType::Gotify => {
            let c = config.and_then(|c| c.gotify.as_ref());
            gotify::send(ctx, namespace, c.ok_or_else(missing)?, msg).await
        }
        ProviderType::Pushover => {
            let c = config.and_then(|c| c.pushover.as_ref());
            pushover::send(ctx, namespace, c.ok_or_else(missing)?, msg).await
        }
        ProviderType::Apprise => {
            let c = config.and_then(|c| c.apprise.as_ref());
            apprise::send(ctx, namespace, c.ok_or_else(missing)?, msg).await
        }
    }
}
