//! The PostgreSQL backend of [`Store`](super::Store): the same operations as the SQLite
//! files beside it, one file per concern (`records.rs`, `incidents.rs`, …), on a pool
//! of tokio-postgres connections (TLS through rustls), with numbered migrations of its
//! own ([`migrations`]) and a task that writes heartbeats in batches (`writer.rs`).
//!
//! `Store`'s public methods dispatch here when the store is PostgreSQL; an operation
//! not written for PostgreSQL would fall through to the SQLite code, which refuses it
//! with [`StoreError::NotOnPostgres`] (none is left). `DATABASE_URL=postgres://…` opens
//! it through `Store::connect`.

pub(crate) mod api_silences;
pub(crate) mod audit;
pub mod config;
pub(crate) mod deliveries;
pub(crate) mod incidents;
pub mod leader;
pub mod migrations;
pub(crate) mod push;
pub(crate) mod records;
pub(crate) mod retention;
pub(crate) mod rollups;
pub(crate) mod sessions;
pub(crate) mod writer;

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::convert::{Fail, ms};
use super::writer::WriterStats;

/// The connection pool.
pub(crate) type Pool = deadpool_postgres::Pool;

/// Most connections one store holds for its queries and writes.
const POOL_SIZE: usize = 16;
/// Most connections of the pool for the writes of every check (heartbeat batches and
/// monitor states), whose sessions commit without waiting for the WAL flush.
const BULK_POOL_SIZE: usize = 4;
/// Longest wait for a free connection (or a new one).
const POOL_WAIT: Duration = Duration::from_secs(30);

/// An open PostgreSQL store.
pub(crate) struct Pg {
    pub(crate) pool: Pool,
    /// The pool of the writes every check makes (heartbeat batches, monitor states):
    /// its sessions run with `synchronous_commit = off`, see [`bulk_pool`].
    pub(crate) bulk: Pool,
    pub(crate) tx: mpsc::UnboundedSender<writer::Command>,
    pub(crate) stats: Arc<WriterStats>,
    pub(crate) label: String,
    /// How to open a connection of its own (the leader election's).
    pub(crate) connect: Box<(
        tokio_postgres::Config,
        tokio_postgres_rustls::MakeRustlsConnect,
    )>,
}

/// What [`open`] hands the store.
pub(crate) struct Opened {
    pub(crate) pg: Pg,
    pub(crate) label: String,
}

/// Connect, migrate under the advisory lock, check that the database can be written,
/// and start the heartbeat task (on the current tokio runtime).
pub(crate) async fn open(
    url: &str,
    password: &config::PasswordSource,
    stats: Arc<WriterStats>,
) -> Result<Opened, StoreError> {
    let settings = config::parse(url, password).map_err(|e| StoreError::PostgresConfig {
        message: e.to_string(),
    })?;
    let label = settings.label.clone();
    let tls = config::tls_connector(&settings).map_err(|e| StoreError::PostgresConfig {
        message: e.to_string(),
    })?;
    let connect = Box::new((settings.config.clone(), tls.clone()));
    let bulk = bulk_pool(&settings.config, tls.clone(), &label)?;
    let manager = deadpool_postgres::Manager::from_config(
        settings.config,
        tls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .build()
        .map_err(|e| StoreError::PostgresConfig {
            message: format!("database url {label}: {e}"),
        })?;
    let mut client = pool.get().await.map_err(|e| StoreError::Connect {
        path: label.clone(),
        cause: pool_message(&e),
    })?;
    let applied = migrations::migrate(&mut client, ms(Utc::now()))
        .await
        .map_err(|e| match e {
            migrations::MigrateError::Newer { found, known } => StoreError::NewerSchema {
                path: label.clone(),
                found,
                known,
            },
            migrations::MigrateError::Sql { version, source } => StoreError::PgMigration {
                path: label.clone(),
                version,
                message: error_message(&source),
            },
        })?;
    if applied > 0 {
        tracing::info!(database = %label, applied, "applied store migrations");
    }
    let read_only: String = client
        .query_one("SHOW transaction_read_only", &[])
        .await
        .map_err(|e| StoreError::Connect {
            path: label.clone(),
            cause: error_message(&e),
        })?
        .get(0);
    if read_only == "on" {
        return Err(StoreError::NotWritable {
            path: label,
            cause: "the server only accepts reads (a standby, or default_transaction_read_only)"
                .into(),
        });
    }
    drop(client);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(writer::run(bulk.clone(), rx, stats.clone(), label.clone()));
    Ok(Opened {
        pg: Pg {
            pool,
            bulk,
            tx,
            stats,
            label: label.clone(),
            connect,
        },
        label,
    })
}

/// The pool of the writes every check makes (heartbeat batches, monitor states). Its
/// sessions run with `synchronous_commit = off`: the server answers a commit before its
/// WAL reaches the disk and flushes it within about 0.6 s (three `wal_writer_delay`s),
/// the durability SQLite's `synchronous=NORMAL` gives the same rows. The agent
/// crashing loses none of them; the server crashing may lose the last fraction of a
/// second (never a torn row). Waiting for an fsync per commit instead costs each check
/// whose state changed two flushes in a row (a monitor's first check at start: 10,000
/// monitors took minutes to record their first states), since the agent records a
/// check's results one after the other. Incidents, deliveries, sessions and every other
/// write keep the server's own setting (the main pool).
fn bulk_pool(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    label: &str,
) -> Result<Pool, StoreError> {
    let manager = deadpool_postgres::Manager::from_config(
        config.clone(),
        tls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(BULK_POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .post_create(deadpool_postgres::Hook::async_fn(|client, _| {
            Box::pin(async move {
                client
                    .batch_execute("SET synchronous_commit = off")
                    .await
                    .map_err(deadpool_postgres::HookError::Backend)
            })
        }))
        .build()
        .map_err(|e| StoreError::PostgresConfig {
            message: format!("database url {label}: {e}"),
        })
}

impl Pg {
    /// A connection of the bulk pool (see [`bulk_pool`]).
    pub(crate) async fn bulk_client(&self) -> Result<deadpool_postgres::Client, Fail> {
        self.bulk.get().await.map_err(|e| pool_fail(&e))
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client, Fail> {
        self.pool.get().await.map_err(|e| pool_fail(&e))
    }

    /// Run a write after every heartbeat queued before it (as SQLite's writer thread
    /// does); counts it in [`WriterStats::writes`] whatever its outcome (a failed write
    /// may have changed nothing, but readers only compare counts), and once in
    /// [`WriterStats::round_trips`].
    pub(crate) async fn write<T>(
        &self,
        f: impl Future<Output = Result<T, Fail>>,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(writer::Command::Barrier(reply)).is_ok() {
            let _ = rx.await;
        }
        let out = f.await;
        self.stats.writes.fetch_add(1, Ordering::SeqCst);
        self.note_reach(&out);
        self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
        out.map_err(|e| e.at(&self.label))
    }

    /// Run a read (counted once in [`WriterStats::round_trips`]).
    pub(crate) async fn read<T>(
        &self,
        f: impl Future<Output = Result<T, Fail>>,
    ) -> Result<T, StoreError> {
        let out = f.await;
        self.note_reach(&out);
        self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
        out.map_err(|e| e.at(&self.label))
    }

    /// Whether the server was reached, from an operation's outcome (no round trip of
    /// its own): a connection failure sets [`WriterStats::unreachable`] (readiness says
    /// why until a statement reaches the server again), anything the server answered,
    /// an error included, clears it.
    fn note_reach<T>(&self, out: &Result<T, Fail>) {
        match out {
            Err(Fail::PgUnreachable(cause)) => self.stats.set_unreachable(Some(format!(
                "database {} is unreachable: {cause}",
                self.label
            ))),
            Err(Fail::Panicked | Fail::Batch(_)) => {}
            _ => self.stats.set_unreachable(None),
        }
    }

    /// Queue a heartbeat for the writer task; `false` when the task is gone.
    pub(crate) fn queue(&self, command: writer::Command) -> bool {
        self.tx.send(command).is_ok()
    }

    /// Commit what is queued and stop the writer task, then close the pool.
    pub(crate) async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(writer::Command::Close(reply)).is_ok() {
            let _ = rx.await;
        }
        self.pool.close();
        self.bulk.close();
    }
}

impl Pg {
    /// For tests and drills (`Store::refuse_writes`): make the database refuse writes
    /// (`default_transaction_read_only`, as a database switched to read-only or a
    /// standby does) or accept them again, for every connection from now on (idle
    /// pooled connections are dropped so that new ones take the setting). Needs the
    /// database's owner or a superuser.
    pub(crate) async fn refuse_writes(&self, refuse: bool) -> Result<(), Fail> {
        let c = self.client().await?;
        let name: String = c
            .query_one("SELECT current_database()::text", &[])
            .await?
            .try_get(0)?;
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let value = if refuse { "on" } else { "off" };
        // This session may already be read-only (refused before): lift that first.
        // (Two round trips: statements sent together share one implicit transaction.)
        c.batch_execute("SET default_transaction_read_only = off")
            .await?;
        c.batch_execute(&format!(
            "ALTER DATABASE {quoted} SET default_transaction_read_only = {value}"
        ))
        .await?;
        drop(c);
        self.pool.retain(|_, _| false);
        self.bulk.retain(|_, _| false);
        Ok(())
    }
}

/// PostgreSQL refuses NUL in text: it becomes U+FFFD (a message from a target's body
/// must not lose a whole batch).
pub(crate) fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A tokio-postgres error as text: the server's message and SQLSTATE, or the client's
/// error with its cause (never the URL or a password: tokio-postgres does not repeat
/// them, and neither does this).
pub(crate) fn error_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let cause = config::source_text(e);
    if cause.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {cause}")
    }
}

/// Whether an error means the server could not be reached (no connection, the
/// connection lost or refused, the server shutting down, crashed or starting up), as
/// opposed to an answer of the server (an SQL error) or a value this side could not
/// convert.
pub(crate) fn is_unreachable(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        let code = code.code();
        // Class 08: connection exception; 57P01–57P03: admin or crash shutdown, cannot
        // connect now.
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    if e.is_closed() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    // tokio-postgres' own words for a connect or read timeout and a failed connection
    // (its error kinds are private).
    let text = e.to_string();
    text.starts_with("timeout") || text.starts_with("error connecting")
}

/// A pool error as a [`Fail`]: [`Fail::PgUnreachable`] when no connection could be had
/// from the server in time.
pub(crate) fn pool_fail(e: &deadpool_postgres::PoolError) -> Fail {
    let unreachable = match e {
        deadpool_postgres::PoolError::Timeout(_) => true,
        deadpool_postgres::PoolError::Backend(e) => is_unreachable(e),
        _ => false,
    };
    if unreachable {
        Fail::PgUnreachable(pool_message(e))
    } else {
        Fail::Pg(pool_message(e))
    }
}

/// A pool error as text.
pub(crate) fn pool_message(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => error_message(e),
        other => other.to_string(),
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_unreachable(&e) {
            Fail::PgUnreachable(error_message(&e))
        } else {
            Fail::Pg(error_message(&e))
        }
    }
}
