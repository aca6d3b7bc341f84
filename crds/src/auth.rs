//! `LocalUser` and `ApiKey`: who may use the admin API. Secrets hold only hashes.

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, SecretKeyRef};

/// Admin API roles.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Monitors and incidents; read settings and users.
    Editor,
    /// Read monitors, incidents and settings.
    Viewer,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }
}

/// Second-factor requirement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MfaMode {
    /// No TOTP.
    Disabled,
    /// TOTP when the user has a secret.
    Optional,
    /// TOTP always.
    Required,
}

/// Second-factor settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mfa {
    /// Requirement. Default disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MfaMode>,
    /// Secret key holding the base32 TOTP secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_secret_ref: Option<SecretKeyRef>,
}

/// A user of the admin API.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "monitoring.kubekuma.io",
    version = "v1",
    kind = "LocalUser",
    namespaced,
    status = "LocalUserStatus",
    shortname = "kuser",
    category = "kubekuma",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Username","type":"string","jsonPath":".spec.username"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role"}"#,
    printcolumn = r#"{"name":"Disabled","type":"boolean","jsonPath":".spec.disabled"}"#,
    printcolumn = r#"{"name":"Last Login","type":"date","jsonPath":".status.lastLoginAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LocalUserSpec {
    /// Login name.
    pub username: String,
    /// Secret key holding the argon2id PHC hash of the password.
    pub password_hash_secret_ref: SecretKeyRef,
    /// Role.
    pub role: Role,
    /// Second factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<Mfa>,
    /// Refuse logins. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// What the agent reports about a user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalUserStatus {
    /// The `metadata.generation` the agent last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Last successful login (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login_at: Option<String>,
    /// Whether a TOTP secret is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_enabled: Option<bool>,
}

/// A key for programmatic access to the admin API.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "monitoring.kubekuma.io",
    version = "v1",
    kind = "ApiKey",
    namespaced,
    status = "ApiKeyStatus",
    shortname = "kkey",
    category = "kubekuma",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Key Name","type":"string","jsonPath":".spec.name"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role"}"#,
    printcolumn = r#"{"name":"Expires","type":"date","jsonPath":".spec.expiresAt"}"#,
    printcolumn = r#"{"name":"Last Used","type":"date","jsonPath":".status.lastUsedAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// Human-readable key name: at most 200 characters, no control, zero-width or
    /// bidirectional override characters.
    pub name: String,
    /// Role the key acts with.
    pub role: Role,
    /// Secret key holding the argon2 hash of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash_secret_ref: Option<SecretKeyRef>,
    /// The key's public identifier: the first 12 characters after `kk_live_`/`kk_test_`
    /// (URL-safe base64), unique across ApiKeys. A presented key is looked up by it
    /// before any hash is computed; `kubekuma api-key create` writes it. Keys without one
    /// (older manifests) are still verified, at a higher cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{12}$"))]
    pub key_id: Option<String>,
    /// Expiry (RFC 3339); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Refuse the key. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// What the agent reports about a key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// The `metadata.generation` the agent last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Last authenticated use (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

/// Length of an API key's public identifier ([`ApiKeySpec::key_id`]).
pub const KEY_ID_LEN: usize = 12;

/// Whether `id` is a well-formed API key identifier: [`KEY_ID_LEN`] characters of the
/// URL-safe base64 alphabet (`A-Z`, `a-z`, `0-9`, `-`, `_`).
pub fn valid_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
