//! Gotify: `POST {url}/message` with `{title, message, priority}` and the application
//! token in the `X-Gotify-Key` header (never in the query string, so it stays out of
//! URLs and access logs).
//!
//! Priority is `priority` from the config for every event, default 5 as the CRD
//! documents (Gotify clients sound at 4-7 and pop up at 8 and above; set 8 on a
//! provider meant for outages).

use kubekuma_crds::notification::GotifyConfig;
use serde_json::json;

use super::Checked;
use super::webhook::{execute, secret};
use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::Sink;
use crate::rules::{range, url_ok};

const DEFAULT_PRIORITY: i64 = 5;

/// A Gotify provider's checked configuration.
pub type GotifyPlan = Checked<GotifyConfig>;

/// The plan of a Gotify provider: its configuration block at `base` checked.
pub(crate) fn plan(
    namespace: &str,
    base: &str,
    c: &GotifyConfig,
    sink: &mut Sink<'_>,
) -> GotifyPlan {
    url_ok(sink, &format!("{base}.url"), &c.url, &["http", "https"]);
    range(sink, &format!("{base}.priority"), c.priority, 0, 10);
    Checked::new(namespace, base, c)
}

/// Send `msg` to the Gotify server `config` names.
pub async fn send(
    ctx: &ProviderContext,
    namespace: &str,
    config: &GotifyConfig,
    msg: &Message,
) -> Result<Delivered, SendError> {
    let token = secret(ctx, namespace, &config.token_secret_ref, "tokenSecretRef")?;
    let url = url::Url::parse(&format!("{}/message", config.url.trim_end_matches('/')))
        .map_err(|e| SendError::Config(format!("url is not a valid URL: {e}")))?;
    let body = json!({
        "title": msg.title,
        "message": msg.body,
        "priority": config.priority.unwrap_or(DEFAULT_PRIORITY),
    });
    let req = ctx
        .http
        .post(url)
        .header("X-Gotify-Key", &token)
        .json(&body);
    execute(ctx, req, vec![token]).await?.outcome(None)
}
