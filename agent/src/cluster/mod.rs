//! Kubernetes mode: the catalog read from the API server (`catalog`), status written back
//! through the status subresource (`status`), and leader election with a Lease (`lease`);
//! in either mode, which instance runs checks (`instance`: the data folder's lock in folder
//! mode, `spec.mode.singleInstanceRequired`).

pub mod catalog;
pub mod instance;
pub mod lease;
pub mod role;
pub mod status;
