//! Silences created through the admin API on PostgreSQL, as `store/api_silences.rs`
//! (expired ones are kept for the history).

use chrono::{DateTime, Utc};
use kubekuma_crds::SilenceSpec;

use super::super::api_silences::{ApiSilence, CreateSilence, parse_spec};
use super::super::convert::{Fail, ms, opt_time, time};
use super::{Pg, pg_text};
use crate::catalog::ObjKey;

pub(crate) async fn create(
    pg: &Pg,
    ns: &str,
    name: &str,
    text: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<CreateSilence, Fail> {
    let mut c = pg.client().await?;
    let tx = c.transaction().await?;
    // Lock the row (if any) so two creations of one name cannot both succeed.
    let existing = tx
        .query_opt(
            "SELECT spec, expired_at FROM api_silences
             WHERE silence_namespace = $1 AND silence_name = $2 FOR UPDATE",
            &[&ns, &name],
        )
        .await?;
    if let Some(r) = existing {
        let spec: String = r.try_get(0)?;
        let expired: Option<i64> = r.try_get(1)?;
        if expired.is_none() && parse_spec(&spec).map_or(true, |s: SilenceSpec| s.ends_at > now) {
            return Ok(CreateSilence::Exists);
        }
    }
    tx.execute(
        "INSERT INTO api_silences
           (silence_namespace, silence_name, spec, created_by, created_at, expired_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, NULL, $5)
         ON CONFLICT (silence_namespace, silence_name) DO UPDATE SET
           spec = excluded.spec, created_by = excluded.created_by,
           created_at = excluded.created_at, expired_at = NULL,
           updated_at = excluded.updated_at",
        &[&ns, &name, &text, &pg_text(by), &ms(now)],
    )
    .await?;
    tx.commit().await?;
    Ok(CreateSilence::Created)
}

pub(crate) async fn expire(pg: &Pg, ns: &str, name: &str, now: i64) -> Result<bool, Fail> {
    let c = pg.client().await?;
    let n = c
        .execute(
            "UPDATE api_silences SET expired_at = $3, updated_at = $3
             WHERE silence_namespace = $1 AND silence_name = $2 AND expired_at IS NULL",
            &[&ns, &name, &now],
        )
        .await?;
    Ok(n > 0)
}

pub(crate) async fn all(pg: &Pg) -> Result<Vec<ApiSilence>, Fail> {
    let c = pg.client().await?;
    let rows = c
        .query(
            "SELECT silence_namespace, silence_name, spec, created_by, created_at, expired_at
             FROM api_silences ORDER BY silence_namespace, silence_name",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let ns: String = r.try_get(0)?;
            let name: String = r.try_get(1)?;
            let spec: String = r.try_get(2)?;
            Ok(ApiSilence {
                key: ObjKey::new(&ns, &name),
                spec: parse_spec(&spec)?,
                created_by: r.try_get(3)?,
                created_at: time("api_silences.created_at", r.try_get(4)?)?,
                expired_at: opt_time("api_silences.expired_at", r.try_get(5)?)?,
            })
        })
        .collect()
}
