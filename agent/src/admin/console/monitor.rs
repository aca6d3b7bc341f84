//! The monitor detail page (`GET /admin/monitors/{ns}/{name}`): its state, uptime and
//! certificate, recent heartbeats with a latency chart (inline SVG), its incidents of the
//! last 90 days (linking to the incident pages), the status pages and notification
//! policies that include it, and its spec. Monitor, status, uptime and heartbeats come
//! from the API's `GET /api/v1/monitors/{namespace}/{name}` ([`super::Session::api`]),
//! so scoping and the redaction of credentials (`***`) are the API's.

use chrono::{DateTime, Duration, Utc};
use http::{Method, StatusCode};
use minijinja::context;
use serde_json::Value;

use super::overview::{ago, console_state};
use super::{Reply, Session, ser};
use crate::catalog::ObjKey;
use crate::catalog::selector::MonitorMatcher;

/// Heartbeats listed and charted.
pub const HEARTBEATS: usize = 100;

/// Heartbeats listed in the table (the newest; the chart draws all of [`HEARTBEATS`]).
pub const TABLE_ROWS: usize = 30;

/// The latency chart's box.
const CHART_W: f64 = 600.0;
const CHART_H: f64 = 160.0;

/// The latency chart of heartbeats (newest first): points of the latencies, oldest left,
/// and bands where the monitor was down.
fn chart(beats: &[Value]) -> Option<Value> {
    let oldest_first: Vec<&Value> = beats.iter().rev().collect();
    let lat: Vec<Option<f64>> = oldest_first
        .iter()
        .map(|h| h.get("latencyMs").and_then(Value::as_f64))
        .collect();
    let known: Vec<f64> = lat.iter().flatten().copied().collect();
    if known.is_empty() {
        return None;
    }
    let max = known.iter().copied().fold(0.0_f64, f64::max).max(1.0);
    let min = known.iter().copied().fold(f64::INFINITY, f64::min);
    let avg = known.iter().sum::<f64>() / known.len() as f64;
    let n = oldest_first.len();
    let step = if n > 1 { CHART_W / (n - 1) as f64 } else { 0.0 };
    let y_of = |l: f64| 4.0 + (CHART_H - 8.0) * (1.0 - l / max);
    let mut points = Vec::new();
    let mut down = Vec::new();
    for (i, (h, l)) in oldest_first.iter().zip(&lat).enumerate() {
        let x = i as f64 * step;
        if let Some(l) = l {
            points.push(format!("{x:.1},{:.1}", y_of(*l)));
        }
        if h.get("state").and_then(Value::as_str) == Some("down") {
            let w = step.max(2.0);
            down.push(serde_json::json!({
                "x": format!("{:.1}", (x - w / 2.0).max(0.0)),
                "w": format!("{w:.1}"),
            }));
        }
    }
    if let [only] = known.as_slice() {
        let y = y_of(*only);
        points = vec![format!("0.0,{y:.1}"), format!("{CHART_W:.1},{y:.1}")];
    }
    let round = |v: f64| (v * 10.0).round() / 10.0;
    Some(serde_json::json!({
        "width": CHART_W,
        "height": CHART_H,
        "points": points.join(" "),
        "count": known.len(),
        "min": round(min),
        "max": round(max),
        "avg": round(avg),
        "down": down,
    }))
}

/// A latency for people: one decimal under 10 ms, whole milliseconds above.
fn latency_text(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        Some(ms) if ms < 10.0 => format!("{ms:.1} ms"),
        Some(ms) => format!("{ms:.0} ms"),
        None => "–".into(),
    }
}

/// `14:03:12` today, `Dec 6 14:03` before (UTC), for the heartbeats table.
fn short_time(v: Option<&Value>, now: DateTime<Utc>) -> String {
    let t = v
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    match t {
        Some(t) if t.date_naive() == now.date_naive() => t.format("%H:%M:%S").to_string(),
        Some(t) => t.format("%b %-d %H:%M").to_string(),
        None => "–".into(),
    }
}

fn time_text(v: Option<&Value>, now: DateTime<Utc>) -> (Option<String>, String) {
    let t = v
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    match t {
        Some(t) => (
            Some(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            format!("{} ({})", t.format("%Y-%m-%d %H:%M:%S UTC"), ago(t, now)),
        ),
        None => (None, "never".into()),
    }
}

/// `GET /admin/monitors/{ns}/{name}`.
pub async fn page(s: &Session<'_>, ns: &str, name: &str) -> Reply {
    let answer = s
        .api(
            Method::GET,
            &format!(
                "/api/v1/monitors/{}/{}?limit={HEARTBEATS}",
                super::path_segment(ns),
                super::path_segment(name)
            ),
            None,
        )
        .await;
    match answer.status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return s.not_found(),
        StatusCode::FORBIDDEN => return s.forbidden(&answer.message()),
        status => return s.error_page(status, "Error", &answer.message()),
    }
    let m = answer.body;
    let now = Utc::now();
    let key = ObjKey::new(ns, name);
    let snapshot = s.ctx().catalog.borrow().clone();
    let in_maintenance = crate::export::catalog::in_maintenance(&snapshot, now).contains(&key);
    let known = s
        .ctx()
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .monitors
        .contains_key(&key);
    let api_state = m
        .pointer("/status/state")
        .and_then(Value::as_str)
        .unwrap_or("");
    let tracker_state = [
        kubekuma_crds::MonitorState::Up,
        kubekuma_crds::MonitorState::Down,
        kubekuma_crds::MonitorState::Pending,
        kubekuma_crds::MonitorState::Flapping,
        kubekuma_crds::MonitorState::Paused,
    ]
    .into_iter()
    .find(|st| st.as_str() == api_state)
    .unwrap_or(kubekuma_crds::MonitorState::Pending);
    let enabled = snapshot
        .monitors
        .get(&key)
        .is_some_and(|m| m.spec.is_enabled());
    let state = console_state(tracker_state, known || !enabled, in_maintenance);

    let beats: Vec<Value> = m
        .get("heartbeats")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let heartbeats: Vec<Value> = beats
        .iter()
        .take(TABLE_ROWS)
        .map(|h| {
            let mut h = h.clone();
            let when = short_time(h.get("checkedAt"), now);
            let shown = match h.get("state").and_then(Value::as_str) {
                Some("flapping") => "degraded",
                Some(other) => other,
                None => "unknown",
            }
            .to_string();
            if let Some(o) = h.as_object_mut() {
                o.insert("when".into(), when.into());
                o.insert("shown".into(), shown.into());
                o.insert("latency".into(), latency_text(o.get("latencyMs")).into());
            }
            h
        })
        .collect();

    // Incidents of the last 90 days, newest first.
    let incidents: Vec<Value> = match s
        .ctx()
        .store
        .incidents_between(now - Duration::days(90), now)
        .await
    {
        Ok(all) => all
            .into_iter()
            .rev()
            .filter(|i| i.namespace == ns && i.name == name)
            .map(|i| {
                let started = i.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let ended = i
                    .ended_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                serde_json::json!({
                    "id": i.id,
                    "status": if i.ended_at.is_some() { "resolved" } else if i.acknowledged { "acknowledged" } else { "open" },
                    "started": started,
                    "started_text": ago(i.started_at, now),
                    "ended": ended,
                    "ended_text": i.ended_at.map(|t| ago(t, now)),
                })
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "console: cannot read incidents");
            Vec::new()
        }
    };

    // Status pages listing it and policies matching it (of namespaces the principal sees).
    let monitor = snapshot.monitors.get(&key);
    let pages: Vec<String> = snapshot
        .status_pages
        .iter()
        .filter(|(k, _)| s.principal.sees_namespace(&k.namespace))
        .filter(|(k, p)| {
            p.spec.groups.iter().any(|g| {
                g.monitors.iter().any(|pm| {
                    pm.reference.namespace_or(&k.namespace) == ns && pm.reference.name == name
                })
            })
        })
        .map(|(k, p)| format!("{} ({k})", p.spec.title))
        .collect();
    let policies: Vec<String> = match monitor {
        Some(mon) => snapshot
            .policies
            .iter()
            .filter(|(k, _)| s.principal.sees_namespace(&k.namespace))
            .filter(|(k, p)| {
                MonitorMatcher::new(p.spec.match_.as_ref(), &k.namespace).matches(&key, mon)
            })
            .map(|(k, _)| k.to_string())
            .collect(),
        None => Vec::new(),
    };

    let spec = serde_yaml_ng::to_string(m.get("spec").unwrap_or(&Value::Null))
        .unwrap_or_else(|_| serde_json::to_string_pretty(&m["spec"]).unwrap_or_default());
    let (last_check, last_check_text) = time_text(m.pointer("/status/lastCheckedAt"), now);
    s.render(
        "monitor.html",
        StatusCode::OK,
        context! {
            ns => ns,
            name => name,
            state => state,
            type => m.pointer("/spec/type").and_then(Value::as_str).unwrap_or(""),
            description => m.pointer("/spec/description").and_then(Value::as_str),
            last_check => last_check,
            last_check_text => last_check_text,
            reason => m.pointer("/status/reason").and_then(Value::as_str),
            message => m.pointer("/status/message").and_then(Value::as_str),
            uptime => ser(m.pointer("/status/uptime").unwrap_or(&Value::Null)),
            cert_days => m.pointer("/status/certDaysLeft").and_then(Value::as_i64),
            chart => chart(&beats).map(|c| ser(&c)),
            incidents => ser(&incidents),
            pages => pages,
            policies => policies,
            heartbeats => ser(&heartbeats),
            spec => spec,
        },
    )
}
