//! The agent's HTTP listener (hyper, no framework): health and readiness now; the admin
//! API, push endpoint and metrics join it in their own issues. Handlers are plain
//! functions of a request, callable without a socket.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the listener reports about the agent.
#[derive(Debug, Default)]
pub struct Health {
    /// The catalog is loaded and the scheduler runs.
    pub ready: AtomicBool,
}

impl Health {
    /// Mark the agent ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// Answer one request.
pub fn handle<B>(req: &Request<B>, health: &Health) -> Response<Full<Bytes>> {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/health") => json(
            StatusCode::OK,
            serde_json::json!({"status": "ok", "timestamp": now}),
        ),
        (&Method::GET | &Method::HEAD, "/ready") => {
            let ready = health.ready.load(Ordering::SeqCst);
            json(
                if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                serde_json::json!({"ready": ready, "timestamp": now}),
            )
        }
        (_, "/health" | "/ready") => json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": {"code": "method_not_allowed", "message": "use GET"}}),
        ),
        (_, path) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": {"code": "not_found", "message": format!("no route for {path}")}}),
        ),
    }
}

/// Bind `addr` and serve until `shutdown` turns true. Returns the bound address.
pub async fn serve(
    addr: &str,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let health = health.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<Incoming>| {
                            let r = handle(&req, &health);
                            async move { Ok::<_, Infallible>(r) }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break; }
                }
            }
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_ready() {
        let h = Health::default();
        let get = |p: &str| Request::get(p).body(()).unwrap_or_default();
        assert_eq!(handle(&get("/health"), &h).status(), StatusCode::OK);
        assert_eq!(
            handle(&get("/ready"), &h).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.set_ready(true);
        assert_eq!(handle(&get("/ready"), &h).status(), StatusCode::OK);
        assert_eq!(handle(&get("/nope"), &h).status(), StatusCode::NOT_FOUND);
    }
}
