//! Status written back through the status subresource, rate limited: a writer task that
//! every [`StatusOptions::interval`] (and, for conditions only, on every catalog change)
//! works out the status fields the agent owns for each object, compares them with what
//! it last wrote (or, after a start or a change of leader, with what the server holds)
//! and merge-patches only the fields that changed, at most
//! [`StatusOptions::max_per_second`] patches a second. Only the leader writes.
//!
//! Every kind gets `observedGeneration` and a `Valid` condition (`False`, reason
//! `ValidationFailed`, with the messages `kubekuma validate` prints); Monitors also get
//! `Ready`, `lastResult`, uptime, certificate, `nextRunAt` and a generated push token;
//! StatusPages their URL, monitor count and overall status; NotificationPolicies the
//! monitors they match and the providers they route to; MonitorSets, Silences and
//! MaintenanceWindows what their printer columns show. Fields written by others (an
//! `lastLoginAt`, other conditions) are left alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kubekuma_crds::auth::{ApiKeyStatus, LocalUserStatus};
use kubekuma_crds::common::Condition;
use kubekuma_crds::monitor::{CertStatus, LastResult, MonitorStatus, UptimeSummary};
use kubekuma_crds::monitor_set::MonitorSetStatus;
use kubekuma_crds::notification::{LastDelivery, PolicyStatus, ProviderStatus};
use kubekuma_crds::settings::SettingsStatus;
use kubekuma_crds::status_page::{OverallStatus, Shown, StatusPageStatus};
use kubekuma_crds::suppression::{MaintenanceWindowStatus, SilenceStatus};
use kubekuma_crds::{Kind, MonitorState};
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::catalog::{KubeObjects, api_resource};
use super::ingress::{Exposed, IngressOptions};
use crate::catalog::selector::MonitorMatcher;
use crate::catalog::snapshot::MONITOR_SET_LABEL;
use crate::catalog::{Finding, ObjKey, ResourceId, Severity, Snapshot};
use crate::export::catalog::{Occurrences, in_maintenance, occurrences};
use crate::state::live::{Live, LiveMonitor};
use crate::store::Store;

/// How often uptime percentages are read from SQLite again.
const UPTIME_REFRESH: Duration = Duration::from_secs(300);

/// Longest condition message; longer ones are cut.
const MAX_MESSAGE: usize = 4000;

/// How the status writer paces itself.
#[derive(Clone, Debug)]
pub struct StatusOptions {
    /// Time between full rounds (every field); default 30 s.
    pub interval: Duration,
    /// Most patches a second; default 10.
    pub max_per_second: u32,
    /// Public URL of the builder's output, for `publishedUrl` of pages without a host.
    pub site_url: Option<String>,
    /// How pages with `spec.exposure.mode: ingress` are exposed: their `Exposed`
    /// condition here, their Ingresses by [`super::ingress::IngressReconciler`].
    pub ingress: IngressOptions,
}

impl Default for StatusOptions {
    fn default() -> Self {
        StatusOptions {
            interval: Duration::from_secs(30),
            max_per_second: 10,
            site_url: None,
            ingress: IngressOptions::default(),
        }
    }
}

/// What was last written to one object.
struct Written {
    uid: Option<String>,
    /// The resourceVersion the write produced.
    resource_version: Option<String>,
    at: Instant,
    status: Map<String, Value>,
}

/// The status writer (see the module docs).
pub struct StatusWriter {
    client: Client,
    objects: KubeObjects,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    findings: watch::Receiver<Arc<Vec<Finding>>>,
    live: Arc<Mutex<Live>>,
    store: Store,
    opts: StatusOptions,
    written: HashMap<ResourceId, Written>,
    /// Leadership while [`StatusWriter::run`] runs: a round stops when it is lost.
    leader: Option<watch::Receiver<bool>>,
    uptime: HashMap<ObjKey, (Instant, UptimeSummary)>,
}

/// Everything a round knows besides the object itself.
pub struct View<'a> {
    /// The catalog.
    pub snapshot: &'a Snapshot,
    /// Findings of the catalog's latest build, by resource.
    pub findings: HashMap<ResourceId, Vec<&'a Finding>>,
    /// The live view of the running monitors.
    pub live: &'a HashMap<ObjKey, LiveMonitor>,
    /// Uptime of the running monitors.
    pub uptime: HashMap<ObjKey, UptimeSummary>,
    /// Time between runs of each running monitor.
    pub intervals: HashMap<ObjKey, Duration>,
    /// Maintenance windows: when the current occurrence began, when the next begins.
    pub maintenance: HashMap<ObjKey, Occurrences>,
    /// The monitors inside an active maintenance window.
    pub in_maintenance: HashSet<ObjKey>,
    /// [`StatusOptions::site_url`].
    pub site_url: Option<&'a str>,
    /// How each page in ingress mode is exposed, and the options that say so (`None`:
    /// no `Exposed` condition is written or removed).
    pub exposure: Option<(&'a BTreeMap<ObjKey, Exposed>, &'a IngressOptions)>,
    /// The time of the round.
    pub now: DateTime<Utc>,
    /// The latest finished delivery of each NotificationProvider (`lastDelivery`).
    pub deliveries: HashMap<ObjKey, LastDelivery>,
    /// The last login of each LocalUser and the last use of each ApiKey.
    pub auth_activity: HashMap<(Kind, ObjKey), DateTime<Utc>>,
}

impl<'a> View<'a> {
    /// A view of `snapshot` and its `findings` at `now`.
    pub fn new(
        snapshot: &'a Snapshot,
        findings: &'a [Finding],
        live: &'a HashMap<ObjKey, LiveMonitor>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut by_id: HashMap<ResourceId, Vec<&Finding>> = HashMap::new();
        for f in findings {
            if let Some(id) = &f.resource {
                by_id.entry(id.clone()).or_default().push(f);
            }
        }
        let maintenance = (snapshot.maintenance_windows.iter())
            .map(|(k, w)| (k.clone(), occurrences(w, now)))
            .collect();
        let intervals = crate::schedule::intervals(snapshot)
            .map(|(k, interval)| (k.clone(), interval))
            .collect();
        View {
            snapshot,
            findings: by_id,
            live,
            uptime: HashMap::new(),
            intervals,
            maintenance,
            in_maintenance: in_maintenance(snapshot, now),
            site_url: None,
            exposure: None,
            now,
            deliveries: HashMap::new(),
            auth_activity: HashMap::new(),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `dnsServfail` → `DnsServfail`: a failure reason as a condition reason.
fn camel(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// A condition, keeping `lastTransitionTime` of the previous one of its type when its
/// status did not change.
fn condition(
    prev: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let since = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(cut(message)).filter(|m| !m.is_empty()),
        last_transition_time: Some(since.unwrap_or_else(|| rfc3339(now))),
        observed_generation: generation,
    }
}

/// `Valid`: false with the errors `kubekuma validate` prints for the resource (field path
/// and message), true otherwise (with its warnings, if any).
fn valid_condition(
    findings: &[&Finding],
    prev: &[Condition],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let text = |severity: Severity| {
        let of = findings.iter().filter(|f| f.severity == severity);
        let lines: Vec<String> = of
            .map(|f| match f.path.as_str() {
                "" => f.message.clone(),
                p => format!("{p}: {}", f.message),
            })
            .collect();
        lines.join("; ")
    };
    let errors = text(Severity::Error);
    if errors.is_empty() {
        condition(
            prev,
            "Valid",
            "True",
            "Valid",
            text(Severity::Warning),
            generation,
            now,
        )
    } else {
        let reason = "ValidationFailed";
        condition(prev, "Valid", "False", reason, errors, generation, now)
    }
}

/// `Ready` of a monitor: true when up, false when down (the failure reason and message),
/// paused or not running, unknown while pending or flapping.
fn ready_condition(
    running: Option<(&kubekuma_crds::Monitor, Option<&LiveMonitor>)>,
    prev: &[Condition],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let (status, reason, message) = match running {
        None => (
            "False",
            "NotRunning".to_string(),
            "the monitor does not run until the errors in its Valid condition are fixed".into(),
        ),
        Some((m, _)) if !m.spec.is_enabled() => (
            "False",
            "Paused".to_string(),
            "spec.enabled is false".into(),
        ),
        Some((_, live)) => match live.map(|l| l.tracker.shown()) {
            Some(MonitorState::Up) => ("True", "Up".to_string(), String::new()),
            Some(MonitorState::Down) => {
                let l = live.and_then(|l| l.reason.map(|r| (r, l.message.clone())));
                match l {
                    Some((r, m)) => ("False", camel(r.as_str()), m.unwrap_or_default()),
                    None => ("False", "Down".to_string(), String::new()),
                }
            }
            Some(MonitorState::Flapping) => (
                "Unknown",
                "Flapping".to_string(),
                "the monitor changes state too often".into(),
            ),
            Some(MonitorState::Paused) => ("False", "Paused".to_string(), String::new()),
            Some(MonitorState::Pending) | None => {
                ("Unknown", "Pending".to_string(), "no result yet".into())
            }
        },
    };
    condition(prev, "Ready", status, &reason, message, generation, now)
}

/// The previous conditions of a status.
fn prev_conditions(prev: &Map<String, Value>) -> Vec<Condition> {
    prev.get("conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

/// `conditions` with ours replaced or appended, others kept in place.
fn with_conditions(prev: &[Condition], ours: Vec<Condition>) -> Vec<Condition> {
    let mut out: Vec<Condition> = prev
        .iter()
        .map(|c| {
            ours.iter()
                .find(|o| o.type_ == c.type_)
                .cloned()
                .unwrap_or_else(|| c.clone())
        })
        .collect();
    for o in ours {
        if !out.iter().any(|c| c.type_ == o.type_) {
            out.push(o);
        }
    }
    out
}

/// The fields the agent owns in the status of each kind.
fn owned_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Monitor => &[
            "observedGeneration",
            "conditions",
            "lastResult",
            "uptime",
            "cert",
            "nextRunAt",
            "pushToken",
        ],
        Kind::StatusPage => &[
            "observedGeneration",
            "conditions",
            "publishedUrl",
            "monitorCount",
            "overallStatus",
        ],
        Kind::NotificationPolicy => &[
            "observedGeneration",
            "conditions",
            "matchedMonitors",
            "providers",
        ],
        Kind::MonitorSet => &["observedGeneration", "conditions", "monitorCount"],
        Kind::Silence => &["observedGeneration", "conditions", "active"],
        Kind::MaintenanceWindow => &[
            "observedGeneration",
            "conditions",
            "nextOccurrenceAt",
            "active",
        ],
        Kind::NotificationProvider => &["observedGeneration", "conditions", "lastDelivery"],
        Kind::LocalUser => &[
            "observedGeneration",
            "conditions",
            "lastLoginAt",
            "mfaEnabled",
        ],
        Kind::ApiKey => &["observedGeneration", "conditions", "lastUsedAt"],
        Kind::KubeKumaSettings => &["observedGeneration", "conditions"],
    }
}

/// Whether a LocalUser's spec asks for a second factor: `spec.mfa.mode` optional or
/// required, with a TOTP secret reference.
fn mfa_enabled(obj: &DynamicObject) -> bool {
    let mfa = &obj.data["spec"]["mfa"];
    matches!(mfa["mode"].as_str(), Some("optional" | "required"))
        && mfa["totpSecretRef"].is_object()
}

/// The status fields the agent owns for `obj` (every one of [`owned_fields`]; `null`
/// for those it leaves out), given the status the object has now.
pub fn desired(
    kind: Kind,
    obj: &DynamicObject,
    prev: &Map<String, Value>,
    view: &View<'_>,
) -> Map<String, Value> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let key = ObjKey::new(&ns, &name);
    let id = ResourceId::new(kind, if kind.namespaced() { &ns } else { "" }, &name);
    let generation = obj.metadata.generation;
    let prev_conds = prev_conditions(prev);
    let now = view.now;
    let findings = view.findings.get(&id).map(Vec::as_slice).unwrap_or(&[]);
    let valid = valid_condition(findings, &prev_conds, generation, now);
    let snap = view.snapshot;
    let value = match kind {
        Kind::Monitor => {
            serde_json::to_value(monitor_status(&key, generation, &prev_conds, valid, view))
        }
        Kind::StatusPage => serde_json::to_value(status_page_status(
            &key,
            generation,
            page_conditions(&key, &prev_conds, valid, generation, view),
            view,
        )),
        Kind::NotificationPolicy => serde_json::to_value(policy_status(
            &key,
            generation,
            with_conditions(&prev_conds, vec![valid]),
            snap,
        )),
        Kind::MonitorSet => serde_json::to_value(MonitorSetStatus {
            observed_generation: generation,
            conditions: with_conditions(&prev_conds, vec![valid]),
            monitor_count: generated_count(&key, snap),
        }),
        Kind::Silence => serde_json::to_value(SilenceStatus {
            observed_generation: generation,
            conditions: with_conditions(&prev_conds, vec![valid]),
            active: snap
                .silences
                .get(&key)
                .map(|s| s.spec.starts_at <= now && now < s.spec.ends_at),
        }),
        Kind::MaintenanceWindow => serde_json::to_value(maintenance_status(
            &key,
            generation,
            with_conditions(&prev_conds, vec![valid]),
            view,
        )),
        Kind::NotificationProvider => serde_json::to_value(ProviderStatus {
            observed_generation: generation,
            conditions: with_conditions(&prev_conds, vec![valid]),
            last_delivery: view.deliveries.get(&key).cloned(),
        }),
        Kind::LocalUser => serde_json::to_value(LocalUserStatus {
            observed_generation: generation,
            conditions: with_conditions(&prev_conds, vec![valid]),
            last_login_at: view.auth_activity.get(&(kind, key)).map(|t| rfc3339(*t)),
            mfa_enabled: Some(mfa_enabled(obj)),
        }),
        Kind::ApiKey => serde_json::to_value(ApiKeyStatus {
            observed_generation: generation,
            conditions: with_conditions(&prev_conds, vec![valid]),
            last_used_at: view.auth_activity.get(&(kind, key)).map(|t| rfc3339(*t)),
        }),
        Kind::KubeKumaSettings => serde_json::to_value(SettingsStatus {
            observed_generation: generation,
            conditions: with_conditions(&prev_conds, vec![valid]),
        }),
    };
    let value = value.unwrap_or(Value::Null);
    owned_fields(kind)
        .iter()
        .map(|f| (f.to_string(), value.get(*f).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// The status of a Monitor: its Valid and Ready conditions and, when it runs, its last
/// result, uptime, certificate, next run and push token.
fn monitor_status(
    key: &ObjKey,
    generation: Option<i64>,
    prev_conds: &[Condition],
    valid: Condition,
    view: &View<'_>,
) -> MonitorStatus {
    let running = view.snapshot.monitors.get(key);
    let live = view.live.get(key);
    let ready = ready_condition(running.map(|m| (m, live)), prev_conds, generation, view.now);
    let mut status = MonitorStatus {
        observed_generation: generation,
        conditions: with_conditions(prev_conds, vec![valid, ready]),
        ..MonitorStatus::default()
    };
    let Some(m) = running else {
        return status;
    };
    let paused = !m.spec.is_enabled();
    let state = match (paused, live) {
        (true, _) => MonitorState::Paused,
        (false, Some(l)) => l.tracker.shown(),
        (false, None) => MonitorState::Pending,
    };
    let checked = live.filter(|l| l.checked_at.is_some());
    status.last_result = Some(LastResult {
        state: Some(state),
        checked_at: checked.and_then(|l| l.checked_at).map(rfc3339),
        latency_ms: checked.and_then(|l| l.latency_ms).map(|l| l.round() as i64),
        attempts: checked.map(|l| i64::from(l.attempts)).filter(|a| *a > 0),
        reason: checked.and_then(|l| l.reason).map(|r| r.as_str().into()),
        message: checked.and_then(|l| l.message.clone()),
    });
    status.uptime = view.uptime.get(key).cloned();
    status.cert = live.and_then(|l| l.cert.as_ref()).map(|c| CertStatus {
        expires_at: Some(rfc3339(c.expires_at)),
        days_until_expiry: Some(c.days_left),
    });
    status.next_run_at = match (paused, checked, view.intervals.get(key)) {
        (false, Some(l), Some(every)) => l
            .checked_at
            .and_then(|at| chrono::Duration::from_std(*every).ok().map(|d| at + d))
            .map(rfc3339),
        _ => None,
    };
    status.push_token = live
        .and_then(|l| l.push_token.as_ref())
        .map(|t| t.expose().to_string());
    status
}

/// The status of a MaintenanceWindow: whether it is active now and when it next starts.
fn maintenance_status(
    key: &ObjKey,
    generation: Option<i64>,
    conditions: Vec<Condition>,
    view: &View<'_>,
) -> MaintenanceWindowStatus {
    let (active, next) = match view.maintenance.get(key) {
        Some((since, next)) => (Some(since.is_some()), next.map(rfc3339)),
        None => (None, None),
    };
    MaintenanceWindowStatus {
        observed_generation: generation,
        conditions,
        next_occurrence_at: next,
        active,
    }
}

/// The status of a StatusPage: when it is in the catalog, how many monitors it shows,
/// their overall status and where it is published.
fn status_page_status(
    key: &ObjKey,
    generation: Option<i64>,
    conditions: Vec<Condition>,
    view: &View<'_>,
) -> StatusPageStatus {
    let mut status = StatusPageStatus {
        observed_generation: generation,
        conditions,
        ..StatusPageStatus::default()
    };
    if let Some(p) = view.snapshot.status_pages.get(key) {
        let refs = p.spec.groups.iter().flat_map(|g| g.monitors.iter());
        let keys: Vec<ObjKey> = refs
            .map(|m| ObjKey::new(m.reference.namespace_or(&key.namespace), &m.reference.name))
            .collect();
        status.monitor_count = Some(keys.len() as i64);
        status.overall_status = Some(overall(&keys, view));
        status.published_url = published_url(p, view.site_url);
    }
    status
}

/// A StatusPage's conditions: `Valid`, and `Exposed` when its exposure mode is ingress
/// (whether an Ingress routes its hosts, else why not); an `Exposed` of a page no longer
/// in ingress mode is removed.
fn page_conditions(
    key: &ObjKey,
    prev: &[Condition],
    valid: Condition,
    generation: Option<i64>,
    view: &View<'_>,
) -> Vec<Condition> {
    let Some((pages, opts)) = view.exposure else {
        return with_conditions(prev, vec![valid]);
    };
    let mut ours = vec![valid];
    let prev: Vec<Condition> = match pages.get(key) {
        Some(e) => {
            let (status, reason, message) = e.condition(opts);
            ours.push(condition(
                prev, "Exposed", status, reason, message, generation, view.now,
            ));
            prev.to_vec()
        }
        None => prev
            .iter()
            .filter(|c| c.type_ != "Exposed")
            .cloned()
            .collect(),
    };
    with_conditions(&prev, ours)
}

/// The status of a NotificationPolicy: when it is in the catalog, how many monitors it
/// matches (by selector or by a monitor's `policyRef`) and its providers, each once.
fn policy_status(
    key: &ObjKey,
    generation: Option<i64>,
    conditions: Vec<Condition>,
    snap: &Snapshot,
) -> PolicyStatus {
    let (ns, name) = (&key.namespace, &key.name);
    let mut status = PolicyStatus {
        observed_generation: generation,
        conditions,
        ..PolicyStatus::default()
    };
    if let Some(p) = snap.policies.get(key) {
        let matcher = MonitorMatcher::new(p.spec.match_.as_ref(), ns);
        let named = |k: &ObjKey, m: &kubekuma_crds::Monitor| {
            let policy = m.spec.alerting.as_ref().and_then(|a| a.policy_ref.as_ref());
            k.namespace == *ns && policy.is_some_and(|r| r.name == *name)
        };
        let matched = snap.monitors.iter();
        let matched = matched.filter(|(k, m)| named(k, m) || matcher.matches(k, m));
        status.matched_monitors = Some(matched.count() as i64);
        for r in p.spec.provider_refs() {
            let shown = format!("{}/{}", r.reference.namespace_or(ns), r.reference.name);
            if !status.providers.contains(&shown) {
                status.providers.push(shown);
            }
        }
    }
    status
}

/// How many monitors a MonitorSet in the catalog generates; `None` when it is not in the
/// catalog.
fn generated_count(key: &ObjKey, snap: &Snapshot) -> Option<i64> {
    let (ns, name) = (&key.namespace, &key.name);
    snap.monitor_sets.contains_key(key).then(|| {
        let labels = snap.monitors.iter().filter(|(k, m)| {
            let label = m.metadata.labels.as_ref();
            k.namespace == *ns && label.and_then(|l| l.get(MONITOR_SET_LABEL)) == Some(name)
        });
        labels.count() as i64
    })
}

/// The overall status of a page from its monitors' states (the builder's rule).
fn overall(keys: &[ObjKey], view: &View<'_>) -> OverallStatus {
    let shown = keys.iter().filter_map(|k| {
        if !view.snapshot.monitors.contains_key(k) {
            None
        } else if view.in_maintenance.contains(k) {
            Some(Shown::Maintenance)
        } else {
            view.live.get(k).map(|l| Shown::State(l.tracker.shown()))
        }
    });
    OverallStatus::of(shown)
}

/// Where a published page is served: its first host, else under the site's URL.
fn published_url(page: &kubekuma_crds::StatusPage, site_url: Option<&str>) -> Option<String> {
    let s = &page.spec;
    if s.published != Some(true) {
        return None;
    }
    let exposure = s.exposure.as_ref();
    if let Some(host) = exposure.and_then(|e| e.hosts.first()) {
        let scheme = match exposure.and_then(|e| e.tls.as_ref()) {
            Some(_) => "https",
            None => "http",
        };
        return Some(format!("{scheme}://{host}/"));
    }
    site_url
        .filter(|u| !u.is_empty())
        .map(|u| format!("{}/{}/", u.trim_end_matches('/'), s.slug))
}

/// `want` as a merge patch over `prev`: keys of `prev`'s objects that `want` lacks are
/// set to null, since a merge patch keeps the keys it does not name.
fn merge_patch(prev: Option<&Value>, want: Value) -> Value {
    match (prev, want) {
        (Some(Value::Object(p)), Value::Object(w)) => {
            let gone: Vec<String> = (p.keys())
                .filter(|k| !w.contains_key(*k))
                .cloned()
                .collect();
            let mut out: Map<String, Value> = (w.into_iter())
                .map(|(k, v)| {
                    let v = merge_patch(p.get(&k), v);
                    (k, v)
                })
                .collect();
            out.extend(gone.into_iter().map(|k| (k, Value::Null)));
            Value::Object(out)
        }
        (_, want) => want,
    }
}

/// The body of a merge patch of the status subresource.
#[derive(Debug, serde::Serialize)]
struct StatusPatch<'a> {
    status: &'a Map<String, Value>,
}

/// One pending write.
struct Pending {
    kind: Kind,
    id: ResourceId,
    uid: Option<String>,
    /// Conditions or the observed generation changed: written first, and on catalog changes.
    urgent: bool,
    /// When it was last written (never: first in line after the urgent ones).
    last_written: Option<Instant>,
    patch: Map<String, Value>,
    status: Map<String, Value>,
}

impl StatusWriter {
    /// A writer of the objects `objects` holds, from the catalog's snapshots and
    /// findings, the live view and the store (uptime).
    pub fn new(
        client: Client,
        objects: KubeObjects,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        findings: watch::Receiver<Arc<Vec<Finding>>>,
        live: Arc<Mutex<Live>>,
        store: Store,
        opts: StatusOptions,
    ) -> Self {
        StatusWriter {
            client,
            objects,
            snapshots,
            findings,
            live,
            store,
            opts,
            written: HashMap::new(),
            leader: None,
            uptime: HashMap::new(),
        }
    }

    /// Write status while `is_leader` is true, until `shutdown` turns true: a full round
    /// every interval, a round of condition changes when the catalog changes.
    pub async fn run(
        mut self,
        mut is_leader: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.leader = Some(is_leader.clone());
        let mut tick = tokio::time::interval(self.opts.interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut snaps_open, mut findings_open, mut leader_open) = (true, true, true);
        loop {
            let full = tokio::select! {
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
                _ = tick.tick() => true,
                r = self.snapshots.changed(), if snaps_open => {
                    snaps_open = r.is_ok();
                    false
                }
                r = self.findings.changed(), if findings_open => {
                    findings_open = r.is_ok();
                    false
                }
                r = is_leader.changed(), if leader_open => {
                    leader_open = r.is_ok();
                    true
                }
            };
            if !*is_leader.borrow() {
                // Another replica writes meanwhile: start again from the server's status.
                self.written.clear();
                continue;
            }
            self.round(full).await;
        }
    }

    /// One round: every changed field when `full`, else only changed conditions and
    /// generations. Returns the number of patches written.
    pub async fn round(&mut self, full: bool) -> usize {
        let now = Utc::now();
        let snapshot = self.snapshots.borrow().clone();
        let findings = self.findings.borrow().clone();
        if full {
            self.refresh_uptime(&snapshot).await;
        }
        let live: HashMap<ObjKey, LiveMonitor> = match self.live.lock() {
            Ok(l) => (l.monitors.iter())
                .filter(|(k, _)| snapshot.monitors.contains_key(*k))
                .map(|(k, m)| (k.clone(), m.clone()))
                .collect(),
            Err(_) => HashMap::new(),
        };
        let mut view = View::new(&snapshot, &findings, &live, now);
        view.site_url = self.opts.site_url.as_deref();
        let exposure = super::ingress::plan(&snapshot, &self.opts.ingress).pages;
        view.exposure = Some((&exposure, &self.opts.ingress));
        if full {
            view.deliveries = self.last_deliveries().await;
            view.auth_activity = self.auth_activity(&snapshot).await;
        }
        view.uptime = (self.uptime.iter())
            .map(|(k, (_, u))| (k.clone(), u.clone()))
            .collect();

        let mut pending = Vec::new();
        let mut seen = HashSet::new();
        for (kind, obj) in self.objects.kuma() {
            let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
            let name = obj.metadata.name.as_deref().unwrap_or_default();
            let id = ResourceId::new(kind, if kind.namespaced() { ns } else { "" }, name);
            seen.insert(id.clone());
            pending.extend(self.pending(kind, &obj, id, &view, full));
        }
        self.written.retain(|id, _| seen.contains(id));
        // Over the budget, the longest unwritten go first, so every object gets its turn.
        pending.sort_by_key(|p| (!p.urgent, p.last_written));
        let per_second = self.opts.max_per_second.max(1);
        let budget = per_second as usize * self.opts.interval.as_secs().max(1) as usize;
        let pace = Duration::from_secs(1) / per_second;
        let mut written = 0;
        for p in pending.into_iter().take(budget) {
            if written > 0 {
                tokio::time::sleep(pace).await;
            }
            if self.leader.as_ref().is_some_and(|l| !*l.borrow()) {
                break;
            }
            if let Some(resource_version) = self.patch(&p).await {
                written += 1;
                let w = Written {
                    uid: p.uid,
                    resource_version,
                    at: Instant::now(),
                    status: p.status,
                };
                self.written.insert(p.id, w);
            }
        }
        written
    }

    /// What to write for one object this round: the status fields that differ from what
    /// it has (or what was last written), or `None` when nothing does, or (outside a full
    /// round) nothing urgent does.
    fn pending(
        &self,
        kind: Kind,
        obj: &DynamicObject,
        id: ResourceId,
        view: &View<'_>,
        full: bool,
    ) -> Option<Pending> {
        let uid = obj.metadata.uid.clone();
        // What was written, unless the object changed since long enough for the
        // watch to have brought the change (then the server's status is the truth).
        let server = || obj.data["status"].as_object().cloned().unwrap_or_default();
        let prev = match self.written.get(&id) {
            Some(w)
                if w.uid == uid
                    && (w.resource_version == obj.metadata.resource_version
                        || w.at.elapsed() < self.opts.interval) =>
            {
                w.status.clone()
            }
            _ => server(),
        };
        let want = desired(kind, obj, &prev, view);
        let patch: Map<String, Value> = want
            .into_iter()
            .filter(|(k, v)| prev.get(k).unwrap_or(&Value::Null) != v)
            .collect();
        if patch.is_empty() {
            return None;
        }
        let urgent = patch.contains_key("conditions") || patch.contains_key("observedGeneration");
        if !full && !urgent {
            return None;
        }
        let mut status = prev.clone();
        for (k, v) in &patch {
            match v {
                Value::Null => status.remove(k),
                v => status.insert(k.clone(), v.clone()),
            };
        }
        let patch = (patch.into_iter())
            .map(|(k, v)| {
                let wire = merge_patch(prev.get(&k), v);
                (k, wire)
            })
            .collect();
        let last_written = self.written.get(&id).map(|w| w.at);
        Some(Pending {
            kind,
            id,
            uid,
            urgent,
            last_written,
            patch,
            status,
        })
    }

    /// Merge-patch the status subresource: the new resourceVersion, `None` when it failed
    /// (tried again next round).
    async fn patch(&self, p: &Pending) -> Option<Option<String>> {
        let resource = api_resource(p.kind);
        let api: Api<DynamicObject> = if p.kind.namespaced() {
            Api::namespaced_with(self.client.clone(), &p.id.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        };
        let body = StatusPatch { status: &p.patch };
        match api
            .patch_status(&p.id.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(o) => Some(o.metadata.resource_version),
            // Deleted meanwhile: nothing to write.
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => {
                tracing::warn!(resource = %p.id, error = %e, "cannot write status");
                None
            }
        }
    }

    /// `lastDelivery` of every provider that has a finished delivery.
    async fn last_deliveries(&self) -> HashMap<ObjKey, LastDelivery> {
        match self.store.last_deliveries().await {
            Ok(rows) => rows
                .into_iter()
                .map(|d| {
                    let last = LastDelivery {
                        status: Some(d.status.as_str().to_string()),
                        at: d.last_attempt_at.map(rfc3339),
                        error: d.last_error,
                    };
                    (d.provider, last)
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the last deliveries");
                HashMap::new()
            }
        }
    }

    /// The last login of each LocalUser and the last use of each ApiKey.
    async fn auth_activity(&self, snapshot: &Snapshot) -> HashMap<(Kind, ObjKey), DateTime<Utc>> {
        use crate::store::AuthActivity;
        let mut out = HashMap::new();
        let users = snapshot
            .local_users
            .keys()
            .map(|k| (Kind::LocalUser, AuthActivity::UserLogin, k));
        let keys = snapshot
            .api_keys
            .keys()
            .map(|k| (Kind::ApiKey, AuthActivity::ApiKeyUse, k));
        for (kind, what, key) in users.chain(keys) {
            if let Ok(Some(at)) = self.store.auth_activity(what, &key.to_string()).await {
                out.insert((kind, key.clone()), at);
            }
        }
        out
    }

    /// Read uptime of the running monitors whose figures are missing or old.
    async fn refresh_uptime(&mut self, snapshot: &Snapshot) {
        self.uptime.retain(|k, _| snapshot.monitors.contains_key(k));
        let now = Utc::now();
        for key in snapshot.monitors.keys() {
            let fresh = self.uptime.get(key).is_some_and(|(at, u)| {
                // A window without results is read again every round.
                let complete = u.last24h.is_some() && u.last7d.is_some() && u.last30d.is_some();
                at.elapsed() < UPTIME_REFRESH && complete
            });
            if fresh {
                continue;
            }
            let mut windows = [None; 3];
            for (slot, days) in windows.iter_mut().zip([1, 7, 30]) {
                let from = now - chrono::Duration::days(days);
                *slot = match self
                    .store
                    .rollup(&key.namespace, &key.name, from, now)
                    .await
                {
                    Ok(r) => r.uptime_percent().map(|u| (u * 100.0).round() / 100.0),
                    Err(e) => {
                        tracing::debug!(monitor = %key, error = %e, "cannot read uptime");
                        None
                    }
                };
            }
            let summary = UptimeSummary {
                last1h: None,
                last24h: windows[0],
                last7d: windows[1],
                last30d: windows[2],
            };
            self.uptime.insert(key.clone(), (Instant::now(), summary));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::decode::parse_text;
    use crate::catalog::snapshot::build;
    use serde_json::json;

    fn obj(kind: &str, name: &str, generation: i64) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "monitoring.kubekuma.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": "prod", "generation": generation},
        }))
        .unwrap()
    }

    const YAML: &str = "
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: web, namespace: prod, labels: {tier: critical}}
spec: {type: tcp, target: {tcp: {host: localhost, port: 1}}, alerting: {policyRef: {name: p}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: bad, namespace: prod}
spec: {type: tcp, target: {tcp: {host: localhost, port: 99999}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationPolicy
metadata: {name: p, namespace: prod}
spec: {routing: {providers: [{ref: {name: slack}}, {ref: {name: pd, namespace: ops}}]}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {name: page, namespace: prod}
spec:
  slug: status
  title: Status
  published: true
  exposure: {hosts: [status.example.com], tls: {secretName: t}}
  groups: [{name: g, monitors: [{ref: {name: web}}]}]
";

    #[test]
    fn monitor_conditions_and_transition_times() {
        let built = build(&[parse_text("m.yaml", YAML)], None);
        let live = HashMap::new();
        let t0 = Utc::now();
        let view = View::new(&built.snapshot, &built.findings, &live, t0);
        let bad = desired(Kind::Monitor, &obj("Monitor", "bad", 3), &Map::new(), &view);
        assert_eq!(bad["observedGeneration"], 3);
        let valid = &bad["conditions"][0];
        assert_eq!(valid["type"], "Valid");
        assert_eq!(valid["status"], "False");
        assert_eq!(valid["reason"], "ValidationFailed");
        let msg = valid["message"].as_str().unwrap();
        assert!(msg.starts_with("spec.target.tcp.port: "), "{msg}");
        assert_eq!(bad["conditions"][1]["reason"], "NotRunning");
        assert_eq!(bad["lastResult"], Value::Null);

        let good = desired(Kind::Monitor, &obj("Monitor", "web", 1), &Map::new(), &view);
        assert_eq!(good["conditions"][0]["status"], "True");
        assert_eq!(good["conditions"][1]["status"], "Unknown");
        assert_eq!(good["lastResult"]["state"], "pending");

        // Later, unchanged: the transition time stays; changed: it moves.
        let later = View::new(
            &built.snapshot,
            &built.findings,
            &live,
            t0 + chrono::Duration::hours(1),
        );
        let again = desired(Kind::Monitor, &obj("Monitor", "web", 1), &good, &later);
        assert_eq!(again, good);
        let mut live = HashMap::new();
        let mut m = LiveMonitor::default();
        m.tracker.base = MonitorState::Down;
        m.checked_at = Some(t0);
        m.reason = Some(kubekuma_crds::results::FailureReason::Connect);
        m.message = Some("connection refused".into());
        live.insert(ObjKey::new("prod", "web"), m);
        let down_view = View::new(
            &built.snapshot,
            &built.findings,
            &live,
            t0 + chrono::Duration::hours(1),
        );
        let down = desired(Kind::Monitor, &obj("Monitor", "web", 1), &good, &down_view);
        let ready = &down["conditions"][1];
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "Connect");
        assert_eq!(ready["message"], "connection refused");
        assert_ne!(
            ready["lastTransitionTime"],
            good["conditions"][1]["lastTransitionTime"]
        );
        assert_eq!(down["conditions"][0], good["conditions"][0]);
        assert_eq!(down["lastResult"]["reason"], "connect");
        assert!(down["nextRunAt"].is_string());
    }

    #[test]
    fn page_and_policy_fields() {
        let built = build(&[parse_text("m.yaml", YAML)], None);
        let mut live = HashMap::new();
        let mut m = LiveMonitor::default();
        m.tracker.base = MonitorState::Up;
        live.insert(ObjKey::new("prod", "web"), m);
        let view = View::new(&built.snapshot, &built.findings, &live, Utc::now());
        let page = desired(
            Kind::StatusPage,
            &obj("StatusPage", "page", 1),
            &Map::new(),
            &view,
        );
        assert_eq!(page["publishedUrl"], "https://status.example.com/");
        assert_eq!(page["monitorCount"], 1);
        assert_eq!(page["overallStatus"], "operational");
        let policy = desired(
            Kind::NotificationPolicy,
            &obj("NotificationPolicy", "p", 1),
            &Map::new(),
            &view,
        );
        // web by policyRef (bad is invalid); the selector defaults to the namespace.
        assert_eq!(policy["matchedMonitors"], 1);
        assert_eq!(policy["providers"], json!(["prod/slack", "ops/pd"]));
        let valid = &policy["conditions"][0];
        assert_eq!(valid["status"], "True");
        assert!(
            valid["message"]
                .as_str()
                .unwrap()
                .contains("NotificationProvider prod/slack not found")
        );
    }

    #[test]
    fn merge_patches_drop_nested_keys_that_went_away() {
        let prev = json!({"status": "failed", "at": "t1", "error": "rejected"});
        let want = json!({"status": "sent", "at": "t2"});
        assert_eq!(
            merge_patch(Some(&prev), want.clone()),
            json!({"status": "sent", "at": "t2", "error": null})
        );
        assert_eq!(merge_patch(None, want.clone()), want);
        let conditions = json!([{"type": "Valid"}]);
        assert_eq!(
            merge_patch(Some(&json!([{"type": "Ready"}])), conditions.clone()),
            conditions
        );
    }

    #[test]
    fn provider_user_and_key_activity() {
        let built = build(&[parse_text("m.yaml", YAML)], None);
        let live = HashMap::new();
        let mut view = View::new(&built.snapshot, &built.findings, &live, Utc::now());
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        view.deliveries.insert(
            ObjKey::new("prod", "hook"),
            LastDelivery {
                status: Some("failed".into()),
                at: Some(rfc3339(at)),
                error: Some("rejected: HTTP 400".into()),
            },
        );
        view.auth_activity
            .insert((Kind::LocalUser, ObjKey::new("prod", "ann")), at);
        let provider = desired(
            Kind::NotificationProvider,
            &obj("NotificationProvider", "hook", 1),
            &Map::new(),
            &view,
        );
        assert_eq!(provider["lastDelivery"]["status"], "failed");
        assert_eq!(provider["lastDelivery"]["error"], "rejected: HTTP 400");
        let user = desired(
            Kind::LocalUser,
            &obj("LocalUser", "ann", 1),
            &Map::new(),
            &view,
        );
        assert_eq!(user["lastLoginAt"], "2027-01-15T08:00:00Z");
        assert_eq!(user["mfaEnabled"], false);
        let mut with_mfa = obj("LocalUser", "ann", 1);
        with_mfa.data = json!({"spec": {"mfa": {"mode": "required",
            "totpSecretRef": {"name": "ann-totp", "key": "secret"}}}});
        let user = desired(Kind::LocalUser, &with_mfa, &Map::new(), &view);
        assert_eq!(user["mfaEnabled"], true, "{user:?}");
        // Nothing known: the field is cleared (null), not invented.
        let key = desired(Kind::ApiKey, &obj("ApiKey", "ci", 1), &Map::new(), &view);
        assert_eq!(key["lastUsedAt"], Value::Null);
    }

    #[test]
    fn other_conditions_are_kept() {
        let prev = vec![
            Condition {
                type_: "Synced".into(),
                status: "True".into(),
                ..Condition::default()
            },
            Condition {
                type_: "Valid".into(),
                status: "False".into(),
                ..Condition::default()
            },
        ];
        let valid = Condition {
            type_: "Valid".into(),
            status: "True".into(),
            ..Condition::default()
        };
        let out = with_conditions(&prev, vec![valid.clone()]);
        assert_eq!(out, vec![prev[0].clone(), valid]);
    }
}
