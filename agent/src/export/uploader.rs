//! Uploading the outbox: every pending object is PUT whole (idempotent), a few at a
//! time, each retried with a bounded exponential backoff, and marked done only after
//! the store accepted it. A failure leaves the object pending, so nothing is lost while
//! the store is unreachable; the next drain catches up.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::target::{ExportError, ObjectTarget};

/// One object waiting to be uploaded: the newest body of `key`, at `version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingObject {
    /// Object key, relative to the target's prefix (see `kubekuma_crds::objects::keys`).
    pub key: String,
    /// The whole object.
    pub body: Vec<u8>,
    /// Version of this body; [`Outbox::done`] with an older version must not drop a newer body.
    pub version: i64,
}

/// The queue of objects to upload, as the uploader sees it (the SQLite store in the
/// agent, [`MemoryOutbox`] in tests). Errors must be free of secrets.
pub trait Outbox: Send + Sync {
    /// What the queue fails with.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Up to `limit` pending objects, oldest or in key order, the same ones on every
    /// call until they are done.
    fn pending(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PendingObject>, Self::Error>> + Send;
    /// `key` at `version` was uploaded: forget it unless a newer version was queued since.
    fn done(&self, key: &str, version: i64)
    -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Why an upload did not go through (without credentials).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The outbox could not be read.
    #[error("cannot read the outbox: {0}")]
    Pending(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store refused the object, every try.
    #[error(transparent)]
    Put(#[from] ExportError),
    /// The object was uploaded, but the outbox could not forget it (it goes again).
    #[error("uploaded {key} but cannot mark it done: {source}")]
    Done {
        /// The object's key.
        key: String,
        /// The outbox's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// An outbox in memory: the newest body per key, with a version counter.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    next_version: i64,
    objects: BTreeMap<String, (Vec<u8>, i64)>,
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue `body` as the newest version of `key`; returns its version.
    pub fn put(&self, key: &str, body: impl Into<Vec<u8>>) -> i64 {
        let mut g = self.lock();
        g.next_version += 1;
        let v = g.next_version;
        g.objects.insert(key.to_string(), (body.into(), v));
        v
    }

    /// Keys still pending, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// Number of pending objects.
    pub fn len(&self) -> usize {
        self.lock().objects.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A poisoned lock only means a panic elsewhere while holding it; the map is still
    // consistent (every mutation is a single insert or remove).
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Outbox for MemoryOutbox {
    type Error = std::convert::Infallible;

    async fn pending(&self, limit: usize) -> Result<Vec<PendingObject>, Self::Error> {
        Ok(self
            .lock()
            .objects
            .iter()
            .take(limit)
            .map(|(k, (body, version))| PendingObject {
                key: k.clone(),
                body: body.clone(),
                version: *version,
            })
            .collect())
    }

    async fn done(&self, key: &str, version: i64) -> Result<(), Self::Error> {
        let mut g = self.lock();
        if g.objects.get(key).is_some_and(|(_, v)| *v == version) {
            g.objects.remove(key);
        }
        Ok(())
    }
}

/// What one drain did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Objects uploaded and marked done.
    pub uploaded: usize,
    /// Objects that stay pending after failing every try (or failing to be marked done).
    pub failed: usize,
    /// The last error seen, without credentials.
    pub last_error: Option<String>,
}

impl DrainReport {
    /// Whether everything attempted went through.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.last_error.is_none()
    }
}

/// Retries of one PUT: `tries` attempts in all, sleeping `first_backoff`, then four
/// times as long, … (±20 % jitter) between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all (at least 1).
    pub tries: u32,
    /// Sleep after the first failure.
    pub first_backoff: Duration,
    /// Growth of the sleep per failure.
    pub factor: u32,
}

impl Default for Backoff {
    /// 3 tries, sleeping ≈ 0.2 s then ≈ 0.8 s: a failing object gives up within about
    /// a second plus the time of the requests.
    fn default() -> Self {
        Backoff {
            tries: 3,
            first_backoff: Duration::from_millis(200),
            factor: 4,
        }
    }
}

/// Uploads the outbox to one object target.
#[derive(Clone, Debug)]
pub struct Uploader {
    target: ObjectTarget,
    concurrency: usize,
    batch: usize,
    backoff: Backoff,
}

impl Uploader {
    /// An uploader with 4 concurrent PUTs, batches of 64 and the default [`Backoff`].
    pub fn new(target: ObjectTarget) -> Self {
        Uploader {
            target,
            concurrency: 4,
            batch: 64,
            backoff: Backoff::default(),
        }
    }

    /// At most `n` PUTs in flight (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Objects asked of the outbox at a time (at least 1).
    pub fn with_batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Retries of each PUT.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Backoff {
            tries: backoff.tries.max(1),
            ..backoff
        };
        self
    }

    /// Where objects go.
    pub fn target(&self) -> &ObjectTarget {
        &self.target
    }

    /// Upload every pending object of `outbox`. Batch after batch until the outbox has
    /// nothing new; it stops early after a batch in which nothing succeeded (the store
    /// is down: no point in trying the rest now). Objects that failed stay pending and
    /// are not tried twice in one drain.
    pub async fn drain<O: Outbox>(&self, outbox: &O) -> DrainReport {
        let mut report = DrainReport::default();
        // Everything tried in this drain; failed ones come back from the outbox, so
        // ask for that many more to reach objects not tried yet.
        let mut tried: HashSet<(String, i64)> = HashSet::new();
        loop {
            let limit = self.batch.saturating_add(report.failed);
            let batch: Vec<PendingObject> = match outbox.pending(limit).await {
                Ok(v) => v
                    .into_iter()
                    .filter(|o| !tried.contains(&(o.key.clone(), o.version)))
                    .take(self.batch)
                    .collect(),
                Err(e) => {
                    report.last_error = Some(UploadError::Pending(Box::new(e)).to_string());
                    return report;
                }
            };
            if batch.is_empty() {
                return report;
            }
            tried.extend(batch.iter().map(|o| (o.key.clone(), o.version)));
            let results: Vec<Result<(), UploadError>> =
                futures::stream::iter(batch.into_iter().map(|o| self.upload(outbox, o)))
                    .buffer_unordered(self.concurrency)
                    .collect()
                    .await;
            let mut succeeded = 0usize;
            for r in results {
                match r {
                    Ok(()) => {
                        succeeded += 1;
                        report.uploaded += 1;
                    }
                    Err(e) => {
                        report.failed += 1;
                        report.last_error = Some(e.to_string());
                    }
                }
            }
            if succeeded == 0 {
                return report;
            }
        }
    }

    /// PUT one object with retries, then mark it done.
    async fn upload<O: Outbox>(&self, outbox: &O, o: PendingObject) -> Result<(), UploadError> {
        self.put_with_retries(&o.key, Bytes::from(o.body)).await?;
        outbox
            .done(&o.key, o.version)
            .await
            .map_err(|e| UploadError::Done {
                key: o.key,
                source: Box::new(e),
            })
    }

    async fn put_with_retries(&self, key: &str, body: Bytes) -> Result<(), ExportError> {
        let mut sleep = self.backoff.first_backoff;
        let mut attempt = 1;
        loop {
            match self.target.put(key, body.clone()).await {
                Ok(()) => return Ok(()),
                // A key the store can never accept: retrying cannot help.
                Err(e @ ExportError::InvalidKey { .. }) => return Err(e),
                Err(e) if attempt >= self.backoff.tries => return Err(e),
                Err(e) => {
                    tracing::debug!(key, attempt, error = %e, "put failed; retrying");
                    tokio::time::sleep(jitter(sleep)).await;
                    sleep = sleep.saturating_mul(self.backoff.factor.max(1));
                    attempt += 1;
                }
            }
        }
    }

    /// Drain `outbox` every `interval` until `shutdown` completes, then once more (so
    /// the last results leave before the agent stops). A drain in progress is never
    /// interrupted. Logs a warning when uploads start failing, an info line when they
    /// recover, and debug lines otherwise. Returns the report of the last drain.
    pub async fn run<O: Outbox>(
        &self,
        outbox: &O,
        interval: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> DrainReport {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failing = false;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {
                    let r = self.drain(outbox).await;
                    self.log(&r, &mut failing);
                }
            }
        }
        let r = self.drain(outbox).await;
        self.log(&r, &mut failing);
        r
    }

    fn log(&self, r: &DrainReport, failing: &mut bool) {
        let target = self.target.url();
        match (&r.last_error, *failing) {
            (Some(e), false) => {
                *failing = true;
                tracing::warn!(target, uploaded = r.uploaded, failed = r.failed, error = %e,
                    "object store upload failing; objects stay queued");
            }
            (Some(e), true) => {
                tracing::debug!(target, uploaded = r.uploaded, failed = r.failed, error = %e,
                    "object store upload still failing");
            }
            (None, true) => {
                *failing = false;
                tracing::info!(
                    target,
                    uploaded = r.uploaded,
                    "object store upload recovered"
                );
            }
            (None, false) => {
                if r.uploaded > 0 {
                    tracing::debug!(target, uploaded = r.uploaded, "objects uploaded");
                }
            }
        }
    }
}

/// `d` scaled by a random factor in [0.8, 1.2).
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.8..1.2))
}
