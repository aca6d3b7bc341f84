//! Small keyed records on PostgreSQL, as `store/records.rs`: monitor state, the CRD
//! cache (never Secrets) and the export outbox (latest body per key, versioned).

use super::super::convert::{Fail, count, json, opt_time, parse_enum, time};
use super::super::records::{CachedCrd, CrdCacheEntry, MonitorStateRow, refused_kind};
use super::{Pg, pg_text};
use crate::store::convert::ms;

pub(crate) async fn save_state(pg: &Pg, row: &MonitorStateRow, now: i64) -> Result<(), Fail> {
    let c = pg.bulk_client().await?;
    let st = c
        .prepare_cached(
            "INSERT INTO monitor_state
               (monitor_namespace, monitor_name, state, since, last_checked_at, consecutive_failures,
                open_incident_id, cert_expires_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (monitor_namespace, monitor_name) DO UPDATE SET
               state = excluded.state, since = excluded.since,
               last_checked_at = excluded.last_checked_at,
               consecutive_failures = excluded.consecutive_failures,
               open_incident_id = excluded.open_incident_id,
               cert_expires_at = excluded.cert_expires_at, updated_at = excluded.updated_at",
        )
        .await?;
    c.execute(
        &st,
        &[
            &row.namespace,
            &row.name,
            &row.state.as_str(),
            &row.since.map(ms),
            &row.last_checked_at.map(ms),
            &i64::from(row.consecutive_failures),
            &row.open_incident_id,
            &row.cert_expires_at.map(ms),
            &now,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn load_states(pg: &Pg) -> Result<Vec<MonitorStateRow>, Fail> {
    let c = pg.client().await?;
    let rows = c
        .query(
            "SELECT monitor_namespace, monitor_name, state, since, last_checked_at,
                    consecutive_failures, open_incident_id, cert_expires_at
             FROM monitor_state ORDER BY monitor_namespace, monitor_name",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let state: String = r.try_get(2)?;
            Ok(MonitorStateRow {
                namespace: r.try_get(0)?,
                name: r.try_get(1)?,
                state: parse_enum("monitor_state.state", &state)?,
                since: opt_time("monitor_state.since", r.try_get(3)?)?,
                last_checked_at: opt_time("monitor_state.last_checked_at", r.try_get(4)?)?,
                consecutive_failures: count("monitor_state.consecutive_failures", r.try_get(5)?)?,
                open_incident_id: r.try_get(6)?,
                cert_expires_at: opt_time("monitor_state.cert_expires_at", r.try_get(7)?)?,
            })
        })
        .collect()
}

pub(crate) async fn delete_state(pg: &Pg, ns: &str, name: &str) -> Result<bool, Fail> {
    let c = pg.client().await?;
    let n = c
        .execute(
            "DELETE FROM monitor_state WHERE monitor_namespace = $1 AND monitor_name = $2",
            &[&ns, &name],
        )
        .await?;
    Ok(n > 0)
}

pub(crate) async fn upsert_crd(pg: &Pg, e: &CrdCacheEntry, now: i64) -> Result<(), Fail> {
    if refused_kind(&e.kind) {
        return Err(Fail::SecretRefused {
            namespace: e.namespace.clone(),
            name: e.name.clone(),
        });
    }
    let c = pg.client().await?;
    let st = c
        .prepare_cached(
            "INSERT INTO crd_cache
               (kind, api_version, namespace, name, generation, resource_version, spec, status,
                labels, annotations, created_at, updated_at, deleted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, NULL)
             ON CONFLICT (kind, namespace, name) DO UPDATE SET
               api_version = excluded.api_version, generation = excluded.generation,
               resource_version = excluded.resource_version, spec = excluded.spec,
               status = excluded.status, labels = excluded.labels,
               annotations = excluded.annotations, updated_at = excluded.updated_at,
               deleted_at = NULL",
        )
        .await?;
    c.execute(
        &st,
        &[
            &e.kind,
            &e.api_version,
            &e.namespace,
            &e.name,
            &e.generation,
            &e.resource_version.as_deref().map(pg_text),
            &e.spec.to_string(),
            &e.status.as_ref().map(|s| s.to_string()),
            &e.labels.to_string(),
            &e.annotations.to_string(),
            &now,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn mark_crd_deleted(
    pg: &Pg,
    kind: &str,
    ns: &str,
    name: &str,
    at: i64,
) -> Result<bool, Fail> {
    let c = pg.client().await?;
    let n = c
        .execute(
            "UPDATE crd_cache SET deleted_at = $4, updated_at = $4
             WHERE kind = $1 AND namespace = $2 AND name = $3",
            &[&kind, &ns, &name, &at],
        )
        .await?;
    Ok(n > 0)
}

pub(crate) async fn get_crd(
    pg: &Pg,
    kind: &str,
    ns: &str,
    name: &str,
) -> Result<Option<CachedCrd>, Fail> {
    let c = pg.client().await?;
    let Some(r) = c
        .query_opt(
            "SELECT kind, api_version, namespace, name, generation, resource_version, spec, status,
                    labels, annotations, created_at, updated_at, deleted_at
             FROM crd_cache WHERE kind = $1 AND namespace = $2 AND name = $3",
            &[&kind, &ns, &name],
        )
        .await?
    else {
        return Ok(None);
    };
    let null = serde_json::Value::Null;
    Ok(Some(CachedCrd {
        entry: CrdCacheEntry {
            kind: r.try_get(0)?,
            api_version: r.try_get(1)?,
            namespace: r.try_get(2)?,
            name: r.try_get(3)?,
            generation: r.try_get(4)?,
            resource_version: r.try_get(5)?,
            spec: json("crd_cache.spec", r.try_get(6)?)?.unwrap_or(null.clone()),
            status: json("crd_cache.status", r.try_get(7)?)?,
            labels: json("crd_cache.labels", r.try_get(8)?)?.unwrap_or(null.clone()),
            annotations: json("crd_cache.annotations", r.try_get(9)?)?.unwrap_or(null),
        },
        created_at: time("crd_cache.created_at", r.try_get(10)?)?,
        updated_at: time("crd_cache.updated_at", r.try_get(11)?)?,
        deleted_at: opt_time("crd_cache.deleted_at", r.try_get(12)?)?,
    }))
}

/// Store the latest body of `key`; returns its new version (one growing sequence).
pub(crate) async fn outbox_put(pg: &Pg, key: &str, body: &[u8], now: i64) -> Result<i64, Fail> {
    let mut c = pg.client().await?;
    let tx = c.transaction().await?;
    let version: i64 = tx
        .query_one(
            "INSERT INTO store_meta (key, value) VALUES ('outbox_version', 1)
             ON CONFLICT (key) DO UPDATE SET value = store_meta.value + 1
             RETURNING value",
            &[],
        )
        .await?
        .try_get(0)?;
    tx.execute(
        "INSERT INTO export_outbox (key, body, version, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET body = excluded.body, version = excluded.version",
        &[&key, &body, &version, &now],
    )
    .await?;
    tx.commit().await?;
    Ok(version)
}

/// Pending uploads in the order their keys were first queued.
pub(crate) async fn outbox_pending(
    pg: &Pg,
    limit: i64,
) -> Result<Vec<(String, Vec<u8>, i64)>, Fail> {
    let c = pg.client().await?;
    let rows = c
        .query(
            "SELECT key, body, version FROM export_outbox ORDER BY created_at, seq LIMIT $1",
            &[&limit],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

pub(crate) async fn outbox_done(pg: &Pg, key: &str, version: i64) -> Result<bool, Fail> {
    let c = pg.client().await?;
    let n = c
        .execute(
            "DELETE FROM export_outbox WHERE key = $1 AND version = $2",
            &[&key, &version],
        )
        .await?;
    Ok(n > 0)
}
