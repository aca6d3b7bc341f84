//! The single writer thread: it owns the write connection, commits queued heartbeats in
//! batches (one transaction at most every [`BATCH_WINDOW`] or per [`BATCH_MAX`]
//! heartbeats) and runs every other write as a job, in the order they were sent.

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
    };
    loop {
        let message = match queue.deadline {
            None => rx.recv().ok(),
            Some(deadline) => {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => {
                        queue.commit(&mut conn);
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
                    queue.commit(&mut conn);
                }
            }
            Command::Flush(reply) => {
                queue.commit(&mut conn);
                let result = match queue.lost.take() {
                    None => Ok(()),
                    Some(message) => Err(Fail::Batch(message)),
                };
                let _ = reply.send(result);
            }
            Command::Job(job) => {
                queue.commit(&mut conn);
                // A panicking job drops its reply sender (the caller sees the writer
                // stop answering for that call) but must not take the writer down.
                if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
                    tracing::error!(database = %queue.label, "store write job panicked");
                }
                queue.stats.writes.fetch_add(1, Ordering::SeqCst);
            }
            Command::Close(reply) => {
                queue.commit(&mut conn);
                drop(conn);
                let _ = reply.send(());
                return;
            }
        }
    }
    queue.commit(&mut conn);
}

struct Queue {
    batch: Vec<Heartbeat>,
    deadline: Option<Instant>,
    /// The error of a batch that could not be committed, reported by the next flush.
    lost: Option<String>,
    stats: Arc<WriterStats>,
    label: String,
}

impl Queue {
    fn commit(&mut self, conn: &mut Connection) {
        self.deadline = None;
        if self.batch.is_empty() {
            return;
        }
        match insert_heartbeats(conn, &self.batch) {
            Ok(()) => {
                let n = u64::try_from(self.batch.len()).unwrap_or(u64::MAX);
                self.stats.heartbeats.fetch_add(n, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.writes.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::error!(
                    database = %self.label,
                    heartbeats = self.batch.len(),
                    error = %e,
                    "heartbeat batch lost"
                );
                self.lost = Some(format!("{} heartbeats lost: {e}", self.batch.len()));
            }
        }
        self.batch.clear();
    }
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
