//! Keeping what the agent holds in line with the catalog: the resource cache in SQLite,
//! monitors removed, paused or resumed, the push hub's tokens, and the live view
//! restored from the saved monitor states at start.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use kubekuma_crds::MonitorState;
use kubekuma_crds::results::Heartbeat;

use crate::catalog::{ObjKey, ResourceId, Snapshot};
use crate::process::state_row;
use crate::push::PushHub;
use crate::schedule::MonitorPlan;
use crate::state::Tracker;
use crate::state::live::Live;
use crate::store::{CrdCacheEntry, Store, StoreError};

/// What the last catalog sync wrote, to write only changes next time.
#[derive(Debug, Default)]
pub struct Synced {
    cached: HashMap<ResourceId, u64>,
}

fn hash_json(v: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

/// Apply a new snapshot to what the agent keeps: the crd_cache table (changed resources
/// upserted, removed ones marked deleted; Secrets are never cached), monitors that
/// disappeared (their open incident closed, their state dropped) and monitors that were
/// disabled or enabled (paused, with a heartbeat saying so).
pub async fn sync_catalog(
    snapshot: &Snapshot,
    store: &Store,
    live: &Mutex<Live>,
    synced: &mut Synced,
) {
    let now = Utc::now();
    cache_resources(snapshot, store, synced, now).await;

    // Monitors removed from the catalog, and monitors paused or resumed.
    let (removed, toggled) = {
        let Ok(mut l) = live.lock() else { return };
        let removed: Vec<(ObjKey, Option<i64>)> = l
            .monitors
            .iter()
            .filter(|(k, _)| !snapshot.monitors.contains_key(*k))
            .map(|(k, m)| (k.clone(), m.tracker.open_incident))
            .collect();
        for (k, _) in &removed {
            l.monitors.remove(k);
        }
        let mut toggled = Vec::new();
        for (k, m) in &snapshot.monitors {
            let paused = !m.spec.is_enabled();
            let entry = l.monitors.entry(k.clone()).or_default();
            if entry.tracker.set_paused(paused, now) {
                toggled.push((k.clone(), entry.tracker.clone()));
            }
        }
        (removed, toggled)
    };
    for (k, incident) in removed {
        if let Some(id) = incident
            && let Err(e) = store.close_incident(id, now).await
        {
            tracing::error!(monitor = %k, error = %e, "cannot close the incident of a removed monitor");
        }
        if let Err(e) = store.delete_monitor_state(&k.namespace, &k.name).await {
            tracing::error!(monitor = %k, error = %e, "cannot drop the state of a removed monitor");
        }
    }
    for (k, t) in toggled {
        if t.paused {
            let _ = store.record_heartbeat(Heartbeat {
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                state: MonitorState::Paused,
                latency_ms: None,
                reason: None,
                message: None,
                checked_at: now,
                attempts: 0,
            });
        }
        if let Err(e) = store.save_monitor_state(state_row(&k, &t, now)).await {
            tracing::error!(monitor = %k, error = %e, "cannot save monitor state");
        }
    }
}

/// Keeps SQLite's resource cache in line with the catalog: changed resources are
/// written, those no longer in the catalog marked deleted.
async fn cache_resources(
    snapshot: &Snapshot,
    store: &Store,
    synced: &mut Synced,
    now: DateTime<Utc>,
) {
    let mut seen = HashSet::new();
    for r in snapshot.resources() {
        let id = r.id();
        let Ok(v) = r.to_json() else {
            continue;
        };
        seen.insert(id.clone());
        let h = hash_json(&v);
        if synced.cached.get(&id) == Some(&h) {
            continue;
        }
        let entry = cache_entry(&id, &v);
        match store.upsert_crd_cache(entry).await {
            Ok(()) => {
                synced.cached.insert(id, h);
            }
            Err(e) => tracing::error!(resource = %id, error = %e, "cannot cache resource"),
        }
    }
    let gone: Vec<ResourceId> = synced
        .cached
        .keys()
        .filter(|id| !seen.contains(*id))
        .cloned()
        .collect();
    for id in gone {
        synced.cached.remove(&id);
        if let Err(e) = store
            .mark_crd_deleted(&id.kind, &id.namespace, &id.name, now)
            .await
        {
            tracing::error!(resource = %id, error = %e, "cannot mark resource deleted");
        }
    }
}

/// The cache row of resource `id`, from its JSON.
fn cache_entry(id: &ResourceId, v: &serde_json::Value) -> CrdCacheEntry {
    let meta = v.get("metadata").cloned().unwrap_or_default();
    CrdCacheEntry {
        kind: id.kind.clone(),
        api_version: kubekuma_crds::API_VERSION.into(),
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        generation: meta.get("generation").and_then(|g| g.as_i64()).unwrap_or(1),
        resource_version: meta
            .get("resourceVersion")
            .and_then(|g| g.as_str())
            .map(str::to_string),
        spec: v.get("spec").cloned().unwrap_or_default(),
        status: v.get("status").cloned(),
        labels: meta.get("labels").cloned().unwrap_or(serde_json::json!({})),
        annotations: meta
            .get("annotations")
            .cloned()
            .unwrap_or(serde_json::json!({})),
    }
}

/// Hand the catalog's plans to the push hub and put the generated push tokens in the
/// live view (where a monitor's status is taken from).
pub async fn sync_push(hub: &PushHub, plans: &[MonitorPlan], live: &Mutex<Live>) {
    let mut generated = hub.apply(plans, Utc::now()).await;
    let Ok(mut l) = live.lock() else { return };
    for (k, m) in l.monitors.iter_mut() {
        m.push_token = generated.remove(k);
    }
    for (k, token) in generated {
        l.monitors.entry(k).or_default().push_token = Some(token);
    }
}

/// Restore trackers saved by an earlier run (at start), or by the leader before this
/// one (at a takeover on a shared store).
pub async fn restore(store: &Store, live: &Mutex<Live>) -> Result<(), StoreError> {
    let rows = store.load_monitor_states().await?;
    let Ok(mut l) = live.lock() else {
        return Ok(());
    };
    for r in rows {
        let t = Tracker {
            // An open incident means the monitor was down, whatever was shown (paused).
            base: match (r.open_incident_id, r.state) {
                (Some(_), _) | (None, MonitorState::Down) => MonitorState::Down,
                (None, MonitorState::Up | MonitorState::Flapping) => MonitorState::Up,
                (None, _) => MonitorState::Pending,
            },
            since: r.since,
            consecutive_failures: r.consecutive_failures,
            open_incident: r.open_incident_id,
            ..Tracker::default()
        };
        // Only what the store knows: a push token or a certificate seen stays.
        let m = l
            .monitors
            .entry(ObjKey::new(&r.namespace, &r.name))
            .or_default();
        m.tracker = t;
        m.checked_at = r.last_checked_at;
        // What this agent held from its own view (while it could not reach a shared
        // store) gives way to what the store says.
        m.held_incidents.clear();
        m.state_unsaved = false;
    }
    Ok(())
}
