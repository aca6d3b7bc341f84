//! Where the database lives: `DATABASE_URL` parsing (`sqlite:PATH`, `sqlite://PATH`,
//! `sqlite::memory:`; `postgres://` and `postgresql://` are recognised here and parsed by
//! `pg::config`).

use std::path::PathBuf;

use super::StoreError;

/// A parsed `DATABASE_URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// A database file (created with its folders when missing).
    File(PathBuf),
    /// A private in-memory database, gone when the store closes.
    Memory,
}

/// Parse a `DATABASE_URL`.
///
/// `sqlite:PATH` and `sqlite://PATH` name a file (`sqlite:///abs/x.db` is absolute,
/// `sqlite://data/x.db` relative); `sqlite::memory:` (also `sqlite://:memory:`) is an
/// in-memory database. Any other scheme is refused here (`postgres://` is opened by
/// `Store::connect` instead); the error names only the scheme, never the rest of the URL
/// (it may hold credentials).
pub fn parse_database_url(url: &str) -> Result<DatabaseLocation, StoreError> {
    let trimmed = url.trim();
    let Some(rest) = strip_prefix_ignore_case(trimmed, "sqlite:") else {
        return Err(StoreError::UnsupportedUrl {
            scheme: scheme_of(trimmed),
        });
    };
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path == ":memory:" {
        return Ok(DatabaseLocation::Memory);
    }
    if path.is_empty() {
        return Err(StoreError::EmptyPath);
    }
    Ok(DatabaseLocation::File(PathBuf::from(path)))
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`, any case).
pub fn is_postgres(url: &str) -> bool {
    let url = url.trim();
    ["postgres://", "postgresql://"]
        .iter()
        .any(|p| strip_prefix_ignore_case(url, p).is_some())
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The scheme of a URL for error messages, or a placeholder when there is none.
fn scheme_of(url: &str) -> String {
    match url.split_once(':') {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            scheme.to_ascii_lowercase()
        }
        _ => "(none)".to_string(),
    }
}
