//! The notifications page (`GET /admin/notifications`): every notification provider in
//! the namespaces the reader sees, each with its recent deliveries (time, event, monitor,
//! outcome, error) from `GET /api/v1/deliveries`, and for admins a "Send test" form
//! (`POST /admin/notifications/{ns}/{name}/test`, through
//! `POST /api/v1/providers/{namespace}/{name}/test`: the same guard and audit record).
//! Errors are shown as stored: providers scrub secrets before an error leaves them.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::text::{json_time as time, path_segment, theme_date};
use super::{Reply, Session, see_other};

/// Deliveries listed per provider.
pub const PER_PROVIDER: usize = 10;

/// A delivery row from the API's JSON.
fn row(d: &Value) -> Value {
    let at = time(d, "lastAttemptAt").or_else(|| time(d, "createdAt"));
    let status = d.get("status").and_then(Value::as_str).unwrap_or("");
    json!({
        "id": d.get("id"),
        "at": at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "atText": at.map(theme_date),
        "event": d.get("event"),
        "monitor": d.get("monitorId"),
        "status": status,
        "outcome": match status {
            "sent" => "sent",
            "failed" => "failed",
            "pending" => "pending",
            "deduped" => "deduplicated",
            "rate_limited" => "rate limited",
            other => other,
        },
        "attempts": d.get("attempts"),
        "error": d.get("error"),
        "detail": d.get("detail"),
    })
}

/// What the page shows besides the providers: an error, the provider it is about.
#[derive(Default)]
struct Extra {
    error: Option<String>,
    about: Option<String>,
}

async fn render(s: &Session<'_>, status: StatusCode, extra: Extra) -> Reply {
    let snapshot = s.ctx().catalog.borrow().clone();
    let mut providers = Vec::new();
    for (key, p) in &snapshot.providers {
        if !s.principal.sees_namespace(&key.namespace) {
            continue;
        }
        let a = s
            .api(
                Method::GET,
                &format!(
                    "/api/v1/deliveries?provider={}&limit={PER_PROVIDER}",
                    path_segment(&key.to_string())
                ),
                None,
            )
            .await;
        if !a.ok() {
            return s.error_page(a.status, "Notifications", &a.message());
        }
        let rows: Vec<Value> = a
            .body
            .get("items")
            .and_then(Value::as_array)
            .map(|items| items.iter().map(row).collect())
            .unwrap_or_default();
        let key_text = key.to_string();
        providers.push(json!({
            "key": key_text,
            "ns": key.namespace,
            "name": key.name,
            "anchor": format!("provider-{}-{}", key.namespace, key.name),
            "testHref": format!(
                "/admin/notifications/{}/{}/test",
                path_segment(&key.namespace),
                path_segment(&key.name)
            ),
            "type": p.spec.type_.to_string(),
            "valid": snapshot.provider_plans.contains_key(key),
            "deliveries": rows,
            "error": (extra.about.as_deref() == Some(key_text.as_str())).then(|| extra.error.clone()).flatten(),
        }));
    }
    let general_error = match &extra.about {
        Some(_) => None,
        None => extra.error.clone(),
    };
    s.render(
        "notifications.html",
        status,
        super::ser(json!({
            "providers": providers,
            "error": general_error,
            "per_provider": PER_PROVIDER,
        })),
    )
}

/// `GET /admin/notifications`.
pub async fn page(s: &Session<'_>) -> Reply {
    render(s, StatusCode::OK, Extra::default()).await
}

/// `POST /admin/notifications/{ns}/{name}/test`: a test message through the provider
/// (admins; the API refuses others with 403, shown as the page's error).
pub async fn test(s: &Session<'_>, ns: &str, name: &str) -> Reply {
    if let Err(r) = s.form() {
        return r;
    }
    let path = format!(
        "/api/v1/providers/{}/{}/test",
        path_segment(ns),
        path_segment(name)
    );
    let a = s.api(Method::POST, &path, Some(json!({}))).await;
    if a.ok() {
        return see_other(&format!(
            "/admin/notifications?done=test_sent#provider-{ns}-{name}"
        ));
    }
    let key = format!("{ns}/{name}");
    let known = s
        .ctx()
        .catalog
        .borrow()
        .providers
        .contains_key(&crate::catalog::ObjKey::new(ns, name));
    render(
        s,
        a.status,
        Extra {
            error: Some(a.message()),
            about: known.then_some(key),
        },
    )
    .await
}
