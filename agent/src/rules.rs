//! Field rules shared by the catalog's validation and the plans of checks and providers:
//! ranges, URLs, hosts, headers, regular expressions, DNS names and `${SECRET:…}` syntax,
//! each reporting with the message format every resource shares.

use std::net::{IpAddr, SocketAddr};

use kubekuma_crds::compat::Headers;

use crate::findings::Sink;
use crate::secrets::{near_miss_ref, secret_refs, without_secret_refs};

/// A range check with the message format every rule shares.
pub fn range(sink: &mut Sink<'_>, path: &str, v: Option<i64>, min: i64, max: i64) {
    if let Some(v) = v {
        if v < min {
            sink.error(path, format!("must be at least {min}, got {v}"));
        } else if v > max {
            sink.error(path, format!("must be at most {max}, got {v}"));
        }
    }
}

/// A port number, 1-65535.
pub fn port(sink: &mut Sink<'_>, path: &str, v: Option<i64>) {
    range(sink, path, v, 1, 65535);
}

/// A regular expression that compiles; the compiled one when it does.
pub fn regex_ok(sink: &mut Sink<'_>, path: &str, pattern: &str) -> Option<regex::Regex> {
    match regex::Regex::new(pattern) {
        Ok(re) => Some(re),
        Err(e) => {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or("").trim();
            let last = last.strip_prefix("error: ").unwrap_or(last);
            sink.error(path, format!("invalid regular expression: {last}"));
            None
        }
    }
}

/// Check `${SECRET:…}` syntax inside a string field.
pub fn secret_syntax(sink: &mut Sink<'_>, path: &str, text: &str) {
    for r in secret_refs(text) {
        if let Err(e) = r {
            sink.error(path, e);
        }
    }
    if let Some(near) = near_miss_ref(text) {
        sink.warn(
            path,
            format!("`{near}` looks like a secret reference but is sent literally; the form is ${{SECRET:secret-name:key}}"),
        );
    }
}

/// A URL with one of `schemes`; secret references are allowed anywhere in it.
pub fn url_ok(sink: &mut Sink<'_>, path: &str, raw: &str, schemes: &[&str]) {
    secret_syntax(sink, path, raw);
    let expected = schemes
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ");
    let article = if expected.starts_with(['h', 'a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    let expected = format!("{article} {expected} URL");
    let cleaned = without_secret_refs(raw);
    match url::Url::parse(&cleaned) {
        Ok(u) if !schemes.contains(&u.scheme()) => sink.error(
            path,
            format!("must be {expected}, got scheme {:?}", u.scheme()),
        ),
        // `https:///health` parses with host "health": a slash too many.
        Ok(_)
            if cleaned
                .split_once("://")
                .is_some_and(|(_, rest)| rest.starts_with('/')) =>
        {
            sink.error(
                path,
                format!("must be {expected} with a host (there is a '/' too many after ://)"),
            )
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            sink.error(path, format!("must be {expected} with a host"))
        }
        Ok(_) => {}
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            sink.error(path, format!("must be {expected}: the scheme is missing"))
        }
        Err(e) => sink.error(path, format!("must be {expected}: {e}")),
    }
}

/// A host name or IP address (`[v6]` allowed), without scheme, port or path.
pub fn host_ok(sink: &mut Sink<'_>, path: &str, host: &str) {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.is_empty() {
        sink.error(path, "must not be empty");
    } else if h.parse::<IpAddr>().is_err()
        && (h.contains("://")
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'))
    {
        sink.error(
            path,
            format!("must be a host name or IP address (no scheme, port or path), got {host:?}"),
        );
    }
}

/// Header names that are tokens, and the `${SECRET:…}` syntax of their values.
pub fn headers_ok(sink: &mut Sink<'_>, path: &str, headers: &Option<Headers>) {
    for (name, value) in headers.iter().flat_map(|h| h.0.iter()) {
        let p = format!("{path}.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
        {
            sink.error(&p, "invalid header name");
        }
        secret_syntax(sink, &p, value);
    }
}

/// A DNS server: an IP address or `ip:port`.
pub fn server_ok(sink: &mut Sink<'_>, path: &str, s: &str) {
    if s.parse::<IpAddr>().is_err() && s.parse::<SocketAddr>().is_err() {
        sink.error(
            path,
            format!("must be an IP address or ip:port (e.g. 10.0.0.10 or [::1]:5353), got {s:?}"),
        );
    }
}

/// A DNS-1123 subdomain (resource names) or label (namespaces).
pub fn dns1123(s: &str, max: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
        && (dots || !s.contains('.'))
}
