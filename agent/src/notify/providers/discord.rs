//! Discord webhook: `POST <webhook URL>` with one embed (title, description, colour by
//! event, timestamp). The webhook URL is a credential and comes only from
//! `webhookUrlSecretRef`. Discord answers 204.

use chrono::SecondsFormat;
use kubekuma_crds::ProviderType;
use kubekuma_crds::common::SecretKeyRef;
use kubekuma_crds::notification::DiscordConfig;
use serde_json::{Map, Value, json};

use super::webhook::{Tone, post_json_to_secret_url, tone, truncate};
use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::{PlanError, Sink};

/// Discord's limits, in characters.
const MAX_TITLE: usize = 256;
const MAX_DESCRIPTION: usize = 4096;
const MAX_USERNAME: usize = 80;

/// Embed colours.
const RED: u32 = 0xE7_4C_3C;
const GREEN: u32 = 0x2E_CC_71;
const YELLOW: u32 = 0xF1_C4_0F;

/// A Discord provider's checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscordPlan {
    /// The namespace its Secret reference resolves in.
    namespace: String,
    /// The path of its configuration block.
    base: String,
    /// The Secret key holding the webhook URL.
    webhook_url: SecretKeyRef,
    /// Sender name and avatar overrides.
    username: Option<String>,
    avatar_url: Option<String>,
}

impl DiscordPlan {
    /// The plan of a Discord block checked on its own at `spec.config.discord`.
    pub fn of(namespace: &str, config: &DiscordConfig) -> Result<DiscordPlan, PlanError> {
        super::alone(namespace, ProviderType::Discord, config, plan)
    }

    /// Its Secret references with their field paths.
    pub(super) fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        vec![(
            format!("{}.webhookUrlSecretRef", self.base),
            self.webhook_url.clone(),
        )]
    }
}

/// The plan of a Discord provider: its configuration block at `base` checked.
pub(crate) fn plan(
    namespace: &str,
    base: &str,
    c: &DiscordConfig,
    _sink: &mut Sink<'_>,
) -> Option<DiscordPlan> {
    Some(DiscordPlan {
        namespace: namespace.to_string(),
        base: base.to_string(),
        webhook_url: c.webhook_url_secret_ref.clone(),
        username: c.username.clone(),
        avatar_url: c.avatar_url.clone(),
    })
}

/// Send `msg` to the Discord webhook of `plan`.
pub async fn send(
    ctx: &ProviderContext,
    plan: &DiscordPlan,
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

/// The JSON Discord expects. Mentions in monitor messages never ping anyone.
fn payload(config: &DiscordPlan, msg: &Message) -> Value {
    let color = match tone(msg) {
        Tone::Down => RED,
        Tone::Up => GREEN,
        Tone::Other => YELLOW,
    };
    let mut embed = Map::new();
    embed.insert("title".into(), json!(truncate(&msg.title, MAX_TITLE)));
    if !msg.body.is_empty() {
        embed.insert(
            "description".into(),
            json!(truncate(&msg.body, MAX_DESCRIPTION)),
        );
    }
    embed.insert("color".into(), json!(color));
    embed.insert(
        "timestamp".into(),
        json!(msg.timestamp.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    let mut out = Map::new();
    if let Some(name) = &config.username {
        out.insert("username".into(), json!(truncate(name, MAX_USERNAME)));
    }
    if let Some(avatar) = &config.avatar_url {
        out.insert("avatar_url".into(), json!(avatar));
    }
    out.insert("embeds".into(), json!([embed]));
    out.insert("allowed_mentions".into(), json!({ "parse": [] }));
    Value::Object(out)
}
