//! Telegram Bot API: `POST {apiUrl}/bot<token>/sendMessage` with `{chat_id, text,
//! parse_mode}`. The token is part of the URL, so no message ever quotes the URL.

use kubekuma_crds::ProviderType;
use kubekuma_crds::common::SecretKeyRef;
use kubekuma_crds::notification::{TelegramConfig, TelegramParseMode};
use serde_json::json;

use super::endpoint;
use super::webhook::{execute, secret, truncate};
use super::{Delivered, Message, ProviderContext, SendError};
use crate::findings::{PlanError, Sink};

const DEFAULT_API_URL: &str = "https://api.telegram.org";
/// Telegram's limit is 4096 characters after formatting; keep the raw text below it.
const MAX_TITLE: usize = 256;
const MAX_BODY: usize = 3800;

/// A Telegram provider's checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct TelegramPlan {
    /// The namespace its Secret reference resolves in.
    namespace: String,
    /// The path of its configuration block.
    base: String,
    /// The Secret key holding the bot token.
    bot_token: SecretKeyRef,
    /// The chat, not empty.
    chat_id: String,
    /// Default HTML.
    parse_mode: TelegramParseMode,
    /// The Bot API base URL without a trailing `/`.
    api_url: String,
}

impl TelegramPlan {
    /// The plan of a Telegram block checked on its own at `spec.config.telegram`.
    pub fn of(namespace: &str, config: &TelegramConfig) -> Result<TelegramPlan, PlanError> {
        super::alone(namespace, ProviderType::Telegram, config, plan)
    }

    /// Its Secret references with their field paths.
    pub(super) fn secret_refs(&self) -> Vec<(String, SecretKeyRef)> {
        vec![(
            format!("{}.botTokenSecretRef", self.base),
            self.bot_token.clone(),
        )]
    }
}

/// The plan of a Telegram provider: its configuration block at `base` checked.
pub(crate) fn plan(
    namespace: &str,
    base: &str,
    c: &TelegramConfig,
    sink: &mut Sink<'_>,
) -> Option<TelegramPlan> {
    if c.chat_id.trim().is_empty() {
        sink.error(&format!("{base}.chatId"), "must not be empty");
    }
    let api_url = c.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
    endpoint(sink, &format!("{base}.apiUrl"), api_url, "")?;
    Some(TelegramPlan {
        namespace: namespace.to_string(),
        base: base.to_string(),
        bot_token: c.bot_token_secret_ref.clone(),
        chat_id: c.chat_id.clone(),
        parse_mode: c.parse_mode.unwrap_or(TelegramParseMode::Html),
        api_url: api_url.trim_end_matches('/').to_string(),
    })
}

/// Send `msg` to the chat of `plan`.
pub async fn send(
    ctx: &ProviderContext,
    plan: &TelegramPlan,
    msg: &Message,
) -> Result<Delivered, SendError> {
    let token = secret(ctx, &plan.namespace, &plan.bot_token, "botTokenSecretRef")?;
    // The token is a Secret value: whether it fits in the URL is known only now.
    let url = url::Url::parse(&format!("{}/bot{token}/sendMessage", plan.api_url))
        .map_err(|e| SendError::Config(format!("apiUrl is not a valid URL: {e}")))?;
    let mode = plan.parse_mode;
    let body = json!({
        "chat_id": plan.chat_id,
        "text": text(mode, msg),
        "parse_mode": mode_name(mode),
    });
    let reply = execute(ctx, ctx.http.post(url).json(&body), vec![token]).await?;
    // Telegram explains refusals in `description`, with `ok: false`.
    let answer = reply.json();
    let ok = answer.as_ref().and_then(|a| a["ok"].as_bool());
    let description = answer
        .as_ref()
        .and_then(|a| a["description"].as_str().map(str::to_string));
    if reply.status.is_success() && ok == Some(false) {
        return Err(reply.rejected(description.as_deref().unwrap_or("ok: false")));
    }
    reply.outcome(description.as_deref())
}

/// The spelling the Bot API expects.
fn mode_name(mode: TelegramParseMode) -> &'static str {
    match mode {
        TelegramParseMode::MarkdownV2 => "MarkdownV2",
        TelegramParseMode::Markdown => "Markdown",
        TelegramParseMode::Html => "HTML",
    }
}

/// Title (bold where the mode allows it) and body, escaped for `mode`.
fn text(mode: TelegramParseMode, msg: &Message) -> String {
    let title = truncate(&msg.title, MAX_TITLE);
    let body = truncate(&msg.body, MAX_BODY);
    let title = match mode {
        TelegramParseMode::Html => format!("<b>{}</b>", escape_html(&title)),
        TelegramParseMode::MarkdownV2 => format!("*{}*", escape_markdown_v2(&title)),
        // Legacy Markdown allows no escapes inside an entity: the title stays plain.
        TelegramParseMode::Markdown => escape_markdown(&title),
    };
    let body = match mode {
        TelegramParseMode::Html => escape_html(&body),
        TelegramParseMode::MarkdownV2 => escape_markdown_v2(&body),
        TelegramParseMode::Markdown => escape_markdown(&body),
    };
    if body.is_empty() {
        title
    } else {
        format!("{title}\n\n{body}")
    }
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Every character MarkdownV2 reserves, backslash-escaped.
fn escape_markdown_v2(s: &str) -> String {
    escape_with(s, "\\_*[]()~`>#+-=|{}.!")
}

/// The characters legacy Markdown reserves outside entities.
fn escape_markdown(s: &str) -> String {
    escape_with(s, "\\_*`[")
}

fn escape_with(s: &str, reserved: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if reserved.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_per_mode() {
        assert_eq!(escape_html("a<b>&c"), "a&lt;b&gt;&amp;c");
        assert_eq!(
            escape_markdown_v2("v1.2 (down) - 100%!"),
            "v1\\.2 \\(down\\) \\- 100%\\!"
        );
        assert_eq!(escape_markdown("a_b*c"), "a\\_b\\*c");
    }
}
