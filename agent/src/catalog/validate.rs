//! Semantic checks of one resource (ranges, URLs, regexes, schedules, per-type rules).
//! Checks across resources (duplicates, references) live in `snapshot.rs`.

use std::net::{IpAddr, SocketAddr};

use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::common::{MonitorSelector, SecretKeyRef};
use kubekuma_crds::compat::Headers;
use kubekuma_crds::monitor::{HttpTarget, JsonComparison, MonitorSpec, MonitorType, Target};
use kubekuma_crds::notification::{NotificationPolicySpec, NotificationProviderSpec, ProviderType};

use super::findings::Sink;
use super::schedule_expr;
use super::secrets::{secret_refs, without_secret_refs};

/// A range check with the message format every rule shares.
fn range(sink: &mut Sink<'_>, path: &str, v: Option<i64>, min: i64, max: i64) {
    if let Some(v) = v {
        if v < min {
            sink.error(path, format!("must be at least {min}, got {v}"));
        } else if v > max {
            sink.error(path, format!("must be at most {max}, got {v}"));
        }
    }
}

fn port(sink: &mut Sink<'_>, path: &str, v: Option<i64>) {
    range(sink, path, v, 1, 65535);
}

fn regex_ok(sink: &mut Sink<'_>, path: &str, pattern: &str) {
    if let Err(e) = regex::Regex::new(pattern) {
        let detail = e.to_string();
        let last = detail.lines().last().unwrap_or("").trim();
        let last = last.strip_prefix("error: ").unwrap_or(last);
        sink.error(path, format!("invalid regular expression: {last}"));
    }
}

/// Check `${SECRET:…}` syntax inside a string field.
fn secret_syntax(sink: &mut Sink<'_>, path: &str, text: &str) {
    for r in secret_refs(text) {
        if let Err(e) = r {
            sink.error(path, e);
        }
    }
    if let Some(near) = super::secrets::near_miss_ref(text) {
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

fn host_ok(sink: &mut Sink<'_>, path: &str, host: &str) {
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

fn headers_ok(sink: &mut Sink<'_>, path: &str, headers: &Option<Headers>) {
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

fn http_ok(sink: &mut Sink<'_>, base: &str, h: &HttpTarget) {
    url_ok(sink, &format!("{base}.url"), &h.url, &["http", "https"]);
    headers_ok(sink, &format!("{base}.headers"), &h.headers);
    if let Some(body) = &h.body {
        secret_syntax(sink, &format!("{base}.body"), body);
    }
    range(
        sink,
        &format!("{base}.maxRedirects"),
        h.max_redirects,
        0,
        50,
    );
    range(
        sink,
        &format!("{base}.maxBodyBytes"),
        h.max_body_bytes,
        1,
        64 * 1024 * 1024,
    );
    if let Some(tls) = &h.tls {
        range(
            sink,
            &format!("{base}.tls.warnBeforeDays"),
            tls.warn_before_days,
            0,
            3650,
        );
        if tls.verify == Some(true) && h.skip_tls_verify == Some(true) {
            sink.warn(
                &format!("{base}.tls.verify"),
                "contradicts skipTLSVerify: true; certificates will not be verified",
            );
        }
    }
}

fn selector_ok(sink: &mut Sink<'_>, base: &str, sel: &Option<MonitorSelector>) {
    for (i, n) in sel.iter().flat_map(|s| s.match_names.iter()).enumerate() {
        if n.regex == Some(true) {
            regex_ok(sink, &format!("{base}.matchNames[{i}].pattern"), &n.pattern);
        }
    }
}

/// Which `spec.target` blocks are present.
fn present_targets(t: &Target) -> Vec<MonitorType> {
    let mut v = Vec::new();
    for (present, ty) in [
        (t.http.is_some(), MonitorType::Http),
        (t.keyword.is_some(), MonitorType::Keyword),
        (t.json_query.is_some(), MonitorType::JsonQuery),
        (t.tcp.is_some(), MonitorType::Tcp),
        (t.dns.is_some(), MonitorType::Dns),
        (t.ping.is_some(), MonitorType::Ping),
        (t.websocket.is_some(), MonitorType::Websocket),
        (t.push.is_some(), MonitorType::Push),
        (t.steam.is_some(), MonitorType::Steam),
        (t.kubernetes.is_some(), MonitorType::Kubernetes),
        (t.docker.is_some(), MonitorType::Docker),
    ] {
        if present {
            v.push(ty);
        }
    }
    v
}

/// Semantic checks of a Monitor spec.
pub fn monitor(spec: &MonitorSpec, settings: &EffectiveSettings, sink: &mut Sink<'_>) {
    let ty = spec.type_;
    // Schedule.
    let sched = spec.schedule.clone().unwrap_or_default();
    let interval = sched.interval_seconds.unwrap_or(60);
    if let Some(i) = sched.interval_seconds
        && i < settings.min_interval_seconds
    {
        sink.error(
            "spec.schedule.intervalSeconds",
            format!(
                "must be at least {} (KubeKumaSettings spec.scheduler.minIntervalSeconds), got {i}",
                settings.min_interval_seconds
            ),
        );
    }
    // The lower bound is the settings' minimum, checked above (and at least 1).
    range(
        sink,
        "spec.schedule.intervalSeconds",
        sched.interval_seconds,
        i64::MIN,
        86_400,
    );
    range(
        sink,
        "spec.schedule.timeoutSeconds",
        sched.timeout_seconds,
        1,
        300,
    );
    if let Some(t) = sched.timeout_seconds
        && t > interval
    {
        let source = if sched.interval_seconds.is_some() {
            format!("spec.schedule.intervalSeconds ({interval})")
        } else {
            format!("the default interval ({interval}s)")
        };
        sink.error(
            "spec.schedule.timeoutSeconds",
            format!("must not exceed {source}, got {t}"),
        );
    } else if sched.timeout_seconds.is_none()
        && interval >= 1
        && settings.default_timeout_seconds > interval
    {
        sink.warn(
            "spec.schedule.timeoutSeconds",
            format!(
                "not set: the default timeout ({}s, KubeKumaSettings spec.scheduler.defaultTimeoutSeconds) exceeds the interval and is cut to {interval}s",
                settings.default_timeout_seconds
            ),
        );
    }
    if let Some(r) = sched.retries {
        let path = if r.object_form {
            "spec.schedule.retries.maxRetries"
        } else {
            "spec.schedule.retries"
        };
        range(sink, path, Some(r.max_retries), 0, 10);
        if r.object_form {
            range(
                sink,
                "spec.schedule.retries.retryIntervalSeconds",
                r.retry_interval_seconds,
                1,
                3600,
            );
        }
    }
    range(
        sink,
        "spec.schedule.retryIntervalSeconds",
        sched.retry_interval_seconds,
        1,
        3600,
    );
    range(
        sink,
        "spec.schedule.initialDelaySeconds",
        sched.initial_delay_seconds,
        0,
        86_400,
    );
    range(
        sink,
        "spec.schedule.graceDownSeconds",
        sched.grace_down_seconds,
        0,
        86_400,
    );
    range(
        sink,
        "spec.schedule.jitterPercent",
        sched.jitter_percent,
        0,
        100,
    );

    // Target: the block named by the type must be there; others are ignored.
    let t = &spec.target;
    let present = present_targets(t);
    let compat_http = matches!(ty, MonitorType::Keyword | MonitorType::JsonQuery)
        && t.http.is_some()
        && !present.contains(&ty);
    if !present.contains(&ty) && !compat_http {
        sink.error(
            &format!("spec.target.{ty}"),
            format!(
                "required for type {ty}{}",
                if present.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (found {})",
                        present
                            .iter()
                            .map(|p| format!("target.{p}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        );
    }
    for p in &present {
        if *p != ty && !(compat_http && *p == MonitorType::Http) {
            sink.warn(
                &format!("spec.target.{p}"),
                format!("ignored for type {ty}"),
            );
        }
    }
    match ty {
        MonitorType::Http => {
            if let Some(h) = &t.http {
                http_ok(sink, "spec.target.http", h);
            }
        }
        MonitorType::Keyword => {
            if let Some(k) = &t.keyword {
                http_ok(sink, "spec.target.keyword", &k.http);
                if k.keyword.is_empty() {
                    sink.error("spec.target.keyword.keyword", "must not be empty");
                } else if k.regex == Some(true) {
                    regex_ok(sink, "spec.target.keyword.keyword", &k.keyword);
                }
            } else if let Some(h) = &t.http {
                http_ok(sink, "spec.target.http", h);
                let kw = spec
                    .success_criteria
                    .as_ref()
                    .and_then(|c| c.keyword.as_ref());
                if kw.is_none_or(|k| k.contains.is_empty() && k.not_contains.is_empty()) {
                    sink.error(
                        "spec.target.keyword",
                        "required for type keyword (or target.http with successCriteria.keyword.contains/notContains)",
                    );
                }
            }
        }
        MonitorType::JsonQuery => {
            if let Some(j) = &t.json_query {
                http_ok(sink, "spec.target.jsonQuery", &j.http);
                if let Err(e) = serde_json_path::JsonPath::parse(&j.query) {
                    sink.error(
                        "spec.target.jsonQuery.query",
                        format!("invalid JSONPath (RFC 9535): {e}"),
                    );
                }
                let cmp = j.comparison.unwrap_or(if j.expected.is_some() {
                    JsonComparison::Equals
                } else {
                    JsonComparison::Exists
                });
                match (cmp, &j.expected) {
                    (JsonComparison::Exists, Some(_)) => sink.warn(
                        "spec.target.jsonQuery.expected",
                        "ignored: comparison exists only checks that the query matches",
                    ),
                    (JsonComparison::Exists, None) => {}
                    (_, None) => sink.error(
                        "spec.target.jsonQuery.expected",
                        "required unless comparison is exists",
                    ),
                    (
                        JsonComparison::LessThan
                        | JsonComparison::LessThanOrEqual
                        | JsonComparison::GreaterThan
                        | JsonComparison::GreaterThanOrEqual,
                        Some(v),
                    ) if !v.is_number()
                        && v.as_str().is_none_or(|s| s.trim().parse::<f64>().is_err()) =>
                    {
                        sink.error(
                            "spec.target.jsonQuery.expected",
                            format!(
                                "must be a number for an ordering comparison, got {}",
                                kubekuma_crds::compat::describe(v)
                            ),
                        )
                    }
                    _ => {}
                }
            } else if let Some(h) = &t.http {
                http_ok(sink, "spec.target.http", h);
                sink.error("spec.target.jsonQuery.query", "required for type jsonQuery");
            }
        }
        MonitorType::Tcp => {
            if let Some(tcp) = &t.tcp {
                host_ok(sink, "spec.target.tcp.host", &tcp.host);
                port(sink, "spec.target.tcp.port", Some(tcp.port));
            }
        }
        MonitorType::Dns => {
            if let Some(d) = &t.dns {
                let domain = d.domain.trim_end_matches('.');
                let ptr_by_address = d.record_type
                    == Some(kubekuma_crds::monitor::DnsRecordType::PTR)
                    && domain.parse::<std::net::IpAddr>().is_ok();
                if ptr_by_address {
                    // An address to look up in in-addr.arpa / ip6.arpa.
                } else if domain.is_empty()
                    || domain.len() > 253
                    || !domain.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    })
                {
                    sink.error(
                        "spec.target.dns.domain",
                        format!("must be a domain name, got {:?}", d.domain),
                    );
                }
                if let Some(s) = &d.server {
                    server_ok(sink, "spec.target.dns.server", s);
                }
            }
        }
        MonitorType::Ping => {
            if let Some(p) = &t.ping {
                host_ok(sink, "spec.target.ping.host", &p.host);
                range(sink, "spec.target.ping.count", p.count, 1, 100);
                port(sink, "spec.target.ping.tcpFallback", p.tcp_fallback);
            }
        }
        MonitorType::Websocket => {
            if let Some(w) = &t.websocket {
                url_ok(sink, "spec.target.websocket.url", &w.url, &["ws", "wss"]);
                headers_ok(sink, "spec.target.websocket.headers", &w.headers);
                if w.regex == Some(true) {
                    match &w.expected_response {
                        Some(p) => regex_ok(sink, "spec.target.websocket.expectedResponse", p),
                        None => sink.warn(
                            "spec.target.websocket.regex",
                            "has no effect without expectedResponse",
                        ),
                    }
                }
            }
        }
        MonitorType::Push => {
            if let Some(p) = &t.push {
                if let Some(tok) = &p.token
                    && (tok.len() < 8
                        || tok.len() > 128
                        || !tok
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                {
                    sink.error(
                        "spec.target.push.token",
                        format!(
                            "must be 8-128 characters of letters, digits, '-' and '_', got {} characters",
                            tok.chars().count()
                        ),
                    );
                }
                range(
                    sink,
                    "spec.target.push.intervalSeconds",
                    p.interval_seconds,
                    1,
                    86_400 * 7,
                );
                range(
                    sink,
                    "spec.target.push.graceSeconds",
                    p.grace_seconds,
                    0,
                    86_400,
                );
            }
        }
        MonitorType::Steam => {
            if let Some(s) = &t.steam {
                host_ok(sink, "spec.target.steam.host", &s.host);
                port(sink, "spec.target.steam.port", s.port);
            }
        }
        MonitorType::Kubernetes => {
            if let Some(k) = &t.kubernetes {
                let av = &k.api_version;
                let parts: Vec<&str> = av.split('/').collect();
                if av.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
                    sink.error(
                        "spec.target.kubernetes.apiVersion",
                        format!("must be `version` or `group/version` (e.g. apps/v1), got {av:?}"),
                    );
                }
                if k.kind.is_empty() || !k.kind.starts_with(|c: char| c.is_ascii_uppercase()) {
                    sink.error(
                        "spec.target.kubernetes.kind",
                        format!("must be a kind such as Deployment, got {:?}", k.kind),
                    );
                }
                if !super::decode::dns1123(&k.name, 253, true) {
                    sink.error(
                        "spec.target.kubernetes.name",
                        format!("must be a resource name, got {:?}", k.name),
                    );
                }
            }
        }
        MonitorType::Docker => {
            if let Some(d) = &t.docker {
                if d.container.trim().is_empty() {
                    sink.error("spec.target.docker.container", "must not be empty");
                }
                if let Some(e) = &d.engine {
                    let ok = ["unix:///", "tcp://", "http://"]
                        .iter()
                        .any(|p| e.starts_with(p) && e.len() > p.len())
                        || (e.starts_with('/') && e.len() > 1);
                    if !ok {
                        sink.error(
                            "spec.target.docker.engine",
                            format!(
                                "must be unix:///path/to/docker.sock, an absolute socket path, tcp://host:port or http://host:port (TLS engines are not supported), got {e:?}"
                            ),
                        );
                    }
                }
            }
        }
    }

    // Success criteria.
    if let Some(c) = &spec.success_criteria {
        let http_like = matches!(
            ty,
            MonitorType::Http | MonitorType::Keyword | MonitorType::JsonQuery
        );
        if let Some(h) = &c.http {
            if !http_like {
                sink.warn(
                    "spec.successCriteria.http",
                    format!("ignored for type {ty}"),
                );
            }
            for (i, code) in h.status_codes.iter().flatten().enumerate() {
                range(
                    sink,
                    &format!("spec.successCriteria.http.statusCodes[{i}]"),
                    Some(*code),
                    100,
                    599,
                );
            }
            if h.status_codes.as_ref().is_some_and(Vec::is_empty) {
                sink.error(
                    "spec.successCriteria.http.statusCodes",
                    "must list at least one status code",
                );
            }
            range(
                sink,
                "spec.successCriteria.http.maxLatencyMs",
                h.max_latency_ms,
                1,
                600_000,
            );
        }
        if c.keyword.is_some() && !matches!(ty, MonitorType::Keyword | MonitorType::Http) {
            sink.warn(
                "spec.successCriteria.keyword",
                format!("ignored for type {ty}"),
            );
        }
        for (block, path, ok) in [
            (
                c.json_query.as_ref().map(|l| l.max_latency_ms),
                "jsonQuery",
                ty == MonitorType::JsonQuery,
            ),
            (
                c.tcp.as_ref().map(|l| l.max_latency_ms),
                "tcp",
                ty == MonitorType::Tcp,
            ),
            (
                c.dns.as_ref().map(|l| l.max_latency_ms),
                "dns",
                ty == MonitorType::Dns,
            ),
            (
                c.websocket.as_ref().map(|l| l.max_latency_ms),
                "websocket",
                ty == MonitorType::Websocket,
            ),
            (
                c.ping.as_ref().map(|l| l.max_latency_ms),
                "ping",
                ty == MonitorType::Ping,
            ),
            (
                c.steam.as_ref().map(|l| l.max_latency_ms),
                "steam",
                ty == MonitorType::Steam,
            ),
        ] {
            if let Some(ms) = block {
                if !ok {
                    sink.warn(
                        &format!("spec.successCriteria.{path}"),
                        format!("ignored for type {ty}"),
                    );
                }
                range(
                    sink,
                    &format!("spec.successCriteria.{path}.maxLatencyMs"),
                    ms,
                    1,
                    600_000,
                );
            }
        }
        if let Some(p) = &c.ping {
            range(
                sink,
                "spec.successCriteria.ping.maxPacketLossPercent",
                p.max_packet_loss_percent,
                0,
                100,
            );
        }
        if let Some(s) = &c.steam {
            range(
                sink,
                "spec.successCriteria.steam.minPlayers",
                s.min_players,
                0,
                1_000_000,
            );
        }
        if let Some(k) = &c.kubernetes {
            if ty != MonitorType::Kubernetes {
                sink.warn(
                    "spec.successCriteria.kubernetes",
                    format!("ignored for type {ty}"),
                );
            }
            range(
                sink,
                "spec.successCriteria.kubernetes.minReadyPercent",
                k.min_ready_percent,
                0,
                100,
            );
        }
        if c.docker.is_some() && ty != MonitorType::Docker {
            sink.warn(
                "spec.successCriteria.docker",
                format!("ignored for type {ty}"),
            );
        }
    }

    if let Some(a) = &spec.alerting {
        range(
            sink,
            "spec.alerting.resendIntervalMinutes",
            a.resend_interval_minutes,
            0,
            525_600,
        );
    }
}

fn server_ok(sink: &mut Sink<'_>, path: &str, s: &str) {
    if s.parse::<IpAddr>().is_err() && s.parse::<SocketAddr>().is_err() {
        sink.error(
            path,
            format!("must be an IP address or ip:port (e.g. 10.0.0.10 or [::1]:5353), got {s:?}"),
        );
    }
}

/// Every Secret reference of a provider, with its field path.
pub fn provider_secret_refs(spec: &NotificationProviderSpec) -> Vec<(String, SecretKeyRef)> {
    let mut v = Vec::new();
    let (base, cfg) = provider_block_path(spec);
    let Some(cfg) = cfg else { return v };
    let mut add = |field: &str, r: &Option<SecretKeyRef>| {
        if let Some(r) = r {
            v.push((format!("{base}.{field}"), r.clone()));
        }
    };
    match cfg {
        Block::Slack(c) => add(
            "webhookUrlSecretRef",
            &Some(c.webhook_url_secret_ref.clone()),
        ),
        Block::Discord(c) => add(
            "webhookUrlSecretRef",
            &Some(c.webhook_url_secret_ref.clone()),
        ),
        Block::Telegram(c) => add("botTokenSecretRef", &Some(c.bot_token_secret_ref.clone())),
        Block::Smtp(c) => add("passwordSecretRef", &c.password_secret_ref),
        Block::Webhook(c) => {
            add("urlSecretRef", &c.url_secret_ref);
            add("hmacSecretRef", &c.hmac_secret_ref);
        }
        Block::Gotify(c) => add("tokenSecretRef", &Some(c.token_secret_ref.clone())),
        Block::Pushover(c) => {
            add("userKeySecretRef", &Some(c.user_key_secret_ref.clone()));
            add("apiTokenSecretRef", &Some(c.api_token_secret_ref.clone()));
        }
        Block::Apprise(c) => add("urlsSecretRef", &c.urls_secret_ref),
    }
    v
}

/// The configuration block of a provider's type, in either place.
pub enum Block<'a> {
    /// Slack.
    Slack(&'a kubekuma_crds::notification::SlackConfig),
    /// Discord.
    Discord(&'a kubekuma_crds::notification::DiscordConfig),
    /// Telegram.
    Telegram(&'a kubekuma_crds::notification::TelegramConfig),
    /// SMTP.
    Smtp(&'a kubekuma_crds::notification::SmtpConfig),
    /// Webhook.
    Webhook(&'a kubekuma_crds::notification::WebhookConfig),
    /// Gotify.
    Gotify(&'a kubekuma_crds::notification::GotifyConfig),
    /// Pushover.
    Pushover(&'a kubekuma_crds::notification::PushoverConfig),
    /// Apprise.
    Apprise(&'a kubekuma_crds::notification::AppriseConfig),
}

/// The path and block of a provider's configuration (`spec.config.<type>`, or the
/// original implementation's `spec.<type>`).
pub fn provider_block_path(spec: &NotificationProviderSpec) -> (String, Option<Block<'_>>) {
    let cfg = spec.config.as_ref();
    let ty = spec.type_;
    let in_config = match ty {
        ProviderType::Slack => cfg.and_then(|c| c.slack.as_ref()).map(Block::Slack),
        ProviderType::Discord => cfg.and_then(|c| c.discord.as_ref()).map(Block::Discord),
        ProviderType::Telegram => cfg.and_then(|c| c.telegram.as_ref()).map(Block::Telegram),
        ProviderType::Smtp => cfg.and_then(|c| c.smtp.as_ref()).map(Block::Smtp),
        ProviderType::Webhook => cfg.and_then(|c| c.webhook.as_ref()).map(Block::Webhook),
        ProviderType::Gotify => cfg.and_then(|c| c.gotify.as_ref()).map(Block::Gotify),
        ProviderType::Pushover => cfg.and_then(|c| c.pushover.as_ref()).map(Block::Pushover),
        ProviderType::Apprise => cfg.and_then(|c| c.apprise.as_ref()).map(Block::Apprise),
    };
    if in_config.is_some() {
        return (format!("spec.config.{ty}"), in_config);
    }
    let top = match ty {
        ProviderType::Slack => spec.slack.as_ref().map(Block::Slack),
        ProviderType::Discord => spec.discord.as_ref().map(Block::Discord),
        ProviderType::Webhook => spec.webhook.as_ref().map(Block::Webhook),
        _ => None,
    };
    (
        if top.is_some() {
            format!("spec.{ty}")
        } else {
            format!("spec.config.{ty}")
        },
        top,
    )
}

/// Semantic checks of a NotificationProvider spec.
pub fn provider(spec: &NotificationProviderSpec, sink: &mut Sink<'_>) {
    let (base, block) = provider_block_path(spec);
    let Some(block) = block else {
        sink.error(&base, format!("required for type {}", spec.type_));
        return;
    };
    match block {
        Block::Slack(_) | Block::Discord(_) => {}
        Block::Telegram(c) => {
            if c.chat_id.trim().is_empty() {
                sink.error(&format!("{base}.chatId"), "must not be empty");
            }
            if let Some(u) = &c.api_url {
                url_ok(sink, &format!("{base}.apiUrl"), u, &["http", "https"]);
            }
        }
        Block::Smtp(c) => {
            host_ok(sink, &format!("{base}.host"), &c.host);
            port(sink, &format!("{base}.port"), c.port);
            if !looks_like_address(&c.from) {
                sink.error(
                    &format!("{base}.from"),
                    format!("must be an e-mail address such as alerts@example.com or \"Name <alerts@example.com>\", got {:?}", c.from),
                );
            }
            if c.to.is_empty() {
                sink.error(&format!("{base}.to"), "must list at least one recipient");
            }
            for (i, to) in c.to.iter().enumerate() {
                if !looks_like_address(to) {
                    sink.error(
                        &format!("{base}.to[{i}]"),
                        format!("must be an e-mail address, got {to:?}"),
                    );
                }
            }
            if c.password_secret_ref.is_some() && c.username.is_none() {
                sink.warn(
                    &format!("{base}.passwordSecretRef"),
                    "has no effect without username",
                );
            }
        }
        Block::Webhook(c) => {
            match (&c.url, &c.url_secret_ref) {
                (None, None) => sink.error(&format!("{base}.url"), "required (or urlSecretRef)"),
                (Some(u), _) => url_ok(sink, &format!("{base}.url"), u, &["http", "https"]),
                _ => {}
            }
            if let Some(m) = &c.method
                && !matches!(
                    m.to_ascii_uppercase().as_str(),
                    "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
                )
            {
                sink.error(
                    &format!("{base}.method"),
                    format!("unknown value {m:?}, expected one of GET, POST, PUT, PATCH, DELETE"),
                );
            }
            headers_ok(sink, &format!("{base}.headers"), &c.headers);
            if let Some(t) = &c.body_template
                && let Err(e) = crate::notify::template::check(t)
            {
                sink.warn(
                    &format!("{base}.bodyTemplate"),
                    format!("template does not work (the default body is used): {e}"),
                );
            }
        }
        Block::Gotify(c) => {
            url_ok(sink, &format!("{base}.url"), &c.url, &["http", "https"]);
            range(sink, &format!("{base}.priority"), c.priority, 0, 10);
        }
        Block::Pushover(c) => {
            range(sink, &format!("{base}.priority"), c.priority, -2, 2);
            if let Some(u) = &c.api_url {
                url_ok(sink, &format!("{base}.apiUrl"), u, &["http", "https"]);
            }
        }
        Block::Apprise(c) => {
            if c.urls.is_empty() && c.urls_secret_ref.is_none() {
                sink.error(
                    &format!("{base}.urls"),
                    "must list at least one Apprise URL (or set urlsSecretRef)",
                );
            }
            for (i, u) in c.urls.iter().enumerate() {
                if !u.contains("://") {
                    sink.error(
                        &format!("{base}.urls[{i}]"),
                        "must be an Apprise URL such as json://host/path (the value is not shown: Apprise URLs may carry credentials)",
                    );
                }
            }
            if let Some(u) = &c.server_url {
                url_ok(sink, &format!("{base}.serverUrl"), u, &["http", "https"]);
            }
        }
    }
}

fn looks_like_address(s: &str) -> bool {
    let addr = match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s,
    };
    let addr = addr.trim();
    match addr.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !addr.contains(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    }
}

/// Semantic checks of a NotificationPolicy spec.
pub fn policy(spec: &NotificationPolicySpec, sink: &mut Sink<'_>) {
    range(sink, "spec.priority", spec.priority, 0, 1_000_000);
    selector_ok(sink, "spec.match", &spec.match_);
    if let Some(t) = &spec.triggers
        && let Some(c) = &t.on_cert_expiring
    {
        range(
            sink,
            "spec.triggers.onCertExpiring.daysThreshold",
            c.days_threshold,
            1,
            365,
        );
    }
    if let Some(r) = &spec.routing {
        if let Some(d) = &r.dedupe {
            range(
                sink,
                "spec.routing.dedupe.windowMinutes",
                d.window_minutes,
                0,
                525_600,
            );
        }
        if let Some(l) = &r.rate_limit {
            range(
                sink,
                "spec.routing.rateLimit.minMinutesBetweenAlerts",
                l.min_minutes_between_alerts,
                0,
                525_600,
            );
        }
        if let Some(rs) = &r.resend {
            range(
                sink,
                "spec.routing.resend.resendIntervalMinutes",
                rs.resend_interval_minutes,
                0,
                525_600,
            );
        }
    }
    if spec.provider_refs().next().is_none() {
        sink.warn("spec.routing.providers", "the policy routes to no provider");
    }
    let templates = [
        (
            "spec.formatting.titleTemplate",
            spec.formatting
                .as_ref()
                .and_then(|f| f.title_template.as_ref()),
        ),
        (
            "spec.formatting.bodyTemplate",
            spec.formatting
                .as_ref()
                .and_then(|f| f.body_template.as_ref()),
        ),
        (
            "spec.routing.dedupe.key",
            spec.routing
                .as_ref()
                .and_then(|r| r.dedupe.as_ref())
                .and_then(|d| d.key.as_ref()),
        ),
    ];
    for (path, src) in templates {
        if let Some(src) = src
            && let Err(e) = crate::notify::template::check(src)
        {
            // A warning, not an error: the policy stays in force and its notifications
            // go out with the default text (an invalid resource would drop them all).
            sink.warn(
                path,
                format!("template does not work (the default is used): {e}"),
            );
        }
    }
}

/// Semantic checks of a StatusPage spec.
pub fn status_page(spec: &kubekuma_crds::StatusPageSpec, sink: &mut Sink<'_>) {
    if !super::decode::dns1123(&spec.slug, 63, false) {
        sink.error(
            "spec.slug",
            format!(
                "must be lowercase letters, digits and '-' (at most 63 characters), got {:?}",
                spec.slug
            ),
        );
    }
    if spec.title.trim().is_empty() {
        sink.error("spec.title", "must not be empty");
    }
    if let Some(b) = spec.content.as_ref().and_then(|c| c.branding.as_ref()) {
        let color_path = if b.theme.as_ref().is_some_and(|t| t.primary_color.is_some()) {
            "spec.content.branding.theme.primaryColor"
        } else {
            "spec.content.branding.primaryColor"
        };
        if let Some(c) = b.accent() {
            let hex = c.strip_prefix('#').unwrap_or("");
            if !(hex.len() == 3 || hex.len() == 6) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                sink.error(
                    color_path,
                    format!("must be a colour like #3B82F6 or #38f, got {c:?}"),
                );
            }
        }
        for (path, v) in [
            ("spec.content.branding.logoUrl", &b.logo_url),
            ("spec.content.branding.faviconUrl", &b.favicon_url),
        ] {
            if let Some(u) = v
                && !u.starts_with('/')
                && !u.starts_with("data:image/")
            {
                let what = "must be an http:// or https:// URL, a /path or a data:image/ URI";
                match url::Url::parse(u) {
                    Ok(p) if !matches!(p.scheme(), "http" | "https") => {
                        sink.error(path, format!("{what}, got scheme {:?}", p.scheme()))
                    }
                    Ok(_) => {}
                    Err(url::ParseError::RelativeUrlWithoutBase) => {
                        sink.error(path, format!("{what}, got a relative path"))
                    }
                    Err(e) => sink.error(path, format!("{what}: {e}")),
                }
            }
        }
    }
    if let Some(e) = &spec.exposure
        && e.mode == Some(kubekuma_crds::status_page::ExposureMode::Ingress)
        && e.hosts.is_empty()
    {
        sink.warn(
            "spec.exposure.hosts",
            "mode ingress needs at least one host name",
        );
    }
    for (i, h) in spec
        .exposure
        .iter()
        .flat_map(|e| e.hosts.iter())
        .enumerate()
    {
        if !super::decode::dns1123(&h.to_ascii_lowercase(), 253, true) {
            sink.error(
                &format!("spec.exposure.hosts[{i}]"),
                format!("must be a host name, got {h:?}"),
            );
        }
    }
    let mut seen_groups = std::collections::HashSet::new();
    let mut seen_monitors = std::collections::HashMap::new();
    for (gi, g) in spec.groups.iter().enumerate() {
        if g.name.trim().is_empty() {
            sink.error(&format!("spec.groups[{gi}].name"), "must not be empty");
        } else if !seen_groups.insert(g.name.clone()) {
            sink.warn(
                &format!("spec.groups[{gi}].name"),
                format!("group {:?} appears twice", g.name),
            );
        }
        for (mi, m) in g.monitors.iter().enumerate() {
            let key = (m.reference.namespace.clone(), m.reference.name.clone());
            if let Some(first) =
                seen_monitors.insert(key, format!("spec.groups[{gi}].monitors[{mi}]"))
            {
                sink.warn(
                    &format!("spec.groups[{gi}].monitors[{mi}]"),
                    format!("monitor {} is already listed at {first}", m.reference.name),
                );
            }
        }
    }
}

/// Semantic checks of a LocalUser spec.
pub fn local_user(spec: &kubekuma_crds::LocalUserSpec, sink: &mut Sink<'_>) {
    let u = &spec.username;
    if u.is_empty()
        || u.len() > 64
        || !u
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        sink.error(
            "spec.username",
            format!("must be 1-64 letters, digits, '.', '_', '-' or '@', got {u:?}"),
        );
    }
    if let Some(m) = &spec.mfa
        && m.mode == Some(kubekuma_crds::auth::MfaMode::Required)
        && m.totp_secret_ref.is_none()
    {
        sink.error(
            "spec.mfa.totpSecretRef",
            "required when spec.mfa.mode is required",
        );
    }
}

/// Semantic checks of an ApiKey spec.
pub fn api_key(spec: &kubekuma_crds::ApiKeySpec, sink: &mut Sink<'_>) {
    if spec.name.trim().is_empty() {
        sink.error("spec.name", "must not be empty");
    }
    if let Some(exp) = spec.expires_at
        && exp <= chrono::Utc::now()
    {
        sink.warn(
            "spec.expiresAt",
            format!(
                "the key expired at {}",
                exp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
    }
    if spec.key_hash_secret_ref.is_none() {
        sink.warn(
            "spec.keyHashSecretRef",
            "missing: the key cannot be used until it points at its hash (see `kubekuma api-key create`)",
        );
    }
}

/// Semantic checks of a Silence spec.
pub fn silence(spec: &kubekuma_crds::SilenceSpec, sink: &mut Sink<'_>) {
    if spec.ends_at <= spec.starts_at {
        sink.error(
            "spec.endsAt",
            format!(
                "must be after spec.startsAt ({}), got {}",
                spec.starts_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                spec.ends_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
    }
    if spec.ends_at > spec.starts_at && spec.ends_at <= chrono::Utc::now() {
        sink.warn(
            "spec.endsAt",
            format!(
                "the silence ended at {}; it has no effect",
                spec.ends_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
    }
    selector_ok(sink, "spec.selector", &spec.selector);
}

/// Semantic checks of a MaintenanceWindow spec.
pub fn maintenance_window(spec: &kubekuma_crds::MaintenanceWindowSpec, sink: &mut Sink<'_>) {
    let tz = match &spec.timezone {
        Some(name) => {
            match name.parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    sink.error(
                    "spec.timezone",
                    format!("unknown time zone {name:?}, expected an IANA name such as Europe/Berlin"),
                );
                    None
                }
            }
        }
        None => Some(chrono_tz::UTC),
    };
    if let Some(tz) = tz
        && let Err(e) = schedule_expr::WindowSchedule::parse(&spec.schedule, tz)
    {
        sink.error("spec.schedule", e);
    }
    range(
        sink,
        "spec.durationMinutes",
        Some(spec.duration_minutes),
        1,
        10_080,
    );
    selector_ok(sink, "spec.selector", &spec.selector);
}

/// Semantic checks of the KubeKumaSettings spec.
pub fn settings(spec: &kubekuma_crds::KubeKumaSettingsSpec, sink: &mut Sink<'_>) {
    if let Some(s) = &spec.scheduler {
        range(
            sink,
            "spec.scheduler.minIntervalSeconds",
            s.min_interval_seconds,
            1,
            86_400,
        );
        range(
            sink,
            "spec.scheduler.maxConcurrentNetChecks",
            s.max_concurrent_net_checks,
            1,
            100_000,
        );
        range(
            sink,
            "spec.scheduler.maxConcurrentPrivChecks",
            s.max_concurrent_priv_checks,
            1,
            10_000,
        );
        range(
            sink,
            "spec.scheduler.defaultTimeoutSeconds",
            s.default_timeout_seconds,
            1,
            300,
        );
        range(
            sink,
            "spec.scheduler.jitterPercent",
            s.jitter_percent,
            0,
            100,
        );
        if let Some(f) = &s.flapping {
            range(
                sink,
                "spec.scheduler.flapping.windowMinutes",
                f.window_minutes,
                1,
                1440,
            );
            range(
                sink,
                "spec.scheduler.flapping.threshold",
                f.threshold,
                2,
                1000,
            );
        }
    }
    if let Some(r) = &spec.retention {
        range(
            sink,
            "spec.retention.heartbeatsDays",
            r.heartbeats_days,
            1,
            3650,
        );
        range(
            sink,
            "spec.retention.incidentsDays",
            r.incidents_days,
            1,
            36_500,
        );
        range(
            sink,
            "spec.retention.heartbeats.days",
            r.heartbeats.as_ref().and_then(|h| h.days),
            1,
            3650,
        );
        range(
            sink,
            "spec.retention.incidents.days",
            r.incidents.as_ref().and_then(|h| h.days),
            1,
            36_500,
        );
        if let Some(d) = &r.downsample {
            range(
                sink,
                "spec.retention.downsample.afterDays",
                d.after_days,
                1,
                3650,
            );
        }
        for (path, new, old) in [
            (
                "spec.retention.heartbeats.days",
                r.heartbeats_days,
                r.heartbeats.as_ref().and_then(|h| h.days),
            ),
            (
                "spec.retention.incidents.days",
                r.incidents_days,
                r.incidents.as_ref().and_then(|h| h.days),
            ),
        ] {
            if let (Some(n), Some(o)) = (new, old)
                && n != o
            {
                sink.warn(
                    path,
                    format!("ignored: the current spelling says {n} days, this one {o}"),
                );
            }
        }
    }
    if let Some(n) = &spec.networking {
        for (i, s) in n.dns.iter().flat_map(|d| d.servers.iter()).enumerate() {
            server_ok(sink, &format!("spec.networking.dns.servers[{i}]"), s);
        }
    }
    if let Some(p) = spec
        .public_endpoints
        .as_ref()
        .and_then(|p| p.metrics.as_ref())
        .and_then(|m| m.path.as_ref())
        && !p.starts_with('/')
    {
        sink.error(
            "spec.publicEndpoints.metrics.path",
            format!("must start with '/', got {p:?}"),
        );
    }
    if let Some(a) = &spec.auth
        && a.mode == Some(kubekuma_crds::settings::AuthMode::Oidc)
    {
        match &a.oidc {
            None => sink.error("spec.auth.oidc", "required when spec.auth.mode is oidc"),
            Some(o) => {
                match &o.issuer {
                    Some(u) => url_ok(sink, "spec.auth.oidc.issuer", u, &["https", "http"]),
                    None => sink.error(
                        "spec.auth.oidc.issuer",
                        "required when spec.auth.mode is oidc",
                    ),
                }
                if o.client_id.as_deref().is_none_or(str::is_empty) {
                    sink.error(
                        "spec.auth.oidc.clientId",
                        "required when spec.auth.mode is oidc",
                    );
                }
            }
        }
    }
    if let Some(l) = spec.auth.as_ref().and_then(|a| a.local.as_ref()) {
        range(
            sink,
            "spec.auth.local.sessionMaxAgeSeconds",
            l.session_max_age_seconds,
            60,
            31_536_000,
        );
    }
    if let Some(k) = spec.auth.as_ref().and_then(|a| a.api_keys.as_ref()) {
        range(
            sink,
            "spec.auth.apiKeys.maxPerUser",
            k.max_per_user,
            0,
            1000,
        );
    }
}
