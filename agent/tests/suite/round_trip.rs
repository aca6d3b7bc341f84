//! YAML → types → YAML for every kind: canonical manifests come back exactly; manifests
//! in the original implementation's spelling come back in the canonical spelling and
//! parse to the same values.

use std::path::Path;

use kubekuma_agent::catalog::Resource;
use kubekuma_agent::catalog::decode::{Decoded, parse_text};
use kubekuma_crds::Kind;
use pretty_assertions::assert_eq;

fn resource_json(r: &Resource) -> serde_json::Value {
    r.to_json().unwrap()
}

fn kuma_docs(file: &str, text: &str) -> Vec<(serde_json::Value, Resource)> {
    let parsed = parse_text(file, text);
    assert!(parsed.syntax_error.is_none());
    parsed
        .docs
        .into_iter()
        .filter_map(|d| match d.decoded {
            Decoded::Kuma(r) => Some((d.value, *r)),
            _ => None,
        })
        .collect()
}

/// Re-read a serialized resource as YAML text, as a user's `kubectl get -o yaml` would.
fn reparse(r: &Resource) -> Resource {
    let yaml = serde_yaml_ng::to_string(&resource_json(r)).unwrap();
    let mut docs = kuma_docs("roundtrip.yaml", &yaml);
    assert_eq!(docs.len(), 1, "{yaml}");
    docs.remove(0).1
}

#[test]
fn canonical_manifests_round_trip_exactly_for_every_kind() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/all-kinds.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs = kuma_docs("all-kinds.yaml", &text);
    let mut kinds: Vec<Kind> = docs.iter().map(|(_, r)| r.kind()).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), 10, "one document of every kind: {kinds:?}");
    for (input, resource) in &docs {
        let mut output = resource_json(resource);
        // metadata gains nothing but the defaulted namespace, which the inputs all set.
        if let Some(m) = output.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.retain(|_, v| !v.is_null());
        }
        assert_eq!(&output, input, "{}", resource.id());
        assert_eq!(&reparse(resource), resource);
    }
}

#[test]
fn original_spellings_become_canonical_and_keep_their_meaning() {
    let text = r#"
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: legacy, namespace: default}
spec:
  type: k8s
  schedule:
    intervalSeconds: 30
    timeoutSeconds: 10
    retries: {maxRetries: 2, retryIntervalSeconds: 5}
  target:
    k8s: {apiVersion: apps/v1, kind: Deployment, name: web}
    http:
      url: https://example.com
      headers: [{name: X-A, value: "1"}]
      tls: {verify: false}
  successCriteria:
    http: {acceptedStatusCodes: [200, 302], latencyMsUnder: 900}
  alerting:
    notifyOn: {flapping: false}
"#;
    let docs = kuma_docs("legacy.yaml", text);
    let Resource::Monitor(m) = &docs[0].1 else {
        panic!()
    };
    assert_eq!(m.spec.type_, kubekuma_crds::MonitorType::Kubernetes);
    let json = resource_json(&docs[0].1);
    assert_eq!(json["spec"]["type"], "kubernetes");
    assert_eq!(json["spec"]["target"]["kubernetes"]["name"], "web");
    assert_eq!(
        json["spec"]["successCriteria"]["http"]["statusCodes"],
        serde_json::json!([200, 302])
    );
    assert_eq!(json["spec"]["successCriteria"]["http"]["maxLatencyMs"], 900);
    assert_eq!(
        json["spec"]["target"]["http"]["headers"],
        serde_json::json!({"X-A": "1"})
    );
    assert_eq!(
        json["spec"]["alerting"]["notifyOn"],
        serde_json::json!(["down", "up", "certExpiring"])
    );
    assert_eq!(
        json["spec"]["schedule"]["retries"],
        serde_json::json!({"maxRetries": 2, "retryIntervalSeconds": 5})
    );
    assert!(m.spec.target.http.as_ref().unwrap().skips_tls_verify());
    assert_eq!(&reparse(&docs[0].1), &docs[0].1);
}

#[test]
fn original_manifests_round_trip() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat/test-resources.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs = kuma_docs("test-resources.yaml", &text);
    assert_eq!(docs.len(), 7);
    for (_, r) in &docs {
        assert_eq!(&reparse(r), r);
    }
}
