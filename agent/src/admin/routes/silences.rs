//! Silences through the API: `GET /api/v1/silences` (the catalog's Silences and those
//! created through the API, each with `active`), `POST /api/v1/silences` (stored in
//! SQLite, see [`crate::store::ApiSilence`]) and `DELETE /api/v1/silences/{namespace}/{name}`
//! (expires one created through the API; the catalog's answer 409 `managed_by_catalog`).
//! Creating and expiring are audited.

use chrono::{DateTime, Duration, Utc};
use http::StatusCode;
use kubekuma_crds::SilenceSpec;
use kubekuma_crds::common::MonitorSelector;
use rand::Rng as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Call, store_error};
use crate::admin::auth::Principal;
use crate::admin::error::{ApiError, Reply, json_reply};
use crate::catalog::ObjKey;
use crate::catalog::decode::dns1123;
use crate::store::{ApiSilence, CreateSilence};

/// Longest silence created through the API: one year.
pub const MAX_DURATION_MINUTES: i64 = 366 * 24 * 60;
/// Longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

fn managed_by_catalog(key: &ObjKey) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "managed_by_catalog",
        format!("silence {key} comes from the catalog: change its manifest instead"),
    )
}

fn spec_fields(spec: &SilenceSpec, now: DateTime<Utc>) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("startsAt".into(), json!(spec.starts_at));
    m.insert("endsAt".into(), json!(spec.ends_at));
    m.insert("reason".into(), json!(spec.reason));
    m.insert("createdBy".into(), json!(spec.created_by));
    m.insert(
        "selector".into(),
        serde_json::to_value(&spec.selector).unwrap_or(Value::Null),
    );
    m.insert(
        "active".into(),
        json!(spec.starts_at <= now && now < spec.ends_at),
    );
    m
}

/// An API silence as JSON.
pub fn api_silence_json(s: &ApiSilence, now: DateTime<Utc>) -> Value {
    let mut m = spec_fields(&s.spec, now);
    m.insert("namespace".into(), json!(s.key.namespace));
    m.insert("name".into(), json!(s.key.name));
    m.insert("source".into(), json!("api"));
    m.insert("createdBy".into(), json!(s.created_by));
    m.insert("createdAt".into(), json!(s.created_at));
    m.insert("expiredAt".into(), json!(s.expired_at));
    m.insert("active".into(), json!(s.active(now)));
    Value::Object(m)
}

/// `GET /api/v1/silences`: catalog silences, then API ones (expired included), each in
/// namespace/name order, only of namespaces the principal sees.
pub async fn list(call: &Call<'_>) -> Result<Reply, ApiError> {
    let p = call.who()?;
    let now = Utc::now();
    let snapshot = call.ctx.catalog.borrow().clone();
    let mut items: Vec<Value> = snapshot
        .silences
        .iter()
        .filter(|(k, _)| p.sees_namespace(&k.namespace))
        .map(|(k, s)| {
            let mut m = spec_fields(&s.spec, now);
            m.insert("namespace".into(), json!(k.namespace));
            m.insert("name".into(), json!(k.name));
            m.insert("source".into(), json!("catalog"));
            Value::Object(m)
        })
        .collect();
    let api = call.ctx.store.api_silences().await.map_err(store_error)?;
    items.extend(
        api.iter()
            .filter(|s| p.sees_namespace(&s.key.namespace))
            .map(|s| api_silence_json(s, now)),
    );
    Ok(json_reply(
        StatusCode::OK,
        &json!({"items": items, "total": items.len()}),
    ))
}

/// The body of `POST /api/v1/silences`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    namespace: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    duration_minutes: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, alias = "match")]
    selector: Option<MonitorSelector>,
}

fn generated_name(now: DateTime<Utc>) -> String {
    let n: u32 = rand::rng().random();
    format!("api-{}-{:06x}", now.format("%Y%m%d%H%M%S"), n & 0xff_ffff)
}

/// Check the body; the spec and key of the silence.
fn checked(
    body: CreateBody,
    p: &Principal,
    now: DateTime<Utc>,
) -> Result<(ObjKey, SilenceSpec), ApiError> {
    if !dns1123(&body.namespace, 63, false) {
        return Err(ApiError::bad_request(format!(
            "namespace {:?} is not a valid namespace",
            body.namespace
        )));
    }
    if !p.sees_namespace(&body.namespace) {
        return Err(ApiError::forbidden(format!(
            "silences in namespace {} are not yours to create",
            body.namespace
        )));
    }
    let name = match body.name {
        Some(n) if !dns1123(&n, 253, true) => {
            return Err(ApiError::bad_request(format!(
                "name {n:?} is not a valid resource name"
            )));
        }
        Some(n) => n,
        None => generated_name(now),
    };
    let starts_at = body.starts_at.unwrap_or(now);
    let ends_at = match (body.ends_at, body.duration_minutes) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give endsAt or durationMinutes, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "endsAt or durationMinutes is required",
            ));
        }
        (Some(e), None) => e,
        (None, Some(m)) if (1..=MAX_DURATION_MINUTES).contains(&m) => {
            starts_at + Duration::minutes(m)
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "durationMinutes must be from 1 to {MAX_DURATION_MINUTES}"
            )));
        }
    };
    if ends_at <= starts_at {
        return Err(ApiError::bad_request("endsAt must be after startsAt"));
    }
    if ends_at <= now {
        return Err(ApiError::bad_request("endsAt is in the past"));
    }
    if ends_at - starts_at > Duration::minutes(MAX_DURATION_MINUTES) {
        return Err(ApiError::bad_request("a silence lasts at most a year"));
    }
    // Checked like incident updates (the reason is shown in the console and exported):
    // no control, zero-width or bidirectional characters, at most MAX_REASON_CHARS.
    if let Some(r) = &body.reason {
        super::incidents::check_text("reason", r, usize::MAX)?;
    }
    let reason = body
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if let Some(r) = &reason {
        super::incidents::check_text("reason", r, MAX_REASON_CHARS)?;
    }
    if let Some(sel) = &body.selector {
        for ns in &sel.match_namespaces {
            if !p.sees_namespace(ns) {
                return Err(ApiError::forbidden(format!(
                    "the selector names namespace {ns}, which is not yours"
                )));
            }
        }
        for n in &sel.match_names {
            if n.regex == Some(true)
                && let Err(e) = regex::Regex::new(&n.pattern)
            {
                return Err(ApiError::bad_request(format!(
                    "selector.matchNames pattern {:?} is not a valid regex: {e}",
                    n.pattern
                )));
            }
        }
    }
    Ok((
        ObjKey::new(&body.namespace, &name),
        SilenceSpec {
            starts_at,
            ends_at,
            reason,
            created_by: Some(p.actor()),
            selector: body.selector,
        },
    ))
}

/// `POST /api/v1/silences`: 201 with the silence; 409 `managed_by_catalog` when the
/// catalog has a Silence of that name, 409 `conflict` while an API silence of that name
/// has not ended.
pub async fn create(call: &Call<'_>) -> Result<Reply, ApiError> {
    let p = call.who()?;
    let now = Utc::now();
    let (key, spec) = checked(call.json::<CreateBody>()?, p, now)?;
    if call.ctx.catalog.borrow().silences.contains_key(&key) {
        return Err(managed_by_catalog(&key));
    }
    match call
        .ctx
        .store
        .create_api_silence(&key, &spec, &p.actor(), now)
        .await
        .map_err(store_error)?
    {
        CreateSilence::Created => {}
        CreateSilence::Exists => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("silence {key} exists and has not ended"),
            ));
        }
    }
    call.audit(
        "silence",
        &key.to_string(),
        "created",
        json!({
            "startsAt": spec.starts_at,
            "endsAt": spec.ends_at,
            "reason": spec.reason,
            "selector": spec.selector,
        }),
        Some(format!("silence until {}", spec.ends_at.to_rfc3339())),
    )
    .await;
    let stored = ApiSilence {
        key,
        spec,
        created_by: Some(p.actor()),
        created_at: now,
        expired_at: None,
    };
    Ok(json_reply(
        StatusCode::CREATED,
        &api_silence_json(&stored, now),
    ))
}

/// `DELETE /api/v1/silences/{namespace}/{name}`: expires an API silence (200 with it).
pub async fn expire(call: &Call<'_>) -> Result<Reply, ApiError> {
    let p = call.who()?;
    let key = ObjKey::new(call.params.get("namespace"), call.params.get("name"));
    let missing = || ApiError::not_found(format!("silence {key} not found"));
    if !p.sees_namespace(&key.namespace) {
        return Err(missing());
    }
    if call.ctx.catalog.borrow().silences.contains_key(&key) {
        return Err(managed_by_catalog(&key));
    }
    let now = Utc::now();
    if !call
        .ctx
        .store
        .expire_api_silence(&key, now)
        .await
        .map_err(store_error)?
    {
        return Err(missing());
    }
    call.audit(
        "silence",
        &key.to_string(),
        "expired",
        json!({}),
        Some("expired through the API".into()),
    )
    .await;
    let all = call.ctx.store.api_silences().await.map_err(store_error)?;
    let s = all.into_iter().find(|s| s.key == key).ok_or_else(missing)?;
    Ok(json_reply(StatusCode::OK, &api_silence_json(&s, now)))
}
