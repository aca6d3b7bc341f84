//! The static-site builder: reads agents' objects, renders status pages, badges, JSON
//! and feeds with a theme, and publishes them incrementally. Built in its own issue;
//! until then this crate only fixes its place in the workspace.

/// Whether the builder is available in this version.
pub const AVAILABLE: bool = false;
