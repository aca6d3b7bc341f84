//! The silences page: `GET /admin/silences` (the catalog's Silences and those created
//! through the API or the console, with what each matches), the create form
//! (`POST /admin/silences`; with `preview=1` it only shows which monitors the silence
//! would match), `GET /admin/silences/preview` (the same list as JSON for console.js) and
//! `POST /admin/silences/{ns}/{name}/expire`. Creating and expiring go through the JSON
//! API ([`Session::api`]): the same guard, checks and audit records as
//! `POST /api/v1/silences` and `DELETE /api/v1/silences/{namespace}/{name}`.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use kubekuma_crds::common::{MonitorSelector, NamePattern};
use serde_json::{Value, json};

use super::text::{json_time as time, path_segment, theme_date};
use super::{Form, Reply, Session, see_other};
use crate::admin::routes::silences::MAX_DURATION_MINUTES;
use crate::admin::routes::{self, RouteId, Verb};
use crate::catalog::selector::MonitorMatcher;
use crate::catalog::{ObjKey, Snapshot};

/// Monitors named in a preview (the count is always given).
pub const PREVIEW_LIMIT: usize = 200;
/// The duration the form proposes, in minutes.
const DEFAULT_MINUTES: i64 = 60;

/// What the create form holds (kept when the page is shown again).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Draft {
    /// The silence's namespace.
    pub namespace: String,
    /// One monitor's name (optional).
    pub monitor: String,
    /// `k=v,k2=v2` (optional).
    pub labels: String,
    /// Minutes, as typed.
    pub duration: String,
    /// Why (optional).
    pub reason: String,
}

impl Draft {
    fn of_form(f: &Form) -> Draft {
        let v = |k: &str| f.get(k).unwrap_or("").trim().to_string();
        Draft {
            namespace: v("namespace"),
            monitor: v("monitor"),
            labels: v("labels"),
            duration: v("duration"),
            reason: f.get("reason").unwrap_or("").to_string(),
        }
    }

    fn of_query(s: &Session<'_>) -> Draft {
        let v = |k: &str| s.r.query_value(k).unwrap_or_default().trim().to_string();
        Draft {
            namespace: v("namespace"),
            monitor: v("monitor"),
            labels: v("labels"),
            duration: String::new(),
            reason: String::new(),
        }
    }
}

/// `k=v,k2=v2` as labels: 400-style message naming the pair that is not `key=value`.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    crate::admin::routes::monitors::label_pairs(text)
        .map(|pairs| pairs.into_iter().collect())
        .map_err(|pair| format!("labels: {:?} is not key=value", pair.trim()))
}

/// The selector of a draft: the monitor by exact name and the labels, both optional
/// (neither: every monitor of the namespace).
pub fn selector_of(d: &Draft) -> Result<Option<MonitorSelector>, String> {
    let labels = parse_labels(&d.labels)?;
    if d.monitor.is_empty() && labels.is_empty() {
        return Ok(None);
    }
    Ok(Some(MonitorSelector {
        match_labels: labels,
        match_names: if d.monitor.is_empty() {
            Vec::new()
        } else {
            vec![NamePattern {
                pattern: d.monitor.clone(),
                regex: None,
            }]
        },
        ..MonitorSelector::default()
    }))
}

/// The monitors of `snapshot` that `selector` of a silence in `namespace` matches and
/// `sees` lets the reader see, in key order.
pub fn matched(
    snapshot: &Snapshot,
    selector: Option<&MonitorSelector>,
    namespace: &str,
    sees: &dyn Fn(&str) -> bool,
) -> Vec<ObjKey> {
    let m = MonitorMatcher::new(selector, namespace);
    snapshot
        .monitors
        .iter()
        .filter(|(k, mon)| sees(&k.namespace) && m.matches(k, mon))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The namespaces a reader may create silences in: those of the monitors it sees (and
/// its own, when it is confined to it).
fn namespaces(s: &Session<'_>, snapshot: &Snapshot) -> Vec<String> {
    let mut out: BTreeSet<String> = snapshot
        .monitors
        .keys()
        .filter(|k| s.principal.sees_namespace(&k.namespace))
        .map(|k| k.namespace.clone())
        .collect();
    if !s.principal.all_namespaces {
        out.insert(s.principal.namespace.clone());
    }
    out.into_iter().collect()
}

/// The preview of a draft: the matched monitors, or why there is none.
fn preview_of(s: &Session<'_>, d: &Draft) -> Result<Vec<ObjKey>, String> {
    if d.namespace.is_empty() {
        return Err("choose a namespace".into());
    }
    if !s.principal.sees_namespace(&d.namespace) {
        return Err(format!(
            "silences in namespace {} are not yours to create",
            d.namespace
        ));
    }
    let selector = selector_of(d)?;
    let snapshot = s.ctx().catalog.borrow().clone();
    Ok(matched(&snapshot, selector.as_ref(), &d.namespace, &|ns| {
        s.principal.sees_namespace(ns)
    }))
}

/// A silence's selector in words (`every monitor of prod`, `name api, labels tier=1`).
fn selector_text(sel: Option<&MonitorSelector>, namespace: &str) -> String {
    let Some(sel) = sel else {
        return format!("every monitor of {namespace}");
    };
    let mut parts = Vec::new();
    if !sel.match_namespaces.is_empty() {
        parts.push(format!("namespaces {}", sel.match_namespaces.join(", ")));
    }
    if !sel.match_names.is_empty() {
        let names: Vec<String> = sel
            .match_names
            .iter()
            .map(|n| {
                if n.regex == Some(true) {
                    format!("/{}/", n.pattern)
                } else {
                    n.pattern.clone()
                }
            })
            .collect();
        parts.push(format!("name {}", names.join(" or ")));
    }
    if !sel.match_labels.is_empty() {
        let l: Vec<String> = sel
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.push(format!("labels {}", l.join(",")));
    }
    if !sel.match_tags.is_empty() {
        parts.push(format!("tags {}", sel.match_tags.join(" or ")));
    }
    if parts.is_empty() {
        format!("every monitor of {namespace}")
    } else {
        parts.join("; ")
    }
}

/// The rows of the list, from the API's silences.
fn rows(s: &Session<'_>, items: &[Value], snapshot: &Snapshot, now: DateTime<Utc>) -> Vec<Value> {
    items
        .iter()
        .map(|v| {
            let ns = v.get("namespace").and_then(Value::as_str).unwrap_or("");
            let name = v.get("name").and_then(Value::as_str).unwrap_or("");
            let selector: Option<MonitorSelector> = v
                .get("selector")
                .filter(|s| !s.is_null())
                .and_then(|s| serde_json::from_value(s.clone()).ok());
            let count = matched(snapshot, selector.as_ref(), ns, &|n| {
                s.principal.sees_namespace(n)
            })
            .len();
            let starts = time(v, "startsAt");
            let ends = time(v, "endsAt");
            let expired = time(v, "expiredAt");
            let active = v.get("active") == Some(&Value::Bool(true));
            let source = v.get("source").and_then(Value::as_str).unwrap_or("");
            let state = if active {
                "active"
            } else if expired.is_some() {
                "expired"
            } else if starts.is_some_and(|t| t > now) {
                "scheduled"
            } else {
                "ended"
            };
            json!({
                "key": format!("{ns}/{name}"),
                "ns": ns,
                "name": name,
                "source": source,
                "state": state,
                "startsText": starts.map(theme_date),
                "starts": starts.map(|t| t.to_rfc3339()),
                "endsText": expired.or(ends).map(theme_date),
                "ends": expired.or(ends).map(|t| t.to_rfc3339()),
                "reason": v.get("reason").and_then(Value::as_str),
                "createdBy": v.get("createdBy").and_then(Value::as_str),
                "selector": selector_text(selector.as_ref(), ns),
                "matches": count,
                "expirable": source == "api" && (active || state == "scheduled"),
                "expireHref": format!(
                    "/admin/silences/{}/{}/expire",
                    path_segment(ns),
                    path_segment(name)
                ),
            })
        })
        .collect()
}

/// What the page shows besides the list.
#[derive(Default)]
struct Extra {
    draft: Draft,
    error: Option<String>,
    preview: Option<Result<Vec<ObjKey>, String>>,
}

async fn render(s: &Session<'_>, status: StatusCode, extra: Extra) -> Reply {
    let a = s.api(Method::GET, "/api/v1/silences", None).await;
    if !a.ok() {
        return s.error_page(a.status, "Silences", &a.message());
    }
    let items = a
        .body
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let snapshot = s.ctx().catalog.borrow().clone();
    let now = Utc::now();
    let list = rows(s, &items, &snapshot, now);
    let (active, past): (Vec<Value>, Vec<Value>) = list
        .into_iter()
        .partition(|r| matches!(r["state"].as_str(), Some("active" | "scheduled")));
    let mut draft = extra.draft;
    if draft.duration.is_empty() {
        draft.duration = DEFAULT_MINUTES.to_string();
    }
    let (preview, preview_error) = match extra.preview {
        Some(Ok(keys)) => (Some(keys), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let preview_count = preview.as_ref().map(Vec::len);
    let preview_keys: Option<Vec<String>> = preview.map(|k| {
        k.iter()
            .take(PREVIEW_LIMIT)
            .map(ToString::to_string)
            .collect()
    });
    let read_only = snapshot.effective.git_ops_read_only;
    s.render(
        "silences.html",
        status,
        super::ser(json!({
            "active": active,
            "past": past,
            "namespaces": namespaces(s, &snapshot),
            "draft": draft,
            "error": extra.error,
            "preview": preview_keys,
            "preview_count": preview_count,
            "preview_error": preview_error,
            "preview_limit": PREVIEW_LIMIT,
            "max_minutes": MAX_DURATION_MINUTES,
            "git_ops_read_only": read_only,
        })),
    )
}

/// `GET /admin/silences`.
pub async fn page(s: &Session<'_>) -> Reply {
    render(s, StatusCode::OK, Extra::default()).await
}

/// `GET /admin/silences/preview?namespace=&monitor=&labels=`: the keys of the monitors
/// the silence would match (a JSON list), or 400 `{"error": {"message"}}`. Needs the
/// API's guard for reading silences.
pub async fn preview(s: &Session<'_>) -> Reply {
    if let Some(route) = routes::route_of(RouteId::Silences, Verb::Get)
        && let Err(e) = routes::role_allows(route, &s.principal)
    {
        return e.into_reply();
    }
    match preview_of(s, &Draft::of_query(s)) {
        Ok(keys) => {
            let list: Vec<String> = keys.iter().map(ToString::to_string).collect();
            super::json_reply(&list)
        }
        Err(e) => crate::admin::error::ApiError::bad_request(e).into_reply(),
    }
}

/// `POST /admin/silences`: with `preview=1` the page lists the monitors the silence
/// would match; otherwise the silence is created through the API (a silence that would
/// match no monitor is refused here: it is a typo more often than not).
pub async fn create(s: &Session<'_>) -> Reply {
    let form = match s.form() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let draft = Draft::of_form(&form);
    let preview = preview_of(s, &draft);
    if form.get("preview").is_some() {
        return render(
            s,
            StatusCode::OK,
            Extra {
                draft,
                preview: Some(preview),
                ..Extra::default()
            },
        )
        .await;
    }
    let refuse = |error: String, preview| Extra {
        draft: draft.clone(),
        error: Some(error),
        preview,
    };
    let selector = match selector_of(&draft) {
        Ok(sel) => sel,
        Err(e) => {
            return render(s, StatusCode::BAD_REQUEST, refuse(e, None)).await;
        }
    };
    if let Ok(keys) = &preview
        && keys.is_empty()
        && !draft.namespace.is_empty()
    {
        let e =
            "This silence would match no monitor: check the monitor's name and labels.".to_string();
        return render(s, StatusCode::BAD_REQUEST, refuse(e, Some(preview.clone()))).await;
    }
    let minutes = match draft.duration.parse::<i64>() {
        Ok(m) => m,
        Err(_) => {
            let e = format!(
                "duration must be a whole number of minutes from 1 to {MAX_DURATION_MINUTES}"
            );
            return render(s, StatusCode::BAD_REQUEST, refuse(e, None)).await;
        }
    };
    let mut body = json!({"namespace": draft.namespace, "durationMinutes": minutes});
    if !draft.reason.trim().is_empty() {
        body["reason"] = json!(draft.reason);
    }
    if let Some(sel) = &selector {
        body["selector"] = serde_json::to_value(sel).unwrap_or(Value::Null);
    }
    let a = s.api(Method::POST, "/api/v1/silences", Some(body)).await;
    if a.ok() {
        return see_other("/admin/silences?done=silence_created");
    }
    render(s, a.status, refuse(a.message(), Some(preview))).await
}

/// `POST /admin/silences/{ns}/{name}/expire`.
pub async fn expire(s: &Session<'_>, ns: &str, name: &str) -> Reply {
    if let Err(r) = s.form() {
        return r;
    }
    let path = format!(
        "/api/v1/silences/{}/{}",
        path_segment(ns),
        path_segment(name)
    );
    let a = s.api(Method::DELETE, &path, None).await;
    if a.ok() {
        return see_other("/admin/silences?done=silence_expired");
    }
    render(
        s,
        a.status,
        Extra {
            error: Some(a.message()),
            ..Extra::default()
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_name_the_bad_pair() {
        let l = parse_labels(" tier=critical, team = a ,,").unwrap_or_default();
        assert_eq!(
            l.into_iter().collect::<Vec<_>>(),
            [
                ("team".to_string(), "a".to_string()),
                ("tier".to_string(), "critical".to_string())
            ]
        );
        assert_eq!(
            parse_labels("tier=1,oops"),
            Err("labels: \"oops\" is not key=value".to_string())
        );
        assert!(parse_labels("=x").is_err());
    }

    #[test]
    fn selectors_of_drafts() {
        let d = Draft {
            namespace: "prod".into(),
            ..Draft::default()
        };
        assert_eq!(selector_of(&d), Ok(None));
        let d = Draft {
            namespace: "prod".into(),
            monitor: "api".into(),
            labels: "tier=1".into(),
            ..Draft::default()
        };
        let sel = selector_of(&d).ok().flatten().unwrap_or_default();
        assert_eq!(sel.match_names[0].pattern, "api");
        assert_eq!(sel.match_labels["tier"], "1");
        assert!(sel.match_namespaces.is_empty());
        assert_eq!(selector_text(Some(&sel), "prod"), "name api; labels tier=1");
        assert_eq!(selector_text(None, "prod"), "every monitor of prod");
    }
}
