//! The notification outbox (`notification_deliveries`) and the alert gate's memory
//! (`alert_gate_state`).
//!
//! Every notification is a row before anything is sent: `pending` rows are what the
//! delivery worker still owes; `sent`, `failed`, `deduped` and `rate_limited` are
//! outcomes. The rows of one event and the gate state that let them through are
//! written in one transaction, so after a crash the gate remembers exactly what it
//! admitted and the worker finds exactly what it still has to send.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::convert::{Fail, count, ms, opt_time, parse_enum, time};
use super::{Store, StoreError};
use crate::catalog::ObjKey;

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Still to be sent (or retried at `next_attempt_at`).
    Pending,
    /// The provider accepted it.
    Sent,
    /// Given up: refused, misconfigured, or out of attempts.
    Failed,
    /// Not sent: the same dedupe key went to this provider within the window.
    Deduped,
    /// Not sent: this monitor notified this provider too recently.
    RateLimited,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Deduped => "deduped",
            DeliveryStatus::RateLimited => "rate_limited",
        }
    }
}

/// A delivery to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDelivery {
    /// The monitor's open incident, if any.
    pub incident_id: Option<i64>,
    /// The monitor.
    pub monitor: ObjKey,
    /// The policy that routed it.
    pub policy: ObjKey,
    /// The provider.
    pub provider: ObjKey,
    /// The provider's type (`slack`, …).
    pub provider_type: String,
    /// `down`, `up`, `flapping`, `certExpiring`, `reminder`.
    pub event_kind: String,
    /// The rendered dedupe key.
    pub dedupe_key: String,
    /// `Pending` to send; `Deduped`/`RateLimited`/`Failed` to record an outcome at once.
    pub status: DeliveryStatus,
    /// Why it was not sent, for non-pending rows.
    pub error: Option<String>,
    /// Notes (template errors, the earlier send a dedupe refers to); never secrets.
    pub detail: Option<String>,
    /// The route, event and rendered message as JSON (no credentials).
    pub payload: serde_json::Value,
}

/// A recorded delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// Row ID.
    pub id: i64,
    /// The monitor's incident.
    pub incident_id: Option<i64>,
    /// The monitor.
    pub monitor: ObjKey,
    /// The policy.
    pub policy: ObjKey,
    /// The provider.
    pub provider: ObjKey,
    /// The provider's type.
    pub provider_type: String,
    /// Event kind.
    pub event_kind: String,
    /// Dedupe key.
    pub dedupe_key: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Send attempts so far.
    pub attempts: u32,
    /// When a pending delivery is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The latest attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The latest error, free of secrets.
    pub last_error: Option<String>,
    /// What the provider answered, or notes.
    pub detail: Option<String>,
    /// Route, event and message.
    pub payload: serde_json::Value,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// The result of one send attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// Accepted; what the provider answered.
    Sent(String),
    /// Failed, worth retrying at the given time.
    Retry(String, DateTime<Utc>),
    /// Failed for good.
    Failed(String),
}

pub(crate) const COLUMNS: &str = "id, incident_id, monitor_namespace, monitor_name, policy_namespace, \
     policy_name, provider_namespace, provider_name, provider_type, event_kind, dedupe_key, \
     status, attempts, next_attempt_at, last_attempt_at, last_error, detail, payload, created_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDelivery> {
    Ok(RawDelivery {
        id: r.get(0)?,
        incident_id: r.get(1)?,
        names: [
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ],
        provider_type: r.get(8)?,
        event_kind: r.get(9)?,
        dedupe_key: r.get(10)?,
        status: r.get(11)?,
        attempts: r.get(12)?,
        next_attempt_at: r.get(13)?,
        last_attempt_at: r.get(14)?,
        last_error: r.get(15)?,
        detail: r.get(16)?,
        payload: r.get(17)?,
        created_at: r.get(18)?,
    })
}

pub(crate) struct RawDelivery {
    pub(crate) id: i64,
    pub(crate) incident_id: Option<i64>,
    pub(crate) names: [String; 6],
    pub(crate) provider_type: String,
    pub(crate) event_kind: String,
    pub(crate) dedupe_key: String,
    pub(crate) status: String,
    pub(crate) attempts: i64,
    pub(crate) next_attempt_at: Option<i64>,
    pub(crate) last_attempt_at: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) detail: Option<String>,
    pub(crate) payload: String,
    pub(crate) created_at: i64,
}

impl RawDelivery {
    pub(crate) fn parse(self) -> Result<Delivery, Fail> {
        let [mn, mname, pn, pname, prn, prname] = self.names;
        Ok(Delivery {
            id: self.id,
            incident_id: self.incident_id,
            monitor: ObjKey::new(&mn, &mname),
            policy: ObjKey::new(&pn, &pname),
            provider: ObjKey::new(&prn, &prname),
            provider_type: self.provider_type,
            event_kind: self.event_kind,
            dedupe_key: self.dedupe_key,
            status: parse_enum("notification_deliveries.status", &self.status)?,
            attempts: count("notification_deliveries.attempts", self.attempts)?,
            next_attempt_at: opt_time(
                "notification_deliveries.next_attempt_at",
                self.next_attempt_at,
            )?,
            last_attempt_at: opt_time(
                "notification_deliveries.last_attempt_at",
                self.last_attempt_at,
            )?,
            last_error: self.last_error,
            detail: self.detail,
            payload: serde_json::from_str(&self.payload).map_err(|_| Fail::InvalidValue {
                column: "notification_deliveries.payload",
                value: self.payload.chars().take(80).collect(),
            })?,
            created_at: time("notification_deliveries.created_at", self.created_at)?,
        })
    }
}

fn query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Delivery>, Fail> {
    let mut st = conn.prepare(sql)?;
    let raw = st.query_map(params, row)?.collect::<Result<Vec<_>, _>>()?;
    raw.into_iter().map(RawDelivery::parse).collect()
}

impl Store {
    /// Record the deliveries of one event and, in the same transaction, the alert
    /// gate's state (JSON) after admitting them. Returns the new rows' IDs.
    pub async fn record_deliveries(
        &self,
        deliveries: Vec<NewDelivery>,
        gate_state: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(super::pg::deliveries::record(
                    pg,
                    &deliveries,
                    gate_state.as_deref(),
                    ms(at),
                    ms(Utc::now()),
                ))
                .await;
        }
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let now = ms(at);
            let mut ids = Vec::with_capacity(deliveries.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO notification_deliveries
                       (incident_id, monitor_namespace, monitor_name, policy_namespace, policy_name,
                        provider_namespace, provider_name, provider_type, event_kind, dedupe_key,
                        status, next_attempt_at, last_error, detail, payload, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16)",
                )?;
                for d in &deliveries {
                    let pending = d.status == DeliveryStatus::Pending;
                    insert.execute(params![
                        d.incident_id,
                        d.monitor.namespace,
                        d.monitor.name,
                        d.policy.namespace,
                        d.policy.name,
                        d.provider.namespace,
                        d.provider.name,
                        d.provider_type,
                        d.event_kind,
                        d.dedupe_key,
                        d.status.as_str(),
                        // Due at once (by the wall clock, whatever time the event has).
                        pending.then(|| ms(Utc::now()).min(now)),
                        d.error,
                        d.detail,
                        d.payload.to_string(),
                        now,
                    ])?;
                    ids.push(tx.last_insert_rowid());
                }
            }
            if let Some(state) = &gate_state {
                tx.execute(
                    "INSERT INTO alert_gate_state (id, state, updated_at) VALUES (1, ?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                    params![state, now],
                )?;
            }
            tx.commit()?;
            Ok(ids)
        })
        .await
    }

    /// The alert gate's state saved by [`Store::record_deliveries`], if any.
    pub async fn load_gate_state(&self) -> Result<Option<String>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(super::pg::deliveries::gate_state(pg)).await;
        }
        self.read(|c| {
            Ok(
                c.query_row("SELECT state FROM alert_gate_state WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
        .await
    }

    /// Pending deliveries due at `now`, oldest first, at most `limit`.
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(super::pg::deliveries::due(pg, ms(now), limit))
                .await;
        }
        self.read(move |c| {
            query(
                c,
                &format!(
                    "SELECT {COLUMNS} FROM notification_deliveries
                     WHERE status = 'pending' AND next_attempt_at <= ?1
                     ORDER BY next_attempt_at, id LIMIT ?2"
                ),
                params![ms(now), limit],
            )
        })
        .await
    }

    /// Record the result of an attempt at delivery `id` made at `at`.
    pub async fn delivery_attempted(
        &self,
        id: i64,
        at: DateTime<Utc>,
        attempt: Attempt,
    ) -> Result<(), StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(super::pg::deliveries::attempted(pg, id, ms(at), &attempt))
                .await;
        }
        self.write(move |c| {
            let now = ms(at);
            match attempt {
                Attempt::Sent(detail) => c.execute(
                    "UPDATE notification_deliveries SET status = 'sent', attempts = attempts + 1,
                       next_attempt_at = NULL, last_attempt_at = ?2, last_error = NULL,
                       detail = COALESCE(detail || '; ', '') || ?3, updated_at = ?2
                     WHERE id = ?1",
                    params![id, now, detail],
                )?,
                Attempt::Retry(error, next) => c.execute(
                    "UPDATE notification_deliveries SET attempts = attempts + 1,
                       next_attempt_at = ?3, last_attempt_at = ?2, last_error = ?4, updated_at = ?2
                     WHERE id = ?1",
                    params![id, now, ms(next), error],
                )?,
                Attempt::Failed(error) => c.execute(
                    "UPDATE notification_deliveries SET status = 'failed', attempts = attempts + 1,
                       next_attempt_at = NULL, last_attempt_at = ?2, last_error = ?3, updated_at = ?2
                     WHERE id = ?1",
                    params![id, now, error],
                )?,
            };
            Ok(())
        })
        .await
    }

    /// Deliveries recorded at or after `since`, oldest first.
    pub async fn deliveries_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<Delivery>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(super::pg::deliveries::since(pg, ms(since))).await;
        }
        self.read(move |c| {
            query(
                c,
                &format!(
                    "SELECT {COLUMNS} FROM notification_deliveries WHERE created_at >= ?1
                     ORDER BY created_at, id"
                ),
                params![ms(since)],
            )
        })
        .await
    }

    /// The latest finished (sent or failed) delivery of each provider.
    pub async fn last_deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(super::pg::deliveries::last(pg)).await;
        }
        self.read(|c| {
            query(
                c,
                &format!(
                    "SELECT {COLUMNS} FROM notification_deliveries d
                     WHERE status IN ('sent', 'failed') AND id = (
                       SELECT id FROM notification_deliveries e
                       WHERE e.provider_namespace = d.provider_namespace
                         AND e.provider_name = d.provider_name
                         AND e.status IN ('sent', 'failed')
                       ORDER BY e.last_attempt_at DESC, e.id DESC LIMIT 1)
                     ORDER BY provider_namespace, provider_name"
                ),
                [],
            )
        })
        .await
    }
}
