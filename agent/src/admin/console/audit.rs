//! The audit log page (`GET /admin/audit?actor=&action=&result=&page=`): who changed
//! what, newest first, 50 a page, filtered by actor, action and result. Admins of the
//! home namespace only, like `GET /api/v1/audit` it reads through (others get the 403
//! page with the API's reason).

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::text::theme_date;
use super::{Reply, Session};

/// Events a page.
pub const PAGE: usize = 50;

/// Actions the filter offers (any other can be typed in the URL).
const ACTIONS: &[&str] = &[
    "login",
    "login_failed",
    "logout",
    "acknowledged",
    "updated",
    "resolved",
    "created",
    "expired",
    "test_sent",
    "test_failed",
];

fn query(actor: &str, action: &str, result: &str, page: usize) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("actor", actor), ("action", action), ("result", result)] {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    if page > 1 {
        q.append_pair("page", &page.to_string());
    }
    q.finish()
}

fn row(e: &Value) -> Value {
    let at = e
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    let details = e
        .get("details")
        .filter(|d| !d.is_null())
        .map(Value::to_string);
    json!({
        "id": e.get("id"),
        "at": at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "atText": at.map(theme_date),
        "actor": e.get("actor").and_then(Value::as_str).unwrap_or("anonymous"),
        "action": e.get("action"),
        "result": e.get("result"),
        "resource": format!(
            "{} {}",
            e.get("resourceType").and_then(Value::as_str).unwrap_or(""),
            e.get("resourceKey").and_then(Value::as_str).unwrap_or("")
        ),
        "summary": e.get("summary"),
        "details": details,
    })
}

/// `GET /admin/audit`.
pub async fn page(s: &Session<'_>) -> Reply {
    let v = |k: &str| s.r.query_value(k).unwrap_or_default().trim().to_string();
    let (actor, action, result) = (v("actor"), v("action"), v("result"));
    let page = match v("page") {
        p if p.is_empty() => 1,
        p => match p.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return s.error_page(
                    StatusCode::BAD_REQUEST,
                    "Audit log",
                    "page must be a whole number from 1",
                );
            }
        },
    };
    let offset = (page - 1).saturating_mul(PAGE);
    let api_query = {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, val) in [("actor", &actor), ("action", &action), ("result", &result)] {
            if !val.is_empty() {
                q.append_pair(k, val);
            }
        }
        q.append_pair("limit", &PAGE.to_string());
        q.append_pair("offset", &offset.to_string());
        q.finish()
    };
    let a = s
        .api(Method::GET, &format!("/api/v1/audit?{api_query}"), None)
        .await;
    if a.status == StatusCode::FORBIDDEN {
        return s.forbidden(&a.message());
    }
    if !a.ok() {
        return s.error_page(a.status, "Audit log", &a.message());
    }
    let rows: Vec<Value> = a
        .body
        .get("items")
        .and_then(Value::as_array)
        .map(|items| items.iter().map(row).collect())
        .unwrap_or_default();
    let more = a.body.get("more") == Some(&Value::Bool(true));
    let href = |p: usize| {
        let q = query(&actor, &action, &result, p);
        if q.is_empty() {
            "/admin/audit".to_string()
        } else {
            format!("/admin/audit?{q}")
        }
    };
    s.render(
        "audit.html",
        StatusCode::OK,
        super::ser(json!({
            "rows": rows,
            "filter": json!({"actor": actor, "action": action, "result": result}),
            "actions": ACTIONS,
            "page": page,
            "prev_href": (page > 1).then(|| href(page - 1)),
            "next_href": more.then(|| href(page + 1)),
        })),
    )
}
