//! Serving a built site from a folder (for `kubekuma up`): `GET`/`HEAD` of a path maps to a
//! file under the root, `/` and folders to their `index.html`. Paths that would leave the
//! root (`..`, absolute segments, backslashes, NUL) are refused, and so is the builder's
//! `.kubekuma/` bookkeeping.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use kubekuma_builder::publish::content_type;

/// The file under `root` that answers `req`, as a response; `None` when the request is
/// not a GET/HEAD or no such file exists (so another handler may answer).
pub fn serve<B>(root: &Path, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let url_path = req.uri().path();
    let path = resolve(root, url_path)?;
    if !url_path.ends_with('/') && path.ends_with("index.html") && !url_path.ends_with(".html") {
        // `/status` → `/status/`, so the page's relative links resolve.
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if let Ok(v) = HeaderValue::from_str(&format!("{url_path}/")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return Some(r);
    }
    let bytes = std::fs::read(&path).ok()?;
    let rel = path.to_string_lossy().into_owned();
    let mut r = Response::new(Full::new(if req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(bytes)
    }));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&rel)),
    );
    // Locally every rebuild should show at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Some(r)
}

/// The file a URL path names under `root`, if it is safe and exists.
pub fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(url_path)?;
    if decoded.contains('\\') || decoded.contains('\0') {
        return None;
    }
    let rel = Path::new(decoded.trim_start_matches('/'));
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(s) => {
                if s.to_string_lossy().starts_with(".kubekuma") {
                    return None;
                }
                out.push(s)
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.is_dir() {
        out.push("index.html");
    }
    out.is_file().then_some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("status")).unwrap();
        std::fs::write(dir.path().join("status/index.html"), "page").unwrap();
        std::fs::write(dir.path().join("index.html"), "index").unwrap();
        std::fs::create_dir_all(dir.path().join(".kubekuma")).unwrap();
        std::fs::write(dir.path().join(".kubekuma/manifest.json"), "{}").unwrap();
        let root = dir.path();
        assert_eq!(resolve(root, "/").unwrap(), root.join("index.html"));
        assert_eq!(
            resolve(root, "/status/").unwrap(),
            root.join("status/index.html")
        );
        assert_eq!(
            resolve(root, "/status").unwrap(),
            root.join("status/index.html")
        );
        assert!(resolve(root, "/../etc/passwd").is_none());
        assert!(resolve(root, "/%2e%2e/etc/passwd").is_none());
        assert!(resolve(root, "/status/..%2f..%2fetc").is_none());
        assert!(resolve(root, "/.kubekuma/manifest.json").is_none());
        assert!(resolve(root, "/missing.html").is_none());
        assert!(resolve(root, "/%zz").is_none());
    }
}
