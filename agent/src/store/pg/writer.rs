//! PostgreSQL's heartbeat writer: a task that takes queued heartbeats and commits them
//! in batches (at most every [`BATCH_WINDOW`] or per [`BATCH_MAX`]), each batch one
//! multi-row `INSERT … SELECT FROM UNNEST(…)` (one round trip, whatever its size). A
//! batch the server cannot take now (connection lost, read-only, out of resources) is
//! kept, up to [`MAX_KEPT`], and retried with backoff while [`WriterStats::failure`]
//! says why, as the SQLite writer does; the counters are the same.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kubekuma_crds::results::Heartbeat;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::super::convert::{Fail, ms};
use super::super::writer::{BATCH_MAX, BATCH_WINDOW, MAX_KEPT, RETRY_MAX, RETRY_MIN, WriterStats};
use super::{Pool, pg_text};

/// What the store sends the heartbeat task.
pub(crate) enum Command {
    /// Queue a heartbeat (no reply).
    Heartbeat(Box<Heartbeat>),
    /// Commit the queue (one try when commits are failing), then reply with the error
    /// of any batch lost or still kept since the last flush.
    Flush(oneshot::Sender<Result<(), Fail>>),
    /// Commit the queue (unless commits are failing and the next try is not due), then
    /// reply: what a write waits for first, so that it runs after every heartbeat
    /// queued before it, as on SQLite's writer thread.
    Barrier(oneshot::Sender<()>),
    /// Commit the queue, reply and stop.
    Close(oneshot::Sender<()>),
}

/// The task's loop; returns when every sender is gone or on [`Command::Close`].
pub(crate) async fn run(
    pool: Pool,
    mut rx: mpsc::UnboundedReceiver<Command>,
    stats: Arc<WriterStats>,
    label: String,
) {
    let mut queue = Queue {
        batch: Vec::new(),
        deadline: None,
        lost: None,
        stats,
        label,
        retry: None,
    };
    loop {
        let message = match queue.deadline {
            None => rx.recv().await,
            Some(deadline) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    queue.commit(&pool, false).await;
                    continue;
                }
            },
        };
        let Some(message) = message else {
            break;
        };
        match message {
            Command::Heartbeat(hb) => {
                if queue.batch.is_empty() {
                    queue.deadline = Some(Instant::now() + BATCH_WINDOW);
                }
                queue.batch.push(*hb);
                let due = queue.deadline.is_some_and(|d| Instant::now() >= d);
                if queue.batch.len() >= BATCH_MAX || due {
                    queue.commit(&pool, false).await;
                }
            }
            Command::Flush(reply) => {
                queue.commit(&pool, true).await;
                let result = match queue.lost.take() {
                    None => Ok(()),
                    Some(message) => Err(Fail::Batch(message)),
                };
                let _ = reply.send(result);
            }
            Command::Barrier(reply) => {
                queue.commit(&pool, false).await;
                let _ = reply.send(());
            }
            Command::Close(reply) => {
                queue.commit(&pool, true).await;
                queue.log_dropped_at_close();
                let _ = reply.send(());
                return;
            }
        }
    }
    queue.commit(&pool, true).await;
    queue.log_dropped_at_close();
}

struct Queue {
    batch: Vec<Heartbeat>,
    deadline: Option<Instant>,
    lost: Option<String>,
    stats: Arc<WriterStats>,
    label: String,
    retry: Option<(Instant, Duration)>,
}

impl Queue {
    async fn commit(&mut self, pool: &Pool, force: bool) {
        if self.batch.is_empty() {
            self.deadline = None;
            return;
        }
        if let Some((at, _)) = self.retry
            && !force
            && Instant::now() < at
        {
            self.deadline = Some(at);
            return;
        }
        // One batch per round trip, at most BATCH_MAX rows each (a kept backlog is
        // written in several).
        let mut result = Ok(());
        let mut done = 0;
        while done < self.batch.len() {
            let end = (done + BATCH_MAX).min(self.batch.len());
            match insert_heartbeats(pool, &self.batch[done..end], &self.stats).await {
                Ok(()) => {
                    let n = u64::try_from(end - done).unwrap_or(u64::MAX);
                    self.stats.heartbeats.fetch_add(n, Ordering::Relaxed);
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.stats.writes.fetch_add(1, Ordering::SeqCst);
                    done = end;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.batch.drain(..done);
        match result {
            Ok(()) => {
                self.deadline = None;
                if done > 0 {
                    self.stats.set_unreachable(None);
                }
                if self.retry.take().is_some() {
                    *self.stats.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    tracing::warn!(database = %self.label, heartbeats = done, "store writable again: kept heartbeats committed");
                }
            }
            Err(e) if !e.retryable => {
                tracing::error!(
                    database = %self.label,
                    heartbeats = self.batch.len(),
                    error = %e.message,
                    "heartbeat batch lost"
                );
                self.lost = Some(format!(
                    "{} heartbeats lost: {}",
                    self.batch.len(),
                    e.message
                ));
                self.batch.clear();
                self.deadline = None;
            }
            Err(e) => {
                let wait = match self.retry {
                    None => RETRY_MIN,
                    Some((_, w)) => (w * 2).min(RETRY_MAX),
                };
                if self.retry.is_none() {
                    tracing::error!(
                        database = %self.label,
                        heartbeats = self.batch.len(),
                        error = %e.message,
                        "STORE NOT WRITABLE: heartbeats are kept in memory and retried; the agent is not ready until it is"
                    );
                }
                self.retry = Some((Instant::now() + wait, wait));
                self.deadline = Some(Instant::now() + wait);
                *self.stats.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                    "database {} is not writable: {}",
                    self.label, e.message
                ));
                if self.batch.len() > MAX_KEPT {
                    let excess = self.batch.len() - MAX_KEPT;
                    self.batch.drain(..excess);
                    tracing::error!(
                        database = %self.label,
                        dropped = excess,
                        kept = MAX_KEPT,
                        "store not writable: oldest heartbeats dropped beyond the bound"
                    );
                    self.lost = Some(format!("{excess} heartbeats lost: {}", e.message));
                } else if self.lost.is_none() {
                    self.lost = Some(format!(
                        "{} heartbeats not stored yet (kept, retrying): {}",
                        self.batch.len(),
                        e.message
                    ));
                }
            }
        }
    }

    fn log_dropped_at_close(&self) {
        if !self.batch.is_empty() {
            tracing::error!(
                database = %self.label,
                heartbeats = self.batch.len(),
                "store not writable at shutdown: queued heartbeats lost"
            );
        }
    }
}

/// A failed batch: why, and whether the same batch may succeed later.
struct BatchError {
    message: String,
    retryable: bool,
}

/// Whether an error is the server being unavailable or unwritable for now (connection
/// lost or refused, shutting down, read-only, out of resources, a conflict), so that
/// the same batch may succeed later; a data error would fail again.
pub(crate) fn retryable(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else {
        // No SQLSTATE: I/O, a closed connection, a timeout.
        return true;
    };
    let code = code.code();
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (disk full, …)
        || code.starts_with("57") // operator intervention (shutdown, cannot connect now)
        || code.starts_with("58") // system error (I/O)
        || code.starts_with("40") // serialization failure, deadlock
        || code == "25006" // read-only transaction (a standby, a read-only database)
        || code == "55P03" // lock not available
}

/// Insert one batch in one statement. A monitor's second heartbeat in the same
/// millisecond replaces the first, as SQLite's `INSERT OR REPLACE` does (within the
/// batch the last one is kept: PostgreSQL refuses to update a row twice in a statement).
/// Counts its requests in [`WriterStats::round_trips`]: the statement's preparation
/// when this connection had not prepared it yet, and the insert.
async fn insert_heartbeats(
    pool: &Pool,
    batch: &[Heartbeat],
    stats: &WriterStats,
) -> Result<(), BatchError> {
    let mut last: HashMap<(&str, &str, i64), usize> = HashMap::with_capacity(batch.len());
    for (i, hb) in batch.iter().enumerate() {
        last.insert((&hb.namespace, &hb.name, ms(hb.checked_at)), i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    let n = keep.len();
    let (mut ns, mut name, mut at, mut state) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut latency, mut reason, mut message, mut attempts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for i in keep {
        let Some(hb) = batch.get(i) else { continue };
        ns.push(pg_text(&hb.namespace));
        name.push(pg_text(&hb.name));
        at.push(ms(hb.checked_at));
        state.push(hb.state.as_str());
        latency.push(hb.latency_ms);
        reason.push(hb.reason.map(|r| r.as_str()));
        message.push(hb.message.as_deref().map(pg_text));
        attempts.push(i64::from(hb.attempts));
    }
    let client = pool.get().await.map_err(|e| BatchError {
        message: super::pool_message(&e),
        retryable: true,
    })?;
    let cached = client.statement_cache.size();
    let statement = client
        .prepare_cached(
            "INSERT INTO heartbeats
               (monitor_namespace, monitor_name, checked_at, state, latency_ms, reason, message, attempts)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::float8[],
                                  $6::text[], $7::text[], $8::int8[])
             ON CONFLICT (monitor_namespace, monitor_name, checked_at) DO UPDATE SET
               state = excluded.state, latency_ms = excluded.latency_ms,
               reason = excluded.reason, message = excluded.message,
               attempts = excluded.attempts",
        )
        .await
        .map_err(batch_error);
    if client.statement_cache.size() != cached || statement.is_err() {
        stats.round_trips.fetch_add(1, Ordering::Relaxed);
    }
    let statement = statement?;
    stats.round_trips.fetch_add(1, Ordering::Relaxed);
    client
        .execute(
            &statement,
            &[
                &ns, &name, &at, &state, &latency, &reason, &message, &attempts,
            ],
        )
        .await
        .map_err(batch_error)?;
    Ok(())
}

fn batch_error(e: tokio_postgres::Error) -> BatchError {
    BatchError {
        retryable: retryable(&e),
        message: super::error_message(&e),
    }
}
