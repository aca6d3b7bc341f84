//! How the console pages write times and path segments, shared by every page group.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A time as the default theme's `date` filter writes it (`Dec 7, 2026 21:04 UTC`).
pub fn theme_date(t: DateTime<Utc>) -> String {
    t.format("%b %-d, %Y %H:%M UTC").to_string()
}

/// `s` percent-encoded as one path segment (unreserved characters kept).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The RFC 3339 time in the field `k` of an API answer's JSON object.
pub fn json_time(v: &Value, k: &str) -> Option<DateTime<Utc>> {
    v.get(k)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}
