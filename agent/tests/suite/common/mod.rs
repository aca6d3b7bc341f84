//! Test peers shared by the integration tests.

pub mod azurite;
pub mod backends;
pub mod docker_engine;
pub mod fake_kube;
pub mod oidc_provider;
pub mod podman;
pub mod postgres;
pub mod s3;

/// A test peer that can be taken away (an outage: connections refused, open ones cut)
/// and brought back on the same port with the same data.
pub trait Outage {
    /// Take it away.
    async fn stop(&mut self);
    /// Bring it back.
    async fn resume(&mut self);
}

impl Outage for s3::S3Server {
    async fn stop(&mut self) {
        s3::S3Server::stop(self).await;
    }
    async fn resume(&mut self) {
        self.restart().await;
    }
}

impl Outage for azurite::Azurite {
    async fn stop(&mut self) {
        azurite::Azurite::stop(self).await;
    }
    async fn resume(&mut self) {
        azurite::Azurite::resume(self).await;
    }
}
