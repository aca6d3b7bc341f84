//! Notifications below the catalog: the event a notification is about, the template
//! engine that renders it (validation checks templates with it; alerting sends with it)
//! and the providers, one file per service, each with its checked plan.

pub mod event;
pub mod providers;
pub mod template;
