//! The `MonitorSet` kind: one template, many monitors (one per target).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::common::Condition;

/// Many similar monitors from one template. Each target becomes a Monitor named
/// `<set name>-<target name>` whose spec is the template deep-merged with the target's fields.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "monitoring.kubekuma.io",
    version = "v1",
    kind = "MonitorSet",
    namespaced,
    status = "MonitorSetStatus",
    shortname = "monset",
    category = "kubekuma",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.template.type"}"#,
    printcolumn = r#"{"name":"Monitors","type":"integer","jsonPath":".status.monitorCount"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MonitorSetSpec {
    /// A (partial) Monitor spec shared by every target. The form
    /// `{metadata: {labels}, spec: {...}}` is accepted too.
    #[schemars(schema_with = "template_schema")]
    pub template: serde_json::Value,
    /// Labels added to every generated monitor.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// One entry per generated monitor.
    #[serde(default)]
    pub targets: Vec<MonitorSetTarget>,
}

/// One generated monitor: a name, labels, and Monitor spec fields that override the template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = preserve_unknown)]
pub struct MonitorSetTarget {
    /// Suffix of the generated monitor's name.
    pub name: String,
    /// Labels of this monitor (added to the set's labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Monitor spec fields (e.g. `target`, `schedule`), deep-merged over the template.
    #[serde(flatten)]
    pub overrides: serde_json::Map<String, serde_json::Value>,
}

fn template_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A partial Monitor spec shared by every target; validated after merging.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn preserve_unknown(schema: &mut Schema) {
    schema.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("additionalProperties");
    }
}

/// What the agent reports about a set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorSetStatus {
    /// The `metadata.generation` the agent last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Monitors generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_count: Option<i64>,
}
