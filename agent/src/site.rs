//! Serving a built site from a folder (for `kubekuma up`): `GET`/`HEAD` of a path maps to a
//! file under the root, `/` and folders to their `index.html`. Paths that would leave the
//! root (`..`, absolute segments, backslashes, NUL) are refused, and so is the builder's
//! `.kubekuma/` bookkeeping.
//!
//! Files are kept in memory once read (up to [`CACHE_BUDGET`] bytes and [`CACHE_ENTRIES`]
//! entries), with a gzip copy of the compressible ones for clients that accept it and an
//! `ETag` for conditional requests. The cache is keyed by the canonical form of the path
//! ([`canonical`]: decoded, `.` and empty segments dropped), so spellings of one file
//! (`/./status/`, `//status/`, `/%73tatus/`) share one entry; redirects name the canonical
//! path too, so `//slug` leads to `/slug/`, never to the protocol-relative `//slug/`. The builder writes its manifest (`.kubekuma/manifest.json`) after every
//! file of a build, so the cache is dropped whenever the manifest changes; a folder
//! without a manifest is read from disk on every request.
//!
//! Host names: with the manifest the builder's host file (`.kubekuma/hosts.json`) is read,
//! and a request whose `Host` is a page's exposure host is answered from that page's
//! folder first, so `https://status.example.com/` shows the page.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use kubekuma_builder::publish::{HOSTS, MANIFEST, content_type};

/// At most this many bytes of files (plain and gzip copies together) stay in memory.
pub const CACHE_BUDGET: usize = 256 << 20;

/// At most this many files (and folder redirects) stay in memory.
pub const CACHE_ENTRIES: usize = 100_000;

/// How often the manifest is looked at for a new build.
const RECHECK: Duration = Duration::from_millis(250);

/// A built site folder, served with an in-memory cache.
#[derive(Debug)]
pub struct Site {
    root: PathBuf,
    cache: RwLock<Cache>,
    /// Bounds of the cache: entries and bytes.
    limits: (usize, usize),
}

#[derive(Debug)]
struct Cache {
    /// Modification time and length of the manifest when the entries were read.
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
    entries: HashMap<String, Arc<Entry>>,
    bytes: usize,
    /// Host name → page slug, read with the manifest ([`read_hosts`]).
    hosts: HashMap<String, String>,
}

/// One file, ready to send.
#[derive(Debug)]
struct Entry {
    /// `None` for a folder requested without its trailing slash (a redirect).
    body: Option<Bytes>,
    gzip: Option<Bytes>,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Site {
    /// Serve the site built into `root`.
    pub fn new(root: PathBuf) -> Self {
        Self::with_limits(root, CACHE_ENTRIES, CACHE_BUDGET)
    }

    /// Serve the site built into `root`, caching at most `entries` files of `bytes` bytes
    /// together.
    pub fn with_limits(root: PathBuf, entries: usize, bytes: usize) -> Self {
        Site {
            limits: (entries, bytes),
            root,
            cache: RwLock::new(Cache {
                stamp: None,
                checked: None,
                entries: HashMap::new(),
                bytes: 0,
                hosts: HashMap::new(),
            }),
        }
    }

    /// The folder served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that answers `req`, as a response; `None` when the request is not a
    /// GET/HEAD or no such file exists (so another handler may answer).
    ///
    /// A request whose `Host` is one of a page's host names (the builder's
    /// [`HOSTS`](kubekuma_builder::publish::HOSTS)) is answered from that page's folder
    /// first (`/` is the page, `/status.json` its JSON), then from the root (assets, the
    /// favicon, other pages).
    pub fn serve<B>(&self, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return None;
        }
        let path = canonical(req.uri().path())?;
        let cacheable = self.refresh();
        if let Some(slug) = self.slug_for(req)
            && let Some(in_page) = canonical(&format!("/{slug}{path}"))
            && let Some(entry) = self.entry(&in_page, cacheable)
        {
            // A redirect names the path as the visitor asked it, on their host.
            return Some(respond(req, &path, &entry));
        }
        let entry = self.entry(&path, cacheable)?;
        Some(respond(req, &path, &entry))
    }

    /// The page slug the request's host name is mapped to, if any.
    fn slug_for<B>(&self, req: &Request<B>) -> Option<String> {
        let raw = match req.headers().get(header::HOST) {
            Some(h) => h.to_str().ok()?,
            None => req.uri().host()?,
        };
        if raw.starts_with('[') {
            return None;
        }
        let host = raw
            .split(':')
            .next()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let c = self.cache.read().ok()?;
        c.hosts.get(&host).cloned()
    }

    /// The cached or loaded file of the canonical `path`.
    fn entry(&self, path: &str, cacheable: bool) -> Option<Arc<Entry>> {
        let cached = self
            .cache
            .read()
            .ok()
            .and_then(|c| c.entries.get(path).cloned());
        if let Some(e) = cached {
            return Some(e);
        }
        let e = Arc::new(load(&self.root, path)?);
        if cacheable && let Ok(mut c) = self.cache.write() {
            let size = e.body.as_ref().map_or(0, |b| b.len())
                + e.gzip.as_ref().map_or(0, |b| b.len())
                + path.len();
            if c.bytes + size <= self.limits.1 && c.entries.len() < self.limits.0 {
                c.bytes += size;
                c.entries.insert(path.to_string(), e.clone());
            }
        }
        Some(e)
    }

    /// How many files the cache holds, and their bytes.
    pub fn cached(&self) -> (usize, usize) {
        self.cache
            .read()
            .map(|c| (c.entries.len(), c.bytes))
            .unwrap_or((0, 0))
    }

    /// Drops the cache when a new build finished; whether files may be cached at all.
    fn refresh(&self) -> bool {
        let fresh = self.cache.read().ok().and_then(|c| {
            c.checked
                .map(|t| (t.elapsed() < RECHECK, c.stamp.is_some()))
        });
        if let Some((true, cacheable)) = fresh {
            return cacheable;
        }
        let stamp = std::fs::metadata(self.root.join(MANIFEST))
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        let Ok(mut c) = self.cache.write() else {
            return false;
        };
        if c.stamp != stamp || c.checked.is_none() || stamp.is_none() {
            c.hosts = read_hosts(&self.root);
        }
        if c.stamp != stamp {
            c.entries.clear();
            c.bytes = 0;
            c.stamp = stamp;
        }
        c.checked = Some(Instant::now());
        stamp.is_some()
    }
}

/// The host names of the site's pages (the builder's `HOSTS` file), lowercased; none
/// when the file is missing or unreadable.
fn read_hosts(root: &Path) -> HashMap<String, String> {
    let Ok(text) = std::fs::read(root.join(HOSTS)) else {
        return HashMap::new();
    };
    match serde_json::from_slice::<kubekuma_crds::objects::SiteHosts>(&text) {
        Ok(h) => (h.hosts.into_iter())
            .map(|(host, slug)| (host.to_ascii_lowercase(), slug))
            .collect(),
        Err(e) => {
            tracing::warn!(file = %root.join(HOSTS).display(), error = %e, "cannot read the site's host names");
            HashMap::new()
        }
    }
}

/// The response for a request from a loaded file; `path` is canonical.
fn respond<B>(req: &Request<B>, path: &str, e: &Entry) -> Response<Full<Bytes>> {
    let Some(body) = &e.body else {
        // `/status` → `/status/`, so the page's relative links resolve. The canonical
        // path starts with exactly one slash, so the target is on this host.
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if let Ok(v) = HeaderValue::from_str(&format!("{}/", encode_path(path))) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    };
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == e.etag || t.trim() == "*"));
    let gzip = e.gzip.as_ref().filter(|_| accepts_gzip(req));
    let mut r = Response::new(Full::new(if req.method() == Method::HEAD || not_modified {
        Bytes::new()
    } else {
        gzip.unwrap_or(body).clone()
    }));
    *r.status_mut() = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(e.content_type),
    );
    h.insert(header::ETAG, e.etag.clone());
    if e.gzip.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if gzip.is_some() {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    // Locally every rebuild should show at once (revalidated with the ETag).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The security headers (nosniff, CSP, …) are the listener's: `admin::headers`.
    r
}

/// Reads the file for the canonical `url_path`, or the redirect to its folder.
fn load(root: &Path, url_path: &str) -> Option<Entry> {
    let path = resolve_decoded(root, url_path)?;
    let content_type = content_type(&path.to_string_lossy());
    let redirect =
        !url_path.ends_with('/') && path.ends_with("index.html") && !url_path.ends_with(".html");
    if redirect {
        return Some(Entry {
            body: None,
            gzip: None,
            content_type,
            etag: HeaderValue::from_static("\"redirect\""),
        });
    }
    let body = std::fs::read(&path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    let etag =
        HeaderValue::from_str(&format!("\"{:016x}-{:x}\"", hasher.finish(), body.len())).ok()?;
    let gzip = compressible(content_type)
        .then(|| gzip(&body))
        .flatten()
        .filter(|z| z.len() < body.len());
    Some(Entry {
        body: Some(Bytes::from(body)),
        gzip: gzip.map(Bytes::from),
        content_type,
        etag,
    })
}

fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/rss+xml")
        || content_type.starts_with("application/atom+xml")
        || content_type.starts_with("application/xml")
        || content_type.starts_with("image/svg+xml")
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < 256 {
        return None;
    }
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(body).ok()?;
    z.finish().ok()
}

/// Whether `Accept-Encoding` lists gzip (or `*`) without `q=0`.
fn accepts_gzip<B>(req: &Request<B>) -> bool {
    let Some(v) = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    v.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// The file a URL path names under `root`, if it is safe and exists.
pub fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    resolve_decoded(root, &percent_decode(url_path)?)
}

/// [`resolve`] of a path already percent-decoded.
fn resolve_decoded(root: &Path, decoded: &str) -> Option<PathBuf> {
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
    } else if decoded.ends_with('/') {
        // A file is not a folder: `/status.json/` names nothing.
        return None;
    }
    out.is_file().then_some(out)
}

/// The canonical form of a URL path: percent-decoded, empty and `.` segments dropped, one
/// leading slash, and a trailing slash when the path ends in one (or in `/.`). `None` for
/// what [`resolve`] refuses anyway (`..`, backslashes, NUL, bad escapes, the builder's
/// `.kubekuma/`).
pub fn canonical(url_path: &str) -> Option<String> {
    let decoded = percent_decode(url_path)?;
    if decoded.contains('\\') || decoded.contains('\0') {
        return None;
    }
    let mut segments = Vec::new();
    let mut folder = false;
    for s in decoded.split('/') {
        folder = matches!(s, "" | ".");
        match s {
            "" | "." => {}
            ".." => return None,
            s if s.starts_with(".kubekuma") => return None,
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if folder || segments.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// `path` with every byte outside the unreserved characters, `/` and a few harmless
/// delimiters percent-encoded (for a `Location`).
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

    fn get(site: &Site, path: &str, headers: &[(&str, &str)]) -> Response<Full<Bytes>> {
        let mut b = Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        site.serve(&b.body(()).unwrap()).expect("a response")
    }

    async fn body(r: Response<Full<Bytes>>) -> Vec<u8> {
        use http_body_util::BodyExt;
        r.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    fn build(root: &Path, page: &str, generation: u32) {
        std::fs::create_dir_all(root.join("status")).unwrap();
        std::fs::create_dir_all(root.join(".kubekuma")).unwrap();
        std::fs::write(root.join("status/index.html"), page).unwrap();
        std::fs::write(
            root.join(MANIFEST),
            format!("{{\"version\":1,\"generation\":{generation}}}"),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn gzip_etag_and_a_new_build_replaces_the_cached_files() {
        let dir = tempfile::tempdir().unwrap();
        let page = "<p>all systems operational</p>\n".repeat(200);
        build(dir.path(), &page, 1);
        let site = Site::new(dir.path().to_path_buf());

        // Plain for clients that do not ask for gzip.
        let r = get(&site, "/status/", &[]);
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(r.headers()[header::VARY], "Accept-Encoding");
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_string();
        assert_eq!(body(r).await, page.as_bytes());

        // gzip for those that do, decoding to the same bytes.
        let r = get(&site, "/status/", &[("accept-encoding", "br, gzip;q=0.8")]);
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        let z = body(r).await;
        assert!(z.len() < page.len() / 10, "{} bytes compressed", z.len());
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&z[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, page);
        let r = get(&site, "/status/", &[("accept-encoding", "gzip;q=0")]);
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());

        // Conditional requests.
        let r = get(&site, "/status/", &[("if-none-match", &etag)]);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert!(body(r).await.is_empty());

        // A file changed on disk without a new manifest is still the cached one ...
        std::fs::write(dir.path().join("status/index.html"), "half-built").unwrap();
        assert_eq!(body(get(&site, "/status/", &[])).await, page.as_bytes());
        // ... and the next build's manifest brings the new one, with a new ETag.
        build(dir.path(), "<p>major outage</p>", 2);
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        let r = get(&site, "/status/", &[("if-none-match", &etag)]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_ne!(r.headers()[header::ETAG].to_str().unwrap(), etag);
        assert_eq!(body(r).await, b"<p>major outage</p>");

        // Redirects and refusals go through the cache too.
        let r = get(&site, "/status", &[]);
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()[header::LOCATION], "/status/");
        let refused = Request::builder()
            .uri("/.kubekuma/manifest.json")
            .body(())
            .unwrap();
        assert!(site.serve(&refused).is_none());
    }

    #[tokio::test]
    async fn a_folder_without_a_manifest_is_read_on_every_request() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "one").unwrap();
        let site = Site::new(dir.path().to_path_buf());
        assert_eq!(body(get(&site, "/", &[])).await, b"one");
        std::fs::write(dir.path().join("index.html"), "two").unwrap();
        assert_eq!(body(get(&site, "/", &[])).await, b"two");
    }

    #[test]
    fn spellings_of_one_path_share_one_cache_entry() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), "<p>page</p>", 1);
        let site = Site::new(dir.path().to_path_buf());
        let mut spellings = vec![
            "/status/".to_string(),
            "/./status/".into(),
            "//status/".into(),
            "/status//".into(),
            "/status/.".into(),
            "/%73tatus/".into(),
            "/status/%2e/".into(),
            "/status/%2E/./".into(),
        ];
        // What the attack sent: ever new variants of one page.
        spellings.extend((1..500).map(|n| format!("/status/{}", "./".repeat(n))));
        spellings.extend((1..500).map(|n| format!("{}status/", "/".repeat(n))));
        for p in &spellings {
            let r = get(&site, p, &[]);
            assert_eq!(r.status(), StatusCode::OK, "{p}");
        }
        assert_eq!(site.cached().0, 1, "one page, one entry");

        // Trailing junk names nothing, and nothing is cached for it.
        for junk in ["/status/index.html/", "/status/x", "/status/index.html;x"] {
            let req = Request::builder().uri(junk).body(()).unwrap();
            assert!(site.serve(&req).is_none(), "{junk}");
        }
        assert_eq!(site.cached().0, 1);
        assert_eq!(canonical("/"), Some("/".into()));
        assert_eq!(canonical(""), Some("/".into()));
        assert_eq!(canonical("/a/./b"), Some("/a/b".into()));
        assert_eq!(canonical("/a/b/."), Some("/a/b/".into()));
        assert_eq!(canonical("/a/../b"), None);
        assert_eq!(canonical("/a%2f..%2fb"), None);
        assert_eq!(canonical("/.kubekuma/manifest.json"), None);
    }

    #[tokio::test]
    async fn the_cache_is_bounded_in_entries() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), "<p>page</p>", 1);
        for n in 0..10 {
            std::fs::write(dir.path().join(format!("f{n}.json")), "{}").unwrap();
        }
        let site = Site::with_limits(dir.path().to_path_buf(), 4, CACHE_BUDGET);
        for n in 0..10 {
            let r = get(&site, &format!("/f{n}.json"), &[]);
            assert_eq!(r.status(), StatusCode::OK);
        }
        assert_eq!(site.cached().0, 4);
        // Files beyond the bound are still served, from disk.
        std::fs::write(dir.path().join("f9.json"), "[1]").unwrap();
        assert_eq!(body(get(&site, "/f9.json", &[])).await, b"[1]");
    }

    #[test]
    fn a_folder_redirect_never_names_another_host() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), "<p>page</p>", 1);
        std::fs::create_dir_all(dir.path().join("a b")).unwrap();
        std::fs::write(dir.path().join("a b/index.html"), "x").unwrap();
        let site = Site::new(dir.path().to_path_buf());
        for (asked, location) in [
            ("/status", "/status/"),
            ("//status", "/status/"),
            ("///status", "/status/"),
            ("/%2fstatus", "/status/"),
            ("/./status", "/status/"),
            ("/a%20b", "/a%20b/"),
        ] {
            let r = get(&site, asked, &[]);
            assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY, "{asked}");
            assert_eq!(r.headers()[header::LOCATION], location, "{asked}");
        }
        // A backslash is refused before anything is looked up.
        let req = Request::builder().uri("/%5cstatus").body(()).unwrap();
        assert!(site.serve(&req).is_none());
    }
}
