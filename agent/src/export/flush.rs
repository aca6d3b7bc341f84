//! One flush: the agent's objects are built, queued in SQLite's outbox when their content
//! changed, and the outbox is drained to the object store. The store's outbox is the
//! uploader's queue through [`StoreOutbox`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;

use super::objects::{self, ObjectsError};
use super::uploader::{Outbox, PendingObject, Uploader};
use crate::catalog::Snapshot;
use crate::state::live::Live;
use crate::store::{Store, StoreError};

/// The store's outbox, as the uploader sees it.
pub struct StoreOutbox(pub Store);

impl Outbox for StoreOutbox {
    type Error = StoreError;

    async fn pending(&self, limit: usize) -> Result<Vec<PendingObject>, StoreError> {
        self.0.outbox_pending(limit).await.map(|v| {
            v.into_iter()
                .map(|(key, body, version)| PendingObject { key, body, version })
                .collect()
        })
    }

    async fn done(&self, key: &str, version: i64) -> Result<(), StoreError> {
        self.0.outbox_done(key, version).await.map(|_| ())
    }
}

/// Why a flush stopped before the upload.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// SQLite could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The objects could not be built.
    #[error(transparent)]
    Objects(#[from] ObjectsError),
    /// An object could not be encoded.
    #[error("cannot encode an object: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What a flush needs besides the catalog: the agent's identity and stores, and the
/// bodies it queued last (only changed objects are queued again).
pub struct Flusher {
    agent_id: String,
    location: String,
    store: Store,
    live: Arc<Mutex<Live>>,
    uploader: Uploader,
    outbox: StoreOutbox,
    last: HashMap<String, Vec<u8>>,
}

impl Flusher {
    /// A flusher of the objects of agent `agent_id` at `location` through `uploader`.
    pub fn new(
        agent_id: String,
        location: String,
        store: Store,
        live: Arc<Mutex<Live>>,
        uploader: Uploader,
    ) -> Self {
        Flusher {
            agent_id,
            location,
            outbox: StoreOutbox(store.clone()),
            store,
            live,
            uploader,
            last: HashMap::new(),
        }
    }

    /// Queue changed objects in the outbox, then upload what is pending; returns how many
    /// objects were written. An unreachable object store is logged, not an error: the
    /// objects stay queued.
    pub async fn flush(&mut self, snap: &Snapshot) -> Result<usize, FlushError> {
        self.store.flush().await?;
        let now = Utc::now();
        let built = objects::build(
            &self.agent_id,
            &self.location,
            snap,
            &self.store,
            &self.live,
            now,
        )
        .await?;
        for (key, body) in built.encode()? {
            // state.json and results.json change with every flush (their timestamp is the
            // time of the data); the others are queued only when their content changed.
            if self.last.get(&key) != Some(&body) {
                self.store.outbox_put(&key, body.clone()).await?;
                self.last.insert(key, body);
            }
        }
        let report = self.uploader.drain(&self.outbox).await;
        if let Some(e) = &report.last_error {
            tracing::warn!(uploaded = report.uploaded, failed = report.failed, error = %e, "object store unreachable; results stay queued");
        }
        Ok(report.uploaded)
    }
}
