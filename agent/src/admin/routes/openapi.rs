//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 document built from [`super::ROUTES`], so
//! every route is described (parameters, request bodies, security, responses) and no
//! undescribed route exists.

use serde_json::{Map, Value, json};

use super::{Guard, ROUTES, RouteDef, RouteId, Verb};

/// Query parameters of a route: (name, JSON schema type, description).
fn query_params(id: RouteId) -> &'static [(&'static str, &'static str, &'static str)] {
    match id {
        RouteId::Monitors => &[
            ("namespace", "string", "only this namespace"),
            (
                "label",
                "string",
                "k=v pairs, comma-separated; all must match",
            ),
            ("type", "string", "monitor type (http, tcp, …)"),
            ("state", "string", "up, down, pending, flapping or paused"),
            ("limit", "integer", "page size (default 50, at most 500)"),
            ("offset", "integer", "items to skip"),
        ],
        RouteId::Monitor => &[("limit", "integer", "heartbeats (default 100, at most 1000)")],
        RouteId::Incidents => &[
            ("monitorId", "string", "namespace/name"),
            ("state", "string", "open or resolved"),
            ("since", "string", "started at or after (RFC 3339)"),
            ("until", "string", "started before (RFC 3339)"),
            ("limit", "integer", "page size (default 50, at most 500)"),
            ("offset", "integer", "items to skip"),
        ],
        RouteId::Deliveries => &[
            ("provider", "string", "namespace/name of one provider"),
            ("limit", "integer", "page size (default 50, at most 500)"),
        ],
        RouteId::Audit => &[
            (
                "actor",
                "string",
                "user:<namespace/name> or apikey:<namespace/name>",
            ),
            (
                "action",
                "string",
                "event type (acknowledged, login, test_sent, …)",
            ),
            ("result", "string", "ok or failed (…_failed events)"),
            ("limit", "integer", "page size (default 50, at most 500)"),
            ("offset", "integer", "items to skip"),
        ],
        RouteId::Push => &[
            ("status", "string", "up or down (default up)"),
            ("msg", "string", "message"),
            ("ping", "number", "latency in ms"),
        ],
        RouteId::Badge => &[(
            "kind",
            "string",
            "status (default), uptime-24h, uptime-7d, uptime-30d, uptime-90d, response-time, cert",
        )],
        RouteId::Uptime => &[("days", "integer", "1 to 365 (default 30)")],
        RouteId::OidcLogin => &[(
            "next",
            "string",
            "a path on this agent to return to after the login (default /)",
        )],
        RouteId::OidcCallback => &[
            ("code", "string", "the provider's authorization code"),
            ("state", "string", "must match the login in progress"),
            ("error", "string", "the provider's refusal"),
        ],
        RouteId::Login
        | RouteId::Logout
        | RouteId::Me
        | RouteId::IncidentAcknowledge
        | RouteId::IncidentUpdate
        | RouteId::IncidentResolve
        | RouteId::Silences
        | RouteId::SilenceCreate
        | RouteId::SilenceExpire
        | RouteId::ProviderTest
        | RouteId::OpenApi
        | RouteId::Metrics
        | RouteId::Health
        | RouteId::Ready
        | RouteId::StatusPage => &[],
    }
}

/// The JSON request body of a route, if it takes one.
fn request_body(id: RouteId) -> Option<Value> {
    let schema = match id {
        RouteId::Login => json!({
            "type": "object", "required": ["username", "password"],
            "properties": {"username": {"type": "string"}, "password": {"type": "string"}, "totp": {"type": "string"}},
        }),
        RouteId::IncidentUpdate => json!({
            "type": "object", "required": ["message"], "additionalProperties": false,
            "properties": {"message": {"type": "string", "maxLength": super::incidents::MAX_UPDATE_CHARS}},
        }),
        RouteId::SilenceCreate => json!({
            "type": "object", "required": ["namespace"], "additionalProperties": false,
            "properties": {
                "namespace": {"type": "string"},
                "name": {"type": "string", "description": "generated when absent"},
                "startsAt": {"type": "string", "format": "date-time", "description": "default now"},
                "endsAt": {"type": "string", "format": "date-time"},
                "durationMinutes": {"type": "integer", "minimum": 1},
                "reason": {"type": "string"},
                "selector": {"type": "object", "description": "matchNamespaces, matchLabels, matchTags, matchNames"},
            },
        }),
        RouteId::ProviderTest => {
            let schema = json!({
                "type": "object", "additionalProperties": false,
                "properties": {
                    "title": {"type": "string", "maxLength": super::notifications::MAX_TEST_CHARS},
                    "message": {"type": "string", "maxLength": super::notifications::MAX_TEST_CHARS},
                },
            });
            return Some(
                json!({"required": false, "content": {"application/json": {"schema": schema}}}),
            );
        }
        _ => return None,
    };
    Some(json!({"required": true, "content": {"application/json": {"schema": schema}}}))
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

fn success(r: &RouteDef) -> (&'static str, Value) {
    let json_ok = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"type": ["object", "array"]}}}});
    match r.id {
        RouteId::Metrics => (
            "200",
            json!({"description": "metrics", "content": {crate::metrics::CONTENT_TYPE: {"schema": {"type": "string"}}}}),
        ),
        RouteId::Badge => (
            "200",
            json!({"description": "the badge", "content": {"image/svg+xml": {"schema": {"type": "string"}}}}),
        ),
        RouteId::IncidentUpdate | RouteId::SilenceCreate => ("201", json_ok("created")),
        _ => ("200", json_ok("success")),
    }
}

fn operation(r: &RouteDef) -> Value {
    let mut params: Vec<Value> = r
        .pattern
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    params.extend(query_params(r.id).iter().map(|(name, ty, d)| {
        json!({"name": name, "in": "query", "required": false, "description": d, "schema": {"type": ty}})
    }));
    let mut responses = Map::new();
    let (code, ok) = success(r);
    responses.insert(code.into(), ok);
    responses.insert("400".into(), error_response("bad request"));
    responses.insert("404".into(), error_response("not found"));
    if r.method != Verb::Get {
        responses.insert("413".into(), error_response("body larger than 64 KiB"));
    }
    if matches!(
        r.id,
        RouteId::IncidentResolve | RouteId::SilenceCreate | RouteId::SilenceExpire
    ) {
        responses.insert("409".into(), error_response("conflict"));
    }
    if r.id == RouteId::ProviderTest {
        responses.insert(
            "409".into(),
            error_response("invalid_provider: the provider did not pass validation"),
        );
        responses.insert(
            "502".into(),
            error_response("send_failed: the service refused or could not be reached"),
        );
    }
    // Why a 403 may come, in the order they are checked.
    let mut forbidden: Vec<&str> = Vec::new();
    if (r.guard != Guard::Public && r.method != Verb::Get) || r.id == RouteId::Login {
        forbidden.push("auth_disabled: spec.auth.mode is disabled");
    }
    if r.id.changes_desired_state() {
        forbidden.push("gitops_read_only: spec.mode.gitOpsReadOnly is true");
    }
    let mut op = Map::new();
    op.insert("summary".into(), json!(r.summary));
    op.insert(
        "x-kubekuma-changes-desired-state".into(),
        json!(r.id.changes_desired_state()),
    );
    op.insert(
        "operationId".into(),
        json!(format!("{:?}{}", r.id, r.method.as_str())),
    );
    op.insert("parameters".into(), Value::Array(params));
    if let Some(body) = request_body(r.id) {
        op.insert("requestBody".into(), body);
    }
    match r.guard {
        Guard::Public => {
            op.insert("security".into(), json!([]));
            if r.id == RouteId::Login {
                responses.insert("401".into(), error_response("wrong credentials"));
                responses.insert("429".into(), error_response("too many attempts"));
            }
            if r.id == RouteId::Metrics {
                // Anonymous (aggregate series) unless publicEndpoints.metrics.requireAuth;
                // credentials, when sent (cookie or bearer), must be valid and read settings.
                responses.insert(
                    "401".into(),
                    error_response("invalid credentials, or none while requireAuth is set"),
                );
                responses.insert("403".into(), error_response("the role lacks access"));
            }
        }
        Guard::Principal | Guard::Role(..) => {
            op.insert(
                "security".into(),
                json!([{"cookieAuth": []}, {"bearerAuth": []}]),
            );
            responses.insert("401".into(), error_response("no valid credentials"));
            if let Guard::Role(area, access) = r.guard {
                forbidden.push("the role lacks access");
                op.insert(
                    "x-kubekuma-access".into(),
                    json!({"area": format!("{area:?}"), "access": format!("{access:?}")}),
                );
            }
        }
    }
    if r.id == RouteId::Login {
        forbidden.push("local_login_disabled: spec.auth.local.enabled is false");
    }
    if !forbidden.is_empty() && !responses.contains_key("403") {
        responses.insert("403".into(), error_response(&forbidden.join("; ")));
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in ROUTES {
        let item = paths
            .entry(r.pattern.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(r.method.as_str().to_lowercase(), operation(r));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "KubeKuma agent API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Admin API, push endpoint, health, metrics and the dynamic twins of the static status site. Errors are {\"error\": {\"code\", \"message\"}} with stable codes. With KubeKumaSettings spec.mode.gitOpsReadOnly, operations marked x-kubekuma-changes-desired-state (creating and expiring silences) answer 403 gitops_read_only; acknowledging, updating and resolving incidents and push heartbeats stay allowed. With spec.auth.mode disabled, reads need no login (a viewer of every namespace) and login, logout and every other write answer 403 auth_disabled.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "token"},
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "a session JWT or an API key (kk_live_…, kk_test_…)"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }},
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_once() {
        let doc = document();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        let mut documented: Vec<(String, String)> = paths
            .iter()
            .flat_map(|(p, item)| {
                item.as_object()
                    .into_iter()
                    .flat_map(|m| m.keys())
                    .map(move |m| (m.to_uppercase(), p.clone()))
            })
            .collect();
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.as_str().to_string(), r.pattern.to_string()))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
    }
}
