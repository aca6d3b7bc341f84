//! `KubeKumaSettings`: cluster-wide defaults and limits (one per cluster or folder).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, SecretKeyRef};
use crate::monitor::{Quorum, QuorumRule};

/// Cluster-wide settings. At most one may exist; every field has a default.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "monitoring.kubekuma.io",
    version = "v1",
    kind = "KubeKumaSettings",
    plural = "kubekumasettings",
    singular = "kubekumasettings",
    status = "SettingsStatus",
    shortname = "kks",
    category = "kubekuma",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Auth","type":"string","jsonPath":".spec.auth.mode"}"#,
    printcolumn = r#"{"name":"Min Interval","type":"integer","jsonPath":".spec.scheduler.minIntervalSeconds"}"#,
    printcolumn = r#"{"name":"Retention Days","type":"integer","jsonPath":".spec.retention.heartbeatsDays"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubeKumaSettingsSpec {
    /// Operating mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ModeSettings>,
    /// Authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSettings>,
    /// Scheduling limits and defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerSettings>,
    /// How long data is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSettings>,
    /// Network behaviour of checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<NetworkingSettings>,
    /// What is served without login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_endpoints: Option<PublicEndpoints>,
    /// How the results of several locations make one state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<LocationsSettings>,
}

/// How the results of several locations (agents' `--location`) make one state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocationsSettings {
    /// Quorum of monitors without `spec.quorum`: a count (at least 1) or a percentage
    /// (`"50%"`, 1-100) of the fresh locations that run the monitor. Default: a majority
    /// (`n / 2 + 1` of the `n` fresh locations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::monitor::quorum_schema")]
    pub default_quorum: Option<Quorum>,
    /// A location whose latest result of a monitor is older than this is stale: neither
    /// up nor down. 10-86400. Default: 3 × the monitor's interval + 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after_seconds: Option<i64>,
}

/// Operating mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModeSettings {
    /// The admin API refuses changes that belong in Git (creating and expiring silences:
    /// 403 `gitops_read_only`); incident acknowledge, updates and resolve and push
    /// heartbeats stay allowed. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ops_read_only: Option<bool>,
    /// Only one instance runs checks and sends notifications: the Lease's holder in kube
    /// mode; in folder mode the holder of `<data>/kubekuma.lock` (a second instance on the
    /// same data folder refuses to start). False: every instance runs them (notifications
    /// may repeat). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_instance_required: Option<bool>,
}

/// Authentication modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AuthMode {
    /// LocalUser resources.
    Local,
    /// An OpenID Connect provider.
    Oidc,
    /// No authentication (`none` in the original implementation): the API answers reads
    /// without login (a viewer of every namespace) and refuses logins and writes.
    #[serde(alias = "none")]
    Disabled,
}

/// Local-user login.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalAuth {
    /// Allow LocalUser logins; false also refuses their existing sessions. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Session lifetime in seconds (JWT expiry, cookie Max-Age, sessions row) of new
    /// logins. Default `SESSION_MAX_AGE`, else 604800 (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_max_age_seconds: Option<i64>,
}

/// API key settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySettings {
    /// Accept API keys (false: every key is refused with 401 `api_keys_disabled`). Default
    /// true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Most keys (not disabled) per user: the `monitoring.kubekuma.io/owner` label of an
    /// ApiKey in its namespace (keys without it share one owner per namespace); later keys,
    /// by creation time then name, are invalid and refused. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_user: Option<i64>,
}

/// OpenID Connect login (`auth.mode: oidc`): the provider, this agent as its client, and
/// which groups get which role.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcSettings {
    /// Issuer URL; its `/.well-known/openid-configuration` is read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Client ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Secret key holding the client secret, in the agent's own namespace. Without it
    /// the agent is a public client (PKCE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// The agent's callback as the provider knows it: its public URL followed by
    /// `/api/v1/auth/oidc/callback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    /// Scopes asked for; `openid` is always added. Default `openid`, `profile`, `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// ID-token claim listing the user's groups (a list of strings or one string).
    /// Default `groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    /// Which group gets which role; a user in several gets the highest, a user in none
    /// is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub role_mapping: Vec<OidcRoleMapping>,
}

/// One group of the provider and the role its members get.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcRoleMapping {
    /// A value of the groups claim.
    pub group: String,
    /// The role of its members.
    pub role: crate::auth::Role,
}

/// Authentication settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSettings {
    /// Mode. Default local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<AuthMode>,
    /// Local-user login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalAuth>,
    /// API keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeySettings>,
    /// OpenID Connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcSettings>,
}

/// Flapping detection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlappingSettings {
    /// Detect flapping. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Window in minutes. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_minutes: Option<i64>,
    /// State changes within the window that mean flapping. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i64>,
}

/// Scheduling limits and defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerSettings {
    /// Shortest allowed monitor interval. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval_seconds: Option<i64>,
    /// Network checks running at once. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_net_checks: Option<i64>,
    /// Privileged (ICMP) checks running at once. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_priv_checks: Option<i64>,
    /// Timeout of monitors without `timeoutSeconds`. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_timeout_seconds: Option<i64>,
    /// Jitter of monitors without `jitterPercent`. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_percent: Option<i64>,
    /// Flapping detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flapping: Option<FlappingSettings>,
}

/// Downsampling resolutions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DownsampleResolution {
    /// One rollup per hour.
    Hourly,
    /// One rollup per day.
    Daily,
}

/// Downsampling of old heartbeats.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Downsample {
    /// Downsample. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Heartbeats older than this many days become rollups. Default 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_days: Option<i64>,
    /// Rollup resolution: hourly, or daily (one row per UTC day; the hourly rows before
    /// the cutoff are merged into their day). Default hourly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<DownsampleResolution>,
}

/// Retention in the original implementation's shape (`heartbeats: {days}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionDays {
    /// Days to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<i64>,
}

/// How long data is kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSettings {
    /// Days of heartbeats (and rollups). Default 90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeats_days: Option<i64>,
    /// Days of closed incidents. Default 365.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incidents_days: Option<i64>,
    /// Downsampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downsample: Option<Downsample>,
    /// Heartbeat retention (original implementation's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeats: Option<RetentionDays>,
    /// Incident retention (original implementation's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incidents: Option<RetentionDays>,
}

/// DNS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsSettings {
    /// Resolvers (`ip` or `ip:port`) for DNS monitors without `server`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
}

/// Ping settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PingSettings {
    /// Try raw ICMP sockets (needs CAP_NET_RAW). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
}

/// Network behaviour of checks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkingSettings {
    /// User-Agent of HTTP checks. Default `KubeKuma/<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSettings>,
    /// Ping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingSettings>,
}

/// Metrics endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsEndpoint {
    /// Serve metrics. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Path. Default `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Refuse anonymous scrapes (401): only a session or an API key may read metrics.
    /// Default false (anonymous scrapes get aggregate series only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_auth: Option<bool>,
}

/// What is served without login.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicEndpoints {
    /// Serve status pages. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_pages_enabled: Option<bool>,
    /// Serve badges. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badges_enabled: Option<bool>,
    /// Metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsEndpoint>,
}

/// What the agent reports about the settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingsStatus {
    /// The `metadata.generation` the agent last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Settings with every default filled in, as the rest of the program uses them.
#[derive(Clone, Debug, PartialEq)]
pub struct EffectiveSettings {
    /// Shortest monitor interval, seconds.
    pub min_interval_seconds: i64,
    /// Concurrent network checks.
    pub max_concurrent_net_checks: i64,
    /// Concurrent privileged checks.
    pub max_concurrent_priv_checks: i64,
    /// Default check timeout, seconds.
    pub default_timeout_seconds: i64,
    /// Default jitter, percent.
    pub jitter_percent: i64,
    /// Flapping detection on.
    pub flapping_enabled: bool,
    /// Flapping window, minutes.
    pub flapping_window_minutes: i64,
    /// Flapping threshold, state changes.
    pub flapping_threshold: i64,
    /// Heartbeat retention, days.
    pub heartbeats_days: i64,
    /// Incident retention, days.
    pub incidents_days: i64,
    /// Downsampling on.
    pub downsample_enabled: bool,
    /// Downsample after, days.
    pub downsample_after_days: i64,
    /// User-Agent of HTTP checks.
    pub user_agent: String,
    /// Default DNS resolvers.
    pub dns_servers: Vec<String>,
    /// Raw ICMP allowed.
    pub ping_privileged: bool,
    /// What is served without login (`spec.publicEndpoints`).
    pub public_endpoints: EffectivePublicEndpoints,
    /// Auth mode.
    pub auth_mode: AuthMode,
    /// Session lifetime, seconds.
    pub session_max_age_seconds: i64,
    /// LocalUser password logins (and their sessions) accepted: `spec.auth.local.enabled`;
    /// when unset, true except under `auth.mode: oidc`, where password logins must be
    /// turned on explicitly.
    pub local_login_enabled: bool,
    /// API keys accepted (`spec.auth.apiKeys.enabled`).
    pub api_keys_enabled: bool,
    /// Most ApiKeys per owner (`spec.auth.apiKeys.maxPerUser`).
    pub api_keys_max_per_user: i64,
    /// The admin API refuses writes that change desired state (`spec.mode.gitOpsReadOnly`).
    pub git_ops_read_only: bool,
    /// Only the elected replica runs checks and sends notifications
    /// (`spec.mode.singleInstanceRequired`).
    pub single_instance_required: bool,
    /// Resolution of the rollups heartbeats become after `downsample_after_days`.
    pub downsample_resolution: DownsampleResolution,
    /// Quorum of monitors without `spec.quorum` (`spec.locations.defaultQuorum`; a
    /// majority when unset).
    pub default_quorum: QuorumRule,
    /// `spec.locations.staleAfterSeconds`; `None`: 3 × each monitor's interval + 30 s
    /// (see [`EffectiveSettings::stale_after_seconds`]).
    pub stale_after_seconds: Option<i64>,
}

impl EffectiveSettings {
    /// Seconds after which a location's latest result of a monitor checked every
    /// `interval_seconds` is stale: the setting, else `3 × interval + 30`.
    pub fn stale_after_seconds(&self, interval_seconds: i64) -> i64 {
        self.stale_after_seconds
            .unwrap_or_else(|| interval_seconds.max(1).saturating_mul(3).saturating_add(30))
    }
}

/// `spec.publicEndpoints` with its defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct EffectivePublicEndpoints {
    /// The dynamic status page twins (`/status/…`, `/badge/…`, `/uptime/…`) are served.
    pub status_pages_enabled: bool,
    /// The dynamic badges (`/badge/…`) are served.
    pub badges_enabled: bool,
    /// Metrics are served.
    pub metrics_enabled: bool,
    /// Where metrics are served.
    pub metrics_path: String,
    /// Anonymous scrapes are refused.
    pub metrics_require_auth: bool,
}

impl Default for EffectivePublicEndpoints {
    fn default() -> Self {
        PublicEndpoints::default().effective()
    }
}

impl PublicEndpoints {
    /// Fill in every default.
    pub fn effective(&self) -> EffectivePublicEndpoints {
        let m = self.metrics.clone().unwrap_or_default();
        EffectivePublicEndpoints {
            status_pages_enabled: self.status_pages_enabled.unwrap_or(true),
            badges_enabled: self.badges_enabled.unwrap_or(true),
            metrics_enabled: m.enabled.unwrap_or(true),
            metrics_path: m.path.unwrap_or_else(|| "/metrics".to_string()),
            metrics_require_auth: m.require_auth.unwrap_or(false),
        }
    }
}

impl Default for EffectiveSettings {
    fn default() -> Self {
        KubeKumaSettingsSpec::default().effective()
    }
}

impl KubeKumaSettingsSpec {
    /// Fill in every default.
    pub fn effective(&self) -> EffectiveSettings {
        let sched = self.scheduler.clone().unwrap_or_default();
        let flap = sched.flapping.clone().unwrap_or_default();
        let ret = self.retention.clone().unwrap_or_default();
        let down = ret.downsample.clone().unwrap_or_default();
        let net = self.networking.clone().unwrap_or_default();
        let auth = self.auth.clone().unwrap_or_default();
        EffectiveSettings {
            min_interval_seconds: sched.min_interval_seconds.unwrap_or(10),
            max_concurrent_net_checks: sched.max_concurrent_net_checks.unwrap_or(50),
            max_concurrent_priv_checks: sched.max_concurrent_priv_checks.unwrap_or(10),
            default_timeout_seconds: sched.default_timeout_seconds.unwrap_or(30),
            jitter_percent: sched.jitter_percent.unwrap_or(10),
            flapping_enabled: flap.enabled.unwrap_or(true),
            flapping_window_minutes: flap.window_minutes.unwrap_or(10),
            flapping_threshold: flap.threshold.unwrap_or(3),
            heartbeats_days: ret
                .heartbeats_days
                .or(ret.heartbeats.and_then(|h| h.days))
                .unwrap_or(90),
            incidents_days: ret
                .incidents_days
                .or(ret.incidents.and_then(|h| h.days))
                .unwrap_or(365),
            downsample_enabled: down.enabled.unwrap_or(true),
            downsample_after_days: down.after_days.unwrap_or(7),
            user_agent: net
                .user_agent
                .clone()
                .unwrap_or_else(|| concat!("KubeKuma/", env!("CARGO_PKG_VERSION")).to_string()),
            dns_servers: net.dns.map(|d| d.servers).unwrap_or_default(),
            ping_privileged: net.ping.and_then(|p| p.privileged).unwrap_or(false),
            public_endpoints: self
                .public_endpoints
                .clone()
                .unwrap_or_default()
                .effective(),
            auth_mode: auth.mode.unwrap_or(AuthMode::Local),
            session_max_age_seconds: auth
                .local
                .as_ref()
                .and_then(|l| l.session_max_age_seconds)
                .unwrap_or(604_800),
            local_login_enabled: auth
                .local
                .as_ref()
                .and_then(|l| l.enabled)
                .unwrap_or(auth.mode != Some(AuthMode::Oidc)),
            api_keys_enabled: auth
                .api_keys
                .as_ref()
                .and_then(|k| k.enabled)
                .unwrap_or(true),
            api_keys_max_per_user: auth
                .api_keys
                .as_ref()
                .and_then(|k| k.max_per_user)
                .unwrap_or(5),
            git_ops_read_only: self
                .mode
                .as_ref()
                .and_then(|m| m.git_ops_read_only)
                .unwrap_or(false),
            single_instance_required: self
                .mode
                .as_ref()
                .and_then(|m| m.single_instance_required)
                .unwrap_or(true),
            downsample_resolution: down.resolution.unwrap_or(DownsampleResolution::Hourly),
            default_quorum: self
                .locations
                .as_ref()
                .and_then(|l| l.default_quorum)
                .map(QuorumRule::of)
                .unwrap_or_default(),
            stale_after_seconds: self.locations.as_ref().and_then(|l| l.stale_after_seconds),
        }
    }
}
