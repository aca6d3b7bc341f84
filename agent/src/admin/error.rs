//! JSON replies and errors of the admin API. Every error has a stable `code` that
//! clients can match on; messages never contain secrets, hashes or tokens.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;

/// What every handler returns.
pub type Reply = Response<Full<Bytes>>;

/// A JSON reply with `Cache-Control: no-store`.
pub fn json_reply<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Reply {
    let text = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
    json_text_reply(status, Bytes::from(text))
}

/// A reply of JSON text already encoded, with `Cache-Control: no-store`.
pub fn json_text_reply(status: StatusCode, text: Bytes) -> Reply {
    let mut r = Response::new(Full::new(text));
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

/// An error answer: `{"error": {"code": …, "message": …}}` with an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`unauthorized`, `forbidden`, `not_found`, …).
    pub code: &'static str,
    /// Human-readable explanation (never a secret).
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed(allow: &str) -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("use {allow}"),
        )
    }

    /// 413 `payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
    }

    /// 429 `rate_limited` with `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    /// 500 `internal` (the cause goes to the log, not to the client).
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON reply.
    pub fn into_reply(self) -> Reply {
        let mut r = json_reply(
            self.status,
            &serde_json::json!({"error": {"code": self.code, "message": self.message}}),
        );
        if let Some(s) = self.retry_after
            && let Ok(v) = header::HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"kubekuma\""),
            );
        }
        r
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        e.into_reply()
    }
}
