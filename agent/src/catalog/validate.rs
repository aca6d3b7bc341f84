//! Semantic checks of one resource (ranges, URLs, regexes, schedules). A monitor's target
//! follows the rules of its type, in `checks/<type>.rs`; the field rules they share are in
//! `crate::rules`. Checks across resources (duplicates,
//! references) live in `snapshot.rs`.

use kubekuma_crds::EffectiveSettings;
use kubekuma_crds::common::MonitorSelector;
use kubekuma_crds::monitor::{
    HttpCriteria, KubernetesCriteria, MonitorSpec, MonitorType, PingCriteria, Quorum, Schedule,
    SteamCriteria, SuccessCriteria,
};
use kubekuma_crds::notification::{NotificationPolicySpec, NotificationProviderSpec};

use super::schedule_expr;
use crate::findings::Sink;
use crate::notify::providers::ProviderPlan;
use crate::rules::{
    MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, location_name, public_text, range, regex_ok, server_ok,
    url_ok,
};

fn selector_ok(sink: &mut Sink<'_>, base: &str, sel: &Option<MonitorSelector>) {
    for (i, n) in sel.iter().flat_map(|s| s.match_names.iter()).enumerate() {
        if n.regex == Some(true) {
            regex_ok(sink, &format!("{base}.matchNames[{i}].pattern"), &n.pattern);
        }
    }
}

/// Semantic checks of a Monitor spec in `namespace`: its schedule and alerting here, its
/// target and success criteria in its type's checker. The checked plan, unless the sink
/// holds an error.
pub fn monitor(
    namespace: &str,
    spec: &MonitorSpec,
    settings: &EffectiveSettings,
    sink: &mut Sink<'_>,
) -> Option<crate::checks::Plan> {
    // Schedule.
    let sched = spec.schedule.clone().unwrap_or_default();
    schedule_timing(&sched, settings, sink);
    schedule_retries(&sched, sink);

    if let Some(a) = &spec.alerting {
        range(
            sink,
            "spec.alerting.resendIntervalMinutes",
            a.resend_interval_minutes,
            0,
            525_600,
        );
    }
    criteria(spec, sink);
    if let Some(d) = &spec.description {
        public_text(sink, "spec.description", d, MAX_DESCRIPTION_CHARS, true);
    }
    for (i, t) in spec.tags.iter().enumerate() {
        public_text(sink, &format!("spec.tags[{i}]"), t, MAX_NAME_CHARS, false);
    }
    locations(spec, sink);
    // Target: the rules of the monitor's type, in its checker.
    crate::checks::Plan::new(namespace, spec, sink)
}

/// The most locations a Monitor may list in `spec.locations`.
pub const MAX_LOCATIONS: usize = 32;

/// `spec.locations` (DNS-1123 labels, no duplicates, at most [`MAX_LOCATIONS`]) and
/// `spec.quorum` (at least 1 and at most the locations listed; a percentage 1-100).
fn locations(spec: &MonitorSpec, sink: &mut Sink<'_>) {
    if spec.locations.len() > MAX_LOCATIONS {
        sink.error(
            "spec.locations",
            format!(
                "at most {MAX_LOCATIONS} locations, got {}",
                spec.locations.len()
            ),
        );
    }
    let mut seen = std::collections::BTreeMap::new();
    for (i, l) in spec.locations.iter().enumerate() {
        let path = format!("spec.locations[{i}]");
        if let Err(e) = location_name(l) {
            sink.error(&path, e);
        } else if let Some(first) = seen.insert(l.as_str(), i) {
            sink.error(
                &path,
                format!("duplicate location {l:?} (also spec.locations[{first}])"),
            );
            seen.insert(l.as_str(), first);
        }
    }
    if let Some(q) = spec.quorum {
        let listed = (!spec.locations.is_empty()).then_some(spec.locations.len());
        quorum(sink, "spec.quorum", q, listed);
    }
}

/// A quorum: a count at least 1 (and at most `listed` locations when they are listed),
/// or a percentage 1-100.
fn quorum(sink: &mut Sink<'_>, path: &str, q: Quorum, listed: Option<usize>) {
    match q {
        Quorum::Count(n) if n < 1 => {
            sink.error(path, format!("must be at least 1, got {n}"));
        }
        Quorum::Count(n) => {
            if let Some(l) = listed
                && n > l as i64
            {
                sink.error(
                    path,
                    format!("must not exceed the {l} locations of spec.locations, got {n}"),
                );
            }
        }
        Quorum::Percent(p) if !(1..=100).contains(&p) => {
            sink.error(path, format!("a percentage must be 1-100%, got {p}%"));
        }
        Quorum::Percent(_) => {}
    }
}

/// `spec.schedule`: the interval against the settings' minimum, and the timeout against
/// the interval (an error when set above it, a warning when the default is cut to it).
fn schedule_timing(sched: &Schedule, settings: &EffectiveSettings, sink: &mut Sink<'_>) {
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
}

/// `spec.schedule`: retries in either spelling, retry interval, initial delay, grace and
/// jitter ranges.
fn schedule_retries(sched: &Schedule, sink: &mut Sink<'_>) {
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
}

/// The success criteria: a block for another type is ignored (with a warning); every
/// block's numbers are checked either way.
fn criteria(spec: &MonitorSpec, sink: &mut Sink<'_>) {
    let ty = spec.type_;
    if let Some(c) = &spec.success_criteria {
        // Every block by name: a new one does not compile until it has its rules here.
        let SuccessCriteria {
            http,
            keyword,
            json_query,
            tcp,
            dns,
            ping,
            websocket,
            steam,
            kubernetes,
            docker,
        } = c;
        if let Some(h) = http {
            http_criteria(ty, h, sink);
        }
        if keyword.is_some() && !matches!(ty, MonitorType::Keyword | MonitorType::Http) {
            sink.warn(
                "spec.successCriteria.keyword",
                format!("ignored for type {ty}"),
            );
        }
        latency_criteria(
            ty,
            [
                (
                    json_query.as_ref().map(|l| l.max_latency_ms),
                    "jsonQuery",
                    ty == MonitorType::JsonQuery,
                ),
                (
                    tcp.as_ref().map(|l| l.max_latency_ms),
                    "tcp",
                    ty == MonitorType::Tcp,
                ),
                (
                    dns.as_ref().map(|l| l.max_latency_ms),
                    "dns",
                    ty == MonitorType::Dns,
                ),
                (
                    websocket.as_ref().map(|l| l.max_latency_ms),
                    "websocket",
                    ty == MonitorType::Websocket,
                ),
                (
                    ping.as_ref().map(|l| l.max_latency_ms),
                    "ping",
                    ty == MonitorType::Ping,
                ),
                (
                    steam.as_ref().map(|l| l.max_latency_ms),
                    "steam",
                    ty == MonitorType::Steam,
                ),
            ],
            sink,
        );
        other_criteria(
            ty,
            ping.as_ref(),
            steam.as_ref(),
            kubernetes.as_ref(),
            docker.is_some(),
            sink,
        );
    }
}

/// `successCriteria.http`: ignored (with a warning) for a type that is not HTTP-like; the
/// status codes and the latency bound are checked either way.
fn http_criteria(ty: MonitorType, h: &HttpCriteria, sink: &mut Sink<'_>) {
    let http_like = matches!(
        ty,
        MonitorType::Http | MonitorType::Keyword | MonitorType::JsonQuery
    );
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

/// The blocks that hold only `maxLatencyMs`, as (the bound if the block is given, its
/// name, whether it fits the monitor's type): a warning when it does not fit, the
/// range either way.
fn latency_criteria<const N: usize>(
    ty: MonitorType,
    blocks: [(Option<Option<i64>>, &str, bool); N],
    sink: &mut Sink<'_>,
) {
    for (block, path, ok) in blocks {
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
}

/// The blocks with more than a latency bound: ping's packet loss, steam's players,
/// kubernetes' ready percent (a warning when the type does not fit), and docker's fit.
fn other_criteria(
    ty: MonitorType,
    ping: Option<&PingCriteria>,
    steam: Option<&SteamCriteria>,
    kubernetes: Option<&KubernetesCriteria>,
    docker: bool,
    sink: &mut Sink<'_>,
) {
    if let Some(p) = ping {
        range(
            sink,
            "spec.successCriteria.ping.maxPacketLossPercent",
            p.max_packet_loss_percent,
            0,
            100,
        );
    }
    if let Some(s) = steam {
        range(
            sink,
            "spec.successCriteria.steam.minPlayers",
            s.min_players,
            0,
            1_000_000,
        );
    }
    if let Some(k) = kubernetes {
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
    if docker && ty != MonitorType::Docker {
        sink.warn(
            "spec.successCriteria.docker",
            format!("ignored for type {ty}"),
        );
    }
}

/// Semantic checks of a NotificationProvider spec in `namespace`: the rules of its
/// type, in its provider's file. The checked plan, unless the sink holds an error.
pub fn provider(
    namespace: &str,
    spec: &NotificationProviderSpec,
    sink: &mut Sink<'_>,
) -> Option<ProviderPlan> {
    ProviderPlan::new(namespace, spec, sink)
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
    use crate::notify::template::{self, Part, Unusable};
    let templates = [
        (
            "spec.formatting.titleTemplate",
            spec.formatting
                .as_ref()
                .and_then(|f| f.title_template.as_ref()),
            Part::Title,
        ),
        (
            "spec.formatting.bodyTemplate",
            spec.formatting
                .as_ref()
                .and_then(|f| f.body_template.as_ref()),
            Part::Body,
        ),
        (
            "spec.routing.dedupe.key",
            spec.routing
                .as_ref()
                .and_then(|r| r.dedupe.as_ref())
                .and_then(|d| d.key.as_ref()),
            Part::DedupeKey,
        ),
    ];
    for (path, src, part) in templates {
        match src.map(|src| template::check(src, part)) {
            // A warning, not an error: the policy stays in force and its notifications
            // go out with the default text (an invalid resource would drop them all).
            Some(Err(Unusable::Broken(e))) => sink.warn(
                path,
                format!("template does not work (the default is used): {e}"),
            ),
            // Over a limit: refused, so it never costs the agent time or memory.
            Some(Err(Unusable::OverLimit(e))) => sink.error(path, e),
            _ => {}
        }
    }
}

/// Semantic checks of a StatusPage spec.
pub fn status_page(spec: &kubekuma_crds::StatusPageSpec, sink: &mut Sink<'_>) {
    if !crate::rules::dns1123(&spec.slug, 63, false) {
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
    public_text(sink, "spec.title", &spec.title, MAX_NAME_CHARS, false);
    if let Some(d) = spec.content.as_ref().and_then(|c| c.description.as_ref()) {
        public_text(
            sink,
            "spec.content.description",
            d,
            MAX_DESCRIPTION_CHARS,
            true,
        );
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
        if !crate::rules::dns1123(&h.to_ascii_lowercase(), 253, true) {
            sink.error(
                &format!("spec.exposure.hosts[{i}]"),
                format!("must be a host name, got {h:?}"),
            );
        }
    }
    let mut seen_groups = std::collections::HashSet::new();
    let mut seen_monitors = std::collections::HashMap::new();
    for (gi, g) in spec.groups.iter().enumerate() {
        public_text(
            sink,
            &format!("spec.groups[{gi}].name"),
            &g.name,
            MAX_NAME_CHARS,
            false,
        );
        if let Some(d) = &g.description {
            let path = format!("spec.groups[{gi}].description");
            public_text(sink, &path, d, MAX_DESCRIPTION_CHARS, true);
        }
        for (mi, m) in g.monitors.iter().enumerate() {
            if let Some(n) = &m.display_name {
                let path = format!("spec.groups[{gi}].monitors[{mi}].displayName");
                public_text(sink, &path, n, MAX_NAME_CHARS, false);
            }
        }
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
    public_text(sink, "spec.name", &spec.name, MAX_NAME_CHARS, false);
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
    match spec.key_id.as_deref() {
        Some(id) if !kubekuma_crds::auth::valid_key_id(id) => sink.error(
            "spec.keyId",
            format!(
                "must be the key's first {} characters after kk_live_ or kk_test_ (letters, digits, '-' or '_'), got {id:?}",
                kubekuma_crds::auth::KEY_ID_LEN
            ),
        ),
        Some(_) => {}
        None => sink.warn(
            "spec.keyId",
            format!(
                "missing: without the key's public identifier (its first {} characters after kk_live_ or kk_test_) every unknown key presented is checked against this key's hash; add it, or create the key again with `kubekuma api-key create`",
                kubekuma_crds::auth::KEY_ID_LEN
            ),
        ),
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
    if let Some(r) = &spec.reason {
        public_text(sink, "spec.reason", r, MAX_DESCRIPTION_CHARS, true);
    }
    if let Some(c) = &spec.created_by {
        public_text(sink, "spec.createdBy", c, MAX_NAME_CHARS, false);
    }
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
    if let Some(d) = &spec.description {
        public_text(sink, "spec.description", d, MAX_DESCRIPTION_CHARS, true);
    }
}

/// Semantic checks of the KubeKumaSettings spec.
pub fn settings(spec: &kubekuma_crds::KubeKumaSettingsSpec, sink: &mut Sink<'_>) {
    if let Some(s) = &spec.scheduler {
        scheduler_settings(s, sink);
    }
    if let Some(r) = &spec.retention {
        retention_settings(r, sink);
    }
    endpoint_settings(spec, sink);
    auth_settings(spec, sink);
    if let Some(l) = &spec.locations {
        if let Some(q) = l.default_quorum {
            quorum(sink, "spec.locations.defaultQuorum", q, None);
        }
        range(
            sink,
            "spec.locations.staleAfterSeconds",
            l.stale_after_seconds,
            10,
            86_400,
        );
    }
}

/// `spec.scheduler`: interval, concurrency, timeout, jitter and flapping ranges.
fn scheduler_settings(s: &kubekuma_crds::settings::SchedulerSettings, sink: &mut Sink<'_>) {
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

/// `spec.retention`: day ranges, and a warning when both spellings of a setting disagree.
fn retention_settings(r: &kubekuma_crds::settings::RetentionSettings, sink: &mut Sink<'_>) {
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

/// `spec.networking` (DNS servers) and `spec.publicEndpoints` (the metrics path).
fn endpoint_settings(spec: &kubekuma_crds::KubeKumaSettingsSpec, sink: &mut Sink<'_>) {
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
        && let Err(cause) = metrics_path_ok(p)
    {
        sink.error(
            "spec.publicEndpoints.metrics.path",
            format!("{cause}, got {p:?}"),
        );
    }
}

/// The metrics path: absolute, one plain path (no query, fragment, dot segments or
/// empty segments), and clear of the agent's other routes (the API and push under
/// `/api`, `/health`, `/ready`, the twins under `/status/`, `/badge/`, `/uptime/`).
fn metrics_path_ok(p: &str) -> Result<(), &'static str> {
    if !p.starts_with('/') || p.len() < 2 {
        return Err("must be an absolute path such as /metrics");
    }
    if p.chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%' | '\\'))
        || p[1..]
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("must be a plain path (no query, fragment, escapes, empty or dot segments)");
    }
    let taken = p == "/api"
        || p.starts_with("/api/")
        || matches!(p, "/health" | "/ready" | "/status" | "/badge" | "/uptime")
        || ["/status/", "/badge/", "/uptime/"]
            .iter()
            .any(|t| p.starts_with(t));
    if taken {
        return Err(
            "collides with the agent's routes (/api/…, /health, /ready, /status/…, /badge/…, /uptime/…)",
        );
    }
    Ok(())
}

/// `spec.auth`: the OIDC client when the mode is oidc, session and API key ranges.
fn auth_settings(spec: &kubekuma_crds::KubeKumaSettingsSpec, sink: &mut Sink<'_>) {
    if let Some(a) = &spec.auth
        && a.mode == Some(kubekuma_crds::settings::AuthMode::Oidc)
    {
        match &a.oidc {
            None => sink.error("spec.auth.oidc", "required when spec.auth.mode is oidc"),
            Some(o) => oidc_settings(o, sink),
        }
    }
    if spec.auth.as_ref().and_then(|a| a.mode) == Some(kubekuma_crds::settings::AuthMode::Disabled)
        && spec
            .public_endpoints
            .as_ref()
            .and_then(|p| p.metrics.as_ref())
            .and_then(|m| m.require_auth)
            == Some(true)
    {
        sink.warn(
            "spec.publicEndpoints.metrics.requireAuth",
            "cannot require a login while spec.auth.mode is disabled: every scrape is the \
             anonymous viewer of every namespace and reads every series",
        );
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

/// `spec.auth.oidc` of `auth.mode: oidc`: the provider and the callback as URLs, the
/// client, scopes, the groups claim and a role mapping that can let someone in.
fn oidc_settings(o: &kubekuma_crds::settings::OidcSettings, sink: &mut Sink<'_>) {
    const REQUIRED: &str = "required when spec.auth.mode is oidc";
    match &o.issuer {
        Some(u) => {
            url_ok(sink, "spec.auth.oidc.issuer", u, &["https", "http"]);
            if let Ok(url) = url::Url::parse(u) {
                if url.scheme() == "http" && !loopback(&url) {
                    sink.warn(
                        "spec.auth.oidc.issuer",
                        "plain http outside this machine: ID tokens and keys can be read and changed on the way; use https",
                    );
                }
                if url.query().is_some() || url.fragment().is_some() {
                    sink.error(
                        "spec.auth.oidc.issuer",
                        "an issuer URL has no query or fragment",
                    );
                }
            }
        }
        None => sink.error("spec.auth.oidc.issuer", REQUIRED),
    }
    if o.client_id.as_deref().is_none_or(str::is_empty) {
        sink.error("spec.auth.oidc.clientId", REQUIRED);
    }
    if let Some(r) = &o.client_secret_ref
        && (r.name.is_empty() || r.key.is_empty())
    {
        sink.error("spec.auth.oidc.clientSecretRef", "needs both name and key");
    }
    match &o.redirect_url {
        Some(u) => {
            url_ok(sink, "spec.auth.oidc.redirectUrl", u, &["https", "http"]);
            if let Ok(url) = url::Url::parse(u)
                && (!url.path().ends_with(OIDC_CALLBACK_PATH)
                    || url.query().is_some()
                    || url.fragment().is_some())
            {
                sink.error(
                    "spec.auth.oidc.redirectUrl",
                    format!(
                        "must be the agent's public URL followed by {OIDC_CALLBACK_PATH}, without query or fragment"
                    ),
                );
            }
        }
        None => sink.error(
            "spec.auth.oidc.redirectUrl",
            format!("{REQUIRED} (the agent's public URL followed by {OIDC_CALLBACK_PATH})"),
        ),
    }
    for (i, scope) in o.scopes.iter().flatten().enumerate() {
        let ok = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !ok {
            sink.error(
                &format!("spec.auth.oidc.scopes[{i}]"),
                "a scope is one word of visible ASCII characters without quotes or backslashes",
            );
        }
    }
    if o.groups_claim.as_deref().is_some_and(str::is_empty) {
        sink.error("spec.auth.oidc.groupsClaim", "must not be empty");
    }
    if o.role_mapping.is_empty() {
        sink.error(
            "spec.auth.oidc.roleMapping",
            "required when spec.auth.mode is oidc: without it no one can log in",
        );
    }
    for (i, m) in o.role_mapping.iter().enumerate() {
        if m.group.is_empty() {
            sink.error(
                &format!("spec.auth.oidc.roleMapping[{i}].group"),
                "must not be empty",
            );
        }
    }
}

/// Where the agent answers the provider's redirect.
pub const OIDC_CALLBACK_PATH: &str = "/api/v1/auth/oidc/callback";

fn loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}
