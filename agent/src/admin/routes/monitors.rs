//! `GET /api/v1/monitors` (filters, pagination) and `GET /api/v1/monitors/{namespace}/{name}`
//! (with recent heartbeats): the catalog's spec as written (secrets stay
//! `${SECRET:…}` references; a push token is hidden from principals that may not change
//! monitors) and the live status with uptime over 24 h, 7 d, 30 d and 90 d.

use chrono::{DateTime, Duration, Utc};
use http::StatusCode;
use kubekuma_builder::twins::round2;
use kubekuma_crds::{Monitor, MonitorState, MonitorType};
use serde_json::{Value, json};

use super::{Call, parse_limit, parse_offset, store_error};
use crate::admin::auth::Principal;
use crate::admin::error::{ApiError, Reply, json_reply};
use crate::admin::roles::{Access, Area};
use crate::catalog::ObjKey;
use crate::state::live::LiveMonitor;
use crate::store::Store;

/// Default and largest page of the list.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page of the list.
pub const MAX_LIMIT: usize = 500;
/// Default and largest number of heartbeats of one monitor.
pub const DEFAULT_HEARTBEATS: usize = 100;
/// Largest number of heartbeats of one monitor.
pub const MAX_HEARTBEATS: usize = 1000;

/// The state shown for a monitor: paused when disabled, else its tracker's.
pub fn shown_state(m: &Monitor, live: Option<&LiveMonitor>) -> MonitorState {
    if !m.spec.is_enabled() {
        MonitorState::Paused
    } else {
        live.map(|l| l.tracker.shown())
            .unwrap_or(MonitorState::Pending)
    }
}

/// The spec as JSON, without a push token for principals that may not change monitors.
fn spec_json(m: &Monitor, p: &Principal) -> Value {
    let mut spec = serde_json::to_value(&m.spec).unwrap_or(Value::Null);
    if !p.can(Area::Monitors, Access::Write)
        && let Some(token) = spec.pointer_mut("/target/push/token")
    {
        *token = Value::String("<hidden>".into());
    }
    spec
}

async fn uptime(store: &Store, key: &ObjKey, now: DateTime<Utc>) -> Value {
    let mut out = serde_json::Map::new();
    for (label, days) in [("24h", 1), ("7d", 7), ("30d", 30), ("90d", 90)] {
        let u = store
            .rollup(&key.namespace, &key.name, now - Duration::days(days), now)
            .await
            .ok()
            .and_then(|r| r.uptime_percent())
            .map(round2);
        out.insert(label.into(), json!(u));
    }
    Value::Object(out)
}

async fn item(
    call: &Call<'_>,
    p: &Principal,
    key: &ObjKey,
    m: &Monitor,
    live: Option<&LiveMonitor>,
    now: DateTime<Utc>,
) -> Value {
    json!({
        "namespace": key.namespace,
        "name": key.name,
        "labels": m.metadata.labels.clone().unwrap_or_default(),
        "spec": spec_json(m, p),
        "status": {
            "state": shown_state(m, live).as_str(),
            "lastCheckedAt": live.and_then(|l| l.checked_at),
            "latencyMs": live.and_then(|l| l.latency_ms),
            "reason": live.and_then(|l| l.reason).map(|r| r.as_str()),
            "message": live.and_then(|l| l.message.clone()),
            "certDaysLeft": live.and_then(|l| l.cert.as_ref()).map(|c| c.days_left),
            "uptime": uptime(&call.ctx.store, key, now).await,
        },
    })
}

/// `k=v,k2=v2`: every pair must be among the monitor's labels.
fn parse_labels(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(ApiError::bad_request(format!(
                "label filter {p:?} is not key=value"
            ))),
        })
        .collect()
}

fn parse_type(s: &str) -> Result<MonitorType, ApiError> {
    MonitorType::ALL
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| ApiError::bad_request(format!("unknown monitor type {s:?}")))
}

fn parse_state(s: &str) -> Result<MonitorState, ApiError> {
    [
        MonitorState::Up,
        MonitorState::Down,
        MonitorState::Pending,
        MonitorState::Flapping,
        MonitorState::Paused,
    ]
    .into_iter()
    .find(|t| t.as_str() == s)
    .ok_or_else(|| ApiError::bad_request(format!("unknown state {s:?}")))
}

/// `GET /api/v1/monitors?namespace=&label=k=v,…&type=&state=&limit=&offset=`:
/// `{items, total}`, in namespace/name order, only namespaces the principal sees.
pub async fn list(call: &Call<'_>) -> Result<Reply, ApiError> {
    let p = call.who()?;
    let (mut namespace, mut labels, mut type_, mut state) = (None, Vec::new(), None, None);
    let (mut limit, mut offset) = (None, None);
    for (k, v) in call.query_pairs() {
        match k.as_str() {
            "namespace" => namespace = Some(v),
            "label" => labels.extend(parse_labels(&v)?),
            "type" => type_ = Some(parse_type(&v)?),
            "state" => state = Some(parse_state(&v)?),
            "limit" => limit = Some(v),
            "offset" => offset = Some(v),
            _ => {}
        }
    }
    let limit = parse_limit(limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = parse_offset(offset.as_deref())?;
    let snapshot = call.ctx.catalog.borrow().clone();
    let matching: Vec<(ObjKey, Monitor, Option<LiveMonitor>)> = {
        let live = call.ctx.live.lock().unwrap_or_else(|e| e.into_inner());
        snapshot
            .monitors
            .iter()
            .filter(|(k, _)| p.sees_namespace(&k.namespace))
            .filter(|(k, _)| namespace.as_ref().is_none_or(|n| *n == k.namespace))
            .filter(|(_, m)| type_.is_none_or(|t| m.spec.type_ == t))
            .filter(|(_, m)| {
                let have = m.metadata.labels.as_ref();
                labels
                    .iter()
                    .all(|(k, v)| have.and_then(|l| l.get(k)) == Some(v))
            })
            .map(|(k, m)| (k.clone(), m.clone(), live.monitors.get(k).cloned()))
            .filter(|(_, m, l)| state.is_none_or(|s| shown_state(m, l.as_ref()) == s))
            .collect()
    };
    let now = Utc::now();
    let mut items = Vec::new();
    for (k, m, l) in matching.iter().skip(offset).take(limit) {
        items.push(item(call, p, k, m, l.as_ref(), now).await);
    }
    Ok(json_reply(
        StatusCode::OK,
        &json!({"items": items, "total": matching.len(), "limit": limit, "offset": offset}),
    ))
}

/// `GET /api/v1/monitors/{namespace}/{name}?limit=`: the monitor and its newest
/// heartbeats (newest first). 404 for a monitor the principal cannot see.
pub async fn one(call: &Call<'_>) -> Result<Reply, ApiError> {
    let p = call.who()?;
    let key = ObjKey::new(call.params.get("namespace"), call.params.get("name"));
    let pairs = call.query_pairs();
    let limit = parse_limit(
        pairs
            .iter()
            .find(|(k, _)| k == "limit")
            .map(|(_, v)| v.as_str()),
        DEFAULT_HEARTBEATS,
        MAX_HEARTBEATS,
    )?;
    let snapshot = call.ctx.catalog.borrow().clone();
    let Some(m) = snapshot
        .monitors
        .get(&key)
        .filter(|_| p.sees_namespace(&key.namespace))
    else {
        return Err(ApiError::not_found(format!("monitor {key} not found")));
    };
    let live = call
        .ctx
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .monitors
        .get(&key)
        .cloned();
    let mut body = item(call, p, &key, m, live.as_ref(), Utc::now()).await;
    let beats = call
        .ctx
        .store
        .heartbeats(&key.namespace, &key.name, DateTime::UNIX_EPOCH, limit)
        .await
        .map_err(store_error)?;
    body["heartbeats"] = json!(
        beats
            .iter()
            .map(|h| json!({
                "state": h.state.as_str(),
                "checkedAt": h.checked_at,
                "latencyMs": h.latency_ms,
                "reason": h.reason.map(|r| r.as_str()),
                "message": h.message,
                "attempts": h.attempts,
            }))
            .collect::<Vec<_>>()
    );
    Ok(json_reply(StatusCode::OK, &body))
}
