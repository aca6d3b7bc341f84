//! Silences created through the admin API (`api_silences`): the same `SilenceSpec` as
//! the Silence kind, kept in SQLite; expiring one keeps the row (with `expired_at`) so
//! the history stays. The alerting pipeline merges [`Store::active_api_silences`] with
//! the catalog's Silences.

use chrono::{DateTime, Utc};
use kubekuma_crds::{Silence, SilenceSpec};
use rusqlite::{OptionalExtension, params};

use super::convert::{Fail, ms, opt_time, time};
use super::{Store, StoreError};
use crate::catalog::ObjKey;

/// One silence created through the API.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiSilence {
    /// Namespace and name.
    pub key: ObjKey,
    /// The silence.
    pub spec: SilenceSpec,
    /// The principal that created it (`user:…`, `apikey:…`).
    pub created_by: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was expired through the API (it then suppresses nothing).
    pub expired_at: Option<DateTime<Utc>>,
}

impl ApiSilence {
    /// Whether it suppresses notifications at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.expired_at.is_none() && self.spec.starts_at <= now && now < self.spec.ends_at
    }

    /// The Silence resource it stands for.
    pub fn to_silence(&self) -> Silence {
        let mut s = Silence::new(&self.key.name, self.spec.clone());
        s.metadata.namespace = Some(self.key.namespace.clone());
        s
    }
}

/// What [`Store::create_api_silence`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateSilence {
    /// Stored (a previous, expired or ended silence of the same name was replaced).
    Created,
    /// A silence of that name is still in effect or upcoming.
    Exists,
}

pub(crate) fn parse_spec(s: &str) -> Result<SilenceSpec, Fail> {
    serde_json::from_str(s).map_err(|_| Fail::InvalidValue {
        column: "api_silences.spec",
        value: s.to_string(),
    })
}

impl Store {
    /// Store a silence created by `created_by` at `now`. A silence of the same name that
    /// was expired or has ended is replaced; one that has not is kept
    /// ([`CreateSilence::Exists`]).
    pub async fn create_api_silence(
        &self,
        key: &ObjKey,
        spec: &SilenceSpec,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<CreateSilence, StoreError> {
        let (ns, name, by) = (
            key.namespace.clone(),
            key.name.clone(),
            created_by.to_string(),
        );
        let text = serde_json::to_string(spec).map_err(|e| StoreError::InvalidArgument {
            path: self.path().to_string(),
            message: format!("silence spec: {e}"),
        })?;
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(super::pg::api_silences::create(
                    pg, &ns, &name, &text, &by, now,
                ))
                .await;
        }
        self.write(move |c| {
            let tx = c.transaction()?;
            let existing: Option<(String, Option<i64>)> = tx
                .query_row(
                    "SELECT spec, expired_at FROM api_silences
                     WHERE silence_namespace = ?1 AND silence_name = ?2",
                    params![ns, name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((spec, None)) = &existing
                && parse_spec(spec).map_or(true, |s| s.ends_at > now)
            {
                return Ok(CreateSilence::Exists);
            }
            tx.execute(
                "INSERT INTO api_silences
                   (silence_namespace, silence_name, spec, created_by, created_at, expired_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?5)
                 ON CONFLICT (silence_namespace, silence_name) DO UPDATE SET
                   spec = excluded.spec, created_by = excluded.created_by,
                   created_at = excluded.created_at, expired_at = NULL,
                   updated_at = excluded.updated_at",
                params![ns, name, text, by, ms(now)],
            )?;
            tx.commit()?;
            Ok(CreateSilence::Created)
        })
        .await
    }

    /// Expire a silence at `now`; returns whether one that was not yet expired existed.
    pub async fn expire_api_silence(
        &self,
        key: &ObjKey,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (ns, name) = (key.namespace.clone(), key.name.clone());
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(super::pg::api_silences::expire(pg, &ns, &name, ms(now)))
                .await;
        }
        self.write(move |c| {
            let n = c.execute(
                "UPDATE api_silences SET expired_at = ?3, updated_at = ?3
                 WHERE silence_namespace = ?1 AND silence_name = ?2 AND expired_at IS NULL",
                params![ns, name, ms(now)],
            )?;
            Ok(n > 0)
        })
        .await
    }

    /// Every silence created through the API, expired or not, by namespace and name.
    pub async fn api_silences(&self) -> Result<Vec<ApiSilence>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(super::pg::api_silences::all(pg)).await;
        }
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT silence_namespace, silence_name, spec, created_by, created_at, expired_at
                 FROM api_silences ORDER BY silence_namespace, silence_name",
            )?;
            type Raw = (String, String, String, Option<String>, i64, Option<i64>);
            let raw: Vec<Raw> = st
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            raw.into_iter()
                .map(|(ns, name, spec, by, created, expired)| {
                    Ok(ApiSilence {
                        key: ObjKey::new(&ns, &name),
                        spec: parse_spec(&spec)?,
                        created_by: by,
                        created_at: time("api_silences.created_at", created)?,
                        expired_at: opt_time("api_silences.expired_at", expired)?,
                    })
                })
                .collect()
        })
        .await
    }

    /// The API silences in effect at `now` (started, not ended, not expired), as Silence
    /// resources (namespace set) by key, for the alerting pipeline's suppressor.
    pub async fn active_api_silences(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(ObjKey, Silence)>, StoreError> {
        Ok(self
            .api_silences()
            .await?
            .into_iter()
            .filter(|s| s.active(now))
            .map(|s| (s.key.clone(), s.to_silence()))
            .collect())
    }
}
