//! LocalUsers for the tests that sign in: cheap argon2id hashes and their manifests, and
//! what a browser keeps of the console (its cookies) with the form helpers the console
//! tests share.

use reqwest::header::SET_COOKIE;

/// Users: (resource name, namespace, username, role, password).
pub type User = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// An argon2id PHC hash of `password` with the smallest parameters (tests only).
pub fn phc(password: &str) -> String {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
    let params = Params::new(8, 1, 1, None).unwrap();
    let salt: [u8; 16] = rand::random();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// A Secret with the password hash and a LocalUser for each of `users`, as YAML.
pub fn users_yaml(users: &[User]) -> String {
    let mut y = String::new();
    for (name, ns, username, role, pw) in users {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-pw, namespace: {ns}}}\nstringData:\n  hash: '{}'\n\
             ---\napiVersion: monitoring.kubekuma.io/v1\nkind: LocalUser\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  username: {username}\n  role: {role}\n  passwordHashSecretRef: {{name: {name}-pw, key: hash}}\n",
            phc(pw)
        ));
    }
    y
}

/// What a browser keeps of one site: its cookies.
#[derive(Clone, Debug, Default)]
pub struct Browser {
    /// (name, value) of each cookie kept.
    pub cookies: Vec<(String, String)>,
}

impl Browser {
    /// Keep the cookies `r` sets (a `Max-Age=0` one removes its name).
    pub fn take(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !v.contains("Max-Age=0") {
                self.cookies.push((name.to_string(), value.to_string()));
            }
        }
    }

    /// The `Cookie` header a browser would send.
    pub fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The value of the cookie of this name.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// Whether a cookie of this name is kept.
    pub fn has(&self, name: &str) -> bool {
        self.cookies.iter().any(|(n, _)| n == name)
    }
}

/// The value of `<input … name="{name}" value="…">` in a page.
pub fn field(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

/// `pairs` as an `application/x-www-form-urlencoded` body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
