//! `GET /api/v1/incidents` and the changes an operator makes to one: acknowledge, a
//! public update (shown on status pages and in feeds: the export's `IncidentMonth`
//! carries updates to the builder), resolve. Every change is audited.

use chrono::{DateTime, Utc};
use http::StatusCode;
use kubekuma_crds::objects::monitor_key;
use kubekuma_crds::results::Incident;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Call, parse_limit, parse_offset, store_error};
use crate::admin::error::{ApiError, Reply, json_reply};
use crate::store::IncidentFilter;

/// Default page of the list.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page of the list.
pub const MAX_LIMIT: usize = 500;
/// Longest public update, in characters.
pub const MAX_UPDATE_CHARS: usize = 4000;
/// Longest acknowledgement note, in characters.
pub const MAX_NOTE_CHARS: usize = 1000;

/// Why a character may not be in text an operator writes: it breaks the XML of the
/// feeds (controls), or hides or reorders what readers see (bidirectional overrides and
/// isolates, zero-width characters).
fn refused_char(c: char) -> Option<&'static str> {
    match c {
        '\n' | '\t' => None,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => Some("a control character"),
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{61c}' => {
            Some("a bidirectional control")
        }
        '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{180e}' => {
            Some("a zero-width character")
        }
        '\u{fffe}' | '\u{ffff}' => Some("a noncharacter"),
        _ => None,
    }
}

/// Check text an operator writes for `field`: at most `max` characters, and none that
/// [`refused_char`] refuses (newline and tab are fine). 400 naming the field, the
/// character and its position.
pub fn check_text(field: &str, text: &str, max: usize) -> Result<(), ApiError> {
    let mut n = 0usize;
    for (i, c) in text.chars().enumerate() {
        if let Some(what) = refused_char(c) {
            return Err(ApiError::bad_request(format!(
                "{field} contains {what} (U+{:04X}) at character {}",
                u32::from(c),
                i + 1
            )));
        }
        n = i + 1;
    }
    if n > max {
        return Err(ApiError::bad_request(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(())
}

/// The spec's incident shape (plus reason and updates). `state` is `"down"` while the
/// incident is open and `"resolved"` once it has ended (the words of the list's
/// `state=open|resolved` filter: an ended incident is never reported as `"up"`).
pub fn incident_json(i: &Incident) -> Value {
    json!({
        "id": i.id,
        "monitorId": monitor_key(&i.namespace, &i.name),
        "startedAt": i.started_at,
        "endedAt": i.ended_at,
        "state": if i.ended_at.is_none() { "down" } else { "resolved" },
        "duration": i.duration_seconds,
        "reason": i.reason.map(|r| r.as_str()),
        "suppressed": i.suppressed,
        "suppressReason": i.suppress_reason,
        "acknowledged": i.acknowledged,
        "updates": i.updates.iter().map(|u| json!({"at": u.at, "message": u.message})).collect::<Vec<_>>(),
    })
}

fn parse_time(name: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    // A `+` of an offset left unencoded in the query arrives as a space.
    DateTime::parse_from_rfc3339(&v.replace(' ', "+"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::bad_request(format!("{name} must be an RFC 3339 time")))
}

/// `GET /api/v1/incidents?monitorId=ns/name&state=open|resolved&since=&until=&limit=&offset=`:
/// a JSON array, newest first, only of monitors in namespaces the principal sees.
pub async fn list(call: &Call<'_>) -> Result<Reply, ApiError> {
    let p = call.who()?;
    let mut filter = IncidentFilter::default();
    let (mut limit, mut offset) = (None, None);
    for (k, v) in call.query_pairs() {
        match k.as_str() {
            "monitorId" => match v.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                    filter.monitor = Some((ns.to_string(), name.to_string()));
                }
                _ => return Err(ApiError::bad_request("monitorId must be namespace/name")),
            },
            "state" => {
                filter.open = Some(match v.as_str() {
                    "open" => true,
                    "resolved" => false,
                    _ => return Err(ApiError::bad_request("state must be open or resolved")),
                })
            }
            "since" => filter.since = Some(parse_time("since", &v)?),
            "until" => filter.until = Some(parse_time("until", &v)?),
            "limit" => limit = Some(v),
            "offset" => offset = Some(v),
            _ => {}
        }
    }
    let limit = parse_limit(limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = parse_offset(offset.as_deref())?;
    let found = call
        .ctx
        .store
        .find_incidents(filter)
        .await
        .map_err(store_error)?;
    let items: Vec<Value> = found
        .iter()
        .rev()
        .filter(|i| p.sees_namespace(&i.namespace))
        .skip(offset)
        .take(limit)
        .map(incident_json)
        .collect();
    Ok(json_reply(StatusCode::OK, &items))
}

/// The incident of the path, when it exists and the principal sees its namespace.
async fn visible(call: &Call<'_>) -> Result<Incident, ApiError> {
    let p = call.who()?;
    let raw = call.params.get("id");
    let missing = || ApiError::not_found(format!("incident {raw} not found"));
    let id: i64 = raw.parse().map_err(|_| missing())?;
    match call.ctx.store.incident(id).await.map_err(store_error)? {
        Some(i) if p.sees_namespace(&i.namespace) => Ok(i),
        _ => Err(missing()),
    }
}

/// The incident after a change (and the twins' model dropped, so the status page
/// twin shows the change at once).
async fn reload(call: &Call<'_>, id: i64) -> Result<Incident, ApiError> {
    super::twins::invalidate(call.twins);
    call.ctx
        .store
        .incident(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("incident {id} not found")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    note: Option<String>,
}

/// `POST /api/v1/incidents/{id}/acknowledge`, optionally with `{note}` (kept in the
/// audit record; at most [`MAX_NOTE_CHARS`] characters, checked like updates).
pub async fn acknowledge(call: &Call<'_>) -> Result<Reply, ApiError> {
    let i = visible(call).await?;
    let note = if call.body.is_empty() {
        None
    } else {
        let body: AckBody = call.json()?;
        if let Some(n) = &body.note {
            check_text("note", n, usize::MAX)?;
        }
        body.note
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
    };
    if let Some(n) = &note {
        check_text("note", n, MAX_NOTE_CHARS)?;
    }
    let actor = call.who()?.actor();
    call.ctx
        .store
        .acknowledge_incident(i.id, &actor, Utc::now())
        .await
        .map_err(store_error)?;
    call.audit(
        "incident",
        &i.id.to_string(),
        "acknowledged",
        match &note {
            Some(n) => json!({"monitorId": monitor_key(&i.namespace, &i.name), "note": n}),
            None => json!({"monitorId": monitor_key(&i.namespace, &i.name)}),
        },
        Some("acknowledged: false → true".into()),
    )
    .await;
    Ok(json_reply(
        StatusCode::OK,
        &incident_json(&reload(call, i.id).await?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    message: String,
}

/// `POST /api/v1/incidents/{id}/updates` with `{message}`: 201 with the incident.
pub async fn add_update(call: &Call<'_>) -> Result<Reply, ApiError> {
    let i = visible(call).await?;
    let body: UpdateBody = call.json()?;
    // Checked before trimming: U+0085 and other controls count as white space there.
    check_text("message", &body.message, usize::MAX)?;
    let message = body.message.trim();
    if message.is_empty() {
        return Err(ApiError::bad_request("message must not be empty"));
    }
    check_text("message", message, MAX_UPDATE_CHARS)?;
    call.ctx
        .store
        .add_incident_update(i.id, Utc::now(), message)
        .await
        .map_err(store_error)?;
    call.audit(
        "incident",
        &i.id.to_string(),
        "updated",
        json!({"monitorId": monitor_key(&i.namespace, &i.name), "message": message}),
        Some("public update added".into()),
    )
    .await;
    Ok(json_reply(
        StatusCode::CREATED,
        &incident_json(&reload(call, i.id).await?),
    ))
}

/// `POST /api/v1/incidents/{id}/resolve`: closes an open incident now; 409
/// `already_resolved` for a closed one. A monitor still down is re-armed: it shows
/// pending, and a later failure (after its retries and grace) opens a new incident.
pub async fn resolve(call: &Call<'_>) -> Result<Reply, ApiError> {
    let i = visible(call).await?;
    if i.ended_at.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_resolved",
            format!("incident {} is already resolved", i.id),
        ));
    }
    call.ctx
        .store
        .close_incident(i.id, Utc::now())
        .await
        .map_err(store_error)?;
    {
        let mut live = call.ctx.live.lock().unwrap_or_else(|p| p.into_inner());
        let key = crate::catalog::ObjKey {
            namespace: i.namespace.clone(),
            name: i.name.clone(),
        };
        if let Some(m) = live.monitors.get_mut(&key) {
            m.tracker.rearm_after_resolve(i.id, Utc::now());
        }
    }
    call.audit(
        "incident",
        &i.id.to_string(),
        "resolved",
        json!({"monitorId": monitor_key(&i.namespace, &i.name)}),
        Some("state: down → resolved (by an operator)".into()),
    )
    .await;
    Ok(json_reply(
        StatusCode::OK,
        &incident_json(&reload(call, i.id).await?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_bidi_and_zero_width_are_refused_naming_the_field() {
        assert!(check_text("message", "line one\nline\ttwo: ünïcödé ✓", 100).is_ok());
        for (text, what) in [
            ("bell \u{7}", "control character (U+0007)"),
            ("nul \u{0}", "control character (U+0000)"),
            ("cr \r", "control character (U+000D)"),
            ("esc \u{1b}[31m", "control character (U+001B)"),
            ("c1 \u{85}", "control character (U+0085)"),
            ("del \u{7f}", "control character (U+007F)"),
            ("rlo \u{202e}gnp.exe", "bidirectional control (U+202E)"),
            ("iso \u{2067}", "bidirectional control (U+2067)"),
            ("zw\u{200b}sp", "zero-width character (U+200B)"),
            ("bom \u{feff}", "zero-width character (U+FEFF)"),
            ("nc \u{ffff}", "noncharacter (U+FFFF)"),
        ] {
            let e = check_text("message", text, 100).err();
            let e = e.unwrap_or_else(|| panic!("{text:?} accepted"));
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(
                e.message.starts_with("message contains") && e.message.contains(what),
                "{text:?}: {}",
                e.message
            );
        }
        let e = check_text("note", &"x".repeat(11), 10).err();
        assert_eq!(
            e.map(|e| e.message),
            Some("note is longer than 10 characters".to_string())
        );
    }
}
