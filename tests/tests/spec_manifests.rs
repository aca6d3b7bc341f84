//! The design spec's own manifests (every ```yaml block of
//! `../shared/spec/kubekuma-design-spec.md`, copied into `tests/fixtures/spec/`) stay
//! valid: the custom resources pass `kubekuma validate` (the library calls the command
//! makes: no errors, warnings listed), everything else passes `kubernetes-validate
//! --strict` against the Kubernetes schemas, as `tests/tests/deploy.rs` checks deploy/.
//! Beyond the schemas, the spec's Deployment must run this project's image as it is
//! (`deploy/Dockerfile`), and the spec's RBAC must grant what the agent needs
//! (`deploy/base/rbac.yaml`, the least it needs), but for listed, explained exceptions.
//!
//! Drift: when the spec is reachable (`KUBEKUMA_SPEC`, else `../shared/spec/` beside the
//! repository), its blocks are extracted again and must equal the fixtures; a stale
//! fixture set is rewritten and the test fails with "commit the result".
//!
//! `kubernetes-validate` is a PyPI package that `tests/run` installs; without it the
//! schema test fails, it does not skip.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kubekuma_agent::catalog::folder::read_paths;
use kubekuma_agent::catalog::snapshot::build;
use kubekuma_agent::findings::Severity;
use serde::Deserialize;
use serde_json::Value;

/// Kubernetes versions to validate against: the same as `tests/tests/deploy.rs` (the API
/// level the agent is built for and the newest kubernetes-validate ships schemas for).
const KUBERNETES_VERSIONS: &[&str] = &["1.33", "1.37"];

/// ```yaml blocks of the spec that are not whole manifests (partial snippets, templates
/// with placeholders), by the heading they stand under, with the reason. They are not
/// copied. Today every block of the spec is a whole manifest.
const NOT_MANIFESTS: &[(&str, &str)] = &[];

/// Spec blocks that are whole manifests but that this project cannot accept, by fixture
/// file name, with the precise reason. Today none: every block validates.
const KNOWN_INVALID: &[(&str, &str)] = &[];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn fixture_dir() -> PathBuf {
    repo().join("tests/fixtures/spec")
}

/// The fixtures: `NN-kinds.yaml` → text, sorted by name.
fn fixtures() -> BTreeMap<String, String> {
    let dir = fixture_dir();
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("a fixture is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn is_kubekuma_resource(o: &Value) -> bool {
    o["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("monitoring.kubekuma.io/"))
}

/// One ```yaml block of the spec: the heading it stands under and its text.
#[derive(Debug)]
struct Block {
    heading: String,
    text: String,
}

/// Every ```yaml (or ```yml) block of a Markdown text, in order.
fn yaml_blocks(markdown: &str) -> Vec<Block> {
    enum In {
        Text,
        Yaml(String),
        Other,
    }
    let mut blocks = Vec::new();
    let mut heading = String::new();
    let mut state = In::Text;
    for line in markdown.lines() {
        let fence = line.trim_start().starts_with("```");
        state = match state {
            In::Text if fence => {
                let tag = line.trim_start().trim_start_matches('`').trim();
                if tag == "yaml" || tag == "yml" {
                    In::Yaml(String::new())
                } else {
                    In::Other
                }
            }
            In::Text => {
                if line.starts_with('#') {
                    heading = line.trim_start_matches('#').trim().to_string();
                }
                In::Text
            }
            In::Yaml(text) if fence => {
                blocks.push(Block {
                    heading: heading.clone(),
                    text,
                });
                In::Text
            }
            In::Yaml(mut text) => {
                text.push_str(line);
                text.push('\n');
                In::Yaml(text)
            }
            In::Other if fence => In::Text,
            In::Other => In::Other,
        };
    }
    blocks
}

/// The fixture set the spec's blocks make: `NN-kinds.yaml` (the kinds of its documents,
/// lowercased, in order) → the block's text, unchanged.
fn fixtures_of_spec(markdown: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut n = 0;
    for block in yaml_blocks(markdown) {
        if NOT_MANIFESTS.iter().any(|(h, _)| *h == block.heading) {
            continue;
        }
        let docs = documents(&block.text);
        let mut kinds: Vec<String> = Vec::new();
        for d in &docs {
            let (Some(_), Some(kind)) = (d["apiVersion"].as_str(), d["kind"].as_str()) else {
                panic!(
                    "the spec's yaml block under \"{}\" is not a whole manifest (a document \
                     without apiVersion and kind); list it in NOT_MANIFESTS with the reason:\n{}",
                    block.heading, block.text
                );
            };
            let kind = kind.to_ascii_lowercase();
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        n += 1;
        out.insert(format!("{n:02}-{}.yaml", kinds.join("-")), block.text);
    }
    out
}

/// Where the spec is, if it can be read here.
fn spec_path() -> Option<PathBuf> {
    let path = std::env::var_os("KUBEKUMA_SPEC")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/spec/kubekuma-design-spec.md"));
    path.is_file().then_some(path)
}

/// The extraction itself, on a small Markdown text of known blocks.
#[test]
fn yaml_blocks_are_extracted_with_their_headings() {
    let md = "# Title\n\n### One\n\n```yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n```\n\n```json\n{\"kind\": \"x\"}\n```\n\n### Two\n```yml\napiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: ServiceAccount\n```\n```\nplain\n```\n";
    let blocks = yaml_blocks(md);
    let got: Vec<(&str, &str)> = blocks
        .iter()
        .map(|b| (b.heading.as_str(), b.text.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "One",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
            ),
            (
                "Two",
                "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: ServiceAccount\n"
            ),
        ]
    );
    let names: Vec<String> = fixtures_of_spec(md).into_keys().collect();
    assert_eq!(
        names,
        vec!["01-configmap.yaml", "02-service-serviceaccount.yaml"]
    );
}

/// The fixtures are the spec's blocks (checked when the spec can be read; a stale set is
/// rewritten), and the folder's README names every fixture.
#[test]
fn fixtures_are_the_specs_yaml_blocks() {
    let have = fixtures();
    let readme = std::fs::read_to_string(fixture_dir().join("README.md"))
        .expect("tests/fixtures/spec/README.md says where the fixtures come from");
    let unnamed: Vec<&String> = have
        .keys()
        .filter(|n| !readme.contains(n.as_str()))
        .collect();
    let Some(spec) = spec_path() else {
        eprintln!(
            "the design spec is not reachable (set KUBEKUMA_SPEC or put it at ../shared/spec/): \
             drift not checked, the fixtures are validated as they are"
        );
        assert!(!have.is_empty(), "no fixtures in tests/fixtures/spec");
        assert!(
            unnamed.is_empty(),
            "tests/fixtures/spec/README.md does not name {unnamed:?}"
        );
        return;
    };
    let markdown = std::fs::read_to_string(&spec).unwrap();
    let want = fixtures_of_spec(&markdown);
    assert!(!want.is_empty(), "{}: no yaml blocks found", spec.display());
    if want == have {
        assert!(
            unnamed.is_empty(),
            "tests/fixtures/spec/README.md does not name {unnamed:?}"
        );
        return;
    }
    let dir = fixture_dir();
    for name in have.keys().filter(|n| !want.contains_key(*n)) {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    for (name, text) in &want {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let stale: Vec<&String> = want
        .keys()
        .filter(|n| have.get(*n) != want.get(*n))
        .chain(have.keys().filter(|n| !want.contains_key(*n)))
        .collect();
    panic!(
        "tests/fixtures/spec/ was stale against {} ({stale:?}); it has been rewritten: \
         update its README if files were added or removed, review and commit the result",
        spec.display()
    );
}

/// Every custom resource of the spec passes `kubekuma validate` (read as the command
/// reads the folder): no errors, each resource kept in the catalog; warnings are listed.
#[test]
fn the_specs_custom_resources_pass_kubekuma_validate() {
    let have = fixtures();
    let custom: usize = have
        .values()
        .flat_map(|t| documents(t))
        .filter(is_kubekuma_resource)
        .count();
    assert!(custom > 0, "no custom resources among the spec's blocks");
    let files = read_paths(&[fixture_dir()]);
    let built = build(&files, None);
    let known = |f: &kubekuma_agent::findings::Finding| {
        KNOWN_INVALID
            .iter()
            .any(|(file, _)| f.origin.file.ends_with(file))
    };
    let errors: Vec<String> = built
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error && !known(f))
        .map(ToString::to_string)
        .collect();
    let warnings: Vec<String> = built
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .map(ToString::to_string)
        .collect();
    eprintln!(
        "kubekuma validate warnings on the spec's manifests ({}):\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    assert!(
        errors.is_empty(),
        "the spec's custom resources fail kubekuma validate:\n{}",
        errors.join("\n")
    );
    let invalid_docs: usize = KNOWN_INVALID
        .iter()
        .map(|(file, _)| {
            documents(&have[*file])
                .iter()
                .filter(|d| is_kubekuma_resource(d))
                .count()
        })
        .sum();
    assert_eq!(
        built.snapshot.len(),
        custom - invalid_docs,
        "every custom resource of the spec is read into the catalog"
    );
    // Documents of other kinds are only set aside, each with a warning naming it.
    let others: usize = have
        .values()
        .flat_map(|t| documents(t))
        .filter(|d| !is_kubekuma_resource(d))
        .count();
    let ignored = warnings
        .iter()
        .filter(|w| w.contains("is not a KubeKuma resource"))
        .count();
    assert_eq!(ignored, others, "{warnings:#?}");
}

/// Every object of the spec's blocks that is not a KubeKuma custom resource (the
/// Deployment, Service and RBAC examples) is valid against the Kubernetes schemas.
#[test]
fn the_specs_kubernetes_objects_pass_the_kubernetes_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let mut input = String::new();
    let mut objects = Vec::new();
    for (name, text) in fixtures() {
        if KNOWN_INVALID.iter().any(|(f, _)| *f == name) {
            continue;
        }
        for d in documents(&text)
            .into_iter()
            .filter(|d| !is_kubekuma_resource(d))
        {
            objects.push(format!(
                "{name}: {} {}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["name"].as_str().unwrap_or("?")
            ));
            input.push_str(&format!("---\n{}\n", serde_json::to_string(&d).unwrap()));
        }
    }
    assert!(
        !objects.is_empty(),
        "no Kubernetes objects among the fixtures"
    );
    let file = tmp.path().join("spec-objects.yaml");
    std::fs::write(&file, &input).unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    let mut args = vec!["--strict"];
    for v in KUBERNETES_VERSIONS {
        args.extend(["-k", v]);
    }
    args.push(&file_arg);
    let out = match Command::new("kubernetes-validate")
        .args(&args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run kubernetes-validate ({e}): install it with `python3 -m pip install \
             kubernetes-validate` (tests/run does this) and put pip's script folder on PATH"
        ),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let problems: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("INFO ")).collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "kubernetes-validate rejects the spec's objects {objects:#?} ({}):\n{}\n{}",
        out.status,
        problems.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = stdout
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(
        passed,
        objects.len() * KUBERNETES_VERSIONS.len(),
        "not every object was validated against every version:\n{stdout}"
    );
}

/// The last stage of `deploy/Dockerfile`, as far as a pod running it depends on it.
#[derive(Debug, Default)]
struct Image {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: BTreeMap<String, String>,
    workdir: String,
}

/// Read the last stage of a Dockerfile: exec-form ENTRYPOINT and CMD, ENV (`K=V` or
/// `K V`), WORKDIR (default `/`).
fn image(dockerfile: &str) -> Image {
    let mut img = Image::default();
    let exec_form = |rest: &str, what: &str| -> Vec<String> {
        serde_json::from_str(rest.trim())
            .unwrap_or_else(|e| panic!("deploy/Dockerfile: {what} must be in exec form: {e}"))
    };
    for line in dockerfile.lines().map(str::trim) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word.to_ascii_uppercase().as_str() {
            "FROM" => img = Image::default(),
            "ENTRYPOINT" => img.entrypoint = exec_form(rest, "ENTRYPOINT"),
            "CMD" => img.cmd = exec_form(rest, "CMD"),
            "WORKDIR" => img.workdir = rest.trim().to_string(),
            "ENV" => {
                let rest = rest.trim();
                let (k, v) = rest
                    .split_once('=')
                    .or_else(|| rest.split_once(' '))
                    .unwrap_or((rest, ""));
                img.env.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => {}
        }
    }
    if img.workdir.is_empty() {
        img.workdir = "/".into();
    }
    img
}

/// The spec's Deployment runs this project's image as it is: the container's command
/// (the image's ENTRYPOINT and CMD, as the spec sets neither) is one the CLI accepts and
/// starts the agent; every variable it sets is one the agent reads; the database and the
/// data folder are on the volume it mounts (the image's root is not writable by its
/// non-root user); the probes and the port are the agent's.
#[test]
fn the_specs_deployment_runs_this_image() {
    use clap::{CommandFactory, Parser};
    use kubekuma_agent::cli::{Cli, Command as Sub};
    use kubekuma_agent::store::{DatabaseLocation, parse_database_url};

    /// Variables the agent reads outside clap (as `tests/tests/deploy.rs` lists them).
    const OUTSIDE_CLAP: &[&str] = &[
        "LOG_LEVEL",
        "KUBE_NAMESPACE",
        "POD_NAME",
        "POD_NAMESPACE",
        "PORT",
    ];
    /// The agent's port without `--listen` and `PORT` (`cli/agent.rs`).
    const DEFAULT_PORT: u64 = 3000;

    let text = &fixtures()["07-deployment-service.yaml"];
    let deployment = documents(text)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the spec's Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_string())
                .collect()
        })
    };
    let img = image(&std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap());

    // The command: the pod's command replaces ENTRYPOINT, its args replace CMD.
    let mut argv = strings(&container["command"]).unwrap_or(img.entrypoint.clone());
    argv.extend(strings(&container["args"]).unwrap_or(img.cmd.clone()));
    assert!(
        argv.first().is_some_and(|p| p.ends_with("kubekuma")),
        "the image runs {argv:?}"
    );
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| {
        panic!("the spec's Deployment runs `{}` with deploy/Dockerfile's image, which the CLI refuses:\n{e}", argv.join(" "))
    });
    assert!(
        matches!(cli.command, Sub::Agent { .. }),
        "the spec's Deployment should run the agent, it runs `{}`",
        argv.join(" ")
    );

    // The environment: the image's, then the pod's.
    let agent = Cli::command()
        .find_subcommand("agent")
        .expect("the agent subcommand")
        .clone();
    let read: Vec<String> = agent
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let mut env: BTreeMap<String, Option<String>> = img
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    for e in container["env"].as_array().into_iter().flatten() {
        let var = e["name"].as_str().expect("env name").to_string();
        assert!(
            read.contains(&var) || OUTSIDE_CLAP.contains(&var.as_str()),
            "the spec's Deployment sets {var}, which `kubekuma agent` does not read"
        );
        env.insert(var, e["value"].as_str().map(str::to_string));
    }

    // Files: on a mounted volume.
    let mounts: Vec<String> = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["readOnly"] != true)
        .map(|m| m["mountPath"].as_str().expect("mountPath").to_string())
        .collect();
    let on_a_volume = |p: &Path| mounts.iter().any(|m| p.starts_with(m));
    let absolute = |p: &str| Path::new(&img.workdir).join(p);
    if let Some(Some(url)) = env.get("DATABASE_URL") {
        match parse_database_url(url).expect("the spec's DATABASE_URL is accepted") {
            DatabaseLocation::File(path) => assert!(
                on_a_volume(&absolute(&path.to_string_lossy())),
                "the database {} is not on a volume the spec mounts ({mounts:?})",
                path.display()
            ),
            DatabaseLocation::Memory => {}
        }
    }
    let data = match env.get("KUBEKUMA_DATA") {
        Some(Some(v)) => v.clone(),
        _ => agent
            .get_arguments()
            .find(|a| a.get_id() == "data")
            .and_then(|a| a.get_default_values().first().cloned())
            .expect("--data has a default")
            .to_string_lossy()
            .into_owned(),
    };
    assert!(
        on_a_volume(&absolute(&data)),
        "the agent's data folder {data} (in {}) is not on a volume the spec mounts ({mounts:?}): \
         the image's non-root user cannot create it",
        img.workdir
    );

    // The port and the probes.
    let port = match env.get("PORT") {
        Some(Some(p)) => p.parse().expect("PORT is a number"),
        _ => DEFAULT_PORT,
    };
    let ports: Vec<u64> = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert_eq!(ports, vec![port], "the container's port is the agent's");
    for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"].as_u64(), Some(port), "{probe}");
    }
}

/// What the agent is granted in `deploy/base/rbac.yaml` that the spec's RBAC may leave
/// out, with the reason it still runs: (API group, resource).
const NOT_IN_SPEC_RBAC: &[(&str, &str, &str)] = &[
    (
        "apps",
        "deployments",
        "only `kubernetes` monitors read it; without the grant such a monitor is down with a message naming the missing rule",
    ),
    ("apps", "statefulsets", "as deployments"),
    ("apps", "daemonsets", "as deployments"),
    ("", "nodes", "as deployments"),
    ("", "services", "as deployments"),
    ("discovery.k8s.io", "endpointslices", "as deployments"),
    (
        "",
        "pods",
        "`kubernetes` monitors read pods (as deployments), and the agent labels its own Pod only when POD_NAME is set, which the spec's Deployment does not do",
    ),
];

/// The spec's RBAC lets the agent run as the spec's Deployment runs it: every grant of
/// `deploy/base/rbac.yaml` to the agent (the least it needs) is covered by the spec's
/// ClusterRole, but for those `NOT_IN_SPEC_RBAC` lists with the reason; and the spec's
/// ClusterRoleBinding binds it to the ServiceAccount the spec's Deployment runs as.
#[test]
fn the_specs_rbac_covers_what_the_agent_needs() {
    let spec_docs = documents(&fixtures()["08-serviceaccount-clusterrole-clusterrolebinding.yaml"]);
    let of_kind =
        |k: &str| -> Vec<&Value> { spec_docs.iter().filter(|d| d["kind"] == k).collect() };
    let role = of_kind("ClusterRole");
    let [role] = role.as_slice() else {
        panic!("one ClusterRole in the spec's RBAC");
    };
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap_or("").to_string())
            .collect()
    };
    let granted = |group: &str, resource: &str, verb: &str| {
        role["rules"].as_array().into_iter().flatten().any(|r| {
            let has =
                |field: &str, want: &str| list(&r[field]).iter().any(|g| g == want || g == "*");
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    let deployment = documents(&fixtures()["07-deployment-service.yaml"])
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the spec's Deployment");
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("the spec's Deployment names its ServiceAccount")
        .to_string();
    let binding = of_kind("ClusterRoleBinding");
    assert!(
        binding.iter().any(|b| {
            b["roleRef"]["name"] == role["metadata"]["name"]
                && b["subjects"].as_array().into_iter().flatten().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == account.as_str()
                        && s["namespace"] == deployment["metadata"]["namespace"]
                })
        }),
        "the spec's ClusterRole is bound to the Deployment's ServiceAccount {account}"
    );

    let base = documents(&std::fs::read_to_string(repo().join("deploy/base/rbac.yaml")).unwrap());
    let mut missing = Vec::new();
    let mut checked = 0;
    for r in base
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
        .filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kubekuma-agent"))
        })
        .flat_map(|d| d["rules"].as_array().into_iter().flatten())
    {
        for group in list(&r["apiGroups"]) {
            for resource in list(&r["resources"]) {
                for verb in list(&r["verbs"]) {
                    checked += 1;
                    let base_resource = resource.split('/').next().unwrap_or("");
                    let excused = NOT_IN_SPEC_RBAC
                        .iter()
                        .any(|(g, res, _)| *g == group && *res == base_resource);
                    if !granted(&group, &resource, &verb) && !excused {
                        missing.push(format!("{verb} {group}/{resource}"));
                    }
                }
            }
        }
    }
    assert!(
        checked > 20,
        "deploy/base/rbac.yaml grants the agent too little to compare: {checked}"
    );
    assert!(
        missing.is_empty(),
        "the spec's RBAC does not grant what the agent needs: {missing:#?}"
    );
}
