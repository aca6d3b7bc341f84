//! KubeKuma's vocabulary: the ten custom resource kinds (spec and status), and the
//! shapes shared by the agent and the builder. No IO here, except the object-store client
//! in [`store`] (feature `store`).

pub mod auth;
pub mod common;
pub mod compat;
pub mod crdgen;
pub mod monitor;
pub mod monitor_set;
pub mod notification;
pub mod objects;
pub mod results;
pub mod settings;
pub mod status_page;
#[cfg(feature = "store")]
pub mod store;
pub mod suppression;

pub use auth::{ApiKey, ApiKeySpec, LocalUser, LocalUserSpec, Role};
pub use monitor::{Monitor, MonitorSpec, MonitorState, MonitorType};
pub use monitor_set::{MonitorSet, MonitorSetSpec};
pub use notification::{
    NotificationPolicy, NotificationPolicySpec, NotificationProvider, NotificationProviderSpec,
    ProviderType,
};
pub use settings::{EffectiveSettings, KubeKumaSettings, KubeKumaSettingsSpec};
pub use status_page::{StatusPage, StatusPageSpec};
pub use suppression::{MaintenanceWindow, MaintenanceWindowSpec, Silence, SilenceSpec};

/// The API group of every KubeKuma kind.
pub const GROUP: &str = "monitoring.kubekuma.io";
/// The served and stored version.
pub const VERSION: &str = "v1";
/// `apiVersion` of every KubeKuma resource.
pub const API_VERSION: &str = "monitoring.kubekuma.io/v1";

/// The ten kinds. Adding one means a new arm in every match over this enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, strum::VariantArray)]
pub enum Kind {
    /// [`Monitor`]
    Monitor,
    /// [`MonitorSet`]
    MonitorSet,
    /// [`NotificationProvider`]
    NotificationProvider,
    /// [`NotificationPolicy`]
    NotificationPolicy,
    /// [`StatusPage`]
    StatusPage,
    /// [`LocalUser`]
    LocalUser,
    /// [`ApiKey`]
    ApiKey,
    /// [`Silence`]
    Silence,
    /// [`MaintenanceWindow`]
    MaintenanceWindow,
    /// [`KubeKumaSettings`] (cluster-scoped)
    KubeKumaSettings,
}

// The build fails when a kind is added without being listed in `ALL`.
const _: () = {
    let mut listed = [0u8; Kind::ALL.len()];
    let mut i = 0;
    while i < listed.len() {
        listed[i] = Kind::ALL[i] as u8;
        i += 1;
    }
    assert!(lists_every_variant(
        &listed,
        <Kind as strum::VariantArray>::VARIANTS.len()
    ));
};

/// Whether `listed` (the discriminants of a fieldless enum's `ALL` list) names each of the
/// enum's `count` variants exactly once. Used in constant assertions, so a variant added
/// without its place in the list fails the build.
const fn lists_every_variant(listed: &[u8], count: usize) -> bool {
    if listed.len() != count {
        return false;
    }
    let mut seen = [false; 256];
    let mut i = 0;
    while i < listed.len() {
        let d = listed[i] as usize;
        if d >= count || seen[d] {
            return false;
        }
        seen[d] = true;
        i += 1;
    }
    true
}

impl Kind {
    /// Every kind, in the specification's order (the compiler checks that none is
    /// missing).
    pub const ALL: [Kind; 10] = [
        Kind::Monitor,
        Kind::MonitorSet,
        Kind::NotificationProvider,
        Kind::NotificationPolicy,
        Kind::StatusPage,
        Kind::LocalUser,
        Kind::ApiKey,
        Kind::Silence,
        Kind::MaintenanceWindow,
        Kind::KubeKumaSettings,
    ];

    /// The `kind` field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Monitor => "Monitor",
            Kind::MonitorSet => "MonitorSet",
            Kind::NotificationProvider => "NotificationProvider",
            Kind::NotificationPolicy => "NotificationPolicy",
            Kind::StatusPage => "StatusPage",
            Kind::LocalUser => "LocalUser",
            Kind::ApiKey => "ApiKey",
            Kind::Silence => "Silence",
            Kind::MaintenanceWindow => "MaintenanceWindow",
            Kind::KubeKumaSettings => "KubeKumaSettings",
        }
    }

    /// Parse a `kind` field's value.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether resources of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::KubeKumaSettings)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
