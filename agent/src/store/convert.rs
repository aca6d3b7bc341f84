//! Conversions between Rust values and columns (times as unix milliseconds, enums as
//! their stored names), and the internal error that store operations return before the
//! database path is attached.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::StoreError;

/// An operation's failure, before [`Fail::at`] names the database.
#[derive(Debug)]
pub(crate) enum Fail {
    Sql(rusqlite::Error),
    IncidentNotFound(i64),
    InvalidValue {
        column: &'static str,
        value: String,
    },
    SecretRefused {
        namespace: String,
        name: String,
    },
    Batch(String),
    Panicked,
    /// A PostgreSQL statement failed (the message never holds the URL).
    Pg(String),
    /// PostgreSQL could not be reached: no connection, the connection lost, the server
    /// shutting down or starting, no pooled connection in time. The same public error
    /// as [`Fail::Pg`]; the store also reports it as the database being unreachable.
    PgUnreachable(String),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl Fail {
    /// The public error, naming the database.
    pub(crate) fn at(self, path: &str) -> StoreError {
        let path = path.to_string();
        match self {
            Fail::Sql(source) => StoreError::Sqlite { path, source },
            Fail::IncidentNotFound(id) => StoreError::IncidentNotFound { path, id },
            Fail::InvalidValue { column, value } => StoreError::InvalidValue {
                path,
                column,
                value,
            },
            Fail::SecretRefused { namespace, name } => StoreError::SecretRefused {
                path,
                namespace,
                name,
            },
            Fail::Batch(message) => StoreError::HeartbeatBatch { path, message },
            Fail::Panicked => StoreError::Panicked { path },
            Fail::Pg(message) | Fail::PgUnreachable(message) => {
                StoreError::Postgres { path, message }
            }
        }
    }
}

/// Unix milliseconds of a time.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored time.
pub(crate) fn time(column: &'static str, v: i64) -> Result<DateTime<Utc>, Fail> {
    DateTime::from_timestamp_millis(v).ok_or_else(|| Fail::InvalidValue {
        column,
        value: v.to_string(),
    })
}

/// An optional stored time.
pub(crate) fn opt_time(
    column: &'static str,
    v: Option<i64>,
) -> Result<Option<DateTime<Utc>>, Fail> {
    v.map(|v| time(column, v)).transpose()
}

/// A stored enum name (`up`, `dnsServfail`, …) parsed with the type's serde spelling,
/// which is the spelling its `as_str` writes.
pub(crate) fn parse_enum<T: DeserializeOwned>(column: &'static str, s: &str) -> Result<T, Fail> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        Fail::InvalidValue {
            column,
            value: s.to_string(),
        }
    })
}

/// An optional stored enum name.
pub(crate) fn parse_opt_enum<T: DeserializeOwned>(
    column: &'static str,
    s: Option<String>,
) -> Result<Option<T>, Fail> {
    s.map(|s| parse_enum(column, &s)).transpose()
}

/// A stored count.
pub(crate) fn count(column: &'static str, v: i64) -> Result<u32, Fail> {
    u32::try_from(v).map_err(|_| Fail::InvalidValue {
        column,
        value: v.to_string(),
    })
}

/// A JSON column.
pub(crate) fn json(
    column: &'static str,
    s: Option<String>,
) -> Result<Option<serde_json::Value>, Fail> {
    s.map(|s| serde_json::from_str(&s).map_err(|_| Fail::InvalidValue { column, value: s }))
        .transpose()
}

/// Milliseconds in `days` days (saturating).
pub(crate) fn days_ms(days: i64) -> i64 {
    days.saturating_mul(86_400_000)
}
