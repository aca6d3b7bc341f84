//! A fake Kubernetes API server for tests.
//!
//! No real API server can run here, so this fakes the Kubernetes API's HTTP protocol,
//! faithful to what kube-rs uses. It serves legacy discovery (`/api`, `/api/v1`, `/apis`,
//! `/apis/<group>[/<version>]`, `/version`; a request for aggregated discovery gets the
//! legacy format, as from a server without it) and, for every served resource, GET, LIST
//! (label selectors, `metadata.name`/`metadata.namespace` field selectors), WATCH, POST,
//! PUT, PATCH and DELETE, with `/status` subresources.
//!
//! One resourceVersion counter orders every change, and each change is kept as a watch
//! event. A watch from resourceVersion N replays the events after N, then streams new ones
//! as newline-delimited JSON; from "" or "0" it starts with an ADDED event per object;
//! with `sendInitialEvents=true` those end with the `k8s.io/initial-events-end` bookmark;
//! after [`FakeKube::compact`] an older resourceVersion gets an `ERROR` event `410 Expired`.
//! A PUT or PATCH carrying a stale `metadata.resourceVersion` gets `409 Conflict`, a POST of
//! an existing name `409 AlreadyExists`; errors are `Status` bodies with the real reasons.
//! As in a real server, writes to a resource with a status subresource ignore `status`,
//! writes to `/status` change only `status`, `metadata.generation` grows when anything but
//! metadata and status changes, and storing a CustomResourceDefinition serves its kind.
//! Ingresses are validated as the API server's `ValidateIngress` does for the fields the
//! agent writes (hosts, paths, path types, service backends, TLS): `422 Invalid` naming
//! the field.
//! Merge, strategic-merge and apply patches are all applied as JSON merge patches (apply
//! creates a missing object). Not modelled: authentication, admission, finalizers,
//! pagination (`limit` is ignored), objects leaving a label-selected watch.
//!
//! Served from the start: the types in [`BUILTIN`] and every KubeKuma CRD.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

/// The types served from the start: group/version, kind, plural, scope, status subresource.
pub const BUILTIN: &str = "\
    v1 Pod pods namespaced status
    v1 Node nodes cluster status
    v1 Service services namespaced status
    v1 Namespace namespaces cluster status
    v1 ConfigMap configmaps namespaced -
    v1 Secret secrets namespaced -
    v1 Event events namespaced -
    v1 ServiceAccount serviceaccounts namespaced -
    apps/v1 Deployment deployments namespaced status
    apps/v1 StatefulSet statefulsets namespaced status
    apps/v1 DaemonSet daemonsets namespaced status
    apps/v1 ReplicaSet replicasets namespaced status
    batch/v1 Job jobs namespaced status
    batch/v1 CronJob cronjobs namespaced status
    discovery.k8s.io/v1 EndpointSlice endpointslices namespaced -
    coordination.k8s.io/v1 Lease leases namespaced -
    networking.k8s.io/v1 Ingress ingresses namespaced status
    events.k8s.io/v1 Event events namespaced -
    apiextensions.k8s.io/v1 CustomResourceDefinition customresourcedefinitions cluster status";

/// The user named in `Forbidden` messages.
const USER: &str = "system:serviceaccount:kubekuma:kubekuma";

/// A served resource type.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Whether it has a `/status` subresource.
    pub status: bool,
}

impl ResourceType {
    fn api_version(&self) -> String {
        match self.group.as_str() {
            "" => self.version.clone(),
            g => format!("{g}/{}", self.version),
        }
    }

    /// `deployments.apps`, `pods`: how the API server names it in messages.
    fn qualified(&self) -> String {
        match self.group.as_str() {
            "" => self.plural.clone(),
            g => format!("{}.{g}", self.plural),
        }
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub accept: String,
    pub content_type: String,
}

/// A change, as a watch reports it.
struct Event {
    rv: u64,
    group: String,
    plural: String,
    type_: &'static str,
    object: Value,
}

/// (group, plural, namespace or "", name).
type Key = (String, String, String, String);

#[derive(Default)]
struct Store {
    rv: u64,
    types: Vec<ResourceType>,
    objects: BTreeMap<Key, Value>,
    events: Vec<Event>,
    /// Events up to this resourceVersion were dropped by [`FakeKube::compact`].
    compacted: u64,
    forbidden: Vec<String>,
    requests: Vec<Recorded>,
}

struct State {
    store: Mutex<Store>,
    changed: Notify,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running (or stopped) fake API server on 127.0.0.1.
pub struct FakeKube {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinSet<()>>,
    conns: Arc<Mutex<JoinSet<()>>>,
}

type Reply = Response<BoxBody<Bytes, Infallible>>;

/// An error answer: its code and `Status` body.
struct Failure(StatusCode, Value);

impl FakeKube {
    /// Serve on 127.0.0.1:0 with the built-in types and the KubeKuma CRDs.
    pub async fn start() -> FakeKube {
        let mut store = Store::default();
        for line in BUILTIN.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (group, version) = f[0].split_once('/').unwrap_or(("", f[0]));
            store.types.push(ResourceType {
                group: group.into(),
                version: version.into(),
                kind: f[1].into(),
                plural: f[2].into(),
                namespaced: f[3] == "namespaced",
                status: f[4] == "status",
            });
        }
        let mut fake = FakeKube {
            addr: "127.0.0.1:0".parse().expect("addr"),
            state: Arc::new(State {
                store: Mutex::new(store),
                changed: Notify::new(),
            }),
            accept: None,
            conns: Arc::default(),
        };
        for kind in kubekuma_crds::Kind::ALL {
            let crd = kubekuma_crds::crdgen::crd(kind);
            fake.put_object(serde_json::to_value(crd).expect("crd json"));
        }
        fake.serve(bind(fake.addr));
        fake
    }

    fn serve(&mut self, listener: TcpListener) {
        self.addr = listener.local_addr().expect("local addr");
        let (state, conns) = (self.state.clone(), self.conns.clone());
        let mut accept = JoinSet::new();
        accept.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = state.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, req).await) }
                });
                let mut set = conns.lock().unwrap_or_else(|p| p.into_inner());
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        self.accept = Some(accept);
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of this server, without credentials, default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("url"));
        kube::Client::try_from(config).expect("kube client")
    }

    /// Stop serving: the listener and every open connection (watches included) close.
    pub async fn stop(&mut self) {
        if let Some(mut accept) = self.accept.take() {
            accept.abort_all();
            while accept.join_next().await.is_some() {}
        }
        let mut conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()));
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }

    /// Serve again on the same port, with the same objects and history.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.serve(bind(self.addr));
    }

    /// Create or replace an object as given, status included and without a
    /// resourceVersion check, as a controller would have left it; returns it as stored.
    /// Panics when its kind is not served or it has no name: a broken test.
    pub fn put_object(&self, object: Value) -> Value {
        let mut store = self.state.lock();
        let ty = store
            .type_of(
                object["apiVersion"].as_str().unwrap_or_default(),
                object["kind"].as_str().unwrap_or_default(),
            )
            .unwrap_or_else(|| panic!("kind not served: {object}"));
        let ns = object["metadata"]["namespace"].as_str().map(str::to_string);
        let name = object["metadata"]["name"].as_str().expect("metadata.name");
        let key = store.key(&ty, ns.as_deref(), name);
        let out = match store.objects.get(&key).cloned() {
            Some(old) => store.replace(&ty, old, object),
            None => store.insert(&ty, ns.as_deref(), object),
        };
        drop(store);
        self.state.changed.notify_waiters();
        out
    }

    /// The stored object, if any (`namespace` is ignored for cluster-scoped kinds).
    pub fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let store = self.state.lock();
        let ty = store.type_of(api_version, kind)?;
        store.objects.get(&store.key(&ty, ns, name)).cloned()
    }

    /// Delete an object as a controller would; returns whether it existed.
    pub fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> bool {
        let mut store = self.state.lock();
        let Some(ty) = store.type_of(api_version, kind) else {
            return false;
        };
        let key = store.key(&ty, ns, name);
        let found = store.remove(&ty, &key).is_some();
        drop(store);
        self.state.changed.notify_waiters();
        found
    }

    /// Answer `403 Forbidden` to every request whose path starts with `path_prefix`
    /// (e.g. `/apis/apps/v1/namespaces/prod/deployments`), like a missing RBAC rule.
    pub fn forbid(&self, path_prefix: &str) {
        self.state.lock().forbidden.push(path_prefix.to_string());
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().requests.clone()
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.lock().rv
    }

    /// Forget the event history: watches from an older resourceVersion get `410 Expired`.
    pub fn compact(&self) {
        let mut store = self.state.lock();
        store.compacted = store.rv;
        store.events.clear();
    }
}

impl Store {
    fn type_of(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let t = self
            .types
            .iter()
            .find(|t| t.group == group && t.version == version && t.kind == kind);
        t.cloned()
    }

    fn type_by_plural(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        let t = self
            .types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural);
        t.cloned()
    }

    fn key(&self, ty: &ResourceType, ns: Option<&str>, name: &str) -> Key {
        let ns = if ty.namespaced {
            ns.unwrap_or("default")
        } else {
            ""
        };
        (ty.group.clone(), ty.plural.clone(), ns.into(), name.into())
    }

    /// Give `obj` the next resourceVersion and record the change.
    fn commit(&mut self, ty: &ResourceType, type_: &'static str, obj: &mut Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let event = Event {
            rv: self.rv,
            group: ty.group.clone(),
            plural: ty.plural.clone(),
            type_,
            object: obj.clone(),
        };
        self.events.push(event);
        if type_ != "DELETED" {
            let m = &obj["metadata"];
            let key = self.key(
                ty,
                m["namespace"].as_str(),
                m["name"].as_str().unwrap_or_default(),
            );
            self.objects.insert(key, obj.clone());
            self.serve_crd(ty, obj);
        }
    }

    /// Store a new object, filling in the metadata the server owns.
    fn insert(&mut self, ty: &ResourceType, ns: Option<&str>, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(ty.api_version());
        obj["kind"] = json!(ty.kind);
        let meta = &mut obj["metadata"];
        if ty.namespaced {
            meta["namespace"] = json!(ns.unwrap_or("default"));
        } else {
            remove(meta, "namespace");
        }
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.rv + 1));
        if meta.get("generation").is_none() {
            meta["generation"] = json!(1);
        }
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] =
                json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        self.commit(ty, "ADDED", &mut obj);
        obj
    }

    /// Replace `old` by `new`, keeping identity and bumping generation and resourceVersion
    /// as the server does (a generation given in `new` wins); a no-op write changes nothing.
    fn replace(&mut self, ty: &ResourceType, old: Value, mut new: Value) -> Value {
        let given_generation = new["metadata"].get("generation").cloned();
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
        ] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => remove(&mut new["metadata"], field),
            }
        }
        new["apiVersion"] = json!(ty.api_version());
        new["kind"] = json!(ty.kind);
        if new == old {
            return old;
        }
        let without_meta = |v: &Value| {
            let mut v = v.clone();
            remove(&mut v, "metadata");
            remove(&mut v, "status");
            v
        };
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = match given_generation {
            Some(g) => g,
            None if without_meta(&new) != without_meta(&old) => json!(generation + 1),
            None => json!(generation),
        };
        self.commit(ty, "MODIFIED", &mut new);
        new
    }

    fn remove(&mut self, ty: &ResourceType, key: &Key) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        self.commit(ty, "DELETED", &mut obj);
        Some(obj)
    }

    /// A stored CustomResourceDefinition serves its kind at each of its versions.
    fn serve_crd(&mut self, ty: &ResourceType, crd: &Value) {
        if ty.kind != "CustomResourceDefinition" {
            return;
        }
        let spec = &crd["spec"];
        for v in spec["versions"].as_array().into_iter().flatten() {
            let new = ResourceType {
                group: spec["group"].as_str().unwrap_or_default().into(),
                version: v["name"].as_str().unwrap_or_default().into(),
                kind: spec["names"]["kind"].as_str().unwrap_or_default().into(),
                plural: spec["names"]["plural"].as_str().unwrap_or_default().into(),
                namespaced: spec["scope"] == "Namespaced",
                status: v["subresources"].get("status").is_some(),
            };
            self.types.retain(|t| {
                (&t.group, &t.version, &t.plural) != (&new.group, &new.version, &new.plural)
            });
            self.types.push(new);
        }
    }
}

fn remove(v: &mut Value, key: &str) {
    if let Some(m) = v.as_object_mut() {
        m.remove(key);
    }
}

fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(addr).expect("bind");
    socket.listen(128).expect("listen")
}

fn reply(code: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

/// A failure with a `Status` body as the API server writes it; `details` names the object.
fn failure(
    code: StatusCode,
    reason: &str,
    message: String,
    details: Option<(&ResourceType, &str)>,
) -> Failure {
    let mut status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    if let Some((ty, name)) = details {
        status["details"] = json!({ "name": name, "group": ty.group, "kind": ty.plural });
    }
    Failure(code, status)
}

fn not_found(ty: &ResourceType, name: &str) -> Failure {
    let message = format!("{} \"{name}\" not found", ty.qualified());
    failure(StatusCode::NOT_FOUND, "NotFound", message, Some((ty, name)))
}

fn bad_request(message: impl Into<String>) -> Failure {
    failure(StatusCode::BAD_REQUEST, "BadRequest", message.into(), None)
}

fn not_allowed() -> Failure {
    let message = "the server does not allow this method on the requested resource";
    failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        message.into(),
        None,
    )
}

/// What the API server answers for a path nothing serves.
fn page_not_found() -> Failure {
    let message = "the server could not find the requested resource";
    failure(StatusCode::NOT_FOUND, "NotFound", message.into(), None)
}

/// Where a resource request points.
struct Target {
    ty: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    /// `/status`.
    status: bool,
}

type Query = BTreeMap<String, String>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let query: Query = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let header = |h| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let recorded = Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").into(),
        accept: header(http::header::ACCEPT),
        content_type: header(http::header::CONTENT_TYPE),
    };
    state.lock().requests.push(recorded.clone());
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return answer(Err(bad_request(format!("cannot read the body: {e}"))), 200),
    };
    let segs: Vec<&str> = recorded.path.trim_matches('/').split('/').collect();
    let target = {
        let store = state.lock();
        if store
            .forbidden
            .iter()
            .any(|p| recorded.path.starts_with(p.as_str()))
        {
            return answer(Err(forbidden(&store, &recorded, &segs)), 200);
        }
        if parts.method == Method::GET
            && let Some(doc) = discovery(&store, &segs, &header(http::header::HOST))
        {
            return answer(doc, 200);
        }
        match resolve(&store, &segs) {
            Some(t) => t,
            None => return answer(Err(page_not_found()), 200),
        }
    };
    let json_body =
        || serde_json::from_slice::<Value>(&body).map_err(|e| bad_request(e.to_string()));
    let result = match (&parts.method, &target.name) {
        (&Method::GET, None)
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            return watch(state.clone(), target, query);
        }
        (&Method::GET, None) => list(&state.lock(), &target, &query),
        (&Method::GET, Some(name)) => {
            let store = state.lock();
            let key = store.key(&target.ty, target.namespace.as_deref(), name);
            store
                .objects
                .get(&key)
                .cloned()
                .ok_or_else(|| not_found(&target.ty, name))
        }
        (&Method::POST, None) => json_body().and_then(|b| create(&state, &target, b)),
        (&Method::PUT, Some(_)) => {
            json_body().and_then(|b| write(&state, &target, b, Write::Replace))
        }
        (&Method::PATCH, Some(_)) => {
            let how = match recorded.content_type.split(';').next().unwrap_or("").trim() {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    Ok(Write::Merge)
                }
                "application/apply-patch+yaml" => Ok(Write::Apply),
                other => Err(failure(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {other:?})"
                    ),
                    None,
                )),
            };
            how.and_then(|how| json_body().and_then(|b| write(&state, &target, b, how)))
        }
        (&Method::DELETE, Some(name)) => {
            let mut store = state.lock();
            let key = store.key(&target.ty, target.namespace.as_deref(), name);
            store
                .remove(&target.ty, &key)
                .ok_or_else(|| not_found(&target.ty, name))
        }
        _ => Err(not_allowed()),
    };
    if parts.method != Method::GET {
        state.changed.notify_waiters();
    }
    answer(
        result,
        if parts.method == Method::POST {
            201
        } else {
            200
        },
    )
}

fn answer(result: Result<Value, Failure>, ok: u16) -> Reply {
    match result {
        Ok(v) => reply(StatusCode::from_u16(ok).expect("status code"), &v),
        Err(Failure(code, status)) => reply(code, &status),
    }
}

/// The `403` a real server gives a service account without the needed RBAC rule.
fn forbidden(store: &Store, req: &Recorded, segs: &[&str]) -> Failure {
    let Some(t) = resolve(store, segs) else {
        let message = format!(
            "forbidden: User \"{USER}\" cannot get path \"{}\"",
            req.path
        );
        return failure(StatusCode::FORBIDDEN, "Forbidden", message, None);
    };
    let verb = match (&req.method, &t.name) {
        (&Method::GET, None) if req.query.contains("watch=") => "watch",
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        _ => "delete",
    };
    let name = t.name.as_deref().unwrap_or("");
    let what = match name {
        "" => t.ty.qualified(),
        n => format!("{} \"{n}\"", t.ty.qualified()),
    };
    let scope = match &t.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    let (plural, group) = (&t.ty.plural, &t.ty.group);
    let message = format!(
        "{what} is forbidden: User \"{USER}\" cannot {verb} resource \"{plural}\" in API group \"{group}\" {scope}"
    );
    failure(
        StatusCode::FORBIDDEN,
        "Forbidden",
        message,
        Some((&t.ty, name)),
    )
}

/// Answer a discovery path; `None` for anything else.
fn discovery(store: &Store, segs: &[&str], host: &str) -> Option<Result<Value, Failure>> {
    let resource_list = |group: &str, version: &str| {
        let mut resources = Vec::new();
        for t in store
            .types
            .iter()
            .filter(|t| t.group == group && t.version == version)
        {
            resources.push(json!({
                "name": t.plural, "singularName": t.kind.to_lowercase(), "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            }));
            if t.status {
                resources.push(json!({
                    "name": format!("{}/status", t.plural), "singularName": "",
                    "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"],
                }));
            }
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources })
    };
    let group_doc = |name: &str| {
        let mut versions: Vec<Value> = Vec::new();
        for t in store.types.iter().filter(|t| t.group == name) {
            let v = json!({ "groupVersion": t.api_version(), "version": t.version });
            if !versions.contains(&v) {
                versions.push(v);
            }
        }
        json!({ "name": name, "versions": versions, "preferredVersion": versions.first() })
    };
    let served = |group: &str, version: Option<&str>| {
        let mut types = store.types.iter();
        types.any(|t| t.group == group && version.is_none_or(|v| t.version == v))
    };
    Some(Ok(match segs {
        ["version"] => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "fake",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
            "compiler": "gc", "platform": "linux/amd64",
        }),
        ["api"] => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": host }],
        }),
        ["api", "v1"] => resource_list("", "v1"),
        ["apis"] => {
            let mut groups: Vec<Value> = Vec::new();
            for t in store.types.iter().filter(|t| !t.group.is_empty()) {
                let doc = group_doc(&t.group);
                if !groups.contains(&doc) {
                    groups.push(doc);
                }
            }
            json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
        }
        ["apis", group] if served(group, None) => {
            let mut doc = group_doc(group);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        }
        ["apis", group, version] if served(group, Some(version)) => resource_list(group, version),
        ["api", _] | ["apis", _] | ["apis", _, _] => return Some(Err(page_not_found())),
        _ => return None,
    }))
}

/// The resource a path names: `/api/v1/...` or `/apis/<group>/<version>/...`, then
/// `[namespaces/<ns>/]<plural>[/<name>[/status]]`.
fn resolve(store: &Store, segs: &[&str]) -> Option<Target> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let namespaced = |plural: &str| {
        store
            .type_by_plural(group, version, plural)
            .filter(|t| t.namespaced)
    };
    let (ty, namespace, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] if namespaced(plural).is_some() => {
            (namespaced(plural)?, Some(ns.to_string()), tail)
        }
        [plural, tail @ ..] => (store.type_by_plural(group, version, plural)?, None, tail),
        [] => return None,
    };
    if ty.namespaced && namespace.is_none() && !tail.is_empty() {
        return None;
    }
    let (name, status) = match tail {
        [] => (None, false),
        [name] => (Some(name.to_string()), false),
        [name, "status"] if ty.status => (Some(name.to_string()), true),
        _ => return None,
    };
    Some(Target {
        ty,
        namespace,
        name,
        status,
    })
}

/// Whether `obj` passes the query's `labelSelector` and `fieldSelector`.
fn selected(obj: &Value, query: &Query) -> Result<bool, String> {
    let terms = |key: &str| split_terms(query.get(key).map_or("", String::as_str));
    let labels = &obj["metadata"]["labels"];
    let label = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
    let in_set = |l: &str, set: &str| {
        set.trim()
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .any(|v| v.trim() == l)
    };
    for term in terms("labelSelector") {
        let ok = if let Some((k, v)) = term.split_once("!=") {
            label(k) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            label(k) == Some(v.trim())
        } else if let Some((k, set)) = term.split_once(" notin ") {
            label(k).is_none_or(|l| !in_set(l, set))
        } else if let Some((k, set)) = term.split_once(" in ") {
            label(k).is_some_and(|l| in_set(l, set))
        } else if let Some(k) = term.strip_prefix('!') {
            label(k).is_none()
        } else {
            label(&term).is_some()
        };
        if !ok {
            return Ok(false);
        }
    }
    for term in terms("fieldSelector") {
        let (field, want, equal) = match term.split_once("!=") {
            Some((f, v)) => (f, v, false),
            None => match term.split_once("==").or_else(|| term.split_once('=')) {
                Some((f, v)) => (f, v, true),
                None => return Err(format!("invalid field selector {term:?}")),
            },
        };
        let got = match field.trim() {
            "metadata.name" => obj["metadata"]["name"].as_str(),
            "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
            other => return Err(format!("field label not supported: {other}")),
        };
        if (got == Some(want.trim())) != equal {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Selector terms, split at commas outside parentheses.
fn split_terms(selector: &str) -> Vec<String> {
    let (mut terms, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    terms.push(cur);
    terms
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether an object (or event) of `group`/`plural` is within the request's type and namespace.
fn in_scope(target: &Target, group: &str, plural: &str, obj: &Value) -> bool {
    group == target.ty.group
        && plural == target.ty.plural
        && (target.namespace.as_deref())
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
}

fn list(store: &Store, target: &Target, query: &Query) -> Result<Value, Failure> {
    let mut items = Vec::new();
    for ((group, plural, _, _), obj) in &store.objects {
        if in_scope(target, group, plural, obj) && selected(obj, query).map_err(bad_request)? {
            items.push(obj.clone());
        }
    }
    Ok(json!({
        "kind": format!("{}List", target.ty.kind), "apiVersion": target.ty.api_version(),
        "metadata": { "resourceVersion": store.rv.to_string() }, "items": items,
    }))
}

fn create(state: &State, target: &Target, mut obj: Value) -> Result<Value, Failure> {
    let ty = &target.ty;
    if ty.namespaced && target.namespace.is_none() {
        return Err(not_allowed());
    }
    if let (Some(path_ns), Some(body_ns)) =
        (&target.namespace, obj["metadata"]["namespace"].as_str())
        && path_ns != body_ns
    {
        let message =
            "the namespace of the provided object does not match the namespace sent on the request";
        return Err(bad_request(message));
    }
    let mut store = state.lock();
    if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        let Some(prefix) = obj["metadata"]["generateName"].as_str() else {
            let message = format!(
                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                ty.kind
            );
            return Err(failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                message,
                None,
            ));
        };
        obj["metadata"]["name"] = json!(format!("{prefix}{:05x}", store.rv + 1));
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if store
        .objects
        .contains_key(&store.key(ty, target.namespace.as_deref(), &name))
    {
        let message = format!("{} \"{name}\" already exists", ty.qualified());
        return Err(failure(
            StatusCode::CONFLICT,
            "AlreadyExists",
            message,
            Some((ty, &name)),
        ));
    }
    if ty.status {
        remove(&mut obj, "status");
    }
    for owned in ["generation", "resourceVersion", "creationTimestamp"] {
        remove(&mut obj["metadata"], owned);
    }
    valid_object(ty, &name, &obj)?;
    Ok(store.insert(ty, target.namespace.as_deref(), obj))
}

#[derive(Clone, Copy, PartialEq)]
enum Write {
    Replace,
    Merge,
    Apply,
}

/// PUT or PATCH of an object or its status.
fn write(state: &State, target: &Target, mut body: Value, how: Write) -> Result<Value, Failure> {
    let (ty, name) = (&target.ty, target.name.clone().unwrap_or_default());
    let mut store = state.lock();
    let key = store.key(ty, target.namespace.as_deref(), &name);
    let Some(old) = store.objects.get(&key).cloned() else {
        drop(store);
        if how == Write::Apply && !target.status {
            body["metadata"]["name"] = json!(name);
            return create(state, target, body);
        }
        return Err(not_found(ty, &name));
    };
    let given_rv = body["metadata"]["resourceVersion"].as_str();
    if given_rv.is_some_and(|rv| Some(rv) != old["metadata"]["resourceVersion"].as_str()) {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            ty.qualified()
        );
        return Err(failure(
            StatusCode::CONFLICT,
            "Conflict",
            message,
            Some((ty, &name)),
        ));
    }
    if let Some(given) = body["metadata"]["name"].as_str()
        && given != name
    {
        let message =
            format!("the name of the object ({given}) does not match the name on the URL ({name})");
        return Err(bad_request(message));
    }
    let mut new = match how {
        Write::Replace => body,
        Write::Merge | Write::Apply => {
            let mut merged = old.clone();
            merge(&mut merged, &body);
            merged
        }
    };
    // Status changes only through /status, and /status changes only status.
    if target.status || ty.status {
        let (keep, status) = if target.status {
            (old.clone(), &new)
        } else {
            (new.clone(), &old)
        };
        let status = status.get("status").cloned();
        new = keep;
        match status {
            Some(s) => new["status"] = s,
            None => remove(&mut new, "status"),
        }
    }
    remove(&mut new["metadata"], "generation");
    valid_object(ty, &name, &new)?;
    Ok(store.replace(ty, old, new))
}

/// A DNS-1123 subdomain, as the API server checks names and hosts.
fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        })
}

/// The API server's validation of the objects it checks here (Ingresses): `422 Invalid`
/// with the field errors, as `kubectl` shows them.
fn valid_object(ty: &ResourceType, name: &str, obj: &Value) -> Result<(), Failure> {
    if ty.kind != "Ingress" {
        return Ok(());
    }
    let mut errors = Vec::new();
    let spec = &obj["spec"];
    let backend = |path: &str, b: &Value, errors: &mut Vec<String>| {
        let svc = &b["service"];
        if !svc.is_object() {
            errors.push(format!(
                "{path}: Invalid value: \"\": one backend must be specified"
            ));
            return;
        }
        if !svc["name"].as_str().is_some_and(dns_subdomain) {
            errors.push(format!(
                "{path}.service.name: Invalid value: {}",
                svc["name"]
            ));
        }
        let port = &svc["port"];
        match (port["number"].as_i64(), port["name"].as_str()) {
            (Some(n), None) if (1..=65535).contains(&n) => {}
            (None, Some(n)) if !n.is_empty() && n.len() <= 15 => {}
            _ => errors.push(format!(
                "{path}.service.port: Invalid value: {port}: exactly one of name or number"
            )),
        }
    };
    let rules = spec["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() && !spec["defaultBackend"].is_object() {
        errors.push(
            "spec: Invalid value: either `defaultBackend` or `rules` must be specified".into(),
        );
    }
    for (i, r) in rules.iter().enumerate() {
        let host = r["host"].as_str().unwrap_or_default();
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if !host.is_empty() && !dns_subdomain(bare) {
            errors.push(format!(
                "spec.rules[{i}].host: Invalid value: \"{host}\": a lowercase RFC 1123 subdomain must \
                 consist of lower case alphanumeric characters, '-' or '.'"
            ));
        }
        let paths = r["http"]["paths"].as_array().cloned().unwrap_or_default();
        for (j, p) in paths.iter().enumerate() {
            let at = format!("spec.rules[{i}].http.paths[{j}]");
            match p["pathType"].as_str() {
                Some("Exact" | "Prefix" | "ImplementationSpecific") => {}
                Some(t) => errors.push(format!("{at}.pathType: Unsupported value: \"{t}\"")),
                None => errors.push(format!(
                    "{at}.pathType: Required value: pathType must be specified"
                )),
            }
            if !p["path"].as_str().is_some_and(|x| x.starts_with('/')) {
                errors.push(format!(
                    "{at}.path: Invalid value: {}: must be an absolute path",
                    p["path"]
                ));
            }
            backend(&format!("{at}.backend"), &p["backend"], &mut errors);
        }
    }
    for (i, t) in spec["tls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if let Some(secret) = t["secretName"].as_str()
            && !dns_subdomain(secret)
        {
            errors.push(format!(
                "spec.tls[{i}].secretName: Invalid value: \"{secret}\""
            ));
        }
    }
    if let Some(class) = spec["ingressClassName"].as_str()
        && !dns_subdomain(class)
    {
        errors.push(format!("spec.ingressClassName: Invalid value: \"{class}\""));
    }
    if errors.is_empty() {
        return Ok(());
    }
    let message = format!(
        "{}.{} \"{name}\" is invalid: {}",
        ty.plural,
        ty.group,
        errors.join(", ")
    );
    Err(failure(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        message,
        Some((ty, name)),
    ))
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// A watch: the events the request asks for, then new ones as they happen, one JSON
/// object per line, until `timeoutSeconds` passes or the client goes away.
fn watch(state: Arc<State>, target: Target, query: Query) -> Reply {
    let line = |type_: &str, object: &Value| {
        Bytes::from(format!("{}\n", json!({ "type": type_, "object": object })))
    };
    let requested = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse::<u64>().ok())
        .unwrap_or(0);
    let initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let mut first = Vec::new();
    let (mut last, expired) = {
        let store = state.lock();
        if requested > 0 && !initial {
            let expired = requested < store.compacted;
            if expired {
                let message = format!(
                    "too old resource version: {requested} ({})",
                    store.compacted
                );
                let Failure(_, status) = failure(StatusCode::GONE, "Expired", message, None);
                first.push(line("ERROR", &status));
            }
            (requested, expired)
        } else {
            for ((g, p, _, _), obj) in &store.objects {
                if in_scope(&target, g, p, obj) && selected(obj, &query).unwrap_or(false) {
                    first.push(line("ADDED", obj));
                }
            }
            if initial {
                let bookmark = json!({
                    "kind": target.ty.kind, "apiVersion": target.ty.api_version(),
                    "metadata": { "resourceVersion": store.rv.to_string(), "annotations": { "k8s.io/initial-events-end": "true" } },
                });
                first.push(line("BOOKMARK", &bookmark));
            }
            (store.rv, false)
        }
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut pending = first;
        loop {
            for b in pending.drain(..) {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            if expired {
                return;
            }
            let changed = state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let store = state.lock();
                let events = store.events.iter().filter(|e| e.rv > last);
                for e in events.filter(|e| in_scope(&target, &e.group, &e.plural, &e.object)) {
                    if selected(&e.object, &query).unwrap_or(false) {
                        pending.push(line(e.type_, &e.object));
                    }
                }
                last = store.rv;
            }
            if pending.is_empty() {
                tokio::select! {
                    _ = &mut changed => {}
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep_until(deadline) => return,
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("response")
}
