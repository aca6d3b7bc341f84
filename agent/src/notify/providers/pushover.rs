//! Pushover: `POST {apiUrl}/1/messages.json`, form-encoded `token`, `user`, `title`,
//! `message`, `timestamp` and the optional `priority`, `sound`, `device`. Emergency
//! priority (2) repeats every 60 s for an hour (`retry`, `expire`, which it requires).

use kubekuma_crds::ProviderType;
use kubekuma_crds::common::SecretKeyRef;
use kubekuma_crds::notification::PushoverConfig;

use super::endpoint;
use super::webhook::{execute, secret, truncate};
use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::{PlanError, Sink};
use crate::rules::range;

const DEFAULT_API_URL: &str = "https://api.pushover.net";
/// Pushover's limits, in characters.
const MAX_TITLE: usize = 250;
const MAX_MESSAGE: usize = 1024;
/// Emergency repetition: every minute, for an hour.
const EMERGENCY_RETRY_SECONDS: &str = "60";
const EMERGENCY_EXPIRE_SECONDS: &str = "3600";

/// A Pushover provider's checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct PushoverPlan {
    /// The namespace its Secret references resolve in.
    namespace: String,
    /// The path of its configuration block.
    base: String,
    /// `{apiUrl}/1/messages.json`.
    endpoint: url::Url,
    /// The Secret keys holding the user key and the API token.
    user_key: SecretKeyRef,
    api_token: SecretKeyRef,
    /// -2 to 2, when set.
    priority: Option<i64>,
    sound: Option<String>,
    device: Option<String>,
}

impl PushoverPlan {
    /// The plan of a Pushover block checked on its own at `spec.config.pushover`.
    pub fn of(namespace: &str, config: &PushoverConfig) -> Result<PushoverPlan, PlanError> {
        super::alone(namespace, ProviderType::Pushover, config, plan)
    }

    /// Its Secret references with their field paths.
    pub(super) fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        vec![
            (
                format!("{}.userKeySecretRef", self.base),
                self.user_key.clone(),
            ),
            (
                format!("{}.apiTokenSecretRef", self.base),
                self.api_token.clone(),
            ),
        ]
    }
}

/// The plan of a Pushover provider: its configuration block at `base` checked.
pub(crate) fn plan(
    namespace: &str,
    base: &str,
    c: &PushoverConfig,
    sink: &mut Sink<'_>,
) -> Option<PushoverPlan> {
    range(sink, &format!("{base}.priority"), c.priority, -2, 2);
    let api_url = c.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
    let endpoint = endpoint(sink, &format!("{base}.apiUrl"), api_url, "/1/messages.json");
    Some(PushoverPlan {
        namespace: namespace.to_string(),
        base: base.to_string(),
        endpoint: endpoint?,
        user_key: c.user_key_secret_ref.clone(),
        api_token: c.api_token_secret_ref.clone(),
        priority: c.priority,
        sound: c.sound.clone(),
        device: c.device.clone(),
    })
}

/// Send `msg` to the Pushover user of `plan`.
pub async fn send(
    ctx: &ProviderContext,
    plan: &PushoverPlan,
    msg: &Message,
) -> Result<Delivered, SendError> {
    let token = secret(ctx, &plan.namespace, &plan.api_token, "apiTokenSecretRef")?;
    let user = secret(ctx, &plan.namespace, &plan.user_key, "userKeySecretRef")?;
    let url = plan.endpoint.clone();

    // Pushover refuses an empty message.
    let message = if msg.body.is_empty() {
        &msg.title
    } else {
        &msg.body
    };
    // The serializer is not Send: finish it before the first await.
    let body = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", &token)
            .append_pair("user", &user)
            .append_pair("title", &truncate(&msg.title, MAX_TITLE))
            .append_pair("message", &truncate(message, MAX_MESSAGE))
            .append_pair("timestamp", &msg.timestamp.timestamp().to_string());
        if let Some(p) = plan.priority {
            form.append_pair("priority", &p.to_string());
            if p == 2 {
                form.append_pair("retry", EMERGENCY_RETRY_SECONDS)
                    .append_pair("expire", EMERGENCY_EXPIRE_SECONDS);
            }
        }
        if let Some(sound) = &plan.sound {
            form.append_pair("sound", sound);
        }
        if let Some(device) = &plan.device {
            form.append_pair("device", device);
        }
        form.finish()
    };
    let req = ctx
        .http
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body);
    let reply = execute(ctx, req, vec![token, user]).await?;

    // `{"status":1}` is success; otherwise `errors` says why.
    let answer = reply.json();
    let status = answer.as_ref().and_then(|a| a["status"].as_i64());
    let errors = answer.as_ref().and_then(|a| {
        let list: Vec<&str> = a["errors"]
            .as_array()?
            .iter()
            .filter_map(|e| e.as_str())
            .collect();
        (!list.is_empty()).then(|| list.join("; "))
    });
    if reply.status.is_success() && status != Some(1) {
        return Err(reply.rejected(errors.as_deref().unwrap_or("status is not 1")));
    }
    reply.outcome(errors.as_deref())
}
