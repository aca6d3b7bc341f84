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

/// A location name (an agent's `--location`, a Monitor's `spec.locations[]`): a DNS-1123
/// label, so it fits object keys, metric labels and URLs as it is. The reason when not.
pub fn location_name(s: &str) -> Result<(), String> {
    if dns1123(s, 63, false) {
        Ok(())
    } else {
        Err(format!(
            "must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending \
             with a letter or digit, at most 63 characters), got {s:?}"
        ))
    }
}

/// The longest name or title shown on pages, badges and feeds (a page title, a group
/// name, a monitor's display name, a tag), in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// The longest description shown on pages and feeds (a page's, a group's, a monitor's,
/// a maintenance window's, a silence's reason), in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4096;

/// The longest template source, in characters (`notify::template` also bounds its bytes).
pub const MAX_TEMPLATE_CHARS: usize = 16 * 1024;

/// The longest URL, in characters.
pub const MAX_URL_CHARS: usize = 2048;

/// The longest request body (`target.http.body`, `target.tcp.send`, …), in characters.
pub const MAX_BODY_CHARS: usize = 64 * 1024;

/// The longest of every other string in a manifest (header values, annotations,
/// messages, selectors, …), in characters.
pub const MAX_STRING_CHARS: usize = 4096;

/// The longest label value, in characters (as Kubernetes has it).
pub const MAX_LABEL_VALUE_CHARS: usize = 63;

/// The longest label key, in characters (a 253-character prefix, `/`, a 63-character
/// name).
pub const MAX_LABEL_KEY_CHARS: usize = 317;

/// What is wrong with a character in text that reaches pages, badges and feeds: control
/// characters (line breaks and tabs allowed where `multiline`), bidirectional overrides
/// and isolates (U+202A–U+202E, U+2066–U+2069), zero-width characters (U+200B–U+200F,
/// U+2060, U+FEFF) and line or paragraph separators (U+2028, U+2029).
pub fn hidden_char(c: char, multiline: bool) -> Option<&'static str> {
    match c {
        '\n' | '\t' if multiline => None,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
            Some("a bidirectional override or isolate")
        }
        '\u{200B}'..='\u{200F}' | '\u{2060}' | '\u{FEFF}' => Some("a zero-width character"),
        '\u{2028}' | '\u{2029}' => Some("a line or paragraph separator"),
        c if c.is_control() => Some("a control character"),
        _ => None,
    }
}

/// Text that reaches pages, badges and feeds: at most `max` characters, none of them
/// hidden ([`hidden_char`]); line breaks and tabs only where `multiline`.
pub fn public_text(sink: &mut Sink<'_>, path: &str, text: &str, max: usize, multiline: bool) {
    let chars = text.chars().count();
    if chars > max {
        sink.error(
            path,
            format!("must be at most {max} characters, got {chars}"),
        );
    }
    if let Some((i, c, what)) = text
        .chars()
        .enumerate()
        .find_map(|(i, c)| hidden_char(c, multiline).map(|w| (i, c, w)))
    {
        sink.error(
            path,
            format!(
                "must not contain {what} (U+{:04X} at character {})",
                u32::from(c),
                i + 1
            ),
        );
    }
}

/// The longest a string at `path` (a manifest's field path, list indices included) may
/// be, by the name of its field: templates, request bodies, URLs and label parts have
/// their own bounds, everything else [`MAX_STRING_CHARS`].
pub fn max_chars(path: &str) -> usize {
    let field = path.rsplit('.').next().unwrap_or(path);
    let field = field.split('[').next().unwrap_or(field);
    if path.starts_with("metadata.labels.") || path.contains(".labels.") {
        return MAX_LABEL_VALUE_CHARS;
    }
    match field {
        "titleTemplate" | "bodyTemplate" => MAX_TEMPLATE_CHARS,
        "key" if path.contains("dedupe") => MAX_TEMPLATE_CHARS,
        "body" | "send" | "expect" | "message" | "expectedResponse" => MAX_BODY_CHARS,
        f if f == "url" || f == "urls" || f.ends_with("Url") || f == "issuer" => MAX_URL_CHARS,
        _ => MAX_STRING_CHARS,
    }
}

/// Every string of a manifest (values and mapping keys) within [`max_chars`] of its path;
/// label keys within [`MAX_LABEL_KEY_CHARS`]. Walks without recursion.
pub fn string_lengths(sink: &mut Sink<'_>, value: &serde_json::Value) {
    use serde_json::Value;
    let mut stack: Vec<(String, &Value)> = vec![(String::new(), value)];
    let join = |base: &str, key: &str| {
        if base.is_empty() {
            key.to_string()
        } else {
            format!("{base}.{key}")
        }
    };
    while let Some((path, v)) = stack.pop() {
        match v {
            Value::String(s) => {
                let max = max_chars(&path);
                let chars = s.chars().count();
                if chars > max {
                    sink.error(
                        &path,
                        format!("must be at most {max} characters, got {chars}"),
                    );
                }
            }
            Value::Array(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (format!("{path}[{i}]"), item)),
            ),
            Value::Object(map) => {
                let labels = path == "metadata.labels" || path.ends_with(".labels");
                let max_key = if labels {
                    MAX_LABEL_KEY_CHARS
                } else {
                    MAX_STRING_CHARS
                };
                for (k, item) in map {
                    let chars = k.chars().count();
                    let child = join(&path, k);
                    if chars > max_key {
                        let shown: String = k.chars().take(40).collect();
                        sink.error(
                            &join(&path, &format!("{shown}…")),
                            format!("key must be at most {max_key} characters, got {chars}"),
                        );
                        continue;
                    }
                    stack.push((child, item));
                }
            }
            _ => {}
        }
    }
}
