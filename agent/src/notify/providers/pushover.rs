//! Pushover: `POST {apiUrl}/1/messages.json`, form-encoded `token`, `user`, `title`,
//! `message`, `timestamp` and the optional `priority`, `sound`, `device`. Emergency
//! priority (2) repeats every 60 s for an hour (`retry`, `expire`, which it requires).

use kubekuma_crds::notification::PushoverConfig;

use super::Checked;
use super::webhook::{execute, secret, truncate};
use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::Sink;
use crate::rules::{range, url_ok};

const DEFAULT_API_URL: &str = "https://api.pushover.net";
/// Pushover's limits, in characters.
const MAX_TITLE: usize = 250;
const MAX_MESSAGE: usize = 1024;
/// Emergency repetition: every minute, for an hour.
const EMERGENCY_RETRY_SECONDS: &str = "60";
const EMERGENCY_EXPIRE_SECONDS: &str = "3600";

/// A Pushover provider's checked configuration.
pub type PushoverPlan = Checked<PushoverConfig>;

/// The plan of a Pushover provider: its configuration block at `base` checked.
pub(crate) fn plan(
    namespace: &str,
    base: &str,
    c: &PushoverConfig,
    sink: &mut Sink<'_>,
) -> PushoverPlan {
    range(sink, &format!("{base}.priority"), c.priority, -2, 2);
    if let Some(u) = &c.api_url {
        url_ok(sink, &format!("{base}.apiUrl"), u, &["http", "https"]);
    }
    Checked::new(namespace, base, c)
}

/// Send `msg` to the Pushover user `config` names.
pub async fn send(
    ctx: &ProviderContext,
    namespace: &str,
    config: &PushoverConfig,
    msg: &Message,
) -> Result<Delivered, SendError> {
    let token = secret(
        ctx,
        namespace,
        &config.api_token_secret_ref,
        "apiTokenSecretRef",
    )?;
    let user = secret(
        ctx,
        namespace,
        &config.user_key_secret_ref,
        "userKeySecretRef",
    )?;
    let base = config.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
    let url = url::Url::parse(&format!("{}/1/messages.json", base.trim_end_matches('/')))
        .map_err(|e| SendError::Config(format!("apiUrl is not a valid URL: {e}")))?;

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
        if let Some(p) = config.priority {
            form.append_pair("priority", &p.to_string());
            if p == 2 {
                form.append_pair("retry", EMERGENCY_RETRY_SECONDS)
                    .append_pair("expire", EMERGENCY_EXPIRE_SECONDS);
            }
        }
        if let Some(sound) = &config.sound {
            form.append_pair("sound", sound);
        }
        if let Some(device) = &config.device {
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
