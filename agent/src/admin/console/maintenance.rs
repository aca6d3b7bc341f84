//! The maintenance page (`GET /admin/maintenance`): the catalog's maintenance windows in
//! the namespaces the reader sees, whether an occurrence is in progress (and until when),
//! their next occurrences and the monitors they cover. Windows are desired state (in the
//! manifests); the page only reads them. Occurrences come from the schedule parsing the
//! export and alerting use ([`crate::alerting::suppress::schedule`]).

use chrono::{DateTime, Duration, Utc};
use http::StatusCode;
use serde_json::{Value, json};

use super::text::theme_date;
use super::{Reply, Session};
use crate::admin::routes::{self, RouteId, Verb};
use crate::alerting::suppress;
use crate::catalog::schedule_expr::WindowSchedule;
use crate::catalog::selector::MonitorMatcher;

/// Next occurrences shown per window.
pub const NEXT: usize = 3;

/// The starts of the next `n` occurrences after `now`.
pub fn next_starts(schedule: &WindowSchedule, now: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(n);
    let mut at = now;
    while out.len() < n {
        // An RRULE's `after` includes an occurrence at exactly `at`: look from the next
        // second once one is found (schedules have whole seconds).
        let from = if out.is_empty() {
            at
        } else {
            at + Duration::seconds(1)
        };
        match schedule.next_start_after(from) {
            Some(t) if t > at || (out.is_empty() && t >= at) => {
                out.push(t);
                at = t;
            }
            _ => break,
        }
    }
    out
}

fn when(t: DateTime<Utc>) -> Value {
    json!({"at": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "text": theme_date(t)})
}

/// `GET /admin/maintenance`. Reading needs the API's guard for reading monitors.
pub async fn page(s: &Session<'_>) -> Reply {
    if let Some(route) = routes::route_of(RouteId::Monitors, Verb::Get)
        && let Err(e) = routes::role_allows(route, &s.principal)
    {
        return s.forbidden(&e.message);
    }
    let snapshot = s.ctx().catalog.borrow().clone();
    let now = Utc::now();
    let mut windows = Vec::new();
    for (key, w) in &snapshot.maintenance_windows {
        if !s.principal.sees_namespace(&key.namespace) {
            continue;
        }
        let spec = &w.spec;
        let schedule = suppress::schedule(spec);
        let duration = Duration::minutes(spec.duration_minutes.max(0));
        let current = schedule
            .as_ref()
            .and_then(|sch| suppress::occurrence(spec, sch, now));
        let next: Vec<Value> = schedule
            .as_ref()
            .map(|sch| next_starts(sch, now, NEXT))
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let mut v = when(t);
                v["endText"] = json!(theme_date(t + duration));
                v
            })
            .collect();
        let matcher = MonitorMatcher::new(spec.selector.as_ref(), &key.namespace);
        let covered: Vec<String> = snapshot
            .monitors
            .iter()
            .filter(|(k, m)| s.principal.sees_namespace(&k.namespace) && matcher.matches(k, m))
            .map(|(k, _)| k.to_string())
            .collect();
        windows.push(json!({
            "key": key.to_string(),
            "description": spec.description,
            "schedule": spec.schedule,
            "timezone": spec.timezone.as_deref().unwrap_or("UTC"),
            "minutes": spec.duration_minutes,
            "active": current.is_some(),
            "until": current.map(|(_, end)| when(end)),
            "next": next,
            "valid": schedule.is_some(),
            "monitors": covered.iter().take(20).collect::<Vec<_>>(),
            "monitorCount": covered.len(),
        }));
    }
    s.render(
        "maintenance.html",
        StatusCode::OK,
        super::ser(json!({ "windows": windows, "next_count": NEXT })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::schedule_expr::utc;

    #[test]
    fn the_next_three_sundays() {
        let s =
            WindowSchedule::parse("0 2 * * SUN", chrono_tz::UTC).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            next_starts(&s, utc(2024, 1, 1, 0, 0), 3),
            [
                utc(2024, 1, 7, 2, 0),
                utc(2024, 1, 14, 2, 0),
                utc(2024, 1, 21, 2, 0)
            ]
        );
        let once = WindowSchedule::parse(
            "DTSTART:20240101T020000Z\nRRULE:FREQ=DAILY;COUNT=2",
            chrono_tz::UTC,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(next_starts(&once, utc(2024, 1, 1, 0, 0), 3).len(), 2);
    }
}
