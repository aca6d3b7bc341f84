//! Kube mode: one `networking.k8s.io/v1` Ingress per StatusPage whose
//! `spec.exposure.mode` is `ingress`, made by the leader in the agent's own namespace
//! (where the site overlay's `kubekuma serve` Service lives) and kept in line with the
//! catalog: created when missing, merge-patched when its labels or spec drifted, deleted
//! when no page asks for it any more.
//!
//! Only with a site server ([`IngressOptions::site`], `KUBEKUMA_SITE_SERVICE`, set by
//! `deploy/overlays/site/`): without one nothing is made and the pages' `Exposed`
//! condition says "no site server configured". Each host routes `/` (Prefix) to that
//! Service; `spec.exposure.tls.secretName` becomes the Ingress's TLS (the Secret must be
//! in the agent's namespace); a host another page holds gets no rule
//! ([`crate::catalog::snapshot::exposure_hosts`]). The agent touches only Ingresses it
//! labelled ([`MANAGED_BY`], [`PAGE_LABEL`]): an Ingress of the same name that it did not
//! make is left alone, with a warning. What a round met ([`Outcomes`]) reaches the pages'
//! `Exposed` condition through the status writer, which shares these options.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubekuma_crds::status_page::ExposureMode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::catalog::snapshot::exposure_hosts;
use crate::catalog::{ObjKey, Snapshot};

/// The label every Ingress the agent makes carries, with the value [`MANAGED_BY_VALUE`].
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// The value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "kubekuma";

/// The label naming the page an Ingress serves: `<namespace>.<name>` (bounded to 63
/// characters with a hash suffix when longer).
pub const PAGE_LABEL: &str = "kubekuma.io/status-page";

/// The annotation naming the page an Ingress serves in full: `<namespace>/<name>`.
pub const PAGE_ANNOTATION: &str = "kubekuma.io/status-page";

/// The longest Ingress name and label value the agent makes.
const MAX_NAME: usize = 63;

/// The Service of the site server the Ingresses route to: `name:port`, the port a number
/// or a port name (`kubekuma-site:80`, `kubekuma-site:http`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteService {
    /// The Service's name (in the agent's namespace).
    pub name: String,
    /// Its port.
    pub port: SitePort,
}

/// A Service port, by number or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SitePort {
    /// `80`.
    Number(i32),
    /// `http`.
    Name(String),
}

/// Why a `KUBEKUMA_SITE_SERVICE` value is refused.
#[derive(Debug, thiserror::Error)]
pub enum SiteServiceError {
    /// Not `name:port`.
    #[error("KUBEKUMA_SITE_SERVICE must be SERVICE:PORT (e.g. kubekuma-site:80), got {0:?}")]
    Shape(String),
    /// The name is not a Service name.
    #[error("KUBEKUMA_SITE_SERVICE: {0:?} is not a Service name (a DNS-1035 label)")]
    Name(String),
    /// The port is neither 1–65535 nor a port name.
    #[error(
        "KUBEKUMA_SITE_SERVICE: the port must be 1-65535 or a port name (IANA_SVC_NAME), got {0:?}"
    )]
    Port(String),
}

impl std::str::FromStr for SiteService {
    type Err = SiteServiceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, port) = s
            .split_once(':')
            .ok_or_else(|| SiteServiceError::Shape(s.to_string()))?;
        let label = crate::rules::dns1123(name, 63, false)
            && name.starts_with(|c: char| c.is_ascii_lowercase());
        if !label {
            return Err(SiteServiceError::Name(name.to_string()));
        }
        let port = match port.parse::<i32>() {
            Ok(n) if (1..=65535).contains(&n) => SitePort::Number(n),
            Ok(_) => return Err(SiteServiceError::Port(port.to_string())),
            Err(_) => {
                let ok = crate::rules::dns1123(port, 15, false)
                    && port.chars().any(|c| c.is_ascii_lowercase())
                    && !port.contains("--");
                if !ok {
                    return Err(SiteServiceError::Port(port.to_string()));
                }
                SitePort::Name(port.to_string())
            }
        };
        Ok(SiteService {
            name: name.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for SiteService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.port {
            SitePort::Number(n) => write!(f, "{}:{n}", self.name),
            SitePort::Name(n) => write!(f, "{}:{n}", self.name),
        }
    }
}

/// How the agent exposes pages through Ingresses.
#[derive(Clone, Debug)]
pub struct IngressOptions {
    /// The agent's own namespace: where the Ingresses, the site Service and the TLS
    /// Secrets are.
    pub namespace: String,
    /// The site server's Service (`KUBEKUMA_SITE_SERVICE`); `None`: no site server, no
    /// Ingress.
    pub site: Option<SiteService>,
    /// `spec.ingressClassName` of every Ingress (`KUBEKUMA_INGRESS_CLASS`); `None`: the
    /// cluster's default IngressClass.
    pub class_name: Option<String>,
    /// Time between full rounds (a round also follows every catalog change).
    pub interval: Duration,
    /// What the reconciler last met, shared by every clone of these options (the status
    /// writer's `Exposed` conditions read it).
    pub outcomes: Outcomes,
}

impl Default for IngressOptions {
    fn default() -> Self {
        IngressOptions {
            namespace: "kubekuma".into(),
            site: None,
            class_name: None,
            interval: Duration::from_secs(30),
            outcomes: Outcomes::default(),
        }
    }
}

/// Problems of the last round, by Ingress name (`""`: the round failed as a whole).
#[derive(Clone, Debug, Default)]
pub struct Outcomes(Arc<Mutex<BTreeMap<String, String>>>);

impl Outcomes {
    /// The problem of the Ingress `name`, or of the whole last round.
    pub fn problem(&self, name: &str) -> Option<String> {
        let m = self.0.lock().ok()?;
        m.get(name).or_else(|| m.get("")).cloned()
    }

    fn set(&self, problems: BTreeMap<String, String>) {
        if let Ok(mut m) = self.0.lock() {
            *m = problems;
        }
    }
}

/// How one page in ingress mode is exposed (its `Exposed` condition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exposed {
    /// An Ingress routes these hosts; `taken` are hosts other pages hold.
    Routed {
        /// The Ingress's name.
        ingress: String,
        /// Hosts routed.
        hosts: Vec<String>,
        /// Hosts named but held by another page, with that page.
        taken: Vec<(String, ObjKey)>,
    },
    /// No site server is configured (`KUBEKUMA_SITE_SERVICE`).
    NoSiteServer,
    /// `spec.published` is not true: nothing is built to serve.
    NotPublished,
    /// No host is left: none named, or every one held by another page.
    NoHosts {
        /// Hosts named but held by another page, with that page.
        taken: Vec<(String, ObjKey)>,
    },
}

impl Exposed {
    /// The condition's status, reason and message.
    pub fn condition(&self, opts: &IngressOptions) -> (&'static str, &'static str, String) {
        let taken = |t: &[(String, ObjKey)]| {
            t.iter()
                .map(|(h, k)| format!("host {h} is already exposed by StatusPage {k}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match self {
            Exposed::Routed { ingress, .. } if opts.outcomes.problem(ingress).is_some() => (
                "False",
                "IngressFailed",
                opts.outcomes.problem(ingress).unwrap_or_default(),
            ),
            Exposed::Routed {
                ingress,
                hosts,
                taken: t,
            } => {
                let site = opts.site.as_ref().map(ToString::to_string);
                let mut m = format!(
                    "Ingress {}/{ingress} routes {} to Service {}",
                    opts.namespace,
                    hosts.join(", "),
                    site.unwrap_or_default()
                );
                if !t.is_empty() {
                    m.push_str(&format!("; not routed: {}", taken(t)));
                }
                ("True", "IngressReady", m)
            }
            Exposed::NoSiteServer => (
                "False",
                "NoSiteServer",
                "no site server configured: the agent makes the Ingress only when \
                 KUBEKUMA_SITE_SERVICE names the site server's Service (deploy/overlays/site \
                 sets it)"
                    .into(),
            ),
            Exposed::NotPublished => (
                "False",
                "NotPublished",
                "spec.published is not true: the page is not built, so no Ingress is made".into(),
            ),
            Exposed::NoHosts { taken: t } if t.is_empty() => (
                "False",
                "NoHosts",
                "spec.exposure.hosts is empty: no Ingress is made".into(),
            ),
            Exposed::NoHosts { taken: t } => ("False", "HostConflict", taken(t)),
        }
    }
}

/// What the catalog asks for: the Ingresses by name, and how each page in ingress mode
/// is exposed.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The Ingresses to hold, by name.
    pub ingresses: BTreeMap<String, Ingress>,
    /// Every page whose exposure mode is ingress.
    pub pages: BTreeMap<ObjKey, Exposed>,
}

/// `s` when it has at most [`MAX_NAME`] characters and `hashed` is false; else its start
/// and the first 8 hex digits of the SHA-256 of `full` (what it stands for).
fn bounded(s: &str, full: &str, hashed: bool) -> String {
    if s.len() <= MAX_NAME && !hashed {
        return s.to_string();
    }
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    let mut head: String = s.chars().take(MAX_NAME - 9).collect();
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}-{}", &digest[..8])
}

/// The name of the Ingress of the page `key`: `kubekuma-site-<namespace>-<name>`, bounded
/// ([`bounded`]).
pub fn ingress_name(key: &ObjKey) -> String {
    ingress_name_of(key, false)
}

fn ingress_name_of(key: &ObjKey, hashed: bool) -> String {
    let plain = format!("kubekuma-site-{}-{}", key.namespace, key.name);
    bounded(&plain, &key.to_string(), hashed)
}

/// The [`PAGE_LABEL`] value of the page `key`.
pub fn page_label(key: &ObjKey) -> String {
    bounded(
        &format!("{}.{}", key.namespace, key.name),
        &key.to_string(),
        false,
    )
}

/// The Ingresses and exposure of every page (pure: the catalog and the options).
pub fn plan(snapshot: &Snapshot, opts: &IngressOptions) -> Plan {
    let hosts = exposure_hosts(&snapshot.status_pages);
    // Names two pages would share (`a-b`/`c` and `a`/`b-c`) get the hash suffix.
    let mut uses: HashMap<String, usize> = HashMap::new();
    for key in hosts.keys() {
        *uses.entry(ingress_name(key)).or_default() += 1;
    }
    let mut out = Plan::default();
    for (key, page_hosts) in hosts {
        let Some(page) = snapshot.status_pages.get(&key) else {
            continue;
        };
        let (mine, taken): (Vec<_>, Vec<_>) = page_hosts.into_iter().partition(|h| h.holder == key);
        let mine: Vec<String> = mine.into_iter().map(|h| h.host).collect();
        let taken: Vec<(String, ObjKey)> = taken.into_iter().map(|h| (h.host, h.holder)).collect();
        let exposed = if opts.site.is_none() {
            Exposed::NoSiteServer
        } else if page.spec.published != Some(true) {
            Exposed::NotPublished
        } else if mine.is_empty() {
            Exposed::NoHosts { taken }
        } else {
            let name = ingress_name_of(&key, uses.get(&ingress_name(&key)) > Some(&1));
            let tls = (page.spec.exposure.as_ref())
                .and_then(|e| e.tls.as_ref())
                .map(|t| t.secret_name.clone());
            let ingress = desired_ingress(&key, &name, &mine, tls, opts);
            out.ingresses.insert(name.clone(), ingress);
            Exposed::Routed {
                ingress: name,
                hosts: mine,
                taken,
            }
        };
        out.pages.insert(key, exposed);
    }
    out
}

/// Whether a page is exposed through an Ingress.
pub fn is_ingress(page: &kubekuma_crds::StatusPage) -> bool {
    page.spec.exposure.as_ref().and_then(|e| e.mode) == Some(ExposureMode::Ingress)
}

/// The Ingress of one page.
fn desired_ingress(
    key: &ObjKey,
    name: &str,
    hosts: &[String],
    tls: Option<String>,
    opts: &IngressOptions,
) -> Ingress {
    let port = match opts.site.as_ref().map(|s| &s.port) {
        Some(SitePort::Number(n)) => ServiceBackendPort {
            number: Some(*n),
            name: None,
        },
        Some(SitePort::Name(n)) => ServiceBackendPort {
            number: None,
            name: Some(n.clone()),
        },
        None => ServiceBackendPort::default(),
    };
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: opts
                .site
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            port: Some(port),
        }),
        resource: None,
    };
    let rules = hosts
        .iter()
        .map(|h| IngressRule {
            host: Some(h.clone()),
            http: Some(HTTPIngressRuleValue {
                paths: vec![HTTPIngressPath {
                    path: Some("/".into()),
                    path_type: "Prefix".into(),
                    backend: backend.clone(),
                }],
            }),
        })
        .collect();
    Ingress {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(opts.namespace.clone()),
            labels: Some(labels(key)),
            annotations: Some(BTreeMap::from([(
                PAGE_ANNOTATION.to_string(),
                key.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(IngressSpec {
            ingress_class_name: opts.class_name.clone(),
            tls: tls.map(|secret| {
                vec![IngressTLS {
                    hosts: Some(hosts.to_vec()),
                    secret_name: Some(secret),
                }]
            }),
            rules: Some(rules),
            default_backend: None,
        }),
        status: None,
    }
}

fn labels(key: &ObjKey) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (PAGE_LABEL.to_string(), page_label(key)),
    ])
}

/// What one [`IngressReconciler::round`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Ingresses created.
    pub created: usize,
    /// Ingresses patched (labels or spec drifted).
    pub patched: usize,
    /// Ingresses deleted (no page asks for them).
    pub deleted: usize,
    /// Ingresses whose name is taken by one the agent did not make.
    pub clashes: usize,
}

/// Keeps the Ingresses in line with the catalog (see the module docs).
pub struct IngressReconciler {
    api: Api<Ingress>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    opts: IngressOptions,
}

/// The selector of the Ingresses the agent made.
fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE},{PAGE_LABEL}")
}

/// The merge patch that makes `have` what `want` is: our labels and annotation, and the
/// whole spec (fields we do not set are nulled, lists replaced).
fn patch_body(want: &Ingress) -> Value {
    let spec = want.spec.clone().unwrap_or_default();
    json!({
        "metadata": {
            "labels": want.metadata.labels,
            "annotations": want.metadata.annotations,
        },
        "spec": {
            "ingressClassName": spec.ingress_class_name,
            "defaultBackend": null,
            "tls": spec.tls,
            "rules": spec.rules,
        },
    })
}

/// Whether `have` already is `want` as far as the agent cares.
fn in_line(have: &Ingress, want: &Ingress) -> bool {
    let ours = |m: &ObjectMeta| {
        let labels = m.labels.clone().unwrap_or_default();
        let page = m
            .annotations
            .as_ref()
            .and_then(|a| a.get(PAGE_ANNOTATION).cloned());
        (
            labels.get(MANAGED_BY).cloned(),
            labels.get(PAGE_LABEL).cloned(),
            page,
        )
    };
    let spec = |i: &Ingress| {
        let s = i.spec.clone().unwrap_or_default();
        (s.ingress_class_name, s.default_backend, s.tls, s.rules)
    };
    ours(&have.metadata) == ours(&want.metadata) && spec(have) == spec(want)
}

impl IngressReconciler {
    /// A reconciler in `opts.namespace`, following the catalog's `snapshots`.
    pub fn new(
        client: Client,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        opts: IngressOptions,
    ) -> Self {
        IngressReconciler {
            api: Api::namespaced(client, &opts.namespace),
            snapshots,
            opts,
        }
    }

    /// Reconcile while `is_leader` is true, until `shutdown` turns true: every interval,
    /// after every catalog change and when leadership is won. Ingresses stay when the
    /// agent stops (the pages stay served).
    pub async fn run(
        mut self,
        mut is_leader: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.opts.interval.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut snaps_open, mut leader_open) = (true, true);
        let mut failing = false;
        loop {
            tokio::select! {
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
                _ = tick.tick() => {}
                r = self.snapshots.changed(), if snaps_open => snaps_open = r.is_ok(),
                r = is_leader.changed(), if leader_open => leader_open = r.is_ok(),
            }
            if !*is_leader.borrow() {
                continue;
            }
            match self.round().await {
                Ok(r) => {
                    if failing {
                        tracing::info!(namespace = %self.opts.namespace, "Ingresses in line again");
                    }
                    failing = false;
                    if r != Reconciled::default() {
                        tracing::info!(
                            created = r.created,
                            patched = r.patched,
                            deleted = r.deleted,
                            "status page Ingresses updated"
                        );
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            namespace = %self.opts.namespace,
                            error = %e,
                            "cannot keep the status pages' Ingresses in line (the site overlay's \
                             Role kubekuma-ingress grants ingresses in this namespace)"
                        );
                    }
                    failing = true;
                }
            }
        }
    }

    /// One round: list the Ingresses the agent made, create what is missing, patch what
    /// drifted, delete what no page asks for. Stops at the first API error (the next
    /// round starts again from a fresh list).
    pub async fn round(&self) -> Result<Reconciled, kube::Error> {
        let mut problems = BTreeMap::new();
        let result = self.round_noting(&mut problems).await;
        if let Err(e) = &result {
            let what = format!(
                "cannot write Ingresses in namespace {}: {e}",
                self.opts.namespace
            );
            problems.insert(String::new(), what);
        }
        self.opts.outcomes.set(problems);
        result
    }

    async fn round_noting(
        &self,
        problems: &mut BTreeMap<String, String>,
    ) -> Result<Reconciled, kube::Error> {
        let snapshot = self.snapshots.borrow().clone();
        let plan = plan(&snapshot, &self.opts);
        let mut out = Reconciled::default();
        let listed = self
            .api
            .list(&ListParams::default().labels(&managed_selector()))
            .await?;
        let mut have: BTreeMap<String, Ingress> = BTreeMap::new();
        for i in listed.items {
            if let Some(n) = i.metadata.name.clone() {
                have.insert(n, i);
            }
        }
        for (name, i) in &have {
            if plan.ingresses.contains_key(name) {
                continue;
            }
            match self.api.delete(name, &DeleteParams::default()).await {
                Ok(_) => out.deleted += 1,
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
            let page = i
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PAGE_ANNOTATION));
            tracing::info!(ingress = %name, page = ?page, "deleted an Ingress no page asks for");
        }
        for (name, want) in &plan.ingresses {
            match have.get(name) {
                Some(h) if in_line(h, want) => {}
                Some(_) => {
                    self.api
                        .patch(
                            name,
                            &PatchParams::default(),
                            &Patch::Merge(patch_body(want)),
                        )
                        .await?;
                    out.patched += 1;
                }
                None => match self.api.create(&PostParams::default(), want).await {
                    Ok(_) => out.created += 1,
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        out.clashes += 1;
                        problems.insert(
                            name.clone(),
                            format!(
                                "Ingress {}/{name} exists and was not made by KubeKuma (no \
                                 {MANAGED_BY}={MANAGED_BY_VALUE} label): it is left alone",
                                self.opts.namespace
                            ),
                        );
                        tracing::warn!(
                            ingress = %name,
                            namespace = %self.opts.namespace,
                            "an Ingress of this name exists that KubeKuma did not make (no \
                             {MANAGED_BY}={MANAGED_BY_VALUE} label): left alone, the page is \
                             not routed until it is renamed or deleted"
                        );
                    }
                    Err(e) => return Err(e),
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::decode::parse_text;
    use crate::catalog::snapshot::build;

    fn snapshot(yaml: &str) -> Snapshot {
        build(&[parse_text("p.yaml", yaml)], None).snapshot
    }

    fn page(ns: &str, name: &str, slug: &str, extra: &str) -> String {
        format!(
            "apiVersion: monitoring.kubekuma.io/v1\nkind: StatusPage\nmetadata: {{name: {name}, \
             namespace: {ns}}}\nspec:\n  slug: {slug}\n  title: T\n  published: true\n{extra}\n---\n"
        )
    }

    fn opts() -> IngressOptions {
        IngressOptions {
            namespace: "kubekuma".into(),
            site: Some("kubekuma-site:80".parse().unwrap()),
            class_name: Some("nginx".into()),
            interval: Duration::from_secs(30),
            outcomes: Outcomes::default(),
        }
    }

    #[test]
    fn site_service_values() {
        let s: SiteService = "kubekuma-site:http".parse().unwrap();
        assert_eq!(s.port, SitePort::Name("http".into()));
        assert_eq!(s.to_string(), "kubekuma-site:http");
        for bad in [
            "kubekuma-site",
            "Site:80",
            "site:0",
            "site:70000",
            "site:a_b",
            ":80",
        ] {
            let e = bad.parse::<SiteService>().unwrap_err().to_string();
            assert!(e.starts_with("KUBEKUMA_SITE_SERVICE"), "{bad}: {e}");
        }
    }

    #[test]
    fn names_are_bounded_and_distinct() {
        let short = ingress_name(&ObjKey::new("prod", "status"));
        assert_eq!(short, "kubekuma-site-prod-status");
        let long = ObjKey::new(&"n".repeat(60), &"p".repeat(60));
        let name = ingress_name(&long);
        assert_eq!(name.len(), 63, "{name}");
        assert!(name.starts_with("kubekuma-site-nnn"));
        assert_ne!(
            name,
            ingress_name(&ObjKey::new(&"n".repeat(60), &"p".repeat(61)))
        );
        let label = page_label(&long);
        assert!(label.len() <= 63 && !label.contains('/'), "{label}");
        assert_eq!(page_label(&ObjKey::new("prod", "status")), "prod.status");

        // Two pages whose plain names coincide get distinct hashed ones.
        let yaml = page(
            "a-b",
            "c",
            "one",
            "  exposure: {mode: ingress, hosts: [one.example]}",
        ) + &page(
            "a",
            "b-c",
            "two",
            "  exposure: {mode: ingress, hosts: [two.example]}",
        );
        let p = plan(&snapshot(&yaml), &opts());
        assert_eq!(p.ingresses.len(), 2, "{:?}", p.ingresses.keys());
        assert!(
            p.ingresses
                .keys()
                .all(|n| n.starts_with("kubekuma-site-a-") && n.len() > 20)
        );
    }

    #[test]
    fn plan_routes_hosts_and_reports_the_rest() {
        let yaml = page(
            "prod",
            "public",
            "status",
            "  exposure: {mode: ingress, hosts: [Status.Example.com, www.example.com], tls: {secretName: status-tls}}",
        ) + &page(
            "prod",
            "zz-copy",
            "copy",
            "  exposure: {mode: ingress, hosts: [status.example.com]}",
        ) + &page(
            "prod",
            "static",
            "static",
            "  exposure: {mode: static, hosts: [s.example]}",
        ) + &page(
            "prod",
            "draft",
            "draft",
            "  published: false\n  exposure: {mode: ingress, hosts: [d.example]}",
        )
        .replace(
            "  published: true\n  published: false",
            "  published: false",
        );
        let snap = snapshot(&yaml);
        let p = plan(&snap, &opts());
        assert_eq!(
            p.ingresses.keys().collect::<Vec<_>>(),
            ["kubekuma-site-prod-public"]
        );
        let i = &p.ingresses["kubekuma-site-prod-public"];
        let v = serde_json::to_value(i).unwrap();
        assert_eq!(v["metadata"]["namespace"], "kubekuma");
        assert_eq!(v["metadata"]["labels"][PAGE_LABEL], "prod.public");
        assert_eq!(v["metadata"]["labels"][MANAGED_BY], "kubekuma");
        assert_eq!(v["metadata"]["annotations"][PAGE_ANNOTATION], "prod/public");
        assert_eq!(v["spec"]["ingressClassName"], "nginx");
        assert_eq!(
            v["spec"]["tls"],
            json!([{"hosts": ["status.example.com", "www.example.com"], "secretName": "status-tls"}])
        );
        assert_eq!(v["spec"]["rules"][0]["host"], "status.example.com");
        assert_eq!(
            v["spec"]["rules"][1]["http"]["paths"][0],
            json!({"path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": "kubekuma-site", "port": {"number": 80}}}})
        );
        assert!(matches!(
            &p.pages[&ObjKey::new("prod", "zz-copy")],
            Exposed::NoHosts { taken } if taken == &[("status.example.com".to_string(), ObjKey::new("prod", "public"))]
        ));
        let (status, reason, msg) = p.pages[&ObjKey::new("prod", "zz-copy")].condition(&opts());
        assert_eq!((status, reason), ("False", "HostConflict"));
        assert!(
            msg.contains("already exposed by StatusPage prod/public"),
            "{msg}"
        );
        assert_eq!(
            p.pages[&ObjKey::new("prod", "draft")],
            Exposed::NotPublished
        );
        assert!(!p.pages.contains_key(&ObjKey::new("prod", "static")));

        // Without a site server: nothing, and every page says why.
        let none = plan(&snap, &IngressOptions::default());
        assert!(none.ingresses.is_empty());
        let (status, reason, msg) = none.pages[&ObjKey::new("prod", "public")].condition(&opts());
        assert_eq!((status, reason), ("False", "NoSiteServer"));
        assert!(msg.contains("no site server configured"), "{msg}");
    }

    #[test]
    fn duplicate_hosts_are_a_finding() {
        let yaml = page(
            "prod",
            "a",
            "a",
            "  exposure: {mode: ingress, hosts: [x.example]}",
        ) + &page(
            "prod",
            "b",
            "b",
            "  exposure: {mode: ingress, hosts: [y.example, X.example]}",
        );
        let built = build(&[parse_text("p.yaml", &yaml)], None);
        let f: Vec<String> = built.findings.iter().map(|f| f.to_string()).collect();
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].contains("spec.exposure.hosts[1]")
                && f[0].contains("host \"x.example\" is already exposed by StatusPage prod/a"),
            "{f:?}"
        );
        // Both pages stay in the catalog.
        assert_eq!(built.snapshot.status_pages.len(), 2);
    }

    #[test]
    fn drift_is_seen() {
        let yaml = page(
            "prod",
            "a",
            "a",
            "  exposure: {mode: ingress, hosts: [x.example]}",
        );
        let p = plan(&snapshot(&yaml), &opts());
        let want = p.ingresses.values().next().unwrap().clone();
        let mut have = want.clone();
        have.metadata.resource_version = Some("7".into());
        have.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "web".into());
        assert!(in_line(&have, &want));
        have.spec.as_mut().unwrap().ingress_class_name = None;
        assert!(!in_line(&have, &want));
        let body = patch_body(&want);
        assert_eq!(body["spec"]["defaultBackend"], Value::Null);
        assert_eq!(body["spec"]["tls"], Value::Null);
        assert_eq!(body["spec"]["ingressClassName"], "nginx");
    }
}
