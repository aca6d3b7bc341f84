//! `kubekuma serve`: the built site on its own listener, for users without a CDN or a
//! bucket website. The files are answered by [`crate::site::Site`] (in-memory cache,
//! gzip, `ETag`/304) through the agent's listener ([`crate::admin`]: the security
//! headers, connection limits, `/health` and `/ready`), with no admin API and no pushes.
//!
//! A local folder (`/path` or `file:///path`) is served as it is. A bucket (`s3://`,
//! `gs://`, `az://`) is mirrored into a local folder ([`Mirror`]) and kept in step every
//! few seconds: only objects whose version changed are fetched, objects gone from the
//! bucket are removed, and the builder's manifest is written last so the site's cache
//! turns over once per build. The mirror is bounded ([`MIRROR_BUDGET`] bytes by default):
//! a bucket holding more is refused with an error naming the bound, and the copy already
//! served stays as it was. `/ready` answers 503 until the first copy is complete.
//!
//! A request whose `Host` is the exposure host of a page (`spec.exposure.mode: ingress`;
//! the builder's `.kubekuma/hosts.json`, copied with the rest) is answered with that
//! page at `/` ([`crate::site::Site::serve`]), so the Ingresses the agent makes need no
//! path rewriting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kubekuma_builder::publish::MANIFEST;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::listen::{ListenOptions, ServeError};
use crate::admin::{Api, Health};
use crate::export::{ExportError, ObjectTarget};

/// At most this many bytes of a bucket are mirrored by default (the size of the site's
/// in-memory cache, [`crate::site::CACHE_BUDGET`]).
pub const MIRROR_BUDGET: u64 = crate::site::CACHE_BUDGET as u64;

/// What can stop `kubekuma serve`.
#[derive(Debug, thiserror::Error)]
pub enum SiteServeError {
    /// The `--site` URL names no store that can be read.
    #[error("--site: {0}")]
    Store(#[from] ExportError),
    /// A local `--site` folder does not exist.
    #[error("--site: {0} is not a folder (build the site into it first: kubekuma build --out …)")]
    NotAFolder(PathBuf),
    /// The mirror folder cannot be made.
    #[error("cannot make the folder for the copy of the bucket: {0}")]
    MirrorDir(#[source] std::io::Error),
    /// The listener could not start.
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        /// The address asked for.
        listen: String,
        /// Why.
        #[source]
        source: ServeError,
    },
}

/// Why one pass of the mirror failed (the copy served is left as it was before it).
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Reading the bucket failed.
    #[error(transparent)]
    Store(#[from] ExportError),
    /// The bucket holds more than the mirror may keep.
    #[error(
        "the site in {url} holds {bytes} bytes, more than the {budget} bytes `kubekuma serve` copies (--max-bytes); serve the bucket through a CDN or bucket website instead"
    )]
    TooLarge {
        /// The bucket (credentials redacted).
        url: String,
        /// Bytes of objects listed.
        bytes: u64,
        /// The bound.
        budget: u64,
    },
    /// A key that cannot be a file under the mirror folder (`..`, absolute).
    #[error("object {0:?} cannot be copied to a file (unsafe key)")]
    UnsafeKey(String),
    /// Writing the local copy failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A local copy of the site a bucket holds.
#[derive(Debug)]
pub struct Mirror {
    source: ObjectTarget,
    dir: PathBuf,
    budget: u64,
    /// Version tag of every object copied, by key.
    copied: HashMap<String, String>,
    /// Whether files left in the folder from before (a restarted pod) were looked at.
    swept: bool,
}

/// What one [`Mirror::sync`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Objects fetched (new or changed).
    pub fetched: usize,
    /// Files removed (gone from the bucket).
    pub removed: usize,
}

impl Mirror {
    /// Copy `source` into `dir` (made when missing), keeping at most `budget` bytes.
    pub fn new(source: ObjectTarget, dir: PathBuf, budget: u64) -> Self {
        Mirror {
            source,
            dir,
            budget,
            copied: HashMap::new(),
            swept: false,
        }
    }

    /// The local folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bring the copy in step with the bucket: fetch what is new or changed, the
    /// manifest last; remove what is gone. Nothing is changed when the bucket is over
    /// the bound.
    pub async fn sync(&mut self) -> Result<SyncReport, MirrorError> {
        let listed = self.source.list_versions("").await?;
        let bytes: u64 = listed.iter().map(|(_, size, _)| size).sum();
        if bytes > self.budget {
            return Err(MirrorError::TooLarge {
                url: crate::export::target::redact_url(self.source.url()),
                bytes,
                budget: self.budget,
            });
        }
        let mut report = SyncReport::default();
        let mut manifest = None;
        for (key, _, version) in &listed {
            if self.copied.get(key) == Some(version) {
                continue;
            }
            if key == MANIFEST {
                manifest = Some((key, version));
                continue;
            }
            if self.fetch(key, version).await? {
                report.fetched += 1;
            }
        }
        let present: std::collections::HashSet<&str> =
            listed.iter().map(|(k, _, _)| k.as_str()).collect();
        if !self.swept {
            // Files of an earlier copy (a restarted pod keeps its emptyDir) are gone
            // from the bucket too when it no longer lists them.
            let mut old = Vec::new();
            files_under(&self.dir, "", &mut old);
            for key in old {
                self.copied.entry(key).or_default();
            }
            self.swept = true;
        }
        let gone: Vec<String> = self
            .copied
            .keys()
            .filter(|k| !present.contains(k.as_str()))
            .cloned()
            .collect();
        for key in gone {
            let path = self.file(&key)?;
            match std::fs::remove_file(&path) {
                Ok(()) => report.removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(MirrorError::Write { path, source }),
            }
            self.copied.remove(&key);
        }
        if let Some((key, version)) = manifest
            && self.fetch(key, version).await?
        {
            report.fetched += 1;
        }
        Ok(report)
    }

    /// Copy one object; `false` when it vanished since the listing.
    async fn fetch(&mut self, key: &str, version: &str) -> Result<bool, MirrorError> {
        let path = self.file(key)?;
        let Some(body) = self.source.get(key).await? else {
            return Ok(false);
        };
        let write = |path: &Path| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // Written aside and renamed, so a reader sees the old file or the new one.
            let tmp = path.with_file_name(format!(
                ".{}.kubekuma-part",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            std::fs::write(&tmp, &body)?;
            std::fs::rename(&tmp, path)
        };
        write(&path).map_err(|source| MirrorError::Write {
            path: path.clone(),
            source,
        })?;
        self.copied.insert(key.to_string(), version.to_string());
        Ok(true)
    }

    /// The file of `key` under the mirror folder.
    fn file(&self, key: &str) -> Result<PathBuf, MirrorError> {
        let mut out = self.dir.clone();
        for part in key.split('/') {
            match part {
                "" | "." | ".." => return Err(MirrorError::UnsafeKey(key.to_string())),
                p if p.contains('\\') || p.contains('\0') => {
                    return Err(MirrorError::UnsafeKey(key.to_string()));
                }
                p => out.push(p),
            }
        }
        Ok(out)
    }
}

/// Keys (`/`-separated, relative to `dir`) of the files under `dir`, into `out`;
/// unreadable folders are skipped.
fn files_under(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path(), &key, out),
            Ok(t) if t.is_file() => out.push(key),
            _ => {}
        }
    }
}

/// Options of `kubekuma serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The folder or bucket the builder publishes to.
    pub site: String,
    /// Address to listen on.
    pub listen: String,
    /// Timeouts, connection limits and trusted proxies of the listener.
    pub listener: ListenOptions,
    /// Seconds between looks at a bucket for a new build.
    pub interval: Duration,
    /// At most this many bytes of a bucket are copied.
    pub max_bytes: u64,
    /// Where a bucket's copy is kept (`None`: a new temporary folder, removed at exit);
    /// files in it that the bucket does not hold are removed.
    pub mirror_dir: Option<PathBuf>,
    /// Store configuration applied after the environment (see
    /// [`crate::export::open_store_with`]).
    pub store_options: Vec<(String, String)>,
}

impl ServeOptions {
    /// Serve `site` on `listen` with the defaults of everything else.
    pub fn new(site: &str, listen: &str) -> Self {
        ServeOptions {
            site: site.to_string(),
            listen: listen.to_string(),
            listener: ListenOptions::default(),
            interval: Duration::from_secs(5),
            max_bytes: MIRROR_BUDGET,
            mirror_dir: None,
            store_options: Vec::new(),
        }
    }
}

/// A running site server.
#[derive(Debug)]
pub struct Serving {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The listener; ends after shutdown.
    pub server: JoinHandle<()>,
    /// The mirror of a bucket, ending with shutdown (`None` for a folder).
    pub mirror: Option<JoinHandle<()>>,
    /// The temporary mirror folder, removed when dropped.
    pub _temp: Option<tempfile::TempDir>,
}

/// Start serving `opts.site` until `shutdown` turns true.
pub async fn start(
    opts: ServeOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<Serving, SiteServeError> {
    let health = Arc::new(Health::default());
    // Opening a local store makes its folder; a folder never built is a mistake to name.
    let site = opts.site.trim();
    let local = match site.strip_prefix("file://") {
        Some(p) => Some(PathBuf::from(p)),
        None if !site.contains("://") => Some(PathBuf::from(site)),
        None => None,
    };
    if let Some(p) = local
        && !p.is_dir()
    {
        return Err(SiteServeError::NotAFolder(p));
    }
    let options: Vec<(&str, &str)> = opts
        .store_options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let target = crate::export::open_store_with(&opts.site, &options)?;
    let (dir, temp, mirror) = match target.local_root() {
        Some(root) => {
            if !root.is_dir() {
                return Err(SiteServeError::NotAFolder(root.to_path_buf()));
            }
            health.set_ready(true);
            (root.to_path_buf(), None, None)
        }
        None => {
            let (dir, temp) = match &opts.mirror_dir {
                Some(d) => {
                    std::fs::create_dir_all(d).map_err(SiteServeError::MirrorDir)?;
                    (d.clone(), None)
                }
                None => {
                    let t = tempfile::Builder::new()
                        .prefix("kubekuma-site-")
                        .tempdir()
                        .map_err(SiteServeError::MirrorDir)?;
                    (t.path().to_path_buf(), Some(t))
                }
            };
            let mirror = Mirror::new(target, dir.clone(), opts.max_bytes);
            let task = tokio::spawn(keep_in_step(
                mirror,
                opts.interval,
                health.clone(),
                shutdown.clone(),
            ));
            (dir, temp, Some(task))
        }
    };
    let api = Api::new(health).with_site(dir);
    let (addr, server) =
        crate::admin::serve_with(&opts.listen, Arc::new(api), opts.listener, shutdown)
            .await
            .map_err(|source| SiteServeError::Listen {
                listen: opts.listen.clone(),
                source,
            })?;
    Ok(Serving {
        addr,
        server,
        mirror,
        _temp: temp,
    })
}

/// Sync the mirror every `interval` until shutdown; ready after the first complete copy.
async fn keep_in_step(
    mut mirror: Mirror,
    interval: Duration,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        match mirror.sync().await {
            Ok(r) => {
                if r.fetched + r.removed > 0 {
                    tracing::info!(
                        fetched = r.fetched,
                        removed = r.removed,
                        "site copy updated"
                    );
                }
                if failing {
                    tracing::info!("site copy in step again");
                    failing = false;
                }
                health.set_ready(true);
            }
            Err(e) => {
                // The copy already served stays; before the first one, /ready says why.
                if !failing {
                    tracing::warn!(error = %e, "cannot update the copy of the site");
                }
                failing = true;
                if !health.ready.load(std::sync::atomic::Ordering::SeqCst) {
                    health.set_problem(Some(e.to_string()));
                }
                continue_after(interval, &mut shutdown).await;
                if *shutdown.borrow() {
                    return;
                }
                continue;
            }
        }
        health.set_problem(None);
        continue_after(interval, &mut shutdown).await;
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn continue_after(interval: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(interval.max(Duration::from_secs(1))) => {}
        _ = shutdown.changed() => {}
    }
}
