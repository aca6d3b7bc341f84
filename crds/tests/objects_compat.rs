//! Payloads written by agents of layout v1 must keep parsing: these samples were written
//! by a real agent (`kubekuma up` on the demo) and are never edited. Within a layout
//! version, changes to `crds/src/objects.rs` must be additive.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubekuma_crds::objects::{
    AgentCatalog, AgentState, DailyMonth, HourlyDay, IncidentMonth, LAYOUT,
};

fn sample(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/objects-v1/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn v1_samples_still_parse() {
    let c: AgentCatalog = serde_json::from_str(&sample("catalog.json")).unwrap();
    assert_eq!(c.layout, LAYOUT);
    assert_eq!(c.pages[0].groups.len(), 2);
    let s: AgentState = serde_json::from_str(&sample("state.json")).unwrap();
    assert!(s.monitors.contains_key("demo/kubekuma-health"));
    let h: HourlyDay = serde_json::from_str(&sample("hourly.json")).unwrap();
    assert!(!h.monitors.is_empty());
    let d: DailyMonth = serde_json::from_str(&sample("daily.json")).unwrap();
    assert_eq!(d.month, "2026-11");
    let i: IncidentMonth = serde_json::from_str(&sample("incidents.json")).unwrap();
    assert_eq!(i.layout, LAYOUT);
}

#[test]
fn unknown_fields_from_newer_agents_are_ignored() {
    let mut v: serde_json::Value = serde_json::from_str(&sample("state.json")).unwrap();
    v["someFutureField"] = serde_json::json!({"x": 1});
    let s: AgentState = serde_json::from_value(v).unwrap();
    assert_eq!(s.layout, LAYOUT);
}

#[test]
fn keys_are_stable() {
    use kubekuma_crds::objects::keys;
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
    assert_eq!(keys::catalog("a"), "v1/agents/a/catalog.json");
    assert_eq!(keys::state("a"), "v1/agents/a/state.json");
    assert_eq!(keys::hourly("a", day), "v1/agents/a/hourly/2026-11-26.json");
    assert_eq!(keys::daily("a", 2026, 11), "v1/agents/a/daily/2026-11.json");
    assert_eq!(
        keys::incidents("a", 2026, 11),
        "v1/agents/a/incidents/2026-11.json"
    );
}
