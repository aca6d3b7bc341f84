//! Test peers shared by the integration tests.

pub mod azurite;
pub mod backends;
pub mod docker_engine;
pub mod fake_kube;
pub mod gcs;
pub mod oidc_provider;
pub mod podman;
pub mod postgres;
pub mod s3;
pub mod users;

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

impl Outage for gcs::FakeGcs {
    async fn stop(&mut self) {
        gcs::FakeGcs::stop(self).await;
    }
    async fn resume(&mut self) {
        gcs::FakeGcs::resume(self).await;
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

/// `method path` on the admin API at `base`, with an optional bearer `token` and JSON
/// `body`: the status and the reply as JSON (a string when it is not JSON).
pub async fn call_api(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
