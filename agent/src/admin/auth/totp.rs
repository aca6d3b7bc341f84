//! TOTP second factor (RFC 6238: SHA-1, 6 digits, 30-second steps, one step of skew
//! either way), from a base32 secret kept in a Secret.

use totp_rs::{Algorithm, Builder, Secret, Totp};

/// Why a TOTP secret cannot be used (never includes the secret).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TotpSecretError {
    /// Not base32.
    #[error("the TOTP secret is not base32")]
    NotBase32,
    /// Too short (RFC 4226 asks for at least 128 bits).
    #[error("the TOTP secret is too short (at least 16 bytes, 26 base32 characters)")]
    TooShort,
}

/// The TOTP generator of a base32 secret (spaces, lowercase and `=` padding tolerated).
pub fn from_base32(secret: &[u8]) -> Result<Totp, TotpSecretError> {
    let text: String = String::from_utf8_lossy(secret)
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = Secret::try_from_base32(&text)
        .map_err(|_| TotpSecretError::NotBase32)?
        .as_bytes()
        .to_vec();
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(bytes)
        .build()
        .map_err(|_| TotpSecretError::TooShort)
}

/// The step `code` is valid for at `unix_secs`, if any (the code may carry spaces).
pub fn check(totp: &Totp, code: &str, unix_secs: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp.check(&code, unix_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_sha1_vector() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", T = 59 s: 94287082 (8
        // digits); the 6-digit code is its last six digits.
        let secret = Secret::from(b"12345678901234567890".to_vec()).to_base32();
        let totp = from_base32(secret.to_lowercase().as_bytes()).unwrap_or_default();
        assert_eq!(check(&totp, "287082", 59), Some(1));
        assert_eq!(check(&totp, "287 082", 59 + 30), Some(1));
        assert_eq!(check(&totp, "287082", 59 + 90), None);
        assert_eq!(check(&totp, "28708", 59), None);
        assert_eq!(from_base32(b"!!!"), Err(TotpSecretError::NotBase32));
        assert_eq!(from_base32(b"JBSWY3DP"), Err(TotpSecretError::TooShort));
    }
}
