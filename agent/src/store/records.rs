//! Small keyed records: monitor state (survives restarts), the CRD cache (never
//! Secrets) and the export outbox (latest body per object key, versioned).

use chrono::{DateTime, Utc};
use kubekuma_crds::MonitorState;
use rusqlite::{Connection, OptionalExtension, params};

use super::convert::{Fail, count, json, ms, opt_time, parse_enum, time};

/// What the state machine must remember about a monitor across restarts.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorStateRow {
    /// Monitor namespace.
    pub namespace: String,
    /// Monitor name.
    pub name: String,
    /// Current state.
    pub state: MonitorState,
    /// Since when it is in this state.
    pub since: Option<DateTime<Utc>>,
    /// When it was last checked.
    pub last_checked_at: Option<DateTime<Utc>>,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
    /// The incident open for it, if any (must exist in the store).
    pub open_incident_id: Option<i64>,
    /// When its TLS certificate expires, if it has one.
    pub cert_expires_at: Option<DateTime<Utc>>,
}

/// A resource to cache: anything but a Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct CrdCacheEntry {
    /// `kind`, e.g. `Monitor`. `Secret` is refused.
    pub kind: String,
    /// `apiVersion`.
    pub api_version: String,
    /// Namespace (empty for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// `metadata.resourceVersion`, when known.
    pub resource_version: Option<String>,
    /// `spec` as JSON.
    pub spec: serde_json::Value,
    /// `status` as JSON, when known.
    pub status: Option<serde_json::Value>,
    /// `metadata.labels` as JSON.
    pub labels: serde_json::Value,
    /// `metadata.annotations` as JSON.
    pub annotations: serde_json::Value,
}

/// A cached resource with its bookkeeping times.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedCrd {
    /// The resource.
    pub entry: CrdCacheEntry,
    /// First cached.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was deleted from the cluster (kept as a tombstone).
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Whether a kind may never be cached.
pub(crate) fn refused_kind(kind: &str) -> bool {
    kind.trim().eq_ignore_ascii_case("secret")
}

pub(crate) fn save_state(conn: &Connection, row: &MonitorStateRow, now: i64) -> Result<(), Fail> {
    conn.prepare_cached(
        "INSERT INTO monitor_state
           (monitor_namespace, monitor_name, state, since, last_checked_at, consecutive_failures,
            open_incident_id, cert_expires_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (monitor_namespace, monitor_name) DO UPDATE SET
           state = excluded.state, since = excluded.since,
           last_checked_at = excluded.last_checked_at,
           consecutive_failures = excluded.consecutive_failures,
           open_incident_id = excluded.open_incident_id,
           cert_expires_at = excluded.cert_expires_at, updated_at = excluded.updated_at",
    )?
    .execute(params![
        row.namespace,
        row.name,
        row.state.as_str(),
        row.since.map(ms),
        row.last_checked_at.map(ms),
        i64::from(row.consecutive_failures),
        row.open_incident_id,
        row.cert_expires_at.map(ms),
        now,
    ])?;
    Ok(())
}

type RawState = (
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    i64,
    Option<i64>,
    Option<i64>,
);

pub(crate) fn load_states(conn: &Connection) -> Result<Vec<MonitorStateRow>, Fail> {
    let mut st = conn.prepare_cached(
        "SELECT monitor_namespace, monitor_name, state, since, last_checked_at,
                consecutive_failures, open_incident_id, cert_expires_at
         FROM monitor_state ORDER BY monitor_namespace, monitor_name",
    )?;
    let raw: Vec<RawState> = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    raw.into_iter()
        .map(
            |(namespace, name, state, since, last, failures, incident, cert)| {
                Ok(MonitorStateRow {
                    namespace,
                    name,
                    state: parse_enum("monitor_state.state", &state)?,
                    since: opt_time("monitor_state.since", since)?,
                    last_checked_at: opt_time("monitor_state.last_checked_at", last)?,
                    consecutive_failures: count("monitor_state.consecutive_failures", failures)?,
                    open_incident_id: incident,
                    cert_expires_at: opt_time("monitor_state.cert_expires_at", cert)?,
                })
            },
        )
        .collect()
}

pub(crate) fn delete_state(conn: &Connection, ns: &str, name: &str) -> Result<bool, Fail> {
    let n = conn.execute(
        "DELETE FROM monitor_state WHERE monitor_namespace = ?1 AND monitor_name = ?2",
        params![ns, name],
    )?;
    Ok(n > 0)
}

pub(crate) fn upsert_crd(conn: &Connection, e: &CrdCacheEntry, now: i64) -> Result<(), Fail> {
    if refused_kind(&e.kind) {
        return Err(Fail::SecretRefused {
            namespace: e.namespace.clone(),
            name: e.name.clone(),
        });
    }
    conn.prepare_cached(
        "INSERT INTO crd_cache
           (kind, api_version, namespace, name, generation, resource_version, spec, status,
            labels, annotations, created_at, updated_at, deleted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, NULL)
         ON CONFLICT (kind, namespace, name) DO UPDATE SET
           api_version = excluded.api_version, generation = excluded.generation,
           resource_version = excluded.resource_version, spec = excluded.spec,
           status = excluded.status, labels = excluded.labels,
           annotations = excluded.annotations, updated_at = excluded.updated_at,
           deleted_at = NULL",
    )?
    .execute(params![
        e.kind,
        e.api_version,
        e.namespace,
        e.name,
        e.generation,
        e.resource_version,
        e.spec.to_string(),
        e.status.as_ref().map(|s| s.to_string()),
        e.labels.to_string(),
        e.annotations.to_string(),
        now,
    ])?;
    Ok(())
}

pub(crate) fn mark_crd_deleted(
    conn: &Connection,
    kind: &str,
    ns: &str,
    name: &str,
    at: i64,
) -> Result<bool, Fail> {
    let n = conn.execute(
        "UPDATE crd_cache SET deleted_at = ?4, updated_at = ?4
         WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
        params![kind, ns, name, at],
    )?;
    Ok(n > 0)
}

type RawCrd = (
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Option<i64>,
);

pub(crate) fn get_crd(
    conn: &Connection,
    kind: &str,
    ns: &str,
    name: &str,
) -> Result<Option<CachedCrd>, Fail> {
    let raw: Option<RawCrd> = conn
        .query_row(
            "SELECT kind, api_version, namespace, name, generation, resource_version, spec, status,
                    labels, annotations, created_at, updated_at, deleted_at
             FROM crd_cache WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
            params![kind, ns, name],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                    r.get(12)?,
                ))
            },
        )
        .optional()?;
    let Some((
        kind,
        api_version,
        namespace,
        name,
        generation,
        rv,
        spec,
        status,
        labels,
        ann,
        c,
        u,
        d,
    )) = raw
    else {
        return Ok(None);
    };
    let null = serde_json::Value::Null;
    Ok(Some(CachedCrd {
        entry: CrdCacheEntry {
            kind,
            api_version,
            namespace,
            name,
            generation,
            resource_version: rv,
            spec: json("crd_cache.spec", spec)?.unwrap_or(serde_json::Value::Null),
            status: json("crd_cache.status", status)?,
            labels: json("crd_cache.labels", labels)?.unwrap_or(null.clone()),
            annotations: json("crd_cache.annotations", ann)?.unwrap_or(null),
        },
        created_at: time("crd_cache.created_at", c)?,
        updated_at: time("crd_cache.updated_at", u)?,
        deleted_at: opt_time("crd_cache.deleted_at", d)?,
    }))
}

/// Store the latest body of `key`; returns its new version. Versions come from one
/// sequence that only grows, so a key deleted and queued again never reuses a version
/// an uploader may still hold.
pub(crate) fn outbox_put(
    conn: &mut Connection,
    key: &str,
    body: &[u8],
    now: i64,
) -> Result<i64, Fail> {
    let tx = conn.transaction()?;
    let version: i64 = tx.query_row(
        "INSERT INTO store_meta (key, value) VALUES ('outbox_version', 1)
         ON CONFLICT (key) DO UPDATE SET value = value + 1
         RETURNING value",
        [],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO export_outbox (key, body, version, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET body = excluded.body, version = excluded.version",
        params![key, body, version, now],
    )?;
    tx.commit()?;
    Ok(version)
}

/// Pending uploads in the order their keys were first queued.
pub(crate) fn outbox_pending(
    conn: &Connection,
    limit: i64,
) -> Result<Vec<(String, Vec<u8>, i64)>, Fail> {
    let mut st = conn.prepare_cached(
        "SELECT key, body, version FROM export_outbox ORDER BY created_at, rowid LIMIT ?1",
    )?;
    let rows = st.query_map([limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn outbox_done(conn: &Connection, key: &str, version: i64) -> Result<bool, Fail> {
    let n = conn.execute(
        "DELETE FROM export_outbox WHERE key = ?1 AND version = ?2",
        params![key, version],
    )?;
    Ok(n > 0)
}
