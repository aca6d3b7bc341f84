//! Test peers shared by the integration tests.

pub mod azurite;
pub mod docker_engine;
pub mod fake_kube;
pub mod podman;
pub mod s3;

/// A listener on `addr` that can take the same port again right after a stop.
pub fn bind(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(addr).expect("bind");
    socket.listen(128).expect("listen")
}

/// Stop a server's accept loop, then cut its open connections (no new one can arrive
/// once the loop is gone).
pub async fn cut(
    accept: Option<tokio::task::JoinSet<()>>,
    conns: &std::sync::Mutex<tokio::task::JoinSet<()>>,
) {
    if let Some(mut accept) = accept {
        accept.abort_all();
        while accept.join_next().await.is_some() {}
    }
    let mut open = std::mem::take(&mut *conns.lock().expect("connection set"));
    open.abort_all();
    while open.join_next().await.is_some() {}
}

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
