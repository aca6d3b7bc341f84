//! Alerting: events from state transitions, policies, suppression, and the delivery
//! outbox that sends through `crate::notify::providers`.

pub mod consensus;
pub mod outbox;
pub mod pipeline;
pub mod policy;
pub mod quorum;
pub mod suppress;
