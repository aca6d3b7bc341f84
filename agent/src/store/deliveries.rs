//! The notification outbox (`notification_deliveries`) and the alert gate's memory
//! (`alert_gate_state`).
//!
//! Every notification is a row before anything is sent: `pending` rows are what the
//! delivery worker still owes; `sent`, `failed`, `deduped` and `rate_limited` are
//! outcomes. The rows of one event and the gate state that let them through are
//! written in one transaction, so after a crash the gate remembers exactly what it
//! admitted and the worker finds exactly what it still has to send.
//!
//! Claims (several agents on one database): the worker takes rows with
//! [`Store::claim_deliveries`], which marks each with its claimant and a time until which
//! nobody else takes it. A recorded attempt clears the claim; a claim still there when it
//! expires means its sender stopped mid-send (the message may or may not have gone out):
//! the next claim takes the row as an *orphan* (`orphaned` counts such expiries since the
//! last recorded attempt). An orphan is sent again at most once: a row orphaned a second
//! time becomes `failed` with [`GIVEN_UP_AFTER_ORPHANED`] instead of being sent.

use std::time::Duration;

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
    /// The claimant sending it now (see [`Store::claim_deliveries`]), if any.
    pub claimed_by: Option<String>,
    /// Until when the claim holds.
    pub claimed_until: Option<DateTime<Utc>>,
    /// How many claims in a row expired (their senders stopped mid-send) since the last
    /// recorded attempt; above zero, an earlier send may have reached the provider.
    pub orphaned: u32,
    /// Set only on rows returned by [`Store::claim_deliveries`] whose previous claim
    /// expired: the claimant that stopped mid-send.
    pub orphaned_from: Option<String>,
}

/// The error of a row whose claim expired twice without an outcome.
pub const GIVEN_UP_AFTER_ORPHANED: &str = "claimed twice by instances that stopped mid-send; \
     not sent again to avoid repeats";

/// Expired claims in a row after which a row is given up.
pub(crate) const ORPHAN_LIMIT: i64 = 2;

/// The result of one send attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// Accepted; what the provider answered.
    Sent(String),
    /// Failed, worth retrying at the given time.
    Retry(String, DateTime<Utc>),
    /// Failed for good.
    Failed(String),
    /// Not sent: a send of the same dedupe key to the same provider is already recorded
    /// within the window (an orphan whose earlier send may have gone out); the note
    /// names that send.
    Deduped(String),
}

pub(crate) const COLUMNS: &str = "id, incident_id, monitor_namespace, monitor_name, policy_namespace, \
     policy_name, provider_namespace, provider_name, provider_type, event_kind, dedupe_key, \
     status, attempts, next_attempt_at, last_attempt_at, last_error, detail, payload, created_at, \
     claimed_by, claimed_until, orphaned";

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
        claimed_by: r.get(19)?,
        claimed_until: r.get(20)?,
        orphaned: r.get(21)?,
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
    pub(crate) claimed_by: Option<String>,
    pub(crate) claimed_until: Option<i64>,
    pub(crate) orphaned: i64,
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
            claimed_by: self.claimed_by,
            claimed_until: opt_time("notification_deliveries.claimed_until", self.claimed_until)?,
            orphaned: count("notification_deliveries.orphaned", self.orphaned)?,
            orphaned_from: None,
        })
    }
}

/// The rows a claim took: the given-up ones (orphaned twice) are logged and left out.
pub(crate) fn keep_claimed(rows: Vec<Delivery>) -> Vec<Delivery> {
    rows.into_iter()
        .filter(|d| {
            if d.status == DeliveryStatus::Pending {
                return true;
            }
            tracing::warn!(
                delivery = d.id,
                provider = %d.provider,
                monitor = %d.monitor,
                event = %d.event_kind,
                previous_claimant = d.orphaned_from.as_deref().unwrap_or(""),
                "{GIVEN_UP_AFTER_ORPHANED}"
            );
            false
        })
        .collect()
}

/// `claim_for` in milliseconds (at least 1).
fn claim_ms(claim_for: Duration) -> i64 {
    i64::try_from(claim_for.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
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

    /// Take up to `limit` pending deliveries due at `now` that nobody holds (no claim, or
    /// an expired one), oldest first, for `claimant` until `now + claim_for`; two
    /// claimants never get the same row. A row whose previous claim (by another
    /// claimant) expired comes back
    /// with `orphaned` counted up and [`Delivery::orphaned_from`] naming that claimant;
    /// one whose claim expired [`ORPHAN_LIMIT`] times in a row without a recorded
    /// attempt becomes `failed` ([`GIVEN_UP_AFTER_ORPHANED`], logged) and is not
    /// returned. [`Store::delivery_attempted`] and [`Store::release_claims`] end claims.
    pub async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        claimant: &str,
        claim_for: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let until = ms(now).saturating_add(claim_ms(claim_for));
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(super::pg::deliveries::claim(
                    pg,
                    ms(now),
                    limit,
                    claimant,
                    until,
                ))
                .await
                .map(keep_claimed);
        }
        let claimant = claimant.to_string();
        self.write(move |c| {
            let now = ms(now);
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let picked = {
                let mut st = tx.prepare_cached(
                    "SELECT id, claimed_by FROM notification_deliveries
                     WHERE status = 'pending' AND next_attempt_at <= ?1
                       AND (claimed_until IS NULL OR claimed_until <= ?1)
                     ORDER BY next_attempt_at, id LIMIT ?2",
                )?;
                st.query_map(params![now, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?
            };
            let mut out = Vec::with_capacity(picked.len());
            {
                let mut update = tx.prepare_cached(&format!(
                    "UPDATE notification_deliveries SET
                       orphaned = orphaned + ?2,
                       status = CASE WHEN orphaned + ?2 >= ?6 THEN 'failed' ELSE status END,
                       next_attempt_at = CASE WHEN orphaned + ?2 >= ?6 THEN NULL ELSE next_attempt_at END,
                       last_error = CASE WHEN orphaned + ?2 >= ?6 THEN ?7 ELSE last_error END,
                       claimed_by = CASE WHEN orphaned + ?2 >= ?6 THEN NULL ELSE ?3 END,
                       claimed_until = CASE WHEN orphaned + ?2 >= ?6 THEN NULL ELSE ?4 END,
                       updated_at = ?5
                     WHERE id = ?1 RETURNING {COLUMNS}"
                ))?;
                for (id, previous) in picked {
                    // This claimant's own expired claim (a send of its own still running,
                    // or whose outcome it could not write) is renewed, not orphaned.
                    let previous = previous.filter(|p| *p != claimant);
                    let expired = i64::from(previous.is_some());
                    let raw = update.query_row(
                        params![
                            id,
                            expired,
                            claimant,
                            until,
                            now,
                            ORPHAN_LIMIT,
                            GIVEN_UP_AFTER_ORPHANED
                        ],
                        row,
                    )?;
                    let mut d = raw.parse()?;
                    d.orphaned_from = previous;
                    out.push(d);
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
        .map(keep_claimed)
    }

    /// End `claimant`'s claims on rows still pending (a clean shutdown abandoning sends
    /// in progress), so the next start sends them at once rather than after the claims
    /// expire. The number of rows released.
    pub async fn release_claims(&self, claimant: &str) -> Result<u64, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.write(super::pg::deliveries::release(pg, claimant)).await;
        }
        let claimant = claimant.to_string();
        self.write(move |c| {
            let n = c.execute(
                "UPDATE notification_deliveries SET claimed_by = NULL, claimed_until = NULL
                 WHERE claimed_by = ?1 AND status = 'pending'",
                params![claimant],
            )?;
            Ok(n as u64)
        })
        .await
    }

    /// End `claimant`'s claim on delivery `id` if it is still pending (a send that never
    /// started: due again at once for anyone). Whether there was such a claim.
    pub async fn release_claim(&self, id: i64, claimant: &str) -> Result<bool, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(super::pg::deliveries::release_one(pg, id, claimant))
                .await;
        }
        let claimant = claimant.to_string();
        self.write(move |c| {
            let n = c.execute(
                "UPDATE notification_deliveries SET claimed_by = NULL, claimed_until = NULL
                 WHERE id = ?1 AND claimed_by = ?2 AND status = 'pending'",
                params![id, claimant],
            )?;
            Ok(n > 0)
        })
        .await
    }

    /// The latest delivery of `dedupe_key` to `provider` sent at or after `since`, other
    /// than delivery `except`.
    pub async fn last_sent(
        &self,
        provider: &ObjKey,
        dedupe_key: &str,
        since: DateTime<Utc>,
        except: i64,
    ) -> Result<Option<Delivery>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(super::pg::deliveries::last_sent(
                    pg,
                    provider,
                    dedupe_key,
                    ms(since),
                    except,
                ))
                .await;
        }
        let (provider, dedupe_key) = (provider.clone(), dedupe_key.to_string());
        self.read(move |c| {
            Ok(query(
                c,
                &format!(
                    "SELECT {COLUMNS} FROM notification_deliveries
                     WHERE provider_namespace = ?1 AND provider_name = ?2 AND dedupe_key = ?3
                       AND status = 'sent' AND last_attempt_at >= ?4 AND id <> ?5
                     ORDER BY last_attempt_at DESC, id DESC LIMIT 1"
                ),
                params![
                    provider.namespace,
                    provider.name,
                    dedupe_key,
                    ms(since),
                    except
                ],
            )?
            .pop())
        })
        .await
    }

    /// Record the result of an attempt at delivery `id` made at `at`; this ends the
    /// row's claim and resets its orphan count.
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
                       detail = COALESCE(detail || '; ', '') || ?3, updated_at = ?2,
                       claimed_by = NULL, claimed_until = NULL, orphaned = 0
                     WHERE id = ?1",
                    params![id, now, detail],
                )?,
                Attempt::Retry(error, next) => c.execute(
                    "UPDATE notification_deliveries SET attempts = attempts + 1,
                       next_attempt_at = ?3, last_attempt_at = ?2, last_error = ?4, updated_at = ?2,
                       claimed_by = NULL, claimed_until = NULL, orphaned = 0
                     WHERE id = ?1",
                    params![id, now, ms(next), error],
                )?,
                Attempt::Failed(error) => c.execute(
                    "UPDATE notification_deliveries SET status = 'failed', attempts = attempts + 1,
                       next_attempt_at = NULL, last_attempt_at = ?2, last_error = ?3, updated_at = ?2,
                       claimed_by = NULL, claimed_until = NULL, orphaned = 0
                     WHERE id = ?1",
                    params![id, now, error],
                )?,
                Attempt::Deduped(note) => c.execute(
                    "UPDATE notification_deliveries SET status = 'deduped', next_attempt_at = NULL,
                       last_error = ?3, detail = COALESCE(detail || '; ', '') || ?3, updated_at = ?2,
                       claimed_by = NULL, claimed_until = NULL
                     WHERE id = ?1",
                    params![id, now, note],
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

    /// The newest `limit` deliveries (of `provider` when given), newest first, every
    /// outcome included (pending, sent, failed, deduped, rate limited).
    pub async fn recent_deliveries(
        &self,
        provider: Option<ObjKey>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (ns, name) = provider.map(|k| (k.namespace, k.name)).unzip();
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(super::pg::deliveries::recent(pg, ns, name, limit))
                .await;
        }
        self.read(move |c| {
            query(
                c,
                &format!(
                    "SELECT {COLUMNS} FROM notification_deliveries
                     WHERE ?1 IS NULL OR (provider_namespace = ?1 AND provider_name = ?2)
                     ORDER BY created_at DESC, id DESC LIMIT ?3"
                ),
                params![ns, name, limit],
            )
        })
        .await
    }
}
