//! Field shapes that accept both the seed specification's spelling and the original
//! implementation's, so manifests written for either keep working.
//!
//! Renamed fields are plain serde aliases plus an entry in [`SCHEMA_ALIASES`], which adds
//! the old name to the generated CRD schema (an API server would otherwise prune it).
//! Fields whose *type* differs between the two spellings (an integer or an object, a map
//! or a list) cannot be described by a structural schema; they are declared with
//! `x-kubernetes-preserve-unknown-fields` and checked by `kubekuma validate` instead.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `(kind, object path inside the CRD schema, old name, current name)`: every place
/// where the original implementation used another field name or enum value.
/// A path ending in `#enum` names an enum whose value list gains the old value.
pub const SCHEMA_ALIASES: &[(&str, &str, &str, &str)] = &[
    ("Monitor", "spec#enum:type", "k8s", "kubernetes"),
    ("Monitor", "spec.target", "k8s", "kubernetes"),
    ("Monitor", "spec.target.dns", "name", "domain"),
    ("Monitor", "spec.target.ping", "packetCount", "count"),
    (
        "Monitor",
        "spec.successCriteria.http",
        "acceptedStatusCodes",
        "statusCodes",
    ),
    (
        "Monitor",
        "spec.successCriteria.http",
        "latencyMsUnder",
        "maxLatencyMs",
    ),
    ("Monitor", "spec.target.push", "interval", "intervalSeconds"),
    ("Monitor", "spec.target.push", "grace", "graceSeconds"),
    ("NotificationPolicy", "spec", "selector", "match"),
    ("Silence", "spec", "match", "selector"),
    ("MaintenanceWindow", "spec", "match", "selector"),
    ("StatusPage", "spec.content.branding", "logo", "logoUrl"),
    (
        "StatusPage",
        "spec.content.branding",
        "favicon",
        "faviconUrl",
    ),
    (
        "KubeKumaSettings",
        "spec.auth#enum:mode",
        "none",
        "disabled",
    ),
];

/// The schema of a field whose accepted shapes differ in JSON type.
fn free_form(description: &str) -> Schema {
    json_schema!({
        "description": description,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// How often a failed check is retried before the monitor is declared down.
/// Written either as a count (`retries: 3`, with `retryIntervalSeconds` beside it) or,
/// as in the original implementation, as `{maxRetries, retryIntervalSeconds}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Retries {
    /// Extra attempts after the first failure.
    pub max_retries: i64,
    /// Seconds between attempts, when given in the object form.
    pub retry_interval_seconds: Option<i64>,
    /// Whether the manifest used the object form (kept so a round trip is faithful).
    pub object_form: bool,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetriesObject {
    #[serde(default)]
    max_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_interval_seconds: Option<i64>,
}

impl<'de> Deserialize<'de> for Retries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(|max_retries| Retries {
                    max_retries,
                    retry_interval_seconds: None,
                    object_form: false,
                })
                .ok_or_else(|| D::Error::custom(format!("expected a whole number, got {n}"))),
            serde_json::Value::Object(_) => {
                let o: RetriesObject = serde_json::from_value(v).map_err(D::Error::custom)?;
                Ok(Retries {
                    max_retries: o.max_retries.unwrap_or(0),
                    retry_interval_seconds: o.retry_interval_seconds,
                    object_form: true,
                })
            }
            other => Err(D::Error::custom(format!(
                "expected a retry count or an object {{maxRetries, retryIntervalSeconds}}, got {}",
                describe(&other)
            ))),
        }
    }
}

impl Serialize for Retries {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.object_form {
            RetriesObject {
                max_retries: Some(self.max_retries),
                retry_interval_seconds: self.retry_interval_seconds,
            }
            .serialize(s)
        } else {
            s.serialize_i64(self.max_retries)
        }
    }
}

/// Schema for [`Retries`].
pub fn retries_schema(_: &mut SchemaGenerator) -> Schema {
    free_form(
        "Retries before the monitor is declared down: an integer count, or an object {maxRetries, retryIntervalSeconds}.",
    )
}

/// HTTP headers, written as a map (`Authorization: Bearer …`) or, as in the original
/// implementation, as a list of `{name, value}`. Values may contain `${SECRET:name:key}`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Headers(pub BTreeMap<String, String>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderPair {
    name: String,
    value: String,
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::Object(map) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    match v {
                        serde_json::Value::String(s) => {
                            out.insert(k, s);
                        }
                        serde_json::Value::Number(n) => {
                            out.insert(k, n.to_string());
                        }
                        serde_json::Value::Bool(b) => {
                            out.insert(k, b.to_string());
                        }
                        other => {
                            return Err(D::Error::custom(format!(
                                "header {k}: expected a string value, got {}",
                                describe(&other)
                            )));
                        }
                    }
                }
                Ok(Headers(out))
            }
            serde_json::Value::Array(items) => {
                let mut out = BTreeMap::new();
                for (i, item) in items.into_iter().enumerate() {
                    let p: HeaderPair = serde_json::from_value(item)
                        .map_err(|e| D::Error::custom(format!("entry {i}: {e}")))?;
                    out.insert(p.name, p.value);
                }
                Ok(Headers(out))
            }
            other => Err(D::Error::custom(format!(
                "expected a map of header names to values, or a list of {{name, value}}, got {}",
                describe(&other)
            ))),
        }
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Schema for [`Headers`].
pub fn headers_schema(_: &mut SchemaGenerator) -> Schema {
    free_form(
        "HTTP headers: a map of name to value, or a list of {name, value}. Values may use ${SECRET:secret-name:key}.",
    )
}

/// Which events of a monitor may notify: a list (`[down, up, certExpiring]`) or, as in
/// the original implementation, an object of booleans (`{down: true, flapping: false}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotifyOn {
    /// The monitor went down.
    pub down: bool,
    /// The monitor came back up.
    pub up: bool,
    /// The monitor started flapping.
    pub flapping: bool,
    /// Its TLS certificate is about to expire.
    pub cert_expiring: bool,
}

impl Default for NotifyOn {
    fn default() -> Self {
        NotifyOn {
            down: true,
            up: true,
            flapping: true,
            cert_expiring: true,
        }
    }
}

/// The event names accepted in `notifyOn`.
pub const NOTIFY_EVENTS: &[&str] = &["down", "up", "flapping", "certExpiring"];

impl<'de> Deserialize<'de> for NotifyOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        fn set<E: serde::de::Error>(out: &mut NotifyOn, name: &str, on: bool) -> Result<(), E> {
            match name {
                "down" => out.down = on,
                "up" => out.up = on,
                "flapping" => out.flapping = on,
                "certExpiring" => out.cert_expiring = on,
                other => {
                    return Err(E::custom(format!(
                        "unknown event `{other}`, expected one of {}",
                        NOTIFY_EVENTS.join(", ")
                    )));
                }
            }
            Ok(())
        }
        match v {
            serde_json::Value::Array(items) => {
                let mut out = NotifyOn {
                    down: false,
                    up: false,
                    flapping: false,
                    cert_expiring: false,
                };
                for item in items {
                    match item {
                        serde_json::Value::String(s) => set::<D::Error>(&mut out, &s, true)?,
                        other => {
                            return Err(D::Error::custom(format!(
                                "expected an event name, got {}",
                                describe(&other)
                            )));
                        }
                    }
                }
                Ok(out)
            }
            serde_json::Value::Object(map) => {
                // Object form: events left out keep the original implementation's default (on).
                let mut out = NotifyOn::default();
                for (k, v) in map {
                    match v {
                        serde_json::Value::Bool(b) => set::<D::Error>(&mut out, &k, b)?,
                        other => {
                            return Err(D::Error::custom(format!(
                                "{k}: expected true or false, got {}",
                                describe(&other)
                            )));
                        }
                    }
                }
                Ok(out)
            }
            other => Err(D::Error::custom(format!(
                "expected a list of events or an object of booleans, got {}",
                describe(&other)
            ))),
        }
    }
}

impl NotifyOn {
    /// The enabled event names, in canonical order.
    pub fn events(&self) -> Vec<&'static str> {
        [
            (self.down, "down"),
            (self.up, "up"),
            (self.flapping, "flapping"),
            (self.cert_expiring, "certExpiring"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

impl Serialize for NotifyOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.events().serialize(s)
    }
}

/// Schema for [`NotifyOn`].
pub fn notify_on_schema(_: &mut SchemaGenerator) -> Schema {
    free_form(
        "Events that notify: a list of down, up, flapping, certExpiring; or an object of booleans keyed by those names.",
    )
}

/// Schema for a free-form JSON value (a JSON query's expected value).
pub fn any_value_schema(_: &mut SchemaGenerator) -> Schema {
    free_form("Any JSON value: string, number, boolean, null, list or object.")
}

/// A short description of a JSON value's type for error messages.
pub fn describe(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(b) => format!("boolean `{b}`"),
        serde_json::Value::Number(n) => format!("number {n}"),
        serde_json::Value::String(s) => format!("string {s:?}"),
        serde_json::Value::Array(_) => "a list".into(),
        serde_json::Value::Object(_) => "an object".into(),
    }
}

// `Retries`, `Headers` and `NotifyOn` are only ever used through `schema_with`; these
// impls let them appear inside `Option` in derived schemas if a future field needs it.
impl JsonSchema for Headers {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Headers".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        headers_schema(g)
    }
}
