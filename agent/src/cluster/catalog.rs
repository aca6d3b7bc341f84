//! Kube mode's catalog: watchers with reflector stores for the ten KubeKuma kinds and for
//! Secrets, across all namespaces or the listed ones. The custom kinds are watched as
//! `DynamicObject`s, not typed, so an object the typed model refuses still reaches
//! validation and its errors reach its status. The current objects become the documents
//! folder mode reads (one per object, its origin `Monitor default/web`) and go through
//! the same [`build`], so everything downstream is identical. A burst of changes is
//! rebuilt once, [`DEBOUNCE`] after it starts; watch errors (API server gone, 410 Gone)
//! are retried with kube's default backoff while the stores, and so the last good
//! snapshot, stay as they were.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kubekuma_crds::Kind;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::catalog::bounds;
use crate::catalog::decode::{FileDocs, decode_document};
use crate::catalog::snapshot::{LastGood, Snapshot, build};
use crate::findings::{Finding, Origin, Severity};

/// Time from the first change of a burst to the rebuild.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// The annotation `kubectl apply` keeps a full copy of the object in (for a Secret, its
/// values): dropped as soon as an object arrives.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What a watched type is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    /// One of the ten kinds.
    Kuma(Kind),
    /// Core `v1` Secrets.
    Secret,
}

/// One watched type in one scope (a namespace, or all), and its reflector store.
#[derive(Clone)]
struct Source {
    what: Watched,
    resource: ApiResource,
    store: Store<DynamicObject>,
}

/// The API resource of a KubeKuma kind.
pub fn api_resource(kind: Kind) -> ApiResource {
    use kubekuma_crds as k;
    match kind {
        Kind::Monitor => ApiResource::erase::<k::Monitor>(&()),
        Kind::MonitorSet => ApiResource::erase::<k::MonitorSet>(&()),
        Kind::NotificationProvider => ApiResource::erase::<k::NotificationProvider>(&()),
        Kind::NotificationPolicy => ApiResource::erase::<k::NotificationPolicy>(&()),
        Kind::StatusPage => ApiResource::erase::<k::StatusPage>(&()),
        Kind::LocalUser => ApiResource::erase::<k::LocalUser>(&()),
        Kind::ApiKey => ApiResource::erase::<k::ApiKey>(&()),
        Kind::Silence => ApiResource::erase::<k::Silence>(&()),
        Kind::MaintenanceWindow => ApiResource::erase::<k::MaintenanceWindow>(&()),
        Kind::KubeKumaSettings => ApiResource::erase::<k::KubeKumaSettings>(&()),
    }
}

/// The namespaces of `KUBEKUMA_WATCH_NAMESPACES` or `--watch-namespaces`: comma-separated, blanks ignored;
/// none means every namespace.
pub fn parse_namespaces(list: &str) -> Vec<String> {
    let mut out: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The objects the watchers hold now, read from their reflector stores.
#[derive(Clone)]
pub struct KubeObjects {
    sources: Arc<Vec<Source>>,
}

impl KubeObjects {
    /// Every KubeKuma object, valid or not, with its status as the server has it.
    pub fn kuma(&self) -> Vec<(Kind, Arc<DynamicObject>)> {
        let mut out = Vec::new();
        for s in self.sources.iter() {
            if let Watched::Kuma(kind) = s.what {
                out.extend(s.store.state().into_iter().map(|o| (kind, o)));
            }
        }
        out
    }

    /// One KubeKuma object, if the watchers hold it.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let r = ObjectRef::new_with(name, api_resource(kind));
        let r = if kind.namespaced() {
            r.within(namespace)
        } else {
            r
        };
        let sources = self.sources.iter();
        sources
            .filter(|s| s.what == Watched::Kuma(kind))
            .find_map(|s| s.store.get(&r))
    }

    /// The documents of every object held, in a stable order (kind, namespace, name).
    fn documents(&self) -> Vec<Value> {
        let mut out: Vec<(usize, String, String, Value)> = Vec::new();
        for s in self.sources.iter() {
            let rank = match s.what {
                Watched::Secret => 0,
                Watched::Kuma(k) => 1 + Kind::ALL.iter().position(|x| *x == k).unwrap_or(0),
            };
            for o in s.store.state() {
                let (ns, name) = (
                    o.metadata.namespace.clone().unwrap_or_default(),
                    o.metadata.name.clone().unwrap_or_default(),
                );
                out.push((rank, ns, name, manifest(&s.resource, &o)));
            }
        }
        out.sort_by(|a, b| (a.0, &a.1, &a.2).cmp(&(b.0, &b.1, &b.2)));
        out.into_iter().map(|(_, _, _, v)| v).collect()
    }
}

/// An object as a manifest would hold it: `apiVersion` and `kind` set, and without what
/// the server adds on every write (`status`, `resourceVersion`, `managedFields`), so a
/// status write does not look like a change and unknown-field checks see the user's input.
pub fn manifest(resource: &ApiResource, obj: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.insert("apiVersion".into(), resource.api_version.clone().into());
        map.insert("kind".into(), resource.kind.clone().into());
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for server_owned in ["resourceVersion", "managedFields", "selfLink"] {
                meta.remove(server_owned);
            }
        }
    }
    v
}

/// The origin of an object's findings: `Monitor default/web`, `KubeKumaSettings kubekuma`.
pub fn origin(doc: &Value) -> Origin {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let (kind, meta) = (s(&doc["kind"]), &doc["metadata"]);
    let file = match meta["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{}", s(&meta["name"])),
        None => format!("{kind} {}", s(&meta["name"])),
    };
    Origin { file, doc: 0 }
}

/// The documents folder mode would read for these objects: one per object. An object
/// past the bounds of a manifest file ([`bounds::check_value`]: size, nodes, depth) is
/// refused like a file that cannot be read, so it keeps its last good version.
pub fn file_docs(docs: &[Value]) -> Vec<FileDocs> {
    docs.iter()
        .map(|d| match bounds::check_value(d) {
            Ok(()) => FileDocs {
                docs: vec![decode_document(origin(d), d.clone())],
                syntax_error: None,
            },
            Err(refused) => FileDocs {
                docs: Vec::new(),
                syntax_error: Some(Finding {
                    severity: Severity::Error,
                    origin: origin(d),
                    resource: None,
                    path: String::new(),
                    message: refused.to_string(),
                }),
            },
        })
        .collect()
}

/// Reads the catalog from the API server.
#[derive(Clone)]
pub struct KubeCatalog {
    client: Client,
    namespaces: Vec<String>,
    debounce: Duration,
}

/// A running kube catalog. Dropping it stops the watchers.
pub struct KubeWatch {
    /// The desired state, as [`FolderCatalog::watch`](crate::catalog::folder::FolderCatalog::watch) publishes it.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The findings of the latest build (what `kubekuma validate` would print).
    pub findings: watch::Receiver<Arc<Vec<Finding>>>,
    /// The objects as the watchers hold them (with their status).
    pub objects: KubeObjects,
    _tasks: JoinSet<()>,
}

/// What the rebuild task keeps between builds.
#[derive(Default)]
struct Rebuild {
    input: Vec<Value>,
    last_good: Option<LastGood>,
}

impl Rebuild {
    /// Build from the objects held now; `None` when the input did not change.
    fn run(&mut self, objects: &KubeObjects) -> Option<(Snapshot, Vec<Finding>)> {
        let input = objects.documents();
        if input == self.input && self.last_good.is_some() {
            return None;
        }
        let built = build(&file_docs(&input), self.last_good.as_ref());
        self.input = input;
        self.last_good = Some(built.last_good);
        Some((built.snapshot, built.findings))
    }
}

impl KubeCatalog {
    /// A catalog of every namespace (`namespaces` empty) or of the listed ones; the
    /// cluster-scoped KubeKumaSettings are always read.
    pub fn new(client: Client, namespaces: Vec<String>) -> Self {
        KubeCatalog {
            client,
            namespaces,
            debounce: DEBOUNCE,
        }
    }

    /// Start the watchers, wait until each has listed its objects, build the first
    /// snapshot, then rebuild after changes and publish what changed. Findings of each
    /// build that differ from the previous ones go to `report`.
    pub async fn watch(self, report: impl Fn(&[Finding]) + Send + Sync + 'static) -> KubeWatch {
        let changed = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let mut sources = Vec::new();
        let types = Kind::ALL
            .into_iter()
            .map(|k| (Watched::Kuma(k), api_resource(k), k.namespaced()))
            .chain([(Watched::Secret, ApiResource::erase::<Secret>(&()), true)]);
        for (what, resource, namespaced) in types {
            let scopes: Vec<Option<&str>> = if namespaced && !self.namespaces.is_empty() {
                self.namespaces.iter().map(|n| Some(n.as_str())).collect()
            } else {
                vec![None]
            };
            for ns in scopes {
                let api: Api<DynamicObject> = match ns {
                    Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
                    None => Api::all_with(self.client.clone(), &resource),
                };
                let writer = Writer::new(resource.clone());
                sources.push(Source {
                    what,
                    resource: resource.clone(),
                    store: writer.as_reader(),
                });
                let scope = match ns {
                    Some(ns) => format!("{} in {ns}", resource.plural),
                    None => resource.plural.clone(),
                };
                tasks.spawn(run_watcher(api, writer, changed.clone(), scope));
            }
        }
        let objects = KubeObjects {
            sources: Arc::new(sources),
        };
        for s in objects.sources.iter() {
            // The writer lives as long as its task, which only ends when aborted.
            let _ = s.store.wait_until_ready().await;
        }
        let mut rebuild = Rebuild::default();
        let (snapshot, findings) = rebuild.run(&objects).unwrap_or_default();
        report(&findings);
        let (snap_tx, snap_rx) = watch::channel(Arc::new(snapshot));
        let (find_tx, find_rx) = watch::channel(Arc::new(findings));
        let held = objects.clone();
        let debounce = self.debounce;
        tasks.spawn(async move {
            loop {
                changed.notified().await;
                tokio::time::sleep(debounce).await;
                if let Some((snapshot, findings)) = rebuild.run(&held) {
                    if **find_tx.borrow() != findings {
                        report(&findings);
                        find_tx.send_replace(Arc::new(findings));
                    }
                    if **snap_tx.borrow() != snapshot {
                        tracing::debug!(
                            monitors = snapshot.monitors.len(),
                            "catalog rebuilt from the API server"
                        );
                        snap_tx.send_replace(Arc::new(snapshot));
                    }
                }
                if snap_tx.is_closed() && find_tx.is_closed() {
                    break;
                }
            }
        });
        KubeWatch {
            snapshots: snap_rx,
            findings: find_rx,
            objects,
            _tasks: tasks,
        }
    }
}

/// Keep one reflector store up to date, forever: errors are logged and retried with
/// kube's default backoff; `changed` is told about every change of the store.
async fn run_watcher(
    api: Api<DynamicObject>,
    writer: Writer<DynamicObject>,
    changed: Arc<Notify>,
    scope: String,
) {
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut DynamicObject| {
            o.metadata.managed_fields = None;
            if let Some(a) = o.metadata.annotations.as_mut() {
                a.remove(LAST_APPLIED);
            }
        })
        .reflect(writer);
    futures::pin_mut!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => {
                if failing {
                    tracing::info!(resource = %scope, "watch resumed");
                    failing = false;
                }
                changed.notify_one();
            }
            // A compacted resourceVersion is routine: the watcher lists again.
            Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                tracing::debug!(resource = %scope, "watch expired, listing again");
            }
            Err(e) => {
                failing = true;
                tracing::warn!(resource = %scope, error = %e, "watch failed; retrying, the last catalog stays in use");
            }
        }
    }
}
