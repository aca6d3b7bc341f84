//! Signing in and out of the console: the sign-in page (a LocalUser's password and TOTP
//! code, or the OIDC link), its pre-session CSRF token (a signed, short-lived
//! `kk_console_csrf` cookie repeated in the form: double submit), and the sign-out form.
//! The login itself is the API's (`POST /api/v1/auth/login` through the same route, so
//! its rate limits, argon2 bound, TOTP replay check, session and audit records are the
//! API's); the console only turns its answer into a redirect or a message.

use chrono::Utc;
use http::{HeaderValue, Method, StatusCode, header};
use minijinja::{Value, context};

use super::{
    Env, PREFIX, Reply, Req, Session, assets, call_api, flash_text, is_form, local_next, mac,
    render_with, same_origin, see_other,
};
use crate::admin::auth::Credential;
use crate::admin::auth::oidc::LOGIN_PATH as OIDC_LOGIN_PATH;
use kubekuma_crds::settings::AuthMode;

/// The pre-session CSRF cookie of the sign-in form.
pub const LOGIN_COOKIE: &str = "kk_console_csrf";

/// How long a sign-in form stays usable.
const LOGIN_TOKEN_SECONDS: i64 = 2 * 3600;

/// A fresh sign-in token: `<nonce>.<expiry>.<mac>`.
fn new_login_token(env: Env<'_>) -> String {
    use base64::Engine as _;
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let expiry = Utc::now().timestamp() + LOGIN_TOKEN_SECONDS;
    let data = format!("{nonce}.{expiry}");
    let sig = mac(env.ctx, "login", &data)
        .map(|m| {
            use hmac::Mac as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        })
        .unwrap_or_default();
    format!("{data}.{sig}")
}

/// Whether a sign-in token is ours and not expired (with at least `margin` seconds left).
fn login_token_ok(env: Env<'_>, token: &str, margin: i64) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let Some((data, sig)) = token.rsplit_once('.') else {
        return false;
    };
    let Some(expiry) = data
        .split_once('.')
        .and_then(|(_, e)| e.parse::<i64>().ok())
    else {
        return false;
    };
    let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    mac(env.ctx, "login", data).is_some_and(|m| m.verify_slice(&sig).is_ok())
        && Utc::now().timestamp() + margin < expiry
}

/// The `kk_console_csrf` cookie's value.
fn login_cookie(r: &Req<'_>) -> Option<String> {
    r.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("kk_console_csrf="))
        .map(str::to_string)
        .find(|t| !t.is_empty())
}

fn secure_suffix(r: &Req<'_>) -> &'static str {
    let https = r
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    if https { "; Secure" } else { "" }
}

/// `next` from a query or form: a local console path, else the overview.
fn next_of(next: Option<&str>) -> String {
    match next {
        Some(n) if local_next(n) && n.len() <= 2048 => n.to_string(),
        _ => "/admin/".to_string(),
    }
}

/// What the sign-in page shows besides the form's values.
struct Shown<'s> {
    next: String,
    flash: Option<&'static str>,
    error: Option<String>,
    username: &'s str,
}

/// Render the sign-in page with a usable token (the cookie's, or a new one set with it).
fn show(r: &Req<'_>, status: StatusCode, shown: Shown<'_>) -> Reply {
    let (token, fresh) = match login_cookie(r) {
        Some(t) if login_token_ok(r.env, &t, 600) => (t, false),
        _ => (new_login_token(r.env), true),
    };
    let snap = r.ctx().catalog.borrow().clone();
    let oidc = (snap.effective.auth_mode == AuthMode::Oidc).then(|| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("next", &shown.next);
        format!("{OIDC_LOGIN_PATH}?{}", q.finish())
    });
    let page = context! {
        csrf => token.clone(),
        user => Value::from(()),
        can => context! { ack => false, silence => false, test_send => false, audit => false },
        section => "login",
        assets => assets(),
        flash => shown.flash,
        error => shown.error,
        next => shown.next,
        username => shown.username,
        local => snap.effective.local_login_enabled,
        oidc => oidc,
    };
    let mut reply = render_with("login.html", status, page);
    if fresh {
        let cookie = format!(
            "{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path={PREFIX}; Max-Age={LOGIN_TOKEN_SECONDS}{}",
            secure_suffix(r)
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            reply.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    reply
}

/// `GET /admin/login?next=&done=`: the sign-in page; a browser already signed in goes on
/// to `next` (and everyone does under `auth.mode: disabled`, which has no sign-in).
pub async fn page(r: &Req<'_>) -> Reply {
    let next = next_of(r.query_value("next").as_deref());
    if r.ctx().auth.auth_disabled() {
        return see_other(&next);
    }
    if matches!(Credential::of(r.headers()), Credential::Cookie(_))
        && r.ctx().auth.authenticate(r.headers(), r.peer).await.is_ok()
    {
        return see_other(&next);
    }
    let flash = r.query_value("done").and_then(|c| flash_text(&c));
    show(
        r,
        StatusCode::OK,
        Shown {
            next,
            flash,
            error: None,
            username: "",
        },
    )
}

/// `POST /admin/login` (`username`, `password`, `totp`, `csrf`, `next`): the API's login;
/// on success 303 to `next` with the session cookie, else the page again with the reason
/// (200 for wrong credentials, the API's status for limits and refusals; 403 without a
/// valid token or from another origin).
pub async fn submit(r: &Req<'_>) -> Reply {
    let refused = |why: &str| {
        tracing::info!(peer = %r.peer, "console sign-in refused: {why}");
        show(
            r,
            StatusCode::FORBIDDEN,
            Shown {
                next: "/admin/".into(),
                flash: None,
                error: Some(
                    "This sign-in form was not sent from this page or has expired. Try again."
                        .into(),
                ),
                username: "",
            },
        )
    };
    if let Err(why) = same_origin(r.req) {
        return refused(&why);
    }
    if !is_form(r.headers()) {
        return refused("not a form");
    }
    let form = super::Form::parse(r.req.body());
    let cookie = login_cookie(r);
    let token_ok = match (form.get("csrf"), cookie.as_deref()) {
        (Some(f), Some(c)) => f == c && login_token_ok(r.env, c, 0),
        _ => false,
    };
    if !token_ok {
        return refused("missing or wrong csrf token");
    }
    let next = next_of(form.get("next"));
    let username = form.get("username").unwrap_or("").trim().to_string();
    let mut body = serde_json::json!({
        "username": username,
        "password": form.get("password").unwrap_or(""),
    });
    if let Some(code) = form.text("totp") {
        body["totp"] = code.into();
    }
    let reply = call_api(r, Method::POST, "/api/v1/auth/login", Some(body), false).await;
    let status = reply.status();
    if status.is_success() {
        let mut ok = see_other(&next);
        for c in reply.headers().get_all(header::SET_COOKIE) {
            ok.headers_mut().append(header::SET_COOKIE, c.clone());
        }
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{LOGIN_COOKIE}=; HttpOnly; SameSite=Strict; Path={PREFIX}; Max-Age=0"
        )) {
            ok.headers_mut().append(header::SET_COOKIE, v);
        }
        return ok;
    }
    let retry_after = reply.headers().get(header::RETRY_AFTER).cloned();
    let answer = super::answer_of(reply).await;
    let error = match answer.code() {
        "invalid_credentials" | "bad_request" => "Wrong username or password.".to_string(),
        "mfa_required" => {
            "This account needs a code from its authenticator app: enter it in the TOTP field."
                .to_string()
        }
        "invalid_totp" => "The TOTP code is wrong or was already used.".to_string(),
        _ => answer.message(),
    };
    let status = match answer.code() {
        "invalid_credentials" | "bad_request" | "mfa_required" | "invalid_totp" => StatusCode::OK,
        _ => status,
    };
    let mut page = show(
        r,
        status,
        Shown {
            next,
            flash: None,
            error: Some(error),
            username: &username,
        },
    );
    if let Some(v) = retry_after {
        page.headers_mut().insert(header::RETRY_AFTER, v);
    }
    page
}

/// `POST /admin/logout` (`csrf`): the API's logout (session revoked, audited), then 303
/// to the sign-in page with the cookie cleared.
pub async fn logout(s: &Session<'_>) -> Reply {
    if let Err(r) = s.form() {
        return r;
    }
    if s.ctx().auth.auth_disabled() {
        return see_other("/admin/");
    }
    let reply = call_api(&s.r, Method::POST, "/api/v1/auth/logout", None, true).await;
    if !reply.status().is_success() {
        tracing::warn!(status = %reply.status(), "console sign-out: the API refused");
    }
    let mut r = see_other("/admin/login?done=signed_out");
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_defaults_to_the_overview() {
        assert_eq!(next_of(None), "/admin/");
        assert_eq!(next_of(Some("//evil.example")), "/admin/");
        assert_eq!(next_of(Some("/admin/monitors/a/b")), "/admin/monitors/a/b");
    }
}
