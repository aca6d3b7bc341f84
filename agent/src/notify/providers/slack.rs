//! Slack incoming webhook: `POST <webhook URL>` with `{text, channel?, username?, icon_emoji?}`.
//! The webhook URL is a credential and comes only from `webhookUrlSecretRef`.

use kubekuma_crds::ProviderType;
use kubekuma_crds::common::SecretKeyRef;
use kubekuma_crds::notification::SlackConfig;
use serde_json::{Map, Value, json};

use super::webhook::{post_json_to_secret_url, truncate};
use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::{PlanError, Sink};

/// Slack truncates longer messages; cut them ourselves so the end is marked.
const MAX_TEXT_CHARS: usize = 40_000;

/// A Slack provider's checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SlackPlan {
    /// The namespace its Secret reference resolves in.
    namespace: String,
    /// The path of its configuration block.
    base: String,
    /// The Secret key holding the webhook URL.
    webhook_url: SecretKeyRef,
    /// `channel`, `username` and `icon_emoji` overrides.
    channel: Option<String>,
    username: Option<String>,
    icon_emoji: Option<String>,
}

impl SlackPlan {
    /// The plan of a Slack block checked on its own at `spec.config.slack`.
    pub fn of(namespace: &str, config: &SlackConfig) -> Result<SlackPlan, PlanError> {
        super::alone(namespace, ProviderType::Slack, config, plan)
    }

    /// Its Secret references with their field paths.
    pub(super) fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        vec![(
            format!("{}.webhookUrlSecretRef", self.base),
            self.webhook_url.clone(),
        )]
    }
}

/// The plan of a Slack provider: its configuration block at `base` checked.
pub(crate) fn plan(
    namespace: &str,
    base: &str,
    c: &SlackConfig,
    _sink: &mut Sink<'_>,
) -> Option<SlackPlan> {
    Some(SlackPlan {
        namespace: namespace.to_string(),
        base: base.to_string(),
        webhook_url: c.webhook_url_secret_ref.clone(),
        channel: c.channel.clone(),
        username: c.username.clone(),
        icon_emoji: c.icon_emoji.clone(),
    })
}

/// Send `msg` to the Slack webhook of `plan`.
pub async fn send(
    ctx: &ProviderContext,
    plan: &SlackPlan,
    msg: &Message,
) -> Result<Delivered, SendError> {
    post_json_to_secret_url(
        ctx,
        &plan.namespace,
        &plan.webhook_url,
        "webhookUrlSecretRef",
        &payload(plan, msg),
    )
    .await
}

/// The JSON Slack expects: the bold title, then the body, in `text`.
fn payload(config: &SlackPlan, msg: &Message) -> Value {
    let text = if msg.body.is_empty() {
        format!("*{}*", escape(&msg.title))
    } else {
        format!("*{}*\n{}", escape(&msg.title), escape(&msg.body))
    };
    let mut out = Map::new();
    out.insert("text".into(), json!(truncate(&text, MAX_TEXT_CHARS)));
    for (k, v) in [
        ("channel", &config.channel),
        ("username", &config.username),
        ("icon_emoji", &config.icon_emoji),
    ] {
        if let Some(v) = v {
            out.insert(k.into(), json!(v));
        }
    }
    Value::Object(out)
}

/// Slack's three control characters, escaped as its message formatting requires.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
