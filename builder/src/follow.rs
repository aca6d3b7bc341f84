//! The cheap check of `build --watch`: has any agent written something since the last
//! build? A full listing of `v1/agents/` (one LIST request per 1,000 objects, growing
//! with the history kept) runs at most every [`LIST_EVERY`]; in between, one HEAD of
//! each known agent's `state.json`, which every export of an agent rewrites (its
//! timestamp changes with every flush, periodic or urgent), tells whether that agent
//! wrote. New agents and agents of any version are found by the listing (every check
//! while none is known); no marker object is needed.

use std::collections::BTreeMap;
use std::time::Duration;

use kubekuma_crds::objects::keys;
use kubekuma_crds::store::{ExportError, ObjectTarget};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::digest::hex;

/// The longest time between two full listings of the agents' prefix.
pub const LIST_EVERY: Duration = Duration::from_secs(60);

/// What the watcher saw last: the listing's fingerprint, the agents it named and when.
#[derive(Debug, Default)]
pub struct Follower {
    listed: Option<(Instant, String)>,
    agents: Vec<String>,
    /// Requests made so far: (LIST, HEAD), for tests and benchmarks.
    pub requests: (u64, u64),
}

impl Follower {
    /// A follower that lists at its first check.
    pub fn new() -> Self {
        Follower::default()
    }

    /// Forget the listing: the next check lists again (after a failed build, so that a
    /// retry sees everything).
    pub fn relist(&mut self) {
        self.listed = None;
    }

    /// A fingerprint of what the agents wrote: equal fingerprints mean no agent wrote
    /// since. Lists when the last listing is older than [`LIST_EVERY`] (or there is
    /// none), then HEADs each agent's `state.json`.
    pub async fn check(&mut self, source: &ObjectTarget) -> Result<String, ExportError> {
        // Until a listing names an agent, every check lists (an empty listing is one
        // cheap request): a builder started before the agents follows their first export.
        let stale = self.agents.is_empty()
            || self
                .listed
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() >= LIST_EVERY);
        if stale {
            let listed = source.list_versions(&keys::agents()).await?;
            self.requests.0 += 1;
            let mut h = Sha256::new();
            let mut agents = BTreeMap::new();
            for (key, size, tag) in &listed {
                h.update(key.as_bytes());
                h.update(size.to_le_bytes());
                h.update(tag.as_bytes());
                h.update([0]);
                if let Some((id, _)) = key
                    .strip_prefix(&keys::agents())
                    .and_then(|rest| rest.split_once('/'))
                {
                    agents.insert(id.to_string(), ());
                }
            }
            self.agents = agents.into_keys().collect();
            self.listed = Some((Instant::now(), hex(&h.finalize())));
        }
        let mut h = Sha256::new();
        if let Some((_, fp)) = &self.listed {
            h.update(fp.as_bytes());
        }
        for id in &self.agents {
            let tag = source.version(&keys::state(id)).await?;
            self.requests.1 += 1;
            h.update(id.as_bytes());
            h.update([0]);
            h.update(tag.unwrap_or_default().as_bytes());
            h.update([0]);
        }
        Ok(hex(&h.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_new_state_is_seen_by_a_head_and_a_new_agent_by_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        let source = kubekuma_crds::store::open_store(dir.path().to_str().unwrap()).unwrap();
        let mut f = Follower::new();
        f.check(&source).await.unwrap();
        f.check(&source).await.unwrap();
        assert_eq!(f.requests, (2, 0), "no agent yet: every check lists");
        source
            .put(&keys::state("a"), Bytes::from_static(b"{\"v\":1}"))
            .await
            .unwrap();
        let first = f.check(&source).await.unwrap();
        assert_eq!(f.requests, (3, 1));
        assert_eq!(f.check(&source).await.unwrap(), first, "nothing written");
        assert_eq!(f.requests, (3, 2), "no second listing within LIST_EVERY");
        source
            .put(&keys::state("a"), Bytes::from_static(b"{\"v\":22}"))
            .await
            .unwrap();
        let second = f.check(&source).await.unwrap();
        assert_ne!(second, first, "a rewritten state.json is seen by its HEAD");
        assert_eq!(f.requests, (3, 3));
        // A new agent: found at the next listing.
        source
            .put(&keys::state("b"), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        f.relist();
        let third = f.check(&source).await.unwrap();
        assert_ne!(third, second);
        assert_eq!(f.requests, (4, 5), "one listing, two agents' HEADs");
    }
}
