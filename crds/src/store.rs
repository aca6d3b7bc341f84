//! Where exported objects go: an object store chosen by URL scheme (`file://`, a plain
//! path, `memory://`, `s3://`, `gs://`, `az://`) plus the key prefix taken from the URL
//! path. Error messages name the URL without credentials and never carry secret values.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, RetryConfig,
};
use url::Url;

/// What went wrong opening or using an object store. Every message names the store by
/// its URL with user info and query removed; secret values are replaced by `***`.
///
/// Causes are kept as (scrubbed) text rather than as `source` errors, so that no
/// printer walking the chain can reveal what the scrubbing removed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The URL could not be understood.
    #[error("invalid object store url {url}: {reason}")]
    InvalidUrl {
        /// The URL, without credentials.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A scheme other than file, memory, s3, gs, az.
    #[error(
        "unsupported object store url {url}: scheme {scheme:?} is not one of file, memory, s3, gs, az"
    )]
    UnsupportedScheme {
        /// The URL, without credentials.
        url: String,
        /// The scheme found.
        scheme: String,
    },
    /// The store could not be set up (missing bucket, bad option, folder not creatable).
    #[error("cannot open object store {url}: {reason}")]
    Open {
        /// The URL, without credentials.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A key that is not a valid object path (empty segment, `.` or `..`).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A request to the store failed.
    #[error("cannot {op} {key} in {url}: {reason}")]
    Store {
        /// `put`, `get` or `list`.
        op: &'static str,
        /// The key (relative to the target's prefix).
        key: String,
        /// The URL, without credentials.
        url: String,
        /// What failed, including the underlying cause.
        reason: String,
    },
}

/// An object store plus the key prefix every key is written under.
#[derive(Clone)]
pub struct ObjectTarget {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    secrets: Arc<[String]>,
    local_root: Option<std::path::PathBuf>,
}

impl fmt::Debug for ObjectTarget {
    // The store's own Debug may print credentials; show only the redacted URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectTarget")
            .field("url", &self.url)
            .field("prefix", &self.prefix.as_ref())
            .finish()
    }
}

impl fmt::Display for ObjectTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// The object store named by `url`; see [`open_store_with`].
pub fn open_store(url: &str) -> Result<ObjectTarget, ExportError> {
    open_store_with(url, &[])
}

/// The object store named by `url`, with extra configuration `options` applied after
/// the environment (keys as object_store spells them, e.g. `aws_endpoint`,
/// `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`, `aws_region`,
/// `google_service_account`, `azure_storage_account_name`).
///
/// | URL | store | key prefix |
/// |---|---|---|
/// | `file:///abs/path` or a plain path | local folder (created) | none |
/// | `memory://` or `memory:///prefix` | in memory | the URL path |
/// | `s3://bucket/prefix` (`s3a://` too) | S3 or compatible, configured from `AWS_*` variables (`AWS_ENDPOINT`/`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, `AWS_REGION`, credentials) | the URL path |
/// | `gs://bucket/prefix` | Google Cloud Storage, from `GOOGLE_*` variables | the URL path |
/// | `az://container/prefix` (`azure://`, `abfs://`, `abfss://` too) | Azure Blob Storage, from `AZURE_*` variables | the URL path |
///
/// Cloud stores are opened with the client's own retries switched off: the
/// [`Uploader`](super::Uploader) retries with a bounded backoff, so an outage is
/// reported within seconds instead of after minutes of hidden retrying.
pub fn open_store_with(url: &str, options: &[(&str, &str)]) -> Result<ObjectTarget, ExportError> {
    let raw = url.trim();
    let shown = redact_url(raw);
    let mut secrets = env_secrets();
    secrets.extend(option_secrets(options));
    secrets.extend(url_secrets(raw));
    let secrets: Arc<[String]> = secrets.into_iter().collect::<Vec<_>>().into();
    let scrub = |e: &dyn std::error::Error| scrub_text(&error_chain(e), raw, &shown, &secrets);
    let invalid = |reason: String| ExportError::InvalidUrl {
        url: shown.clone(),
        reason,
    };
    let open = |reason: String| ExportError::Open {
        url: shown.clone(),
        reason,
    };

    if raw.is_empty() {
        return Err(invalid("empty".into()));
    }
    if !raw.contains("://") {
        let path = std::path::PathBuf::from(raw);
        return local(&path, shown.clone(), secrets.clone());
    }
    let parsed = Url::parse(raw).map_err(|e| invalid(scrub(&e)))?;
    let scheme = parsed.scheme().to_ascii_lowercase();
    let prefix = || Path::from_url_path(parsed.path()).map_err(|e| invalid(scrub(&e)));
    let unknown_option = |key: &str| open(format!("unknown option {key:?} for {scheme}:// stores"));
    let store: Arc<dyn ObjectStore> = match scheme.as_str() {
        "file" => {
            let path = parsed.to_file_path().map_err(|()| {
                invalid("expected file:///absolute/path (no host, absolute path)".into())
            })?;
            return local(&path, shown.clone(), secrets.clone());
        }
        "memory" => Arc::new(InMemory::new()),
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env()
                .with_url(raw)
                .with_retry(client_retry());
            for (k, v) in options {
                let key = k.parse().map_err(|_| unknown_option(k))?;
                b = b.with_config(key, *v);
            }
            Arc::new(b.build().map_err(|e| open(scrub(&e)))?)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_url(raw)
                .with_retry(client_retry());
            for (k, v) in options {
                let key = k.parse().map_err(|_| unknown_option(k))?;
                b = b.with_config(key, *v);
            }
            Arc::new(b.build().map_err(|e| open(scrub(&e)))?)
        }
        "az" | "azure" | "abfs" | "abfss" => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(raw)
                .with_retry(client_retry());
            for (k, v) in options {
                let key = k.parse().map_err(|_| unknown_option(k))?;
                b = b.with_config(key, *v);
            }
            Arc::new(b.build().map_err(|e| open(scrub(&e)))?)
        }
        _ => {
            return Err(ExportError::UnsupportedScheme {
                url: shown.clone(),
                scheme,
            });
        }
    };
    Ok(ObjectTarget {
        store,
        prefix: prefix()?,
        url: shown,
        secrets,
        local_root: None,
    })
}

/// A local folder, created when missing.
fn local(
    path: &std::path::Path,
    url: String,
    secrets: Arc<[String]>,
) -> Result<ObjectTarget, ExportError> {
    let open = |reason: String| ExportError::Open {
        url: url.clone(),
        reason,
    };
    std::fs::create_dir_all(path)
        .map_err(|e| open(format!("cannot create folder {}: {e}", path.display())))?;
    let store = LocalFileSystem::new_with_prefix(path).map_err(|e| open(error_chain(&e)))?;
    Ok(ObjectTarget {
        store: Arc::new(store),
        prefix: Path::default(),
        url,
        secrets,
        local_root: Some(path.to_path_buf()),
    })
}

/// The client-level retry policy of cloud stores: none (the uploader retries).
fn client_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        retry_timeout: Duration::from_secs(30),
        ..RetryConfig::default()
    }
}

impl ObjectTarget {
    /// A target over an already built store, with keys under `prefix` (may be empty).
    /// Errors are named after the store's own description.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Self, ExportError> {
        let url = format!("{store}");
        let prefix = Path::parse(prefix).map_err(|e| ExportError::InvalidKey {
            key: prefix.to_string(),
            reason: error_chain(&e),
        })?;
        Ok(ObjectTarget {
            store,
            prefix,
            url,
            secrets: Arc::from(Vec::new()),
            local_root: None,
        })
    }

    /// Values to replace by `***` in every error message of this target (for stores
    /// built by hand with credentials).
    pub fn with_secrets(mut self, secrets: impl IntoIterator<Item = String>) -> Self {
        let mut all: BTreeSet<String> = self.secrets.iter().cloned().collect();
        all.extend(secrets.into_iter().filter(|s| !s.is_empty()));
        self.secrets = all.into_iter().collect::<Vec<_>>().into();
        self
    }

    /// The store's URL (or description), without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key prefix, without slashes at either end (empty for none).
    pub fn prefix(&self) -> &str {
        self.prefix.as_ref()
    }

    /// The underlying store (keys there include the prefix).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The full object path of `key` (prefix applied).
    pub fn path(&self, key: &str) -> Result<Path, ExportError> {
        let full = if self.prefix.as_ref().is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix.as_ref())
        };
        if key.trim_matches('/').is_empty() {
            return Err(ExportError::InvalidKey {
                key: key.into(),
                reason: "empty".into(),
            });
        }
        Path::parse(&full).map_err(|e| ExportError::InvalidKey {
            key: key.into(),
            reason: error_chain(&e),
        })
    }

    /// Write a whole object (atomic: readers see the old or the new version).
    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), ExportError> {
        let path = self.path(key)?;
        self.store
            .put(&path, PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| self.store_error("put", key, &e))
    }

    /// Read a whole object; `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, ExportError> {
        let path = self.path(key)?;
        match self.store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| self.store_error("get", key, &e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error("get", key, &e)),
        }
    }

    /// The version tag of one object (its ETag, or its modification time where there is
    /// none, with its size): one HEAD request. `None` when it does not exist.
    pub async fn version(&self, key: &str) -> Result<Option<String>, ExportError> {
        let path = self.path(key)?;
        match self.store.head(&path).await {
            Ok(m) => Ok(Some(format!(
                "{}:{}",
                m.size,
                m.e_tag.unwrap_or_else(|| m
                    .last_modified
                    .timestamp_nanos_opt()
                    .unwrap_or(0)
                    .to_string())
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error("head", key, &e)),
        }
    }

    /// Keys (relative to the target's prefix) of every object under `prefix`, sorted.
    /// `prefix` is matched on whole path segments: `v1/agents/a` lists `v1/agents/a/…`
    /// but not `v1/agents/ab/…`. An empty prefix lists everything.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ExportError> {
        Ok(self
            .list_versions(prefix)
            .await?
            .into_iter()
            .map(|(key, _, _)| key)
            .collect())
    }

    /// Write a whole object with HTTP metadata (`Content-Type`, `Cache-Control`) for
    /// stores that serve it (buckets behind a CDN). A local folder has nowhere to keep
    /// metadata, so there the object is written plainly.
    pub async fn put_with(
        &self,
        key: &str,
        body: Bytes,
        content_type: &str,
        cache_control: &str,
    ) -> Result<(), ExportError> {
        if self.url.starts_with("file://") || !self.url.contains("://") {
            return self.put(key, body).await;
        }
        let path = self.path(key)?;
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, content_type.to_string().into());
        attributes.insert(Attribute::CacheControl, cache_control.to_string().into());
        let opts = PutOptions {
            attributes,
            ..Default::default()
        };
        self.store
            .put_opts(&path, PutPayload::from(body), opts)
            .await
            .map(|_| ())
            .map_err(|e| self.store_error("put", key, &e))
    }

    /// Remove an object; removing one that does not exist is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ExportError> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error("delete", key, &e)),
        }
    }

    /// Every object under `prefix` as (key relative to the target's prefix, size, a
    /// version tag: the ETag, or the modification time where there is none), sorted.
    pub async fn list_versions(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, u64, String)>, ExportError> {
        let trimmed = prefix.trim_matches('/');
        let path = if trimmed.is_empty() {
            self.prefix.clone()
        } else {
            self.path(trimmed)?
        };
        let metas: Vec<_> = self
            .store
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(|e| self.store_error("list", prefix, &e))?;
        let mut out: Vec<(String, u64, String)> = metas
            .iter()
            .filter_map(|m| {
                let parts: Vec<String> = m
                    .location
                    .prefix_match(&self.prefix)?
                    .map(|p| p.as_ref().to_string())
                    .collect();
                let tag = m.e_tag.clone().unwrap_or_else(|| {
                    m.last_modified
                        .timestamp_nanos_opt()
                        .unwrap_or(0)
                        .to_string()
                });
                Some((parts.join("/"), m.size, tag))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// An error of operation `op` on `key`, scrubbed of secrets.
    fn store_error(&self, op: &'static str, key: &str, e: &object_store::Error) -> ExportError {
        ExportError::Store {
            op,
            key: key.into(),
            url: self.url.clone(),
            reason: scrub_text(&error_chain(e), "", "", &self.secrets),
        }
    }

    /// The folder of a local target (`file://` URL or plain path), for callers that write
    /// many files faster with plain file-system calls.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// Replace the secrets of this target in `text` (for messages built elsewhere).
    pub fn scrub(&self, text: &str) -> String {
        scrub_text(text, "", "", &self.secrets)
    }
}

/// An error and its causes, `: `-separated, without repeating a cause that the
/// previous message already contains.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !msg.is_empty() && !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// `text` with the raw URL replaced by its redacted form and every secret by `***`.
fn scrub_text(text: &str, raw_url: &str, shown_url: &str, secrets: &[String]) -> String {
    let mut out = if raw_url.is_empty() || raw_url == shown_url {
        text.to_string()
    } else {
        text.replace(raw_url, shown_url)
    };
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// `url` without password (and the user name before it), query and fragment (where
/// SAS tokens and passwords live).
pub fn redact_url(url: &str) -> String {
    let raw = url.trim();
    if let Ok(mut u) = Url::parse(raw)
        && raw.contains("://")
    {
        // `az://container@account…` carries the container as user name: keep a user
        // name alone, drop it together with a password (`key:secret@`).
        if u.password().is_some() {
            let _ = u.set_username("");
            let _ = u.set_password(None);
        }
        u.set_query(None);
        u.set_fragment(None);
        return u.to_string();
    }
    // Not a URL (a plain path) or unparsable: cut user info and query by hand.
    let no_query = raw.split(['?', '#']).next().unwrap_or_default();
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => no_query.to_string(),
    }
}

/// Minimum length of a value treated as a secret (shorter ones would mangle messages).
const MIN_SECRET_LEN: usize = 4;

fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    !n.ends_with("_id")
        && !n.ends_with("_name")
        && [
            "secret",
            "token",
            "password",
            "key",
            "sas",
            "signature",
            "credential",
        ]
        .iter()
        .any(|w| n.contains(w))
}

/// Credential values in the cloud variables of the environment.
fn env_secrets() -> BTreeSet<String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, v)| {
            let upper = k.to_ascii_uppercase();
            (upper.starts_with("AWS_")
                || upper.starts_with("GOOGLE_")
                || upper.starts_with("AZURE_"))
                && is_secret_name(k)
                && v.len() >= MIN_SECRET_LEN
        })
        .map(|(_, v)| v)
        .collect()
}

fn option_secrets(options: &[(&str, &str)]) -> BTreeSet<String> {
    options
        .iter()
        .filter(|(k, v)| is_secret_name(k) && v.len() >= MIN_SECRET_LEN)
        .map(|(_, v)| v.to_string())
        .collect()
}

/// The password and query values of a URL.
fn url_secrets(raw: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(u) = Url::parse(raw) {
        if let Some(p) = u.password() {
            out.insert(p.to_string());
            if let Some(d) = percent_decoded(p) {
                out.insert(d);
            }
        }
        if let Some(q) = u.query() {
            out.insert(q.to_string());
            for (_, v) in u.query_pairs() {
                out.insert(v.into_owned());
            }
        }
    }
    out.retain(|s| s.len() >= MIN_SECRET_LEN);
    out
}

/// `s` with percent escapes decoded (URL user info comes encoded).
fn percent_decoded(s: &str) -> Option<String> {
    let u = Url::parse(&format!("x://h/?v={s}")).ok()?;
    u.query_pairs().next().map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_user_info_and_query() {
        assert_eq!(
            redact_url("s3://AKIA:supersecret@bucket/pre/fix?token=abc"),
            "s3://bucket/pre/fix"
        );
        assert_eq!(redact_url("az://container/prefix"), "az://container/prefix");
        assert_eq!(
            redact_url("az://cont@acct.blob.core.windows.net/p?sv=1&sig=x"),
            "az://cont@acct.blob.core.windows.net/p"
        );
        assert_eq!(redact_url("./data/objects"), "./data/objects");
        assert_eq!(redact_url("weird://u:p@[bad/x?sig=1"), "weird://[bad/x");
    }

    #[test]
    fn errors_hide_credentials() {
        let e = open_store("ftp://user:hunter22@host/x?sig=topsecret")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("ftp://host/x"), "{e}");
        assert!(!e.contains("hunter22") && !e.contains("topsecret"), "{e}");
        let e = open_store_with(
            "s3://bucket/p",
            &[
                ("aws_secret_access_key", "s3cr3t-value"),
                ("no_such_option", "x"),
            ],
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("no_such_option") && !e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn keys_get_the_prefix() {
        let t = open_store("memory:///some/prefix/").unwrap();
        assert_eq!(t.prefix(), "some/prefix");
        assert_eq!(
            t.path("v1/a.json").unwrap().as_ref(),
            "some/prefix/v1/a.json"
        );
        assert!(t.path("v1//a.json").is_err());
        assert!(t.path("../a.json").is_err());
        assert!(t.path("").is_err());
        let t = open_store("memory://").unwrap();
        assert_eq!(t.path("v1/a.json").unwrap().as_ref(), "v1/a.json");
    }
}
