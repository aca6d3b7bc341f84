//! Slack incoming webhook: `POST <webhook URL>` with `{text, channel?, username?, icon_emoji?}`.
//! The webhook URL is a credential and comes only from `webhookUrlSecretRef`.

use kubekuma_crds::notification::SlackConfig;
use serde_json::{Map, Value, json};

use super::Checked;
use super::webhook::{post_json_to_secret_url, truncate};
use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::Sink;

/// Slack truncates longer messages; cut them ourselves so the end is marked.
const MAX_TEXT_CHARS: usize = 40_000;

/// A Slack provider's checked configuration.
pub type SlackPlan = Checked<SlackConfig>;

/// The plan of a Slack provider: its configuration block at `base` checked.
pub(crate) fn plan(
    namespace: &str,
    base: &str,
    c: &SlackConfig,
    _sink: &mut Sink<'_>,
) -> SlackPlan {
    Checked::new(namespace, base, c)
}

/// Send `msg` to the Slack webhook `config` names.
pub async fn send(
    ctx: &ProviderContext,
    namespace: &str,
    config: &SlackConfig,
    msg: &Message,
) -> Result<Delivered, SendError> {
    post_json_to_secret_url(
        ctx,
        namespace,
        &config.webhook_url_secret_ref,
        "webhookUrlSecretRef",
        &payload(config, msg),
    )
    .await
}

/// The JSON Slack expects: the bold title, then the body, in `text`.
fn payload(config: &SlackConfig, msg: &Message) -> Value {
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
