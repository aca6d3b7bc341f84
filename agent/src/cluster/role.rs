//! The replica's role on its own Pod: the label `kubekuma.io/role` is `leader` on the Pod
//! holding the Lease and `standby` on the others. The agent Service selects
//! `kubekuma.io/role: leader`, so push heartbeats and API calls reach the replica that
//! records them, while both replicas stay Ready and a PodDisruptionBudget can still let a
//! node drain move either of them.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::watch;

/// The label the agent keeps on its own Pod.
pub const ROLE_LABEL: &str = "kubekuma.io/role";

/// The label's value for a role.
pub fn role_name(leader: bool) -> &'static str {
    if leader { "leader" } else { "standby" }
}

/// Keeps `ROLE_LABEL` on Pod `namespace/pod` equal to the role in `is_leader` until
/// `shutdown` turns true (and then marks the Pod `standby`, best effort). A failed patch is
/// retried every `retry` until it succeeds or the role changes again.
pub async fn follow(
    client: kube::Client,
    namespace: &str,
    pod: &str,
    mut is_leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    retry: Duration,
) {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let mut applied: Option<bool> = None;
    loop {
        let want = *is_leader.borrow_and_update();
        if applied != Some(want) {
            match label(&pods, pod, want).await {
                Ok(()) => {
                    tracing::info!(pod, role = role_name(want), "pod role label set");
                    applied = Some(want);
                }
                Err(e) => {
                    tracing::warn!(pod, role = role_name(want), error = %e, "cannot label the pod with its role; retrying");
                }
            }
        }
        let wait = if applied == Some(want) {
            Duration::MAX
        } else {
            retry
        };
        tokio::select! {
            changed = is_leader.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => if *shutdown.borrow() { break },
            _ = sleep_for(wait) => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
    if applied != Some(false) {
        let _ = tokio::time::timeout(Duration::from_secs(5), label(&pods, pod, false)).await;
    }
}

async fn sleep_for(d: Duration) {
    if d == Duration::MAX {
        std::future::pending::<()>().await
    } else {
        tokio::time::sleep(d).await
    }
}

async fn label(pods: &Api<Pod>, pod: &str, leader: bool) -> kube::Result<()> {
    let patch = serde_json::json!({"metadata": {"labels": {ROLE_LABEL: role_name(leader)}}});
    pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}
