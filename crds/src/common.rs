//! Building blocks shared by several kinds: references, conditions, selectors.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to one key of a core `v1` Secret in the referring resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's `data` or `stringData`.
    pub key: String,
}

/// A reference to another KubeKuma resource by name, optionally in another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Namespace of the referenced resource; the referring resource's namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the referenced resource.
    pub name: String,
}

impl ObjectRef {
    /// The namespace this reference points into, given the referrer's namespace.
    pub fn namespace_or<'a>(&'a self, referrer: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(referrer)
    }
}

/// A reference to a resource in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Name of the referenced resource.
    pub name: String,
}

/// A list entry wrapping a reference, as in `providers: [{ref: {name: x}}]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefEntry {
    /// The referenced resource.
    #[serde(rename = "ref")]
    pub reference: ObjectRef,
}

/// A status condition in the usual Kubernetes shape (`Valid`, `Ready`, ...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Valid` or `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The status every kind carries at least: generation seen and conditions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicStatus {
    /// The `metadata.generation` the agent last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` (and kind-specific) conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A name pattern: exact, or a regular expression when `regex` is true.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamePattern {
    /// The exact name, or a regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// Treat `pattern` as a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<bool>,
}

/// Which monitors a policy, silence or maintenance window applies to.
/// Every non-empty criterion must match (AND); an empty selector matches every monitor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorSelector {
    /// Monitors in any of these namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_namespaces: Vec<String>,
    /// Monitors carrying all of these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Monitors with any of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_tags: Vec<String>,
    /// Monitors whose name matches any of these patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_names: Vec<NamePattern>,
}
