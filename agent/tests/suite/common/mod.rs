//! Test peers shared by the integration tests.

pub mod azurite;
pub mod docker_engine;
pub mod fake_kube;
pub mod podman;
pub mod s3;
