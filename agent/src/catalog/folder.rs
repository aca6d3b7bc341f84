//! Folder mode: every `.yaml`/`.yml` under the given paths (recursive, multi-document),
//! reloaded when a file changes. A broken edit keeps the last good version of the
//! resources it touches and reports the error.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::watch;

use super::bounds::{self, Refused};
use super::decode::{FileDocs, parse_text};
use super::snapshot::{Built, LastGood, Snapshot, build};
use crate::findings::{Finding, Origin, Severity};

/// Reads manifests from files and folders and keeps the last good state between loads.
#[derive(Debug, Default)]
pub struct FolderCatalog {
    paths: Vec<PathBuf>,
    last_good: Option<LastGood>,
}

fn is_yaml(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

/// Every YAML file under `path` (the path itself when it is a file), sorted.
fn collect(path: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<Finding>) {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => {
                    errors.push(file_error(path, format!("cannot read folder: {e}")));
                    return;
                }
            };
            entries.sort();
            for e in entries {
                let hidden = e
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                if hidden {
                    continue;
                }
                if e.is_dir() {
                    collect(&e, out, errors);
                } else if is_yaml(&e) {
                    out.push(e);
                }
            }
        }
        Ok(_) => out.push(path.to_path_buf()),
        Err(e) => errors.push(file_error(path, format!("cannot read: {e}"))),
    }
}

fn file_error(path: &Path, message: String) -> Finding {
    Finding {
        severity: Severity::Error,
        origin: Origin {
            file: path.display().to_string(),
            doc: 0,
        },
        resource: None,
        path: String::new(),
        message,
    }
}

/// A manifest path that cannot be read at all when folder mode starts.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the manifests at {path}: {source}")]
pub struct PathError {
    /// The path as given.
    pub path: String,
    /// Why (not found, permission denied, …).
    #[source]
    pub source: std::io::Error,
}

/// Whether every path given can be read: it exists, and a folder can be listed or a
/// file opened. Checked once at start, so a mistyped or unreadable `--config` is an error
/// instead of an agent running without monitors; later, while watching, a path that
/// goes away is a finding and its resources keep their last good versions.
pub fn check_paths(paths: &[PathBuf]) -> Result<(), PathError> {
    for p in paths {
        let error = |source| PathError {
            path: p.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(p).map_err(error)?;
        if meta.is_dir() {
            std::fs::read_dir(p).map_err(error)?;
        } else {
            std::fs::File::open(p).map_err(error)?;
        }
    }
    Ok(())
}

/// Read and decode every manifest file under `paths`. A file larger than
/// [`bounds::MAX_FILE_BYTES`], or past [`bounds::MAX_TOTAL_BYTES`] of all files together,
/// is not read (an error names it; its resources keep their last good versions).
pub fn read_paths(paths: &[PathBuf]) -> Vec<FileDocs> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        collect(p, &mut files, &mut errors);
    }
    let mut out: Vec<FileDocs> = errors
        .into_iter()
        .map(|e| FileDocs {
            docs: Vec::new(),
            syntax_error: Some(e),
        })
        .collect();
    let mut total = 0u64;
    for f in files {
        let shown = f.display().to_string();
        let broken = |message: String| FileDocs {
            docs: Vec::new(),
            syntax_error: Some(file_error(&f, message)),
        };
        match read_bounded(&f, total) {
            Ok(text) => {
                total += text.len() as u64;
                out.push(parse_text(&shown, &text));
            }
            Err(ReadError::Refused(r)) => out.push(broken(r.to_string())),
            Err(ReadError::Io(e)) => out.push(broken(format!("cannot read: {e}"))),
        }
    }
    out
}

/// Why a file was not read.
enum ReadError {
    Refused(Refused),
    Io(std::io::Error),
}

/// The text of `path`, read no further than the bounds allow (`total` bytes were read
/// before it).
fn read_bounded(path: &Path, total: u64) -> Result<String, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut text = String::new();
    file.take(bounds::MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(ReadError::Io)?;
    let len = text.len() as u64;
    if len > bounds::MAX_FILE_BYTES {
        let size = std::fs::metadata(path).map_or(len, |m| m.len());
        return Err(ReadError::Refused(Refused::TooLarge(size)));
    }
    if total + len > bounds::MAX_TOTAL_BYTES {
        return Err(ReadError::Refused(Refused::TotalExceeded(total)));
    }
    Ok(text)
}

impl FolderCatalog {
    /// A catalog of these files and folders.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        FolderCatalog {
            paths,
            last_good: None,
        }
    }

    /// The paths read.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Read everything again. Resources that were valid before and are broken now keep
    /// their previous version.
    pub fn load(&mut self) -> Built {
        let files = read_paths(&self.paths);
        let built = build(&files, self.last_good.as_ref());
        self.last_good = Some(built.last_good.clone());
        built
    }

    /// Load now, then reload on every change (debounced) and publish each new snapshot.
    /// Findings of each load go to `report`. Stops when every receiver is gone.
    pub fn watch(
        mut self,
        report: impl Fn(&[Finding]) + Send + 'static,
    ) -> std::io::Result<(watch::Receiver<Arc<Snapshot>>, std::thread::JoinHandle<()>)> {
        let first = self.load();
        report(&first.findings);
        let (tx, rx) = watch::channel(Arc::new(first.snapshot));
        let (ev_tx, ev_rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
            {
                let _ = ev_tx.send(());
            }
        })
        .map_err(std::io::Error::other)?;
        for p in &self.paths {
            // A path that does not exist yet is reported by `load`; watch what exists.
            if p.exists() {
                watcher
                    .watch(p, RecursiveMode::Recursive)
                    .map_err(std::io::Error::other)?;
            }
        }
        let handle = std::thread::Builder::new()
            .name("kubekuma-folder-watch".into())
            .spawn(move || {
                let _watcher = watcher;
                let mut last_findings = first.findings;
                while ev_rx.recv().is_ok() {
                    // Debounce: editors write files in several steps.
                    while ev_rx.recv_timeout(Duration::from_millis(200)).is_ok() {}
                    let built = self.load();
                    if built.findings != last_findings {
                        report(&built.findings);
                        last_findings = built.findings.clone();
                    }
                    let changed = **tx.borrow() != built.snapshot;
                    if changed && tx.send(Arc::new(built.snapshot)).is_err() {
                        break;
                    }
                    if tx.is_closed() {
                        break;
                    }
                }
            })?;
        Ok((rx, handle))
    }
}
