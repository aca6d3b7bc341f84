//! Push monitors' records: the generated token of a push monitor without a token in its
//! spec, and the time of its last push. A generated token is a credential: [`PushRow`]
//! never prints it.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::convert::{Fail, opt_time};

/// What the store keeps about one push monitor.
#[derive(Clone, PartialEq)]
pub struct PushRow {
    /// Monitor namespace.
    pub namespace: String,
    /// Monitor name.
    pub name: String,
    /// The token generated for it, if one was.
    pub generated_token: Option<String>,
    /// When its last push arrived.
    pub last_push_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for PushRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushRow")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field(
                "generated_token",
                &self.generated_token.as_ref().map(|_| "<redacted>"),
            )
            .field("last_push_at", &self.last_push_at)
            .finish()
    }
}

pub(crate) fn load(conn: &Connection) -> Result<Vec<PushRow>, Fail> {
    let mut st = conn.prepare_cached(
        "SELECT monitor_namespace, monitor_name, generated_token, last_push_at
         FROM push_monitors ORDER BY monitor_namespace, monitor_name",
    )?;
    let raw: Vec<(String, String, Option<String>, Option<i64>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    raw.into_iter()
        .map(|(namespace, name, generated_token, last)| {
            Ok(PushRow {
                namespace,
                name,
                generated_token,
                last_push_at: opt_time("push_monitors.last_push_at", last)?,
            })
        })
        .collect()
}

pub(crate) fn save_token(
    conn: &Connection,
    ns: &str,
    name: &str,
    token: &str,
    now: i64,
) -> Result<(), Fail> {
    conn.prepare_cached(
        "INSERT INTO push_monitors (monitor_namespace, monitor_name, generated_token, updated_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (monitor_namespace, monitor_name) DO UPDATE SET
           generated_token = excluded.generated_token, updated_at = excluded.updated_at",
    )?
    .execute(params![ns, name, token, now])?;
    Ok(())
}

/// Record a push at `at`; an older time never replaces a newer one.
pub(crate) fn seen(conn: &Connection, ns: &str, name: &str, at: i64, now: i64) -> Result<(), Fail> {
    conn.prepare_cached(
        "INSERT INTO push_monitors (monitor_namespace, monitor_name, last_push_at, updated_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (monitor_namespace, monitor_name) DO UPDATE SET
           last_push_at = max(coalesce(last_push_at, excluded.last_push_at), excluded.last_push_at),
           updated_at = excluded.updated_at",
    )?
    .execute(params![ns, name, at, now])?;
    Ok(())
}

pub(crate) fn delete(conn: &Connection, ns: &str, name: &str) -> Result<bool, Fail> {
    let n = conn.execute(
        "DELETE FROM push_monitors WHERE monitor_namespace = ?1 AND monitor_name = ?2",
        params![ns, name],
    )?;
    Ok(n > 0)
}
