//! The `jsonQuery` checker: an HTTP request (judged like `http`) whose JSON body is
//! queried with an RFC 9535 JSONPath; the first match is compared with the expected
//! value (equals, notEquals, ordering, contains) or only has to exist.

use kubekuma_crds::monitor::{JsonComparison, MonitorSpec};
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use serde_json::Value;
use serde_json_path::JsonPath;

use super::http::{self, HttpPlan, Passed, fetch_and_judge, scrub};
use super::{Attempt, CheckContext};
use crate::findings::Sink;

/// A `jsonQuery` monitor's request, parsed query and comparison, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonQueryPlan {
    /// The request, judged like `http`.
    http: HttpPlan,
    /// The query as written, for messages.
    query: String,
    /// The query, parsed.
    path: JsonPath,
    /// How the first match is compared (default: equals with `expected`, else exists).
    comparison: JsonComparison,
    /// The expected value (`null` when not given).
    expected: Value,
}

/// The plan of a `jsonQuery` monitor: `spec.target.jsonQuery` checked (the original
/// implementation's `target.http` alone is checked too, and lacks the query).
pub(crate) fn plan(
    namespace: &str,
    spec: &MonitorSpec,
    sink: &mut Sink<'_>,
) -> Option<JsonQueryPlan> {
    let t = &spec.target;
    let Some(j) = &t.json_query else {
        if let Some(h) = &t.http {
            http::rules(sink, "spec.target.http", h);
            sink.error("spec.target.jsonQuery.query", "required for type jsonQuery");
        }
        return None;
    };
    http::rules(sink, "spec.target.jsonQuery", &j.http);
    let path = match JsonPath::parse(&j.query) {
        Ok(p) => Some(p),
        Err(e) => {
            sink.error(
                "spec.target.jsonQuery.query",
                format!("invalid JSONPath (RFC 9535): {e}"),
            );
            None
        }
    };
    let cmp = j.comparison.unwrap_or(if j.expected.is_some() {
        JsonComparison::Equals
    } else {
        JsonComparison::Exists
    });
    match (cmp, &j.expected) {
        (JsonComparison::Exists, Some(_)) => sink.warn(
            "spec.target.jsonQuery.expected",
            "ignored: comparison exists only checks that the query matches",
        ),
        (JsonComparison::Exists, None) => {}
        (_, None) => sink.error(
            "spec.target.jsonQuery.expected",
            "required unless comparison is exists",
        ),
        (
            JsonComparison::LessThan
            | JsonComparison::LessThanOrEqual
            | JsonComparison::GreaterThan
            | JsonComparison::GreaterThanOrEqual,
            Some(v),
        ) if !v.is_number() && v.as_str().is_none_or(|s| s.trim().parse::<f64>().is_err()) => sink
            .error(
                "spec.target.jsonQuery.expected",
                format!(
                    "must be a number for an ordering comparison, got {}",
                    kubekuma_crds::compat::describe(v)
                ),
            ),
        _ => {}
    }
    Some(JsonQueryPlan {
        http: HttpPlan::new(namespace, &j.http, spec),
        query: j.query.clone(),
        path: path?,
        comparison: cmp,
        expected: j.expected.clone().unwrap_or(Value::Null),
    })
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Equal as JSON, or equal when written as text (`"200"` equals `200`).
fn loosely_equal(a: &Value, b: &Value) -> bool {
    a == b || (!a.is_object() && !a.is_array() && text(a) == text(b))
}

/// Shorten a found value for a message.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 100 {
        format!("{}…", s.chars().take(100).collect::<String>())
    } else {
        s
    }
}

/// Compare `found` with `expected`; `Err` says why it does not hold.
pub(crate) fn compare(cmp: JsonComparison, found: &Value, expected: &Value) -> Result<(), String> {
    let ok = match cmp {
        JsonComparison::Exists => true,
        JsonComparison::Equals => loosely_equal(found, expected),
        JsonComparison::NotEquals => !loosely_equal(found, expected),
        JsonComparison::LessThan
        | JsonComparison::LessThanOrEqual
        | JsonComparison::GreaterThan
        | JsonComparison::GreaterThanOrEqual => {
            let (Some(a), Some(b)) = (number(found), number(expected)) else {
                return Err(format!("found {}, which is not a number", shown(found)));
            };
            match cmp {
                JsonComparison::LessThan => a < b,
                JsonComparison::LessThanOrEqual => a <= b,
                JsonComparison::GreaterThan => a > b,
                _ => a >= b,
            }
        }
        JsonComparison::Contains => match found {
            Value::String(s) => s.contains(&text(expected)),
            Value::Array(items) => items.iter().any(|i| loosely_equal(i, expected)),
            _ => false,
        },
    };
    if ok {
        Ok(())
    } else {
        let name = serde_json::to_value(cmp)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Err(format!(
            "found {}, expected {name} {}",
            shown(found),
            shown(expected)
        ))
    }
}

/// Run one JSON query check.
pub(crate) async fn check(
    ctx: &CheckContext,
    plan: &JsonQueryPlan,
    attempt: &Attempt,
) -> CheckOutcome {
    let Passed {
        exchange,
        judged,
        secrets,
    } = match fetch_and_judge(ctx, &plan.http, attempt).await {
        Ok(p) => p,
        Err(down) => return down,
    };
    let down = |reason: FailureReason, message: String| {
        let mut o = CheckOutcome::down(attempt.elapsed_ms(), reason, message);
        o.cert = judged.cert.clone();
        o.metadata = judged.metadata.clone();
        scrub(o, &secrets)
    };
    let doc: Value = match serde_json::from_slice(&exchange.body) {
        Ok(v) => v,
        Err(e) => {
            let hint = if exchange.truncated {
                " (body truncated at maxBodyBytes)"
            } else {
                ""
            };
            return down(
                FailureReason::Body,
                format!("the body is not JSON: {e}{hint}"),
            );
        }
    };
    let nodes = plan.path.query(&doc).all();
    let Some(first) = nodes.first() else {
        return down(
            FailureReason::Assertion,
            format!("query {} matched nothing", plan.query),
        );
    };
    match compare(plan.comparison, first, &plan.expected) {
        Ok(()) => judged,
        Err(why) => down(
            FailureReason::Assertion,
            format!("query {}: {why}", plan.query),
        ),
    }
}
