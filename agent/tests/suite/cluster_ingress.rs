//! Kube mode: the Ingresses of StatusPages with `spec.exposure.mode: ingress`, against
//! `FakeKube` (which validates Ingresses as the API server does): made, kept in line,
//! patched back after drift, deleted when no page asks for them, an Ingress the agent did
//! not make left alone; the whole agent writing them and the pages' `Exposed` condition.

use std::time::Duration;

use http::Method;
use kubekuma_agent::catalog::ObjKey;
use kubekuma_agent::cluster::catalog::{KubeCatalog, KubeWatch};
use kubekuma_agent::cluster::ingress::{IngressOptions, IngressReconciler, Reconciled};
use kubekuma_agent::cluster::status::StatusOptions;
use kubekuma_agent::runtime::{self, AgentOptions, CatalogSource, KubeMode};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::fake_kube::FakeKube;

const WAIT: Duration = Duration::from_secs(30);

fn put(fake: &FakeKube, yaml: &str) -> Value {
    let v: Value = serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    fake.put_object(v)
}

fn page(ns: &str, name: &str, exposure: &str) -> String {
    format!(
        "apiVersion: monitoring.kubekuma.io/v1\nkind: StatusPage\nmetadata: {{name: {name}, \
         namespace: {ns}}}\nspec:\n  slug: {name}\n  title: T\n  published: true\n  exposure: {exposure}\n"
    )
}

async fn until(what: &str, mut check: impl FnMut() -> bool, state: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn opts() -> IngressOptions {
    IngressOptions {
        namespace: "kubekuma".into(),
        site: Some("kubekuma-site:http".parse().unwrap()),
        class_name: None,
        interval: Duration::from_secs(1),
        outcomes: Default::default(),
    }
}

fn ingress(fake: &FakeKube, name: &str) -> Option<Value> {
    fake.get_object("networking.k8s.io/v1", "Ingress", Some("kubekuma"), name)
}

fn pages_in(w: &KubeWatch) -> usize {
    w.snapshots.borrow().status_pages.len()
}

/// Writes (POST, PATCH, DELETE) to Ingresses so far.
fn ingress_writes(fake: &FakeKube) -> usize {
    let requests = fake.requests();
    let writes = requests.iter().filter(|r| r.method != Method::GET);
    writes.filter(|r| r.path.contains("/ingresses")).count()
}

#[tokio::test]
async fn ingresses_follow_the_pages() {
    let fake = FakeKube::start().await;
    put(
        &fake,
        &page(
            "prod",
            "public",
            "{mode: ingress, hosts: [status.example.com], tls: {secretName: status-tls}}",
        ),
    );
    put(
        &fake,
        &page("prod", "cdn", "{mode: static, hosts: [cdn.example.com]}"),
    );
    // An Ingress of the cluster's own, not the agent's.
    fake.put_object(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "other", "namespace": "kubekuma"},
        "spec": {"rules": [{"host": "other.example.com", "http": {"paths": [{"path": "/",
            "pathType": "Prefix", "backend": {"service": {"name": "x", "port": {"number": 80}}}}]}}]},
    }));
    let w = KubeCatalog::new(fake.client(), vec![]).watch(|_| {}).await;
    until("both pages", || pages_in(&w) == 2, String::new).await;
    let r = IngressReconciler::new(fake.client(), w.snapshots.clone(), opts());

    // Made once; a second round writes nothing.
    assert_eq!(r.round().await.unwrap().created, 1);
    let name = "kubekuma-site-prod-public";
    let i = ingress(&fake, name).expect("the Ingress");
    assert_eq!(
        i["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "kubekuma"
    );
    assert_eq!(
        i["metadata"]["labels"]["kubekuma.io/status-page"],
        "prod.public"
    );
    assert_eq!(
        i["spec"]["tls"],
        json!([{"hosts": ["status.example.com"], "secretName": "status-tls"}])
    );
    assert_eq!(
        i["spec"]["rules"],
        json!([{"host": "status.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "kubekuma-site", "port": {"name": "http"}}}}]}}])
    );
    assert!(i["spec"].get("ingressClassName").is_none(), "{i}");
    let writes = ingress_writes(&fake);
    assert_eq!(r.round().await.unwrap(), Reconciled::default());
    assert_eq!(
        ingress_writes(&fake),
        writes,
        "an Ingress in line is not written"
    );

    // Someone edits it by hand: patched back; labels of others stay.
    let mut edited = i.clone();
    edited["spec"]["rules"][0]["host"] = json!("evil.example.com");
    edited["spec"]["ingressClassName"] = json!("nginx");
    edited["metadata"]["labels"]["team"] = json!("web");
    fake.put_object(edited);
    assert_eq!(r.round().await.unwrap().patched, 1);
    let i = ingress(&fake, name).unwrap();
    assert_eq!(i["spec"]["rules"][0]["host"], "status.example.com");
    assert!(i["spec"].get("ingressClassName").is_none(), "{i}");
    assert_eq!(i["metadata"]["labels"]["team"], "web");

    // The page's hosts change; a second page claims one of them.
    put(
        &fake,
        &page(
            "prod",
            "public",
            "{mode: ingress, hosts: [Status.Example.com, www.example.com]}",
        ),
    );
    put(
        &fake,
        &page("prod", "rival", "{mode: ingress, hosts: [www.example.com]}"),
    );
    until(
        "the new hosts",
        || {
            let s = w.snapshots.borrow();
            s.status_pages.len() == 3
                && s.status_pages
                    .values()
                    .any(|p| p.spec.exposure.as_ref().is_some_and(|e| e.hosts.len() == 2))
        },
        String::new,
    )
    .await;
    let round = r.round().await.unwrap();
    assert_eq!((round.created, round.patched), (0, 1), "{round:?}");
    let i = ingress(&fake, name).unwrap();
    let hosts: Vec<&str> = (i["spec"]["rules"].as_array().unwrap().iter())
        .map(|r| r["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["status.example.com", "www.example.com"]);
    assert!(
        i["spec"].get("tls").is_none(),
        "TLS removed with the page's: {i}"
    );
    assert!(ingress(&fake, "kubekuma-site-prod-rival").is_none());
    let finding = w
        .findings
        .borrow()
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>();
    assert!(
        finding.iter().any(|f| f.contains("StatusPage prod/rival")
            && f.contains("host \"www.example.com\" is already exposed by StatusPage prod/public")),
        "{finding:?}"
    );

    // A page of the same Ingress name made by someone else is left alone.
    fake.put_object(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "kubekuma-site-prod-mine", "namespace": "kubekuma"},
        "spec": {"defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}},
    }));
    put(
        &fake,
        &page("prod", "mine", "{mode: ingress, hosts: [mine.example.com]}"),
    );
    until("four pages", || pages_in(&w) == 4, String::new).await;
    let o = opts();
    let r = IngressReconciler::new(fake.client(), w.snapshots.clone(), o.clone());
    assert_eq!(r.round().await.unwrap().clashes, 1);
    let plan = kubekuma_agent::cluster::ingress::plan(&w.snapshots.borrow(), &o);
    let (status, reason, msg) = plan.pages[&ObjKey::new("prod", "mine")].condition(&o);
    assert_eq!((status, reason), ("False", "IngressFailed"), "{msg}");
    assert!(msg.contains("was not made by KubeKuma"), "{msg}");
    let theirs = ingress(&fake, "kubekuma-site-prod-mine").unwrap();
    assert!(theirs["spec"].get("rules").is_none(), "{theirs}");

    // The page turns static: its Ingress goes; the cluster's own stays.
    put(&fake, &page("prod", "public", "{mode: static}"));
    until(
        "public static",
        || {
            let s = w.snapshots.borrow();
            s.status_pages.values().all(|p| {
                p.metadata.name.as_deref() != Some("public")
                    || p.spec.exposure.as_ref().is_some_and(|e| e.hosts.is_empty())
            })
        },
        String::new,
    )
    .await;
    let round = r.round().await.unwrap();
    assert_eq!(round.deleted, 1, "{round:?}");
    assert!(ingress(&fake, name).is_none());
    assert!(ingress(&fake, "other").is_some());
    assert!(ingress(&fake, "kubekuma-site-prod-mine").is_some());
    // The rival now holds www.example.com.
    assert!(ingress(&fake, "kubekuma-site-prod-rival").is_some());

    // Without the permission: an error, nothing else.
    fake.forbid("/apis/networking.k8s.io/v1/namespaces/kubekuma/ingresses");
    let e = r.round().await.unwrap_err().to_string();
    assert!(e.contains("forbidden") || e.contains("Forbidden"), "{e}");
    let plan = kubekuma_agent::cluster::ingress::plan(&w.snapshots.borrow(), &o);
    let (status, _, msg) = plan.pages[&ObjKey::new("prod", "rival")].condition(&o);
    assert_eq!(status, "False");
    assert!(
        msg.starts_with("cannot write Ingresses in namespace kubekuma"),
        "{msg}"
    );
}

fn condition(fake: &FakeKube, ns: &str, name: &str) -> Value {
    let obj = fake.get_object("monitoring.kubekuma.io/v1", "StatusPage", Some(ns), name);
    let conds = obj
        .map(|o| o["status"]["conditions"].clone())
        .unwrap_or_default();
    let conds = conds.as_array().cloned().unwrap_or_default();
    conds
        .into_iter()
        .find(|c| c["type"] == "Exposed")
        .unwrap_or(Value::Null)
}

/// The agent in kube mode: with a site server it makes the Ingress and says so in the
/// page's `Exposed` condition; without one it makes none and says why.
async fn agent_with(
    site: Option<&str>,
) -> (FakeKube, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let fake = FakeKube::start().await;
    put(
        &fake,
        &page(
            "prod",
            "public",
            "{mode: ingress, hosts: [status.example.com]}",
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listen.local_addr().unwrap();
    drop(listen);
    let opts = AgentOptions {
        store_url: Some(format!("file://{}", dir.path().join("objects").display())),
        ..AgentOptions::new("kube", dir.path().join("data"), addr.to_string())
    };
    let mode = KubeMode {
        client: fake.client(),
        namespaces: vec![],
        status: StatusOptions {
            interval: Duration::from_millis(300),
            max_per_second: 100,
            ingress: IngressOptions {
                site: site.map(|s| s.parse().unwrap()),
                class_name: Some("public".into()),
                interval: Duration::from_millis(300),
                ..opts_ns()
            },
            ..Default::default()
        },
        is_leader: watch::channel(true).1,
    };
    let (stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(async move {
        runtime::run_with(opts, CatalogSource::Kube(mode), stop_rx)
            .await
            .unwrap();
        drop(dir);
    });
    (fake, stop, agent)
}

fn opts_ns() -> IngressOptions {
    IngressOptions {
        namespace: "kubekuma".into(),
        ..IngressOptions::default()
    }
}

#[tokio::test]
async fn agent_makes_the_ingress_and_says_so() {
    let (fake, stop, agent) = agent_with(Some("kubekuma-site:80")).await;
    let name = "kubekuma-site-prod-public";
    until(
        "the Ingress and Exposed=True",
        || ingress(&fake, name).is_some() && condition(&fake, "prod", "public")["status"] == "True",
        || condition(&fake, "prod", "public").to_string(),
    )
    .await;
    let i = ingress(&fake, name).unwrap();
    assert_eq!(i["spec"]["ingressClassName"], "public");
    assert_eq!(
        i["spec"]["rules"][0]["http"]["paths"][0]["backend"],
        json!({"service": {"name": "kubekuma-site", "port": {"number": 80}}})
    );
    let c = condition(&fake, "prod", "public");
    assert_eq!(c["reason"], "IngressReady");
    assert_eq!(
        c["message"],
        "Ingress kubekuma/kubekuma-site-prod-public routes status.example.com to Service kubekuma-site:80"
    );
    // The page leaves ingress mode: the Ingress and the condition go.
    put(&fake, &page("prod", "public", "{mode: static}"));
    until(
        "no Ingress, no Exposed",
        || ingress(&fake, name).is_none() && condition(&fake, "prod", "public").is_null(),
        || condition(&fake, "prod", "public").to_string(),
    )
    .await;
    stop.send(true).unwrap();
    agent.await.unwrap();
}

#[tokio::test]
async fn agent_without_a_site_server_makes_none_and_says_why() {
    let (fake, stop, agent) = agent_with(None).await;
    until(
        "Exposed=False",
        || condition(&fake, "prod", "public")["status"] == "False",
        || condition(&fake, "prod", "public").to_string(),
    )
    .await;
    let c = condition(&fake, "prod", "public");
    assert_eq!(c["reason"], "NoSiteServer");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .starts_with("no site server configured"),
        "{c}"
    );
    // No Ingress request at all: the base's RBAC has no Ingress permission.
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.path.contains("/ingresses")),
        "no Ingress request without a site server"
    );
    stop.send(true).unwrap();
    agent.await.unwrap();
}
