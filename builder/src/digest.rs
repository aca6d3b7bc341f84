//! Content hashes as text: the lowercase hex the manifest, asset names and source
//! fingerprints use.

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
