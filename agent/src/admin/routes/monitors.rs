//! `GET /api/v1/monitors` (filters, pagination) and `GET /api/v1/monitors/{namespace}/{name}`
//! (with recent heartbeats): the catalog's spec as written (secrets stay
//! `${SECRET:…}` references; credentials written inline are shown as `***` to every role,
//! see [`redact`]; a push token is hidden from principals that may not change monitors)
//! and the live status with uptime over 24 h, 7 d, 30 d and 90 d.

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

/// What an inline credential is shown as.
pub const REDACTED: &str = "***";

/// Header names whose values are credentials (compared lowercase, by part).
const SECRET_WORDS: [&str; 10] = [
    "auth",
    "token",
    "secret",
    "pass",
    "key",
    "cookie",
    "session",
    "credential",
    "signature",
    "jwt",
];

/// Whether a header, field or query parameter of this name carries a credential.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| n.contains(w))
}

/// Whether a value only refers to a Secret (`${SECRET:name:key}`), which is no
/// credential itself; anything else written next to a reference is redacted too.
fn is_reference(v: &str) -> bool {
    let mut rest = v.trim();
    let mut any = false;
    // "Bearer ${SECRET:a:b}" and "${SECRET:a:b}" are references; a scheme word may lead.
    if let Some((word, tail)) = rest.split_once(' ')
        && !word.contains('$')
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        rest = tail.trim_start();
    }
    while let Some(tail) = rest.strip_prefix("${SECRET:") {
        let Some(end) = tail.find('}') else {
            return false;
        };
        rest = &tail[end + 1..];
        any = true;
    }
    any && rest.is_empty()
}

/// A URL with the password of its userinfo and the values of credential-like query
/// parameters replaced by [`REDACTED`] (Secret references stay).
pub fn redact_url(url: &str) -> String {
    let (head, fragment) = match url.split_once('#') {
        Some((h, f)) => (h, Some(f)),
        None => (url, None),
    };
    let (head, query) = match head.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (head, None),
    };
    let mut out = String::with_capacity(url.len());
    match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            out.push_str(scheme);
            out.push_str("://");
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    match userinfo.split_once(':') {
                        Some((user, pass)) if !is_reference(pass) => {
                            out.push_str(user);
                            out.push(':');
                            out.push_str(REDACTED);
                        }
                        _ => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(head),
    }
    if let Some(q) = query {
        out.push('?');
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if secret_name(k) && !v.is_empty() && !is_reference(v) => {
                    format!("{k}={REDACTED}")
                }
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Replace credentials written inline in a spec (as JSON) by [`REDACTED`], for every
/// reader: the password of a URL's userinfo and credential-like query parameters (every
/// `url`, a docker `engine`), the values of credential headers (`Authorization`,
/// `Proxy-Authorization`, `Cookie`, `X-Api-Key`, any name with `auth`, `token`, `key`,
/// `secret`, `pass`, …), and any other string field whose name says password, secret or
/// token. `${SECRET:…}` references are no credentials and stay. The push token is left
/// to the caller (editors need it).
pub fn redact(spec: &mut Value) {
    fn walk(v: &mut Value, path: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    path.push(k.clone());
                    match (k.as_str(), &mut *child) {
                        ("headers", Value::Object(headers)) => {
                            for (name, hv) in headers.iter_mut() {
                                if let Value::String(s) = hv
                                    && secret_name(name)
                                    && !is_reference(s)
                                {
                                    *s = REDACTED.into();
                                }
                            }
                        }
                        ("url" | "engine" | "server", Value::String(s)) => *s = redact_url(s),
                        (_, Value::String(s)) => {
                            let push_token = path.len() == 3
                                && path[0] == "target"
                                && path[1] == "push"
                                && path[2] == "token";
                            let n = k.to_ascii_lowercase();
                            if !push_token
                                && ["password", "passwd", "secret", "token", "apikey", "api_key"]
                                    .iter()
                                    .any(|w| n.contains(w))
                                && !is_reference(s)
                            {
                                *s = REDACTED.into();
                            }
                        }
                        _ => walk(child, path),
                    }
                    path.pop();
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, path);
                }
            }
            _ => {}
        }
    }
    walk(spec, &mut Vec::new());
}

/// The spec as JSON: inline credentials redacted ([`redact`]), and without a push token
/// for principals that may not change monitors.
fn spec_json(m: &Monitor, p: &Principal) -> Value {
    let mut spec = serde_json::to_value(&m.spec).unwrap_or(Value::Null);
    redact(&mut spec);
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

/// `k=v,k2=v2` as (key, value) pairs, keys and values trimmed, empty pairs skipped; the
/// first pair that is not `key=value` is the error. The API's label filter, and the
/// console's filter and silence labels.
pub(crate) fn label_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(p.to_string()),
        })
        .collect()
}

/// `k=v,k2=v2`: every pair must be among the monitor's labels.
fn parse_labels(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    label_pairs(s)
        .map_err(|p| ApiError::bad_request(format!("label filter {p:?} is not key=value")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_passwords_and_credential_parameters() {
        for (url, want) in [
            (
                "https://user:hunter2@api.example.com/x?a=1",
                "https://user:***@api.example.com/x?a=1",
            ),
            ("https://api.example.com/x", "https://api.example.com/x"),
            ("https://user@host/", "https://user@host/"),
            (
                "https://u:${SECRET:s:k}@host/",
                "https://u:${SECRET:s:k}@host/",
            ),
            (
                "https://host/x?api_key=abc&page=2&token=${SECRET:s:t}#top",
                "https://host/x?api_key=***&page=2&token=${SECRET:s:t}#top",
            ),
            ("wss://a:b:c@h", "wss://a:***@h"),
            (
                "tcp://admin:pw@docker.internal:2376",
                "tcp://admin:***@docker.internal:2376",
            ),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn headers_and_password_fields_are_redacted_references_stay() {
        let mut spec = json!({
            "target": {
                "http": {
                    "url": "https://u:p@h/",
                    "headers": {
                        "Authorization": "Bearer abc",
                        "Proxy-Authorization": "Basic dXNlcjpwdw==",
                        "Cookie": "sid=1",
                        "X-Api-Key": "k",
                        "X-Auth": "Bearer ${SECRET:s:k}",
                        "Accept": "text/plain",
                    },
                    "body": "hello",
                },
                "push": {"token": "kept-for-the-caller"},
                "other": {"password": "pw", "dbPassword": "${SECRET:db:pw}"},
            }
        });
        redact(&mut spec);
        let h = &spec["target"]["http"]["headers"];
        assert_eq!(spec["target"]["http"]["url"], "https://u:***@h/");
        assert_eq!(h["Authorization"], REDACTED);
        assert_eq!(h["Proxy-Authorization"], REDACTED);
        assert_eq!(h["Cookie"], REDACTED);
        assert_eq!(h["X-Api-Key"], REDACTED);
        assert_eq!(h["X-Auth"], "Bearer ${SECRET:s:k}");
        assert_eq!(h["Accept"], "text/plain");
        assert_eq!(spec["target"]["http"]["body"], "hello");
        assert_eq!(spec["target"]["push"]["token"], "kept-for-the-caller");
        assert_eq!(spec["target"]["other"]["password"], REDACTED);
        assert_eq!(spec["target"]["other"]["dbPassword"], "${SECRET:db:pw}");
    }
}
