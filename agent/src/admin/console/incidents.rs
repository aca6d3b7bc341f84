//! The incident pages: `GET /admin/incidents` (open ones, then the recent resolved ones),
//! `GET /admin/incidents/{id}` (one incident, its public updates, and the forms to
//! acknowledge, post an update and resolve), the forms' POSTs, and
//! `GET /admin/incidents/{id}/preview?message=` (the update as the status page will show
//! it, for console.js). Lists and every change go through the JSON API
//! ([`Session::api`]): the same guard, checks and audit records as
//! `POST /api/v1/incidents/{id}/…`.

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use kubekuma_crds::results::Incident;
use serde_json::{Value, json};

use super::text::{path_segment, theme_date};
use super::{Form, Reply, Session, see_other};
use crate::admin::routes::incidents::{MAX_UPDATE_CHARS, check_text};
use crate::admin::routes::{self, RouteId, Verb};

/// Open incidents listed (the API's largest page).
const OPEN_LIMIT: usize = 500;
/// Resolved incidents listed.
const RECENT_LIMIT: usize = 50;

/// A time as RFC 3339 (seconds, `Z`), as the site's `datetime` attributes carry it.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `open`, `acknowledged` or `resolved`.
fn status_of(ended: bool, acknowledged: bool) -> &'static str {
    match (ended, acknowledged) {
        (true, _) => "resolved",
        (false, true) => "acknowledged",
        (false, false) => "open",
    }
}

/// A row of the list, from the API's incident JSON.
fn row(i: &Value, now: DateTime<Utc>) -> Value {
    let time = |k: &str| {
        i.get(k)
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let started = time("startedAt");
    let ended = time("endedAt");
    let monitor = i.get("monitorId").and_then(Value::as_str).unwrap_or("");
    let (ns, name) = monitor.split_once('/').unwrap_or(("", monitor));
    let duration = match (started, ended) {
        (Some(s), Some(e)) => duration_text((e - s).num_seconds()),
        (Some(s), None) => format!("{} so far", duration_text((now - s).num_seconds())),
        _ => String::new(),
    };
    json!({
        "id": i.get("id"),
        "monitor": monitor,
        "ns": ns,
        "name": name,
        "status": status_of(ended.is_some(), i.get("acknowledged") == Some(&Value::Bool(true))),
        "reason": i.get("reason"),
        "suppressed": i.get("suppressed") == Some(&Value::Bool(true)),
        "started": started.map(rfc3339),
        "startedText": started.map(theme_date),
        "duration": duration,
        "updates": i.get("updates").and_then(Value::as_array).map_or(0, Vec::len),
    })
}

/// `1 h 5 min`, `3 min`, `42 s`, `2 d 3 h`.
pub fn duration_text(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => {
            let m = (s % 3600) / 60;
            if m == 0 {
                format!("{} h", s / 3600)
            } else {
                format!("{} h {m} min", s / 3600)
            }
        }
        _ => {
            let h = (s % 86400) / 3600;
            if h == 0 {
                format!("{} d", s / 86400)
            } else {
                format!("{} d {h} h", s / 86400)
            }
        }
    }
}

/// `GET /admin/incidents`: open incidents (newest first), then the latest resolved ones.
pub async fn list(s: &Session<'_>) -> Reply {
    let open = s
        .api(
            Method::GET,
            &format!("/api/v1/incidents?state=open&limit={OPEN_LIMIT}"),
            None,
        )
        .await;
    if !open.ok() {
        return s.error_page(open.status, "Incidents", &open.message());
    }
    let recent = s
        .api(
            Method::GET,
            &format!("/api/v1/incidents?state=resolved&limit={RECENT_LIMIT}"),
            None,
        )
        .await;
    if !recent.ok() {
        return s.error_page(recent.status, "Incidents", &recent.message());
    }
    let now = Utc::now();
    let rows = |v: &Value| -> Vec<Value> {
        v.as_array()
            .map(|a| a.iter().map(|i| row(i, now)).collect())
            .unwrap_or_default()
    };
    s.render(
        "incidents.html",
        StatusCode::OK,
        super::ser(json!({
            "open": rows(&open.body),
            "recent": rows(&recent.body),
            "recent_limit": RECENT_LIMIT,
        })),
    )
}

/// The incident `raw_id` if the principal may read incidents and sees its namespace
/// (the API's guard of `GET /api/v1/incidents` and its scoping); otherwise the page to
/// answer with (403, 404).
async fn visible(s: &Session<'_>, raw_id: &str) -> Result<Incident, Reply> {
    if let Some(route) = routes::route_of(RouteId::Incidents, Verb::Get)
        && let Err(e) = routes::role_allows(route, &s.principal)
    {
        return Err(s.forbidden(&e.message));
    }
    let Ok(id) = raw_id.parse::<i64>() else {
        return Err(s.not_found());
    };
    match s.ctx().store.incident(id).await {
        Ok(Some(i)) if s.principal.sees_namespace(&i.namespace) => Ok(i),
        Ok(_) => Err(s.not_found()),
        Err(e) => {
            tracing::error!(error = %e, "console: incident not read");
            Err(s.error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Incident",
                "The database could not be read; the agent's log says why.",
            ))
        }
    }
}

/// The incident's public updates as the status page lists them (newest first), with
/// `draft` (an update not yet posted) on top when given.
fn public_updates(i: &Incident, draft: Option<&str>, now: DateTime<Utc>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    if let Some(d) = draft {
        out.push(
            json!({"at": rfc3339(now), "atText": theme_date(now), "message": d, "draft": true}),
        );
    }
    out.extend(i.updates.iter().rev().map(|u| {
        json!({"at": rfc3339(u.at), "atText": theme_date(u.at), "message": u.message, "draft": false})
    }));
    out
}

/// What the status page shows of the incident, with `draft` on top: the default theme's
/// markup (`article.incident` with `ol.updates`).
fn preview_of(i: &Incident, draft: Option<&str>, now: DateTime<Utc>) -> Value {
    let title = match i.ended_at {
        None => format!("{} is down", i.name),
        Some(_) => format!("{} was down", i.name),
    };
    json!({
        "title": title,
        "started": rfc3339(i.started_at),
        "startedText": theme_date(i.started_at),
        "ended": i.ended_at.is_some(),
        "duration": i.ended_at.map(|e| duration_text((e - i.started_at).num_seconds())),
        "reason": i.reason.map(|r| r.as_str()),
        "updates": public_updates(i, draft, now),
    })
}

/// Check a draft update as the API will: the message trimmed, not empty, at most
/// [`MAX_UPDATE_CHARS`] characters, no control, zero-width or bidirectional characters.
fn check_draft(message: &str) -> Result<String, String> {
    check_text("message", message, usize::MAX).map_err(|e| e.message)?;
    let m = message.trim();
    if m.is_empty() {
        return Err("message must not be empty".into());
    }
    check_text("message", m, MAX_UPDATE_CHARS).map_err(|e| e.message)?;
    Ok(m.to_string())
}

/// What the detail page shows besides the incident: an error, the message typed so far,
/// a preview of it.
#[derive(Default)]
struct Extra {
    error: Option<String>,
    message: String,
    resolve_message: String,
    preview: bool,
}

fn detail(s: &Session<'_>, i: &Incident, status: StatusCode, extra: Extra) -> Reply {
    let now = Utc::now();
    let draft = if extra.preview {
        check_draft(&extra.message).ok()
    } else {
        None
    };
    let preview_error = if extra.preview {
        check_draft(&extra.message).err()
    } else {
        None
    };
    let monitor_known = s
        .ctx()
        .catalog
        .borrow()
        .monitors
        .contains_key(&crate::catalog::ObjKey::new(&i.namespace, &i.name));
    s.render(
        "incident.html",
        status,
        super::ser(json!({
            "i": json!({
                "id": i.id,
                "ns": i.namespace,
                "name": i.name,
                "monitor": format!("{}/{}", i.namespace, i.name),
                "monitorKnown": monitor_known,
                "monitorHref": format!(
                    "/admin/monitors/{}/{}",
                    path_segment(&i.namespace),
                    path_segment(&i.name)
                ),
                "status": status_of(i.ended_at.is_some(), i.acknowledged),
                "open": i.ended_at.is_none(),
                "acknowledged": i.acknowledged,
                "started": rfc3339(i.started_at),
                "startedText": theme_date(i.started_at),
                "ended": i.ended_at.map(rfc3339),
                "endedText": i.ended_at.map(theme_date),
                "duration": duration_text((i.ended_at.unwrap_or(now) - i.started_at).num_seconds()),
                "reason": i.reason.map(|r| r.as_str()),
                "suppressed": i.suppressed,
                "suppressReason": i.suppress_reason,
            }),
            "updates": public_updates(i, None, now),
            "preview": preview_of(i, draft.as_deref(), now),
            "preview_shown": draft.is_some(),
            "preview_error": preview_error,
            "error": extra.error,
            "message": extra.message,
            "resolve_message": extra.resolve_message,
            "max_chars": MAX_UPDATE_CHARS,
        })),
    )
}

/// `GET /admin/incidents/{id}`.
pub async fn page(s: &Session<'_>, id: &str) -> Reply {
    match visible(s, id).await {
        Ok(i) => detail(s, &i, StatusCode::OK, Extra::default()),
        Err(r) => r,
    }
}

/// `GET /admin/incidents/{id}/preview?message=`: `{html}` (the status page's markup of
/// the incident with the draft on top) or `{error}` naming what the API would refuse.
pub async fn preview(s: &Session<'_>, id: &str) -> Reply {
    let i = match visible(s, id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let message = s.r.query_value("message").unwrap_or_default();
    let now = Utc::now();
    match check_draft(&message) {
        Ok(m) => {
            let html = super::render_fragment(
                "update_preview.html",
                json!({"p": preview_of(&i, Some(&m), now)}),
            );
            match html {
                Some(html) => super::json_reply(&json!({"html": html})),
                None => super::json_reply(&json!({"error": "the preview could not be rendered"})),
            }
        }
        Err(e) => super::json_reply(&json!({"error": e})),
    }
}

/// The API's path for an action on incident `id`.
fn api_path(id: i64, action: &str) -> String {
    format!("/api/v1/incidents/{id}/{action}")
}

fn done(id: i64, code: &str) -> Reply {
    see_other(&format!("/admin/incidents/{id}?done={code}"))
}

/// The form of a POST, and the incident it acts on.
async fn start(s: &Session<'_>, id: &str) -> Result<(Form, Incident), Reply> {
    let form = s.form()?;
    let i = visible(s, id).await?;
    Ok((form, i))
}

/// `POST /admin/incidents/{id}/acknowledge` (optional `note`, kept in the audit record).
pub async fn acknowledge(s: &Session<'_>, id: &str) -> Reply {
    let (form, i) = match start(s, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let body = form.text("note").map(|n| json!({"note": n}));
    let a = s
        .api(Method::POST, &api_path(i.id, "acknowledge"), body)
        .await;
    if a.ok() {
        return done(i.id, "acknowledged");
    }
    detail(
        s,
        &i,
        a.status,
        Extra {
            error: Some(a.message()),
            ..Extra::default()
        },
    )
}

/// `POST /admin/incidents/{id}/updates` with `message`; with `preview=1` the page shows
/// the update as the status page will (nothing is posted).
pub async fn update(s: &Session<'_>, id: &str) -> Reply {
    let (form, i) = match start(s, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let message = form.get("message").unwrap_or("").to_string();
    if form.get("preview").is_some() {
        return detail(
            s,
            &i,
            StatusCode::OK,
            Extra {
                message,
                preview: true,
                ..Extra::default()
            },
        );
    }
    let a = s
        .api(
            Method::POST,
            &api_path(i.id, "updates"),
            Some(json!({"message": message})),
        )
        .await;
    if a.ok() {
        return done(i.id, "updated");
    }
    detail(
        s,
        &i,
        a.status,
        Extra {
            error: Some(a.message()),
            message,
            ..Extra::default()
        },
    )
}

/// `POST /admin/incidents/{id}/resolve`, with an optional closing `message` (posted as a
/// public update first; when the API refuses it, nothing is resolved).
pub async fn resolve(s: &Session<'_>, id: &str) -> Reply {
    let (form, i) = match start(s, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let message = form.get("message").unwrap_or("").to_string();
    let failed = |a: super::ApiAnswer| {
        detail(
            s,
            &i,
            a.status,
            Extra {
                error: Some(a.message()),
                resolve_message: message.clone(),
                ..Extra::default()
            },
        )
    };
    if i.ended_at.is_none() && !message.trim().is_empty() {
        let a = s
            .api(
                Method::POST,
                &api_path(i.id, "updates"),
                Some(json!({"message": message})),
            )
            .await;
        if !a.ok() {
            return failed(a);
        }
    }
    let a = s.api(Method::POST, &api_path(i.id, "resolve"), None).await;
    if a.ok() {
        return done(i.id, "resolved");
    }
    failed(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_dates() {
        assert_eq!(duration_text(42), "42 s");
        assert_eq!(duration_text(180), "3 min");
        assert_eq!(duration_text(3900), "1 h 5 min");
        assert_eq!(duration_text(7200), "2 h");
        assert_eq!(duration_text(2 * 86400 + 3 * 3600), "2 d 3 h");
        let t = crate::catalog::schedule_expr::utc(2026, 12, 7, 21, 4);
        assert_eq!(theme_date(t), "Dec 7, 2026 21:04 UTC");
    }

    #[test]
    fn drafts_are_checked_like_the_api() {
        assert_eq!(check_draft("  all good \n"), Ok("all good".to_string()));
        assert_eq!(
            check_draft("   "),
            Err("message must not be empty".to_string())
        );
        assert!(
            check_draft("rlo \u{202e}x")
                .err()
                .is_some_and(|e| e.contains("bidirectional"))
        );
        assert!(check_draft(&"x".repeat(MAX_UPDATE_CHARS + 1)).is_err());
    }

    #[test]
    fn status_words() {
        assert_eq!(status_of(false, false), "open");
        assert_eq!(status_of(false, true), "acknowledged");
        assert_eq!(status_of(true, true), "resolved");
    }
}

#[cfg(test)]
mod rendering {
    #[test]
    fn the_incident_page_renders_with_a_preview() {
        let base = serde_json::json!({
            "csrf": "t", "user": {"name": "a", "role": "admin", "anonymous": false},
            "can": {"ack": true, "silence": true, "test_send": true, "audit": true},
            "flash": null, "section": "incidents", "assets": {"css": "c", "js": "j"},
        });
        let i = crate::catalog::schedule_expr::utc(2026, 1, 1, 0, 0);
        let inc = kubekuma_crds::results::Incident {
            id: 1,
            namespace: "prod".into(),
            name: "api".into(),
            started_at: i,
            ended_at: None,
            duration_seconds: None,
            reason: None,
            suppressed: false,
            suppress_reason: None,
            acknowledged: false,
            updates: vec![],
        };
        let mut page = serde_json::json!({
            "i": {"id": 1, "ns": "prod", "name": "api", "monitor": "prod/api", "monitorKnown": true,
                  "monitorHref": "/admin/monitors/prod/api", "status": "open", "open": true, "acknowledged": false, "started": "x", "startedText": "x",
                  "ended": null, "endedText": null, "duration": "1 s", "reason": null, "suppressed": false, "suppressReason": null},
            "updates": [], "preview": super::preview_of(&inc, Some("m"), i), "preview_shown": true,
            "preview_error": null, "error": null, "message": "", "resolve_message": "", "max_chars": 4000,
        });
        for (k, v) in base.as_object().unwrap() {
            page[k] = v.clone();
        }
        let t = super::super::ENV.get_template("incident.html").unwrap();
        if let Err(e) = t.render(super::super::ser(&page)) {
            panic!("{e:#}");
        }
    }
}
