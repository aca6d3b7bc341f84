//! Kubernetes mode: the catalog read from the API server (`catalog`), status written back
//! through the status subresource (`status`), and leader election with a Lease (`lease`).

pub mod catalog;
pub mod lease;
pub mod role;
pub mod status;
