//! The single writer thread: it owns the write connection, commits queued heartbeats in
//! batches (one transaction at most every [`BATCH_WINDOW`] or per [`BATCH_MAX`]
//! heartbeats) and runs every other write as a job, in the order they were sent. A batch
//! that cannot be committed (a read-only or full disk) is kept and retried with backoff,
//! up to [`MAX_KEPT`] heartbeats, while [`WriterStats::failure`] says why (the agent is
//! then not ready).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use kubekuma_crds::results::Heartbeat;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::convert::{Fail, ms};

/// Longest a heartbeat waits in the queue before its batch is committed.
pub(crate) const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Most heartbeats committed in one transaction.
pub(crate) const BATCH_MAX: usize = 1000;
/// Most heartbeats kept while commits fail (the oldest beyond are dropped and logged).
pub(crate) const MAX_KEPT: usize = 200_000;
/// First wait before a failed commit is tried again (doubling up to [`RETRY_MAX`]).
pub(crate) const RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest wait between tries of a failing commit.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(10);

/// A write run on the writer thread.
pub(crate) type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// What the async API sends to the writer.
pub(crate) enum Command {
    /// Queue a heartbeat (no reply).
    Heartbeat(Box<Heartbeat>),
    /// Commit the queue, then reply (with the error of any batch lost since the last flush).
    Flush(oneshot::Sender<Result<(), Fail>>),
    /// Commit the queue, then run the job.
    Job(Job),
    /// Commit the queue, close the connection, reply and stop.
    Close(oneshot::Sender<()>),
}

/// Counters the writer keeps, readable from any thread.
#[derive(Default)]
pub(crate) struct WriterStats {
    pub(crate) heartbeats: AtomicU64,
    pub(crate) batches: AtomicU64,
    /// Writes run (heartbeat batches and jobs): what readers compare to see a change.
    pub(crate) writes: AtomicU64,
    /// PostgreSQL only: requests sent to the server (see [`Store::round_trips`]).
    ///
    /// [`Store::round_trips`]: super::Store::round_trips
    pub(crate) round_trips: AtomicU64,
    /// Why heartbeats cannot be committed now (`None` while commits succeed).
    pub(crate) failure: std::sync::Mutex<Option<String>>,
    /// PostgreSQL only: why the last statement of any kind (a write, a read, a
    /// heartbeat batch) could not reach the server (`None` once one reaches it again).
    pub(crate) unreachable: std::sync::Mutex<Option<String>>,
}

impl WriterStats {
    /// Set or clear [`Self::unreachable`].
    pub(crate) fn set_unreachable(&self, why: Option<String>) {
        *self.unreachable.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }
}

/// The writer loop; returns when every sender is gone or on [`Command::Close`].
pub(crate) fn run(
    mut conn: Connection,
    rx: Receiver<Command>,
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
            None => rx.recv().ok(),
            Some(deadline) => {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => {
                        queue.commit(&mut conn, false);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            }
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
                    queue.commit(&mut conn, false);
                }
            }
            Command::Flush(reply) => {
                queue.commit(&mut conn, true);
                let result = match queue.lost.take() {
                    None => Ok(()),
                    Some(message) => Err(Fail::Batch(message)),
                };
                let _ = reply.send(result);
            }
            Command::Job(job) => {
                queue.commit(&mut conn, false);
                // A panicking job drops its reply sender (the caller sees the writer
                // stop answering for that call) but must not take the writer down.
                if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
                    tracing::error!(database = %queue.label, "store write job panicked");
                }
                queue.stats.writes.fetch_add(1, Ordering::SeqCst);
            }
            Command::Close(reply) => {
                queue.commit(&mut conn, true);
                queue.log_dropped_at_close();
                drop(conn);
                let _ = reply.send(());
                return;
            }
        }
    }
    queue.commit(&mut conn, true);
    queue.log_dropped_at_close();
}

struct Queue {
    batch: Vec<Heartbeat>,
    deadline: Option<Instant>,
    /// The error of a batch that could not be committed, reported by the next flush.
    lost: Option<String>,
    stats: Arc<WriterStats>,
    label: String,
    /// While commits fail: when to try again and the current backoff.
    retry: Option<(Instant, Duration)>,
}

impl Queue {
    /// Commit the queued heartbeats (unless commits are failing and the next try is not
    /// due yet, or `force`). A failed batch stays queued for the next try.
    fn commit(&mut self, conn: &mut Connection, force: bool) {
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
        match insert_heartbeats(conn, &self.batch) {
            Ok(()) => {
                let n = u64::try_from(self.batch.len()).unwrap_or(u64::MAX);
                self.stats.heartbeats.fetch_add(n, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.writes.fetch_add(1, Ordering::SeqCst);
                self.batch.clear();
                self.deadline = None;
                if self.retry.take().is_some() {
                    *self.stats.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    tracing::warn!(database = %self.label, heartbeats = n, "store writable again: kept heartbeats committed");
                }
            }
            Err(e) if !retryable(&e) => {
                tracing::error!(
                    database = %self.label,
                    heartbeats = self.batch.len(),
                    error = %e,
                    "heartbeat batch lost"
                );
                self.lost = Some(format!("{} heartbeats lost: {e}", self.batch.len()));
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
                        error = %e,
                        "STORE NOT WRITABLE: heartbeats are kept in memory and retried; the agent is not ready until it is"
                    );
                }
                self.retry = Some((Instant::now() + wait, wait));
                self.deadline = Some(Instant::now() + wait);
                let message = format!("database {} is not writable: {e}", self.label);
                *self.stats.failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(message.clone());
                if self.batch.len() > MAX_KEPT {
                    let excess = self.batch.len() - MAX_KEPT;
                    self.batch.drain(..excess);
                    tracing::error!(
                        database = %self.label,
                        dropped = excess,
                        kept = MAX_KEPT,
                        "store not writable: oldest heartbeats dropped beyond the bound"
                    );
                    self.lost = Some(format!("{excess} heartbeats lost: {e}"));
                } else if self.lost.is_none() {
                    self.lost = Some(format!(
                        "{} heartbeats not stored yet (kept, retrying): {e}",
                        self.batch.len()
                    ));
                }
            }
        }
    }

    /// At the end: heartbeats that could still not be committed are lost; say so.
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

/// Whether a failed commit is the database being unwritable for now (read-only, full,
/// I/O, locked), so that the same batch may succeed later; any other error would fail
/// again and loses the batch.
fn retryable(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e.sqlite_error_code(),
        Some(
            C::ReadOnly
                | C::DiskFull
                | C::SystemIoFailure
                | C::CannotOpen
                | C::DatabaseBusy
                | C::DatabaseLocked
                | C::PermissionDenied
                | C::FileLockingProtocolFailed
                | C::OutOfMemory
        )
    )
}

/// Insert heartbeats in one transaction.
pub(crate) fn insert_heartbeats(
    conn: &mut Connection,
    batch: &[Heartbeat],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO heartbeats
               (monitor_namespace, monitor_name, checked_at, state, latency_ms, reason, message, attempts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for hb in batch {
            insert.execute(params![
                hb.namespace,
                hb.name,
                ms(hb.checked_at),
                hb.state.as_str(),
                hb.latency_ms,
                hb.reason.map(|r| r.as_str()),
                hb.message,
                i64::from(hb.attempts),
            ])?;
        }
    }
    tx.commit()
}
