//! Notifications below the catalog: the event a notification is about and the template
//! engine that renders it (validation checks templates with it; alerting sends with it).

pub mod event;
pub mod template;
