//! Publishing a rendered site to a folder or a bucket, incrementally.
//!
//! A manifest (`.kubekuma/manifest.json`: path → SHA-256 of the content) written last
//! records what the output holds. A build writes only files whose hash differs, in
//! stage order (assets, then badges/JSON/feeds, then pages, then the index), so a CDN
//! never serves a page whose assets are missing; files of the previous build that are
//! gone are deleted after the pages that used them were replaced. When a write fails,
//! later stages are not written and the manifest records what did succeed, so the next
//! build retries exactly what is missing.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use kubekuma_crds::store::{ExportError, ObjectTarget};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::digest::hex;
use crate::par::{Cancelled, off_runtime, par_map};

/// Order of publication: assets before what uses them, pages before indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Hashed assets.
    Asset,
    /// Badges, JSON, feeds.
    Data,
    /// Status pages.
    Page,
    /// The site index.
    Index,
}

/// One file of the site.
#[derive(Clone, Debug)]
pub struct OutFile {
    /// Path relative to the output root.
    pub path: String,
    /// Content.
    pub bytes: Vec<u8>,
    /// When it is published.
    pub stage: Stage,
    /// The SHA-256 of the content when already known (the publisher does not hash it
    /// again). `bytes` may be empty only for content known to be unchanged since the
    /// previous build (this hash is then the one the manifest records): a PNG badge
    /// whose SVG did not change, or a page or badge whose inputs did not change since
    /// the last build of the same builder (`render::RenderCache`), is not rendered again.
    pub keep: Option<String>,
}

/// Where the manifest lives in the output.
pub const MANIFEST: &str = ".kubekuma/manifest.json";

/// The site's host names ([`kubekuma_crds::objects::SiteHosts`]), written with the pages
/// when a page has any: what `kubekuma serve` answers each host with.
pub const HOSTS: &str = ".kubekuma/hosts.json";
/// Cache-Control of content-hashed assets.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache-Control of pages, JSON, feeds and badges.
pub const CACHE_SHORT: &str = "public, max-age=60";
/// Blocking tasks writing a local folder at once.
const WRITE_TASKS: usize = 16;
/// Writes in flight at once.
const CONCURRENCY: usize = 32;
/// Show a progress bar on a terminal when at least this many files change.
const PROGRESS_THRESHOLD: usize = 200;

/// Why a publication failed or stopped half-way.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The manifest of the previous build could not be read.
    #[error("{target}: cannot read the manifest: {source}")]
    ReadManifest {
        /// The output (credentials redacted).
        target: String,
        /// Why.
        source: ExportError,
    },
    /// A file could not be written or a stale one removed; later stages were not
    /// written, and the manifest records what was.
    #[error("{target}: publishing stopped after {written} written file(s): {source}")]
    Stopped {
        /// The output (credentials redacted).
        target: String,
        /// Files written before it stopped.
        written: usize,
        /// The first failure.
        source: WriteError,
    },
    /// Hashing on the blocking pool was cancelled; nothing was written.
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    /// The new manifest could not be written (the next build reads it again).
    #[error("{target}: cannot write the manifest: {source}")]
    WriteManifest {
        /// The output (credentials redacted).
        target: String,
        /// Why.
        source: ExportError,
    },
}

/// Why one file could not be written or removed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The object store refused it (names the key and the store).
    #[error(transparent)]
    Store(#[from] ExportError),
    /// A file of a local folder could not be written.
    #[error("cannot write {path} in {root}: {source}")]
    Local {
        /// The file, relative to the output.
        path: String,
        /// The output folder.
        root: String,
        /// Why.
        source: std::io::Error,
    },
    /// A writer task of a local folder panicked or was cancelled.
    #[error("a writer task of {root} failed: {source}")]
    Task {
        /// The output folder.
        root: String,
        /// Why.
        source: tokio::task::JoinError,
    },
}

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
struct Manifest {
    version: u32,
    /// The fingerprint of the build that wrote everything listed (inputs, theme,
    /// options, builder version); absent when the last build was not complete, or in
    /// manifests of builders before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    /// Shared with the render of the next build, which reads it on another thread.
    #[serde(serialize_with = "shared_ser", deserialize_with = "shared_de")]
    files: Arc<BTreeMap<String, String>>,
}

fn shared_ser<S: serde::Serializer>(
    files: &Arc<BTreeMap<String, String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    files.as_ref().serialize(s)
}

fn shared_de<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Arc<BTreeMap<String, String>>, D::Error> {
    BTreeMap::deserialize(d).map(Arc::new)
}

/// What a publication did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishReport {
    /// Files written (new or changed).
    pub written: Vec<String>,
    /// Files left alone because they were unchanged.
    pub unchanged: usize,
    /// Stale files removed.
    pub removed: Vec<String>,
}

/// Publishes to one output, remembering the manifest between builds.
pub(crate) struct Publisher {
    out: ObjectTarget,
    manifest: Option<Manifest>,
    /// The manifest as read but not yet parsed whole (`Some(None)`: there is none).
    raw: Option<Option<Bytes>>,
}

/// The head of a manifest: its fingerprint, read without building the list of files.
#[derive(Deserialize)]
struct ManifestHead {
    #[serde(default)]
    fingerprint: Option<String>,
}

impl Publisher {
    /// A publisher for `out`; the manifest is read on the first publication.
    pub fn new(out: ObjectTarget) -> Self {
        Publisher {
            out,
            manifest: None,
            raw: None,
        }
    }

    /// The stored manifest's bytes (read once).
    async fn raw(&mut self) -> Result<Option<Bytes>, PublishError> {
        if let Some(raw) = &self.raw {
            return Ok(raw.clone());
        }
        let raw = self
            .out
            .get(MANIFEST)
            .await
            .map_err(|source| PublishError::ReadManifest {
                target: self.out.to_string(),
                source,
            })?;
        self.raw = Some(raw.clone());
        Ok(raw)
    }

    /// What the output holds now: path → SHA-256, from the manifest (read once).
    pub async fn previous(&mut self) -> Result<Arc<BTreeMap<String, String>>, PublishError> {
        if self.manifest.is_none() {
            self.manifest = Some(match self.raw().await? {
                Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
                None => Manifest::default(),
            });
            self.raw = None;
        }
        Ok(self
            .manifest
            .as_ref()
            .map(|m| m.files.clone())
            .unwrap_or_default())
    }

    /// The fingerprint of the build that published what the output holds, if that
    /// build was complete (from the manifest, read once).
    pub async fn fingerprint(&mut self) -> Result<Option<String>, PublishError> {
        if let Some(m) = &self.manifest {
            return Ok(m.fingerprint.clone());
        }
        // Only the head: a skipped build never needs the list of files.
        Ok(self
            .raw()
            .await?
            .and_then(|b| serde_json::from_slice::<ManifestHead>(&b).ok())
            .and_then(|h| h.fingerprint))
    }

    /// Publish `files`, writing only what changed and removing what is gone. When
    /// everything was published, the manifest records `fingerprint` (else none, so the
    /// next build is not skipped).
    pub async fn publish(
        &mut self,
        mut files: Vec<OutFile>,
        fingerprint: Option<String>,
    ) -> Result<PublishReport, PublishError> {
        self.previous().await?;
        let old = self.manifest.take().unwrap_or_default();
        // By path, to walk alongside the old manifest (sorted the same way); the changed
        // files are put in stage order below.
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut report = PublishReport::default();
        let mut changed: Vec<(OutFile, String)> = Vec::new();
        // Hashing tens of megabytes of badges and pages: on all cores, off the runtime.
        // Only files without a known hash are hashed; the known ones are moved, not
        // copied (most of a one-change rebuild's 260,000 files).
        let (files, hashes) = off_runtime(move || {
            let hashes = par_map(&files, |f| match &f.keep {
                Some(_) => None,
                None => Some(hex(&Sha256::digest(&f.bytes))),
            });
            (files, hashes)
        })
        .await?;
        // One walk over both sorted lists: the unchanged files, the changed ones, and
        // the old paths no file has any more (removed after a complete publication).
        let mut unchanged: Vec<(String, String)> = Vec::with_capacity(files.len());
        let mut gone: Vec<String> = Vec::new();
        let mut old_iter = old.files.iter().peekable();
        let mut last: Option<(&String, &String)> = None;
        for (mut f, h) in files.into_iter().zip(hashes) {
            let h = h.or_else(|| f.keep.take()).unwrap_or_default();
            while let Some((k, _)) = old_iter.next_if(|(k, _)| k.as_str() < f.path.as_str()) {
                gone.push(k.clone());
            }
            if let Some(entry) = old_iter.next_if(|(k, _)| **k == f.path) {
                last = Some(entry);
            }
            let old_h = last.filter(|(k, _)| **k == f.path).map(|(_, v)| v);
            if old_h == Some(&h) {
                report.unchanged += 1;
                unchanged.push((f.path, h));
            } else {
                changed.push((f, h));
            }
        }
        gone.extend(old_iter.map(|(k, _)| k.clone()));
        // Sorted by path already: built in one go.
        let mut new_files: BTreeMap<String, String> = unchanged.into_iter().collect();
        changed.sort_by(|(a, _), (b, _)| a.stage.cmp(&b.stage).then(a.path.cmp(&b.path)));
        let bar = progress(changed.len());

        // Stage by stage; a failure stops before the next stage.
        let mut failure = None;
        let mut i = 0;
        while i < changed.len() {
            let stage = changed[i].0.stage;
            let end = changed[i..]
                .iter()
                .position(|(f, _)| f.stage != stage)
                .map_or(changed.len(), |p| i + p);
            let results: Vec<(String, String, Result<(), WriteError>)> = match self.out.local_root()
            {
                Some(root) => write_local(root, &mut changed[i..end], &old).await,
                None => {
                    // Owned futures (no closure borrowing its argument), so that the
                    // build's future stays Send.
                    let out = &self.out;
                    let puts: Vec<_> = changed[i..end]
                        .iter_mut()
                        .map(|(f, h)| {
                            let (path, hash) = (f.path.clone(), h.clone());
                            let bytes = Bytes::from(std::mem::take(&mut f.bytes));
                            async move {
                                let r = out
                                    .put_with(
                                        &path,
                                        bytes,
                                        content_type(&path),
                                        cache_control(&path),
                                    )
                                    .await
                                    .map_err(WriteError::from);
                                (path, hash, r)
                            }
                        })
                        .collect();
                    futures::stream::iter(puts)
                        .buffer_unordered(CONCURRENCY)
                        .collect()
                        .await
                }
            };
            for (path, h, r) in results {
                if let Some(b) = &bar {
                    b.inc(1);
                }
                match r {
                    Ok(()) => {
                        new_files.insert(path.clone(), h);
                        report.written.push(path);
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                        // Keep the old entry, if any, so the file is retried next time.
                        if let Some(old_h) = old.files.get(&path) {
                            new_files.insert(path, old_h.clone());
                        }
                    }
                }
            }
            if failure.is_some() {
                // Files of later stages stay as they were.
                for (f, _) in &changed[end..] {
                    if let Some(old_h) = old.files.get(&f.path) {
                        new_files.insert(f.path.clone(), old_h.clone());
                    }
                }
                break;
            }
            i = end;
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        report.written.sort();

        if failure.is_none() {
            // Every file is in `new_files` now: what is stale is what no file has.
            for p in gone {
                match self.out.delete(&p).await {
                    Ok(()) => report.removed.push(p),
                    Err(e) => {
                        failure.get_or_insert(WriteError::Store(e));
                        if let Some(h) = old.files.get(&p) {
                            new_files.insert(p.clone(), h.clone());
                        }
                    }
                }
            }
        } else {
            // Nothing is removed after a failed write: the old pages may still use it.
            for (p, h) in old.files.iter() {
                new_files.entry(p.clone()).or_insert_with(|| h.clone());
            }
        }

        let new = Manifest {
            version: 1,
            fingerprint: if failure.is_none() { fingerprint } else { None },
            files: Arc::new(new_files),
        };
        if new != old {
            let body = serde_json::to_vec_pretty(&new).unwrap_or_default();
            if let Err(source) = self
                .out
                .put_with(MANIFEST, Bytes::from(body), "application/json", "no-store")
                .await
            {
                // Unknown state: read it again next time.
                self.manifest = None;
                self.raw = None;
                return Err(match failure {
                    Some(source) => PublishError::Stopped {
                        target: self.out.to_string(),
                        written: report.written.len(),
                        source,
                    },
                    None => PublishError::WriteManifest {
                        target: self.out.to_string(),
                        source,
                    },
                });
            }
        }
        self.manifest = Some(new);
        match failure {
            Some(source) => Err(PublishError::Stopped {
                target: self.out.to_string(),
                written: report.written.len(),
                source,
            }),
            None => Ok(report),
        }
    }
}

/// Write files into a local folder with plain file-system calls on the blocking pool, in
/// [`WRITE_TASKS`] tasks.
///
/// - A file that replaces an existing one is written to a temporary name and renamed, so
///   readers see the old or the new content, never a torn file. A file that is new
///   (`fresh`: not in the previous manifest) is created in place, as nothing links to it
///   yet (its pages come in a later stage); should the path exist after all (a build
///   that stopped half-way), it is replaced like any other.
/// - Files with the same content (the same badge picture on many monitors) are written
///   once and hard-linked: a later build replaces a link by renaming over it, which
///   leaves the others as they are. When linking fails, the content is written again.
async fn write_local(
    root: &std::path::Path,
    files: &mut [(OutFile, String)],
    old: &Manifest,
) -> Vec<(String, String, Result<(), WriteError>)> {
    // Files with equal content go to the same task, so the first is written before the
    // others link to it.
    let mut groups: std::collections::HashMap<&str, Vec<usize>> = Default::default();
    for (i, (_, h)) in files.iter().enumerate() {
        groups.entry(h.as_str()).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
    groups.sort_unstable_by_key(|g| g[0]);
    // A few tasks per core: more only queue up on the same directory locks.
    let per_task = files.len().div_ceil(WRITE_TASKS).max(64);
    // (path, bytes, hash, fresh) by group of equal content, by task.
    type Group = Vec<(String, Vec<u8>, String, bool)>;
    let mut jobs: Vec<Vec<Group>> = Vec::new();
    let mut in_job = per_task;
    for group in groups {
        if in_job >= per_task {
            jobs.push(Vec::new());
            in_job = 0;
        }
        in_job += group.len();
        let group = group
            .into_iter()
            .map(|i| {
                let (f, h) = &mut files[i];
                let fresh = !old.files.contains_key(&f.path);
                (
                    f.path.clone(),
                    std::mem::take(&mut f.bytes),
                    h.clone(),
                    fresh,
                )
            })
            .collect();
        if let Some(job) = jobs.last_mut() {
            job.push(group);
        }
    }
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let root = root.to_path_buf();
            tokio::task::spawn_blocking(move || {
                let mut dirs = std::collections::HashSet::new();
                let mut done = Vec::new();
                for group in job {
                    let mut first: Option<std::path::PathBuf> = None;
                    for (path, bytes, h, fresh) in group {
                        let r = write_one(&root, &path, &bytes, fresh, first.as_deref(), &mut dirs)
                            .map_err(|source| WriteError::Local {
                                path: path.clone(),
                                root: root.display().to_string(),
                                source,
                            });
                        if r.is_ok() && first.is_none() {
                            first = Some(root.join(&path));
                        }
                        done.push((path, h, r));
                    }
                }
                done
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        match t.await {
            Ok(v) => out.extend(v),
            Err(source) => out.push((
                String::new(),
                String::new(),
                Err(WriteError::Task {
                    root: root.display().to_string(),
                    source,
                }),
            )),
        }
    }
    out
}

/// Writes one file: created in place when `fresh`, else through a temporary name and a
/// rename, so a reader never sees half of a file it could already reach. With `same`
/// (a file just written with the same content), a hard link to it instead of the bytes.
/// `dirs` remembers the folders this writer already created.
fn write_one(
    root: &std::path::Path,
    rel: &str,
    bytes: &[u8],
    fresh: bool,
    same: Option<&std::path::Path>,
    dirs: &mut std::collections::HashSet<std::path::PathBuf>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    if rel
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(std::io::Error::other(
            "not a relative path inside the output",
        ));
    }
    let path = root.join(rel);
    if let Some(dir) = path.parent()
        && !dirs.contains(dir)
    {
        std::fs::create_dir_all(dir)?;
        dirs.insert(dir.to_path_buf());
    }
    if fresh {
        let created = match same {
            Some(same) => std::fs::hard_link(same, &path).is_ok(),
            None => match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(bytes)?;
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(e),
            },
        };
        if created {
            return Ok(());
        }
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let linked = same.is_some_and(|same| {
        let _ = std::fs::remove_file(&tmp);
        std::fs::hard_link(same, &tmp).is_ok()
    });
    if !linked {
        std::fs::write(&tmp, bytes)?;
    }
    std::fs::rename(&tmp, &path)
}

fn progress(n: usize) -> Option<indicatif::ProgressBar> {
    if n < PROGRESS_THRESHOLD || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("publishing {bar:40} {pos}/{len} files {eta}")
    {
        bar.set_style(style);
    }
    Some(bar)
}

/// The Content-Type of a site file, by extension.
pub fn content_type(path: &str) -> &'static str {
    if path == "_headers" {
        return "text/plain; charset=utf-8";
    }
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "rss" => "application/rss+xml; charset=utf-8",
        "atom" => "application/atom+xml; charset=utf-8",
        "xml" => "application/xml; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        _ => "application/octet-stream",
    }
}

/// The Cache-Control of a site file: a year for content-hashed assets, a minute else.
pub fn cache_control(path: &str) -> &'static str {
    if path.starts_with("assets/") {
        CACHE_IMMUTABLE
    } else if path == MANIFEST {
        "no-store"
    } else {
        CACHE_SHORT
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::Stage;
    use super::*;

    fn file(path: &str, bytes: &[u8]) -> OutFile {
        OutFile {
            path: path.into(),
            bytes: bytes.to_vec(),
            stage: Stage::Data,
            keep: None,
        }
    }

    /// Equal files are written once and hard-linked; replacing one later leaves the others
    /// as they were; a leftover file at a new path (a build that stopped half-way) is
    /// replaced; no temporary file stays behind.
    #[tokio::test]
    async fn a_folder_gets_equal_files_linked_and_replaces_them_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let out = kubekuma_crds::store::open_store(dir.path().to_str().unwrap()).unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/left.json"), b"half a fi").unwrap();
        let mut p = Publisher::new(out);
        let report = p
            .publish(
                vec![
                    file("a/1.png", b"same picture"),
                    file("a/2.png", b"same picture"),
                    file("b/3.png", b"same picture"),
                    file("b/other.png", b"another picture"),
                    file("b/left.json", b"{\"whole\":true}"),
                ],
                None,
            )
            .await
            .unwrap();
        assert_eq!(report.written.len(), 5);
        let read = |p: &str| std::fs::read(dir.path().join(p)).unwrap();
        let inode = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().ino();
        for p in ["a/1.png", "a/2.png", "b/3.png"] {
            assert_eq!(read(p), b"same picture", "{p}");
        }
        assert_eq!(read("b/other.png"), b"another picture");
        assert_eq!(read("b/left.json"), b"{\"whole\":true}");
        assert_eq!(inode("a/1.png"), inode("a/2.png"));
        assert_eq!(inode("a/1.png"), inode("b/3.png"));
        assert_ne!(inode("a/1.png"), inode("b/other.png"));

        let report = p
            .publish(
                vec![
                    file("a/1.png", b"same picture"),
                    file("a/2.png", b"changed picture"),
                    file("b/3.png", b"same picture"),
                    file("b/other.png", b"another picture"),
                    file("b/left.json", b"{\"whole\":true}"),
                ],
                None,
            )
            .await
            .unwrap();
        assert_eq!(report.written, vec!["a/2.png".to_string()]);
        assert_eq!(read("a/2.png"), b"changed picture");
        assert_eq!(read("a/1.png"), b"same picture");
        assert_eq!(read("b/3.png"), b"same picture");

        let leftovers: Vec<_> = ["a", "b"]
            .iter()
            .flat_map(|d| std::fs::read_dir(dir.path().join(d)).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
