//! The builder's tests on fixed inputs, inside the crate since they reach its private
//! renderers: badges (golden SVGs, metrics, PNGs) and whole sites (golden files,
//! escaping, JSON shapes, incremental publishing, themes), and the build fingerprint that
//! skips unchanged rebuilds. Snapshots are in `snapshots/`.

mod badges;
mod common;
mod fingerprint;
mod hardening;
mod incremental;
mod site;
