//! Kubernetes mode: the catalog read from the API server (`catalog`), status written back
//! through the status subresource (`status`), the Ingresses of pages exposed through
//! one (`ingress`), and leader election with a Lease (`lease`);
//! in either mode, which instance runs checks (`instance`: the data folder's lock in folder
//! mode, `spec.mode.singleInstanceRequired`).

pub mod catalog;
pub mod ingress;
pub mod instance;
pub mod lease;
pub mod role;
pub mod status;
