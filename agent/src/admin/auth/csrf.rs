//! Cross-site request forgery: what a write authenticated by the session cookie must
//! carry, since a browser sends the cookie on its own (`SameSite=Strict` does not stop
//! pages of the same site, such as another port of the same host).
//!
//! The rule, checked by [`check`] for every request that changes state (any method but
//! GET, HEAD and OPTIONS) and is authenticated by the `token` cookie rather than by
//! `Authorization: Bearer`, and for every login (`POST /api/v1/auth/login`, which a
//! `text/plain` form could otherwise send as JSON):
//!
//! 1. **The origin is the agent's own.**
//!    - `Sec-Fetch-Site`, when present, must be `same-origin`. Browsers set it and pages
//!      cannot forge it, so it decides alone (a proxy that rewrites `Host` does not
//!      matter).
//!    - Otherwise `Origin`, when present, must name the same host and port as the
//!      request's `Host` (or, in HTTP/2, its authority; a missing port is the scheme's
//!      default). `Origin: null` (sandboxed frames, `data:` pages) never matches.
//!    - Otherwise (neither header) the request is taken for a non-browser client. Every
//!      current browser sends `Origin` with a cross-origin POST, PUT, PATCH or DELETE;
//!      older ones that send neither only did so for plain form posts, which step 2
//!      refuses.
//! 2. **The body is JSON**: `Content-Type: application/json` (parameters such as
//!    `charset` allowed), also for requests without a body. HTML forms can only send
//!    `application/x-www-form-urlencoded`, `multipart/form-data` and `text/plain`, and a
//!    cross-origin `fetch` with JSON needs a CORS preflight, which the agent never grants.
//!
//! Anything else is refused with 403 and the code `csrf`, before the request is
//! authenticated or handled. Bearer tokens (session JWTs, API keys) are never sent by a
//! browser on its own, so calls with them are not checked.
//!
//! A console with plain HTML forms (issue 21) is to add a third way through step 2: a
//! form field holding a CSRF token bound to the session, checked in [`body_allowed`].

use http::{HeaderMap, Method, StatusCode, header};

use crate::admin::error::ApiError;

/// The stable error code of a refused request.
pub const CODE: &str = "csrf";

fn refused(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, CODE, message)
}

/// Whether `method` changes state (everything but GET, HEAD and OPTIONS).
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Check a request against the rule of this module. `authority` is the request URI's
/// authority (HTTP/2), used when there is no `Host` header.
pub fn check(headers: &HeaderMap, authority: Option<&str>) -> Result<(), ApiError> {
    same_origin(headers, authority)?;
    if !body_allowed(headers) {
        return Err(refused(
            "requests authenticated by the session cookie must send Content-Type: application/json",
        ));
    }
    Ok(())
}

/// Step 2: the body is JSON. (The place for a form's CSRF token, once forms exist.)
fn body_allowed(headers: &HeaderMap) -> bool {
    is_json(headers)
}

/// Whether the `Content-Type` is `application/json`, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    v.to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// One header's value, `None` when absent; `Err` when repeated or not text.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| refused(&format!("the {name} header is not readable text"))),
        (Some(_), Some(_)) => Err(refused(&format!("the {name} header is repeated"))),
    }
}

/// Step 1: `Sec-Fetch-Site: same-origin`, else an `Origin` equal to the request's host,
/// else neither header.
fn same_origin(headers: &HeaderMap, authority: Option<&str>) -> Result<(), ApiError> {
    if let Some(site) = single(headers, "sec-fetch-site")? {
        return if site.eq_ignore_ascii_case("same-origin") {
            Ok(())
        } else {
            Err(refused(&format!(
                "cross-site request refused (Sec-Fetch-Site: {site}); use the agent's own origin or an Authorization: Bearer token"
            )))
        };
    }
    let Some(origin) = single(headers, header::ORIGIN.as_str())? else {
        return Ok(());
    };
    let host = single(headers, header::HOST.as_str())?.or(authority);
    match host {
        Some(host) if origin_matches(origin, host) => Ok(()),
        _ => Err(refused(
            "cross-origin request refused (Origin does not match Host); use the agent's own origin or an Authorization: Bearer token",
        )),
    }
}

/// Whether the `Origin` value `origin` names the same host and port as `host` (a `Host`
/// header: `name`, `name:port`, `[v6]` or `[v6]:port`; without a port, the origin
/// scheme's default).
pub(crate) fn origin_matches(origin: &str, host: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    let (Some(o_host), Some(o_port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    if authority.as_str().contains('@') {
        return false;
    }
    let h_port = authority.port_u16().or_else(|| match url.scheme() {
        "https" => Some(443),
        _ => Some(80),
    });
    let strip = |h: &str| {
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase()
    };
    strip(o_host) == strip(authority.host()) && Some(o_port) == h_port
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origins() {
        assert!(origin_matches("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(origin_matches(
            "https://Status.Example.com",
            "status.example.com"
        ));
        assert!(origin_matches(
            "https://status.example.com",
            "status.example.com:443"
        ));
        assert!(origin_matches("http://[::1]:3000", "[::1]:3000"));
        assert!(!origin_matches("http://127.0.0.1:8081", "127.0.0.1:8080"));
        assert!(!origin_matches(
            "https://status.example.com",
            "status.example.com:80"
        ));
        assert!(!origin_matches("http://evil.example", "status.example.com"));
        assert!(!origin_matches("null", "127.0.0.1:8080"));
        assert!(!origin_matches("http://127.0.0.1:8080", "bad host"));
    }

    #[test]
    fn the_rule() {
        let json = ("content-type", "application/json; charset=utf-8");
        let host = ("host", "127.0.0.1:8080");
        let ok = |h: &HeaderMap| check(h, None).is_ok();
        // Non-browser JSON client: no Origin, no Sec-Fetch-Site.
        assert!(ok(&headers(&[json, host])));
        assert!(ok(&headers(&[
            json,
            host,
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(ok(&headers(&[json, ("sec-fetch-site", "same-origin")])));
        // HTTP/2: the authority instead of Host.
        assert!(
            check(
                &headers(&[json, ("origin", "http://127.0.0.1:8080")]),
                Some("127.0.0.1:8080")
            )
            .is_ok()
        );
        for bad in [
            headers(&[host, ("content-type", "text/plain")]),
            headers(&[host, ("content-type", "application/x-www-form-urlencoded")]),
            headers(&[host]),
            headers(&[json, host, ("origin", "http://127.0.0.1:9090")]),
            headers(&[json, host, ("origin", "null")]),
            headers(&[json, ("origin", "http://127.0.0.1:8080")]),
            headers(&[json, host, ("sec-fetch-site", "same-site")]),
            headers(&[json, host, ("sec-fetch-site", "cross-site")]),
            headers(&[json, host, ("sec-fetch-site", "none")]),
            // Sec-Fetch-Site decides even with a matching Origin.
            headers(&[
                json,
                host,
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-site"),
            ]),
            headers(&[json, json, host]),
        ] {
            let err = check(&bad, None).unwrap_err();
            assert_eq!(
                (err.status, err.code),
                (StatusCode::FORBIDDEN, CODE),
                "{bad:?}"
            );
        }
        assert!(changes_state(&Method::POST) && changes_state(&Method::DELETE));
        assert!(!changes_state(&Method::GET) && !changes_state(&Method::HEAD));
    }
}
