//! The committed CRD YAML must match what the types generate, and must be structural.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use kubekuma_crds::{Kind, crdgen};

/// Regenerates `crds/generated/crds.yaml`; when the committed copy is stale, rewrites it
/// and fails so that the result gets committed (as rust-analyzer's `ensure_file_contents`).
#[test]
fn committed_crds_are_fresh() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("generated/crds.yaml");
    let fresh = crdgen::all_crds_yaml();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        std::fs::write(&path, &fresh).expect("write crds.yaml");
        panic!(
            "{} was stale and has been regenerated: commit the result",
            path.display()
        );
    }
}

fn check_structural(path: &str, s: &JSONSchemaProps, problems: &mut Vec<String>) {
    let preserve = s.x_kubernetes_preserve_unknown_fields == Some(true);
    let int_or_string = s.x_kubernetes_int_or_string == Some(true);
    if s.type_.is_none() && !preserve && !int_or_string {
        problems.push(format!("{path}: no type"));
    }
    if s.ref_path.is_some() {
        problems.push(format!("{path}: $ref is not allowed"));
    }
    if s.properties.is_some() && s.additional_properties.is_some() {
        problems.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    for (name, list) in [
        ("anyOf", &s.any_of),
        ("oneOf", &s.one_of),
        ("allOf", &s.all_of),
    ] {
        for (i, branch) in list.iter().flatten().enumerate() {
            if branch.type_.is_some()
                || branch.description.is_some()
                || branch.default.is_some()
                || branch.additional_properties.is_some()
                || branch.nullable.is_some()
            {
                problems.push(format!(
                    "{path}.{name}[{i}]: type/description/default/nullable inside a junctor"
                ));
            }
        }
    }
    if let Some(d) = &s.default
        && d.0.is_null()
    {
        problems.push(format!("{path}: null default"));
    }
    for (k, v) in s.properties.iter().flatten() {
        check_structural(&format!("{path}.{k}"), v, problems);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) = &s.items {
        check_structural(&format!("{path}[]"), items, problems);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(ap)) = &s.additional_properties {
        check_structural(&format!("{path}{{*}}"), ap, problems);
    }
}

/// The rules of a structural schema an API server enforces (apiextensions `structural`
/// package): a type on every node unless it preserves unknown fields, no `$ref`, no
/// types or descriptions inside anyOf/oneOf/allOf, never properties with additionalProperties.
#[test]
fn schemas_are_structural() {
    let mut problems = Vec::new();
    for kind in Kind::ALL {
        let crd = crdgen::crd(kind);
        assert_eq!(crd.spec.group, kubekuma_crds::GROUP);
        let v = &crd.spec.versions[0];
        assert!(v.served && v.storage);
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind}: status subresource"
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{kind}: short name"
        );
        assert!(
            v.additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 3),
            "{kind}: printer columns"
        );
        check_structural(kind.as_str(), &crdgen::schema(kind), &mut problems);
    }
    assert!(
        problems.is_empty(),
        "non-structural schema:\n{}",
        problems.join("\n")
    );
}

#[test]
fn monitor_columns_and_short_name() {
    let crd = crdgen::crd(Kind::Monitor);
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["mon".to_string()][..])
    );
    let cols: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(cols, ["Type", "State", "Uptime 24h", "Latency ms", "Age"]);
    let settings = crdgen::crd(Kind::KubeKumaSettings);
    assert_eq!(settings.spec.scope, "Cluster");
}
