//! Authentication of the admin API: LocalUser logins (argon2id PHC hashes in Secrets,
//! optional TOTP), HS256 JWT sessions revocable through the `sessions` table, and
//! `kk_live_…` / `kk_test_…` API keys. SKELETON: the bodies are filled in by the auth work.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::watch;

use super::error::{ApiError, Reply};
use super::roles::{Access, Area, Role, allowed};
use crate::catalog::Snapshot;
use crate::store::Store;

/// How sessions are issued.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// HS256 key (`SESSION_SECRET`, or generated and kept in the data folder by `up`).
    pub session_secret: Vec<u8>,
    /// Session lifetime (`SESSION_MAX_AGE` seconds, default 7 days).
    pub max_age: Duration,
    /// Namespace whose users and keys act on every namespace (`KUBE_NAMESPACE`,
    /// default `kubekuma`); admins always do.
    pub home_namespace: String,
}

impl AuthConfig {
    /// The configuration from `secret` (`SESSION_SECRET`) and the environment; without a
    /// secret one is generated and kept in `<data_dir>/session-secret`.
    pub fn load(secret: Option<&str>, data_dir: &Path) -> anyhow::Result<AuthConfig> {
        let _ = (secret, data_dir);
        unimplemented!("auth work")
    }
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// `namespace/name` of the LocalUser or ApiKey.
    pub id: String,
    /// The login name (a key's `spec.name` for API keys).
    pub username: String,
    /// Role.
    pub role: Role,
    /// The namespace of the LocalUser or ApiKey resource.
    pub namespace: String,
    /// Whether it acts on every namespace (admins, and principals of the home namespace).
    pub all_namespaces: bool,
    /// Session or API key.
    pub kind: PrincipalKind,
}

/// How a principal authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A session JWT; the session's ID.
    Session(String),
    /// An API key.
    ApiKey,
}

impl Principal {
    /// Whether the role table lets this principal `access` `area`.
    pub fn can(&self, area: Area, access: Access) -> bool {
        allowed(self.role, area, access)
    }

    /// Whether resources of namespace `ns` are visible to (and changeable by) it.
    pub fn sees_namespace(&self, ns: &str) -> bool {
        self.all_namespaces || self.namespace == ns
    }

    /// `user:<id>` or `apikey:<id>` for audit records.
    pub fn actor(&self) -> String {
        match self.kind {
            PrincipalKind::Session(_) => format!("user:{}", self.id),
            PrincipalKind::ApiKey => format!("apikey:{}", self.id),
        }
    }
}

/// Logins, sessions and API keys.
pub struct Auth {
    #[allow(dead_code)]
    config: AuthConfig,
    #[allow(dead_code)]
    store: Store,
    #[allow(dead_code)]
    catalog: watch::Receiver<Arc<Snapshot>>,
}

impl Auth {
    /// Authenticate against the users and keys of the current catalog.
    pub fn new(config: AuthConfig, store: Store, catalog: watch::Receiver<Arc<Snapshot>>) -> Self {
        Auth {
            config,
            store,
            catalog,
        }
    }

    /// The principal of a request: a `token` cookie or `Authorization: Bearer` JWT of a
    /// live session, or `Authorization: Bearer kk_…` API key. 401 otherwise.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let _ = headers;
        unimplemented!("auth work")
    }

    /// `POST /api/v1/auth/login` with a JSON body `{username, password, totp?}`.
    pub async fn login(&self, headers: &HeaderMap, body: &[u8], peer: IpAddr) -> Reply {
        let _ = (headers, body, peer);
        unimplemented!("auth work")
    }

    /// `POST /api/v1/auth/logout`: revoke the session and clear the cookie.
    pub async fn logout(&self, principal: &Principal) -> Reply {
        let _ = principal;
        unimplemented!("auth work")
    }

    /// `GET /api/v1/auth/me`.
    pub async fn me(&self, principal: &Principal) -> Reply {
        let _ = principal;
        unimplemented!("auth work")
    }
}
