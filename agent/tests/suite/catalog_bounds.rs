//! Hostile manifests (issue 17): alias-amplified YAML, oversized files and kube objects,
//! runaway templates, overlong and hidden-character texts. Each is refused with a finding
//! naming file, document and field, and the rest of the catalog still loads.

use kubekuma_agent::catalog::bounds::{MAX_FILE_BYTES, MAX_NODES};
use kubekuma_agent::catalog::decode::parse_text;
use kubekuma_agent::catalog::folder::{FolderCatalog, read_paths};
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::catalog::{Finding, Severity};
use serde_json::json;

const MONITOR: &str = "apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: db, namespace: prod}
spec: {type: tcp, target: {tcp: {host: db.internal, port: 5432}}}
";

/// An alias bomb: `levels` anchors, each a list of `width` aliases of the one before
/// (`a0` holds `width` scalars), padded with a long flat list so that serde_yaml_ng's own
/// repetition limit (100 × the document's events) is raised out of the way, up to
/// `bytes`.
fn alias_bomb(levels: usize, width: usize, bytes: usize) -> String {
    let mut yaml = format!("a0: &a0 [{}]\n", vec!["x"; width].join(", "));
    for l in 1..levels {
        let prev = format!("*a{}", l - 1);
        yaml.push_str(&format!(
            "a{l}: &a{l} [{}]\n",
            vec![prev.as_str(); width].join(", ")
        ));
    }
    yaml.push_str("pad: [");
    while yaml.len() < bytes - 2 {
        yaml.push_str("0,");
    }
    yaml.push_str("0]\n");
    yaml
}

fn errors(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(ToString::to_string)
        .collect()
}

/// Issue 17, item 3: the 40 KB and 72 KB files that took 5 s and 1.6 GB, or exhausted
/// memory, are refused after at most `MAX_NODES` nodes, naming the file and document;
/// the document before it and the other files still load.
#[test]
fn alias_amplified_yaml_is_refused_early() {
    for bytes in [40_000, 72_000] {
        let bomb = alias_bomb(9, 10, bytes);
        assert!(bomb.len() >= bytes - 2 && bomb.len() < bytes + 16);
        let text = format!("{MONITOR}---\n{bomb}");
        let docs = parse_text("bomb.yaml", &text);
        assert_eq!(docs.docs.len(), 1, "the monitor before the bomb is read");
        let e = docs.syntax_error.expect("refused");
        assert_eq!(
            e.to_string(),
            format!(
                "bomb.yaml doc 2: refused: more than {MAX_NODES} YAML nodes in the file with aliases expanded (each alias counts the whole node it repeats); split the file or use fewer aliases"
            )
        );
    }
    // Through a folder, beside a good file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-bomb.yaml"), alias_bomb(9, 10, 72_000)).unwrap();
    std::fs::write(dir.path().join("b-monitor.yaml"), MONITOR).unwrap();
    let built = build(&read_paths(&[dir.path().to_path_buf()]), None);
    assert_eq!(built.snapshot.monitors.len(), 1);
    let errs = errors(&built.findings);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("a-bomb.yaml doc 1: refused: more than"),
        "{errs:?}"
    );
}

/// Anchors used a reasonable number of times still work (within a document, as YAML
/// has them).
#[test]
fn ordinary_aliases_still_work() {
    let text = "apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {name: a, namespace: prod, labels: &l {team: core}}
spec:
  type: tcp
  tags: [&t core, edge]
  annotations: {owner: *t}
  target: {tcp: {host: db.internal, port: 5432}}
";
    let built = build(&[parse_text("m.yaml", text)], None);
    assert!(errors(&built.findings).is_empty(), "{:?}", built.findings);
    let m = built.snapshot.monitors.values().next().unwrap();
    assert_eq!(m.spec.annotations["owner"], "core");
}

/// Files over the size cap are not read (nor parsed); a previously good file that grows
/// past it keeps its resources' last good versions.
#[test]
fn oversized_files_are_refused_and_keep_their_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.yaml");
    std::fs::write(&file, MONITOR).unwrap();
    let mut catalog = FolderCatalog::new(vec![dir.path().to_path_buf()]);
    assert_eq!(catalog.load().snapshot.monitors.len(), 1);
    let mut big = MONITOR.to_string();
    big.push_str("# ");
    big.push_str(&"x".repeat(MAX_FILE_BYTES as usize));
    std::fs::write(&file, &big).unwrap();
    let built = catalog.load();
    assert_eq!(built.snapshot.monitors.len(), 1, "last good kept");
    let errs = errors(&built.findings);
    assert_eq!(
        errs,
        vec![format!(
            "{}: refused: larger than {MAX_FILE_BYTES} bytes ({} bytes)",
            file.display(),
            big.len()
        )]
    );
    // Too many documents.
    let many = "---\n{}\n".repeat(10_001);
    let docs = parse_text("many.yaml", &many);
    assert_eq!(
        docs.syntax_error.unwrap().message,
        "refused: more than 10000 YAML documents in one file"
    );
}

/// Kube objects arrive as JSON: the same size, node and depth bounds apply, and a refused
/// object keeps its last good version.
#[test]
fn oversized_kube_objects_are_refused() {
    use kubekuma_agent::cluster::catalog::file_docs;
    let good = json!({
        "apiVersion": "monitoring.kubekuma.io/v1", "kind": "Monitor",
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": {"type": "tcp", "target": {"tcp": {"host": "db.internal", "port": 5432}}}
    });
    let first = build(&file_docs(std::slice::from_ref(&good)), None);
    assert_eq!(first.snapshot.monitors.len(), 1);
    let mut huge = good.clone();
    huge["spec"]["annotations"] = json!({"x": vec!["y"; MAX_NODES]});
    let mut deep = good.clone();
    let mut nested = json!(1);
    for _ in 0..100 {
        nested = json!([nested]);
    }
    deep["spec"]["annotations"] = json!({ "x": nested });
    for (bad, want) in [
        (
            huge,
            "Monitor prod/db: refused: more than 250000 values and keys in one object",
        ),
        (
            deep,
            "Monitor prod/db: refused: nested more than 64 levels deep",
        ),
    ] {
        let built = build(&file_docs(&[bad]), Some(&first.last_good));
        assert_eq!(built.snapshot.monitors.len(), 1, "last good kept");
        let errs = errors(&built.findings);
        assert!(errs.iter().any(|e| e.starts_with(want)), "{errs:?}");
    }
}

/// Issue 17, item 2, in the catalog: templates over a limit make their resource invalid
/// with a finding naming the field; everything else loads.
#[test]
fn runaway_templates_are_refused_by_the_catalog() {
    let nested = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
    let text = format!(
        "{MONITOR}---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationPolicy
metadata: {{name: loops, namespace: prod}}
spec:
  routing:
    providers: [{{ref: {{name: hook}}}}]
    dedupe: {{key: \"{{{{ 'k' * 600 }}}}\"}}
  formatting: {{bodyTemplate: '{nested}'}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: NotificationProvider
metadata: {{name: hook, namespace: prod}}
spec: {{type: webhook, webhook: {{url: 'https://hooks.example.com/x'}}}}
"
    );
    let built = build(&[parse_text("m.yaml", &text)], None);
    let errs = errors(&built.findings);
    assert!(
        errs.contains(&"m.yaml doc 2 NotificationPolicy prod/loops: spec.formatting.bodyTemplate: template uses more than 50000 steps (minijinja fuel)".to_string()),
        "{errs:?}"
    );
    assert!(
        errs.contains(&"m.yaml doc 2 NotificationPolicy prod/loops: spec.routing.dedupe.key: template renders more than 512 bytes".to_string()),
        "{errs:?}"
    );
    assert_eq!(built.snapshot.monitors.len(), 1);
    assert_eq!(built.snapshot.providers.len(), 1);
    assert!(built.snapshot.policies.is_empty());
}

/// Issue 17, items 5 and 10: a display name of ~1,100 characters, an overlong
/// description and hidden characters in public text are refused, naming the field.
#[test]
fn public_texts_are_bounded_and_visible() {
    let long_name = "N".repeat(1100);
    let long_description = "d".repeat(4097);
    let page = format!(
        "{MONITOR}---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {{name: public, namespace: prod}}
spec:
  slug: public
  title: \"Status\\u202Epage\"
  groups:
    - name: \"Core\\u200B\"
      description: \"line one\\nline two\"
      monitors:
        - ref: {{name: db}}
          displayName: \"{long_name}\"
---
apiVersion: monitoring.kubekuma.io/v1
kind: StatusPage
metadata: {{name: other, namespace: prod}}
spec:
  slug: other
  title: Other
  content: {{description: \"{long_description}\"}}
---
apiVersion: monitoring.kubekuma.io/v1
kind: MaintenanceWindow
metadata: {{name: w, namespace: prod}}
spec:
  schedule: \"FREQ=WEEKLY;BYDAY=SU;BYHOUR=2\"
  durationMinutes: 60
  description: \"Upgrade\\u0007\"
"
    );
    let built = build(&[parse_text("p.yaml", &page)], None);
    let errs = errors(&built.findings);
    for want in [
        "p.yaml doc 2 StatusPage prod/public: spec.groups[0].monitors[0].displayName: must be at most 200 characters, got 1100",
        "p.yaml doc 3 StatusPage prod/other: spec.content.description: must be at most 4096 characters, got 4097",
        "p.yaml doc 2 StatusPage prod/public: spec.title: must not contain a bidirectional override or isolate (U+202E at character 7)",
        "p.yaml doc 2 StatusPage prod/public: spec.groups[0].name: must not contain a zero-width character (U+200B at character 5)",
        "p.yaml doc 4 MaintenanceWindow prod/w: spec.description: must not contain a control character (U+0007 at character 8)",
    ] {
        assert!(errs.iter().any(|e| e == want), "{want}\n{errs:#?}");
    }
    // Line breaks in a description are fine.
    assert!(
        !errs.iter().any(|e| e.contains("groups[0].description")),
        "{errs:#?}"
    );
    assert!(built.snapshot.status_pages.is_empty());
    assert_eq!(built.snapshot.monitors.len(), 1);
    // Any other string: bounded too (a URL here).
    let url = format!("https://example.com/{}", "x".repeat(3000));
    let text = format!(
        "apiVersion: monitoring.kubekuma.io/v1
kind: Monitor
metadata: {{name: web, namespace: prod}}
spec: {{type: http, target: {{http: {{url: '{url}'}}}}}}
"
    );
    let built = build(&[parse_text("u.yaml", &text)], None);
    assert_eq!(
        errors(&built.findings),
        vec![format!(
            "u.yaml doc 1 Monitor prod/web: spec.target.http.url: must be at most 2048 characters, got {}",
            url.chars().count()
        )]
    );
}
