//! A fixed set of agent objects (two agents, one published and one unpublished page,
//! open and closed incidents, maintenance, 90 days of rollups) and helpers to build it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{BuildOptions, Builder, RenderOptions, Theme};
use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use kubekuma_crds::store::ObjectTarget;
use object_store::memory::InMemory;
use serde_json::{Value, json};

/// The fixed clock of every fixture.
pub fn now() -> DateTime<Utc> {
    "2026-11-26T12:00:00Z".parse().unwrap()
}

/// A string a hostile manifest author might use.
pub const XSS: &str = "<script>alert(1)</script>";

/// An empty in-memory store.
pub fn memory() -> ObjectTarget {
    ObjectTarget::new(Arc::new(InMemory::new()), "").unwrap()
}

/// Write a JSON object.
pub async fn put(t: &ObjectTarget, key: &str, v: &Value) {
    t.put(key, Bytes::from(serde_json::to_vec(v).unwrap()))
        .await
        .unwrap();
}

fn rollup(up: u32, down: u32, avg: f64) -> Value {
    json!({"up": up, "down": down, "latencyMin": avg / 2.0, "latencyAvg": avg, "latencyP95": avg * 1.5, "latencyMax": avg * 2.0})
}

/// The catalog of agent `eu-1`.
pub fn catalog(agent: &str) -> Value {
    json!({
        "layout": "v1", "agentId": agent, "generatedAt": "2026-11-26T11:00:00Z",
        "pages": [
            {
                "namespace": "production", "name": "public-status", "slug": "status",
                "title": "Acme <Status> & Co", "published": true,
                "description": format!("Real-time status {XSS}"),
                "branding": {"theme": {"primaryColor": "#3B82F6", "darkMode": true}},
                "badges": "all",
                "groups": [
                    {"name": "API Services", "description": "Core API endpoints", "monitors": [
                        {"namespace": "production", "name": "api-health", "displayName": "Public API"},
                        {"namespace": "production", "name": "api-v2-health"}
                    ]},
                    {"name": format!("Web {XSS}"), "monitors": [
                        {"namespace": "production", "name": "web-frontend", "displayName": XSS}
                    ]}
                ]
            },
            {
                "namespace": "production", "name": "internal", "slug": "internal",
                "title": "Internal", "published": false, "groups": [
                    {"name": "Private", "monitors": [{"namespace": "production", "name": "private-db"}]}
                ]
            }
        ],
        "monitors": [
            {"namespace": "production", "name": "api-health", "type": "http", "description": "The public REST API", "intervalSeconds": 30},
            {"namespace": "production", "name": "api-v2-health", "type": "http", "intervalSeconds": 60},
            {"namespace": "production", "name": "web-frontend", "type": "keyword", "description": XSS, "intervalSeconds": 60},
            {"namespace": "production", "name": "private-db", "type": "tcp", "description": "private database", "intervalSeconds": 60}
        ],
        "maintenance": [
            {"namespace": "production", "name": "web-upgrade", "description": format!("Upgrading the web tier {XSS}"),
             "activeSince": "2026-11-26T11:30:00Z", "durationMinutes": 60, "monitors": ["production/web-frontend"]},
            {"namespace": "production", "name": "db-patching", "nextStart": "2026-11-28T02:00:00Z",
             "durationMinutes": 120, "monitors": ["production/private-db"]}
        ],
        "silences": [
            {"namespace": "production", "name": "deploy-freeze", "reason": format!("Deploying v2 {XSS}"),
             "startsAt": "2026-11-26T11:00:00Z", "endsAt": "2026-11-26T14:00:00Z", "monitors": ["production/api-health"]},
            {"namespace": "production", "name": "db-silence", "reason": "private database work",
             "startsAt": "2026-11-26T11:00:00Z", "endsAt": "2026-11-26T14:00:00Z", "monitors": ["production/private-db"]}
        ]
    })
}

/// State of agent `agent` at the fixed clock.
pub fn state(agent: &str, api_down: bool) -> Value {
    let recent: Vec<Value> = (0..144i32)
        .filter(|i| i % 7 != 3) // a few gaps
        .map(|i| {
            let at = now() - Duration::minutes(i64::from(10 * (144 - i)));
            json!({"at": at, "ms": 40.0 + f64::from(i % 12) * 5.0})
        })
        .collect();
    json!({
        "layout": "v1", "agentId": agent, "generatedAt": "2026-11-26T11:59:30Z",
        "monitors": {
            "production/api-health": {"state": if api_down {"down"} else {"up"}, "since": "2026-11-20T08:00:00Z",
                "checkedAt": "2026-11-26T11:59:20Z", "latencyMs": 45.4, "certDaysLeft": 42, "recent": recent,
                "reason": if api_down {json!("timeout")} else {Value::Null}},
            "production/api-v2-health": {"state": "down", "since": "2026-11-26T11:00:00Z",
                "checkedAt": "2026-11-26T11:59:00Z", "latencyMs": 10000.0, "reason": "timeout"},
            "production/web-frontend": {"state": "up", "since": "2026-11-01T00:00:00Z",
                "checkedAt": "2026-11-26T11:59:10Z", "latencyMs": 120.0, "maintenance": true},
            "production/private-db": {"state": "up", "checkedAt": "2026-11-26T11:59:10Z", "latencyMs": 2.0}
        }
    })
}

/// Hourly rollups of one day.
pub fn hourly(agent: &str, day: NaiveDate, hours: std::ops::Range<u8>) -> Value {
    let mut api = BTreeMap::new();
    let mut v2 = BTreeMap::new();
    for h in hours {
        api.insert(h.to_string(), rollup(120, 0, 45.0));
        v2.insert(
            h.to_string(),
            if h >= 11 {
                rollup(0, 60, 10000.0)
            } else {
                rollup(60, 0, 80.0)
            },
        );
    }
    json!({"layout": "v1", "agentId": agent, "day": day, "monitors": {
        "production/api-health": api, "production/api-v2-health": v2}})
}

/// Daily rollups of one month, days `from..=to`.
pub fn daily(agent: &str, year: i32, month: u32, from: u32, to: u32) -> Value {
    let mut api = BTreeMap::new();
    let mut v2 = BTreeMap::new();
    let mut web = BTreeMap::new();
    for d in from..=to {
        api.insert(
            d.to_string(),
            rollup(2880, if d == 20 { 3 } else { 0 }, 45.0),
        );
        v2.insert(
            d.to_string(),
            rollup(1440 - (d % 5) * 20, (d % 5) * 20, 80.0),
        );
        web.insert(
            d.to_string(),
            if d == 20 {
                rollup(1395, 45, 120.0)
            } else {
                rollup(1440, 0, 120.0)
            },
        );
    }
    json!({"layout": "v1", "agentId": agent, "month": format!("{year:04}-{month:02}"), "monitors": {
        "production/api-health": api, "production/api-v2-health": v2, "production/web-frontend": web,
        "production/private-db": {"1": rollup(10, 0, 1.0)}}})
}

/// Incidents of November.
pub fn incidents(agent: &str) -> Value {
    json!({"layout": "v1", "agentId": agent, "month": "2026-11", "incidents": [
        {"id": 7, "namespace": "production", "name": "web-frontend", "startedAt": "2026-11-20T14:00:00Z",
         "endedAt": "2026-11-20T14:45:00Z", "durationSeconds": 2700, "reason": "status",
         "updates": [{"at": "2026-11-20T14:10:00Z", "message": format!("Investigating {XSS}")},
                     {"at": "2026-11-20T14:45:00Z", "message": "Fixed a bad deploy"}]},
        {"id": 8, "namespace": "production", "name": "api-v2-health", "startedAt": "2026-11-26T11:00:00Z",
         "reason": "timeout", "updates": [{"at": "2026-11-26T11:20:00Z", "message": "We are looking into slow responses"}]},
        {"id": 9, "namespace": "production", "name": "private-db", "startedAt": "2026-11-25T01:00:00Z",
         "endedAt": "2026-11-25T01:05:00Z", "reason": "connect"}
    ]})
}

/// Write the whole fixture for one agent.
pub async fn write_agent(t: &ObjectTarget, agent: &str, api_down: bool) {
    let p = format!("v1/agents/{agent}/");
    put(t, &format!("{p}catalog.json"), &catalog(agent)).await;
    put(t, &format!("{p}state.json"), &state(agent, api_down)).await;
    let today = now().date_naive();
    let yesterday = today - Duration::days(1);
    put(
        t,
        &format!("{p}hourly/{yesterday}.json"),
        &hourly(agent, yesterday, 0..24),
    )
    .await;
    put(
        t,
        &format!("{p}hourly/{today}.json"),
        &hourly(agent, today, 0..12),
    )
    .await;
    put(
        t,
        &format!("{p}daily/2026-11.json"),
        &daily(agent, 2026, 11, 1, 26),
    )
    .await;
    put(
        t,
        &format!("{p}daily/2026-10.json"),
        &daily(agent, 2026, 10, 1, 31),
    )
    .await;
    put(
        t,
        &format!("{p}daily/2026-09.json"),
        &daily(agent, 2026, 9, 15, 30),
    )
    .await;
    put(t, &format!("{p}incidents/2026-11.json"), &incidents(agent)).await;
}

/// Build options with the fixed clock.
pub fn options() -> BuildOptions {
    BuildOptions {
        render: RenderOptions {
            base_url: "https://status.example.com/".into(),
            stale_after_seconds: 900,
            png_badges: true,
        },
        now: Some(now()),
        fetch_branding: false,
    }
}

/// A builder from `source` to `out` with the default theme and the fixed clock.
pub fn builder(source: &ObjectTarget, out: &ObjectTarget) -> Builder {
    Builder::new(
        source.clone(),
        out.clone(),
        Theme::default_theme().unwrap(),
        options(),
    )
    .unwrap()
}

/// Every file of an output, by key.
pub async fn files(out: &ObjectTarget) -> BTreeMap<String, Bytes> {
    let mut m = BTreeMap::new();
    for k in out.list("").await.unwrap() {
        let b = out.get(&k).await.unwrap().unwrap();
        m.insert(k, b);
    }
    m
}

/// A file as text.
pub fn text(files: &BTreeMap<String, Bytes>, key: &str) -> String {
    String::from_utf8(
        files
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing"))
            .to_vec(),
    )
    .unwrap()
}
