//! `NotificationProvider` (where alerts go) and `NotificationPolicy` (which alerts go where).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, MonitorSelector, RefEntry, SecretKeyRef};
use crate::compat::Headers;

/// A destination for notifications. Credentials come only from Secret references.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "monitoring.kubekuma.io",
    version = "v1",
    kind = "NotificationProvider",
    namespaced,
    status = "ProviderStatus",
    shortname = "knp",
    category = "kubekuma",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Enabled","type":"boolean","jsonPath":".spec.enabled"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name":"Last Delivery","type":"string","jsonPath":".status.lastDelivery.status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NotificationProviderSpec {
    /// Which service; `spec.config` must hold the block of the same name.
    #[serde(rename = "type")]
    pub type_: ProviderType,
    /// Whether notifications are sent. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Provider settings, keyed by type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ProviderConfig>,
    /// Slack settings (original implementation's place, outside `config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackConfig>,
    /// Discord settings (original implementation's place, outside `config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordConfig>,
    /// Webhook settings (original implementation's place, outside `config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
}

/// The eight notification services.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProviderType {
    /// Slack incoming webhook.
    Slack,
    /// Discord webhook.
    Discord,
    /// Telegram Bot API.
    Telegram,
    /// E-mail over SMTP.
    Smtp,
    /// Generic HTTP webhook.
    Webhook,
    /// Gotify server.
    Gotify,
    /// Pushover.
    Pushover,
    /// Apprise (CLI or API server).
    Apprise,
}

impl ProviderType {
    /// The name used in manifests, metrics and the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Slack => "slack",
            ProviderType::Discord => "discord",
            ProviderType::Telegram => "telegram",
            ProviderType::Smtp => "smtp",
            ProviderType::Webhook => "webhook",
            ProviderType::Gotify => "gotify",
            ProviderType::Pushover => "pushover",
            ProviderType::Apprise => "apprise",
        }
    }
}

impl std::fmt::Display for ProviderType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Provider settings, keyed by provider type.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfig {
    /// Slack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackConfig>,
    /// Discord.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordConfig>,
    /// Telegram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramConfig>,
    /// SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpConfig>,
    /// Webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// Gotify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gotify: Option<GotifyConfig>,
    /// Pushover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushover: Option<PushoverConfig>,
    /// Apprise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apprise: Option<AppriseConfig>,
}

/// Slack incoming webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackConfig {
    /// Secret key holding the webhook URL.
    pub webhook_url_secret_ref: SecretKeyRef,
    /// Channel override, e.g. `#alerts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Sender name override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Sender icon, e.g. `:rotating_light:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_emoji: Option<String>,
}

/// Discord webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscordConfig {
    /// Secret key holding the webhook URL.
    pub webhook_url_secret_ref: SecretKeyRef,
    /// Sender name override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Sender avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// Telegram message formatting.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TelegramParseMode {
    /// MarkdownV2.
    MarkdownV2,
    /// Legacy Markdown.
    Markdown,
    /// HTML.
    #[serde(rename = "HTML")]
    Html,
}

/// Telegram Bot API `sendMessage`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelegramConfig {
    /// Secret key holding the bot token.
    pub bot_token_secret_ref: SecretKeyRef,
    /// Chat ID (number or `@channel`).
    pub chat_id: String,
    /// Message formatting. Default HTML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_mode: Option<TelegramParseMode>,
    /// Bot API base URL. Default `https://api.telegram.org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// SMTP connection security.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SmtpSecurity {
    /// Upgrade with STARTTLS (usually port 587).
    Starttls,
    /// Implicit TLS (usually port 465).
    Tls,
    /// No encryption (local relays only).
    None,
}

/// E-mail over SMTP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Server port. Default 587 (starttls), 465 (tls) or 25 (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Connection security. Default starttls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SmtpSecurity>,
    /// Login name, when the server needs authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Secret key holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Sender address, e.g. `KubeKuma <alerts@example.com>`.
    pub from: String,
    /// Recipient addresses.
    pub to: Vec<String>,
    /// Accept any server certificate.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "skipTLSVerify",
        alias = "skipTlsVerify"
    )]
    pub skip_tls_verify: Option<bool>,
}

/// Generic HTTP webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookConfig {
    /// Target URL (may contain `${SECRET:name:key}`); or use `urlSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Secret key holding the target URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// Method. Default POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Extra headers (map or list of `{name, value}`); values may use `${SECRET:name:key}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::compat::headers_schema")]
    pub headers: Option<Headers>,
    /// Body template; default a JSON document with the alert's fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_template: Option<String>,
    /// Content-Type of the body. Default `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Secret key holding an HMAC-SHA256 key; the body's signature is sent in `signatureHeader`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_ref: Option<SecretKeyRef>,
    /// Header carrying the signature. Default `X-KubeKuma-Signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_header: Option<String>,
}

/// Gotify `POST /message`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GotifyConfig {
    /// Server base URL.
    pub url: String,
    /// Secret key holding the application token.
    pub token_secret_ref: SecretKeyRef,
    /// Message priority (0-10). Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

/// Pushover `1/messages.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushoverConfig {
    /// Secret key holding the user (or group) key.
    pub user_key_secret_ref: SecretKeyRef,
    /// Secret key holding the application API token.
    pub api_token_secret_ref: SecretKeyRef,
    /// Priority, -2 to 2. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Notification sound name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    /// Device name to send to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// API base URL. Default `https://api.pushover.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// Apprise, through the `apprise` CLI or an Apprise API server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppriseConfig {
    /// Apprise URLs without credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Secret key holding Apprise URLs (one per line) that carry credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls_secret_ref: Option<SecretKeyRef>,
    /// Apprise API server URL; when absent the `apprise` CLI is run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
}

/// Outcome of the most recent delivery.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastDelivery {
    /// `sent` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Error of a failed delivery, free of secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the agent reports about a provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderStatus {
    /// The `metadata.generation` the agent last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The most recent delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<LastDelivery>,
}

/// Which monitors' events notify which providers, and how often.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "monitoring.kubekuma.io",
    version = "v1",
    kind = "NotificationPolicy",
    namespaced,
    status = "PolicyStatus",
    shortname = "knpol",
    category = "kubekuma",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Monitors","type":"integer","jsonPath":".status.matchedMonitors"}"#,
    printcolumn = r#"{"name":"Providers","type":"string","jsonPath":".status.providers"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NotificationPolicySpec {
    /// Evaluation order; lower first. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Which monitors this policy covers (`selector` in the original implementation).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "match",
        alias = "selector"
    )]
    pub match_: Option<MonitorSelector>,
    /// Which events notify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Triggers>,
    /// Where and how often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// Providers (original implementation's place, outside `routing`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<RefEntry>,
    /// Message templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatting: Option<Formatting>,
}

impl NotificationPolicySpec {
    /// Every provider reference, in either spelling.
    pub fn provider_refs(&self) -> impl Iterator<Item = &RefEntry> {
        self.routing
            .iter()
            .flat_map(|r| r.providers.iter())
            .chain(self.providers.iter())
    }
}

/// Certificate expiry trigger.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertExpiringTrigger {
    /// Whether expiring certificates notify. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Notify when fewer days than this remain. Default 14.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_threshold: Option<i64>,
}

/// Which events notify.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Triggers {
    /// Monitor went down. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_down: Option<bool>,
    /// Monitor came back up. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_up: Option<bool>,
    /// Monitor started flapping. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_flapping: Option<bool>,
    /// Certificate about to expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_cert_expiring: Option<CertExpiringTrigger>,
}

/// Deduplication of identical notifications.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dedupe {
    /// Template of the dedupe key. Default `{{ .monitorId }}-{{ .kind }}` (kind: down, up,
    /// flapping, certExpiring, reminder), so a recovery never shares a key with an alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Window in minutes within which equal keys are sent once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_minutes: Option<i64>,
}

/// Rate limit per monitor and provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Fewest minutes between two notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_minutes_between_alerts: Option<i64>,
}

/// Reminders while a monitor stays down.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resend {
    /// Minutes between reminders; 0 = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_interval_minutes: Option<i64>,
}

/// Where notifications go and how often.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// Providers, by reference (same namespace unless given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<RefEntry>,
    /// Deduplication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe: Option<Dedupe>,
    /// Rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Reminders while down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend: Option<Resend>,
}

/// Message templates (minijinja, or the Go-style `{{ .field }}` form).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Formatting {
    /// Title / subject template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_template: Option<String>,
    /// Body template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_template: Option<String>,
}

/// What the agent reports about a policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` the agent last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many monitors the policy matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_monitors: Option<i64>,
    /// Providers it routes to, as `namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
}
