//! The `keyword` checker: an HTTP request (judged like `http`) whose body must contain a
//! keyword or match a regex — or, with `invert`, must not. The original implementation's
//! form (`target.http` + `successCriteria.keyword.contains/notContains`) works too.

use kubekuma_crds::monitor::MonitorSpec;
use kubekuma_crds::results::{CheckOutcome, FailureReason};

use super::http::{self, HttpPlan, Passed, fetch_and_judge, scrub};
use super::{Attempt, CheckContext, Pattern, excerpt};
use crate::findings::Sink;
use crate::rules::regex_ok;

/// A `keyword` monitor's request and body rules, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct KeywordPlan {
    /// The request, judged like `http`.
    http: HttpPlan,
    /// What the body must (or must not) contain.
    rules: Vec<Rule>,
}

/// One body rule: the text (or pattern), whether it is a regex, whether it must be absent.
#[derive(Clone, Debug, PartialEq)]
struct Rule {
    needle: String,
    regex: bool,
    absent: bool,
    case_insensitive: bool,
    /// The compiled pattern (of the escaped text when only case-insensitive), or why it
    /// does not compile; `None` for plain text.
    compiled: Option<Result<Pattern, String>>,
}

impl Rule {
    /// A rule, its pattern compiled once. Case-insensitive matching uses Unicode simple
    /// case folding in the regex engine rather than lowercasing the body, whose byte
    /// length can differ from the original's (`İ` lowercases to two characters), which
    /// would misplace the match.
    fn new(needle: &str, regex: bool, absent: bool, case_insensitive: bool) -> Rule {
        let compiled = (regex || case_insensitive).then(|| {
            let pattern = if regex {
                needle.to_string()
            } else {
                regex::escape(needle)
            };
            regex::RegexBuilder::new(&pattern)
                .case_insensitive(case_insensitive)
                .build()
                .map(Pattern)
                .map_err(|e| e.to_string())
        });
        Rule {
            needle: needle.to_string(),
            regex,
            absent,
            case_insensitive,
            compiled,
        }
    }

    /// Where the rule's text or pattern first occurs in `body`, as byte positions in
    /// `body` itself; `Err` when the pattern does not compile.
    fn find(&self, body: &str) -> Result<Option<(usize, usize)>, String> {
        match &self.compiled {
            None => Ok(body.find(&self.needle).map(|s| (s, s + self.needle.len()))),
            Some(Ok(re)) => Ok(re.0.find(body).map(|m| (m.start(), m.end()))),
            Some(Err(e)) => Err(e.clone()),
        }
    }
}

/// Most characters of a keyword or pattern quoted in a message.
const NEEDLE_CHARS: usize = 60;

/// A keyword or pattern cut to [`NEEDLE_CHARS`] characters, `…` when cut.
fn shorten(needle: &str) -> String {
    match needle.char_indices().nth(NEEDLE_CHARS) {
        Some((at, _)) => format!("{}…", &needle[..at]),
        None => needle.to_string(),
    }
}

/// The plan of a `keyword` monitor: `spec.target.keyword`, or the original
/// implementation's `target.http` with `successCriteria.keyword.contains/notContains`.
pub(crate) fn plan(
    namespace: &str,
    spec: &MonitorSpec,
    sink: &mut Sink<'_>,
) -> Option<KeywordPlan> {
    let t = &spec.target;
    if let Some(k) = &t.keyword {
        http::rules(sink, "spec.target.keyword", &k.http);
        if k.keyword.is_empty() {
            sink.error("spec.target.keyword.keyword", "must not be empty");
        } else if k.regex == Some(true) {
            regex_ok(sink, "spec.target.keyword.keyword", &k.keyword);
        }
        Some(KeywordPlan {
            http: HttpPlan::new(namespace, &k.http, spec),
            rules: vec![Rule::new(
                &k.keyword,
                k.regex.unwrap_or(false),
                k.invert.unwrap_or(false),
                k.case_insensitive.unwrap_or(false),
            )],
        })
    } else if let Some(h) = &t.http {
        http::rules(sink, "spec.target.http", h);
        let kw = spec
            .success_criteria
            .as_ref()
            .and_then(|c| c.keyword.as_ref());
        if kw.is_none_or(|k| k.contains.is_empty() && k.not_contains.is_empty()) {
            sink.error(
                "spec.target.keyword",
                "required for type keyword (or target.http with successCriteria.keyword.contains/notContains)",
            );
        }
        let mut rules = Vec::new();
        for c in kw.iter().flat_map(|k| k.contains.iter()) {
            rules.push(Rule::new(c, false, false, false));
        }
        for c in kw.iter().flat_map(|k| k.not_contains.iter()) {
            rules.push(Rule::new(c, false, true, false));
        }
        Some(KeywordPlan {
            http: HttpPlan::new(namespace, h, spec),
            rules,
        })
    } else {
        None
    }
}

/// Run one keyword check.
pub(crate) async fn check(
    ctx: &CheckContext,
    plan: &KeywordPlan,
    attempt: &Attempt,
) -> CheckOutcome {
    let rules = &plan.rules;
    let Passed {
        exchange,
        judged,
        secrets,
    } = match fetch_and_judge(ctx, &plan.http, attempt).await {
        Ok(p) => p,
        Err(down) => return down,
    };
    let body = String::from_utf8_lossy(&exchange.body);
    for rule in rules {
        let found = match rule.find(&body) {
            Ok(found) => found,
            Err(e) => {
                return CheckOutcome::down(
                    attempt.elapsed_ms(),
                    FailureReason::Config,
                    format!("invalid regular expression: {e}"),
                );
            }
        };
        let what = if rule.regex { "pattern" } else { "keyword" };
        let mut out = match (found, rule.absent) {
            (None, false) => CheckOutcome::down(
                attempt.elapsed_ms(),
                FailureReason::Body,
                format!(
                    "{what} {:?} not found in the body (starts with {:?}{})",
                    shorten(&rule.needle),
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
                    shorten(&rule.needle),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(needle: &str, regex: bool, case_insensitive: bool) -> Rule {
        Rule::new(needle, regex, false, case_insensitive)
    }

    /// The matched text, cut from the original body at the positions found.
    fn matched<'a>(r: &Rule, body: &'a str) -> Option<&'a str> {
        r.find(body).unwrap().map(|(s, e)| &body[s..e])
    }

    #[test]
    fn case_insensitive_positions_are_in_the_original_non_ascii_text() {
        // Each `İ` is 2 bytes but lowercases to `i̇` (3 bytes): positions taken from a
        // lowercased copy would be off by one byte per `İ` before the match.
        let body = "İİİİ İstanbul — État: OPÉRATIONNEL, Status: DOWN for maintenance";
        assert_eq!(
            matched(&rule("status: down", false, true), body),
            Some("Status: DOWN")
        );
        assert_eq!(
            matched(&rule("état: opérationnel", false, true), body),
            Some("État: OPÉRATIONNEL")
        );
        assert_eq!(
            matched(&rule("status: (up|down)", true, true), body),
            Some("Status: DOWN")
        );
        assert_eq!(matched(&rule("status: down", false, false), body), None);
        // A keyword is literal text, even with regex metacharacters.
        assert_eq!(
            matched(&rule("(v1.2)", false, true), "release (V1.2) out"),
            Some("(V1.2)")
        );
        assert_eq!(matched(&rule("(v1.2)", false, true), "release v1x2"), None);
        let (s, e) = rule("maintenance", false, true)
            .find(body)
            .unwrap()
            .unwrap();
        assert_eq!(around(body, s, e), "L, Status: DOWN for maintenance");
    }

    #[test]
    fn long_keywords_are_shortened_in_messages() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(61);
        assert_eq!(shorten(&long), format!("{}…", "é".repeat(60)));
        assert_eq!(shorten(&"x".repeat(60)), "x".repeat(60));
    }
}
