//! Push monitors' records on PostgreSQL, as `store/push.rs`: a generated token (a
//! credential) and the time of the last push.

use super::super::convert::{Fail, opt_time};
use super::super::push::PushRow;
use super::Pg;

pub(crate) async fn load(pg: &Pg) -> Result<Vec<PushRow>, Fail> {
    let c = pg.client().await?;
    let rows = c
        .query(
            "SELECT monitor_namespace, monitor_name, generated_token, last_push_at
             FROM push_monitors ORDER BY monitor_namespace, monitor_name",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(PushRow {
                namespace: r.try_get(0)?,
                name: r.try_get(1)?,
                generated_token: r.try_get(2)?,
                last_push_at: opt_time("push_monitors.last_push_at", r.try_get(3)?)?,
            })
        })
        .collect()
}

pub(crate) async fn save_token(
    pg: &Pg,
    ns: &str,
    name: &str,
    token: &str,
    now: i64,
) -> Result<(), Fail> {
    let c = pg.client().await?;
    c.execute(
        "INSERT INTO push_monitors (monitor_namespace, monitor_name, generated_token, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (monitor_namespace, monitor_name) DO UPDATE SET
           generated_token = excluded.generated_token, updated_at = excluded.updated_at",
        &[&ns, &name, &token, &now],
    )
    .await?;
    Ok(())
}

/// Record a push at `at`; an older time never replaces a newer one.
pub(crate) async fn seen(pg: &Pg, ns: &str, name: &str, at: i64, now: i64) -> Result<(), Fail> {
    let c = pg.client().await?;
    c.execute(
        "INSERT INTO push_monitors (monitor_namespace, monitor_name, last_push_at, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (monitor_namespace, monitor_name) DO UPDATE SET
           last_push_at = GREATEST(push_monitors.last_push_at, excluded.last_push_at),
           updated_at = excluded.updated_at",
        &[&ns, &name, &at, &now],
    )
    .await?;
    Ok(())
}

pub(crate) async fn delete(pg: &Pg, ns: &str, name: &str) -> Result<bool, Fail> {
    let c = pg.client().await?;
    let n = c
        .execute(
            "DELETE FROM push_monitors WHERE monitor_namespace = $1 AND monitor_name = $2",
            &[&ns, &name],
        )
        .await?;
    Ok(n > 0)
}
