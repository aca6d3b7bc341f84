//! The `kubernetes` checker: the health of one named resource, read through the API server.
//!
//! What "healthy" means depends on the kind:
//!
//! - `apps/v1` Deployment, StatefulSet, DaemonSet: available replicas (`availableReplicas`;
//!   DaemonSet: `numberAvailable` of `desiredNumberScheduled`) against the desired count
//!   (a StatefulSet from an API server too old to report `availableReplicas` is judged by
//!   `readyReplicas`), up when the share is at least `minReadyPercent` (default
//!   100); zero desired replicas is up ("scaled to zero"). A Deployment whose
//!   `observedGeneration` lags its `generation` gets the note "rollout in progress".
//! - `v1` Pod: the `Ready` condition is `True`. A pod that ran to completion (phase
//!   `Succeeded`) is down ("completed"): a monitored pod is expected to keep serving.
//! - `v1` Node: the `Ready` condition is `True` (a cordoned node is still up).
//! - `v1` Service: at least one ready endpoint among its EndpointSlices (label
//!   `kubernetes.io/service-name`; an endpoint is ready unless `conditions.ready` is
//!   false). `minReadyPercent` does not apply: a Service has no desired count. An
//!   `ExternalName` Service has no endpoints and is up.
//! - any other kind, custom resources included: the kind is resolved through discovery and
//!   the condition `conditionType` (default `Ready`) in `status.conditions` must be `True`.
//!
//! A missing resource is `unhealthy`; a forbidden read, an unknown apiVersion or kind and a
//! missing client configuration are `config` (a 403 names the RBAC rule the agent's
//! service account lacks); an API server that cannot be reached is `connect`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kubekuma_crds::monitor::{KubernetesTarget, MonitorSpec};
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use serde_json::Value;

use super::{Attempt, CheckContext, error_chain, excerpt, find_tls_error};
use crate::findings::Sink;
use crate::rules::dns1123;

/// Most characters of a condition's or status's message quoted in ours.
const DETAIL_CHARS: usize = 200;

/// A `kubernetes` monitor's resource and criteria, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct KubernetesPlan {
    /// The namespace the resource is read in: the target's, else the monitor's.
    namespace: String,
    /// The resource: `apiVersion`, `kind` and `name` are well formed.
    target: KubernetesTarget,
    /// `successCriteria.kubernetes.minReadyPercent`, 0-100 (default 100).
    min_ready: i64,
    /// The condition that must be `True` for other kinds (default `Ready`).
    condition: String,
}

/// The plan of a `kubernetes` monitor in `namespace`: `spec.target.kubernetes` checked.
pub(crate) fn plan(
    namespace: &str,
    spec: &MonitorSpec,
    sink: &mut Sink<'_>,
) -> Option<KubernetesPlan> {
    let k = spec.target.kubernetes.as_ref()?;
    let av = &k.api_version;
    let parts: Vec<&str> = av.split('/').collect();
    if av.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        sink.error(
            "spec.target.kubernetes.apiVersion",
            format!("must be `version` or `group/version` (e.g. apps/v1), got {av:?}"),
        );
    }
    if k.kind.is_empty() || !k.kind.starts_with(|c: char| c.is_ascii_uppercase()) {
        sink.error(
            "spec.target.kubernetes.kind",
            format!("must be a kind such as Deployment, got {:?}", k.kind),
        );
    }
    if !dns1123(&k.name, 253, true) {
        sink.error(
            "spec.target.kubernetes.name",
            format!("must be a resource name, got {:?}", k.name),
        );
    }
    let criteria = spec
        .success_criteria
        .as_ref()
        .and_then(|c| c.kubernetes.as_ref());
    Some(KubernetesPlan {
        namespace: k
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(namespace)
            .to_string(),
        target: k.clone(),
        min_ready: criteria
            .and_then(|c| c.min_ready_percent)
            .unwrap_or(100)
            .clamp(0, 100),
        condition: criteria
            .and_then(|c| c.condition_type.as_deref())
            .filter(|c| !c.is_empty())
            .unwrap_or("Ready")
            .to_string(),
    })
}

/// Run a `kubernetes` monitor's check.
pub(crate) async fn check(
    ctx: &CheckContext,
    plan: &KubernetesPlan,
    _attempt: &Attempt,
) -> CheckOutcome {
    let (target, min_ready, condition) = (&plan.target, plan.min_ready, plan.condition.as_str());
    let client = match ctx.kube_client().await {
        Ok(c) => c,
        Err(e) => {
            return CheckOutcome::down(
                0.0,
                FailureReason::Config,
                format!(
                    "no Kubernetes API configuration (neither a kubeconfig nor an in-cluster service account): {e}"
                ),
            );
        }
    };
    let probe = Probe {
        client,
        namespace: &plan.namespace,
        target,
    };
    let (group, version) = match target.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", target.api_version.as_str()),
    };
    let result = match (group, version, target.kind.as_str()) {
        ("apps", "v1", "Deployment") => probe.deployment(min_ready).await,
        ("apps", "v1", "StatefulSet") => probe.stateful_set(min_ready).await,
        ("apps", "v1", "DaemonSet") => probe.daemon_set(min_ready).await,
        ("", "v1", "Pod") => probe.pod().await,
        ("", "v1", "Node") => probe.node().await,
        ("", "v1", "Service") => probe.service().await,
        _ => probe.condition(group, version, condition).await,
    };
    result.unwrap_or_else(|down| down)
}

/// One resource to read.
struct Probe<'a> {
    client: kube::Client,
    namespace: &'a str,
    target: &'a KubernetesTarget,
}

/// The resource being checked, for messages and RBAC hints.
struct Subject {
    resource: ApiResource,
    /// `None` for cluster-scoped kinds.
    namespace: Option<String>,
    name: String,
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.resource.kind.to_lowercase();
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

type Checked = Result<CheckOutcome, CheckOutcome>;

impl Probe<'_> {
    /// The subject of a built-in kind.
    fn builtin<K: kube::Resource<DynamicType = ()>>(&self, namespaced: bool) -> Subject {
        Subject {
            resource: ApiResource::erase::<K>(&()),
            namespace: namespaced.then(|| self.namespace.to_string()),
            name: self.target.name.clone(),
        }
    }

    /// Read the subject as a typed object.
    async fn get_typed<K>(&self, subject: &Subject) -> Result<K, CheckOutcome>
    where
        K: kube::Resource + serde::de::DeserializeOwned,
    {
        let obj = self.get(subject).await?;
        obj.try_parse::<K>().map_err(|e| {
            CheckOutcome::down(
                0.0,
                FailureReason::Protocol,
                format!("cannot read {subject} as {}: {e}", subject.resource.kind),
            )
        })
    }

    /// Read the subject.
    async fn get(&self, subject: &Subject) -> Result<DynamicObject, CheckOutcome> {
        let api: Api<DynamicObject> = match &subject.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &subject.resource),
            None => Api::all_with(self.client.clone(), &subject.resource),
        };
        api.get(&subject.name).await.map_err(|e| {
            api_error(
                &e,
                subject,
                &Access::new("get", &subject.resource, subject.namespace.as_deref()),
            )
        })
    }

    async fn deployment(&self, min_ready: i64) -> Checked {
        let subject = self.builtin::<Deployment>(true);
        let d: Deployment = self.get_typed(&subject).await?;
        let status = d.status.unwrap_or_default();
        let desired = d.spec.and_then(|s| s.replicas).unwrap_or(1);
        let available = status.available_replicas.unwrap_or(0);
        let rolling = matches!(
            (d.metadata.generation, status.observed_generation),
            (Some(generation), Some(observed)) if observed < generation
        );
        let note = rolling.then_some("rollout in progress");
        replicas("replicas available", available, desired, min_ready, note)
    }

    async fn stateful_set(&self, min_ready: i64) -> Checked {
        let subject = self.builtin::<StatefulSet>(true);
        let s: StatefulSet = self.get_typed(&subject).await?;
        let desired = s.spec.and_then(|s| s.replicas).unwrap_or(1);
        let status = s.status.unwrap_or_default();
        // `availableReplicas` (ready for `minReadySeconds`) is what Deployments and
        // DaemonSets are judged by too; API servers before 1.22 do not report it, and
        // there ready replicas are the closest measure.
        let (count, what) = match status.available_replicas {
            Some(available) => (available, "replicas available"),
            None => (status.ready_replicas.unwrap_or(0), "replicas ready"),
        };
        replicas(what, count, desired, min_ready, None)
    }

    async fn daemon_set(&self, min_ready: i64) -> Checked {
        let subject = self.builtin::<DaemonSet>(true);
        let d: DaemonSet = self.get_typed(&subject).await?;
        let status = d.status.unwrap_or_default();
        let available = status.number_available.unwrap_or(0);
        replicas(
            "pods available",
            available,
            status.desired_number_scheduled,
            min_ready,
            None,
        )
    }

    async fn pod(&self) -> Checked {
        let subject = self.builtin::<Pod>(true);
        let pod: Pod = self.get_typed(&subject).await?;
        let status = pod.status.unwrap_or_default();
        let unhealthy = |msg: String| Err(CheckOutcome::down(0.0, FailureReason::Unhealthy, msg));
        match status.phase.as_deref() {
            Some("Succeeded") => {
                return unhealthy(format!(
                    "pod {} completed (phase Succeeded)",
                    name(&subject)
                ));
            }
            Some("Failed") => {
                return unhealthy(format!(
                    "pod {} failed{}",
                    name(&subject),
                    detail(status.reason.as_deref(), status.message.as_deref())
                ));
            }
            _ => {}
        }
        let conditions = status.conditions.unwrap_or_default();
        let ready = conditions.iter().find(|c| c.type_ == "Ready");
        if ready.is_some_and(|c| c.status == "True") {
            return Ok(CheckOutcome::up(0.0).with("phase", status.phase.unwrap_or_default()));
        }
        let mut msg = match ready {
            Some(c) => format!(
                "pod {} is not ready{}",
                name(&subject),
                detail(c.reason.as_deref(), c.message.as_deref())
            ),
            None => format!(
                "pod {} is not ready (phase {})",
                name(&subject),
                status.phase.as_deref().unwrap_or("unknown")
            ),
        };
        let waiting = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| {
                let reason = c.state?.waiting?.reason?;
                Some(format!("container {}: {reason}", c.name))
            })
            .collect::<Vec<_>>();
        if !waiting.is_empty() {
            msg.push_str("; ");
            msg.push_str(&waiting.join(", "));
        }
        unhealthy(msg)
    }

    async fn node(&self) -> Checked {
        let subject = self.builtin::<Node>(false);
        let node: Node = self.get_typed(&subject).await?;
        let cordoned = node.spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
        let ready = conditions.iter().find(|c| c.type_ == "Ready");
        let (reason, message) = match ready {
            Some(c) if c.status == "True" => {
                let mut up = CheckOutcome::up(0.0);
                if cordoned {
                    up.message = Some("ready, cordoned (unschedulable)".into());
                }
                return Ok(up);
            }
            Some(c) => (c.reason.as_deref(), c.message.as_deref()),
            None => (None, None),
        };
        let state = match ready.map(|c| c.status.as_str()) {
            Some("Unknown") => "status is unknown",
            Some(_) => "is not ready",
            None => "reports no Ready condition",
        };
        Err(CheckOutcome::down(
            0.0,
            FailureReason::Unhealthy,
            format!("node {} {state}{}", subject.name, detail(reason, message)),
        ))
    }

    async fn service(&self) -> Checked {
        let subject = self.builtin::<Service>(true);
        let svc: Service = self.get_typed(&subject).await?;
        let spec = svc.spec.unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            let mut up = CheckOutcome::up(0.0);
            up.message = Some(format!(
                "ExternalName service pointing to {}: no endpoints to check",
                spec.external_name.as_deref().unwrap_or("nothing")
            ));
            return Ok(up);
        }
        let slices_resource = ApiResource::erase::<EndpointSlice>(&());
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), self.namespace);
        let selector = format!("kubernetes.io/service-name={}", self.target.name);
        let slices = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| {
                api_error(
                    &e,
                    &subject,
                    &Access::new("list", &slices_resource, Some(self.namespace)),
                )
            })?;
        // A pod behind a dual-stack Service appears in one slice per address family.
        let mut ready = std::collections::BTreeSet::new();
        let mut not_ready = std::collections::BTreeSet::new();
        for slice in &slices.items {
            for ep in &slice.endpoints {
                let key = match &ep.target_ref {
                    Some(r) => format!(
                        "{}/{}/{}",
                        r.kind.as_deref().unwrap_or(""),
                        r.namespace.as_deref().unwrap_or(""),
                        r.name.as_deref().unwrap_or("")
                    ),
                    None => ep.addresses.first().cloned().unwrap_or_default(),
                };
                let is_ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if is_ready {
                    ready.insert(key);
                } else {
                    not_ready.insert(key);
                }
            }
        }
        not_ready.retain(|k| !ready.contains(k));
        let not_ready_note = match not_ready.len() {
            0 => String::new(),
            n => format!(" ({n} not ready)"),
        };
        if ready.is_empty() {
            return Err(CheckOutcome::down(
                0.0,
                FailureReason::Unhealthy,
                format!(
                    "service {} has no ready endpoints{not_ready_note}",
                    name(&subject)
                ),
            )
            .with("readyEndpoints", 0));
        }
        let mut up = CheckOutcome::up(0.0).with("readyEndpoints", ready.len() as u64);
        up.message = Some(format!(
            "{} ready endpoint{}{not_ready_note}",
            ready.len(),
            if ready.len() == 1 { "" } else { "s" }
        ));
        Ok(up)
    }

    /// Any other kind: resolve it through discovery, then judge one status condition.
    async fn condition(&self, group: &str, version: &str, condition: &str) -> Checked {
        let gvk = GroupVersionKind::gvk(group, version, &self.target.kind);
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| self.discovery_error(&e))?;
        let subject = Subject {
            namespace: (caps.scope == Scope::Namespaced).then(|| self.namespace.to_string()),
            name: self.target.name.clone(),
            resource,
        };
        let obj = self.get(&subject).await?;
        let found = obj
            .data
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(condition));
        let Some(c) = found else {
            return Err(CheckOutcome::down(
                0.0,
                FailureReason::Unhealthy,
                format!("{subject} has no {condition} condition"),
            ));
        };
        let text = |key: &str| c.get(key).and_then(Value::as_str);
        let status = text("status").unwrap_or("Unknown");
        let detail = detail(text("reason"), text("message"));
        if status == "True" {
            let mut up = CheckOutcome::up(0.0).with("conditionStatus", status);
            up.message = Some(format!("{condition} is True{detail}"));
            return Ok(up);
        }
        Err(CheckOutcome::down(
            0.0,
            FailureReason::Unhealthy,
            format!("{subject}: {condition} is {status}{detail}"),
        )
        .with("conditionStatus", status))
    }

    fn discovery_error(&self, err: &kube::Error) -> CheckOutcome {
        let av = &self.target.api_version;
        let kind = &self.target.kind;
        match err {
            kube::Error::Api(s) if s.code == 404 => CheckOutcome::down(
                0.0,
                FailureReason::Config,
                format!(
                    "apiVersion {av} is not served by the API server (is its CustomResourceDefinition installed?)"
                ),
            ),
            kube::Error::Discovery(kube::error::DiscoveryError::MissingKind(_)) => {
                CheckOutcome::down(
                    0.0,
                    FailureReason::Config,
                    format!("apiVersion {av} has no kind {kind}"),
                )
            }
            kube::Error::Api(s) if s.code == 403 => CheckOutcome::down(
                0.0,
                FailureReason::Config,
                format!(
                    "forbidden: the agent's service account may not read API discovery for {av} (nonResourceURLs /api/*, /apis/*; the system:discovery role grants it)"
                ),
            ),
            other => transport_error(other, &format!("discovery of {kind} in {av}")),
        }
    }
}

/// `ns/name` or `name`.
fn name(subject: &Subject) -> String {
    match &subject.namespace {
        Some(ns) => format!("{ns}/{}", subject.name),
        None => subject.name.clone(),
    }
}

/// Judge `ready` of `desired` replicas against `min_percent`.
fn replicas(what: &str, ready: i32, desired: i32, min_percent: i64, note: Option<&str>) -> Checked {
    let note = note.map(|n| format!("; {n}")).unwrap_or_default();
    if desired <= 0 {
        let mut up = CheckOutcome::up(0.0)
            .with("ready", ready)
            .with("desired", 0);
        up.message = Some(format!("scaled to zero{note}"));
        return Ok(up);
    }
    let (ready64, desired64) = (i64::from(ready.max(0)), i64::from(desired));
    let share = ready64 as f64 * 100.0 / desired64 as f64;
    let counts = format!("{ready}/{desired} {what}");
    if ready64 * 100 >= min_percent * desired64 {
        let percent = if ready64 >= desired64 {
            String::new()
        } else {
            format!(" ({share:.0}%, minimum {min_percent}%)")
        };
        let mut up = CheckOutcome::up(0.0)
            .with("ready", ready)
            .with("desired", desired);
        up.message = Some(format!("{counts}{percent}{note}"));
        return Ok(up);
    }
    // Rounding must not make the share look as large as the minimum.
    let shown = if share.round() >= min_percent as f64 {
        format!("{share:.1}")
    } else {
        format!("{share:.0}")
    };
    Err(CheckOutcome::down(
        0.0,
        FailureReason::Unhealthy,
        format!("{counts} ({shown}% < {min_percent}%){note}"),
    )
    .with("ready", ready)
    .with("desired", desired))
}

/// ` (reason: message)`, ` (reason)`, ` (message)` or nothing.
fn detail(reason: Option<&str>, message: Option<&str>) -> String {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let message = message
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| excerpt(m.as_bytes(), DETAIL_CHARS));
    match (reason, message) {
        (Some(r), Some(m)) => format!(" ({r}: {m})"),
        (Some(r), None) => format!(" ({r})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

/// A request the agent's service account must be allowed to make.
struct Access {
    verb: &'static str,
    /// `deployments.apps`, or `pods` for the core group.
    resource: String,
    /// The group as an RBAC rule spells it (`""` for core).
    group: String,
    plural: String,
    namespace: Option<String>,
}

impl Access {
    fn new(verb: &'static str, resource: &ApiResource, namespace: Option<&str>) -> Self {
        let resource_name = if resource.group.is_empty() {
            resource.plural.clone()
        } else {
            format!("{}.{}", resource.plural, resource.group)
        };
        Access {
            verb,
            resource: resource_name,
            group: resource.group.clone(),
            plural: resource.plural.clone(),
            namespace: namespace.map(str::to_string),
        }
    }

    /// Which rule is missing, in words.
    fn hint(&self) -> String {
        let scope = match &self.namespace {
            Some(ns) => format!(" in namespace {ns}"),
            None => String::new(),
        };
        let binding = if self.namespace.is_some() {
            "a Role or ClusterRole"
        } else {
            "a ClusterRole"
        };
        format!(
            "forbidden: the agent's service account may not {verb} {resource}{scope}; grant it {binding} rule with apiGroups [\"{group}\"], resources [\"{plural}\"], verbs [\"{verb}\"]",
            verb = self.verb,
            resource = self.resource,
            group = self.group,
            plural = self.plural,
        )
    }
}

/// A failed read of `subject` (needing `access`) as an outcome.
fn api_error(err: &kube::Error, subject: &Subject, access: &Access) -> CheckOutcome {
    let kube::Error::Api(status) = err else {
        return transport_error(err, &format!("reading {subject}"));
    };
    match status.code {
        404 => CheckOutcome::down(
            0.0,
            FailureReason::Unhealthy,
            format!("{subject} not found"),
        ),
        403 => CheckOutcome::down(0.0, FailureReason::Config, access.hint()),
        401 => CheckOutcome::down(
            0.0,
            FailureReason::Config,
            "unauthorized: the API server rejected the agent's credentials",
        ),
        code => CheckOutcome::down(
            0.0,
            FailureReason::Status,
            format!(
                "API server answered {code} reading {subject}{}",
                detail(Some(&status.reason), Some(&status.message))
            ),
        ),
    }
}

/// An error below the API: the server could not be reached or spoke nonsense.
fn transport_error(err: &kube::Error, doing: &str) -> CheckOutcome {
    let chain = error_chain(err);
    let root = chain.last().map(|e| e.to_string()).unwrap_or_default();
    if matches!(err, kube::Error::SerdeError(_) | kube::Error::FromUtf8(_)) {
        return CheckOutcome::down(
            0.0,
            FailureReason::Protocol,
            format!("unexpected answer from the API server ({doing}): {root}"),
        );
    }
    if let Some(tls) = find_tls_error(&chain) {
        return CheckOutcome::down(
            0.0,
            FailureReason::Tls,
            format!("TLS with the Kubernetes API server failed: {tls}"),
        );
    }
    let timed_out = chain.iter().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    });
    let reason = if timed_out {
        FailureReason::Timeout
    } else {
        FailureReason::Connect
    };
    CheckOutcome::down(
        0.0,
        reason,
        format!("cannot reach the Kubernetes API server ({doing}): {root}"),
    )
}
