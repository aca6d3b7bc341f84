//! Validation findings: where (file, document, resource, field path) and what is wrong.

use std::fmt;

use kubekuma_crds::Kind;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The resource is not used (or the last good version of it is kept).
    Error,
    /// The resource is used, but something looks wrong.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// The identity of a resource: kind, namespace (empty for cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    /// The `kind` (KubeKuma kinds, or `Secret`).
    pub kind: String,
    /// Namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ResourceId {
    /// An identity of one of the ten kinds.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ResourceId {
            kind: kind.as_str().into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Where a document came from: a file (as displayed) and its 1-based document index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// The file, as the user named it (or a description such as `kube`).
    pub file: String,
    /// 1-based index of the YAML document in the file; 0 for the whole file.
    pub doc: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.doc == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{} doc {}", self.file, self.doc)
        }
    }
}

/// One thing `kubekuma validate` reports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// File and document.
    pub origin: Origin,
    /// The resource, when its kind and name could be read.
    pub resource: Option<ResourceId>,
    /// Field path such as `spec.schedule.intervalSeconds`; empty for the whole document.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Finding {
    /// `monitors.yaml doc 3 Monitor production/api-health: spec.x: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(r) = &self.resource {
            write!(f, " {r}")?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A spec checked on its own (no file) that makes no plan: its errors as `path: message`,
/// joined by `; `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(String);

/// The origin of a spec checked on its own, outside any file.
static NOWHERE: Origin = Origin {
    file: String::new(),
    doc: 0,
};

/// Collects findings for one resource; paths are relative to the document root.
#[derive(Debug)]
pub struct Sink<'a> {
    origin: &'a Origin,
    resource: Option<ResourceId>,
    prefix: String,
    /// Everything reported so far.
    pub findings: Vec<Finding>,
}

impl Sink<'static> {
    /// A sink for a spec checked on its own, outside any file.
    pub fn detached() -> Self {
        Sink::new(&NOWHERE, None)
    }
}

impl<'a> Sink<'a> {
    /// A sink for one document.
    pub fn new(origin: &'a Origin, resource: Option<ResourceId>) -> Self {
        Sink {
            origin,
            resource,
            prefix: String::new(),
            findings: Vec::new(),
        }
    }

    /// Report findings of a nested object (a MonitorSet's generated monitor) under a prefix.
    pub fn with_prefix(origin: &'a Origin, resource: Option<ResourceId>, prefix: String) -> Self {
        Sink {
            origin,
            resource,
            prefix,
            findings: Vec::new(),
        }
    }

    fn push(&mut self, severity: Severity, path: &str, message: String) {
        let path = match (self.prefix.is_empty(), path.is_empty()) {
            (true, _) => path.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{} {}", self.prefix, path),
        };
        self.findings.push(Finding {
            severity,
            origin: self.origin.clone(),
            resource: self.resource.clone(),
            path,
            message,
        });
    }

    /// Report an error at `path`.
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, path, message.into());
    }

    /// Report a warning at `path`.
    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, path, message.into());
    }

    /// The errors reported so far, as one [`PlanError`].
    pub fn plan_error(&self) -> PlanError {
        PlanError(
            self.findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(|f| format!("{}: {}", f.path, f.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// Whether an error was reported.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}
