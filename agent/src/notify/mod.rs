//! What notifications are made of and how they go out: the providers, one file per
//! service, each with its checked plan.

pub mod providers;
