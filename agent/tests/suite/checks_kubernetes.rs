//! The `kubernetes` checker against the fake API server: workloads, pods, nodes, services,
//! custom resources by condition, not found, forbidden and an unreachable API server; and
//! the fake itself with kube's watcher and its write semantics.
//!
//! No real Kubernetes API server runs here, so these tests use a faithful fake
//! (`common::fake_kube`): it speaks the real Kubernetes HTTP protocol to an unmodified
//! `kube::Client` — the REST paths (`/api/v1/...`, `/apis/<group>/<version>/namespaces/<ns>/<plural>/<name>`),
//! JSON objects and `Status` errors, and API discovery (`/api`, `/apis`, `/version`) —
//! so the checker runs exactly the requests it would send to a cluster.

use crate::common::fake_kube;

use std::sync::Arc;
use std::time::Duration;

use fake_kube::FakeKube;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kubekuma_agent::checks::{CheckContext, run_spec as run};
use kubekuma_agent::secrets::SecretStore;
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use kubekuma_crds::{EffectiveSettings, Monitor};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn fake() -> (FakeKube, CheckContext) {
    let fake = FakeKube::start().await;
    let ctx = CheckContext::new(
        EffectiveSettings::default(),
        Arc::new(SecretStore::default()),
    )
    .with_kube_client(fake.client());
    (fake, ctx)
}

/// A Monitor manifest (namespace `prod`) of type kubernetes with this target and criteria.
fn monitor(target: &str, criteria: &str) -> Monitor {
    let mut yaml = format!(
        "apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata:\n  name: m\n  namespace: prod\n\
         spec:\n  type: kubernetes\n  target:\n    kubernetes:\n{}",
        indent(target, 6)
    );
    if !criteria.is_empty() {
        yaml.push_str(&format!(
            "  successCriteria:\n    kubernetes:\n{}",
            indent(criteria, 6)
        ));
    }
    serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn indent(text: &str, by: usize) -> String {
    text.trim()
        .lines()
        .map(|l| format!("{}{}\n", " ".repeat(by), l.trim()))
        .collect()
}

async fn check(ctx: &CheckContext, target: &str, criteria: &str) -> CheckOutcome {
    let m = monitor(target, criteria);
    let ns = m.metadata.namespace.clone().unwrap_or_default();
    let outcome = run(ctx, &ns, &m.spec, TIMEOUT).await;
    eprintln!("{} {:?}: {}", outcome.up, outcome.reason, msg(&outcome));
    outcome
}

fn msg(o: &CheckOutcome) -> &str {
    o.message.as_deref().unwrap_or("")
}

#[track_caller]
fn assert_down(o: &CheckOutcome, reason: FailureReason, message: &str) {
    assert!(!o.up, "expected down ({reason}), got {o:?}");
    assert_eq!(o.reason, Some(reason), "{o:?}");
    assert_eq!(msg(o), message);
}

#[track_caller]
fn assert_up(o: &CheckOutcome, message: Option<&str>) {
    assert!(o.up, "expected up, got {o:?}");
    assert_eq!((o.reason, o.message.as_deref()), (None, message));
}

pub(crate) fn deployment(
    name: &str,
    replicas: i64,
    available: i64,
    generation: i64,
    observed: i64,
) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": "prod", "generation": generation, "labels": { "app": name } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": { "containers": [{ "name": "app", "image": "nginx" }] } },
        },
        "status": { "observedGeneration": observed, "replicas": replicas, "availableReplicas": available, "readyReplicas": available },
    })
}

const DEPLOYMENT_API: &str = "apiVersion: apps/v1\nkind: Deployment\nname: api";

#[tokio::test]
async fn deployment_with_every_replica_available_is_up() {
    let (fake, ctx) = fake().await;
    fake.put_object(deployment("api", 3, 3, 1, 1));
    let o = check(&ctx, DEPLOYMENT_API, "").await;
    assert_up(&o, Some("3/3 replicas available"));
    assert_eq!(
        (o.metadata["ready"].clone(), o.metadata["desired"].clone()),
        (json!(3), json!(3))
    );
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/apis/apps/v1/namespaces/prod/deployments/api"]);
}

#[tokio::test]
async fn deployment_short_of_replicas_is_down_unless_min_ready_percent_allows() {
    let (fake, ctx) = fake().await;
    fake.put_object(deployment("api", 3, 2, 1, 1));
    let o = check(&ctx, DEPLOYMENT_API, "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "2/3 replicas available (67% < 100%)",
    );

    let o = check(&ctx, DEPLOYMENT_API, "minReadyPercent: 60").await;
    assert_up(&o, Some("2/3 replicas available (67%, minimum 60%)"));

    // 66.7% must not read as "67% < 67%".
    let o = check(&ctx, DEPLOYMENT_API, "minReadyPercent: 67").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "2/3 replicas available (66.7% < 67%)",
    );
}

#[tokio::test]
async fn deployment_rollout_in_progress_is_noted_and_zero_replicas_is_up() {
    let (fake, ctx) = fake().await;
    fake.put_object(deployment("api", 3, 1, 2, 1));
    let o = check(&ctx, DEPLOYMENT_API, "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "1/3 replicas available (33% < 100%); rollout in progress",
    );

    fake.put_object(deployment("api", 0, 0, 3, 3));
    let o = check(&ctx, DEPLOYMENT_API, "").await;
    assert_up(&o, Some("scaled to zero"));
}

#[tokio::test]
async fn statefulset_counts_available_replicas() {
    let (fake, ctx) = fake().await;
    let sts = |status: Value| {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": { "name": "db", "namespace": "prod" },
            "spec": { "replicas": 2, "serviceName": "db", "selector": { "matchLabels": { "app": "db" } }, "template": {} },
            "status": status,
        })
    };
    let target = "apiVersion: apps/v1\nkind: StatefulSet\nname: db";
    // Both pods ready, one not yet for minReadySeconds: available counts, not ready.
    fake.put_object(sts(
        json!({ "replicas": 2, "readyReplicas": 2, "availableReplicas": 1 }),
    ));
    let o = check(&ctx, target, "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "1/2 replicas available (50% < 100%)",
    );
    assert_eq!(
        (o.metadata["ready"].clone(), o.metadata["desired"].clone()),
        (json!(1), json!(2))
    );
    fake.put_object(sts(
        json!({ "replicas": 2, "readyReplicas": 2, "availableReplicas": 2 }),
    ));
    assert_up(
        &check(&ctx, target, "").await,
        Some("2/2 replicas available"),
    );
}

#[tokio::test]
async fn statefulset_without_available_replicas_falls_back_to_ready_replicas() {
    // API servers before Kubernetes 1.22 do not report status.availableReplicas.
    let (fake, ctx) = fake().await;
    let sts = |ready: i64| {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": { "name": "db", "namespace": "prod" },
            "spec": { "replicas": 2, "serviceName": "db", "selector": { "matchLabels": { "app": "db" } }, "template": {} },
            "status": { "replicas": 2, "readyReplicas": ready },
        })
    };
    let target = "apiVersion: apps/v1\nkind: StatefulSet\nname: db";
    fake.put_object(sts(1));
    let o = check(&ctx, target, "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "1/2 replicas ready (50% < 100%)",
    );
    fake.put_object(sts(2));
    assert_up(&check(&ctx, target, "").await, Some("2/2 replicas ready"));
}

#[tokio::test]
async fn daemonset_counts_available_pods() {
    let (fake, ctx) = fake().await;
    fake.put_object(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": { "name": "agent", "namespace": "kube-system" },
        "spec": { "selector": { "matchLabels": { "app": "agent" } }, "template": {} },
        "status": { "desiredNumberScheduled": 4, "currentNumberScheduled": 4, "numberReady": 4, "numberAvailable": 3, "numberMisscheduled": 0 },
    }));
    // Four pods ready, one of them not yet for minReadySeconds: numberAvailable counts.
    // The target's namespace wins over the monitor's.
    let target = "apiVersion: apps/v1\nkind: DaemonSet\nname: agent\nnamespace: kube-system";
    let o = check(&ctx, target, "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "3/4 pods available (75% < 100%)",
    );
    let o = check(&ctx, target, "minReadyPercent: 75").await;
    assert_up(&o, Some("3/4 pods available (75%, minimum 75%)"));
}

fn pod(phase: &str, ready: &str, waiting: Option<&str>) -> Value {
    let state = match waiting {
        Some(reason) => json!({ "waiting": { "reason": reason } }),
        None => json!({ "running": { "startedAt": "2026-01-01T00:00:00Z" } }),
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "web-0", "namespace": "prod" },
        "spec": { "containers": [{ "name": "app", "image": "nginx" }] },
        "status": {
            "phase": phase,
            "conditions": [
                { "type": "PodScheduled", "status": "True" },
                { "type": "Ready", "status": ready, "reason": if ready == "True" { Value::Null } else { json!("ContainersNotReady") },
                  "message": if ready == "True" { Value::Null } else { json!("containers with unready status: [app]") } },
            ],
            "containerStatuses": [{ "name": "app", "image": "nginx", "imageID": "", "ready": ready == "True", "restartCount": 4, "state": state }],
        },
    })
}

#[tokio::test]
async fn pod_is_up_when_ready_and_down_when_not_or_completed() {
    let (fake, ctx) = fake().await;
    let target = "apiVersion: v1\nkind: Pod\nname: web-0";
    fake.put_object(pod("Running", "True", None));
    assert_up(&check(&ctx, target, "").await, None);

    fake.put_object(pod("Running", "False", Some("CrashLoopBackOff")));
    let o = check(&ctx, target, "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "pod prod/web-0 is not ready (ContainersNotReady: containers with unready status: [app]); container app: CrashLoopBackOff",
    );

    fake.put_object(pod("Succeeded", "False", None));
    let o = check(&ctx, target, "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "pod prod/web-0 completed (phase Succeeded)",
    );
}

#[tokio::test]
async fn node_ready_condition_decides() {
    let (fake, ctx) = fake().await;
    let node = |status: &str, reason: &str, message: &str| {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": "n1" },
            "status": { "conditions": [
                { "type": "MemoryPressure", "status": "False" },
                { "type": "Ready", "status": status, "reason": reason, "message": message },
            ] },
        })
    };
    let target = "apiVersion: v1\nkind: Node\nname: n1";
    fake.put_object(node(
        "True",
        "KubeletReady",
        "kubelet is posting ready status",
    ));
    assert_up(&check(&ctx, target, "").await, None);

    fake.put_object(node(
        "False",
        "KubeletNotReady",
        "container runtime is down",
    ));
    let o = check(&ctx, target, "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "node n1 is not ready (KubeletNotReady: container runtime is down)",
    );

    fake.put_object(node(
        "Unknown",
        "NodeStatusUnknown",
        "Kubelet stopped posting node status.",
    ));
    let o = check(&ctx, target, "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "node n1 status is unknown (NodeStatusUnknown: Kubelet stopped posting node status.)",
    );
    // Cluster-scoped: the monitor's namespace is not in the path.
    assert!(fake.requests().iter().all(|r| r.path == "/api/v1/nodes/n1"));
}

fn service(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": name, "namespace": "prod" }, "spec": spec })
}

fn slice(name: &str, service: &str, family: &str, endpoints: Value) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": name, "namespace": "prod", "labels": { "kubernetes.io/service-name": service } },
        "addressType": family, "endpoints": endpoints,
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
    })
}

fn endpoint(address: &str, pod: &str, ready: Option<bool>) -> Value {
    let conditions = match ready {
        Some(r) => json!({ "ready": r, "serving": r, "terminating": false }),
        None => json!({}),
    };
    json!({ "addresses": [address], "conditions": conditions, "targetRef": { "kind": "Pod", "namespace": "prod", "name": pod } })
}

#[tokio::test]
async fn service_needs_a_ready_endpoint() {
    let (fake, ctx) = fake().await;
    let spec = json!({ "type": "ClusterIP", "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": 8080 }] });
    fake.put_object(service("web", spec.clone()));
    fake.put_object(service("idle", spec));
    // Dual stack: pod a appears in both families; an unset `ready` counts as ready.
    fake.put_object(slice(
        "web-v4",
        "web",
        "IPv4",
        json!([
            endpoint("10.0.0.1", "a", Some(true)),
            endpoint("10.0.0.2", "b", Some(false))
        ]),
    ));
    fake.put_object(slice(
        "web-v6",
        "web",
        "IPv6",
        json!([endpoint("fd00::1", "a", None)]),
    ));
    fake.put_object(slice(
        "idle-v4",
        "idle",
        "IPv4",
        json!([endpoint("10.0.0.3", "c", Some(false))]),
    ));

    let o = check(&ctx, "apiVersion: v1\nkind: Service\nname: web", "").await;
    assert_up(&o, Some("1 ready endpoint (1 not ready)"));
    assert_eq!(o.metadata["readyEndpoints"], json!(1));
    let list = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/apis/discovery.k8s.io/v1/namespaces/prod/endpointslices")
        .expect("endpointslices listed");
    assert!(
        list.query
            .contains("labelSelector=kubernetes.io%2Fservice-name%3Dweb"),
        "{}",
        list.query
    );

    let o = check(&ctx, "apiVersion: v1\nkind: Service\nname: idle", "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "service prod/idle has no ready endpoints (1 not ready)",
    );
}

#[tokio::test]
async fn external_name_service_is_up_without_endpoints() {
    let (fake, ctx) = fake().await;
    fake.put_object(service(
        "db",
        json!({ "type": "ExternalName", "externalName": "db.example.com" }),
    ));
    let o = check(&ctx, "apiVersion: v1\nkind: Service\nname: db", "").await;
    assert_up(
        &o,
        Some("ExternalName service pointing to db.example.com: no endpoints to check"),
    );
}

fn certificate_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": "certificates.cert-manager.io" },
        "spec": {
            "group": "cert-manager.io", "scope": "Namespaced",
            "names": { "kind": "Certificate", "plural": "certificates", "singular": "certificate", "listKind": "CertificateList" },
            "versions": [{ "name": "v1", "served": true, "storage": true, "subresources": { "status": {} },
                           "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }],
        },
    })
}

fn certificate(conditions: Value) -> Value {
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": { "name": "web-tls", "namespace": "prod" },
        "spec": { "secretName": "web-tls", "dnsNames": ["web.example.com"], "issuerRef": { "name": "letsencrypt" } },
        "status": { "conditions": conditions },
    })
}

const CERTIFICATE: &str = "apiVersion: cert-manager.io/v1\nkind: Certificate\nname: web-tls";

#[tokio::test]
async fn custom_resource_is_judged_by_its_ready_condition() {
    let (fake, ctx) = fake().await;
    let o = check(&ctx, CERTIFICATE, "").await;
    assert_down(
        &o,
        FailureReason::Config,
        "apiVersion cert-manager.io/v1 is not served by the API server (is its CustomResourceDefinition installed?)",
    );

    fake.put_object(certificate_crd());
    fake.put_object(certificate(json!([
        { "type": "Ready", "status": "True", "reason": "Ready", "message": "Certificate is up to date and has not expired" },
    ])));
    let o = check(&ctx, CERTIFICATE, "").await;
    assert_up(
        &o,
        Some("Ready is True (Ready: Certificate is up to date and has not expired)"),
    );
    // The plural came from discovery.
    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths
            .iter()
            .any(|p| p == "/apis/cert-manager.io/v1/namespaces/prod/certificates/web-tls"),
        "{paths:?}"
    );

    fake.put_object(certificate(json!([
        { "type": "Issuing", "status": "True" },
        { "type": "Ready", "status": "False", "reason": "Expired", "message": "Certificate expired on 2026-01-01" },
    ])));
    let o = check(&ctx, CERTIFICATE, "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "certificate prod/web-tls: Ready is False (Expired: Certificate expired on 2026-01-01)",
    );

    let o = check(
        &ctx,
        "apiVersion: cert-manager.io/v1\nkind: Issuer\nname: x",
        "",
    )
    .await;
    assert_down(
        &o,
        FailureReason::Config,
        "apiVersion cert-manager.io/v1 has no kind Issuer",
    );
}

#[tokio::test]
async fn condition_type_chooses_the_condition() {
    let (fake, ctx) = fake().await;
    fake.put_object(certificate_crd());
    fake.put_object(certificate(json!([
        { "type": "Issuing", "status": "True", "reason": "Renewing" },
        { "type": "Ready", "status": "False" },
    ])));
    let o = check(&ctx, CERTIFICATE, "conditionType: Issuing").await;
    assert_up(&o, Some("Issuing is True (Renewing)"));
    let o = check(&ctx, CERTIFICATE, "conditionType: Complete").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "certificate prod/web-tls has no Complete condition",
    );

    // Built-in kinds without special handling go the same way (batch/v1 Job).
    fake.put_object(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": "migrate", "namespace": "prod" },
        "spec": { "template": {} },
        "status": { "conditions": [{ "type": "Complete", "status": "True" }] },
    }));
    let o = check(
        &ctx,
        "apiVersion: batch/v1\nkind: Job\nname: migrate",
        "conditionType: Complete",
    )
    .await;
    assert_up(&o, Some("Complete is True"));
}

#[tokio::test]
async fn missing_resource_is_unhealthy() {
    let (_fake, ctx) = fake().await;
    let o = check(&ctx, DEPLOYMENT_API, "").await;
    assert_down(
        &o,
        FailureReason::Unhealthy,
        "deployment prod/api not found",
    );
    let o = check(&ctx, "apiVersion: v1\nkind: Node\nname: gone", "").await;
    assert_down(&o, FailureReason::Unhealthy, "node gone not found");
}

#[tokio::test]
async fn forbidden_read_names_the_missing_rbac_rule() {
    let (fake, ctx) = fake().await;
    fake.put_object(deployment("api", 3, 3, 1, 1));
    fake.forbid("/apis/apps/v1/namespaces/prod/deployments");
    let o = check(&ctx, DEPLOYMENT_API, "").await;
    assert_down(
        &o,
        FailureReason::Config,
        "forbidden: the agent's service account may not get deployments.apps in namespace prod; \
         grant it a Role or ClusterRole rule with apiGroups [\"apps\"], resources [\"deployments\"], verbs [\"get\"]",
    );

    // A Service needs its EndpointSlices too.
    fake.put_object(service(
        "web",
        json!({ "type": "ClusterIP", "selector": { "app": "web" } }),
    ));
    fake.forbid("/apis/discovery.k8s.io/");
    let o = check(&ctx, "apiVersion: v1\nkind: Service\nname: web", "").await;
    assert_down(
        &o,
        FailureReason::Config,
        "forbidden: the agent's service account may not list endpointslices.discovery.k8s.io in namespace prod; \
         grant it a Role or ClusterRole rule with apiGroups [\"discovery.k8s.io\"], resources [\"endpointslices\"], verbs [\"list\"]",
    );

    fake.forbid("/api/v1/nodes");
    let o = check(&ctx, "apiVersion: v1\nkind: Node\nname: n1", "").await;
    assert_down(
        &o,
        FailureReason::Config,
        "forbidden: the agent's service account may not get nodes; \
         grant it a ClusterRole rule with apiGroups [\"\"], resources [\"nodes\"], verbs [\"get\"]",
    );
}

#[tokio::test]
async fn unreachable_api_server_is_a_connect_failure() {
    let (mut fake, ctx) = fake().await;
    fake.put_object(deployment("api", 3, 3, 1, 1));
    assert!(check(&ctx, DEPLOYMENT_API, "").await.up);
    fake.stop().await;
    let o = check(&ctx, DEPLOYMENT_API, "").await;
    assert!(!o.up);
    assert_eq!(o.reason, Some(FailureReason::Connect), "{o:?}");
    assert!(
        msg(&o)
            .starts_with("cannot reach the Kubernetes API server (reading deployment prod/api): "),
        "{}",
        msg(&o)
    );
}

#[tokio::test]
async fn fake_serves_kube_watcher_with_objects_created_after_the_watch_started() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "prod");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": { "name": "before" }, "data": { "k": "v" },
        }))
        .unwrap(),
    )
    .await
    .unwrap();

    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut initial = Vec::new();
    let bounded = Duration::from_secs(30);
    loop {
        match tokio::time::timeout(bounded, events.next())
            .await
            .expect("watch event")
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(cm) => initial.push(cm.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["before"]);

    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": { "name": "after", "namespace": "prod" }, "data": { "k": "v" },
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let applied = loop {
        if let watcher::Event::Apply(cm) = tokio::time::timeout(bounded, events.next())
            .await
            .expect("watch event")
            .unwrap()
            .unwrap()
        {
            break cm;
        }
    };
    assert_eq!(applied.metadata.name.as_deref(), Some("after"));
    assert_eq!(applied.data.unwrap()["k"], "v");
    // The streaming-list strategy (sendInitialEvents, ended by a bookmark) sees both.
    let mut streamed = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(bounded, streamed.next())
            .await
            .expect("watch event")
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(cm) => initial.push(cm.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["after", "before"]);
    let watch = fake
        .requests()
        .into_iter()
        .find(|r| r.query.contains("watch=true"))
        .expect("a watch request");
    assert_eq!(watch.path, "/api/v1/namespaces/prod/configmaps");

    // A watch from a compacted resourceVersion gets 410 Expired.
    fake.compact();
    let old = Api::<ConfigMap>::namespaced(client, "prod")
        .watch(&kube::api::WatchParams::default(), "1")
        .await
        .unwrap()
        .boxed()
        .next()
        .await
        .unwrap()
        .unwrap();
    match old {
        kube::api::WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn fake_enforces_resource_versions_and_the_status_subresource() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kubekuma");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": { "name": "leader" }, "spec": { "holderIdentity": "a" },
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let err = leases
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );

    let mut mine = created.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let replaced = leases
        .replace("leader", &PostParams::default(), &mine)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    // The same stale resourceVersion again: someone else won.
    let err = leases
        .replace("leader", &PostParams::default(), &mine)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    let err = leases.get("nobody").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );
    assert!(leases.get_opt("nobody").await.unwrap().is_none());

    // Monitors are served (their CRDs are installed); /status merges only status, and a
    // write to the main resource leaves status alone but bumps the generation.
    let monitors: Api<Monitor> = Api::namespaced(client, "prod");
    let m = monitor("apiVersion: v1\nkind: Node\nname: n1", "");
    let m = monitors.create(&PostParams::default(), &m).await.unwrap();
    assert_eq!(m.metadata.generation, Some(1));
    let status =
        json!({ "status": { "observedGeneration": 1 }, "spec": { "description": "ignored" } });
    monitors
        .patch_status("m", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let spec = json!({ "spec": { "description": "kept" }, "status": { "observedGeneration": 9 } });
    let m = monitors
        .patch("m", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    assert_eq!(m.spec.description.as_deref(), Some("kept"));
    assert_eq!(m.metadata.generation, Some(2));
    let stored = fake
        .get_object("monitoring.kubekuma.io/v1", "Monitor", Some("prod"), "m")
        .unwrap();
    assert_eq!(stored["status"]["observedGeneration"], json!(1));
}

#[tokio::test]
async fn fake_serves_discovery_for_every_group() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    for (group, kind, plural) in [
        ("", "Pod", "pods"),
        ("", "Node", "nodes"),
        ("apps", "Deployment", "deployments"),
        ("discovery.k8s.io", "EndpointSlice", "endpointslices"),
        ("coordination.k8s.io", "Lease", "leases"),
        ("monitoring.kubekuma.io", "Monitor", "monitors"),
        (
            "monitoring.kubekuma.io",
            "KubeKumaSettings",
            "kubekumasettings",
        ),
    ] {
        let (ar, caps) = discovery
            .get(group)
            .and_then(|g| g.recommended_kind(kind))
            .unwrap_or_else(|| panic!("{group} {kind} not discovered"));
        assert_eq!(ar.plural, plural);
        assert_eq!(
            caps.scope == kube::discovery::Scope::Cluster,
            kind == "Node" || kind == "KubeKumaSettings",
            "{kind}"
        );
    }
    let (_, caps) = discovery
        .get("apps")
        .unwrap()
        .recommended_kind("Deployment")
        .unwrap();
    assert_eq!(caps.subresources.len(), 1, "deployments/status");

    // A request for aggregated discovery gets the legacy format, as from a server that
    // does not serve aggregated discovery.
    let text = client
        .request_text(
            http::Request::get("/apis")
                .header(
                    http::header::ACCEPT,
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
                )
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["kind"], "APIGroupList");
}
