//! Which monitors a [`MonitorSelector`] selects: every non-empty criterion must hold;
//! without `matchNamespaces` only the selecting resource's own namespace is selected.

use std::collections::BTreeMap;

use kubekuma_crds::Monitor;
use kubekuma_crds::common::{MonitorSelector, NamePattern};
use regex::Regex;

use super::ObjKey;

/// A selector, ready to test monitors.
#[derive(Debug)]
pub struct MonitorMatcher<'a> {
    namespaces: Vec<&'a str>,
    labels: Option<&'a BTreeMap<String, String>>,
    tags: &'a [String],
    names: Vec<NameMatcher<'a>>,
}

#[derive(Debug)]
enum NameMatcher<'a> {
    Exact(&'a str),
    Regex(Regex),
    /// An invalid regular expression (validation rejects these) matches nothing.
    Never,
}

impl<'a> MonitorMatcher<'a> {
    /// The matcher of `selector` (none: every monitor of `own_namespace`).
    pub fn new(selector: Option<&'a MonitorSelector>, own_namespace: &'a str) -> Self {
        let namespaces: Vec<&str> = match selector {
            Some(s) if !s.match_namespaces.is_empty() => {
                s.match_namespaces.iter().map(String::as_str).collect()
            }
            _ => vec![own_namespace],
        };
        MonitorMatcher {
            namespaces,
            labels: selector.map(|s| &s.match_labels).filter(|l| !l.is_empty()),
            tags: selector.map(|s| s.match_tags.as_slice()).unwrap_or(&[]),
            names: selector
                .map(|s| s.match_names.iter().map(NameMatcher::new).collect())
                .unwrap_or_default(),
        }
    }

    /// Whether the monitor `key` is selected.
    pub fn matches(&self, key: &ObjKey, m: &Monitor) -> bool {
        if !self.namespaces.contains(&key.namespace.as_str()) {
            return false;
        }
        if let Some(want) = self.labels {
            let have = m.metadata.labels.as_ref();
            if !want
                .iter()
                .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
            {
                return false;
            }
        }
        if !self.tags.is_empty() && !m.spec.tags.iter().any(|t| self.tags.contains(t)) {
            return false;
        }
        self.names.is_empty() || self.names.iter().any(|n| n.matches(&key.name))
    }
}

impl<'a> NameMatcher<'a> {
    fn new(p: &'a NamePattern) -> Self {
        if p.regex == Some(true) {
            Regex::new(&p.pattern).map_or(NameMatcher::Never, NameMatcher::Regex)
        } else {
            NameMatcher::Exact(&p.pattern)
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            NameMatcher::Exact(p) => *p == name,
            NameMatcher::Regex(r) => r.is_match(name),
            NameMatcher::Never => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::decode::parse_text;
    use crate::catalog::snapshot::build;

    #[test]
    fn criteria_are_anded_and_namespace_defaults_to_own() {
        let yaml = "
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: api-a, namespace: prod, labels: {tier: critical}}
spec: {type: tcp, target: {tcp: {host: localhost, port: 1}}, tags: [api]}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: web, namespace: prod}
spec: {type: tcp, target: {tcp: {host: localhost, port: 1}}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: api-b, namespace: dev, labels: {tier: critical}}
spec: {type: tcp, target: {tcp: {host: localhost, port: 1}}}
";
        let snap = build(&[parse_text("m.yaml", yaml)], None).snapshot;
        let selected = |sel: Option<&MonitorSelector>, ns: &str| -> Vec<String> {
            let m = MonitorMatcher::new(sel, ns);
            let keys = snap.monitors.iter().filter(|(k, v)| m.matches(k, v));
            keys.map(|(k, _)| k.to_string()).collect()
        };
        assert_eq!(selected(None, "prod"), ["prod/api-a", "prod/web"]);
        let sel: MonitorSelector = serde_json::from_value(serde_json::json!({
            "matchNamespaces": ["prod", "dev"],
            "matchLabels": {"tier": "critical"},
            "matchNames": [{"pattern": "^api-", "regex": true}],
        }))
        .unwrap();
        assert_eq!(selected(Some(&sel), "other"), ["dev/api-b", "prod/api-a"]);
        let tags: MonitorSelector =
            serde_json::from_value(serde_json::json!({"matchTags": ["api"]})).unwrap();
        assert_eq!(selected(Some(&tags), "prod"), ["prod/api-a"]);
    }
}
