//! Gotify: `POST {url}/message` with `{title, message, priority}` and the application
//! token in the `X-Gotify-Key` header (never in the query string, so it stays out of
//! URLs and access logs).
//!
//! Priority is `priority` from the config for every event, default 5 as the CRD
//! documents (Gotify clients sound at 4-7 and pop up at 8 and above; set 8 on a
//! provider meant for outages).

use kubekuma_crds::ProviderType;
use kubekuma_crds::common::SecretKeyRef;
use kubekuma_crds::notification::GotifyConfig;
use serde_json::json;

use super::endpoint;
use super::webhook::{execute, secret};
use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::{PlanError, Sink};
use crate::rules::range;

const DEFAULT_PRIORITY: i64 = 5;

/// A Gotify provider's checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct GotifyPlan {
    /// The namespace its Secret reference resolves in.
    namespace: String,
    /// The path of its configuration block.
    base: String,
    /// `{url}/message`.
    endpoint: url::Url,
    /// The Secret key holding the application token.
    token: SecretKeyRef,
    /// 0-10, default [`DEFAULT_PRIORITY`].
    priority: i64,
}

impl GotifyPlan {
    /// The plan of a Gotify block checked on its own at `spec.config.gotify`.
    pub fn of(namespace: &str, config: &GotifyConfig) -> Result<GotifyPlan, PlanError> {
        super::alone(namespace, ProviderType::Gotify, config, plan)
    }

    /// Its Secret references with their field paths.
    pub(super) fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        vec![(format!("{}.tokenSecretRef", self.base), self.token.clone())]
    }
}

/// The plan of a Gotify provider: its configuration block at `base` checked.
pub(crate) fn plan(
    namespace: &str,
    base: &str,
    c: &GotifyConfig,
    sink: &mut Sink<'_>,
) -> Option<GotifyPlan> {
    let endpoint = endpoint(sink, &format!("{base}.url"), &c.url, "/message");
    range(sink, &format!("{base}.priority"), c.priority, 0, 10);
    Some(GotifyPlan {
        namespace: namespace.to_string(),
        base: base.to_string(),
        endpoint: endpoint?,
        token: c.token_secret_ref.clone(),
        priority: c.priority.unwrap_or(DEFAULT_PRIORITY),
    })
}

/// Send `msg` to the Gotify server of `plan`.
pub async fn send(
    ctx: &ProviderContext,
    plan: &GotifyPlan,
    msg: &Message,
) -> Result<Delivered, SendError> {
    let token = secret(ctx, &plan.namespace, &plan.token, "tokenSecretRef")?;
    let body = json!({
        "title": msg.title,
        "message": msg.body,
        "priority": plan.priority,
    });
    let req = ctx
        .http
        .post(plan.endpoint.clone())
        .header("X-Gotify-Key", &token)
        .json(&body);
    execute(ctx, req, vec![token]).await?.outcome(None)
}
