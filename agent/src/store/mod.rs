//! The store (SQLite, or PostgreSQL for replicas sharing state): heartbeats, rollups, incidents, monitor state, crd cache, export outbox,
//! push monitors' tokens.
//!
//! One writer thread owns the write connection ([`writer`]); the async API sends it
//! commands and awaits the reply. Heartbeats are queued without waiting and committed
//! in batches; [`Store::flush`] waits for everything queued so far. Reads run on
//! separate read-only connections inside `spawn_blocking`, so they never block the
//! runtime and, with WAL, never wait behind the writer.
//!
//! Times are stored as INTEGER unix milliseconds. Schema changes are numbered
//! migrations in [`migrations`].
//!
//! A second backend, PostgreSQL ([`pg`]: a pool, its own migrations, a heartbeat task
//! writing batches), answers the same methods: each method first hands a PostgreSQL
//! store to its `pg::` twin. [`Store::connect`] opens either from a `DATABASE_URL`.

mod api_silences;
mod audit;
mod convert;
pub mod deliveries;
mod incident_query;
mod incidents;
mod location;
pub mod migrations;
pub mod pg;
mod push;
mod records;
mod retention;
mod rollups;
mod sessions;
mod writer;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::objects::{LatencyPoint, Rollup, monitor_key};
use kubekuma_crds::results::{FailureReason, Heartbeat, Incident};
use kubekuma_crds::settings::DownsampleResolution;
use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::oneshot;

pub use api_silences::{ApiSilence, CreateSilence};
pub use audit::{AuditEvent, AuditFilter, AuditResult};
use convert::{Fail, count, days_ms, ms, parse_enum, parse_opt_enum, time};
pub use incident_query::IncidentFilter;
pub use location::{DatabaseLocation, is_postgres, parse_database_url};
pub use push::PushRow;
pub use records::{CachedCrd, CrdCacheEntry, MonitorStateRow};
use rollups::{Buckets, DAY_MS, HOUR_MS};
pub use sessions::{AuthActivity, SessionRow};
use writer::{Command, Job, WriterStats};

/// How long a connection waits for a lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;

/// What can go wrong in the store. Every message names the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `DATABASE_URL` is neither SQLite nor PostgreSQL.
    #[error(
        "unsupported database url scheme {scheme:?}: use sqlite:PATH, sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DATABASE"
    )]
    UnsupportedUrl {
        /// The scheme found (the rest of the URL is not repeated: it may hold credentials).
        scheme: String,
    },
    /// `DATABASE_URL` is `sqlite:` with nothing after it.
    #[error("database url names no file: use sqlite:PATH, sqlite://PATH or sqlite::memory:")]
    EmptyPath,
    /// The database's folder could not be created.
    #[error("cannot create database folder {path}: {source}")]
    CreateDir {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the store writer for {path}: {source}")]
    Spawn {
        /// The database.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened or configured.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database was migrated by a newer agent.
    #[error("database {path} has schema version {found}, newer than the {known} this agent knows")]
    NewerSchema {
        /// The database.
        path: String,
        /// Its schema version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A migration failed (and was rolled back).
    #[error("migration {version} failed on {path}: {source}")]
    Migration {
        /// The database.
        path: String,
        /// The migration's number.
        version: i64,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database cannot be written (checked when it is opened).
    #[error("database {path} is not writable: {cause}")]
    NotWritable {
        /// The database.
        path: String,
        /// Why.
        cause: String,
    },
    /// A statement failed.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// No incident has this ID.
    #[error("incident {id} not found in {path}")]
    IncidentNotFound {
        /// The database.
        path: String,
        /// The ID asked for.
        id: i64,
    },
    /// A stored value could not be read back.
    #[error("invalid value {value:?} in {column} of {path}")]
    InvalidValue {
        /// The database.
        path: String,
        /// `table.column`.
        column: &'static str,
        /// The value found.
        value: String,
    },
    /// Secrets are never cached.
    #[error(
        "refusing to cache secret {namespace}/{name} in {path}: secret values never enter the database"
    )]
    SecretRefused {
        /// The database.
        path: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// An argument was out of range.
    #[error("invalid argument for {path}: {message}")]
    InvalidArgument {
        /// The database.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A batch of queued heartbeats could not be committed (reported by the next flush).
    #[error("heartbeats not stored in {path}: {message}")]
    HeartbeatBatch {
        /// The database.
        path: String,
        /// What was lost and why.
        message: String,
    },
    /// The writer thread is gone.
    #[error("store writer for {path} has stopped")]
    WriterStopped {
        /// The database.
        path: String,
    },
    /// [`Store::close`] was called.
    #[error("store {path} is closed")]
    Closed {
        /// The database.
        path: String,
    },
    /// A store operation panicked (a bug); the store keeps working.
    #[error("store operation on {path} panicked")]
    Panicked {
        /// The database.
        path: String,
    },
    /// A PostgreSQL `DATABASE_URL` (or its password) was refused; the message names
    /// the URL without its password.
    #[error("{message}")]
    PostgresConfig {
        /// What was wrong.
        message: String,
    },
    /// The PostgreSQL server could not be reached or refused the connection at start.
    #[error("cannot connect to database {path}: {cause}")]
    Connect {
        /// The URL without its password.
        path: String,
        /// Why.
        cause: String,
    },
    /// A PostgreSQL migration failed (and was rolled back).
    #[error("migration {version} failed on {path}: {message}")]
    PgMigration {
        /// The URL without its password.
        path: String,
        /// The migration's number.
        version: i64,
        /// Why.
        message: String,
    },
    /// A PostgreSQL statement failed, or no connection could be had.
    #[error("database {path}: {message}")]
    Postgres {
        /// The URL without its password.
        path: String,
        /// Why.
        message: String,
    },
    /// The operation is not written for PostgreSQL yet (see `store/pg/NOTES.md`).
    #[error("database {path}: this operation is not available on PostgreSQL yet")]
    NotOnPostgres {
        /// The URL without its password.
        path: String,
    },
    /// A read task did not finish (panicked or was cancelled).
    #[error("read of {path} failed: {message}")]
    ReadTask {
        /// The database.
        path: String,
        /// What happened.
        message: String,
    },
}

/// What [`Store::apply_retention`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Raw heartbeats deleted because they were older than `heartbeats_days`.
    pub deleted_heartbeats: u64,
    /// Raw heartbeats replaced by rollups (older than `downsample_after_days`).
    pub downsampled_heartbeats: u64,
    /// Hourly rollups merged into daily ones (`downsample.resolution: daily`).
    pub merged_hourly_rollups: u64,
    /// Rollups (hourly and daily) deleted because they were older than `heartbeats_days`.
    pub deleted_rollups: u64,
    /// Closed incidents deleted because they ended before `incidents_days`.
    pub deleted_incidents: u64,
}

/// The agent's database. Cheap to clone; every clone talks to the same writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database for messages: its path, `:memory:`, or a PostgreSQL URL without
    /// its password.
    label: String,
    stats: Arc<WriterStats>,
    closed: AtomicBool,
    backend: Backend,
}

/// Where the data lives.
enum Backend {
    /// SQLite: the writer thread and the read connections.
    Sqlite {
        tx: mpsc::Sender<Command>,
        readers: Readers,
    },
    /// PostgreSQL: a pool and the heartbeat task.
    Postgres(pg::Pg),
}

/// Where read connections come from, and the idle ones.
struct Readers {
    target: Target,
    idle: Mutex<Vec<Connection>>,
}

#[derive(Clone)]
enum Target {
    File(PathBuf),
    /// A shared-cache in-memory database URI.
    Memory(String),
}

impl Readers {
    fn take(&self) -> Result<Connection, Fail> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => Ok(open_reader(&self.target)?),
        }
    }

    fn give(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }

    fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

fn open_reader(target: &Target) -> rusqlite::Result<Connection> {
    let conn = match target {
        Target::File(path) => Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?,
        Target::Memory(uri) => {
            let conn = Connection::open_with_flags(
                uri,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_URI
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            // Shared-cache readers would otherwise hit table locks while the writer
            // writes; in-memory databases are for tests and trials only.
            conn.pragma_update(None, "read_uncommitted", true)?;
            conn
        }
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Whether SQLite's error says the database (file, folder or disk) cannot be written.
fn unwritable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::PermissionDenied
        )
    )
}

/// The error of opening the database at `path`: [`StoreError::NotWritable`] when it
/// cannot be written, else [`StoreError::Open`].
fn open_error(path: &str, source: rusqlite::Error) -> StoreError {
    if unwritable(&source) {
        StoreError::NotWritable {
            path: path.to_string(),
            cause: source.to_string(),
        }
    } else {
        StoreError::Open {
            path: path.to_string(),
            source,
        }
    }
}

/// Fail fast on a database that cannot be written (a read-only file, folder or disk):
/// commit a real write (a table created and dropped in one transaction).
fn probe_write(conn: &mut Connection) -> Result<(), String> {
    if conn
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(|e| e.to_string())?
    {
        return Err(
            "it was opened read-only (check the file's and its folder's permissions)".into(),
        );
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS kubekuma_write_probe (x INTEGER);
         DROP TABLE kubekuma_write_probe;",
    )
    .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())
}

fn memory_uri() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "file:kubekuma-{}-{n}?mode=memory&cache=shared",
        std::process::id()
    )
}

impl Store {
    /// Open (creating file and folders) the database at `path`, in WAL mode, and bring
    /// its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_location(DatabaseLocation::File(path.to_path_buf()))
    }

    /// Open the SQLite database a `DATABASE_URL` names (see [`parse_database_url`]);
    /// [`Store::connect`] also opens PostgreSQL.
    pub fn open_url(url: &str) -> Result<Store, StoreError> {
        Store::open_location(parse_database_url(url)?)
    }

    /// Open the database a `DATABASE_URL` names: `postgres://` or `postgresql://` (the
    /// password from the URL, `DATABASE_PASSWORD` or `DATABASE_PASSWORD_FILE`; see
    /// [`pg::config`]), else SQLite as [`Store::open_url`].
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if location::is_postgres(url) {
            return Store::open_postgres(url, &pg::config::PasswordSource::from_env()).await;
        }
        Store::open_url(url)
    }

    /// Whether several agents may share this store (PostgreSQL; a SQLite file belongs
    /// to one agent).
    pub fn is_shared(&self) -> bool {
        self.pg().is_some()
    }

    /// Agents sharing a PostgreSQL store elect one leader through it (see
    /// [`pg::leader`]): the receiver says whether this agent leads, and the election ends
    /// (releasing the lock) when `shutdown` turns true. `None` on SQLite.
    pub fn elect(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.pg().map(|pg| pg::leader::spawn(pg, shutdown))
    }

    /// Open a parsed location.
    pub fn open_location(location: DatabaseLocation) -> Result<Store, StoreError> {
        let (label, target, conn) = match location {
            DatabaseLocation::File(path) => {
                let label = path.display().to_string();
                if let Some(parent) = path.parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                        path: parent.display().to_string(),
                        source,
                    })?;
                }
                let conn = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE
                        | OpenFlags::SQLITE_OPEN_CREATE
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .and_then(|c| configure_writer(c, true, &label))
                .map_err(|source| open_error(&label, source))?;
                (label, Target::File(path), conn)
            }
            DatabaseLocation::Memory => {
                let label = ":memory:".to_string();
                let uri = memory_uri();
                let conn = Connection::open_with_flags(
                    &uri,
                    OpenFlags::SQLITE_OPEN_READ_WRITE
                        | OpenFlags::SQLITE_OPEN_CREATE
                        | OpenFlags::SQLITE_OPEN_URI
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .and_then(|c| configure_writer(c, false, &label))
                .map_err(|source| StoreError::Open {
                    path: label.clone(),
                    source,
                })?;
                (label, Target::Memory(uri), conn)
            }
        };
        let mut conn = conn;
        let applied = migrations::migrate(&mut conn, ms(Utc::now())).map_err(|e| match e {
            migrations::MigrateError::Newer { found, known } => StoreError::NewerSchema {
                path: label.clone(),
                found,
                known,
            },
            migrations::MigrateError::Sql { source, .. } if unwritable(&source) => {
                StoreError::NotWritable {
                    path: label.clone(),
                    cause: source.to_string(),
                }
            }
            migrations::MigrateError::Sql { version, source } => StoreError::Migration {
                path: label.clone(),
                version,
                source,
            },
        })?;
        if applied > 0 {
            tracing::info!(database = %label, applied, "applied store migrations");
        }
        probe_write(&mut conn).map_err(|cause| StoreError::NotWritable {
            path: label.clone(),
            cause,
        })?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let thread_label = label.clone();
        std::thread::Builder::new()
            .name("kubekuma-store".to_string())
            .spawn(move || writer::run(conn, rx, thread_stats, thread_label))
            .map_err(|source| StoreError::Spawn {
                path: label.clone(),
                source,
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                label,
                stats,
                closed: AtomicBool::new(false),
                backend: Backend::Sqlite {
                    tx,
                    readers: Readers {
                        target,
                        idle: Mutex::new(Vec::new()),
                    },
                },
            }),
        })
    }

    /// Open a PostgreSQL store (`postgres://` or `postgresql://`; `sslmode` and the
    /// password as [`pg::config::parse`] reads them), migrating it. Must run inside a
    /// tokio runtime (the heartbeat writer is a task of it).
    pub async fn open_postgres(
        url: &str,
        password: &pg::config::PasswordSource,
    ) -> Result<Store, StoreError> {
        let stats = Arc::new(WriterStats::default());
        let opened = pg::open(url, password, stats.clone()).await?;
        Ok(Store {
            inner: Arc::new(Inner {
                label: opened.label,
                stats,
                closed: AtomicBool::new(false),
                backend: Backend::Postgres(opened.pg),
            }),
        })
    }

    /// The PostgreSQL backend, when the store is one.
    fn pg(&self) -> Option<&pg::Pg> {
        match &self.inner.backend {
            Backend::Postgres(pg) => Some(pg),
            Backend::Sqlite { .. } => None,
        }
    }

    /// SQLite's writer channel and readers (`NotOnPostgres` for PostgreSQL: an
    /// operation that reached the SQLite code is not written for PostgreSQL yet).
    fn sqlite(&self) -> Result<(&mpsc::Sender<Command>, &Readers), StoreError> {
        match &self.inner.backend {
            Backend::Sqlite { tx, readers } => Ok((tx, readers)),
            Backend::Postgres(_) => Err(StoreError::NotOnPostgres {
                path: self.inner.label.clone(),
            }),
        }
    }

    /// The database's path (`:memory:` for an in-memory one).
    pub fn path(&self) -> &str {
        &self.inner.label
    }

    fn stopped(&self) -> StoreError {
        if self.inner.closed.load(Ordering::Acquire) {
            StoreError::Closed {
                path: self.inner.label.clone(),
            }
        } else {
            StoreError::WriterStopped {
                path: self.inner.label.clone(),
            }
        }
    }

    /// Send a command to the writer, unless the store was closed.
    fn send(&self, command: Command) -> Result<(), StoreError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(self.stopped());
        }
        let (tx, _) = self.sqlite()?;
        tx.send(command).map_err(|_| self.stopped())
    }

    /// The PostgreSQL backend if the store is one and is open: `Ok(None)` for SQLite.
    fn pg_open(&self) -> Result<Option<&pg::Pg>, StoreError> {
        match self.pg() {
            Some(_) if self.inner.closed.load(Ordering::Acquire) => Err(self.stopped()),
            other => Ok(other),
        }
    }

    /// Run `f` on the writer thread, after every heartbeat queued before it.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
                .unwrap_or(Err(Fail::Panicked));
            let _ = reply.send(out);
        });
        self.send(Command::Job(job))?;
        match rx.await {
            Ok(r) => r.map_err(|e| e.at(&self.inner.label)),
            Err(_) => Err(self.stopped()),
        }
    }

    /// Run `f` on a read-only connection in `spawn_blocking`.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
    {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(self.stopped());
        }
        self.sqlite()?;
        let inner = self.inner.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let Backend::Sqlite { readers, .. } = &inner.backend else {
                return Err(Fail::Panicked);
            };
            let conn = readers.take()?;
            let out = std::panic::catch_unwind(AssertUnwindSafe(|| f(&conn)))
                .unwrap_or(Err(Fail::Panicked));
            readers.give(conn);
            out
        })
        .await;
        match joined {
            Ok(r) => r.map_err(|e| e.at(&self.inner.label)),
            Err(e) => Err(StoreError::ReadTask {
                path: self.inner.label.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// Queue a heartbeat; returns at once. It is committed within about 50 ms (or as
    /// soon as 1000 are queued); [`Store::flush`] waits for it. A monitor has at most
    /// one heartbeat per millisecond: a second one with the same `checked_at` replaces
    /// the first.
    pub fn record_heartbeat(&self, hb: Heartbeat) -> Result<(), StoreError> {
        if let Some(pg) = self.pg_open()? {
            return match pg.queue(pg::writer::Command::Heartbeat(Box::new(hb))) {
                true => Ok(()),
                false => Err(self.stopped()),
            };
        }
        self.send(Command::Heartbeat(Box::new(hb)))
    }

    /// Wait until every heartbeat queued so far is committed. Fails if a batch since
    /// the last flush could not be committed (those heartbeats are lost).
    pub async fn flush(&self) -> Result<(), StoreError> {
        if let Some(pg) = self.pg_open()? {
            let (reply, rx) = oneshot::channel();
            if !pg.queue(pg::writer::Command::Flush(reply)) {
                return Err(self.stopped());
            }
            return match rx.await {
                Ok(r) => r.map_err(|e| e.at(&self.inner.label)),
                Err(_) => Err(self.stopped()),
            };
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Flush(reply))?;
        match rx.await {
            Ok(r) => r.map_err(|e| e.at(&self.inner.label)),
            Err(_) => Err(self.stopped()),
        }
    }

    /// Commit what is queued, stop the writer and close every connection. Later calls
    /// on any clone fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match &self.inner.backend {
            Backend::Postgres(pg) => pg.close().await,
            Backend::Sqlite { tx, readers } => {
                let (reply, rx) = oneshot::channel();
                tx.send(Command::Close(reply)).map_err(|_| self.stopped())?;
                let _ = rx.await;
                readers.clear();
            }
        }
        Ok(())
    }

    /// Heartbeats committed since the store was opened.
    pub fn heartbeats_written(&self) -> u64 {
        self.inner.stats.heartbeats.load(Ordering::Relaxed)
    }

    /// Writes run since the store was opened (heartbeat batches and every other write):
    /// equal counts mean the data did not change in between.
    pub fn write_count(&self) -> u64 {
        self.inner.stats.writes.load(Ordering::SeqCst)
    }

    /// Why heartbeats cannot be committed right now (a read-only or full disk), or, on
    /// PostgreSQL, why the last statement of any kind could not reach the server (until
    /// one reaches it again); `None` while all is well. Failed batches are kept and
    /// retried meanwhile. Readiness (`/ready`) answers 503 with this reason.
    pub fn write_failure(&self) -> Option<String> {
        let stats = &self.inner.stats;
        let failure = stats
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        failure.or_else(|| {
            stats
                .unreachable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    /// For tests and drills: make the writer's connection refuse every write (SQLite's
    /// `query_only`), as a database that became read-only does, or accept them again.
    #[doc(hidden)]
    pub async fn refuse_writes(&self, refuse: bool) -> Result<(), StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(pg.refuse_writes(refuse)).await;
        }
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(conn.pragma_update(None, "query_only", refuse));
        });
        self.send(Command::Job(job))?;
        match rx.await {
            Ok(r) => r.map_err(|source| StoreError::Sqlite {
                path: self.inner.label.clone(),
                source,
            }),
            Err(_) => Err(self.stopped()),
        }
    }

    /// Heartbeat batches (transactions) committed since the store was opened.
    pub fn heartbeat_batches(&self) -> u64 {
        self.inner.stats.batches.load(Ordering::Relaxed)
    }

    /// PostgreSQL: requests sent to the server since the store was opened, for the
    /// benchmark's round trips per second. Each heartbeat batch counts one (and one
    /// more when its statement is prepared on a connection for the first time); every
    /// other store call counts one, even one that runs a transaction of several
    /// statements (so this is a lower bound while such calls run). Always 0 on SQLite,
    /// which has no server: see [`Store::write_count`] for its write transactions.
    pub fn round_trips(&self) -> u64 {
        self.inner.stats.round_trips.load(Ordering::Relaxed)
    }

    /// Heartbeat rows stored (all monitors).
    pub async fn heartbeat_rows(&self) -> Result<i64, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(async {
                    let c = pg.client().await?;
                    Ok(c.query_one("SELECT count(*) FROM heartbeats", &[])
                        .await?
                        .try_get(0)?)
                })
                .await;
        }
        self.read(|c| Ok(c.query_row("SELECT count(*) FROM heartbeats", [], |r| r.get(0))?))
            .await
    }

    /// PostgreSQL: bytes of the `heartbeats` table with its indexes and TOAST
    /// (`pg_total_relation_size`), for the benchmark's bytes per heartbeat; `None` on
    /// SQLite (see [`Store::database_bytes`]).
    pub async fn heartbeat_table_bytes(&self) -> Result<Option<i64>, StoreError> {
        let Some(pg) = self.pg_open()? else {
            return Ok(None);
        };
        pg.read(async {
            let c = pg.client().await?;
            Ok(Some(
                c.query_one("SELECT pg_total_relation_size('heartbeats')", &[])
                    .await?
                    .try_get(0)?,
            ))
        })
        .await
    }

    /// PostgreSQL: the server process id of one pooled connection (`pg_backend_pid()`),
    /// for the benchmark to find the server's processes when it runs on this host;
    /// `None` on SQLite.
    pub async fn server_backend_pid(&self) -> Result<Option<i32>, StoreError> {
        let Some(pg) = self.pg_open()? else {
            return Ok(None);
        };
        pg.read(async {
            let c = pg.client().await?;
            Ok(Some(
                c.query_one("SELECT pg_backend_pid()", &[])
                    .await?
                    .try_get(0)?,
            ))
        })
        .await
    }

    /// Size of the database in bytes (`page_count * page_size`, WAL content included).
    pub async fn database_bytes(&self) -> Result<i64, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(async {
                    let c = pg.client().await?;
                    Ok(
                        c.query_one("SELECT pg_database_size(current_database())", &[])
                            .await?
                            .try_get(0)?,
                    )
                })
                .await;
        }
        self.read(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok(pages.saturating_mul(size))
        })
        .await
    }

    /// Heartbeats of one monitor checked at or after `since`, newest first, at most `limit`.
    pub async fn heartbeats(
        &self,
        namespace: &str,
        name: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Heartbeat>, StoreError> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(pg::rollups::heartbeats(pg, &ns, &name, ms(since), limit))
                .await;
        }
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT checked_at, state, latency_ms, reason, message, attempts FROM heartbeats
                 WHERE monitor_namespace = ?1 AND monitor_name = ?2 AND checked_at >= ?3
                 ORDER BY checked_at DESC LIMIT ?4",
            )?;
            type Raw = (
                i64,
                String,
                Option<f64>,
                Option<String>,
                Option<String>,
                i64,
            );
            let raw: Vec<Raw> = st
                .query_map(params![ns, name, ms(since), limit], |r| {
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
                .map(|(t, state, latency_ms, reason, message, attempts)| {
                    Ok(Heartbeat {
                        namespace: ns.clone(),
                        name: name.clone(),
                        state: parse_enum("heartbeats.state", &state)?,
                        latency_ms,
                        reason: parse_opt_enum("heartbeats.reason", reason)?,
                        message,
                        checked_at: time("heartbeats.checked_at", t)?,
                        attempts: count("heartbeats.attempts", attempts)?,
                    })
                })
                .collect()
        })
        .await
    }

    /// Open an incident; returns its ID.
    pub async fn open_incident(
        &self,
        namespace: &str,
        name: &str,
        started_at: DateTime<Utc>,
        reason: Option<FailureReason>,
    ) -> Result<i64, StoreError> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(pg::incidents::open(
                    pg,
                    &ns,
                    &name,
                    ms(started_at),
                    reason,
                    ms(Utc::now()),
                ))
                .await;
        }
        self.write(move |c| incidents::open(c, &ns, &name, ms(started_at), reason, ms(Utc::now())))
            .await
    }

    /// Close an incident, setting its duration (whole seconds). Closing a closed one
    /// changes nothing.
    pub async fn close_incident(&self, id: i64, ended_at: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(pg::incidents::close(pg, id, ms(ended_at), ms(Utc::now())))
                .await;
        }
        self.write(move |c| incidents::close(c, id, ms(ended_at), ms(Utc::now())))
            .await
    }

    /// Record that an incident's notifications were suppressed, and why.
    pub async fn set_incident_suppressed(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        let reason = reason.to_string();
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(pg::incidents::set_suppressed(
                    pg,
                    id,
                    &reason,
                    ms(Utc::now()),
                ))
                .await;
        }
        self.write(move |c| incidents::set_suppressed(c, id, &reason, ms(Utc::now())))
            .await
    }

    /// Record an operator's acknowledgement.
    pub async fn acknowledge_incident(
        &self,
        id: i64,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let by = by.to_string();
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(pg::incidents::acknowledge(
                    pg,
                    id,
                    &by,
                    ms(at),
                    ms(Utc::now()),
                ))
                .await;
        }
        self.write(move |c| incidents::acknowledge(c, id, &by, ms(at), ms(Utc::now())))
            .await
    }

    /// Add a public update to an incident.
    pub async fn add_incident_update(
        &self,
        id: i64,
        at: DateTime<Utc>,
        message: &str,
    ) -> Result<(), StoreError> {
        let message = message.to_string();
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(pg::incidents::add_update(
                    pg,
                    id,
                    ms(at),
                    &message,
                    ms(Utc::now()),
                ))
                .await;
        }
        self.write(move |c| incidents::add_update(c, id, ms(at), &message, ms(Utc::now())))
            .await
    }

    /// Incidents that started in `[from, to)`, plus those that started before `to` and
    /// are still open; oldest first, with their updates.
    pub async fn incidents_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Incident>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(pg::incidents::between(pg, ms(from), ms(to))).await;
        }
        self.read(move |c| incidents::between(c, ms(from), ms(to)))
            .await
    }

    /// Open incidents, oldest first, with their updates.
    pub async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(pg::incidents::open_list(pg)).await;
        }
        self.read(incidents::open_list).await
    }

    /// Save (insert or replace) a monitor's state.
    pub async fn save_monitor_state(&self, row: MonitorStateRow) -> Result<(), StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(pg::records::save_state(pg, &row, ms(Utc::now())))
                .await;
        }
        self.write(move |c| records::save_state(c, &row, ms(Utc::now())))
            .await
    }

    /// Every saved monitor state, by namespace and name.
    pub async fn load_monitor_states(&self) -> Result<Vec<MonitorStateRow>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(pg::records::load_states(pg)).await;
        }
        self.read(records::load_states).await
    }

    /// Forget a monitor's state; returns whether there was one.
    pub async fn delete_monitor_state(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        if let Some(pg) = self.pg_open()? {
            return pg.write(pg::records::delete_state(pg, &ns, &name)).await;
        }
        self.write(move |c| records::delete_state(c, &ns, &name))
            .await
    }

    /// Every push monitor's record (generated token, last push).
    pub async fn push_rows(&self) -> Result<Vec<PushRow>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.read(pg::push::load(pg)).await;
        }
        self.read(push::load).await
    }

    /// Keep the token generated for a push monitor.
    pub async fn save_push_token(
        &self,
        namespace: &str,
        name: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        let (ns, name, token) = (namespace.to_string(), name.to_string(), token.to_string());
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(pg::push::save_token(pg, &ns, &name, &token, ms(Utc::now())))
                .await;
        }
        self.write(move |c| push::save_token(c, &ns, &name, &token, ms(Utc::now())))
            .await
    }

    /// Remember that a push monitor received a push at `at` (a later push is never
    /// replaced by an earlier one).
    pub async fn save_push_seen(
        &self,
        namespace: &str,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(pg::push::seen(pg, &ns, &name, ms(at), ms(Utc::now())))
                .await;
        }
        self.write(move |c| push::seen(c, &ns, &name, ms(at), ms(Utc::now())))
            .await
    }

    /// Forget a push monitor's record (its generated token stops existing); returns
    /// whether there was one.
    pub async fn delete_push_row(&self, namespace: &str, name: &str) -> Result<bool, StoreError> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        if let Some(pg) = self.pg_open()? {
            return pg.write(pg::push::delete(pg, &ns, &name)).await;
        }
        self.write(move |c| push::delete(c, &ns, &name)).await
    }

    /// Insert or update a cached resource (clearing any deletion mark). Refuses kind
    /// `Secret`: secret values never enter the database.
    pub async fn upsert_crd_cache(&self, entry: CrdCacheEntry) -> Result<(), StoreError> {
        if records::refused_kind(&entry.kind) {
            return Err(StoreError::SecretRefused {
                path: self.inner.label.clone(),
                namespace: entry.namespace,
                name: entry.name,
            });
        }
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(pg::records::upsert_crd(pg, &entry, ms(Utc::now())))
                .await;
        }
        self.write(move |c| records::upsert_crd(c, &entry, ms(Utc::now())))
            .await
    }

    /// Mark a cached resource deleted at `at`; returns whether it was cached.
    pub async fn mark_crd_deleted(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (kind, ns, name) = (kind.to_string(), namespace.to_string(), name.to_string());
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(pg::records::mark_crd_deleted(pg, &kind, &ns, &name, ms(at)))
                .await;
        }
        self.write(move |c| records::mark_crd_deleted(c, &kind, &ns, &name, ms(at)))
            .await
    }

    /// A cached resource, deleted or not.
    pub async fn crd_cache_entry(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<CachedCrd>, StoreError> {
        let (kind, ns, name) = (kind.to_string(), namespace.to_string(), name.to_string());
        if let Some(pg) = self.pg_open()? {
            return pg.read(pg::records::get_crd(pg, &kind, &ns, &name)).await;
        }
        self.read(move |c| records::get_crd(c, &kind, &ns, &name))
            .await
    }

    /// Queue `body` as the latest content of object `key`, replacing a pending body of
    /// the same key; returns the new version (versions only grow).
    pub async fn outbox_put(&self, key: &str, body: Vec<u8>) -> Result<i64, StoreError> {
        let key = key.to_string();
        if let Some(pg) = self.pg_open()? {
            return pg
                .write(pg::records::outbox_put(pg, &key, &body, ms(Utc::now())))
                .await;
        }
        self.write(move |c| records::outbox_put(c, &key, &body, ms(Utc::now())))
            .await
    }

    /// Up to `limit` pending uploads as `(key, body, version)`, oldest first.
    pub async fn outbox_pending(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>, i64)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if let Some(pg) = self.pg_open()? {
            return pg.read(pg::records::outbox_pending(pg, limit)).await;
        }
        self.read(move |c| records::outbox_pending(c, limit)).await
    }

    /// Mark `key` uploaded at `version`: deletes it only if no newer body was queued
    /// meanwhile. Returns whether it was deleted.
    pub async fn outbox_done(&self, key: &str, version: i64) -> Result<bool, StoreError> {
        let key = key.to_string();
        if let Some(pg) = self.pg_open()? {
            return pg.write(pg::records::outbox_done(pg, &key, version)).await;
        }
        self.write(move |c| records::outbox_done(c, &key, version))
            .await
    }

    /// Rollup of one monitor over `[from, to)`: raw heartbeats checked in the range plus
    /// hourly rollups whose hour starts in it (see the module `rollups` for p95).
    pub async fn rollup(
        &self,
        namespace: &str,
        name: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Rollup, StoreError> {
        let (ns, name) = (namespace.to_string(), name.to_string());
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(async {
                    let mut all = pg::rollups::monitor_rollups(
                        pg,
                        &ns,
                        &name,
                        ms(from),
                        ms(to),
                        Buckets::Whole,
                    )
                    .await?;
                    Ok(all.remove(&ms(from)).unwrap_or_default())
                })
                .await;
        }
        self.read(move |c| {
            let tx = c.unchecked_transaction()?;
            let (from, to) = (ms(from), ms(to));
            let mut all = rollups::monitor_rollups(&tx, &ns, &name, from, to, Buckets::Whole)?;
            Ok(all.remove(&from).unwrap_or_default())
        })
        .await
    }

    /// Hourly rollups of every monitor over `[from, to)`: by `namespace/name`, then by
    /// the hour's start (unix ms). Recent hours come from raw heartbeats, downsampled
    /// ones from stored rollups. Only hours with results appear.
    pub async fn hourly_rollups(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<String, BTreeMap<i64, Rollup>>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(pg::rollups::all_rollups(pg, ms(from), ms(to), HOUR_MS))
                .await;
        }
        self.read(move |c| all_rollups(c, ms(from), ms(to), HOUR_MS))
            .await
    }

    /// Daily (UTC) rollups of every monitor over `[from, to)`: by `namespace/name`, then
    /// by the day's start (unix ms). Only days with results appear.
    pub async fn daily_rollups(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<String, BTreeMap<i64, Rollup>>, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(pg::rollups::all_rollups(pg, ms(from), ms(to), DAY_MS))
                .await;
        }
        self.read(move |c| all_rollups(c, ms(from), ms(to), DAY_MS))
            .await
    }

    /// Average latency of up and flapping results since `since`, per `bucket` (buckets
    /// aligned to the unix epoch, oldest first), from raw heartbeats.
    pub async fn recent_latency(
        &self,
        namespace: &str,
        name: &str,
        since: DateTime<Utc>,
        bucket: TimeDelta,
    ) -> Result<Vec<LatencyPoint>, StoreError> {
        let bucket_ms = bucket.num_milliseconds();
        if bucket_ms <= 0 {
            return Err(StoreError::InvalidArgument {
                path: self.inner.label.clone(),
                message: format!("latency bucket must be positive, got {bucket_ms} ms"),
            });
        }
        let (ns, name) = (namespace.to_string(), name.to_string());
        if let Some(pg) = self.pg_open()? {
            return pg
                .read(pg::rollups::recent_latency(
                    pg,
                    &ns,
                    &name,
                    ms(since),
                    bucket_ms,
                ))
                .await;
        }
        self.read(move |c| rollups::recent_latency(c, &ns, &name, ms(since), bucket_ms))
            .await
    }

    /// Apply retention at `now`: delete raw heartbeats and rollups older than
    /// `heartbeats_days` and closed incidents that ended more than `incidents_days`
    /// ago; then, when downsampling is on, replace raw heartbeats older than
    /// `downsample_after_days` by rollups of `downsample_resolution`, merged into
    /// existing rows: hourly (the cutoff rounded down to the hour), or daily (rounded
    /// down to the UTC day; the hourly rows before it are merged into their day too). Works in short transactions, one monitor and at most one
    /// day at a time, so heartbeats keep being committed meanwhile.
    pub async fn apply_retention(
        &self,
        now: DateTime<Utc>,
        settings: &EffectiveSettings,
    ) -> Result<RetentionReport, StoreError> {
        if let Some(pg) = self.pg_open()? {
            return pg.write(pg::retention::apply(pg, ms(now), settings)).await;
        }
        let now = ms(now);
        let keep_from = now.saturating_sub(days_ms(settings.heartbeats_days));
        let incidents_from = now.saturating_sub(days_ms(settings.incidents_days));
        let mut report = RetentionReport::default();

        let batch = u64::try_from(retention::DELETE_BATCH).unwrap_or(u64::MAX);
        for (ns, name) in self.read(|c| rollups::monitors_in(c, "heartbeats")).await? {
            loop {
                let (ns, name) = (ns.clone(), name.clone());
                let n = self
                    .write(move |c| retention::expire_heartbeats(c, &ns, &name, keep_from))
                    .await?;
                report.deleted_heartbeats += n;
                if n < batch {
                    break;
                }
            }
        }
        for (ns, name) in self
            .read(|c| rollups::monitors_in(c, "heartbeat_rollups"))
            .await?
        {
            report.deleted_rollups += self
                .write(move |c| retention::expire_rollups(c, &ns, &name, keep_from))
                .await?;
        }
        report.deleted_incidents = self
            .write(move |c| retention::expire_incidents(c, incidents_from))
            .await?;

        if settings.downsample_enabled {
            let resolution = settings.downsample_resolution;
            let cutoff = retention::downsample_cutoff(
                now,
                days_ms(settings.downsample_after_days),
                resolution,
            );
            let mut monitors = self.read(|c| rollups::monitors_in(c, "heartbeats")).await?;
            if resolution == DownsampleResolution::Daily {
                // Hourly rows of earlier runs (or of the hourly resolution) become daily too.
                monitors = self.read(rollups::all_monitors).await?;
            }
            for (ns, name) in monitors {
                loop {
                    let (ns, name) = (ns.clone(), name.clone());
                    let (raw, hours) = match resolution {
                        DownsampleResolution::Hourly => {
                            let n = self
                                .write(move |c| retention::downsample_batch(c, &ns, &name, cutoff))
                                .await?;
                            (n, 0)
                        }
                        DownsampleResolution::Daily => {
                            self.write(move |c| {
                                retention::downsample_day_batch(c, &ns, &name, cutoff)
                            })
                            .await?
                        }
                    };
                    if raw == 0 && hours == 0 {
                        break;
                    }
                    report.downsampled_heartbeats += raw;
                    report.merged_hourly_rollups += hours;
                }
            }
        }
        tracing::debug!(database = %self.inner.label, ?report, "retention applied");
        Ok(report)
    }
}

/// Rollups of every monitor in buckets of `size` ms.
fn all_rollups(
    c: &Connection,
    from: i64,
    to: i64,
    size: i64,
) -> Result<BTreeMap<String, BTreeMap<i64, Rollup>>, Fail> {
    let tx = c.unchecked_transaction()?;
    let mut out = BTreeMap::new();
    for (ns, name) in rollups::all_monitors(&tx)? {
        let buckets = rollups::monitor_rollups(&tx, &ns, &name, from, to, Buckets::Every(size))?;
        if !buckets.is_empty() {
            out.insert(monitor_key(&ns, &name), buckets);
        }
    }
    Ok(out)
}

/// Configure the write connection: WAL (files only), `synchronous=NORMAL`, busy
/// timeout, foreign keys.
fn configure_writer(conn: Connection, file: bool, label: &str) -> rusqlite::Result<Connection> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if file {
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(database = %label, mode, "sqlite refused WAL mode; readers may wait for the writer");
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}
