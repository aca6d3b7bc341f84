//! Admin API sessions and the last login / key use on PostgreSQL, as
//! `store/sessions.rs` (a token is live only while its row exists).

use super::super::convert::{Fail, time};
use super::super::sessions::{AuthActivity, SessionRow};
use super::{Pg, pg_text};
use crate::store::convert::ms;

/// Insert the session of a login in one transaction with the user's last login: the
/// session keeps the login before it (returned), and the user's last login becomes this
/// one. The user's activity row (once it exists) is locked first, so two logins of
/// one user on two replicas at once are ordered.
pub(crate) async fn insert_login(
    pg: &Pg,
    row: &SessionRow,
    now: i64,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Fail> {
    let kind = AuthActivity::UserLogin.kind();
    let mut c = pg.client().await?;
    let tx = c.transaction().await?;
    let previous: Option<i64> = tx
        .query_opt(
            "SELECT last_at FROM auth_activity WHERE kind = $1 AND id = $2 FOR UPDATE",
            &[&kind, &row.user_id],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let st = tx
        .prepare_cached(
            "INSERT INTO sessions (id, user_id, username, role, token_hash, created_at, updated_at,
               expires_at, ip_address, user_agent, previous_login_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await?;
    tx.execute(
        &st,
        &[
            &row.id,
            &row.user_id,
            &row.username,
            &row.role,
            &row.token_hash,
            &ms(row.created_at),
            &now,
            &ms(row.expires_at),
            &row.ip_address.as_deref().map(pg_text),
            &row.user_agent.as_deref().map(pg_text),
            &previous,
        ],
    )
    .await?;
    tx.execute(UPSERT_ACTIVITY, &[&kind, &row.user_id, &ms(row.created_at)])
        .await?;
    tx.commit().await?;
    previous
        .map(|v| time("auth_activity.last_at", v))
        .transpose()
}

/// The login before session `id`, if it exists and was not its user's first.
pub(crate) async fn previous_login(
    pg: &Pg,
    id: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Fail> {
    let c = pg.client().await?;
    let v: Option<Option<i64>> = c
        .query_opt(
            "SELECT previous_login_at FROM sessions WHERE id = $1",
            &[&id],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    v.flatten()
        .map(|v| time("sessions.previous_login_at", v))
        .transpose()
}

/// Record a login or key use; a later time is never replaced by an earlier one.
const UPSERT_ACTIVITY: &str = "INSERT INTO auth_activity (kind, id, last_at) VALUES ($1, $2, $3)
     ON CONFLICT (kind, id) DO UPDATE SET
       last_at = GREATEST(auth_activity.last_at, excluded.last_at)";

pub(crate) async fn by_token_hash(
    pg: &Pg,
    hash: &str,
    now: i64,
) -> Result<Option<SessionRow>, Fail> {
    let c = pg.client().await?;
    let st = c
        .prepare_cached(
            "SELECT id, user_id, username, role, token_hash, created_at, expires_at, ip_address,
               user_agent
             FROM sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .await?;
    let Some(r) = c.query_opt(&st, &[&hash, &now]).await? else {
        return Ok(None);
    };
    Ok(Some(SessionRow {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        username: r.try_get(2)?,
        role: r.try_get(3)?,
        token_hash: r.try_get(4)?,
        created_at: time("sessions.created_at", r.try_get(5)?)?,
        expires_at: time("sessions.expires_at", r.try_get(6)?)?,
        ip_address: r.try_get(7)?,
        user_agent: r.try_get(8)?,
    }))
}

pub(crate) async fn delete(pg: &Pg, id: &str) -> Result<bool, Fail> {
    let c = pg.client().await?;
    Ok(c.execute("DELETE FROM sessions WHERE id = $1", &[&id])
        .await?
        > 0)
}

pub(crate) async fn purge_expired(pg: &Pg, now: i64) -> Result<usize, Fail> {
    let c = pg.client().await?;
    let n = c
        .execute("DELETE FROM sessions WHERE expires_at <= $1", &[&now])
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(crate) async fn count(pg: &Pg) -> Result<u64, Fail> {
    let c = pg.client().await?;
    let n: i64 = c
        .query_one("SELECT count(*) FROM sessions", &[])
        .await?
        .try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(crate) async fn record_activity(
    pg: &Pg,
    what: AuthActivity,
    id: &str,
    at: i64,
) -> Result<(), Fail> {
    let c = pg.client().await?;
    c.execute(UPSERT_ACTIVITY, &[&what.kind(), &id, &at])
        .await?;
    Ok(())
}

pub(crate) async fn activity(
    pg: &Pg,
    what: AuthActivity,
    id: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Fail> {
    let c = pg.client().await?;
    let v: Option<i64> = c
        .query_opt(
            "SELECT last_at FROM auth_activity WHERE kind = $1 AND id = $2",
            &[&what.kind(), &id],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    v.map(|v| time("auth_activity.last_at", v)).transpose()
}
