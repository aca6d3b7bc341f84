//! The `keyword` checker: an HTTP request (judged like `http`) whose body must contain a
//! keyword or match a regex — or, with `invert`, must not. The original implementation's
//! form (`target.http` + `successCriteria.keyword.contains/notContains`) works too.

use kubekuma_crds::monitor::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};

use super::http::{Passed, fetch_and_judge, scrub};
use super::{Attempt, CheckContext, excerpt};

/// One body rule: the text (or pattern), whether it is a regex, whether it must be absent.
struct Rule {
    needle: String,
    regex: bool,
    absent: bool,
    case_insensitive: bool,
}

/// Run one keyword check.
pub(crate) async fn check(
    ctx: &CheckContext,
    namespace: &str,
    spec: &MonitorSpec,
    attempt: &Attempt,
) -> CheckOutcome {
    let criteria_kw = spec
        .success_criteria
        .as_ref()
        .and_then(|c| c.keyword.as_ref());
    let (http, rules) = match (&spec.target.keyword, &spec.target.http) {
        (Some(k), _) => (
            &k.http,
            vec![Rule {
                needle: k.keyword.clone(),
                regex: k.regex.unwrap_or(false),
                absent: k.invert.unwrap_or(false),
                case_insensitive: k.case_insensitive.unwrap_or(false),
            }],
        ),
        (None, Some(h)) => {
            let mut rules = Vec::new();
            for c in criteria_kw.iter().flat_map(|k| k.contains.iter()) {
                rules.push(Rule {
                    needle: c.clone(),
                    regex: false,
                    absent: false,
                    case_insensitive: false,
                });
            }
            for c in criteria_kw.iter().flat_map(|k| k.not_contains.iter()) {
                rules.push(Rule {
                    needle: c.clone(),
                    regex: false,
                    absent: true,
                    case_insensitive: false,
                });
            }
            (h, rules)
        }
        (None, None) => {
            return CheckOutcome::down(
                0.0,
                FailureReason::Config,
                "spec.target.keyword is missing for a keyword monitor",
            );
        }
    };
    let Passed {
        exchange,
        judged,
        secrets,
    } = match fetch_and_judge(ctx, namespace, spec, http, attempt).await {
        Ok(p) => p,
        Err(down) => return down,
    };
    let body = String::from_utf8_lossy(&exchange.body);
    for rule in &rules {
        let found = if rule.regex {
            let pattern = if rule.case_insensitive {
                format!("(?i){}", rule.needle)
            } else {
                rule.needle.clone()
            };
            match regex::Regex::new(&pattern) {
                Ok(re) => re.find(&body).map(|m| (m.start(), m.end())),
                Err(e) => {
                    return CheckOutcome::down(
                        attempt.elapsed_ms(),
                        FailureReason::Config,
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
        } else if rule.case_insensitive {
            body.to_lowercase()
                .find(&rule.needle.to_lowercase())
                .map(|s| (s, s + rule.needle.len()))
        } else {
            body.find(&rule.needle).map(|s| (s, s + rule.needle.len()))
        };
        let what = if rule.regex { "pattern" } else { "keyword" };
        let mut out = match (found, rule.absent) {
            (None, false) => CheckOutcome::down(
                attempt.elapsed_ms(),
                FailureReason::Body,
                format!(
                    "{what} {:?} not found in the body (starts with {:?}{})",
                    rule.needle,
                    excerpt(&exchange.body, 60),
                    if exchange.truncated {
                        ", body truncated at maxBodyBytes"
                    } else {
                        ""
                    }
                ),
            ),
            (Some((s, e)), true) => CheckOutcome::down(
                attempt.elapsed_ms(),
                FailureReason::Body,
                format!(
                    "{what} {:?} found in the body, which inverted means down: …{}…",
                    rule.needle,
                    excerpt(around(&body, s, e).as_bytes(), 80)
                ),
            ),
            _ => continue,
        };
        out.cert = judged.cert.clone();
        out.metadata = judged.metadata.clone();
        return scrub(out, &secrets);
    }
    judged
}

/// The text around a match, 20 bytes either side, cut at character boundaries.
fn around(body: &str, start: usize, end: usize) -> &str {
    let mut from = start.saturating_sub(20).min(body.len());
    while !body.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (end + 20).min(body.len());
    while !body.is_char_boundary(to) {
        to += 1;
    }
    &body[from..to]
}
