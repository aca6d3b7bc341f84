//! `GET /api/v1/audit`: the audit log, newest first, filtered by actor, action (event
//! type) and result, one page at a time. Admins only ([`crate::admin::roles::Area::Audit`]),
//! and only principals acting on every namespace: the log spans all of them. The
//! console's audit page calls [`page`].

use http::StatusCode;
use serde_json::{Value, json};

use super::{Call, parse_limit, parse_offset, store_error};
use crate::admin::error::{ApiError, Reply, json_reply};
use crate::store::{AuditEvent, AuditFilter, AuditResult};

/// Default page of the list.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page of the list.
pub const MAX_LIMIT: usize = 500;
/// Longest actor or action filter, in characters.
const MAX_FILTER_CHARS: usize = 200;

/// An audit event as JSON.
pub fn event_json(e: &AuditEvent) -> Value {
    json!({
        "id": e.id,
        "timestamp": e.timestamp,
        "actor": e.actor,
        "action": e.event_type,
        "result": AuditResult::of(&e.event_type).as_str(),
        "resourceType": e.resource_type,
        "resourceKey": e.resource_key,
        "summary": e.changes_summary,
        "details": e.details,
    })
}

/// The filter of `actor`, `action` and `result` values (empty ones ignored): 400 for a
/// result other than `ok` or `failed` or a value over 200 characters.
pub fn filter_of(
    actor: Option<&str>,
    action: Option<&str>,
    result: Option<&str>,
) -> Result<AuditFilter, ApiError> {
    let value = |name: &str, v: Option<&str>| -> Result<Option<String>, ApiError> {
        match v.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) if v.chars().count() > MAX_FILTER_CHARS => Err(ApiError::bad_request(format!(
                "{name} is longer than {MAX_FILTER_CHARS} characters"
            ))),
            other => Ok(other.map(str::to_string)),
        }
    };
    let result = match result.map(str::trim).filter(|v| !v.is_empty()) {
        None => None,
        Some("ok") => Some(AuditResult::Ok),
        Some("failed") => Some(AuditResult::Failed),
        Some(_) => return Err(ApiError::bad_request("result must be ok or failed")),
    };
    Ok(AuditFilter {
        actor: value("actor", actor)?,
        action: value("action", action)?,
        result,
    })
}

/// One page of the log for the caller: 403 for a principal confined to its namespace.
/// The events and whether more follow.
pub async fn page(
    call: &Call<'_>,
    filter: AuditFilter,
    limit: usize,
    offset: usize,
) -> Result<(Vec<AuditEvent>, bool), ApiError> {
    let p = call.who()?;
    if !p.all_namespaces {
        return Err(ApiError::forbidden(format!(
            "the audit log spans every namespace: only principals of the home namespace read it, not {}",
            p.id
        )));
    }
    call.ctx
        .store
        .find_audit(filter, limit, offset)
        .await
        .map_err(store_error)
}

/// `GET /api/v1/audit?actor=&action=&result=ok|failed&limit=&offset=`:
/// `{items, more}`, newest first.
pub async fn list(call: &Call<'_>) -> Result<Reply, ApiError> {
    let (mut actor, mut action, mut result, mut limit, mut offset) = (None, None, None, None, None);
    for (k, v) in call.query_pairs() {
        match k.as_str() {
            "actor" => actor = Some(v),
            "action" => action = Some(v),
            "result" => result = Some(v),
            "limit" => limit = Some(v),
            "offset" => offset = Some(v),
            _ => {}
        }
    }
    let filter = filter_of(actor.as_deref(), action.as_deref(), result.as_deref())?;
    let limit = parse_limit(limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = parse_offset(offset.as_deref())?;
    let (events, more) = page(call, filter, limit, offset).await?;
    let items: Vec<Value> = events.iter().map(event_json).collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({"items": items, "more": more}),
    ))
}
