//! `kubekuma agent`: run the probe agent in folder mode or kube mode.

use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::runtime;

use super::{AgentArgs, options, shutdown_signal};

/// The kube mode options of `agent`.
pub(super) struct KubeArgs {
    pub(super) watch_namespaces: Option<String>,
    pub(super) status_interval: u64,
    pub(super) base_url: Option<String>,
    pub(super) site_service: Option<crate::cluster::ingress::SiteService>,
    pub(super) ingress_class: Option<String>,
}

/// Whether `agent` without `--config` should read the API server: in a cluster, or with
/// a kubeconfig named by `KUBECONFIG`.
fn kube_mode_available() -> bool {
    let set = |v: &str| std::env::var_os(v).is_some_and(|s| !s.is_empty());
    set("KUBERNETES_SERVICE_HOST") || set("KUBECONFIG")
}

/// `kubekuma agent`: run until Ctrl-C or SIGTERM; exit 2 on a missing or weak session
/// secret or without a catalog to read, 1 when the agent could not start or failed.
pub(super) async fn agent_cmd(
    a: AgentArgs,
    listen: Option<String>,
    k: KubeArgs,
    session_secret: Option<String>,
) -> ExitCode {
    let Some(session_secret) = checked_session_secret(session_secret) else {
        return ExitCode::from(2);
    };
    let home = match crate::admin::auth::home_namespace_from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("kubekuma agent: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = shutdown_signal();
    // Leader election and the role label: awaited after the agent stopped, so the Lease is
    // released and the Pod marked standby before the process exits.
    let mut background: Vec<JoinHandle<()>> = Vec::new();
    let source = if !a.config.is_empty() {
        runtime::CatalogSource::Folder
    } else if kube_mode_available() {
        match kube_source(k, &home, &shutdown, &mut background).await {
            Some(source) => source,
            None => return ExitCode::FAILURE,
        }
    } else {
        eprintln!(
            "kubekuma agent: no catalog to read. Give --config PATH for folder mode, or run it in a \
             cluster (KUBERNETES_SERVICE_HOST) or with KUBECONFIG set for kube mode."
        );
        return ExitCode::from(2);
    };
    let listen = listen.unwrap_or_else(|| {
        format!(
            "0.0.0.0:{}",
            std::env::var("PORT").unwrap_or_else(|_| "3000".into())
        )
    });
    let config = a.config.clone();
    let mut opts = options(a, listen, config);
    opts.session_secret = Some(session_secret);
    let result = runtime::run_with(opts, source, shutdown).await;
    for task in background {
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubekuma agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The session secret if it is given and strong enough; else `None`, after saying why on
/// stderr.
fn checked_session_secret(session_secret: Option<String>) -> Option<String> {
    match session_secret.filter(|s| !s.is_empty()) {
        None => {
            eprintln!(
                "kubekuma agent: SESSION_SECRET is required: the key that signs admin API sessions, \
                 at least {} bytes (e.g. `export SESSION_SECRET=$(openssl rand -hex 32)`; in a cluster \
                 from the Secret kubekuma-session, see deploy/README.md)",
                crate::admin::auth::MIN_SECRET_LEN
            );
            None
        }
        Some(s) => match crate::admin::auth::check_secret(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                eprintln!("kubekuma agent: SESSION_SECRET: {e}");
                None
            }
        },
    }
}

/// Kube mode: connect to the API server, start leader election (and, with `POD_NAME`,
/// the Pod's role label) as `background` tasks, and return the catalog source; `None`
/// after saying why on stderr when the API server or the Lease cannot be used.
async fn kube_source(
    k: KubeArgs,
    home: &str,
    shutdown: &watch::Receiver<bool>,
    background: &mut Vec<JoinHandle<()>>,
) -> Option<runtime::CatalogSource> {
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kubekuma agent: cannot reach the Kubernetes API server: {e}");
            return None;
        }
    };
    let namespaces = k
        .watch_namespaces
        .as_deref()
        .map(crate::cluster::catalog::parse_namespaces)
        .unwrap_or_default();
    let watched = if namespaces.is_empty() {
        "all namespaces".to_string()
    } else {
        namespaces.join(",")
    };
    tracing::info!(home_namespace = %home, watched = %watched, "kube mode: namespaces");
    match &k.site_service {
        Some(s) => tracing::info!(
            site_service = %s,
            namespace = %home,
            "StatusPages with exposure mode ingress get an Ingress to the site server"
        ),
        None => tracing::info!(
            "no site server configured (KUBEKUMA_SITE_SERVICE): StatusPages with exposure mode \
             ingress get no Ingress"
        ),
    }
    let lease_ns = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let elector = match crate::cluster::lease::LeaderElector::new(
        client.clone(),
        crate::cluster::lease::LeaseConfig::new(lease_ns.clone()),
    ) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kubekuma agent: {e}");
            return None;
        }
    };
    tracing::info!(identity = elector.identity(), namespace = %lease_ns, "leader election");
    let leadership = elector.spawn(shutdown.clone());
    let is_leader = leadership.is_leader.clone();
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()) {
        let (client, is_leader, stop) = (client.clone(), is_leader.clone(), shutdown.clone());
        background.push(tokio::spawn(async move {
            crate::cluster::role::follow(
                client,
                &lease_ns,
                &pod,
                is_leader,
                stop,
                Duration::from_secs(5),
            )
            .await
        }));
    }
    background.push(leadership.task);
    Some(runtime::CatalogSource::Kube(runtime::KubeMode {
        client,
        namespaces,
        status: crate::cluster::status::StatusOptions {
            interval: Duration::from_secs(k.status_interval.max(1)),
            site_url: k.base_url.filter(|u| !u.trim().is_empty()),
            ingress: crate::cluster::ingress::IngressOptions {
                namespace: home.to_string(),
                site: k.site_service,
                class_name: k.ingress_class,
                interval: Duration::from_secs(k.status_interval.max(1)),
                outcomes: Default::default(),
            },
            ..Default::default()
        },
        is_leader,
    }))
}
