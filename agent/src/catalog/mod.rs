//! Where the desired state comes from. Manifests (a folder, or the Kubernetes API through
//! [`crate::cluster::catalog`]) are decoded, validated and merged into one typed
//! [`Snapshot`]; everything downstream trusts it and never re-validates.

pub mod bounds;
pub mod decode;
pub mod folder;
pub mod schedule_expr;
pub mod selector;
pub mod snapshot;
pub mod validate;

use kubekuma_crds::{
    ApiKey, Kind, KubeKumaSettings, LocalUser, MaintenanceWindow, Monitor, MonitorSet,
    NotificationPolicy, NotificationProvider, Silence, StatusPage,
};

pub use crate::findings::{Finding, Origin, ResourceId, Severity};
pub use snapshot::{ObjKey, Snapshot};

/// One resource of the ten kinds.
// Resources live in maps and are rarely moved; boxing the large variants buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    /// A Monitor.
    Monitor(Monitor),
    /// A MonitorSet (its monitors appear as Monitors too).
    MonitorSet(MonitorSet),
    /// A NotificationProvider.
    NotificationProvider(NotificationProvider),
    /// A NotificationPolicy.
    NotificationPolicy(NotificationPolicy),
    /// A StatusPage.
    StatusPage(StatusPage),
    /// A LocalUser.
    LocalUser(LocalUser),
    /// An ApiKey.
    ApiKey(ApiKey),
    /// A Silence.
    Silence(Silence),
    /// A MaintenanceWindow.
    MaintenanceWindow(MaintenanceWindow),
    /// The KubeKumaSettings.
    KubeKumaSettings(KubeKumaSettings),
}

impl Resource {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Monitor(_) => Kind::Monitor,
            Resource::MonitorSet(_) => Kind::MonitorSet,
            Resource::NotificationProvider(_) => Kind::NotificationProvider,
            Resource::NotificationPolicy(_) => Kind::NotificationPolicy,
            Resource::StatusPage(_) => Kind::StatusPage,
            Resource::LocalUser(_) => Kind::LocalUser,
            Resource::ApiKey(_) => Kind::ApiKey,
            Resource::Silence(_) => Kind::Silence,
            Resource::MaintenanceWindow(_) => Kind::MaintenanceWindow,
            Resource::KubeKumaSettings(_) => Kind::KubeKumaSettings,
        }
    }

    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Resource::Monitor(r) => &r.metadata,
            Resource::MonitorSet(r) => &r.metadata,
            Resource::NotificationProvider(r) => &r.metadata,
            Resource::NotificationPolicy(r) => &r.metadata,
            Resource::StatusPage(r) => &r.metadata,
            Resource::LocalUser(r) => &r.metadata,
            Resource::ApiKey(r) => &r.metadata,
            Resource::Silence(r) => &r.metadata,
            Resource::MaintenanceWindow(r) => &r.metadata,
            Resource::KubeKumaSettings(r) => &r.metadata,
        }
    }

    /// The resource as JSON, as it would be written back to a manifest.
    pub fn to_json(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            Resource::Monitor(x) => serde_json::to_value(x),
            Resource::MonitorSet(x) => serde_json::to_value(x),
            Resource::NotificationProvider(x) => serde_json::to_value(x),
            Resource::NotificationPolicy(x) => serde_json::to_value(x),
            Resource::StatusPage(x) => serde_json::to_value(x),
            Resource::LocalUser(x) => serde_json::to_value(x),
            Resource::ApiKey(x) => serde_json::to_value(x),
            Resource::Silence(x) => serde_json::to_value(x),
            Resource::MaintenanceWindow(x) => serde_json::to_value(x),
            Resource::KubeKumaSettings(x) => serde_json::to_value(x),
        }
    }

    /// Kind, namespace (empty when cluster-scoped) and name.
    pub fn id(&self) -> ResourceId {
        let m = self.meta();
        let kind = self.kind();
        ResourceId::new(
            kind,
            if kind.namespaced() {
                m.namespace.as_deref().unwrap_or("default")
            } else {
                ""
            },
            m.name.as_deref().unwrap_or(""),
        )
    }
}
