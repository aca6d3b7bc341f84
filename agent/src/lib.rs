//! The KubeKuma probe agent as a library: the `kubekuma` binary is a thin shell over it.

pub mod admin;
pub mod alerting;
pub mod bench;
pub mod catalog;
pub mod checks;
pub mod cli;
pub mod cluster;
pub mod export;
pub mod findings;
pub mod metrics;
pub mod notify;
pub mod process;
pub mod push;
pub mod rules;
pub mod runtime;
pub mod schedule;
pub mod secrets;
pub mod serve;
pub mod site;
pub mod state;
pub mod store;
pub mod sync;
pub mod tls;
