//! One instance per data folder: the exclusive lock on `<data>/kubekuma.lock` that
//! `spec.mode.singleInstanceRequired` asks for in folder mode (kube mode elects one
//! replica with the Lease instead), and whether this instance runs checks.
//!
//! The lock is an advisory `flock` held by the open file for the life of the process (the
//! kernel drops it when the process ends, also after a crash); the file names the holder
//! (process ID, host, start time) so a refused second instance can say who has it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file in the data folder.
pub const LOCK_FILE: &str = "kubekuma.lock";

/// Why the data folder's lock could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another instance holds it.
    #[error(
        "another kubekuma holds {path} ({holder}); KubeKumaSettings spec.mode.singleInstanceRequired \
         is true (the default), so only one instance may run on this data folder: stop the other \
         one, give this one its own --data-dir, or set spec.mode.singleInstanceRequired: false \
         (notifications may then repeat)"
    )]
    Held {
        /// The lock file.
        path: String,
        /// What the file says about its holder.
        holder: String,
    },
    /// The file could not be opened, locked or written.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The data folder's lock, held while this value lives.
#[derive(Debug)]
pub struct DataLock {
    path: PathBuf,
    /// The open, locked file (`None` while another instance holds the lock).
    file: Option<File>,
}

/// What a lock file says about its holder.
fn holder_of(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.take(512).read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        "holder unknown".to_string()
    } else {
        text.replace('\n', ", ")
    }
}

impl DataLock {
    /// The lock of `data_dir` (not taken yet).
    pub fn new(data_dir: &Path) -> Self {
        DataLock {
            path: data_dir.join(LOCK_FILE),
            file: None,
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this instance holds the lock.
    pub fn held(&self) -> bool {
        self.file.is_some()
    }

    /// Take the lock without waiting: `Ok(())` when this instance holds it (then or
    /// already), [`LockError::Held`] naming the holder when another one does.
    pub fn try_take(&mut self) -> Result<(), LockError> {
        if self.file.is_some() {
            return Ok(());
        }
        let path = self.path.display().to_string();
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    path: path.clone(),
                    holder: holder_of(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let about = format!(
            "pid {}\nhost {host}\nsince {}\n",
            std::process::id(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(about.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        self.file = Some(file);
        Ok(())
    }
}

/// Whether an instance runs checks, notifications and exports: when it was elected (the
/// Lease in kube mode, the data folder's lock in folder mode), or when
/// `spec.mode.singleInstanceRequired` is false (every instance runs them).
pub fn runs_checks(elected: bool, single_instance_required: bool) -> bool {
    elected || !single_instance_required
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut a = DataLock::new(dir.path());
        let mut b = DataLock::new(dir.path());
        assert!(a.try_take().is_ok() && a.held());
        assert!(a.try_take().is_ok(), "taking it again is a no-op");
        match b.try_take() {
            Err(LockError::Held { path, holder }) => {
                assert!(path.ends_with(LOCK_FILE), "{path}");
                assert!(
                    holder.contains(&format!("pid {}", std::process::id())),
                    "{holder}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!b.held());
        drop(a);
        assert!(b.try_take().is_ok(), "released when the holder ends");
        assert!(runs_checks(true, true) && runs_checks(false, false));
        assert!(!runs_checks(false, true));
    }
}
