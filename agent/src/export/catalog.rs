//! The public catalog of an agent ([`AgentCatalog`]): status pages, the public facts of
//! monitors and maintenance windows, computed purely from a [`Snapshot`] and a clock.
//! Targets, URLs, hosts, headers, bodies and secrets never enter it: only fields that
//! the crds' public types have are copied, one by one.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use kubekuma_crds::objects::{
    AgentCatalog, LAYOUT, PublicGroup, PublicMaintenance, PublicMonitor, PublicPage,
    PublicPageMonitor, PublicSilence, monitor_key,
};
use kubekuma_crds::status_page::BadgeScope;
use kubekuma_crds::{MaintenanceWindow, Monitor, Silence, StatusPage};

use crate::catalog::schedule_expr::WindowSchedule;
use crate::catalog::selector::MonitorMatcher;
use crate::catalog::snapshot::exposure_hosts;
use crate::catalog::{ObjKey, Snapshot};

/// Default check interval when a monitor sets none, seconds (as the scheduler uses).
const DEFAULT_INTERVAL_SECONDS: i64 = 60;

/// The public catalog of `snapshot`, written by agent `agent_id` at `now`. Pages,
/// monitors and windows come in key order (namespace, then name); groups and their
/// monitors in spec order.
pub fn public_catalog(snapshot: &Snapshot, agent_id: &str, now: DateTime<Utc>) -> AgentCatalog {
    public_catalog_with(snapshot, &BTreeMap::new(), agent_id, now)
}

/// [`public_catalog`] with silences from elsewhere than the snapshot (the admin API's).
/// Silences that ended are left out.
pub fn public_catalog_with(
    snapshot: &Snapshot,
    extra_silences: &BTreeMap<ObjKey, Silence>,
    agent_id: &str,
    now: DateTime<Utc>,
) -> AgentCatalog {
    AgentCatalog {
        layout: LAYOUT.to_string(),
        agent_id: agent_id.to_string(),
        location: None,
        generated_at: now,
        pages: {
            let hosts = exposure_hosts(&snapshot.status_pages);
            let held = |k: &ObjKey| -> Vec<String> {
                (hosts.get(k).into_iter().flatten())
                    .filter(|h| h.holder == *k)
                    .map(|h| h.host.clone())
                    .collect()
            };
            (snapshot.status_pages.iter())
                .map(|(k, p)| {
                    let mut page = public_page(k, p);
                    if page.published {
                        page.hosts = held(k);
                    }
                    page
                })
                .collect()
        },
        monitors: snapshot
            .monitors
            .iter()
            .map(|(k, m)| public_monitor(k, m))
            .collect(),
        maintenance: snapshot
            .maintenance_windows
            .iter()
            .map(|(k, w)| public_maintenance(k, w, &snapshot.monitors, now))
            .collect(),
        silences: snapshot
            .silences
            .iter()
            .chain(extra_silences)
            .filter(|(_, s)| s.spec.ends_at > now)
            .map(|(k, s)| public_silence(k, s, &snapshot.monitors))
            .collect(),
    }
}

fn public_silence(
    key: &ObjKey,
    s: &Silence,
    monitors: &BTreeMap<ObjKey, Monitor>,
) -> PublicSilence {
    let matcher = MonitorMatcher::new(s.spec.selector.as_ref(), &key.namespace);
    PublicSilence {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        reason: s.spec.reason.clone(),
        starts_at: s.spec.starts_at,
        ends_at: s.spec.ends_at,
        monitors: monitors
            .iter()
            .filter(|(k, m)| matcher.matches(k, m))
            .map(|(k, _)| monitor_key(&k.namespace, &k.name))
            .collect(),
    }
}

fn public_page(key: &ObjKey, page: &StatusPage) -> PublicPage {
    let s = &page.spec;
    let content = s.content.as_ref();
    PublicPage {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        slug: s.slug.clone(),
        title: s.title.clone(),
        published: s.published.unwrap_or(false),
        description: content.and_then(|c| c.description.clone()),
        branding: content.and_then(|c| c.branding.clone()),
        groups: s
            .groups
            .iter()
            .map(|g| PublicGroup {
                name: g.name.clone(),
                description: g.description.clone(),
                monitors: g
                    .monitors
                    .iter()
                    .map(|m| PublicPageMonitor {
                        namespace: m.reference.namespace_or(&key.namespace).to_string(),
                        name: m.reference.name.clone(),
                        display_name: m.display_name.clone(),
                    })
                    .collect(),
            })
            .collect(),
        badges: s
            .badges
            .as_ref()
            .filter(|b| b.enabled == Some(true))
            .map(|b| b.scope.unwrap_or(BadgeScope::All)),
        hosts: Vec::new(),
    }
}

fn public_monitor(key: &ObjKey, m: &Monitor) -> PublicMonitor {
    PublicMonitor {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        type_: m.spec.type_,
        description: m.spec.description.clone(),
        interval_seconds: m
            .spec
            .schedule
            .as_ref()
            .and_then(|s| s.interval_seconds)
            .unwrap_or(DEFAULT_INTERVAL_SECONDS),
    }
}

fn public_maintenance(
    key: &ObjKey,
    w: &MaintenanceWindow,
    monitors: &BTreeMap<ObjKey, Monitor>,
    now: DateTime<Utc>,
) -> PublicMaintenance {
    let s = &w.spec;
    let (active_since, next_start) = occurrences(w, now);
    let matcher = MonitorMatcher::new(s.selector.as_ref(), &key.namespace);
    PublicMaintenance {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        description: s.description.clone(),
        active_since,
        next_start,
        duration_minutes: s.duration_minutes,
        monitors: monitors
            .iter()
            .filter(|(k, m)| matcher.matches(k, m))
            .map(|(k, _)| monitor_key(&k.namespace, &k.name))
            .collect(),
    }
}

/// A maintenance window's occurrence at a time: when the one in progress began (none
/// when no occurrence is in progress) and when the next one begins.
pub type Occurrences = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The schedule of window `w` and the length of an occurrence. Validation has checked
/// zone and schedule; a broken one shows no occurrence.
fn window_schedule(w: &MaintenanceWindow) -> (Option<WindowSchedule>, Duration) {
    let s = &w.spec;
    let tz = s
        .timezone
        .as_deref()
        .and_then(|t| t.parse::<chrono_tz::Tz>().ok())
        .unwrap_or(chrono_tz::UTC);
    let schedule = WindowSchedule::parse(&s.schedule, tz).ok();
    (schedule, Duration::minutes(s.duration_minutes.max(0)))
}

/// The occurrences of window `w` at `now`.
pub fn occurrences(w: &MaintenanceWindow, now: DateTime<Utc>) -> Occurrences {
    let (schedule, duration) = window_schedule(w);
    let Some(schedule) = schedule else {
        return (None, None);
    };
    (
        schedule.active_start(now, duration),
        schedule.next_start_after(now),
    )
}

/// The monitors of `snapshot` inside an occurrence of one of its maintenance windows at
/// `now` (the monitors the exported state, the status pages and the StatusPage status
/// show as in maintenance).
pub fn in_maintenance(snapshot: &Snapshot, now: DateTime<Utc>) -> HashSet<ObjKey> {
    let mut out = HashSet::new();
    for (key, w) in &snapshot.maintenance_windows {
        let (schedule, duration) = window_schedule(w);
        if schedule
            .and_then(|s| s.active_start(now, duration))
            .is_none()
        {
            continue;
        }
        let matcher = MonitorMatcher::new(w.spec.selector.as_ref(), &key.namespace);
        let covered = snapshot
            .monitors
            .iter()
            .filter(|(k, m)| matcher.matches(k, m));
        out.extend(covered.map(|(k, _)| k.clone()));
    }
    out
}

/// What of `snapshot` is in effect at `now` by the clock alone: for each maintenance
/// window whether an occurrence is on, then for each silence of the snapshot and each
/// of `extra_silences` (`(startsAt, endsAt)`, the admin API's) whether it is in effect.
/// Two values differ when a window or silence started or ended in between: the agent
/// compares them every second to export such a change at once (a few windows and
/// silences, no monitor is looked at).
pub fn time_phase(
    snapshot: &Snapshot,
    extra_silences: &[(DateTime<Utc>, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> Vec<bool> {
    let windows = snapshot.maintenance_windows.values().map(|w| {
        let (schedule, duration) = window_schedule(w);
        schedule
            .and_then(|s| s.active_start(now, duration))
            .is_some()
    });
    let silences = snapshot
        .silences
        .values()
        .map(|s| (s.spec.starts_at, s.spec.ends_at))
        .chain(extra_silences.iter().copied())
        .map(|(start, end)| start <= now && now < end);
    windows.chain(silences).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::decode::parse_text;
    use crate::catalog::schedule_expr::utc;
    use crate::catalog::snapshot::build;

    fn snapshot(yaml: &str) -> Snapshot {
        let built = build(&[parse_text("test.yaml", yaml)], None);
        let errors: Vec<String> = built
            .findings
            .iter()
            .filter(|f| f.severity == crate::catalog::Severity::Error)
            .map(|f| f.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        built.snapshot
    }

    fn monitor(ns: &str, name: &str, labels: &str, tags: &str) -> String {
        format!(
            "apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {labels}\nspec:\n  type: tcp\n  tags: {tags}\n  target:\n    tcp:\n      host: db.internal\n      port: 5432\n---\n"
        )
    }

    const MONITORS: &[(&str, &str, &str, &str)] = &[
        ("prod", "api-eu", "{tier: critical}", "[api]"),
        ("prod", "api-us", "{tier: low}", "[api]"),
        ("prod", "web", "{tier: critical}", "[web]"),
        ("staging", "api-eu", "{tier: critical}", "[api]"),
        ("other", "api-x", "{tier: critical}", "[api]"),
    ];

    fn window(ns: &str, selector: &str) -> String {
        format!(
            "apiVersion: monitoring.kubekuma.io/v1\nkind: MaintenanceWindow\nmetadata:\n  name: w\n  namespace: {ns}\nspec:\n  schedule: \"FREQ=WEEKLY;BYDAY=SU;BYHOUR=2;BYMINUTE=30\"\n  timezone: Europe/Berlin\n  durationMinutes: 60\n  description: Database upgrade\n{selector}"
        )
    }

    fn covered(ns: &str, selector: &str) -> Vec<String> {
        let mut yaml: String = MONITORS
            .iter()
            .map(|(ns, n, l, t)| monitor(ns, n, l, t))
            .collect();
        yaml.push_str(&window(ns, selector));
        let c = public_catalog(&snapshot(&yaml), "a", utc(2024, 4, 1, 0, 0));
        c.maintenance[0].monitors.clone()
    }

    #[test]
    fn selector_defaults_to_the_window_namespace() {
        assert_eq!(
            covered("prod", ""),
            ["prod/api-eu", "prod/api-us", "prod/web"]
        );
        assert_eq!(covered("staging", ""), ["staging/api-eu"]);
    }

    #[test]
    fn selector_criteria_all_apply() {
        let sel = "  selector:\n    matchNamespaces: [prod, staging]\n    matchLabels: {tier: critical}\n    matchTags: [api]\n";
        assert_eq!(covered("prod", sel), ["prod/api-eu", "staging/api-eu"]);
        let sel = "  selector:\n    matchNames:\n      - pattern: \"^api-\"\n        regex: true\n";
        assert_eq!(covered("prod", sel), ["prod/api-eu", "prod/api-us"]);
        let sel = "  match:\n    matchNames:\n      - pattern: web\n";
        assert_eq!(covered("prod", sel), ["prod/web"]);
        let sel = "  selector:\n    matchNames:\n      - pattern: api\n";
        assert!(covered("prod", sel).is_empty());
    }

    #[test]
    fn maintenance_occurrences_in_the_window_zone() {
        let yaml = window("prod", "");
        let snap = snapshot(&yaml);
        // Sundays 02:30 Berlin = 00:30 UTC in summer.
        let c = public_catalog(&snap, "a", utc(2024, 4, 7, 0, 45));
        let w = &c.maintenance[0];
        assert_eq!(w.active_since, Some(utc(2024, 4, 7, 0, 30)));
        assert_eq!(w.next_start, Some(utc(2024, 4, 14, 0, 30)));
        assert_eq!(w.duration_minutes, 60);
        assert_eq!(w.description.as_deref(), Some("Database upgrade"));
        let c = public_catalog(&snap, "a", utc(2024, 4, 7, 1, 45));
        assert_eq!(c.maintenance[0].active_since, None);
    }

    #[test]
    fn silences_in_effect_or_to_come_with_the_monitors_they_cover() {
        let mut yaml: String = MONITORS
            .iter()
            .map(|(ns, n, l, t)| monitor(ns, n, l, t))
            .collect();
        yaml.push_str("apiVersion: monitoring.kubekuma.io/v1\nkind: Silence\nmetadata: {name: deploy, namespace: prod}\nspec: {startsAt: '2024-04-01T10:00:00Z', endsAt: '2024-04-01T12:00:00Z', reason: Planned deploy, createdBy: zed-operator, selector: {matchLabels: {tier: critical}}}\n---\napiVersion: monitoring.kubekuma.io/v1\nkind: Silence\nmetadata: {name: old, namespace: prod}\nspec: {startsAt: '2024-03-01T10:00:00Z', endsAt: '2024-03-01T12:00:00Z'}\n");
        let snap = snapshot(&yaml);
        let mut extra = BTreeMap::new();
        let api: Silence = serde_yaml_ng::from_str("apiVersion: monitoring.kubekuma.io/v1\nkind: Silence\nmetadata: {name: api-made, namespace: staging}\nspec: {startsAt: '2024-04-01T09:00:00Z', endsAt: '2024-04-01T13:00:00Z', reason: Migration}\n").unwrap();
        extra.insert(ObjKey::new("staging", "api-made"), api);
        let c = public_catalog_with(&snap, &extra, "a", utc(2024, 4, 1, 11, 0));
        let shown: Vec<(&str, Option<&str>, Vec<String>)> = c
            .silences
            .iter()
            .map(|s| (s.name.as_str(), s.reason.as_deref(), s.monitors.clone()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    "deploy",
                    Some("Planned deploy"),
                    vec!["prod/api-eu".to_string(), "prod/web".to_string()]
                ),
                (
                    "api-made",
                    Some("Migration"),
                    vec!["staging/api-eu".to_string()]
                ),
            ]
        );
        // Who created a silence is not public.
        let json = serde_json::to_string(&c.silences).unwrap();
        assert!(!json.contains("zed-operator"), "{json}");
    }

    #[test]
    fn pages_keep_spec_order_and_default_namespaces() {
        let yaml = "apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {name: public, namespace: prod}
spec:
  slug: public
  title: Public
  published: true
  exposure: {mode: ingress, hosts: [status.internal.example]}
  content:
    description: Our services
    branding: {logoUrl: 'https://cdn.example/logo.svg'}
  groups:
    - name: Zeta
      monitors:
        - ref: {name: web}
          displayName: Website
        - ref: {name: api, namespace: shared}
    - name: Alpha
      description: second group
  badges: {enabled: true, scope: page}
---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {name: draft, namespace: prod}
spec:
  slug: draft
  title: Draft
  exposure: {mode: ingress, hosts: [draft.internal.example]}
  badges: {scope: page}
---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {name: zz-static, namespace: prod}
spec:
  slug: cdn
  title: CDN
  published: true
  exposure: {mode: static, hosts: [cdn.internal.example]}
";
        let c = public_catalog(&snapshot(yaml), "a", utc(2024, 1, 1, 0, 0));
        let draft = &c.pages[0];
        assert_eq!(
            (draft.name.as_str(), draft.published, draft.badges),
            ("draft", false, None)
        );
        let p = &c.pages[1];
        assert_eq!(p.badges, Some(BadgeScope::Page));
        assert_eq!(p.description.as_deref(), Some("Our services"));
        let names: Vec<&str> = p.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["Zeta", "Alpha"]);
        let refs: Vec<(String, String, Option<String>)> = p.groups[0]
            .monitors
            .iter()
            .map(|m| (m.namespace.clone(), m.name.clone(), m.display_name.clone()))
            .collect();
        assert_eq!(
            refs,
            [
                ("prod".into(), "web".into(), Some("Website".into())),
                ("shared".into(), "api".into(), None)
            ]
        );
        // The hosts of a published page exposed through an Ingress are public (DNS names
        // them; the site server answers them); a draft's or a static page's are not.
        assert_eq!(p.hosts, ["status.internal.example"]);
        assert!(draft.hosts.is_empty());
        assert!(
            c.pages[2].hosts.is_empty(),
            "a static page's hosts stay private"
        );
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            !json.contains("draft.internal.example") && !json.contains("cdn.internal.example"),
            "{json}"
        );
    }
}
