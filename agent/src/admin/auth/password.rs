//! Argon2id hashes of passwords and API keys: PHC strings with the spec's parameters for
//! the CLI, and verification with bounded concurrency. One spec-sized hash takes 64 MB
//! and a few hundred milliseconds of CPU, so at most `concurrency` run at once (on the
//! blocking pool) and at most `queue` wait; beyond that a caller is told [`Busy`] at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// The spec's argon2id cost: 64 MiB of memory, 3 passes, 4 lanes, a 32-byte hash.
pub const SPEC_M_COST_KIB: u32 = 65_536;
/// Passes over memory.
pub const SPEC_T_COST: u32 = 3;
/// Lanes.
pub const SPEC_P_COST: u32 = 4;
/// Hash length in bytes.
pub const SPEC_OUTPUT_LEN: usize = 32;
/// Salt length in bytes.
pub const SALT_LEN: usize = 16;

/// Why a hash could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot compute the argon2id hash: {0}")]
pub struct HashError(String);

/// The argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) of `secret`, with a
/// random 16-byte salt and the cost `m_cost_kib`/`t_cost`/`p_cost` (the spec's with
/// [`hash_spec`]).
pub fn hash_with(
    secret: &[u8],
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
) -> Result<String, HashError> {
    let params = Params::new(m_cost_kib, t_cost, p_cost, Some(SPEC_OUTPUT_LEN))
        .map_err(|e| HashError(e.to_string()))?;
    let salt: [u8; SALT_LEN] = rand::random();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_with_salt(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// [`hash_with`] the spec's cost (m=65536, t=3, p=4).
pub fn hash_spec(secret: &[u8]) -> Result<String, HashError> {
    hash_with(secret, SPEC_M_COST_KIB, SPEC_T_COST, SPEC_P_COST)
}

/// Whether `secret` matches the PHC string `phc` (argon2i, argon2d or argon2id, with the
/// cost written in the string). A malformed string matches nothing.
pub fn verify(secret: &[u8], phc: &str) -> bool {
    match PasswordHash::new(phc.trim()) {
        Ok(parsed) => Argon2::default().verify_password(secret, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password with the spec's cost: unknown usernames are verified
/// against it, so they take as long as known ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: [u8; 32] = rand::random();
        // The fallback is a well-formed string with the same cost; it never matches
        // because only the login path uses it and ignores the outcome.
        hash_spec(&random).unwrap_or_else(|_| {
            "$argon2id$v=19$m=65536,t=3,p=4$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                .to_string()
        })
    })
}

/// Too many hashes are running or waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy;

/// Runs argon2 verifications, at most `concurrency` at a time.
#[derive(Debug)]
pub(crate) struct Hasher {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    running: Arc<AtomicUsize>,
    high_water: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
}

/// Leaves the queue when dropped (also when the waiting request is cancelled).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Hasher {
    pub(crate) fn new(concurrency: usize, queue: usize) -> Self {
        Hasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting: queue,
            running: Arc::new(AtomicUsize::new(0)),
            high_water: Arc::new(AtomicUsize::new(0)),
            runs: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The most verifications that ever ran at once.
    pub(crate) fn high_water(&self) -> usize {
        self.high_water.load(Ordering::SeqCst)
    }

    /// How many verifications ran.
    pub(crate) fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    /// Verify `secret` against `phc` (against the dummy hash when `None`, which never
    /// matches). `Err(Busy)` at once when the queue is full.
    pub(crate) async fn verify(&self, secret: Vec<u8>, phc: Option<String>) -> Result<bool, Busy> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Busy),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(Busy);
                }
                let queued = Queued(&self.waiting);
                let p = self
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Busy)?;
                drop(queued);
                p
            }
        };
        let (running, high_water) = (self.running.clone(), self.high_water.clone());
        self.runs.fetch_add(1, Ordering::SeqCst);
        // The permit moves into the blocking task: a cancelled request does not free its
        // slot before its hash is done.
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            high_water.fetch_max(now, Ordering::SeqCst);
            let ok = match &phc {
                Some(phc) => verify(&secret, phc),
                None => {
                    let _ = verify(&secret, dummy_hash());
                    false
                }
            };
            running.fetch_sub(1, Ordering::SeqCst);
            ok
        })
        .await;
        Ok(joined.unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_with_their_own_parameters() {
        let h = hash_with(b"pw", 256, 1, 1).unwrap_or_default();
        assert!(h.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{h}");
        assert!(verify(b"pw", &h));
        assert!(!verify(b"pW", &h));
        assert!(!verify(b"pw", "not a hash"));
    }

    #[test]
    fn the_compat_hash() {
        let h = "$argon2id$v=19$m=65536,t=3,p=4$Ha7NhMrOOSle+AMHOp5XNw$jhFoCy75xBnmZJY+FKPujTeFg26xnR1wfDwFJJVrBhU";
        assert!(verify(b"test1234", h));
        assert!(!verify(b"test12345", h));
    }

    #[tokio::test]
    async fn queue_is_bounded() {
        let hasher = Arc::new(Hasher::new(1, 1));
        let h = hash_with(b"pw", 4096, 2, 1).unwrap_or_default();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (hasher, h) = (hasher.clone(), h.clone());
                tokio::spawn(async move { hasher.verify(b"pw".to_vec(), Some(h)).await })
            })
            .collect();
        let mut busy = 0;
        let mut ok = 0;
        for t in tasks {
            match t.await {
                Ok(Err(Busy)) => busy += 1,
                Ok(Ok(true)) => ok += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(ok >= 2, "{ok}");
        assert!(busy >= 1, "{busy}");
        assert_eq!(hasher.high_water(), 1);
    }
}
