//! The store backends every storage scenario runs against (one suite, two backends, as
//! Gatus does): SQLite files in a temporary folder and fresh databases on the test
//! PostgreSQL server ([`super::postgres`]), with direct queries to check what was
//! stored (`$1`-style parameters, which SQLite reads as numbered ones too).
#![allow(dead_code)]

use std::path::PathBuf;

use kubekuma_agent::store::migrations::MIGRATIONS;
use kubekuma_agent::store::pg::config::PasswordSource;
use kubekuma_agent::store::pg::migrations::MIGRATIONS as PG_MIGRATIONS;
use kubekuma_agent::store::{Store, StoreError};

fn raw(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// A store backend under test: every storage scenario below runs against each one
/// [`backends`] returns (one suite, two backends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary folder.
    Sqlite,
    /// A fresh database on the test PostgreSQL server (`common::postgres`).
    Postgres,
}

/// SQLite, plus PostgreSQL unless `KUBEKUMA_SKIP_POSTGRES=1` leaves it out.
pub fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Sqlite];
    if super::postgres::enabled() {
        all.push(Backend::Postgres);
    }
    all
}

/// One empty database of a backend: opened (and reopened, for restarts) as often as a
/// scenario needs, and queried directly to check what was stored.
pub struct Db {
    pub backend: Backend,
    /// The SQLite file (in `_dir`).
    pub path: PathBuf,
    /// The PostgreSQL database's URL.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.backend)
    }
}

impl Db {
    pub async fn new(backend: Backend) -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Sqlite => String::new(),
            Backend::Postgres => super::postgres::fresh_database().await,
        };
        Db {
            backend,
            path: dir.path().join("data").join("kubekuma.db"),
            url,
            _dir: dir,
        }
    }

    pub async fn open(&self) -> Store {
        self.try_open().await.unwrap()
    }

    /// How the store names the database in messages.
    pub fn name(&self) -> String {
        match self.backend {
            Backend::Sqlite => self.path.display().to_string(),
            Backend::Postgres => self.url.clone(),
        }
    }

    pub async fn try_open(&self) -> Result<Store, StoreError> {
        match self.backend {
            Backend::Sqlite => Store::open(&self.path),
            Backend::Postgres => Store::open_postgres(&self.url, &PasswordSource::default()).await,
        }
    }

    /// The migrations this backend knows.
    pub fn migrations(&self) -> usize {
        match self.backend {
            Backend::Sqlite => MIGRATIONS.len(),
            Backend::Postgres => PG_MIGRATIONS.len(),
        }
    }

    /// Run a statement directly (SQL with `$1`-style parameters, which SQLite reads
    /// as numbered ones too); the rows changed, or the error's text.
    pub async fn execute(&self, sql: &str, args: &[i64]) -> Result<u64, String> {
        match self.backend {
            Backend::Sqlite => raw(&self.path)
                .execute(sql, rusqlite::params_from_iter(args))
                .map(|n| n as u64)
                .map_err(|e| e.to_string()),
            Backend::Postgres => {
                let c = super::postgres::connect(&self.url).await.unwrap();
                let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                    .iter()
                    .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                c.execute(sql, &args).await.map_err(|e| format!("{e:?}"))
            }
        }
    }

    /// The first column of every row of a query, as integers (`COUNT(*)`, times, IDs).
    pub async fn ints(&self, sql: &str, args: &[i64]) -> Vec<Option<i64>> {
        match self.backend {
            Backend::Sqlite => {
                let c = raw(&self.path);
                let mut st = c.prepare(sql).unwrap();
                st.query_map(rusqlite::params_from_iter(args), |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            Backend::Postgres => {
                let c = super::postgres::connect(&self.url).await.unwrap();
                let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                    .iter()
                    .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                c.query(sql, &args)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            }
        }
    }

    /// One integer.
    pub async fn int(&self, sql: &str, args: &[i64]) -> i64 {
        self.ints(sql, args).await[0].unwrap()
    }

    /// One text value.
    pub async fn text(&self, sql: &str, args: &[i64]) -> String {
        match self.backend {
            Backend::Sqlite => raw(&self.path)
                .query_row(sql, rusqlite::params_from_iter(args), |r| r.get(0))
                .unwrap(),
            Backend::Postgres => {
                let c = super::postgres::connect(&self.url).await.unwrap();
                let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                    .iter()
                    .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                c.query_one(sql, &args).await.unwrap().get(0)
            }
        }
    }

    /// Every table's name.
    pub async fn tables(&self) -> Vec<String> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            Backend::Postgres => {
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() ORDER BY 1"
            }
        };
        match self.backend {
            Backend::Sqlite => {
                let c = raw(&self.path);
                let mut st = c.prepare(sql).unwrap();
                st.query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            Backend::Postgres => {
                let c = super::postgres::connect(&self.url).await.unwrap();
                c.query(sql, &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            }
        }
    }
}
