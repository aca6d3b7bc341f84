//! Notification templates (`formatting.titleTemplate`/`bodyTemplate`, dedupe keys,
//! webhook bodies): minijinja with strict undefined variables and no auto-escaping.
//! The spec's Go-style form is accepted as written: a leading dot on a name inside
//! `{{ }}` or `{% %}` is dropped (`{{ .state | upper }}` is `{{ state | upper }}`);
//! dots after a name, `)` or `]` (attribute access), inside string literals and before a
//! digit (`.5`) are kept. Go's control words (`{{ if }}`, `{{ end }}`) are not translated:
//! use `{% if %}`…`{% endif %}`.
//!
//! A template that fails (syntax, undefined variable, bad filter argument) never drops
//! a notification: [`render_message`] uses the plain default text for that part and
//! returns the error beside it.
//!
//! # Limits
//!
//! Every render is bounded, at validation and at delivery alike: the source may hold at
//! most [`MAX_SOURCE_BYTES`], a render may spend at most [`FUEL`] units of minijinja's
//! fuel (about one per instruction and one per 64 bytes of data it creates) and nest at
//! most [`RECURSION_LIMIT`] levels, and its output may grow to at most
//! [`Part::max_output`] bytes (1 KiB for a title, 512 bytes for a dedupe key, 64 KiB
//! for a body or a webhook body). Past a limit the render stops with an error: at
//! validation the template is refused ([`check`]), at delivery the default text is used.
//!
//! # Variables
//!
//! | name | value |
//! |---|---|
//! | `kind` | `down`, `up`, `flapping`, `certExpiring` or `reminder` |
//! | `monitorId`, `monitor` | `namespace/name` |
//! | `monitorNamespace`, `monitorName` | the monitor's namespace and name |
//! | `previousState` | state before: `up`, `down`, `pending`, `flapping`, `paused` |
//! | `currentState`, `state` | state after |
//! | `reason` | failure reason (`timeout`, `dns`, `status`, …), or none |
//! | `message` | the check's message, or none |
//! | `latencyMs` | latency of the check in milliseconds, or none |
//! | `daysLeft` | days until the certificate expires (`certExpiring`), or none |
//! | `timestamp` | when, RFC 3339 in UTC |
//! | `isStateChange` | true for down, up and flapping |
//! | `labels` | the monitor's labels (`labels.team`, `labels["app.kubernetes.io/name"]`) |
//! | `annotations` | the monitor's `spec.annotations` (`annotations.runbook`) |
//! | `locations` | the locations that see it down (or up again) when several locations run the monitor, else empty (`{{ locations \| join(", ") }}`) |
//!
//! "none" prints as an empty string. Filters: the minijinja built-ins (`upper`, `lower`,
//! `title`, `trim`, `replace`, `round`, …); `default(x)`, which also replaces none;
//! `date(format="%Y-%m-%d %H:%M:%S UTC", tz="UTC")` for RFC 3339 strings or Unix
//! seconds, with a chrono `strftime` format and an IANA zone
//! (`{{ timestamp | date("%H:%M", "Europe/Berlin") }}`).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use kubekuma_crds::notification::Formatting;
use minijinja::value::{Rest, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

use super::event::{AlertEvent, EventKind};

/// A template that could not be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TemplateError {
    /// Which template (`spec.formatting.titleTemplate`, …).
    pub field: String,
    /// What went wrong, with the line.
    pub message: String,
}

/// A rendered title and body, and the errors of templates replaced by the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Title / subject.
    pub title: String,
    /// Body.
    pub body: String,
    /// Template errors; the affected part holds the default text.
    pub errors: Vec<TemplateError>,
}

/// The longest template source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 16 * 1024;

/// The fuel of one render: minijinja charges about one unit per instruction and one per
/// 64 bytes of data a template creates, so this bounds both time and memory (≈ 3 MiB).
pub const FUEL: u64 = 50_000;

/// The deepest nesting of loops, conditions and macro calls in one render.
pub const RECURSION_LIMIT: usize = 100;

/// What a template renders; each part has its own output bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// A title or subject (`formatting.titleTemplate`).
    Title,
    /// A message body (`formatting.bodyTemplate`).
    Body,
    /// A policy's dedupe key (`routing.dedupe.key`).
    DedupeKey,
    /// A webhook's request body (`webhook.bodyTemplate`).
    WebhookBody,
}

impl Part {
    /// The largest output of this part, in bytes.
    pub const fn max_output(self) -> usize {
        match self {
            Part::Title => 1024,
            Part::DedupeKey => 512,
            Part::Body | Part::WebhookBody => 64 * 1024,
        }
    }
}

/// An output buffer that refuses to grow past its limit.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    /// Whether a write was refused.
    overflowed: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.overflowed = true;
            return Err(io::Error::other(OutputTooLarge));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The marker error of [`Bounded`].
#[derive(Debug, thiserror::Error)]
#[error("output limit reached")]
struct OutputTooLarge;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        env.set_formatter(|out, state, value| {
            let v = if value.is_none() {
                &Value::UNDEFINED
            } else {
                value
            };
            minijinja::escape_formatter(out, state, v)
        });
        env.add_filter("default", default_filter);
        env.add_filter("date", date_filter);
        env
    })
}

fn default_filter(value: &Value, args: Rest<Value>) -> Result<Value, Error> {
    if args.len() > 1 {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            "default takes one argument",
        ));
    }
    if value.is_undefined() || value.is_none() {
        Ok(args.first().cloned().unwrap_or_else(|| Value::from("")))
    } else {
        Ok(value.clone())
    }
}

fn date_filter(value: &Value, format: Option<String>, tz: Option<String>) -> Result<String, Error> {
    let bad = |msg: String| Error::new(ErrorKind::InvalidOperation, msg);
    let at: DateTime<Utc> = if let Some(s) = value.as_str() {
        DateTime::parse_from_rfc3339(s)
            .map_err(|e| bad(format!("date: {s:?} is not an RFC 3339 time: {e}")))?
            .with_timezone(&Utc)
    } else if let Ok(secs) = i64::try_from(value.clone()) {
        DateTime::from_timestamp(secs, 0)
            .ok_or_else(|| bad(format!("date: {secs} is out of range")))?
    } else {
        return Err(bad(format!("date: expected a time, got {value}")));
    };
    let format = format.unwrap_or_else(|| "%Y-%m-%d %H:%M:%S UTC".into());
    let mut out = String::new();
    let written = match tz.as_deref() {
        None | Some("UTC") => write!(out, "{}", at.format(&format)),
        Some(name) => {
            let tz: chrono_tz::Tz = name
                .parse()
                .map_err(|_| bad(format!("date: unknown time zone {name:?}")))?;
            write!(out, "{}", at.with_timezone(&tz).format(&format))
        }
    };
    written.map_err(|_| bad(format!("date: invalid format {format:?}")))?;
    Ok(out)
}

/// The template variables of `event` (see the module docs).
pub fn context(event: &AlertEvent) -> serde_json::Value {
    with_aliases(serde_json::to_value(event).unwrap_or_default())
}

/// Adds the aliases and the optional fields (as null) to an AlertEvent's JSON.
fn with_aliases(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(map) = v.as_object_mut() {
        for k in ["reason", "message", "latencyMs", "daysLeft"] {
            map.entry(k).or_insert(serde_json::Value::Null);
        }
        map.entry("locations")
            .or_insert(serde_json::Value::Array(Vec::new()));
        if let Some(s) = map.get("currentState").cloned() {
            map.insert("state".into(), s);
        }
        if let Some(id) = map.get("monitorId").cloned() {
            map.insert("monitor".into(), id);
        }
    }
    v
}

/// Drops the leading dot of Go-style names inside `{{ }}` and `{% %}`.
pub fn go_to_jinja(src: &str) -> Cow<'_, str> {
    if !src.contains('.') || !(src.contains("{{") || src.contains("{%")) {
        return Cow::Borrowed(src);
    }
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut copied = 0;
    let mut i = 0;
    while i + 1 < b.len() {
        let close = match (b[i], b[i + 1]) {
            (b'{', b'{') => b'}',
            (b'{', b'%') => b'%',
            _ => {
                i += 1;
                continue;
            }
        };
        i += 2;
        let mut quote: Option<u8> = None;
        while i < b.len() {
            let c = b[i];
            if let Some(q) = quote {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            } else if c == b'"' || c == b'\'' {
                quote = Some(c);
            } else if c == close && b.get(i + 1) == Some(&b'}') {
                i += 1;
                break;
            } else if c == b'.' {
                let prev = b[i - 1];
                let attr =
                    prev.is_ascii_alphanumeric() || matches!(prev, b'_' | b')' | b']' | b'.');
                let next_is_name = b
                    .get(i + 1)
                    .is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_');
                if !attr && next_is_name {
                    out.push_str(&src[copied..i]);
                    copied = i + 1;
                }
            }
            i += 1;
        }
        i += 1;
    }
    out.push_str(&src[copied..]);
    Cow::Owned(out)
}

/// Renders `src` (Go-style or minijinja) for `event` as `part`.
pub fn render(src: &str, event: &AlertEvent, part: Part) -> Result<String, TemplateError> {
    render_json(src, &serde_json::to_value(event).unwrap_or_default(), part)
}

/// Renders `src` as `part` with an AlertEvent's JSON (as providers receive it) as the
/// variables, within the limits of the module docs.
pub fn render_json(
    src: &str,
    event_json: &serde_json::Value,
    part: Part,
) -> Result<String, TemplateError> {
    let error = |message: String| TemplateError {
        field: "template".into(),
        message,
    };
    render_bounded(src, event_json, part).map_err(|e| error(e.message().to_string()))
}

/// Why a render stopped.
enum Failure {
    /// Over a limit (source length, fuel, output size).
    Limit(String),
    /// Anything else minijinja reports.
    Template(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Limit(m) | Failure::Template(m) => m,
        }
    }
}

fn render_bounded(
    src: &str,
    event_json: &serde_json::Value,
    part: Part,
) -> Result<String, Failure> {
    if src.len() > MAX_SOURCE_BYTES {
        return Err(Failure::Limit(format!(
            "template is longer than {MAX_SOURCE_BYTES} bytes ({} bytes)",
            src.len()
        )));
    }
    let jinja = go_to_jinja(src);
    let template = env()
        .template_from_str(&jinja)
        .map_err(|e| Failure::Template(describe(&e)))?;
    let ctx = Value::from(minijinja::value::Serde(with_aliases(event_json.clone())));
    let limit = part.max_output();
    let mut out = Bounded {
        buf: Vec::new(),
        limit,
        overflowed: false,
    };
    match template.render_captured_to(ctx, &mut out) {
        Ok(_) => Ok(String::from_utf8_lossy(&out.buf).into_owned()),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(Failure::Limit(format!(
            "template uses more than {FUEL} steps (minijinja fuel)"
        ))),
        Err(_) if out.overflowed => Err(Failure::Limit(format!(
            "template renders more than {limit} bytes"
        ))),
        Err(e) => Err(Failure::Template(describe(&e))),
    }
}

/// Why a template cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// It does not parse, or uses an unknown filter, test or function: minijinja's
    /// message, with the line. Notifications go out with the default text.
    #[error("{0}")]
    Broken(String),
    /// It is over a limit (source length, fuel, output size): refused.
    #[error("{0}")]
    OverLimit(String),
}

/// Whether `src` is a usable template for `part`: it must parse, and rendering it for a
/// sample event must stay within the limits and not hit an unknown filter, test or
/// function. (A missing label or a variable that is empty for some events is not an
/// error here: it depends on the event.)
pub fn check(src: &str, part: Part) -> Result<(), Unusable> {
    let sample = serde_json::json!({
        "kind": "certExpiring", "daysLeft": 7, "monitorId": "ns/name",
        "monitorNamespace": "ns", "monitorName": "name", "previousState": "up",
        "currentState": "down", "reason": "timeout", "message": "message",
        "latencyMs": 1.5, "timestamp": "2026-01-01T00:00:00Z", "isStateChange": true,
        "labels": {}, "annotations": {}, "locations": ["home", "eu"],
    });
    if src.len() <= MAX_SOURCE_BYTES {
        env()
            .template_from_str(&go_to_jinja(src))
            .map_err(|e| Unusable::Broken(describe(&e)))?;
    }
    match render_bounded(src, &sample, part) {
        Err(Failure::Limit(m)) => Err(Unusable::OverLimit(m)),
        Err(Failure::Template(m))
            if ["unknown filter", "unknown test", "unknown function"]
                .iter()
                .any(|k| m.contains(k)) =>
        {
            Err(Unusable::Broken(m))
        }
        _ => Ok(()),
    }
}

fn describe(e: &Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(msg, ": {s}");
        source = s.source();
    }
    msg
}

/// The label of an event in default texts: `DOWN`, `UP`, `FLAPPING`, `CERT EXPIRING`,
/// `STILL DOWN`.
pub fn label(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Down => "DOWN",
        EventKind::Up => "UP",
        EventKind::Flapping => "FLAPPING",
        EventKind::CertExpiring { .. } => "CERT EXPIRING",
        EventKind::Reminder => "STILL DOWN",
    }
}

/// The default title: `[DOWN] ns/name`.
pub fn default_title(event: &AlertEvent) -> String {
    format!("[{}] {}", label(event.kind), event.monitor_id)
}

/// The default body: `[DOWN] ns/name: message`.
pub fn default_body(event: &AlertEvent) -> String {
    let detail = match event.kind {
        EventKind::CertExpiring { days_left } => {
            format!("the certificate expires in {days_left} days")
        }
        _ => event
            .message
            .clone()
            .or_else(|| event.reason.clone())
            .unwrap_or_else(|| format!("the monitor is {}", event.current_state.as_str())),
    };
    format!("{}: {detail}", default_title(event))
}

/// Title and body of `event` from the policy's `formatting` (defaults when absent);
/// a failing template yields the default text and an error.
pub fn render_message(formatting: Option<&Formatting>, event: &AlertEvent) -> Rendered {
    let mut errors = Vec::new();
    let mut part =
        |field: &str, src: Option<&String>, kind: Part, default: fn(&AlertEvent) -> String| {
            match src.map(|s| render(s, event, kind)) {
                None => default(event),
                Some(Ok(text)) => text,
                Some(Err(e)) => {
                    errors.push(TemplateError {
                        field: format!("spec.formatting.{field}"),
                        message: e.message,
                    });
                    default(event)
                }
            }
        };
    let title = part(
        "titleTemplate",
        formatting.and_then(|f| f.title_template.as_ref()),
        Part::Title,
        default_title,
    );
    let body = part(
        "bodyTemplate",
        formatting.and_then(|f| f.body_template.as_ref()),
        Part::Body,
        default_body,
    );
    Rendered {
        title,
        body,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubekuma_crds::{Monitor, MonitorState};
    use pretty_assertions::assert_eq;

    fn event() -> AlertEvent {
        let m: Monitor = serde_yaml_ng::from_str(
            "{apiVersion: monitoring.kubekuma.io/v1, kind: Monitor, metadata: {name: api, namespace: prod, labels: {team: core}}, spec: {type: tcp, target: {tcp: {host: h, port: 1}}}}",
        )
        .unwrap();
        let at = DateTime::parse_from_rfc3339("2026-03-29T01:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut e = AlertEvent::new(
            EventKind::Down,
            "prod",
            "api",
            &m,
            MonitorState::Up,
            MonitorState::Down,
            at,
        );
        e.message = Some("connection refused".into());
        e.latency_ms = Some(12.0);
        e
    }

    #[test]
    fn go_style_names_lose_their_dot_only() {
        let cases = [
            ("{{ .state | upper }}", "{{ state | upper }}"),
            ("{{.monitorName}}", "{{monitorName}}"),
            ("{{- .labels.team -}}", "{{- labels.team -}}"),
            (
                "{% if .reason %}x{% endif %}",
                "{% if reason %}x{% endif %}",
            ),
            ("{{ x(.5) }} {{ 1.5 }}", "{{ x(.5) }} {{ 1.5 }}"),
            ("{{ \".a\" ~ '.b' ~ .c }}", "{{ \".a\" ~ '.b' ~ c }}"),
            ("{{ f(a).b }} {{ l[0].c }}", "{{ f(a).b }} {{ l[0].c }}"),
            (
                "text .state {# .x #} {{ .y }}",
                "text .state {# .x #} {{ y }}",
            ),
            ("{{ .a", "{{ a"),
        ];
        for (src, want) in cases {
            assert_eq!(go_to_jinja(src), want, "{src}");
        }
    }

    #[test]
    fn go_style_and_jinja_render_the_same() {
        let e = event();
        let go = "[{{ .state | upper }}] {{ .monitorName }} ({{ .labels.team | title }}) {{ .latencyMs }}ms {{ .reason | default(\"n/a\") }}";
        let jinja = "[{{ state | upper }}] {{ monitorName }} ({{ labels.team | title }}) {{ latencyMs }}ms {{ reason | default(\"n/a\") }}";
        let want = "[DOWN] api (Core) 12.0ms n/a";
        assert_eq!(render(go, &e, Part::Body).unwrap(), want);
        assert_eq!(render(jinja, &e, Part::Body).unwrap(), want);
        assert_eq!(
            render("{{ monitor }} {{ kind }} {{ reason }}|{{ timestamp | date('%d.%m. %H:%M', 'Europe/Berlin') }}", &e, Part::Body).unwrap(),
            "prod/api down |29.03. 03:30"
        );
        // The spec's body template.
        let body =
            "Monitor: {{ .monitorNamespace }}/{{ .monitorName }}\nState: {{ .currentState }}\n";
        assert_eq!(
            render(body, &e, Part::Body).unwrap(),
            "Monitor: prod/api\nState: down\n"
        );
        // No escaping in plain text.
        let mut e2 = e.clone();
        e2.message = Some("<b>&</b>".into());
        assert_eq!(
            render("{{ message }}", &e2, Part::Body).unwrap(),
            "<b>&</b>"
        );
    }

    #[test]
    fn errors_fall_back_and_are_reported() {
        let e = event();
        let f = Formatting {
            title_template: Some("{{ .monitorNam }}".into()),
            body_template: Some("{% if %}".into()),
        };
        let r = render_message(Some(&f), &e);
        assert_eq!(r.title, "[DOWN] prod/api");
        assert_eq!(r.body, "[DOWN] prod/api: connection refused");
        assert_eq!(r.errors.len(), 2);
        assert_eq!(r.errors[0].field, "spec.formatting.titleTemplate");
        assert!(r.errors[0].message.contains("undefined"), "{}", r.errors[0]);
        assert_eq!(r.errors[1].field, "spec.formatting.bodyTemplate");
        assert!(render("{{ timestamp | date('%Q') }}", &e, Part::Body).is_err());
        // Without formatting: the defaults, no errors.
        let plain = render_message(None, &e);
        assert_eq!(
            (plain.title.as_str(), plain.errors.len()),
            ("[DOWN] prod/api", 0)
        );
        let ok = Formatting {
            title_template: Some("[{{ .state | upper }}] {{ .monitorName }}".into()),
            body_template: None,
        };
        assert_eq!(render_message(Some(&ok), &e).title, "[DOWN] api");
    }

    #[test]
    fn renders_are_bounded_and_refused_at_validation() {
        let e = event();
        let nested =
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
        let amplifying =
            "{% for a in range(100000) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}";
        let doubling = format!(
            "{{% set s = 'xxxxxxxxxxxxxxxx' %}}{}{{{{ s }}}}",
            "{% set s = s ~ s %}".repeat(60)
        );
        for (src, want) in [
            (nested, "steps"),
            (amplifying, "more than"),
            (doubling.as_str(), "steps"),
        ] {
            match check(src, Part::Body) {
                Err(Unusable::OverLimit(m)) => assert!(m.contains(want), "{src}: {m}"),
                other => panic!("{src}: {other:?}"),
            }
            // At delivery: an error, and render_message falls back to the default.
            assert!(render(src, &e, Part::Body).is_err());
            let f = Formatting {
                title_template: None,
                body_template: Some(src.to_string()),
            };
            let r = render_message(Some(&f), &e);
            assert_eq!(r.body, "[DOWN] prod/api: connection refused");
            assert_eq!(r.errors[0].field, "spec.formatting.bodyTemplate");
        }
        // Output bounds differ per part.
        let wide = "{{ 'x' * 2000 }}";
        assert_eq!(check(wide, Part::Body), Ok(()));
        assert_eq!(
            check(wide, Part::Title),
            Err(Unusable::OverLimit(
                "template renders more than 1024 bytes".into()
            ))
        );
        assert!(matches!(
            check(wide, Part::DedupeKey),
            Err(Unusable::OverLimit(_))
        ));
        // Source length.
        let long = "x".repeat(MAX_SOURCE_BYTES + 1);
        assert!(matches!(
            check(&long, Part::Body),
            Err(Unusable::OverLimit(m)) if m.contains("longer than 16384 bytes")
        ));
        // A broken template is not a limit.
        assert!(matches!(
            check("{{ x | nosuchfilter }}", Part::Body),
            Err(Unusable::Broken(_))
        ));
    }
}
