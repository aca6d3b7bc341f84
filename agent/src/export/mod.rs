//! Shipping results to object storage in batches: the public catalog ([`catalog`]), the
//! agent's objects as typed values ([`objects`]), the store named by a URL ([`target`]),
//! the uploader that drains the outbox to it ([`uploader`]), one flush of them all
//! ([`flush`]), the pacing of urgent flushes after public changes ([`urgent`]) and the
//! reading of every location's results ([`locations`]). Objects follow `kubekuma_crds::objects` (layout v1), one sub-prefix
//! per agent id, so several agents can share a bucket.

pub mod catalog;
pub mod flush;
pub mod locations;
pub mod objects;
/// The object store named by a URL (shared with the builder, so it lives in the crds crate).
pub use kubekuma_crds::store as target;
pub mod uploader;
pub mod urgent;

pub use catalog::public_catalog;
pub use target::{ExportError, ObjectTarget, open_store, open_store_with};
pub use uploader::{
    Backoff, DrainReport, MemoryOutbox, Outbox, PendingObject, UploadError, Uploader,
};

/// Agent id used when the machine's host name gives nothing usable.
pub const FALLBACK_AGENT_ID: &str = "agent";

/// The default agent id: this machine's host name (in Kubernetes, the pod name),
/// sanitized with [`sanitize_agent_id`]; `"agent"` when there is none. The
/// `--agent-id` flag overrides it: agents sharing a bucket need distinct ids, since
/// each writes under `v1/agents/<id>/`.
pub fn agent_id() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| sanitize_agent_id(&h))
        .unwrap_or_else(|| FALLBACK_AGENT_ID.to_string())
}

/// `raw` made safe as one object-key segment: lowercased, every character outside
/// `[a-z0-9-.]` replaced by `-`, dots and dashes trimmed from both ends, at most 63
/// characters; `"agent"` when nothing is left.
pub fn sanitize_agent_id(raw: &str) -> String {
    let mapped: String = raw
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            _ => '-',
        })
        .collect();
    let trimmed: String = mapped.trim_matches(['-', '.']).chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches(['-', '.']);
    if trimmed.is_empty() {
        FALLBACK_AGENT_ID.to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_safe_key_segments() {
        assert_eq!(
            sanitize_agent_id("Node-1.Example.COM"),
            "node-1.example.com"
        );
        assert_eq!(sanitize_agent_id("my_host (eu)"), "my-host--eu");
        assert_eq!(sanitize_agent_id(".."), "agent");
        assert_eq!(sanitize_agent_id(""), "agent");
        assert_eq!(sanitize_agent_id("ünï"), "n");
        assert_eq!(sanitize_agent_id(&"x".repeat(80)).len(), 63);
        let id = agent_id();
        assert_eq!(sanitize_agent_id(&id), id);
    }
}
