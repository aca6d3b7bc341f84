//! Admin API sessions (the `sessions` table keeps the SHA-256 of each issued token, so a
//! token is live only while its row exists) and the last login of users / last use of
//! API keys (`auth_activity`); each session also keeps its user's login before it.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::convert::{Fail, ms, time};
use super::{Store, StoreError};

/// One issued session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// Session ID (a UUID), also in the token's `sessionId` claim.
    pub id: String,
    /// `namespace/name` of the LocalUser.
    pub user_id: String,
    /// Login name at login time.
    pub username: String,
    /// `admin`, `editor` or `viewer` at login time.
    pub role: String,
    /// Lowercase hex SHA-256 of the token (never the token itself).
    pub token_hash: String,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// Client address of the login.
    pub ip_address: Option<String>,
    /// `User-Agent` of the login.
    pub user_agent: Option<String>,
}

/// What `auth_activity` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthActivity {
    /// A LocalUser logged in.
    UserLogin,
    /// An ApiKey authenticated a request.
    ApiKeyUse,
}

impl AuthActivity {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            AuthActivity::UserLogin => "user",
            AuthActivity::ApiKeyUse => "apikey",
        }
    }
}

/// The last recorded login or key use of `id`, as stored.
fn last_at(conn: &Connection, what: AuthActivity, id: &str) -> Result<Option<i64>, Fail> {
    Ok(conn
        .prepare_cached("SELECT last_at FROM auth_activity WHERE kind = ?1 AND id = ?2")?
        .query_row(params![what.kind(), id], |r| r.get(0))
        .optional()?)
}

/// Record `at` as the last login or key use of `id` (a later time is never replaced by
/// an earlier one).
fn record_activity(conn: &Connection, what: AuthActivity, id: &str, at: i64) -> Result<(), Fail> {
    conn.prepare_cached(
        "INSERT INTO auth_activity (kind, id, last_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (kind, id) DO UPDATE SET last_at = max(last_at, excluded.last_at)",
    )?
    .execute(params![what.kind(), id, at])?;
    Ok(())
}

/// Insert the session of a login in one transaction: the session keeps the user's last
/// login so far (its previous login), and the user's last login becomes this one.
fn insert_login(
    conn: &mut Connection,
    row: &SessionRow,
    now: i64,
) -> Result<Option<DateTime<Utc>>, Fail> {
    let tx = conn.transaction()?;
    let previous = last_at(&tx, AuthActivity::UserLogin, &row.user_id)?;
    insert(&tx, row, previous, now)?;
    record_activity(
        &tx,
        AuthActivity::UserLogin,
        &row.user_id,
        ms(row.created_at),
    )?;
    tx.commit()?;
    previous
        .map(|v| time("auth_activity.last_at", v))
        .transpose()
}

fn insert(
    conn: &Connection,
    row: &SessionRow,
    previous_login: Option<i64>,
    now: i64,
) -> Result<(), Fail> {
    conn.prepare_cached(
        "INSERT INTO sessions (id, user_id, username, role, token_hash, created_at, updated_at,
           expires_at, ip_address, user_agent, previous_login_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        row.id,
        row.user_id,
        row.username,
        row.role,
        row.token_hash,
        ms(row.created_at),
        now,
        ms(row.expires_at),
        row.ip_address,
        row.user_agent,
        previous_login,
    ])?;
    Ok(())
}

fn by_token_hash(conn: &Connection, hash: &str, now: i64) -> Result<Option<SessionRow>, Fail> {
    type Raw = (
        String,
        String,
        String,
        String,
        String,
        i64,
        i64,
        Option<String>,
        Option<String>,
    );
    let raw: Option<Raw> = conn
        .prepare_cached(
            "SELECT id, user_id, username, role, token_hash, created_at, expires_at, ip_address,
               user_agent
             FROM sessions WHERE token_hash = ?1 AND expires_at > ?2",
        )?
        .query_row(params![hash, now], |r| {
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
            ))
        })
        .optional()?;
    raw.map(
        |(id, user_id, username, role, token_hash, created, expires, ip, ua)| {
            Ok(SessionRow {
                id,
                user_id,
                username,
                role,
                token_hash,
                created_at: time("sessions.created_at", created)?,
                expires_at: time("sessions.expires_at", expires)?,
                ip_address: ip,
                user_agent: ua,
            })
        },
    )
    .transpose()
}

impl Store {
    /// Record the session of a login at `row.created_at`, in one transaction with the
    /// user's last login: the session keeps the login before it (returned; `None` for
    /// the user's first login) and the user's last login becomes this one.
    pub async fn insert_session(
        &self,
        row: SessionRow,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(super::pg::sessions::insert_login(pg, &row, ms(Utc::now())))
                .await;
        }
        self.write(move |c| insert_login(c, &row, ms(Utc::now())))
            .await
    }

    /// The login before the session `id` (its user's last login when it was made), if
    /// the session exists and that was not the user's first login.
    pub async fn session_previous_login(
        &self,
        id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let id = id.to_string();
        if let Some(pg) = self.pg_open()? {
            return pg.read(super::pg::sessions::previous_login(pg, &id)).await;
        }
        self.read(move |c| {
            let v: Option<Option<i64>> = c
                .prepare_cached("SELECT previous_login_at FROM sessions WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            v.flatten()
                .map(|v| time("sessions.previous_login_at", v))
                .transpose()
        })
        .await
    }

    /// The session whose token hashes to `token_hash`, unless it expired by `now` or was
    /// revoked.
    pub async fn live_session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRow>, StoreError> {
        let hash = token_hash.to_string();
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(super::pg::sessions::by_token_hash(pg, &hash, ms(now)))
                .await;
        }
        self.read(move |c| by_token_hash(c, &hash, ms(now))).await
    }

    /// Revoke a session; returns whether it existed.
    pub async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        if let Some(pg) = self.pg_open()? {
            return pg.write(super::pg::sessions::delete(pg, &id)).await;
        }
        self.write(move |c| Ok(c.execute("DELETE FROM sessions WHERE id = ?1", params![id])? > 0))
            .await
    }

    /// Delete the sessions that expired by `now`; returns how many.
    pub async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(super::pg::sessions::purge_expired(pg, ms(now)))
                .await;
        }
        self.write(move |c| {
            Ok(c.execute(
                "DELETE FROM sessions WHERE expires_at <= ?1",
                params![ms(now)],
            )?)
        })
        .await
    }

    /// How many session rows exist (expired ones included until purged).
    pub async fn session_count(&self) -> Result<u64, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(super::pg::sessions::count(pg)).await;
        }
        self.read(|c| {
            let n: i64 = c.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    /// Record a login or key use of `id` (`namespace/name`) at `at` (a later time is
    /// never replaced by an earlier one).
    pub async fn record_auth_activity(
        &self,
        what: AuthActivity,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(super::pg::sessions::record_activity(pg, what, &id, ms(at)))
                .await;
        }
        self.write(move |c| record_activity(c, what, &id, ms(at)))
            .await
    }

    /// The last login or key use of `id`, if any.
    pub async fn auth_activity(
        &self,
        what: AuthActivity,
        id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let id = id.to_string();
        if let Some(pg) = self.pg_open()? {
            return pg.read(super::pg::sessions::activity(pg, what, &id)).await;
        }
        self.read(move |c| {
            last_at(c, what, &id)?
                .map(|v| time("auth_activity.last_at", v))
                .transpose()
        })
        .await
    }
}
