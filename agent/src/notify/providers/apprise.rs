//! Apprise: an Apprise API server's stateless `POST /notify` when `serverUrl` is set,
//! else the `apprise` CLI.
//!
//! Apprise URLs often carry tokens. The CLI gets them in its `APPRISE_URLS` environment
//! variable, which it reads when no URL or `--config` is on its command line: a process's
//! environment is readable only by its owner, unlike its arguments (world-readable in
//! `/proc/<pid>/cmdline`). Error texts are scrubbed of anything from the URLs.

use std::process::Stdio;
use std::sync::OnceLock;

use kubekuma_crds::ProviderType;
use kubekuma_crds::common::SecretKeyRef;
use kubekuma_crds::notification::AppriseConfig;
use regex::Regex;

use super::endpoint;
use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::{PlanError, Sink};

const FIELD: &str = "spec.config.apprise";

/// An Apprise provider's checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprisePlan {
    /// The namespace its Secret reference resolves in.
    namespace: String,
    /// The path of its configuration block.
    base: String,
    /// `urls`, trimmed, each `schema://…`.
    urls: Vec<String>,
    /// The Secret key holding more URLs.
    urls_secret: Option<SecretKeyRef>,
    /// The Apprise API server, when set: `{serverUrl}/notify` and the host shown in
    /// messages.
    server: Option<Server>,
}

/// An Apprise API server.
#[derive(Clone, Debug, PartialEq)]
struct Server {
    /// `{serverUrl}/notify`.
    endpoint: String,
    /// `Apprise API server <host>`.
    shown: String,
}

impl ApprisePlan {
    /// The plan of an Apprise block checked on its own at `spec.config.apprise`.
    pub fn of(namespace: &str, config: &AppriseConfig) -> Result<ApprisePlan, PlanError> {
        super::alone(namespace, ProviderType::Apprise, config, plan)
    }

    /// Its Secret references with their field paths.
    pub(super) fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        self.urls_secret
            .iter()
            .map(|r| (format!("{}.urlsSecretRef", self.base), r.clone()))
            .collect()
    }
}

/// The plan of an Apprise provider: its configuration block at `base` checked.
pub(crate) fn plan(
    namespace: &str,
    base: &str,
    c: &AppriseConfig,
    sink: &mut Sink<'_>,
) -> Option<ApprisePlan> {
    if c.urls.is_empty() && c.urls_secret_ref.is_none() {
        sink.error(
            &format!("{base}.urls"),
            "must list at least one Apprise URL (or set urlsSecretRef)",
        );
    }
    let mut urls = Vec::new();
    for (i, u) in c.urls.iter().enumerate() {
        if u.contains("://") && has_schema(u.trim()) {
            urls.push(u.trim().to_string());
        } else {
            sink.error(
                &format!("{base}.urls[{i}]"),
                "must be an Apprise URL such as json://host/path (the value is not shown: Apprise URLs may carry credentials)",
            );
        }
    }
    let server = match &c.server_url {
        None => None,
        Some(u) => {
            let path = format!("{base}.serverUrl");
            endpoint(sink, &path, u, "")?;
            let host = url::Url::parse(u)
                .ok()
                .and_then(|p| p.host_str().map(str::to_string))?;
            Some(Server {
                endpoint: format!("{}/notify", u.trim_end_matches('/')),
                shown: format!("Apprise API server {host}"),
            })
        }
    };
    Some(ApprisePlan {
        namespace: namespace.to_string(),
        base: base.to_string(),
        urls,
        urls_secret: c.urls_secret_ref.clone(),
        server,
    })
}

/// Send `msg` through Apprise to the URLs of `plan`.
pub async fn send(
    ctx: &ProviderContext,
    plan: &ApprisePlan,
    msg: &Message,
) -> Result<Delivered, SendError> {
    let urls = urls(ctx, plan)?;
    match &plan.server {
        Some(server) => via_server(ctx, server, &urls, msg).await,
        None => via_cli(ctx, &urls, msg).await,
    }
}

/// Apprise's notification type for an event.
pub fn notify_type(event: &str) -> &'static str {
    match event {
        "down" | "reminder" => "failure",
        "up" => "success",
        "flapping" | "certExpiring" => "warning",
        _ => "info",
    }
}

/// The URLs of `urls` and of the Secret, the Secret's checked to look like `schema://…`.
fn urls(ctx: &ProviderContext, plan: &ApprisePlan) -> Result<Vec<String>, SendError> {
    let mut out = plan.urls.clone();
    let namespace = plan.namespace.as_str();
    if let Some(r) = &plan.urls_secret {
        let value = ctx.secrets.get(namespace, &r.name, &r.key).ok_or_else(|| {
            SendError::Config(format!(
                "{FIELD}.urlsSecretRef: {}",
                ctx.secrets.why_missing(namespace, &r.name, &r.key)
            ))
        })?;
        let found = split_urls(&value.expose_str()).ok_or_else(|| {
            SendError::Config(format!(
                "{FIELD}.urlsSecretRef: Secret {namespace}/{} key {:?} holds something that is not \
                 an Apprise URL (schema://…)",
                r.name, r.key
            ))
        })?;
        out.extend(found);
    }
    Ok(out)
}

/// Whether `url` starts like an Apprise URL: a schema of 1 to 32 ASCII letters or digits,
/// `://`, then something other than whitespace.
fn has_schema(url: &str) -> bool {
    let Some((schema, rest)) = url.split_once("://") else {
        return false;
    };
    (1..=32).contains(&schema.len())
        && schema.bytes().all(|b| b.is_ascii_alphanumeric())
        && rest.chars().next().is_some_and(|c| !c.is_whitespace())
}

/// Where a URL starts: at the beginning or after a separator, a `schema://`.
fn url_start() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?i)(?:^|[\s,;])([a-z0-9]{1,32}://)").ok())
        .as_ref()
}

/// A timestamp at the start of an Apprise log line.
fn log_stamp() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - ").ok())
        .as_ref()
}

/// Any URL-looking word.
fn any_url() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?i)[a-z0-9]{1,32}://[^\s'\x22]*").ok())
        .as_ref()
}

/// Split a Secret's text into URLs the way Apprise does: a run of whitespace, commas or
/// semicolons separates two URLs only when a new `schema://` follows, so commas inside a
/// URL stay. `None` when some text is not part of a URL.
fn split_urls(text: &str) -> Option<Vec<String>> {
    let start = url_start()?;
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == ',' || c == ';');
    let starts: Vec<usize> = start
        .captures_iter(text)
        .filter_map(|c| c.get(1).map(|m| m.start()))
        .collect();
    if starts.first().is_some_and(|s| *s != 0) || (starts.is_empty() && !text.is_empty()) {
        return None;
    }
    let mut out = Vec::new();
    for (i, s) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let url =
            text[*s..end].trim_end_matches(|c: char| c.is_whitespace() || c == ',' || c == ';');
        if url.contains(char::is_whitespace) || !has_schema(url) {
            return None;
        }
        out.push(url.to_string());
    }
    Some(out)
}

/// The stateless endpoint of an Apprise API server: `POST {serverUrl}/notify` with
/// `{urls, title, body, type}`. Without URLs the server's `APPRISE_STATELESS_URLS` apply.
async fn via_server(
    ctx: &ProviderContext,
    server: &Server,
    urls: &[String],
    msg: &Message,
) -> Result<Delivered, SendError> {
    let endpoint = &server.endpoint;
    let shown = &server.shown;
    let mut payload = serde_json::json!({
        "title": msg.title,
        "body": msg.body,
        "type": notify_type(&msg.event),
    });
    if !urls.is_empty() {
        payload["urls"] = urls.join(", ").into();
    }
    let response = ctx
        .http
        .post(endpoint)
        .timeout(ctx.timeout)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&payload)
        .send()
        .await
        .map_err(|e| {
            let mut causes = String::new();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                causes.push_str(&format!(": {s}"));
                source = s.source();
            }
            let e = e.without_url();
            SendError::Temporary(scrub(&format!("{shown}: {e}{causes}"), urls))
        })?;
    let status = response.status();
    // 204 means the server found no valid URL to notify (the payload's and its own).
    if status.is_success() && status != reqwest::StatusCode::NO_CONTENT {
        return Ok(Delivered {
            detail: format!("HTTP {}", status.as_u16()),
        });
    }
    // The server's own `error` text, when it sent one.
    let error = response
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .map(|e| format!(": {}", excerpt(&scrub(&e, urls), 200)))
        .unwrap_or_default();
    let text = format!("{shown} answered HTTP {}{error}", status.as_u16());
    Err(match status.as_u16() {
        204 => SendError::Rejected(format!("{text} (no valid Apprise URL to notify)")),
        // 424: a service behind the server failed; it may work next time.
        408 | 424 | 429 | 500..=599 => SendError::Temporary(text),
        _ => SendError::Rejected(text),
    })
}

/// The `apprise` CLI with the URLs in `APPRISE_URLS`.
///
/// Exit codes (Apprise 1.9+): 0 sent; 1 a service failed; 2 bad arguments; 3 nothing
/// matched; 4 partly sent; 5 timed out. 1, 4 and 5 are temporary so the outbox retries
/// (a partial success is then sent again to every URL: a duplicate beats a lost alert).
async fn via_cli(
    ctx: &ProviderContext,
    urls: &[String],
    msg: &Message,
) -> Result<Delivered, SendError> {
    if urls.is_empty() {
        return Err(SendError::Config(format!(
            "{FIELD}: set urls or urlsSecretRef (or serverUrl with an Apprise API server)"
        )));
    }
    let mut cmd = tokio::process::Command::new(&ctx.apprise_program);
    cmd.arg("-v")
        .arg(format!("--title={}", msg.title))
        .arg(format!("--body={}", msg.body))
        .arg(format!("--notification-type={}", notify_type(&msg.event)))
        .env("APPRISE_URLS", urls.join(" "))
        .env_remove("APPRISE_CONFIG_PATH")
        .env_remove("APPRISE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        SendError::Config(format!(
            "cannot run the apprise program {:?} (install it with `pip install apprise`, or set \
             {FIELD}.serverUrl): {e}",
            ctx.apprise_program
        ))
    })?;
    // On a timeout the child is dropped, which kills it.
    let output = tokio::time::timeout(ctx.timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            SendError::Temporary(format!(
                "apprise did not finish within {} s",
                ctx.timeout.as_secs_f64()
            ))
        })?
        .map_err(|e| SendError::Temporary(format!("waiting for apprise: {e}")))?;
    if output.status.success() {
        return Ok(Delivered {
            detail: format!("apprise: sent to {} URL(s)", urls.len()),
        });
    }
    let mut log = String::from_utf8_lossy(&output.stdout).into_owned();
    log.push('\n');
    log.push_str(&String::from_utf8_lossy(&output.stderr));
    let said = log_excerpt(&scrub(&log, urls));
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    Err(match output.status.code() {
        // Apprise dropped every URL as unparseable or unknown.
        Some(1) if log.contains("You must specify at least one service URL") => {
            SendError::Config(format!("apprise recognised none of the URLs{said}"))
        }
        Some(2) => SendError::Config(format!("apprise refused its arguments (exit 2){said}")),
        Some(3) => SendError::Config(format!("apprise matched no service (exit 3){said}")),
        Some(code) => SendError::Temporary(format!("apprise failed (exit {code}){said}")),
        None => SendError::Temporary(format!("apprise was killed by a signal{said}")),
    })
}

/// The warning and error lines of Apprise's log, without timestamps, at most 300 bytes.
fn log_excerpt(log: &str) -> String {
    let lines: Vec<String> = log
        .lines()
        .map(|l| match log_stamp() {
            Some(stamp) => stamp.replace(l.trim(), "").into_owned(),
            None => l.trim().to_string(),
        })
        .filter(|l| l.starts_with("WARNING - ") || l.starts_with("ERROR - "))
        .collect();
    excerpt(&lines.join("; "), 300)
}

fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `text` with every URL-looking word replaced, and every piece of the given URLs (host,
/// user, password, path segments, query values) of 4 characters or more.
fn scrub(text: &str, urls: &[String]) -> String {
    // Without the URL pattern (never: a test compiles it) nothing of the text is shown.
    let Some(any) = any_url() else {
        return "<redacted>".into();
    };
    let mut pieces: Vec<&str> = Vec::new();
    for u in urls {
        pieces.push(u);
        let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
        pieces.push(rest);
        pieces.extend(
            rest.split(|c: char| "/:@?&=#,;+".contains(c) || c.is_whitespace())
                .filter(|p| p.len() >= 4),
        );
    }
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut out = any.replace_all(text, "<url>").into_owned();
    for p in pieces {
        out = out.replace(p, "<redacted>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile_and_schemas_are_recognised() {
        assert!(url_start().is_some() && log_stamp().is_some() && any_url().is_some());
        for ok in ["json://a", "TGRAM://123/x", "a://b"] {
            assert!(has_schema(ok), "{ok}");
        }
        let long = format!("{}://x", "a".repeat(33));
        for bad in [
            "://a",
            "js-on://a",
            "json:// a",
            "json://",
            "json:/a",
            long.as_str(),
        ] {
            assert!(!has_schema(bad), "{bad}");
        }
    }

    #[test]
    fn splits_like_apprise() {
        let got =
            split_urls("json://a/b?to=x,y , tgram://123:ABC/chat\n\nmailto://u:p@h ;").unwrap();
        assert_eq!(
            got,
            [
                "json://a/b?to=x,y",
                "tgram://123:ABC/chat",
                "mailto://u:p@h"
            ]
        );
        assert_eq!(split_urls("  \n"), Some(vec![]));
        assert_eq!(split_urls("oops json://a"), None);
        assert_eq!(split_urls("not a url"), None);
    }

    #[test]
    fn scrub_hides_url_pieces() {
        let urls = vec!["tgram://123456:SeCrEtToKeN/chat42".to_string()];
        let text =
            "Unparseable URL tgram://123456:SeCrEtToKeN/chat42; token SeCrEtToKeN for 123456";
        let out = scrub(text, &urls);
        assert!(
            !out.contains("SeCrEtToKeN") && !out.contains("123456"),
            "{out}"
        );
        assert!(out.contains("<url>"), "{out}");
    }

    #[test]
    fn types_follow_events() {
        assert_eq!(notify_type("down"), "failure");
        assert_eq!(notify_type("reminder"), "failure");
        assert_eq!(notify_type("up"), "success");
        assert_eq!(notify_type("flapping"), "warning");
        assert_eq!(notify_type("certExpiring"), "warning");
        assert_eq!(notify_type("test"), "info");
    }
}
