//! Alerting: events from state transitions, policies, suppression, the delivery outbox,
//! and the providers that send (`providers`, one file per service).

pub mod outbox;
pub mod pipeline;
pub mod policy;
pub mod providers;
pub mod suppress;
