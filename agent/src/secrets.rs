//! Secret values from core `v1` Secrets, and `${SECRET:name:key}` references in strings.
//! Values never print: `Debug` and `Display` show `<redacted>`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use regex::Regex;

/// A secret value. It can be read with [`SecretValue::expose`] and never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    /// Wrap raw bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(bytes)
    }
    /// The raw bytes, for the one place that sends them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// The value as text (lossy for invalid UTF-8).
    pub fn expose_str(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The Secrets a catalog knows, by namespace and name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecretStore {
    secrets: BTreeMap<(String, String), BTreeMap<String, SecretValue>>,
}

impl SecretStore {
    /// Add or replace a Secret.
    pub fn insert(&mut self, namespace: &str, name: &str, data: BTreeMap<String, SecretValue>) {
        self.secrets
            .insert((namespace.to_string(), name.to_string()), data);
    }

    /// Whether the Secret exists.
    pub fn has_secret(&self, namespace: &str, name: &str) -> bool {
        self.secrets
            .contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// The keys of a Secret, if it exists.
    pub fn keys(&self, namespace: &str, name: &str) -> Option<Vec<&str>> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .map(|d| d.keys().map(String::as_str).collect())
    }

    /// One value.
    pub fn get(&self, namespace: &str, name: &str, key: &str) -> Option<&SecretValue> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|d| d.get(key))
    }

    /// How many Secrets are known.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Whether none are known.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Replace every `${SECRET:name:key}` in `text` with its value from `namespace`.
    /// The error names the missing reference, never a value.
    pub fn resolve(&self, namespace: &str, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for r in secret_refs(text) {
            let r = r?;
            out.push_str(&text[last..r.start]);
            match self.get(namespace, &r.name, &r.key) {
                Some(v) => out.push_str(&v.expose_str()),
                None => {
                    return Err(format!(
                        "secret reference ${{SECRET:{}:{}}} cannot be resolved: {}",
                        r.name,
                        r.key,
                        self.why_missing(namespace, &r.name, &r.key)
                    ));
                }
            }
            last = r.end;
        }
        out.push_str(&text[last..]);
        Ok(out)
    }

    /// Why a reference does not resolve, for messages.
    pub fn why_missing(&self, namespace: &str, name: &str, key: &str) -> String {
        match self.keys(namespace, name) {
            None => format!("Secret {namespace}/{name} not found"),
            Some(keys) => format!(
                "Secret {namespace}/{name} has no key {key:?} (keys: {})",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ),
        }
    }
}

/// One `${SECRET:name:key}` inside a string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
    /// Key in the Secret.
    pub key: String,
    /// Byte range of the reference in the string.
    pub start: usize,
    /// End of that range.
    pub end: usize,
}

/// The spans of `${SECRET:…}` in `text`, left to right: (start, end, the text between
/// `${SECRET:` and the first `}` after it). An opening without a closing `}` is no span.
fn ref_spans(text: &str) -> impl Iterator<Item = (usize, usize, &str)> + '_ {
    const OPEN: &str = "${SECRET:";
    let mut at = 0;
    std::iter::from_fn(move || {
        let start = at + text.get(at..)?.find(OPEN)?;
        let inner = start + OPEN.len();
        let len = text.get(inner..)?.find('}')?;
        at = inner + len + 1;
        Some((start, at, text.get(inner..inner + len)?))
    })
}

/// Every secret reference in `text`; a malformed one is an error naming it.
pub fn secret_refs(text: &str) -> impl Iterator<Item = Result<SecretRef, String>> + '_ {
    ref_spans(text).map(|(start, end, inner)| {
        let whole = (start, end);
        match inner.split_once(':') {
            Some((name, key)) if valid_secret_name(name) && !key.is_empty() && !key.contains(':') => {
                Ok(SecretRef {
                    name: name.to_string(),
                    key: key.to_string(),
                    start: whole.0,
                    end: whole.1,
                })
            }
            _ => Err(format!(
                "malformed secret reference `${{SECRET:{inner}}}`, expected ${{SECRET:secret-name:key}}"
            )),
        }
    })
}

fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// A spelling that looks like a secret reference but is not one (`${SECRETS:…}`,
/// `${secret:…}`), which would be sent literally.
pub fn near_miss_ref(text: &str) -> Option<String> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    // A pattern that does not compile (never: tests compile it) finds no near miss.
    let re = RE
        .get_or_init(|| Regex::new(r"(?i)\$\{\s*secrets?\s*:[^}]*\}").ok())
        .as_ref()?;
    re.find_iter(text)
        .map(|m| m.as_str())
        .find(|m| !m.starts_with("${SECRET:"))
        .map(|m| format!("{}:…}}", m.split(':').next().unwrap_or(m)))
}

/// `text` with every secret reference replaced by `x`, for syntax checks of URLs.
pub fn without_secret_refs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, _) in ref_spans(text) {
        out.push_str(text.get(last..start).unwrap_or_default());
        out.push('x');
        last = end;
    }
    out.push_str(text.get(last..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_redacts() {
        let mut s = SecretStore::default();
        s.insert(
            "prod",
            "api-token",
            [("token".to_string(), SecretValue::new(b"hunter2".to_vec()))].into(),
        );
        assert_eq!(
            s.resolve("prod", "Bearer ${SECRET:api-token:token}")
                .unwrap(),
            "Bearer hunter2"
        );
        let err = s.resolve("prod", "${SECRET:api-token:nope}").unwrap_err();
        assert_eq!(
            err,
            "secret reference ${SECRET:api-token:nope} cannot be resolved: Secret prod/api-token has no key \"nope\" (keys: token)"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn malformed_refs_are_reported() {
        let refs: Vec<_> = secret_refs("a ${SECRET:only-name} b").collect();
        assert_eq!(
            refs,
            vec![Err("malformed secret reference `${SECRET:only-name}`, expected ${SECRET:secret-name:key}".to_string())]
        );
    }

    #[test]
    fn reference_spans_match_the_documented_syntax() {
        let text = "a ${SECRET:s:k} b ${SECRET:t:${SECRET:u:v} c ${SECRET:open";
        let spans: Vec<_> = ref_spans(text).collect();
        assert_eq!(
            spans,
            vec![(2, 15, "s:k"), (18, 42, "t:${SECRET:u:v")],
            "the first closing brace ends a reference; an unclosed one is none"
        );
        assert_eq!(without_secret_refs(text), "a x b x c ${SECRET:open");
        assert_eq!(without_secret_refs("${SECRET:a:b}${SECRET:c:d}"), "xx");
        assert_eq!(without_secret_refs("päß ${SECRET:ä:ö} ü"), "päß x ü");
    }

    #[test]
    fn near_misses_are_named() {
        assert_eq!(
            near_miss_ref("x ${SECRETS:a:b}").as_deref(),
            Some("${SECRETS:…}")
        );
        assert_eq!(near_miss_ref("x ${SECRET:a:b}"), None);
    }
}
