//! Property-based fuzzing of manifest decoding and validation (issue 17, item 12): random
//! YAML documents built from the ten kinds' field names (anchors and aliases, deep
//! nesting, long strings, odd Unicode, templates), mutations of the shipped examples and
//! fixtures, and alias bombs. For every input: no panic, an answer within a deadline
//! (each case runs on its own thread), and never more nodes built than the decoder's cap
//! (the memory bound: what is refused is refused before it is built). The case count is
//! fixed, so the run time is bounded.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use kubekuma_agent::catalog::bounds::MAX_NODES;
use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::cluster::catalog::file_docs;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

/// The time one input may take, generous enough never to flake on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(10);

/// Inputs per run (a fixed number: the run time is bounded).
const CASES: u32 = 1000;

const KINDS: &[&str] = &[
    "Monitor",
    "MonitorSet",
    "NotificationProvider",
    "NotificationPolicy",
    "StatusPage",
    "LocalUser",
    "ApiKey",
    "Silence",
    "MaintenanceWindow",
    "KubeKumaSettings",
    "Secret",
    "Monitr",
];

/// Field names of the ten kinds (and a few that are not).
const KEYS: &[&str] = &[
    "type",
    "target",
    "http",
    "url",
    "method",
    "headers",
    "body",
    "tcp",
    "host",
    "port",
    "dns",
    "domain",
    "ping",
    "push",
    "token",
    "keyword",
    "jsonQuery",
    "query",
    "websocket",
    "steam",
    "kubernetes",
    "docker",
    "container",
    "schedule",
    "intervalSeconds",
    "timeoutSeconds",
    "retries",
    "maxRetries",
    "successCriteria",
    "statusCodes",
    "maxLatencyMs",
    "alerting",
    "policyRef",
    "notifyOn",
    "tags",
    "annotations",
    "description",
    "enabled",
    "items",
    "template",
    "overrides",
    "labels",
    "name",
    "namespace",
    "slug",
    "title",
    "published",
    "content",
    "branding",
    "logoUrl",
    "groups",
    "monitors",
    "ref",
    "displayName",
    "badges",
    "slack",
    "webhookUrlSecretRef",
    "webhook",
    "bodyTemplate",
    "titleTemplate",
    "formatting",
    "routing",
    "providers",
    "dedupe",
    "key",
    "windowMinutes",
    "match",
    "matchLabels",
    "matchNames",
    "pattern",
    "regex",
    "triggers",
    "username",
    "passwordHashSecretRef",
    "role",
    "startsAt",
    "endsAt",
    "reason",
    "selector",
    "durationMinutes",
    "timezone",
    "scheduler",
    "minIntervalSeconds",
    "retention",
    "auth",
    "stringData",
    "data",
    "<<",
    "x",
    "",
];

/// Scalars worth trying: valid values, templates (runaway ones too), odd Unicode.
const WORDS: &[&str] = &[
    "tcp",
    "http",
    "dns",
    "push",
    "webhook",
    "slack",
    "email",
    "admin",
    "viewer",
    "https://example.com/health",
    "http://127.0.0.1:1/",
    "example.com",
    "prod",
    "default",
    "2024-01-01T00:00:00Z",
    "FREQ=WEEKLY;BYDAY=SU;BYHOUR=2",
    "0 3 * * *",
    "Europe/Berlin",
    "{{ .state | upper }}",
    "{{ monitorName }}",
    "{% if reason %}x{% endif %}",
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "{% for a in range(100000) %}xxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}",
    "{{ 'x' * 100000000 }}",
    "{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}",
    "${SECRET:s:k}",
    "^api-.*",
    "(unclosed",
    "\u{202E}evil",
    "zero\u{200B}width",
    "bell\u{7}",
    "\u{FEFF}",
    "ünïcødé ✓ 🚀",
    "",
    " ",
    "~",
    "null",
    "yes",
    "0x1F",
    "1e400",
];

/// Characters for random strings.
const CHARS: &[char] = &[
    'a',
    'b',
    'z',
    'A',
    '0',
    '9',
    '-',
    '.',
    '/',
    ':',
    ' ',
    '{',
    '}',
    '%',
    '*',
    '&',
    '!',
    '\'',
    '"',
    '\\',
    '#',
    '\n',
    '\t',
    '\u{0}',
    '\u{7f}',
    '\u{85}',
    '\u{202A}',
    '\u{2066}',
    '\u{200D}',
    '\u{2028}',
    'é',
    'ß',
    '中',
    '🙂',
    '\u{10FFFF}',
];

/// A generated YAML node.
#[derive(Clone, Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// `*aN`, N taken modulo the anchors defined so far.
    Alias(u8),
    List(bool, Vec<Node>),
    Map(bool, Vec<(String, Node)>),
}

fn scalar() -> impl Strategy<Value = Node> {
    prop_oneof![
        Just(Node::Null),
        any::<bool>().prop_map(Node::Bool),
        any::<i64>().prop_map(Node::Int),
        any::<f64>().prop_map(Node::Float),
        prop::sample::select(WORDS).prop_map(|w| Node::Str(w.to_string())),
        prop::collection::vec(prop::sample::select(CHARS), 0..24)
            .prop_map(|c| Node::Str(c.into_iter().collect())),
        (1usize..20_000).prop_map(|n| Node::Str("n".repeat(n))),
        any::<u8>().prop_map(Node::Alias),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => prop::collection::vec(prop::sample::select(CHARS), 0..8)
            .prop_map(|c| c.into_iter().collect()),
    ]
}

fn tree() -> impl Strategy<Value = Node> {
    scalar().prop_recursive(6, 200, 8, |inner| {
        prop_oneof![
            (any::<bool>(), prop::collection::vec(inner.clone(), 0..8))
                .prop_map(|(a, items)| Node::List(a, items)),
            (any::<bool>(), prop::collection::vec((key(), inner), 0..8))
                .prop_map(|(a, entries)| Node::Map(a, entries)),
        ]
    })
}

/// Writes `node` as flow YAML, defining anchors `&aN` and using aliases as it goes.
fn emit(node: &Node, anchors: &mut u32, out: &mut String) {
    fn anchor(on: bool, anchors: &mut u32, out: &mut String) {
        if on {
            let _ = write!(out, "&a{anchors} ");
            *anchors += 1;
        }
    }
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Node::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        Node::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
        Node::Alias(n) if *anchors > 0 => {
            let _ = write!(out, "*a{}", u32::from(*n) % *anchors);
        }
        Node::Alias(_) => out.push('~'),
        Node::List(a, items) => {
            anchor(*a, anchors, out);
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                emit(item, anchors, out);
            }
            out.push(']');
        }
        Node::Map(a, entries) => {
            anchor(*a, anchors, out);
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(": ");
                emit(v, anchors, out);
            }
            out.push('}');
        }
    }
}

/// One to three documents of the ten kinds with random specs.
fn documents() -> impl Strategy<Value = String> {
    let doc = (
        prop::sample::select(KINDS),
        prop::sample::select(&["monitoring.kubekuma.io/v1", "v1", "x/v2"][..]),
        prop::sample::select(&["web", "db", "Bad_Name", ""][..]),
        tree(),
        tree(),
    );
    prop::collection::vec(doc, 1..4).prop_map(|docs| {
        let mut out = String::new();
        let mut anchors = 0;
        for (kind, api, name, spec, extra) in docs {
            let _ = write!(
                out,
                "---\napiVersion: {api}\nkind: {kind}\nmetadata: {{name: \"{name}\", namespace: prod}}\nspec: "
            );
            emit(&spec, &mut anchors, &mut out);
            out.push_str("\nextra: ");
            emit(&extra, &mut anchors, &mut out);
            out.push('\n');
        }
        out
    })
}

/// The example manifests and fixtures shipped with the repository.
fn corpus() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        root.join("../deploy/examples"),
        root.join("tests/fixtures/valid"),
        root.join("tests/fixtures/compat"),
        root.join("tests/fixtures/invalid"),
    ] {
        collect(&dir, &mut files);
    }
    files.sort();
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// Snippets inserted by mutations.
const SNIPPETS: &[&str] = &[
    "&a ",
    "*a",
    "- ",
    ": ",
    "{",
    "[",
    "]",
    "}",
    "'",
    "\"",
    "\n",
    "\n  ",
    "\n    - ",
    "---\n",
    "{{",
    "%}",
    "!!binary ",
    "!tag ",
    "<<: *a\n",
    "\u{202E}",
    "\u{200B}",
    "\t",
    "#",
    "? ",
    "|\n  ",
    ">-\n  ",
    "0o17",
    "&b [*a, *a, *a, *a, *a, *a, *a, *a]",
];

/// A mutation: at a relative position (0..1000 of the text), one edit.
#[derive(Clone, Debug)]
enum Edit {
    Delete(u16, u16),
    Duplicate(u16, u16),
    Insert(u16, &'static str),
    Repeat(u16, u16, u8),
}

fn mutated(corpus: &'static [String]) -> impl Strategy<Value = String> {
    let edit = prop_oneof![
        (0u16..1000, 1u16..80).prop_map(|(a, n)| Edit::Delete(a, n)),
        (0u16..1000, 1u16..200).prop_map(|(a, n)| Edit::Duplicate(a, n)),
        (0u16..1000, prop::sample::select(SNIPPETS)).prop_map(|(a, s)| Edit::Insert(a, s)),
        (0u16..1000, 1u16..40, 2u8..50).prop_map(|(a, n, k)| Edit::Repeat(a, n, k)),
    ];
    (
        prop::sample::select(corpus),
        prop::collection::vec(edit, 1..6),
    )
        .prop_map(|(text, edits)| {
            let mut t = text.clone();
            for e in edits {
                let at = |rel: u16, t: &str| {
                    let mut i = t.len() * usize::from(rel) / 1000;
                    while !t.is_char_boundary(i) {
                        i -= 1;
                    }
                    i
                };
                let span = |a: usize, n: u16, t: &str| {
                    let mut end = (a + usize::from(n)).min(t.len());
                    while !t.is_char_boundary(end) {
                        end -= 1;
                    }
                    end
                };
                match e {
                    Edit::Delete(a, n) => {
                        let s = at(a, &t);
                        let end = span(s, n, &t);
                        t.replace_range(s..end, "");
                    }
                    Edit::Duplicate(a, n) => {
                        let s = at(a, &t);
                        let end = span(s, n, &t);
                        let piece = t[s..end].to_string();
                        t.insert_str(end, &piece);
                    }
                    Edit::Insert(a, snippet) => {
                        let s = at(a, &t);
                        t.insert_str(s, snippet);
                    }
                    Edit::Repeat(a, n, k) => {
                        let s = at(a, &t);
                        let end = span(s, n, &t);
                        let piece = t[s..end].repeat(usize::from(k));
                        t.replace_range(s..end, &piece);
                    }
                }
            }
            t
        })
}

/// Alias bombs of random shape, some padded past serde_yaml_ng's repetition limit.
fn bombs() -> impl Strategy<Value = String> {
    (2usize..12, 2usize..12, 0usize..60_000, any::<bool>()).prop_map(
        |(levels, width, pad, nested_in_spec)| {
            let mut y = String::new();
            if nested_in_spec {
                y.push_str("apiVersion: monitoring.kubekuma.io/v1\nkind: Monitor\nmetadata: {name: b}\nspec:\n");
            }
            let indent = if nested_in_spec { "  " } else { "" };
            let _ = writeln!(y, "{indent}a0: &a0 [{}]", vec!["x"; width].join(", "));
            for l in 1..levels {
                let prev = format!("*a{}", l - 1);
                let _ = writeln!(
                    y,
                    "{indent}a{l}: &a{l} [{}]",
                    vec![prev.as_str(); width].join(", ")
                );
            }
            let _ = writeln!(y, "{indent}pad: [{}0]", "0,".repeat(pad / 2));
            y
        },
    )
}

/// Nodes of a built value (keys included), as the decoder counts them.
fn nodes(v: &Value) -> usize {
    let mut n = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        n += 1;
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                n += map.len();
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    n
}

/// Decodes and validates `text` as a file and its documents as kube objects, on its own
/// thread; the nodes built, or why the case failed.
fn run_case(text: String) -> Result<usize, TestCaseError> {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("fuzz-case".into())
        .spawn(move || {
            let docs = parse_text("fuzz.yaml", &text);
            let built_nodes: usize = docs.docs.iter().map(|d| nodes(&d.value)).sum();
            let built = build(std::slice::from_ref(&docs), None);
            // Every finding renders (names file and document).
            for f in &built.findings {
                let _ = f.to_string();
            }
            let values: Vec<Value> = docs.docs.iter().map(|d| d.value.clone()).collect();
            let _ = build(&file_docs(&values), None);
            let _ = tx.send(built_nodes);
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    match rx.recv_timeout(DEADLINE) {
        Ok(n) => {
            let _ = worker.join();
            Ok(n)
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(TestCaseError::fail(format!(
            "still running after {DEADLINE:?}"
        ))),
        // The sender was dropped without a result: the case panicked.
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => Err(TestCaseError::fail(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ))),
            Ok(()) => Err(TestCaseError::fail("no result")),
        },
    }
}

#[test]
fn decoding_and_validation_hold_for_any_input() {
    let corpus: &'static [String] = Box::leak(corpus().into_boxed_slice());
    assert!(corpus.len() >= 5, "the examples and fixtures are read");
    let strategy = prop_oneof![
        3 => documents(),
        3 => mutated(corpus),
        1 => bombs(),
    ];
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        // A failing case is shown shrunk a little, not at the cost of a long run.
        max_shrink_iters: 32,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    runner
        .run(&strategy, |text| {
            let built = run_case(text)?;
            prop_assert!(
                built <= MAX_NODES,
                "{built} nodes built, more than the cap {MAX_NODES}"
            );
            Ok(())
        })
        .unwrap();
}
