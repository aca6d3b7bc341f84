//! The security headers every response of the listener carries (API JSON, errors, site
//! files, twins, push, health, metrics): `X-Content-Type-Options: nosniff`,
//! `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` (unless the handler chose
//! another, as the console does) and a `Content-Security-Policy`
//! chosen by the response's type: HTML pages of the site get what the default theme needs
//! (its own scripts and style sheets, images of the site or `data:`; no inline script or
//! style, the builder's own policy `SITE_CSP`), everything else (JSON, SVG, feeds, images, metrics) gets
//! `default-src 'none'` in a sandbox, so that no served file can run a script on the
//! agent's origin, where the admin API lives. A `Location` that a browser would read as
//! another host (`//host`, `/\host`) never leaves the listener.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

/// The policy of HTML pages: the default theme loads `page.js`, `style.css` and its
/// accent colour's style sheet from the site and shows logos and badges of the site (or
/// `data:` URLs). No inline script or style, no plugins, no `<base>`, no framing.
pub const HTML_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The policy of everything that is not an HTML page: nothing may load or run, and a
/// document opened directly (an SVG, say) runs in a sandbox of its own origin. Inline
/// styles stay allowed so that SVG images opened on their own still look right.
pub const OTHER_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; sandbox";

/// Add the security headers to `r` (replacing what a handler set, except a
/// `Content-Security-Policy` of its own, which is kept), and turn a redirect to another
/// host into a 404.
pub fn secure<B: Default>(mut r: Response<B>) -> Response<B> {
    if r.headers()
        .get(header::LOCATION)
        .is_some_and(|l| !is_local_location(l.as_bytes()))
    {
        tracing::warn!("refused to answer with a redirect to another host");
        let mut refused = Response::new(B::default());
        *refused.status_mut() = StatusCode::NOT_FOUND;
        r = refused;
    }
    let html = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"));
    add(r.headers_mut(), html);
    r
}

fn add(h: &mut HeaderMap, html: bool) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A handler may ask for a looser referrer policy (the admin console's `same-origin`:
    // under `no-referrer` browsers send `Origin: null` with its form posts).
    h.entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(if html {
            HTML_POLICY
        } else {
            OTHER_POLICY
        }));
}

/// Whether a `Location` stays on this host as far as a browser is concerned: it does not
/// start with two slashes or backslashes in any mix (`//host`, `/\host`), which browsers
/// read as another host with the page's scheme. Browsers drop tabs and line breaks
/// anywhere in a URL and spaces and control characters before it, and so does this test.
/// Absolute URLs with a scheme are left to the handler that chose them.
pub fn is_local_location(location: &[u8]) -> bool {
    let mut seen = location
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\t' | b'\n' | b'\r'))
        .skip_while(|b| *b <= b' ');
    let first = seen.next();
    let second = seen.next();
    !(matches!(first, Some(b'/' | b'\\')) && matches!(second, Some(b'/' | b'\\')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    fn reply(content_type: Option<&str>) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from_static(b"x")));
        if let Some(t) = content_type {
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_str(t).unwrap());
        }
        r
    }

    #[test]
    fn every_reply_gets_the_headers_and_html_its_own_policy() {
        for (t, policy) in [
            (Some("text/html; charset=utf-8"), HTML_POLICY),
            (Some("TEXT/HTML"), HTML_POLICY),
            (Some("application/json"), OTHER_POLICY),
            (Some("image/svg+xml"), OTHER_POLICY),
            (Some("application/atom+xml"), OTHER_POLICY),
            (None, OTHER_POLICY),
        ] {
            let r = secure(reply(t));
            let h = r.headers();
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{t:?}");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{t:?}");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{t:?}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], policy, "{t:?}");
            assert!(policy.contains("frame-ancestors 'none'"));
        }
        assert!(OTHER_POLICY.starts_with("default-src 'none'"));
        assert!(!OTHER_POLICY.contains("script-src"));
    }

    #[test]
    fn a_handlers_own_policy_is_kept_and_others_replaced() {
        let mut r = reply(Some("text/html"));
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'"),
        );
        r.headers_mut()
            .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("ALLOW"));
        let r = secure(r);
        assert_eq!(
            r.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'"
        );
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(
            r.headers().get_all(header::X_FRAME_OPTIONS).iter().count(),
            1
        );
    }

    #[test]
    fn redirects_to_other_hosts_never_leave() {
        for bad in [
            "//evil.example/",
            "/\\evil.example/",
            "\\\\evil.example/",
            "/\t/evil.example/",
            " //evil.example/",
        ] {
            assert!(!is_local_location(bad.as_bytes()), "{bad}");
            let mut r = reply(None);
            *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_str(bad).unwrap());
            let r = secure(r);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
            assert!(r.headers().get(header::LOCATION).is_none());
            assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        }
        for good in [
            "/status/",
            "/",
            "status/",
            "?page=2",
            "/a//b",
            "https://example.com/",
        ] {
            assert!(is_local_location(good.as_bytes()), "{good}");
        }
    }
}
