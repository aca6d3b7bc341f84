//! The `StatusPage` kind: a public page listing groups of monitors, rendered by the builder.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, ObjectRef};
use crate::monitor::MonitorState;

/// A public status page.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "monitoring.kubekuma.io",
    version = "v1",
    kind = "StatusPage",
    namespaced,
    status = "StatusPageStatus",
    shortname = "ksp",
    category = "kubekuma",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Slug","type":"string","jsonPath":".spec.slug"}"#,
    printcolumn = r#"{"name":"Published","type":"boolean","jsonPath":".spec.published"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.overallStatus"}"#,
    printcolumn = r#"{"name":"Monitors","type":"integer","jsonPath":".status.monitorCount"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.publishedUrl"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StatusPageSpec {
    /// URL path segment: lowercase letters, digits and dashes.
    pub slug: String,
    /// Page title: at most 200 characters, no control, zero-width or bidirectional
    /// override characters.
    pub title: String,
    /// Whether the builder renders the page. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<bool>,
    /// Where the page is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
    /// Text and branding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<PageContent>,
    /// Groups of monitors, in display order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<PageGroup>,
    /// Status badges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badges: Option<Badges>,
}

/// How the page reaches visitors.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExposureMode {
    /// Served through an Ingress for `hosts`.
    Ingress,
    /// Static files published to the builder's output (bucket or CDN).
    Static,
    /// Not exposed; JSON and badges only.
    None,
}

/// TLS of an ingress exposure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExposureTls {
    /// Secret holding the certificate.
    pub secret_name: String,
}

/// Where the page is served.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// Exposure mode. Default static.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ExposureMode>,
    /// Host names the page answers on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// TLS for those hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ExposureTls>,
}

/// Theme colours.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageTheme {
    /// Accent colour, `#rgb` or `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_color: Option<String>,
    /// Offer a dark variant following the visitor's `prefers-color-scheme`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dark_mode: Option<bool>,
}

/// Logo, favicon and colours.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Branding {
    /// Logo image URL (`logo` in the original implementation).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "logo")]
    pub logo_url: Option<String>,
    /// Favicon URL (`favicon` in the original implementation).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "favicon")]
    pub favicon_url: Option<String>,
    /// Colours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<PageTheme>,
    /// Accent colour (original implementation's place, outside `theme`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_color: Option<String>,
}

impl Branding {
    /// The accent colour, in either spelling.
    pub fn accent(&self) -> Option<&str> {
        self.theme
            .as_ref()
            .and_then(|t| t.primary_color.as_deref())
            .or(self.primary_color.as_deref())
    }
}

/// Text and branding of a page.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageContent {
    /// Introductory text: at most 4096 characters; line breaks allowed, no other control,
    /// zero-width or bidirectional override characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Logo, favicon and colours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branding: Option<Branding>,
}

/// One monitor on a page.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageMonitor {
    /// The monitor (namespace defaults to the page's).
    #[serde(rename = "ref")]
    pub reference: ObjectRef,
    /// Name shown instead of the monitor's name: at most 200 characters, no control,
    /// zero-width or bidirectional override characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A group of monitors on a page.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageGroup {
    /// Group heading: at most 200 characters, no control, zero-width or bidirectional
    /// override characters.
    pub name: String,
    /// Group description: at most 4096 characters; line breaks allowed, no other control,
    /// zero-width or bidirectional override characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Monitors, in display order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monitors: Vec<PageMonitor>,
}

/// Which badges are published.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BadgeScope {
    /// A badge for every monitor on the page and one for the page.
    All,
    /// Only the badge of the whole page.
    Page,
}

/// Status badges.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Badges {
    /// Publish badges. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Which badges. Default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<BadgeScope>,
}

/// Overall status of a page.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OverallStatus {
    /// Every monitor up.
    Operational,
    /// Some monitors slow or flapping.
    Degraded,
    /// Some monitors down.
    PartialOutage,
    /// Most or all monitors down.
    MajorOutage,
    /// Under maintenance.
    Maintenance,
}

/// What a monitor of a page shows, as far as the page's [`OverallStatus`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// Its state (pending and paused monitors do not count).
    State(MonitorState),
    /// It is inside an active maintenance window.
    Maintenance,
}

impl OverallStatus {
    /// The overall status of a page from what its monitors show: an outage when any
    /// monitor is down (major when at least half of the counted ones are; up, down and
    /// flapping monitors count), else maintenance when any monitor is in maintenance,
    /// else degraded when any is flapping, else operational. The agent's StatusPage
    /// status and the builder's pages both use this rule.
    pub fn of(monitors: impl IntoIterator<Item = Shown>) -> OverallStatus {
        let (mut counted, mut down, mut flapping, mut maintenance) = (0u32, 0u32, 0u32, 0u32);
        for m in monitors {
            match m {
                Shown::State(MonitorState::Up) => counted += 1,
                Shown::State(MonitorState::Down) => {
                    counted += 1;
                    down += 1;
                }
                Shown::State(MonitorState::Flapping) => {
                    counted += 1;
                    flapping += 1;
                }
                Shown::Maintenance => maintenance += 1,
                Shown::State(MonitorState::Pending | MonitorState::Paused) => {}
            }
        }
        if down > 0 {
            if down * 2 >= counted {
                OverallStatus::MajorOutage
            } else {
                OverallStatus::PartialOutage
            }
        } else if maintenance > 0 {
            OverallStatus::Maintenance
        } else if flapping > 0 {
            OverallStatus::Degraded
        } else {
            OverallStatus::Operational
        }
    }
}

/// What the agent reports about a page.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusPageStatus {
    /// The `metadata.generation` the agent last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the page is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_url: Option<String>,
    /// Monitors on the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_count: Option<i64>,
    /// Overall status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overall_status: Option<OverallStatus>,
}
