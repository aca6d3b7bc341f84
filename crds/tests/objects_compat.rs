//! Payloads written by agents of layout v1 must keep parsing: these samples were written
//! by a real agent (`kubekuma up` on the demo) and are never edited. Within a layout
//! version, changes to `crds/src/objects.rs` must be additive.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubekuma_crds::objects::{
    AgentCatalog, AgentResults, AgentState, DailyMonth, HourlyDay, IncidentMonth, LAYOUT,
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

/// Objects of agents from before locations have none; the reader sees `None`.
#[test]
fn objects_without_a_location_still_parse() {
    let c: AgentCatalog = serde_json::from_str(&sample("catalog.json")).unwrap();
    assert_eq!(c.location, None);
    let s: AgentState = serde_json::from_str(&sample("state.json")).unwrap();
    assert_eq!(s.location, None);
}

/// `results.json` (added to layout v1 with locations; the sample is the projection of the
/// `state.json` sample an agent at `home` writes) parses, and is exactly what
/// `AgentResults::of_state` makes of that state.
#[test]
fn results_sample_parses_and_is_the_projection_of_the_state() {
    let r: AgentResults = serde_json::from_str(&sample("results.json")).unwrap();
    assert_eq!((r.layout.as_str(), r.location.as_str()), (LAYOUT, "home"));
    let down = &r.monitors["demo/example-com"];
    assert_eq!(down.state, kubekuma_crds::MonitorState::Down);
    assert!(down.reason.is_some() && down.checked_at.is_some());
    let s: AgentState = serde_json::from_str(&sample("state.json")).unwrap();
    assert_eq!(AgentResults::of_state(&s, "home"), r);
    // Small: no latency series, no maintenance flag, no messages.
    let text = serde_json::to_string(&r).unwrap();
    assert!(
        !text.contains("recent") && !text.contains("maintenance"),
        "{text}"
    );
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
    assert_eq!(keys::results("a"), "v1/agents/a/results.json");
    assert_eq!(keys::hourly("a", day), "v1/agents/a/hourly/2026-11-26.json");
    assert_eq!(keys::daily("a", 2026, 11), "v1/agents/a/daily/2026-11.json");
    assert_eq!(
        keys::incidents("a", 2026, 11),
        "v1/agents/a/incidents/2026-11.json"
    );
}
