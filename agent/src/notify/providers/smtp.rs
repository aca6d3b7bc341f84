//! E-mail over SMTP with lettre: STARTTLS (default, port 587), implicit TLS (465) or
//! plain (25), optional AUTH with a password from a Secret, one text/plain UTF-8 message
//! per notification with the title as subject.

use base64::Engine;
use kubekuma_crds::notification::{SmtpConfig, SmtpSecurity};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::response::Response;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::Checked;
use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::Sink;
use crate::rules::{self, host_ok};

const FIELD: &str = "spec.config.smtp";

/// A Smtp provider's checked configuration.
pub type SmtpPlan = Checked<SmtpConfig>;

/// The plan of a Smtp provider: its configuration block at `base` checked.
pub(crate) fn plan(namespace: &str, base: &str, c: &SmtpConfig, sink: &mut Sink<'_>) -> SmtpPlan {
    host_ok(sink, &format!("{base}.host"), &c.host);
    rules::port(sink, &format!("{base}.port"), c.port);
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
    Checked::new(namespace, base, c)
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

/// Send `msg` as an e-mail through the server in `config`.
///
/// Connection failures, timeouts and 4xx replies are [`SendError::Temporary`]; 5xx
/// replies (a refused login, an unknown recipient) are [`SendError::Rejected`].
pub async fn send(
    ctx: &ProviderContext,
    namespace: &str,
    config: &SmtpConfig,
    msg: &Message,
) -> Result<Delivered, SendError> {
    if config.host.trim().is_empty() {
        return Err(SendError::Config(format!("{FIELD}.host is empty")));
    }
    let security = config.security.unwrap_or(SmtpSecurity::Starttls);
    let port = port(config.port, security)?;
    let email = email(config, msg)?;
    let credentials = credentials(ctx, namespace, config)?;
    let password = credentials.as_ref().map(|(_, p)| p.clone());

    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str())
        .port(port)
        .timeout(Some(ctx.timeout))
        .tls(tls(config, security)?);
    if let Some((user, password)) = credentials {
        builder = builder.credentials(Credentials::new(user, password));
    }
    let transport = builder.build();

    let target = format!("{}:{port}", config.host);
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
                config.username.as_deref(),
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

/// The port to connect to: the configured one, else the usual one for `security`.
fn port(configured: Option<i64>, security: SmtpSecurity) -> Result<u16, SendError> {
    match configured {
        None => Ok(match security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }),
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| SendError::Config(format!("{FIELD}.port: {p} is not a port number"))),
    }
}

fn tls(config: &SmtpConfig, security: SmtpSecurity) -> Result<Tls, SendError> {
    if security == SmtpSecurity::None {
        return Ok(Tls::None);
    }
    // Skipping verification means any certificate, for any name (lettre checks the name
    // even with invalid certificates accepted).
    let skip = config.skip_tls_verify.unwrap_or(false);
    let params = TlsParameters::builder(config.host.clone())
        .dangerous_accept_invalid_certs(skip)
        .dangerous_accept_invalid_hostnames(skip)
        .build()
        .map_err(|e| SendError::Config(format!("{FIELD}.host: cannot set up TLS: {e}")))?;
    Ok(match security {
        SmtpSecurity::Tls => Tls::Wrapper(params),
        _ => Tls::Required(params),
    })
}

/// The login name and password, when the server needs authentication.
fn credentials(
    ctx: &ProviderContext,
    namespace: &str,
    config: &SmtpConfig,
) -> Result<Option<(String, String)>, SendError> {
    match (&config.username, &config.password_secret_ref) {
        (None, None) => Ok(None),
        (Some(user), Some(r)) => {
            let value = ctx.secrets.get(namespace, &r.name, &r.key).ok_or_else(|| {
                SendError::Config(format!(
                    "{FIELD}.passwordSecretRef: {}",
                    ctx.secrets.why_missing(namespace, &r.name, &r.key)
                ))
            })?;
            Ok(Some((user.clone(), value.expose_str())))
        }
        (Some(_), None) => Err(SendError::Config(format!(
            "{FIELD}.passwordSecretRef is required with username"
        ))),
        (None, Some(_)) => Err(SendError::Config(format!(
            "{FIELD}.username is required with passwordSecretRef"
        ))),
    }
}

fn email(config: &SmtpConfig, msg: &Message) -> Result<lettre::Message, SendError> {
    let from: Mailbox = config.from.parse().map_err(|e| {
        SendError::Config(format!(
            "{FIELD}.from: {:?} is not an e-mail address: {e}",
            config.from
        ))
    })?;
    if config.to.is_empty() {
        return Err(SendError::Config(format!(
            "{FIELD}.to: at least one recipient is required"
        )));
    }
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(msg.title.as_str())
        .header(ContentType::TEXT_PLAIN);
    for (i, to) in config.to.iter().enumerate() {
        let mailbox: Mailbox = to.parse().map_err(|e| {
            SendError::Config(format!(
                "{FIELD}.to[{i}]: {to:?} is not an e-mail address: {e}"
            ))
        })?;
        builder = builder.to(mailbox);
    }
    builder
        .body(msg.body.clone())
        .map_err(|e| SendError::Config(format!("{FIELD}: cannot build the e-mail: {e}")))
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

    #[test]
    fn default_ports_follow_security() {
        assert_eq!(port(None, SmtpSecurity::Starttls), Ok(587));
        assert_eq!(port(None, SmtpSecurity::Tls), Ok(465));
        assert_eq!(port(None, SmtpSecurity::None), Ok(25));
        assert_eq!(port(Some(2525), SmtpSecurity::Tls), Ok(2525));
        for bad in [0, -1, 65536] {
            let Err(SendError::Config(e)) = port(Some(bad), SmtpSecurity::None) else {
                panic!("port {bad} accepted");
            };
            assert!(e.starts_with("spec.config.smtp.port: "), "{e}");
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
