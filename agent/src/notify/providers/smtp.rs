//! E-mail over SMTP with lettre: STARTTLS (default, port 587), implicit TLS (465) or
//! plain (25), optional AUTH with a password from a Secret, one text/plain UTF-8 message
//! per notification with the title as subject.

use base64::Engine;
use kubekuma_crds::ProviderType;
use kubekuma_crds::common::SecretKeyRef;
use kubekuma_crds::notification::{SmtpConfig, SmtpSecurity};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::{PlanError, Sink};
use crate::rules::{self, host_ok};

/// A Smtp provider's checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SmtpPlan {
    /// The namespace its Secret reference resolves in.
    namespace: String,
    /// The path of its configuration block.
    base: String,
    /// The server's host name or address.
    host: String,
    /// The configured port, else the usual one for `security`.
    port: u16,
    /// Default STARTTLS.
    security: SmtpSecurity,
    /// `skipTLSVerify`.
    skip_tls_verify: bool,
    /// The login name and the Secret key holding the password, when the server needs
    /// authentication.
    login: Option<(String, SecretKeyRef)>,
    /// `passwordSecretRef`, used or not.
    password_ref: Option<SecretKeyRef>,
    /// The sender.
    from: Mailbox,
    /// The recipients, at least one.
    to: Vec<Mailbox>,
}

impl SmtpPlan {
    /// The plan of a Smtp block checked on its own at `spec.config.smtp`.
    pub fn of(namespace: &str, config: &SmtpConfig) -> Result<SmtpPlan, PlanError> {
        super::alone(namespace, ProviderType::Smtp, config, plan)
    }

    /// Its Secret references with their field paths (the password's even when it has no
    /// effect without a username: a missing Secret is still worth a warning).
    pub(super) fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        self.password_ref
            .iter()
            .map(|r| (format!("{}.passwordSecretRef", self.base), r.clone()))
            .collect()
    }
}

/// The plan of a Smtp provider: its configuration block at `base` checked.
pub(crate) fn plan(
    namespace: &str,
    base: &str,
    c: &SmtpConfig,
    sink: &mut Sink<'_>,
) -> Option<SmtpPlan> {
    host_ok(sink, &format!("{base}.host"), &c.host);
    rules::port(sink, &format!("{base}.port"), c.port);
    let from = if looks_like_address(&c.from) {
        mailbox(sink, &format!("{base}.from"), &c.from)
    } else {
        sink.error(
            &format!("{base}.from"),
            format!("must be an e-mail address such as alerts@example.com or \"Name <alerts@example.com>\", got {:?}", c.from),
        );
        None
    };
    if c.to.is_empty() {
        sink.error(&format!("{base}.to"), "must list at least one recipient");
    }
    let mut to = Vec::new();
    for (i, addr) in c.to.iter().enumerate() {
        let path = format!("{base}.to[{i}]");
        if !looks_like_address(addr) {
            sink.error(&path, format!("must be an e-mail address, got {addr:?}"));
        } else if let Some(m) = mailbox(sink, &path, addr) {
            to.push(m);
        }
    }
    let login = match (&c.username, &c.password_secret_ref) {
        (Some(user), Some(r)) => Some((user.clone(), r.clone())),
        (None, None) => None,
        (None, Some(_)) => {
            sink.warn(
                &format!("{base}.passwordSecretRef"),
                "has no effect without username",
            );
            None
        }
        (Some(_), None) => {
            sink.error(
                &format!("{base}.passwordSecretRef"),
                "is required with username",
            );
            None
        }
    };
    let security = c.security.unwrap_or(SmtpSecurity::Starttls);
    let port = match c.port {
        None => default_port(security),
        Some(p) => u16::try_from(p).ok().filter(|p| *p != 0)?,
    };
    let skip_tls_verify = c.skip_tls_verify.unwrap_or(false);
    if security != SmtpSecurity::None
        && let Err(e) = tls_parameters(&c.host, skip_tls_verify)
    {
        sink.error(&format!("{base}.host"), format!("cannot set up TLS: {e}"));
    }
    if to.is_empty() || to.len() != c.to.len() {
        return None;
    }
    Some(SmtpPlan {
        namespace: namespace.to_string(),
        base: base.to_string(),
        host: c.host.clone(),
        port,
        security,
        skip_tls_verify,
        login,
        password_ref: c.password_secret_ref.clone(),
        from: from?,
        to,
    })
}

/// `addr` as lettre reads it; an error at `path` when it cannot.
fn mailbox(sink: &mut Sink<'_>, path: &str, addr: &str) -> Option<Mailbox> {
    match addr.parse::<Mailbox>() {
        Ok(m) => Some(m),
        Err(e) => {
            sink.error(path, format!("{addr:?} is not an e-mail address: {e}"));
            None
        }
    }
}

/// Whether `s` looks like an e-mail address (`a@b`, or `Name <a@b>`).
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

/// Send `msg` as an e-mail through the server of `plan`.
///
/// Connection failures, timeouts and 4xx replies are [`SendError::Temporary`]; 5xx
/// replies (a refused login, an unknown recipient) are [`SendError::Rejected`].
pub async fn send(
    ctx: &ProviderContext,
    plan: &SmtpPlan,
    msg: &Message,
) -> Result<Delivered, SendError> {
    let email = email(plan, msg)?;
    let credentials = credentials(ctx, plan)?;
    let password = credentials.as_ref().map(|(_, p)| p.clone());

    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(plan.host.as_str())
        .port(plan.port)
        .timeout(Some(ctx.timeout))
        .tls(tls(plan)?);
    if let Some((user, password)) = credentials {
        builder = builder.credentials(Credentials::new(user, password));
    }
    let transport = builder.build();

    let target = format!("{}:{}", plan.host, plan.port);
    match tokio::time::timeout(ctx.timeout, transport.send(email)).await {
        Err(_) => Err(SendError::Temporary(format!(
            "{target}: no reply within {} s",
            ctx.timeout.as_secs_f64()
        ))),
        Ok(Ok(response)) => Ok(Delivered {
            detail: first_line(&response),
        }),
        Ok(Err(e)) => {
            let text = scrub(
                &without_repeats(&e.to_string()),
                plan.login.as_ref().map(|(user, _)| user.as_str()),
                password.as_deref(),
            );
            let text = format!("{target}: {text}");
            Err(if e.is_permanent() {
                SendError::Rejected(text)
            } else if e.is_client() {
                // Raised before anything is sent: no AUTH mechanism in common, no STARTTLS.
                SendError::Config(text)
            } else {
                // 4xx replies, timeouts, network, TLS and protocol errors.
                SendError::Temporary(text)
            })
        }
    }
}

/// The usual port for `security`.
fn default_port(security: SmtpSecurity) -> u16 {
    match security {
        SmtpSecurity::Starttls => 587,
        SmtpSecurity::Tls => 465,
        SmtpSecurity::None => 25,
    }
}

/// TLS settings for `host`. Skipping verification means any certificate, for any name
/// (lettre checks the name even with invalid certificates accepted).
fn tls_parameters(host: &str, skip: bool) -> Result<TlsParameters, lettre::transport::smtp::Error> {
    TlsParameters::builder(host.to_string())
        .dangerous_accept_invalid_certs(skip)
        .dangerous_accept_invalid_hostnames(skip)
        .build()
}

fn tls(plan: &SmtpPlan) -> Result<Tls, SendError> {
    if plan.security == SmtpSecurity::None {
        return Ok(Tls::None);
    }
    // The plan built these once already; only a change in the TLS library could fail here.
    let params = tls_parameters(&plan.host, plan.skip_tls_verify)
        .map_err(|e| SendError::Config(format!("{}.host: cannot set up TLS: {e}", plan.base)))?;
    Ok(match plan.security {
        SmtpSecurity::Tls => Tls::Wrapper(params),
        _ => Tls::Required(params),
    })
}

/// The login name and password, when the server needs authentication.
fn credentials(
    ctx: &ProviderContext,
    plan: &SmtpPlan,
) -> Result<Option<(String, String)>, SendError> {
    let Some((user, r)) = &plan.login else {
        return Ok(None);
    };
    let value = ctx
        .secrets
        .get(&plan.namespace, &r.name, &r.key)
        .ok_or_else(|| {
            SendError::Config(format!(
                "{}.passwordSecretRef: {}",
                plan.base,
                ctx.secrets.why_missing(&plan.namespace, &r.name, &r.key)
            ))
        })?;
    Ok(Some((user.clone(), value.expose_str())))
}

fn email(plan: &SmtpPlan, msg: &Message) -> Result<lettre::Message, SendError> {
    let mut builder = lettre::Message::builder()
        .from(plan.from.clone())
        .subject(msg.title.as_str())
        .header(ContentType::TEXT_PLAIN);
    for to in &plan.to {
        builder = builder.to(to.clone());
    }
    builder
        .body(msg.body.clone())
        .map_err(|e| SendError::Config(format!("{}: cannot build the e-mail: {e}", plan.base)))
}

/// `250 2.0.0 Ok: queued as …`: the reply code and its first line.
fn first_line(response: &Response) -> String {
    match response.first_line() {
        Some(line) if !line.is_empty() => format!("{} {line}", response.code()),
        _ => response.code().to_string(),
    }
}

/// lettre nests errors of the same kind: `Connection error: Connection error: …`.
fn without_repeats(text: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in text.split(": ") {
        if parts.last() != Some(&p) {
            parts.push(p);
        }
    }
    parts.join(": ")
}

/// `text` without the password, in clear or as the AUTH PLAIN/LOGIN encodings, in case a
/// server echoes what it got.
fn scrub(text: &str, user: Option<&str>, password: Option<&str>) -> String {
    let Some(password) = password.filter(|p| p.len() >= 3) else {
        return text.to_string();
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut forms = [
        password.to_string(),
        b64.encode(password),
        b64.encode(format!("\0{}\0{password}", user.unwrap_or(""))),
    ];
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms
        .iter()
        .fold(text.to_string(), |t, f| t.replace(f.as_str(), "<redacted>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(v: serde_json::Value) -> SmtpConfig {
        let mut base = serde_json::json!({
            "host": "127.0.0.1", "from": "alerts@example.com", "to": ["ops@example.com"],
        });
        for (k, x) in v.as_object().unwrap() {
            base[k] = x.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn default_ports_follow_security() {
        let port = |v| SmtpPlan::of("prod", &config(v)).map(|p| p.port);
        assert_eq!(port(serde_json::json!({"security": "starttls"})), Ok(587));
        assert_eq!(port(serde_json::json!({"security": "tls"})), Ok(465));
        assert_eq!(port(serde_json::json!({"security": "none"})), Ok(25));
        assert_eq!(port(serde_json::json!({})), Ok(587));
        assert_eq!(
            port(serde_json::json!({"security": "tls", "port": 2525})),
            Ok(2525)
        );
        for bad in [0, -1, 65536] {
            let Err(e) = port(serde_json::json!({"security": "none", "port": bad})) else {
                panic!("port {bad} accepted");
            };
            assert!(e.to_string().starts_with("spec.config.smtp.port: "), "{e}");
        }
    }

    #[test]
    fn repeated_causes_collapse() {
        assert_eq!(
            without_repeats("Connection error: Connection error: invalid peer certificate"),
            "Connection error: invalid peer certificate"
        );
    }

    #[test]
    fn scrub_removes_password_forms() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let text = format!(
            "535 bad hunter22 {} {}",
            b64.encode("hunter22"),
            b64.encode("\0kuma\0hunter22")
        );
        let out = scrub(&text, Some("kuma"), Some("hunter22"));
        assert_eq!(out, "535 bad <redacted> <redacted> <redacted>");
    }
}
