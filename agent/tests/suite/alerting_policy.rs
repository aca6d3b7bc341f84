//! NotificationPolicy routing, table-driven: namespaces, labels, tags, names (exact and
//! regex), triggers, `policyRef`, `notifyOn` and priority order, on a validated snapshot.

use chrono::{DateTime, Utc};
use kubekuma_agent::alerting::policy::route;
use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::catalog::{ObjKey, Severity, Snapshot};
use kubekuma_agent::notify::event::{AlertEvent, EventKind};
use kubekuma_crds::MonitorState;
use pretty_assertions::assert_eq;

const MANIFESTS: &str = r#"
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: api-a, namespace: prod, labels: {tier: critical}}
spec: {type: tcp, target: {tcp: {host: localhost, port: 1}}, tags: [api]}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: web, namespace: prod, labels: {tier: low}}
spec: {type: tcp, target: {tcp: {host: localhost, port: 1}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: api-b, namespace: dev, labels: {tier: critical}}
spec:
  type: tcp
  target: {tcp: {host: localhost, port: 1}}
  tags: [api]
  alerting: {resendIntervalMinutes: 30}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: pinned, namespace: prod, labels: {tier: critical}}
spec:
  type: tcp
  target: {tcp: {host: localhost, port: 1}}
  alerting: {policyRef: {name: only-pinned}, notifyOn: [up]}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationPolicy
metadata: {name: crit, namespace: prod}
spec:
  priority: 10
  match: {matchNamespaces: [prod, dev], matchLabels: {tier: critical}}
  routing:
    providers: [{ref: {name: slack}}, {ref: {name: pager, namespace: ops}}]
    dedupe: {key: "{{ .monitorId }}", windowMinutes: 5}
    rateLimit: {minMinutesBetweenAlerts: 15}
    resend: {resendIntervalMinutes: 60}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationPolicy
metadata: {name: api-regex, namespace: prod}
spec:
  priority: 50
  match: {matchNames: [{pattern: "^api-", regex: true}]}
  triggers: {onFlapping: true, onCertExpiring: {enabled: true, daysThreshold: 14}}
  routing: {providers: [{ref: {name: slack}}, {ref: {name: mail}}]}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationPolicy
metadata: {name: tags, namespace: prod}
spec:
  match: {matchNamespaces: [dev], matchTags: [api, db]}
  routing: {providers: [{ref: {name: mail}}]}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationPolicy
metadata: {name: exact, namespace: prod}
spec:
  priority: 5
  match: {matchNames: [{pattern: web}]}
  triggers: {onUp: false}
  routing: {providers: [{ref: {name: mail}}]}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationPolicy
metadata: {name: only-pinned, namespace: prod}
spec:
  priority: 200
  match: {matchNames: [{pattern: nothing-matches}]}
  routing: {providers: [{ref: {name: hook}}]}
"#;

const PROVIDERS: &str = r#"
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {name: slack, namespace: prod}
spec: {type: webhook, config: {webhook: {url: "http://127.0.0.1:1/slack"}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {name: mail, namespace: prod}
spec: {type: webhook, config: {webhook: {url: "http://127.0.0.1:1/mail"}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {name: hook, namespace: prod}
spec: {type: webhook, config: {webhook: {url: "http://127.0.0.1:1/hook"}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {name: pager, namespace: ops}
spec: {type: webhook, config: {webhook: {url: "http://127.0.0.1:1/pager"}}}
"#;

fn snapshot() -> Snapshot {
    let built = build(
        &[
            parse_text("monitors.yaml", MANIFESTS),
            parse_text("providers.yaml", PROVIDERS),
        ],
        None,
    );
    let errors: Vec<_> = built
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    built.snapshot
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000, 0).unwrap()
}

/// `policy -> provider` for each route of `kind` about `monitor`.
fn routes(snap: &Snapshot, monitor: &str, kind: EventKind) -> Vec<String> {
    let (ns, name) = monitor.split_once('/').unwrap();
    let key = ObjKey::new(ns, name);
    let m = &snap.monitors[&key];
    let e = AlertEvent::new(
        kind,
        &key.namespace,
        &key.name,
        m,
        MonitorState::Up,
        MonitorState::Down,
        now(),
    );
    route(&e, &key, m, &snap.policies)
        .into_iter()
        .map(|r| format!("{} -> {}", r.policy.name, r.provider))
        .collect()
}

#[test]
fn policies_route_by_match_triggers_and_priority() {
    let snap = snapshot();
    let cert = |days_left| EventKind::CertExpiring { days_left };
    let table: &[(&str, EventKind, &[&str])] = &[
        // Labels across namespaces (crit, priority 10) before the name regex (50); the
        // second policy's slack is already covered by the first.
        (
            "prod/api-a",
            EventKind::Down,
            &[
                "crit -> prod/slack",
                "crit -> ops/pager",
                "api-regex -> prod/mail",
            ],
        ),
        (
            "prod/api-a",
            EventKind::Reminder,
            &[
                "crit -> prod/slack",
                "crit -> ops/pager",
                "api-regex -> prod/mail",
            ],
        ),
        // onFlapping is off by default.
        (
            "prod/api-a",
            EventKind::Flapping,
            &["api-regex -> prod/slack", "api-regex -> prod/mail"],
        ),
        // Fewer days than the threshold only.
        (
            "prod/api-a",
            cert(13),
            &["api-regex -> prod/slack", "api-regex -> prod/mail"],
        ),
        ("prod/api-a", cert(14), &[]),
        // A regex name policy without matchNamespaces stays in its namespace; tags in dev.
        (
            "dev/api-b",
            EventKind::Down,
            &[
                "crit -> prod/slack",
                "crit -> ops/pager",
                "tags -> prod/mail",
            ],
        ),
        // Exact name; its onUp is off.
        ("prod/web", EventKind::Down, &["exact -> prod/mail"]),
        ("prod/web", EventKind::Up, &[]),
        // policyRef: only that policy, even though its match does not select the monitor
        // and crit would; notifyOn [up] drops down.
        ("prod/pinned", EventKind::Down, &[]),
        ("prod/pinned", EventKind::Up, &["only-pinned -> prod/hook"]),
    ];
    for (monitor, kind, want) in table {
        assert_eq!(routes(&snap, monitor, *kind), *want, "{monitor} {kind}");
    }
}

#[test]
fn routes_carry_the_policy_pacing() {
    let snap = snapshot();
    let key = ObjKey::new("dev", "api-b");
    let m = &snap.monitors[&key];
    let e = AlertEvent::new(
        EventKind::Down,
        &key.namespace,
        &key.name,
        m,
        MonitorState::Up,
        MonitorState::Down,
        now(),
    );
    let r = route(&e, &key, m, &snap.policies);
    let first = &r[0];
    assert_eq!(
        (
            first.dedupe_key.as_str(),
            first.dedupe_window_minutes,
            first.min_minutes_between_alerts,
            first.resend_interval_minutes
        ),
        // The monitor's resend interval wins over the policy's.
        ("dev/api-b", 5, 15, 30)
    );
    // No dedupe block: the default key, no window.
    let last = &r[2];
    assert_eq!(
        (last.dedupe_key.as_str(), last.dedupe_window_minutes),
        ("dev/api-b-down", 0)
    );
}
