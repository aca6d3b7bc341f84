//! Notification providers through the API: `GET /api/v1/deliveries` (the outbox's recent
//! rows, newest first, with outcome and error) and `POST
//! /api/v1/providers/{namespace}/{name}/test` (a test message through a provider's plan,
//! audited as `test_sent` or `test_failed`). The console's notifications page calls the
//! same functions ([`visible_deliveries`], [`send_test`]).
//!
//! Errors of deliveries are stored free of secrets (each provider scrubs its URLs, tokens
//! and passwords before an error leaves it, see [`crate::notify::providers`]); the
//! rendered message (`payload`) is not listed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::StatusCode;
use kubekuma_crds::objects::monitor_key;
use serde::Deserialize;
use serde_json::{Value, json};

use super::incidents::check_text;
use super::{Call, parse_limit, store_error};
use crate::admin::auth::Principal;
use crate::admin::error::{ApiError, Reply, json_reply};
use crate::catalog::ObjKey;
use crate::notify::providers::{self, Message, ProviderContext};
use crate::store::deliveries::Delivery;

/// Default page of the list.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page of the list.
pub const MAX_LIMIT: usize = 500;
/// Longest title or message of a test, in characters.
pub const MAX_TEST_CHARS: usize = 1000;
/// The test's title when none is given.
pub const DEFAULT_TITLE: &str = "KubeKuma test notification";

/// A delivery as JSON (without the rendered message).
pub fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "provider": d.provider.to_string(),
        "providerType": d.provider_type,
        "policy": d.policy.to_string(),
        "monitorId": monitor_key(&d.monitor.namespace, &d.monitor.name),
        "incidentId": d.incident_id,
        "event": d.event_kind,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "createdAt": d.created_at,
        "lastAttemptAt": d.last_attempt_at,
        "nextAttemptAt": d.next_attempt_at,
        "error": d.last_error,
        "detail": d.detail,
    })
}

/// Whether `p` may see delivery `d`: it sees both the provider's and the monitor's
/// namespace (a delivery names both).
pub fn sees_delivery(p: &Principal, d: &Delivery) -> bool {
    p.sees_namespace(&d.provider.namespace) && p.sees_namespace(&d.monitor.namespace)
}

/// The newest `limit` deliveries `p` may see, of `provider` when given, newest first.
/// A principal confined to its namespace reads at most `limit` rows of its own
/// (the store is asked for more, up to [`MAX_LIMIT`] × 4, and the rest filtered out).
pub async fn visible_deliveries(
    call: &Call<'_>,
    provider: Option<ObjKey>,
    limit: usize,
) -> Result<Vec<Delivery>, ApiError> {
    let p = call.who()?;
    if let Some(k) = &provider
        && !p.sees_namespace(&k.namespace)
    {
        return Ok(Vec::new());
    }
    let ask = if p.all_namespaces {
        limit
    } else {
        (limit * 4).min(MAX_LIMIT * 4)
    };
    let rows = call
        .ctx
        .store
        .recent_deliveries(provider, ask)
        .await
        .map_err(store_error)?;
    Ok(rows
        .into_iter()
        .filter(|d| sees_delivery(p, d))
        .take(limit)
        .collect())
}

/// `GET /api/v1/deliveries?provider=namespace/name&limit=`: `{items, total}`, newest
/// first, only of providers and monitors in namespaces the principal sees.
pub async fn list(call: &Call<'_>) -> Result<Reply, ApiError> {
    let mut provider = None;
    let mut limit = None;
    for (k, v) in call.query_pairs() {
        match k.as_str() {
            "provider" => match v.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                    provider = Some(ObjKey::new(ns, name));
                }
                _ => return Err(ApiError::bad_request("provider must be namespace/name")),
            },
            "limit" => limit = Some(v),
            _ => {}
        }
    }
    let limit = parse_limit(limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let rows = visible_deliveries(call, provider, limit).await?;
    let items: Vec<Value> = rows.iter().map(delivery_json).collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({"items": items, "total": items.len()}),
    ))
}

/// What a test send did.
#[derive(Clone, Debug, PartialEq)]
pub struct TestOutcome {
    /// The provider.
    pub provider: ObjKey,
    /// Its type (`webhook`, `slack`, …).
    pub provider_type: String,
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// What the service answered (`Ok`), or why it failed (`Err`); never a secret.
    pub result: Result<String, String>,
}

/// Send a test message through provider `key` as the caller: 404 when the catalog has
/// no such provider in a namespace the caller sees, 409 `invalid_provider` when it has
/// one that did not pass validation (no plan to send with), 400 for a title or message
/// [`check_text`] refuses. The attempt, sent or failed, is audited
/// (`provider`, `test_sent` / `test_failed`).
pub async fn send_test(
    call: &Call<'_>,
    key: ObjKey,
    title: Option<String>,
    message: Option<String>,
) -> Result<TestOutcome, ApiError> {
    let p = call.who()?;
    let missing = || ApiError::not_found(format!("notification provider {key} not found"));
    if !p.sees_namespace(&key.namespace) {
        return Err(missing());
    }
    let snapshot = call.ctx.catalog.borrow().clone();
    let provider = snapshot.providers.get(&key).ok_or_else(missing)?;
    let plan = snapshot.provider_plans.get(&key).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "invalid_provider",
            format!("notification provider {key} is not valid (see kubekuma validate)"),
        )
    })?;
    let text = |field: &str, v: Option<String>| -> Result<Option<String>, ApiError> {
        match v {
            Some(v) => {
                check_text(field, &v, usize::MAX)?;
                let v = v.trim().to_string();
                check_text(field, &v, MAX_TEST_CHARS)?;
                Ok((!v.is_empty()).then_some(v))
            }
            None => Ok(None),
        }
    };
    let actor = p.actor();
    let title = text("title", title)?.unwrap_or_else(|| DEFAULT_TITLE.to_string());
    let message = text("message", message)?
        .unwrap_or_else(|| format!("A test notification sent by {actor} through {key}."));
    let ctx = ProviderContext::new(Arc::new(snapshot.secrets.clone()));
    let msg = Message::test(title.clone(), message);
    let at = Utc::now();
    let result = providers::send(&ctx, plan, &msg)
        .await
        .map(|d| d.detail)
        .map_err(|e| e.to_string());
    let provider_type = provider.spec.type_.to_string();
    let (event, details, summary) = match &result {
        Ok(detail) => (
            "test_sent",
            json!({"type": provider_type, "title": title, "detail": detail}),
            "test notification sent".to_string(),
        ),
        Err(error) => (
            "test_failed",
            json!({"type": provider_type, "title": title, "error": error}),
            "test notification failed".to_string(),
        ),
    };
    call.audit("provider", &key.to_string(), event, details, Some(summary))
        .await;
    Ok(TestOutcome {
        provider: key,
        provider_type,
        at,
        result,
    })
}

/// The body of `POST /api/v1/providers/{namespace}/{name}/test` (optional).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct TestBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// `POST /api/v1/providers/{namespace}/{name}/test`, optionally with `{title, message}`:
/// 200 `{sent: true, provider, type, detail}` when the service accepted it, 502
/// `send_failed` naming the failure otherwise.
pub async fn test(call: &Call<'_>) -> Result<Reply, ApiError> {
    let key = ObjKey::new(call.params.get("namespace"), call.params.get("name"));
    let body: TestBody = if call.body.is_empty() {
        TestBody::default()
    } else {
        call.json()?
    };
    let out = send_test(call, key, body.title, body.message).await?;
    match out.result {
        Ok(detail) => Ok(json_reply(
            StatusCode::OK,
            &json!({
                "sent": true,
                "provider": out.provider.to_string(),
                "type": out.provider_type,
                "at": out.at,
                "detail": detail,
            }),
        )),
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "send_failed",
            format!(
                "the test through {} ({}) failed: {error}",
                out.provider, out.provider_type
            ),
        )),
    }
}
