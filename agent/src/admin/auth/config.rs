//! How sessions are issued and logins limited: `SESSION_SECRET` (or a secret generated
//! once and kept in the data folder), `SESSION_MAX_AGE`, `KUBE_NAMESPACE`.

use std::path::Path;
use std::time::Duration;

/// Shortest accepted `SESSION_SECRET`, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// File in the data folder holding the generated secret.
pub const SECRET_FILE: &str = "session-secret";

/// Default `SESSION_MAX_AGE`: 7 days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(604_800);

/// A session secret shorter than [`MIN_SECRET_LEN`] bytes.
#[derive(Debug, thiserror::Error)]
#[error(
    "the session secret must be at least {MIN_SECRET_LEN} bytes, got {len}; generate one with `openssl rand -hex 32`"
)]
pub struct ShortSecret {
    /// The length it has.
    pub len: usize,
}

/// Why the session configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `SESSION_SECRET` is too short.
    #[error("SESSION_SECRET: {0}")]
    SessionSecret(ShortSecret),
    /// The kept secret is too short.
    #[error("{path} holds a bad secret; delete it to generate a new one: {source}")]
    StoredSecret {
        /// The file.
        path: String,
        /// Why.
        source: ShortSecret,
    },
    /// `KUBE_NAMESPACE` lists several namespaces (its meaning before it became the home).
    #[error(
        "KUBE_NAMESPACE is the agent's own (home) namespace, one name, got {0:?}; to watch \
         only some namespaces, list them in KUBEKUMA_WATCH_NAMESPACES (or --watch-namespaces) \
         and set KUBE_NAMESPACE to the agent's namespace"
    )]
    HomeNamespaceList(String),
    /// `SESSION_MAX_AGE` is not a positive number of seconds.
    #[error("SESSION_MAX_AGE must be a positive number of seconds, got {0:?}")]
    MaxAge(String),
    /// The kept secret's file could not be made private.
    #[error("cannot restrict {path} to its owner: {source}")]
    Restrict {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file or folder of the secret could not be read or written.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was done: `read`, `write`, `create`, …
        what: &'static str,
        /// The file or folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError {
    let path = path.display().to_string();
    move |source| ConfigError::Io { what, path, source }
}

/// How sessions are issued.
#[derive(Clone)]
pub struct AuthConfig {
    /// HS256 key (`SESSION_SECRET`, or generated and kept in the data folder by `up`).
    pub session_secret: Vec<u8>,
    /// Session lifetime (`SESSION_MAX_AGE` seconds, default 7 days).
    pub max_age: Duration,
    /// Namespace whose users and keys act on every namespace (`KUBE_NAMESPACE`, else
    /// `POD_NAMESPACE`, default `kubekuma`); principals of any other namespace are confined to their own,
    /// whatever their role.
    pub home_namespace: String,
    /// Rate limits and the cost bound of logins.
    pub limits: LoginLimits,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("session_secret", &"<redacted>")
            .field("max_age", &self.max_age)
            .field("home_namespace", &self.home_namespace)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Login rate limits and the bound on concurrent argon2 work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// Login attempts per client address (IPv6: per /64) in `address_period`; a
    /// successful login does not count. Default 10.
    pub per_address: u32,
    /// Default 5 minutes.
    pub address_period: Duration,
    /// Failed logins per username and client address (IPv6: per /64) in
    /// `username_period`: an address that guesses one user's password is stopped, the
    /// user logging in from elsewhere is not. Default 5.
    pub username_failures: u32,
    /// Default 15 minutes.
    pub username_period: Duration,
    /// Failed logins per username from all addresses together in
    /// `username_global_period`, a slow and generous bound against guessing from many
    /// addresses. When it is used up, only addresses that already failed for that
    /// username are refused; an address that has not failed still logs in. Default 100.
    pub username_global_failures: u32,
    /// Default 1 hour.
    pub username_global_period: Duration,
    /// Failed API key attempts per client address (IPv6: per /64) in `api_key_period`,
    /// a token bucket checked before a key is looked up (429 beyond); a key that
    /// authenticates gives its try back. Default 10.
    pub api_key_failures: u32,
    /// Default 1 minute.
    pub api_key_period: Duration,
    /// Argon2 verifications at once (each takes 64 MB with the spec's cost). Default 2.
    pub argon2_concurrency: usize,
    /// Verifications waiting for a slot; beyond, logins answer 503 `busy`. Default 8.
    pub argon2_queue: usize,
    /// Addresses, usernames and username-address pairs tracked at most. Default 10 000
    /// each.
    pub max_tracked: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            per_address: 10,
            address_period: Duration::from_secs(300),
            username_failures: 5,
            username_period: Duration::from_secs(900),
            username_global_failures: 100,
            username_global_period: Duration::from_secs(3600),
            api_key_failures: 10,
            api_key_period: Duration::from_secs(60),
            argon2_concurrency: 2,
            argon2_queue: 8,
            max_tracked: 10_000,
        }
    }
}

impl AuthConfig {
    /// The configuration from `secret` (`SESSION_SECRET`) and the environment; without a
    /// secret one is generated and kept in `<data_dir>/session-secret`.
    pub fn load(secret: Option<&str>, data_dir: &Path) -> Result<AuthConfig, ConfigError> {
        let session_secret = match secret {
            Some(s) => {
                check_secret(s).map_err(ConfigError::SessionSecret)?;
                s.as_bytes().to_vec()
            }
            None => stored_secret(data_dir)?,
        };
        let max_age = match std::env::var("SESSION_MAX_AGE") {
            Ok(v) if !v.trim().is_empty() => parse_max_age(&v)?,
            _ => DEFAULT_MAX_AGE,
        };
        let home_namespace = home_namespace_from_env()?;
        Ok(AuthConfig {
            session_secret,
            max_age,
            home_namespace,
            limits: LoginLimits::default(),
        })
    }
}

/// Refuse a secret shorter than [`MIN_SECRET_LEN`] bytes.
pub fn check_secret(secret: &str) -> Result<(), ShortSecret> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(ShortSecret { len: secret.len() });
    }
    Ok(())
}

fn parse_max_age(v: &str) -> Result<Duration, ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
        _ => Err(ConfigError::MaxAge(v.to_string())),
    }
}

/// The agent's own (home) namespace from the environment: see [`home_namespace`].
pub fn home_namespace_from_env() -> Result<String, ConfigError> {
    home_namespace(
        std::env::var("KUBE_NAMESPACE").ok().as_deref(),
        std::env::var("POD_NAMESPACE").ok().as_deref(),
    )
}

/// The agent's own (home) namespace: `KUBE_NAMESPACE`, else `POD_NAMESPACE`, else
/// `kubekuma` (blank values count as unset). A comma-separated `KUBE_NAMESPACE` (its old
/// meaning, the namespaces to watch) is refused: that is `KUBEKUMA_WATCH_NAMESPACES` now.
pub fn home_namespace(
    kube_namespace: Option<&str>,
    pod_namespace: Option<&str>,
) -> Result<String, ConfigError> {
    let set = |v: Option<&str>| {
        v.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if let Some(k) = set(kube_namespace) {
        if k.contains(',') {
            return Err(ConfigError::HomeNamespaceList(k));
        }
        return Ok(k);
    }
    Ok(set(pod_namespace).unwrap_or_else(|| "kubekuma".to_string()))
}

/// The secret kept in `<data_dir>/session-secret`, generated (32 random bytes, hex) on
/// first use; the file is readable by its owner only.
fn stored_secret(data_dir: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::create_dir_all(data_dir).map_err(io("create data folder", data_dir))?;
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            check_secret(text).map_err(|source| ConfigError::StoredSecret {
                path: path.display().to_string(),
                source,
            })?;
            restrict(&path)?;
            return Ok(text.as_bytes().to_vec());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read", &path)(e)),
    }
    let bytes: [u8; 32] = rand::random();
    let text = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io("write", &path))?;
            tracing::info!(path = %path.display(), "generated a session secret (SESSION_SECRET not set)");
            Ok(text.into_bytes())
        }
        // Another agent on the same folder wrote it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => stored_secret(data_dir),
        Err(e) => Err(io("create", &path)(e)),
    }
}

fn restrict(path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(io("read", path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| ConfigError::Restrict {
                    path: path.display().to_string(),
                    source,
                },
            )?;
        }
    }
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let a = stored_secret(&data).unwrap();
        assert_eq!(a.len(), 64);
        let b = stored_secret(&data).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn short_secrets_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = AuthConfig::load(Some("short"), dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("at least 32 bytes"), "{err:#}");
        let ok = AuthConfig::load(Some(&"x".repeat(32)), dir.path()).unwrap();
        assert_eq!(ok.session_secret.len(), 32);
        assert!(!format!("{ok:?}").contains("xxxx"));
        std::fs::write(dir.path().join(SECRET_FILE), "tiny").unwrap();
        assert!(AuthConfig::load(None, dir.path()).is_err());
    }

    #[test]
    fn max_age_and_namespace() {
        assert_eq!(parse_max_age("60").unwrap(), Duration::from_secs(60));
        assert!(parse_max_age("0").is_err());
        assert!(parse_max_age("1d").is_err());
        assert_eq!(home_namespace(None, None).unwrap(), "kubekuma");
        assert_eq!(home_namespace(Some(" ops "), Some("kk")).unwrap(), "ops");
        assert_eq!(home_namespace(Some(""), None).unwrap(), "kubekuma");
        assert_eq!(
            home_namespace(Some(""), Some("monitoring")).unwrap(),
            "monitoring"
        );
        assert_eq!(home_namespace(None, Some(" kk ")).unwrap(), "kk");
        // The old meaning (a list of namespaces to watch) is refused, naming the new variable.
        let err = home_namespace(Some("ops,dev"), Some("kk"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KUBEKUMA_WATCH_NAMESPACES"), "{err}");
        assert!(err.contains("ops,dev"), "{err}");
    }
}
