//! What `kubekuma hash-password` and `kubekuma api-key create` print: a Secret holding
//! the argon2id hash and the LocalUser or ApiKey pointing at it, as multi-document YAML
//! for `kubectl apply -f -` or a folder of manifests.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use kubekuma_crds::auth::Role;

/// Key of the password hash in a LocalUser's Secret.
pub const PASSWORD_KEY: &str = "passwordHash";
/// Key of the key hash in an ApiKey's Secret.
pub const KEY_HASH_KEY: &str = "keyHash";

/// A YAML scalar: JSON's double-quoted strings are valid YAML.
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A Kubernetes resource name from free text: lowercase letters, digits and `-`, at most
/// 63 characters (minus room for a suffix). `None` when nothing is left.
pub fn resource_name(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out: String = out.chars().take(48).collect();
    let out = out.trim_matches('-').to_string();
    (!out.is_empty()).then_some(out)
}

/// Whether `name` is a DNS-1123 label (a namespace or resource name).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `username` is acceptable for a LocalUser (as validation checks it).
pub fn valid_username(username: &str) -> bool {
    !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

/// An `--expires` that is not a usable expiry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// Neither RFC 3339 nor a number with a unit.
    #[error("expected RFC 3339 or a duration like 30d, got {0:?}")]
    Syntax(String),
    /// A number with an unknown unit, or not positive.
    #[error("expected RFC 3339 or a positive duration in m, h, d or w (e.g. 30d), got {0:?}")]
    Duration(String),
    /// Past the end of the calendar.
    #[error("{0:?} is too far in the future")]
    TooFar(String),
}

/// An expiry: RFC 3339, or a duration from `now` such as `30d`, `12h`, `90m`, `2w`.
pub fn parse_expiry(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ExpiryError> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| ExpiryError::Syntax(text.to_string()))?;
    let d = match unit {
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => None,
    }
    .filter(|d| *d > Duration::zero())
    .ok_or_else(|| ExpiryError::Duration(text.to_string()))?;
    now.checked_add_signed(d)
        .ok_or_else(|| ExpiryError::TooFar(text.to_string()))
}

fn secret_yaml(name: &str, namespace: &str, key: &str, hash: &str, what: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  name: {name}\n  namespace: {namespace}\n\
         type: Opaque\n\
         stringData:\n  # {what}\n  {key}: {hash}\n",
        name = q(name),
        namespace = q(namespace),
        hash = q(hash),
    )
}

/// A LocalUser and its password Secret (`<name>-credentials`, key `passwordHash`).
pub fn local_user_yaml(
    name: &str,
    namespace: &str,
    username: &str,
    role: Role,
    hash: &str,
) -> String {
    let secret = format!("{name}-credentials");
    format!(
        "{}---\n\
         apiVersion: monitoring.kubekuma.io/v1\n\
         kind: LocalUser\n\
         metadata:\n  name: {name}\n  namespace: {namespace}\n\
         spec:\n  username: {username}\n  role: {role}\n  passwordHashSecretRef:\n    name: {secret}\n    key: {PASSWORD_KEY}\n",
        secret_yaml(
            &secret,
            namespace,
            PASSWORD_KEY,
            hash,
            "argon2id hash of the password (the password itself is not stored)"
        ),
        name = q(name),
        namespace = q(namespace),
        username = q(username),
        role = role.as_str(),
        secret = q(&secret),
    )
}

/// Whether `v` is a Kubernetes label value (at most 63 characters of letters, digits,
/// `-`, `_`, `.`, starting and ending with a letter or digit), such as an ApiKey's owner.
pub fn valid_label_value(v: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && alnum(v.chars().next())
        && alnum(v.chars().last())
}

/// An ApiKey with the key's public identifier `key_id`, its `owner` (the
/// `monitoring.kubekuma.io/owner` label `spec.auth.apiKeys.maxPerUser` counts by), and its
/// hash Secret (`<name>-api-key`, key `keyHash`).
#[allow(clippy::too_many_arguments)]
pub fn api_key_yaml(
    name: &str,
    namespace: &str,
    display_name: &str,
    role: Role,
    expires_at: Option<DateTime<Utc>>,
    owner: Option<&str>,
    key_id: &str,
    hash: &str,
) -> String {
    let secret = format!("{name}-api-key");
    let expires = expires_at
        .map(|t| {
            format!(
                "  expiresAt: {}\n",
                q(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
            )
        })
        .unwrap_or_default();
    let labels = owner
        .map(|o| format!("  labels:\n    monitoring.kubekuma.io/owner: {}\n", q(o)))
        .unwrap_or_default();
    format!(
        "{}---\n\
         apiVersion: monitoring.kubekuma.io/v1\n\
         kind: ApiKey\n\
         metadata:\n  name: {name}\n  namespace: {namespace}\n{labels}\
         spec:\n  name: {display}\n  role: {role}\n  keyId: {key_id}\n  keyHashSecretRef:\n    name: {secret}\n    key: {KEY_HASH_KEY}\n{expires}",
        secret_yaml(
            &secret,
            namespace,
            KEY_HASH_KEY,
            hash,
            "argon2id hash of the API key (the key itself is not stored)"
        ),
        name = q(name),
        namespace = q(namespace),
        display = q(display_name),
        key_id = q(key_id),
        role = role.as_str(),
        secret = q(&secret),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            resource_name("CI deploy bot!").as_deref(),
            Some("ci-deploy-bot")
        );
        assert_eq!(resource_name("--"), None);
        assert!(valid_name("kubekuma") && !valid_name("Kube") && !valid_name("-a"));
        assert!(valid_username("admin@example.com") && !valid_username("a b"));
        assert!(valid_label_value("ann.b_c-1") && !valid_label_value("a@b"));
        assert!(!valid_label_value("-a") && !valid_label_value(&"a".repeat(64)));
    }

    #[test]
    fn expiries() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let in_30d = parse_expiry("30d", now).unwrap_or_default();
        assert_eq!(in_30d - now, Duration::days(30));
        assert_eq!(
            parse_expiry("2026-02-01T10:00:00+01:00", now).map(|t| t.to_rfc3339()),
            Ok("2026-02-01T09:00:00+00:00".to_string())
        );
        assert!(parse_expiry("30x", now).is_err());
        assert!(parse_expiry("0d", now).is_err());
        assert!(parse_expiry("soon", now).is_err());
    }
}
