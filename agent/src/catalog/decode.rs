//! YAML text → documents → typed resources, with every problem reported as a finding
//! that names the file, the document, the resource and the field path.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kubekuma_crds::{API_VERSION, Kind, crdgen};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Resource;
use super::bounds::{self, Refused};
use crate::findings::{Finding, Origin, ResourceId, Severity, Sink};
use crate::secrets::SecretValue;

/// A Secret read from a manifest. Its values never print.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretDoc {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Decoded `data` and `stringData`.
    pub data: BTreeMap<String, SecretValue>,
}

/// What one document turned out to be.
#[derive(Clone, Debug)]
pub enum Decoded {
    /// One of the ten kinds, type-checked (semantic checks come later).
    Kuma(Box<Resource>),
    /// A core `v1` Secret.
    Secret(SecretDoc),
    /// Something else (a Deployment, ...); a warning says it was ignored.
    Ignored,
    /// Not usable; the findings say why.
    Invalid,
}

/// One YAML document of a file.
#[derive(Clone, Debug)]
pub struct Document {
    /// File and 1-based index.
    pub origin: Origin,
    /// Kind, namespace and name, when they could be read.
    pub id: Option<ResourceId>,
    /// The document as JSON (needed to expand MonitorSets with precise paths).
    pub value: Value,
    /// The decoded resource.
    pub decoded: Decoded,
    /// Problems found so far.
    pub findings: Vec<Finding>,
}

/// The documents of one file.
#[derive(Clone, Debug, Default)]
pub struct FileDocs {
    /// Documents read, in order.
    pub docs: Vec<Document>,
    /// A syntax error that stopped reading (documents after it are unknown).
    pub syntax_error: Option<Finding>,
}

/// Split YAML text into documents and decode each one, within the bounds of
/// [`super::bounds`]: a file over [`bounds::MAX_FILE_BYTES`], past
/// [`bounds::MAX_DOCUMENTS`] documents or [`bounds::MAX_NODES`] nodes (aliases expanded)
/// stops with an error naming the document, like a syntax error.
pub fn parse_text(file: &str, text: &str) -> FileDocs {
    let mut out = FileDocs::default();
    let stop = |doc: usize, message: String| Finding {
        severity: Severity::Error,
        origin: Origin {
            file: file.to_string(),
            doc,
        },
        resource: None,
        path: String::new(),
        message,
    };
    if text.len() as u64 > bounds::MAX_FILE_BYTES {
        out.syntax_error = Some(stop(0, Refused::TooLarge(text.len() as u64).to_string()));
        return out;
    }
    let budget = bounds::Budget::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        if i >= bounds::MAX_DOCUMENTS {
            out.syntax_error = Some(stop(i + 1, Refused::TooManyDocuments.to_string()));
            break;
        }
        let origin = Origin {
            file: file.to_string(),
            doc: i + 1,
        };
        match bounds::document(de, &budget) {
            Ok(Value::Null) => {}
            Ok(value) => out.docs.push(decode_document(origin, value)),
            Err(_) if budget.exhausted() => {
                out.syntax_error = Some(stop(i + 1, Refused::TooManyNodes.to_string()));
                break;
            }
            Err(e) => {
                out.syntax_error = Some(stop(i + 1, format!("invalid YAML: {e}")));
                break;
            }
        }
    }
    out
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// Decode one document (already parsed as JSON) of a file.
pub fn decode_document(origin: Origin, value: Value) -> Document {
    let mut doc = Document {
        origin,
        id: None,
        value,
        decoded: Decoded::Invalid,
        findings: Vec::new(),
    };
    let origin = doc.origin.clone();
    let header = match read_header(&doc.value, &origin) {
        Ok(h) => h,
        Err(findings) => {
            doc.findings = findings;
            return doc;
        }
    };
    doc.id = header.id.clone();
    let mut sink = Sink::new(&origin, header.id.clone());

    // Foreign kinds: core Secrets are read, everything else is skipped with a warning.
    doc.decoded = if header.kind_name == "Secret" && header.api_version == "v1" {
        decode_core_secret(&doc.value, &header, &mut sink)
    } else {
        match header.kind {
            Some(kind) => decode_kuma(&doc.value, kind, &header, &mut sink),
            None => foreign(&header, &mut sink),
        }
    };
    doc.findings = sink.findings;
    doc
}

/// What a document's apiVersion, kind and metadata say about it.
struct Header {
    /// `apiVersion` as written.
    api_version: String,
    /// `kind` as written.
    kind_name: String,
    /// The KubeKuma kind, when `kind` names one.
    kind: Option<Kind>,
    /// Whether the kind is namespaced (unknown kinds count as namespaced).
    namespaced: bool,
    /// `metadata.namespace` as written, when it is a string.
    namespace: Option<String>,
    /// The namespace of the resource's id (`default` when not given, empty when
    /// cluster-scoped).
    ns: String,
    /// The resource's id, when it has a name and a well-formed namespace.
    id: Option<ResourceId>,
}

/// Reads apiVersion, kind and metadata; the findings when the document is not a mapping
/// or lacks a string apiVersion or kind.
fn read_header(value: &Value, origin: &Origin) -> Result<Header, Vec<Finding>> {
    let mut sink = Sink::new(origin, None);
    if !value.is_object() {
        sink.error(
            "",
            format!(
                "expected a mapping with apiVersion, kind and metadata, got {}",
                kubekuma_crds::compat::describe(value)
            ),
        );
        return Err(sink.findings);
    }
    let api_version = str_at(value, "apiVersion").map(str::to_string);
    let kind_name = str_at(value, "kind").map(str::to_string);
    let metadata = value.get("metadata");
    let name = metadata.and_then(|m| str_at(m, "name")).map(str::to_string);
    let namespace = metadata
        .and_then(|m| str_at(m, "namespace"))
        .map(str::to_string);

    let (Some(api_version), Some(kind_name)) = (api_version, kind_name) else {
        for key in ["apiVersion", "kind"] {
            match value.get(key) {
                None => sink.error(key, "required field is missing"),
                Some(Value::String(_)) => {}
                Some(v) => sink.error(
                    key,
                    format!(
                        "expected a string, got {}",
                        kubekuma_crds::compat::describe(v)
                    ),
                ),
            }
        }
        return Err(sink.findings);
    };

    let kind = Kind::parse(&kind_name);
    let namespaced = kind.is_none_or(Kind::namespaced);
    let ns = match (kind, namespaced) {
        (_, false) => String::new(),
        (Some(_), true) => namespace.clone().unwrap_or_else(|| "default".to_string()),
        // Foreign kinds may be cluster-scoped: show the namespace only when given.
        (None, true) if kind_name == "Secret" => {
            namespace.clone().unwrap_or_else(|| "default".to_string())
        }
        (None, true) => namespace.clone().unwrap_or_default(),
    };
    let namespace_malformed = metadata
        .and_then(|m| m.get("namespace"))
        .is_some_and(|n| !n.is_string());
    let id = name
        .as_ref()
        .filter(|_| !namespace_malformed)
        .map(|n| ResourceId {
            kind: kind_name.clone(),
            namespace: ns.clone(),
            name: n.clone(),
        });
    Ok(Header {
        api_version,
        kind_name,
        kind,
        namespaced,
        namespace,
        ns,
        id,
    })
}

/// A core `v1` Secret: metadata checked, unknown top-level fields warned about, the data
/// decoded.
fn decode_core_secret(value: &Value, header: &Header, sink: &mut Sink<'_>) -> Decoded {
    check_metadata(value, header.namespaced, sink);
    if sink.has_errors() {
        return Decoded::Invalid;
    }
    for key in value.as_object().into_iter().flatten().map(|(k, _)| k) {
        const SECRET_FIELDS: &[&str] = &[
            "apiVersion",
            "kind",
            "metadata",
            "data",
            "stringData",
            "type",
            "immutable",
        ];
        if !SECRET_FIELDS.contains(&key.as_str()) {
            sink.warn(key, unknown_in(key, SECRET_FIELDS));
        }
    }
    match decode_secret(value, &header.ns, sink) {
        Some(secret) => Decoded::Secret(secret),
        None => Decoded::Invalid,
    }
}

/// A kind KubeKuma does not know: an error in KubeKuma's group (with a suggestion),
/// otherwise ignored with a warning.
fn foreign(header: &Header, sink: &mut Sink<'_>) -> Decoded {
    let (api_version, kind_name) = (&header.api_version, &header.kind_name);
    if api_version.starts_with(kubekuma_crds::GROUP) {
        let names = Kind::ALL.map(Kind::as_str);
        let hint = match suggest(kind_name, &names) {
            Some(k) => format!(" (did you mean {k}?)"),
            None => String::new(),
        };
        sink.error(
            "kind",
            format!(
                "unknown kind {kind_name:?} in {api_version}{hint}, expected one of {}",
                names.join(", ")
            ),
        );
        Decoded::Invalid
    } else {
        sink.warn(
            "",
            format!("ignored: {api_version} {kind_name} is not a KubeKuma resource"),
        );
        Decoded::Ignored
    }
}

/// A KubeKuma resource: apiVersion and metadata checked, unknown fields reported, then
/// the typed resource (with its namespace filled in) when there are no errors.
fn decode_kuma(value: &Value, kind: Kind, header: &Header, sink: &mut Sink<'_>) -> Decoded {
    if header.api_version != API_VERSION {
        sink.error(
            "apiVersion",
            format!("expected {API_VERSION}, got {:?}", header.api_version),
        );
        return Decoded::Invalid;
    }
    let namespaced = header.namespaced;
    check_metadata(value, namespaced, sink);
    if sink.has_errors() {
        return Decoded::Invalid;
    }
    if !namespaced && header.namespace.is_some() {
        sink.warn(
            "metadata.namespace",
            format!("ignored: {kind} is cluster-scoped"),
        );
    }
    unknown_fields(kind, value, sink);
    crate::rules::string_lengths(sink, value);
    if sink.has_errors() {
        return Decoded::Invalid;
    }
    let mut value = value.clone();
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
        && namespaced
    {
        meta.insert("namespace".into(), Value::String(header.ns.clone()));
    }
    let resource = match kind {
        Kind::Monitor => typed(value, sink).map(Resource::Monitor),
        Kind::MonitorSet => typed(value, sink).map(Resource::MonitorSet),
        Kind::NotificationProvider => typed(value, sink).map(Resource::NotificationProvider),
        Kind::NotificationPolicy => typed(value, sink).map(Resource::NotificationPolicy),
        Kind::StatusPage => typed(value, sink).map(Resource::StatusPage),
        Kind::LocalUser => typed(value, sink).map(Resource::LocalUser),
        Kind::ApiKey => typed(value, sink).map(Resource::ApiKey),
        Kind::Silence => typed(value, sink).map(Resource::Silence),
        Kind::MaintenanceWindow => typed(value, sink).map(Resource::MaintenanceWindow),
        Kind::KubeKumaSettings => typed(value, sink).map(Resource::KubeKumaSettings),
    };
    match resource {
        Some(r) if !sink.has_errors() => Decoded::Kuma(Box::new(r)),
        _ => Decoded::Invalid,
    }
}

pub use crate::rules::dns1123;

fn check_metadata(value: &Value, namespaced: bool, sink: &mut Sink<'_>) {
    let Some(meta) = value.get("metadata") else {
        sink.error("metadata", "required field is missing");
        return;
    };
    if !meta.is_object() {
        sink.error(
            "metadata",
            format!(
                "expected an object, got {}",
                kubekuma_crds::compat::describe(meta)
            ),
        );
        return;
    }
    match meta.get("name") {
        None => sink.error("metadata.name", "required field is missing"),
        Some(Value::String(n)) if !dns1123(n, 253, true) => sink.error(
            "metadata.name",
            format!(
                "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters), got {n:?}"
            ),
        ),
        Some(Value::String(_)) => {}
        Some(v) => sink.error(
            "metadata.name",
            format!(
                "expected a string, got {}",
                kubekuma_crds::compat::describe(v)
            ),
        ),
    }
    for key in meta.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !META_FIELDS.contains(&key.as_str()) {
            sink.warn(&format!("metadata.{key}"), unknown_in(key, META_FIELDS));
        }
    }
    if namespaced && let Some(ns) = meta.get("namespace") {
        match ns {
            Value::String(n) if !dns1123(n, 63, false) => sink.error(
                "metadata.namespace",
                format!(
                    "must be a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters), got {n:?}"
                ),
            ),
            Value::String(_) => {}
            v => sink.error(
                "metadata.namespace",
                format!(
                    "expected a string, got {}",
                    kubekuma_crds::compat::describe(v)
                ),
            ),
        }
    }
}

/// ObjectMeta fields a manifest may carry.
const META_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "finalizers",
    "ownerReferences",
    "managedFields",
    "selfLink",
];

/// The closest of `names` to `key`, if close enough to be a typo.
fn suggest<'a>(key: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .map(|k| {
            (
                strsim::jaro_winkler(&key.to_lowercase(), &k.to_lowercase()),
                *k,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn unknown_in(key: &str, names: &[&str]) -> String {
    match suggest(key, names) {
        Some(k) => format!("unknown field, ignored (did you mean `{k}`?)"),
        None => format!(
            "unknown field, ignored (known fields: {})",
            names.join(", ")
        ),
    }
}

fn decode_secret(value: &Value, ns: &str, sink: &mut Sink<'_>) -> Option<SecretDoc> {
    use base64::Engine as _;
    let name = value.get("metadata")?.get("name")?.as_str()?.to_string();
    let mut data = BTreeMap::new();
    if let Some(d) = value.get("data") {
        let Some(map) = d.as_object() else {
            sink.error("data", "expected a map of keys to base64 values");
            return None;
        };
        for (k, v) in map {
            let Some(s) = v.as_str() else {
                sink.error(&format!("data.{k}"), "expected a base64 string");
                continue;
            };
            let cleaned: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            match base64::engine::general_purpose::STANDARD.decode(cleaned) {
                Ok(bytes) => {
                    data.insert(k.clone(), SecretValue::new(bytes));
                }
                // Nothing of the value is echoed, not even the offending character.
                Err(_) => sink.error(
                    &format!("data.{k}"),
                    "invalid base64 (the value is not shown; use stringData for plain text)",
                ),
            }
        }
    }
    if let Some(d) = value.get("stringData") {
        let Some(map) = d.as_object() else {
            sink.error("stringData", "expected a map of keys to strings");
            return None;
        };
        for (k, v) in map {
            match v {
                Value::String(s) => {
                    data.insert(k.clone(), SecretValue::new(s.clone().into_bytes()));
                }
                _ => sink.error(&format!("stringData.{k}"), "expected a string"),
            }
        }
    }
    if sink.has_errors() {
        return None;
    }
    Some(SecretDoc {
        namespace: ns.to_string(),
        name,
        data,
    })
}

fn typed<T: DeserializeOwned>(value: Value, sink: &mut Sink<'_>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(&value) {
        Ok(t) => Some(t),
        Err(e) => {
            let mut raw_path = e.path().to_string();
            let mut raw_msg = e.inner().to_string();
            // `keyword` and `jsonQuery` targets flatten the HTTP fields, which hides the
            // field path from serde: decode the HTTP part alone to find it.
            for (block, own) in [
                (
                    "spec.target.keyword",
                    &["keyword", "regex", "invert", "caseInsensitive"][..],
                ),
                (
                    "spec.target.jsonQuery",
                    &["query", "expected", "comparison"][..],
                ),
            ] {
                if raw_path == block
                    && let Some(mut inner) = value
                        .pointer(&format!("/{}", block.replace('.', "/")))
                        .and_then(Value::as_object)
                        .cloned()
                {
                    inner.retain(|k, _| !own.contains(&k.as_str()));
                    let http = Value::Object(inner);
                    if let Err(ie) = serde_path_to_error::deserialize::<
                        _,
                        kubekuma_crds::monitor::HttpTarget,
                    >(&http)
                    {
                        let p = ie.path().to_string();
                        if p != "." {
                            raw_path = format!("{block}.{p}");
                            raw_msg = ie.inner().to_string();
                        }
                    }
                }
            }
            let (path, message) = explain_serde_error(&raw_path, &raw_msg);
            sink.error(&path, message);
            None
        }
    }
}

/// Turn serde's wording into ours: `missing field` becomes a path to the field,
/// Rust type names become `an integer`, `a list`, `an object`.
pub fn explain_serde_error(path: &str, msg: &str) -> (String, String) {
    let path = if path == "." {
        String::new()
    } else {
        path.to_string()
    };
    let join = |p: &str, f: &str| {
        if p.is_empty() {
            f.to_string()
        } else {
            format!("{p}.{f}")
        }
    };
    if let Some(rest) = msg.strip_prefix("missing field `")
        && let Some(field) = rest.strip_suffix('`')
    {
        return (join(&path, field), "required field is missing".into());
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        return (
            path,
            format!("expected {}, got {}", rust_type_words(expected), got),
        );
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        return (
            path,
            format!("expected {}, got {}", rust_type_words(expected), got),
        );
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `")
        && let Some((got, expected)) = rest.split_once("`, expected ")
    {
        return (
            path,
            format!(
                "unknown value {got:?}, expected {}",
                expected.replace('`', "")
            ),
        );
    }
    if msg.contains("premature end of input")
        || msg.contains("input contains invalid characters")
        || msg.contains("input is out of range")
        || msg.contains("trailing input")
    {
        return (
            path,
            format!("expected an RFC 3339 timestamp such as 2024-01-15T10:00:00Z ({msg})"),
        );
    }
    (path, msg.to_string())
}

fn rust_type_words(expected: &str) -> String {
    match expected {
        "i64" | "i32" | "u64" | "u32" | "u16" | "u8" | "usize" => "an integer".into(),
        "f64" | "f32" => "a number".into(),
        "a sequence" => "a list".into(),
        "a map" => "an object".into(),
        e if e.starts_with("struct ") => "an object".into(),
        e => e.to_string(),
    }
}

fn schemas() -> &'static HashMap<Kind, JSONSchemaProps> {
    static S: OnceLock<HashMap<Kind, JSONSchemaProps>> = OnceLock::new();
    S.get_or_init(|| {
        Kind::ALL
            .into_iter()
            .map(|k| (k, crdgen::schema(k)))
            .collect()
    })
}

fn unknown_fields(kind: Kind, value: &Value, sink: &mut Sink<'_>) {
    let Some(root) = schemas().get(&kind) else {
        return;
    };
    let Some(obj) = value.as_object() else { return };
    for (k, v) in obj {
        match k.as_str() {
            "apiVersion" | "kind" | "metadata" => {}
            other => match root.properties.as_ref().and_then(|p| p.get(other)) {
                Some(schema) => walk(v, schema, other, sink),
                None => sink.warn(k, unknown_message(k, root)),
            },
        }
    }
}

fn unknown_message(key: &str, parent: &JSONSchemaProps) -> String {
    let known: Vec<&String> = parent.properties.iter().flat_map(|p| p.keys()).collect();
    let best = known
        .iter()
        .map(|k| {
            (
                strsim::jaro_winkler(&key.to_lowercase(), &k.to_lowercase()),
                *k,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, k)) => format!("unknown field, ignored (did you mean `{k}`?)"),
        None => format!(
            "unknown field, ignored (known fields: {})",
            known
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn walk(value: &Value, schema: &JSONSchemaProps, path: &str, sink: &mut Sink<'_>) {
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(props) = &schema.properties {
                for (k, v) in map {
                    let child = format!("{path}.{k}");
                    match props.get(k) {
                        Some(s) => walk(v, s, &child, sink),
                        None => sink.warn(&child, unknown_message(k, schema)),
                    }
                }
            } else if let Some(JSONSchemaPropsOrBool::Schema(ap)) = &schema.additional_properties {
                for (k, v) in map {
                    walk(v, ap, &format!("{path}.{k}"), sink);
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(s)) = &schema.items {
                for (i, v) in items.iter().enumerate() {
                    walk(v, s, &format!("{path}[{i}]"), sink);
                }
            }
        }
        _ => {}
    }
}
