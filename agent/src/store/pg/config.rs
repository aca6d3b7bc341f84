//! A PostgreSQL `DATABASE_URL` → connection settings: the URL without credentials for
//! messages, `sslmode` (`disable`, `prefer` (the default, as libpq), `require`,
//! `verify-ca`, `verify-full`) and `sslrootcert`, and the password from the URL or
//! from `DATABASE_PASSWORD` / `DATABASE_PASSWORD_FILE` (a mounted Secret). No message
//! of this module repeats a password or the URL with it.

use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;

use crate::tls::AcceptAnyCert;

/// How the connection is encrypted and the server checked, as libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate (libpq's default).
    Prefer,
    /// TLS always, without checking the certificate.
    Require,
    /// TLS, the certificate chain checked against the roots (not the host name).
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Option<TlsMode> {
        Some(match value {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }
}

/// Where the password comes from besides the URL (the environment of the agent).
#[derive(Clone, Default)]
pub struct PasswordSource {
    /// `DATABASE_PASSWORD`.
    pub value: Option<String>,
    /// `DATABASE_PASSWORD_FILE`: a file holding it (a trailing newline is dropped).
    pub file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordSource")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("file", &self.file)
            .finish()
    }
}

impl PasswordSource {
    /// `DATABASE_PASSWORD` and `DATABASE_PASSWORD_FILE` from the process environment
    /// (empty values count as unset).
    pub fn from_env() -> PasswordSource {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        PasswordSource {
            value: var("DATABASE_PASSWORD"),
            file: var("DATABASE_PASSWORD_FILE").map(Into::into),
        }
    }
}

/// Checked connection settings.
pub struct PgSettings {
    /// For tokio-postgres (password included).
    pub config: tokio_postgres::Config,
    /// The URL without password or query, for messages and logs.
    pub label: String,
    /// TLS mode.
    pub tls: TlsMode,
    /// `sslrootcert`: a PEM file of roots (else the system's roots) for the verify modes.
    pub root_cert: Option<std::path::PathBuf>,
}

/// Why a PostgreSQL URL or its password was refused. Never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a URL at all.
    #[error("database url is not a valid postgres:// url")]
    NotUrl,
    /// A query parameter with a bad value.
    #[error("database url {label}: {message}")]
    Invalid {
        /// The URL without credentials.
        label: String,
        /// What is wrong.
        message: String,
    },
}

/// Parse a `postgres://` or `postgresql://` URL, taking the password from `password`
/// when the URL has none. A password in both places, or both `DATABASE_PASSWORD` and
/// `DATABASE_PASSWORD_FILE`, is refused (which one would win is not obvious).
pub fn parse(url: &str, password: &PasswordSource) -> Result<PgSettings, ConfigError> {
    let mut u = url::Url::parse(url.trim()).map_err(|_| ConfigError::NotUrl)?;
    if !matches!(u.scheme(), "postgres" | "postgresql") {
        return Err(ConfigError::NotUrl);
    }
    let mut label_url = u.clone();
    let _ = label_url.set_password(None);
    label_url.set_query(None);
    label_url.set_fragment(None);
    let label = label_url.to_string();
    let invalid = |message: String| ConfigError::Invalid {
        label: label.clone(),
        message,
    };

    let mut tls = TlsMode::Prefer;
    let mut root_cert = None;
    let mut rest: Vec<(String, String)> = Vec::new();
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "sslmode" => {
                tls = TlsMode::parse(&v).ok_or_else(|| {
                    invalid(format!(
                        "sslmode {v:?} is not one of disable, prefer, require, verify-ca, verify-full"
                    ))
                })?;
            }
            "sslrootcert" => root_cert = Some(std::path::PathBuf::from(v.as_ref())),
            "password" => {
                return Err(invalid(
                    "the password goes in the url's user part or in DATABASE_PASSWORD / \
                     DATABASE_PASSWORD_FILE, not in a query parameter"
                        .into(),
                ));
            }
            _ => rest.push((k.into_owned(), v.into_owned())),
        }
    }
    if root_cert.is_some() && !matches!(tls, TlsMode::VerifyCa | TlsMode::VerifyFull) {
        return Err(invalid(
            "sslrootcert is only used with sslmode=verify-ca or verify-full".into(),
        ));
    }
    if rest.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(rest);
    }
    let mut config = tokio_postgres::Config::from_str(u.as_str())
        .map_err(|e| invalid(format!("{e}: {}", source_text(&e))))?;
    let from_env = match (&password.value, &password.file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "both DATABASE_PASSWORD and DATABASE_PASSWORD_FILE are set: set one".into(),
            ));
        }
        (Some(v), None) => Some(v.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(format!(
                    "cannot read DATABASE_PASSWORD_FILE {}: {e}",
                    path.display()
                ))
            })?;
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        }
        (None, None) => None,
    };
    match (config.get_password().is_some(), from_env) {
        (true, Some(_)) => {
            return Err(invalid(
                "a password is both in the url and in DATABASE_PASSWORD(_FILE): keep one".into(),
            ));
        }
        (false, Some(p)) => {
            config.password(p);
        }
        (_, None) => {}
    }
    config.ssl_mode(match tls {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("kubekuma");
    }
    Ok(PgSettings {
        config,
        label,
        tls,
        root_cert,
    })
}

/// The text of an error's source, if any (tokio-postgres puts the detail there).
pub(crate) fn source_text(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut next = e.source();
    while let Some(s) = next {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// The rustls connector for `settings` (also used by `prefer` and `require`, which do
/// not check the certificate, as libpq does).
pub fn tls_connector(
    settings: &PgSettings,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        label: settings.label.clone(),
        message,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("tls: {e}")))?;
    let config = match settings.tls {
        TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth(),
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            match &settings.root_cert {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        invalid(format!("cannot read sslrootcert {}: {e}", path.display()))
                    })?;
                    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                        let cert: CertificateDer<'static> = cert
                            .map_err(|e| invalid(format!("sslrootcert {}: {e}", path.display())))?;
                        roots
                            .add(cert)
                            .map_err(|e| invalid(format!("sslrootcert {}: {e}", path.display())))?;
                    }
                }
                None => {
                    for cert in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(cert);
                    }
                }
            }
            if roots.is_empty() {
                return Err(invalid(
                    "no root certificates to verify the server with".into(),
                ));
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| invalid(format!("tls: {e}")))?;
            if settings.tls == TlsMode::VerifyCa {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
                    .with_no_client_auth()
            } else {
                builder.with_webpki_verifier(verifier).with_no_client_auth()
            }
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `verify-ca`: the chain checked against the roots, the host name not.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> PasswordSource {
        PasswordSource::default()
    }

    #[test]
    fn the_label_never_holds_the_password() {
        let s = parse(
            "postgres://kuma:s3cr%40t@db.example:5433/kubekuma?sslmode=require",
            &none(),
        )
        .unwrap();
        assert_eq!(s.label, "postgres://kuma@db.example:5433/kubekuma");
        assert_eq!(s.config.get_password(), Some(&b"s3cr@t"[..]));
        assert_eq!(s.tls, TlsMode::Require);
        assert_eq!(s.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn sslmode_defaults_to_prefer_and_bad_values_are_refused() {
        let s = parse("postgresql://kuma@db/kubekuma", &none()).unwrap();
        assert_eq!(s.tls, TlsMode::Prefer);
        for bad in ["allow", "VERIFY-FULL", "yes"] {
            let e = parse(&format!("postgres://kuma:pw@db/x?sslmode={bad}"), &none())
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("sslmode"), "{e}");
            assert!(!e.contains("pw"), "{e}");
        }
        let e = parse("postgres://kuma:hunter2@db/x?sslrootcert=/x.pem", &none())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("verify-ca"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_password_comes_from_one_place() {
        let env = PasswordSource {
            value: Some("from-env".into()),
            file: None,
        };
        let s = parse("postgres://kuma@db/x", &env).unwrap();
        assert_eq!(s.config.get_password(), Some(&b"from-env"[..]));
        let e = parse("postgres://kuma:in-url@db/x", &env)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("both in the url"), "{e}");
        assert!(!e.contains("in-url") && !e.contains("from-env"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let s = parse(
            "postgres://kuma@db/x",
            &PasswordSource {
                value: None,
                file: Some(file.clone()),
            },
        )
        .unwrap();
        assert_eq!(s.config.get_password(), Some(&b"from-file"[..]));
        let both = PasswordSource {
            value: Some("a".into()),
            file: Some(file),
        };
        assert!(parse("postgres://kuma@db/x", &both).is_err());
        let e = parse("postgres://kuma@db/x?password=leak", &none())
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("leak"), "{e}");
    }
}
