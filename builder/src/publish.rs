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

use bytes::Bytes;
use futures::StreamExt;
use kubekuma_crds::store::ObjectTarget;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::render::OutFile;
use crate::source::hex;

/// Where the manifest lives in the output.
pub const MANIFEST: &str = ".kubekuma/manifest.json";
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

#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
struct Manifest {
    version: u32,
    files: BTreeMap<String, String>,
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
pub struct Publisher {
    out: ObjectTarget,
    manifest: Option<Manifest>,
}

impl Publisher {
    /// A publisher for `out`; the manifest is read on the first publication.
    pub fn new(out: ObjectTarget) -> Self {
        Publisher {
            out,
            manifest: None,
        }
    }

    /// The output.
    pub fn target(&self) -> &ObjectTarget {
        &self.out
    }

    /// What the output holds now: path → SHA-256, from the manifest (read once).
    pub async fn previous(&mut self) -> Result<BTreeMap<String, String>, String> {
        if self.manifest.is_none() {
            self.manifest = Some(match self.out.get(MANIFEST).await {
                Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_default(),
                Ok(None) => Manifest::default(),
                Err(e) => return Err(e.to_string()),
            });
        }
        Ok(self
            .manifest
            .as_ref()
            .map(|m| m.files.clone())
            .unwrap_or_default())
    }

    /// Publish `files`, writing only what changed and removing what is gone.
    pub async fn publish(&mut self, mut files: Vec<OutFile>) -> Result<PublishReport, String> {
        self.previous().await?;
        let old = self.manifest.take().unwrap_or_default();
        files.sort_by(|a, b| a.stage.cmp(&b.stage).then(a.path.cmp(&b.path)));
        let mut new = Manifest {
            version: 1,
            files: BTreeMap::new(),
        };
        let mut report = PublishReport::default();
        let mut changed: Vec<(OutFile, String)> = Vec::new();
        // Hashing tens of megabytes of badges and pages: on all cores.
        let hashes = crate::render::par_map(&files, |f| match &f.keep {
            Some(h) => h.clone(),
            None => hex(&Sha256::digest(&f.bytes)),
        });
        for (f, h) in files.into_iter().zip(hashes) {
            if old.files.get(&f.path) == Some(&h) {
                report.unchanged += 1;
                new.files.insert(f.path.clone(), h);
            } else {
                changed.push((f, h));
            }
        }
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
            let results: Vec<(String, String, Result<(), String>)> = match self.out.local_root() {
                Some(root) => write_local(root, &mut changed[i..end]).await,
                None => {
                    let out = &self.out;
                    futures::stream::iter(changed[i..end].iter_mut())
                        .map(|(f, h)| async move {
                            let r = out
                                .put_with(
                                    &f.path,
                                    Bytes::from(std::mem::take(&mut f.bytes)),
                                    content_type(&f.path),
                                    cache_control(&f.path),
                                )
                                .await
                                .map_err(|e| e.to_string());
                            (f.path.clone(), h.clone(), r)
                        })
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
                        new.files.insert(path.clone(), h);
                        report.written.push(path);
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                        // Keep the old entry, if any, so the file is retried next time.
                        if let Some(old_h) = old.files.get(&path) {
                            new.files.insert(path, old_h.clone());
                        }
                    }
                }
            }
            if failure.is_some() {
                // Files of later stages stay as they were.
                for (f, _) in &changed[end..] {
                    if let Some(old_h) = old.files.get(&f.path) {
                        new.files.insert(f.path.clone(), old_h.clone());
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
            let stale: Vec<String> = old
                .files
                .keys()
                .filter(|p| !new.files.contains_key(*p))
                .cloned()
                .collect();
            for p in stale {
                match self.out.delete(&p).await {
                    Ok(()) => report.removed.push(p),
                    Err(e) => {
                        failure.get_or_insert(e.to_string());
                        new.files.insert(p.clone(), old.files[&p].clone());
                    }
                }
            }
        } else {
            // Nothing is removed after a failed write: the old pages may still use it.
            for (p, h) in &old.files {
                new.files.entry(p.clone()).or_insert_with(|| h.clone());
            }
        }

        if new != old {
            let body = serde_json::to_vec_pretty(&new).unwrap_or_default();
            if let Err(e) = self
                .out
                .put_with(MANIFEST, Bytes::from(body), "application/json", "no-store")
                .await
            {
                failure.get_or_insert(e.to_string());
                // Unknown state: read it again next time.
                self.manifest = None;
                return Err(failure.unwrap_or_default());
            }
        }
        self.manifest = Some(new);
        match failure {
            Some(e) => Err(format!(
                "publishing stopped after {} written file(s): {e}",
                report.written.len()
            )),
            None => Ok(report),
        }
    }
}

/// Write files into a local folder with plain file-system calls on the blocking pool, in
/// [`WRITE_TASKS`] tasks: each is written to a temporary name and renamed, so readers
/// see the old or the new content, never a torn file.
async fn write_local(
    root: &std::path::Path,
    files: &mut [(OutFile, String)],
) -> Vec<(String, String, Result<(), String>)> {
    // A few tasks per core: more only queue up on the same directory locks.
    let per_task = files.len().div_ceil(WRITE_TASKS).max(64);
    let tasks: Vec<_> = files
        .chunks_mut(per_task)
        .map(|chunk| {
            let root = root.to_path_buf();
            let chunk: Vec<(String, Vec<u8>, String)> = chunk
                .iter_mut()
                .map(|(f, h)| (f.path.clone(), std::mem::take(&mut f.bytes), h.clone()))
                .collect();
            tokio::task::spawn_blocking(move || {
                let mut dirs = std::collections::HashSet::new();
                chunk
                    .into_iter()
                    .map(|(path, bytes, h)| {
                        let r = write_one(&root, &path, &bytes, &mut dirs)
                            .map_err(|e| format!("cannot write {path} in {}: {e}", root.display()));
                        (path, h, r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        match t.await {
            Ok(v) => out.extend(v),
            Err(e) => out.push((String::new(), String::new(), Err(e.to_string()))),
        }
    }
    out
}

/// Writes one file through a temporary name and a rename, so a reader never sees half a
/// file. `dirs` remembers the folders this writer already created.
fn write_one(
    root: &std::path::Path,
    rel: &str,
    bytes: &[u8],
    dirs: &mut std::collections::HashSet<std::path::PathBuf>,
) -> std::io::Result<()> {
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
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
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
