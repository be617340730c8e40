//! The manifests in `manifests/` checked against the Kubernetes API types, against each other and
//! against the code that runs with them.
//!
//! - Every resource `kustomization.yaml` lists exists, every manifest is listed, and each parses
//!   into its `k8s-openapi` type with nothing ignored: the typed value, serialized again, must
//!   equal the YAML (a misspelled field is silently dropped by serde, and shows up here). The
//!   Prometheus Operator resources (no `k8s-openapi` type) are checked field by field.
//! - The ClusterRole grants exactly `get/list/watch pods`, `create` core/v1 `events` and
//!   `list/create/update/delete` wgpolicyk8s.io reports, and the code needs no more: the kube
//!   crate's `PodWatch`, `EventPublisher` and `PolicyReportPublisher`,
//!   configured as `nodeguard run` configures them, talk to a fake API server that authorizes
//!   every request with the RBAC rules bound to the ServiceAccount in these very manifests, and
//!   get no 403.
//! - The DaemonSet agrees with everything it names: the ServiceAccount, the ports of the
//!   Service and ServiceMonitor, the API's paths, the binary's flags (asked of the real binary),
//!   the volumes its flags point into, the policy in the ConfigMap (loaded with the real policy
//!   loader), and the least-privilege security context the README promises.
//!
//! - The PolicyReport CRDs in `manifests/crds/` parse into `CustomResourceDefinition` with
//!   nothing ignored, are structural, and name the group, version and resources the role grants.
//!
//! Run: `cargo test -p nodeguard --test manifests`.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Service, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nodeguard_testkit::fake::{attributes, query_map, Authorizer, FakeApi, Request};

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// Files in `manifests/` that are not Kubernetes objects to apply: the kustomization itself, an
/// example policy (docs), and the plain Prometheus rules file (for `rule_files:`).
const NOT_RESOURCES: &[&str] = &[
    "kustomization.yaml",
    "policy.example.yaml",
    "prometheus-rules.yaml",
];

/// The one YAML document of `file`, as JSON.
fn read_value(file: &Path) -> Value {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()));
        if !value.is_null() {
            documents.push(value);
        }
    }
    assert_eq!(
        documents.len(),
        1,
        "{} should hold exactly one object",
        file.display()
    );
    documents.remove(0)
}

/// The value without its nulls (an explicit `null` and an absent field mean the same to the API
/// server, and typed values skip `None`).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Every place where `typed` (the value after a typed round trip) differs from `original`.
fn differences(original: &Value, typed: &Value, at: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{at}.{key}");
                match b.get(key) {
                    Some(other) => differences(value, other, &here, out),
                    None => out.push(format!(
                        "{here} is not a field of the API type (misspelled or misplaced?): \
                         it would be dropped"
                    )),
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!(
                    "{at}.{key} appears only after the typed round trip"
                ));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, &format!("{at}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{at}: {a} in the file, {b} in the API type")),
    }
}

/// Parses `value` into `T` and back; the differences from the original, if any.
fn typed_round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, Vec<String>> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| vec![e.to_string()])?;
    let back = serde_json::to_value(&typed).map_err(|e| vec![e.to_string()])?;
    let mut diffs = Vec::new();
    differences(&without_nulls(value), &without_nulls(&back), "", &mut diffs);
    if diffs.is_empty() {
        Ok(typed)
    } else {
        Err(diffs)
    }
}

/// Whether objects of `T` live in a namespace, as the API types say.
fn is_namespaced<T: k8s_openapi::Resource>() -> bool
where
    T::Scope: 'static,
{
    std::any::TypeId::of::<T::Scope>()
        == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>()
}

/// Every manifest, parsed.
struct Manifests {
    kustomization: Value,
    /// File name → object, for every listed resource.
    raw: BTreeMap<String, Value>,
    namespace: Namespace,
    service_account: ServiceAccount,
    cluster_role: ClusterRole,
    binding: ClusterRoleBinding,
    config_map: ConfigMap,
    daemon_set: DaemonSet,
    service: Service,
    service_monitor: Value,
    prometheus_rule: Value,
    /// The ClusterRoles a responder or Prometheus is bound to, by name.
    readers: BTreeMap<String, ClusterRole>,
    network_policy: NetworkPolicy,
}

/// The objects of one kind among the listed resources: exactly one is expected.
fn only_of_kind<'a>(raw: &'a BTreeMap<String, Value>, kind: &str) -> (&'a str, &'a Value) {
    let found: Vec<(&String, &Value)> = raw.iter().filter(|(_, v)| v["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} among the kustomization's resources, found {:?}",
        found.iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
    (found[0].0, found[0].1)
}

fn typed_of_kind<T: DeserializeOwned + Serialize + k8s_openapi::Resource>(
    raw: &BTreeMap<String, Value>,
) -> T {
    let (file, value) = only_of_kind(raw, T::KIND);
    assert_eq!(
        value["apiVersion"],
        T::API_VERSION,
        "{file}: apiVersion of a {}",
        T::KIND
    );
    typed_round_trip::<T>(value).unwrap_or_else(|diffs| {
        panic!(
            "{file} does not match the {} API type:\n  {}",
            T::KIND,
            diffs.join("\n  ")
        )
    })
}

/// The ClusterRole called `name` among the listed resources.
/// The one object of `T`'s kind called `name` (several ServiceAccounts and bindings exist: the
/// agent's and the fleet responder's).
fn named_of_kind<T: DeserializeOwned + Serialize + k8s_openapi::Resource>(
    raw: &BTreeMap<String, Value>,
    name: &str,
) -> T {
    let found: Vec<(&String, &Value)> = raw
        .iter()
        .filter(|(_, v)| v["kind"] == T::KIND && v["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {} {name:?}", T::KIND);
    typed_round_trip::<T>(found[0].1)
        .unwrap_or_else(|d| panic!("{}: {} {name}: {}", found[0].0, T::KIND, d.join("; ")))
}

fn named_cluster_role(raw: &BTreeMap<String, Value>, name: &str) -> ClusterRole {
    let found: Vec<(&String, &Value)> = raw
        .iter()
        .filter(|(_, v)| v["kind"] == "ClusterRole" && v["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one ClusterRole {name:?}");
    typed_round_trip::<ClusterRole>(found[0].1)
        .unwrap_or_else(|d| panic!("{}: ClusterRole {name}: {}", found[0].0, d.join("; ")))
}

fn load() -> Manifests {
    let dir = manifests_dir();
    let kustomization = read_value(&dir.join("kustomization.yaml"));
    let raw: BTreeMap<String, Value> = resources(&kustomization)
        .into_iter()
        .map(|file| {
            let value = read_value(&dir.join(&file));
            (file, value)
        })
        .collect();
    Manifests {
        namespace: typed_of_kind(&raw),
        service_account: named_of_kind(&raw, "nodeguard"),
        cluster_role: named_cluster_role(&raw, "nodeguard"),
        readers: ["nodeguard-metrics-reader", "nodeguard-api-reader"]
            .into_iter()
            .map(|name| (name.to_string(), named_cluster_role(&raw, name)))
            .collect(),
        network_policy: typed_of_kind(&raw),
        binding: named_of_kind(&raw, "nodeguard"),
        config_map: typed_of_kind(&raw),
        daemon_set: typed_of_kind(&raw),
        service: typed_of_kind(&raw),
        service_monitor: only_of_kind(&raw, "ServiceMonitor").1.clone(),
        prometheus_rule: only_of_kind(&raw, "PrometheusRule").1.clone(),
        kustomization,
        raw,
    }
}

fn resources(kustomization: &Value) -> Vec<String> {
    kustomization["resources"]
        .as_array()
        .expect("kustomization.yaml has a resources list")
        .iter()
        .map(|r| r.as_str().expect("resources are file names").to_string())
        .collect()
}

impl Manifests {
    fn kustomize_namespace(&self) -> &str {
        self.kustomization["namespace"]
            .as_str()
            .expect("kustomization.yaml sets a namespace")
    }

    fn pod_spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        self.daemon_set
            .spec
            .template
            .spec
            .as_ref()
            .expect("the DaemonSet has a pod template spec")
    }

    fn container(&self) -> &Container {
        let containers = &self.pod_spec().containers;
        assert_eq!(containers.len(), 1, "the agent pod runs one container");
        &containers[0]
    }

    /// `--flag=value` (or `--flag value`) of the container's args.
    fn arg(&self, flag: &str) -> Option<String> {
        let args = self.container().args.clone().unwrap_or_default();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if let Some(value) = arg.strip_prefix(&format!("{flag}=")) {
                return Some(value.to_string());
            }
            if arg == flag {
                return iter.next().cloned();
            }
        }
        None
    }

    fn volume(&self, name: &str) -> &Volume {
        self.pod_spec()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("the DaemonSet has no volume {name:?}"))
    }

    /// The mount whose path is exactly `path`.
    fn mount_at(&self, path: &str) -> &VolumeMount {
        self.container()
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path.trim_end_matches('/') == path.trim_end_matches('/'))
            .unwrap_or_else(|| {
                panic!(
                    "no volume is mounted at {path}; mounts: {:?}",
                    self.container()
                        .volume_mounts
                        .iter()
                        .flatten()
                        .map(|m| &m.mount_path)
                        .collect::<Vec<_>>()
                )
            })
    }

    fn metrics_port(&self) -> (String, i32) {
        self.port_named("http-metrics")
    }

    /// The container port called `name`: (name, number).
    fn port_named(&self, name: &str) -> (String, i32) {
        let ports = self.container().ports.clone().unwrap_or_default();
        assert_eq!(
            ports.len(),
            2,
            "the agent exposes the API and the probe port: {ports:?}"
        );
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no container port named {name}: {ports:?}"));
        (name.to_string(), port.container_port)
    }
}

// ---------------------------------------------------------------------------------------------
// Files and types

#[test]
fn the_kustomization_lists_every_manifest_and_each_exists() {
    let dir = manifests_dir();
    let kustomization = read_value(&dir.join("kustomization.yaml"));
    assert_eq!(kustomization["kind"], "Kustomization");
    let listed: BTreeSet<String> = resources(&kustomization).into_iter().collect();
    for file in &listed {
        assert!(
            dir.join(file).is_file(),
            "kustomization.yaml lists {file}, which does not exist"
        );
    }
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("read manifests/")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .filter(|name| !NOT_RESOURCES.contains(&name.as_str()))
        .collect();
    let unlisted: Vec<&String> = on_disk.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "manifests not in kustomization.yaml (kubectl apply -k would skip them): {unlisted:?}"
    );
}

#[test]
fn every_manifest_parses_into_its_api_type_with_no_field_ignored() {
    let m = load();
    let kinds: BTreeSet<&str> = m
        .raw
        .values()
        .map(|v| v["kind"].as_str().unwrap_or("(no kind)"))
        .collect();
    let expected: BTreeSet<&str> = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Service",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds, expected, "the kinds of the listed resources");
    for (file, value) in &m.raw {
        let name = value["metadata"]["name"].as_str().unwrap_or("");
        assert!(!name.is_empty(), "{file} has no metadata.name");
    }
}

/// Every node of a structural schema has a `type` (or preserves unknown fields), and
/// `required` names only declared properties.
fn structural_problems(schema: &Value, at: &str, out: &mut Vec<String>) {
    if schema["type"].as_str().is_none() && schema["x-kubernetes-preserve-unknown-fields"] != true {
        out.push(format!("{at}: no type"));
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().unwrap_or("");
        if schema["properties"].get(name).is_none() {
            out.push(format!("{at}: requires undeclared {name}"));
        }
    }
    for (name, sub) in schema["properties"].as_object().into_iter().flatten() {
        structural_problems(sub, &format!("{at}.{name}"), out);
    }
    for key in ["items", "additionalProperties"] {
        if schema[key].is_object() {
            structural_problems(&schema[key], &format!("{at}.{key}"), out);
        }
    }
}

#[test]
fn the_policy_report_crds_are_structural_v1alpha2_and_what_the_role_grants() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let dir = manifests_dir().join("crds");
    let kustomization = read_value(&dir.join("kustomization.yaml"));
    let files = resources(&kustomization);
    assert_eq!(files, ["policyreports.yaml", "clusterpolicyreports.yaml"]);
    let m = load();
    let granted = grants(m.cluster_role.rules.as_deref().unwrap_or_default());
    for (file, kind, scope) in [
        ("policyreports.yaml", "PolicyReport", "Namespaced"),
        (
            "clusterpolicyreports.yaml",
            "ClusterPolicyReport",
            "Cluster",
        ),
    ] {
        let value = read_value(&dir.join(file));
        let crd: CustomResourceDefinition = typed_round_trip(&value).unwrap_or_else(|d| {
            panic!("{file} does not match the CRD type:\n  {}", d.join("\n  "))
        });
        let spec = &crd.spec;
        assert_eq!(spec.group, "wgpolicyk8s.io");
        assert_eq!(spec.names.kind, kind);
        assert_eq!(spec.scope, scope);
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{}.wgpolicyk8s.io", spec.names.plural).as_str())
        );
        assert!(crd.metadata.namespace.is_none());
        // The agent lists, creates, updates and deletes these, and nothing else.
        for verb in ["list", "create", "update", "delete"] {
            assert!(
                granted.contains(&triple("wgpolicyk8s.io", &spec.names.plural, verb)),
                "the ClusterRole does not grant {verb} on {}",
                spec.names.plural
            );
        }
        assert_eq!(spec.versions.len(), 1);
        let version = &spec.versions[0];
        assert_eq!(version.name, "v1alpha2");
        assert!(version.served && version.storage);
        let schema = serde_json::to_value(
            version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("a schema"),
        )
        .unwrap();
        let mut problems = Vec::new();
        structural_problems(&schema, "", &mut problems);
        assert!(problems.is_empty(), "{file}: {problems:#?}");
        let result = &schema["properties"]["results"]["items"];
        assert_eq!(
            result["properties"]["severity"]["enum"],
            json!(["critical", "high", "low", "medium", "info"])
        );
        assert_eq!(
            result["properties"]["result"]["enum"],
            json!(["pass", "fail", "warn", "error", "skip"])
        );
        assert_eq!(result["required"], json!(["policy"]));
        assert_eq!(result["properties"]["resources"]["type"], "array");
    }
}

#[test]
fn the_round_trip_check_catches_a_misspelled_field() {
    // Without this, "no differences" above could mean the check sees nothing.
    let mut value = read_value(&manifests_dir().join("daemonset.yaml"));
    value["spec"]["template"]["spec"]["hostPid"] = json!(true);
    value["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        ["readOnlyRootFileSystem"] = json!(true);
    let diffs =
        typed_round_trip::<DaemonSet>(&value).expect_err("misspelled fields must be reported");
    assert_eq!(diffs.len(), 2, "{diffs:#?}");
    assert!(
        diffs[0].contains("hostPid") || diffs[1].contains("hostPid"),
        "{diffs:#?}"
    );
    assert!(
        diffs.iter().any(|d| d.contains("readOnlyRootFileSystem")),
        "{diffs:#?}"
    );
}

/// Fields of the Prometheus Operator's monitoring.coreos.com/v1 objects that nodeguard may use,
/// by where they appear: anything else is a typo the operator would reject or ignore.
const OBJECT_FIELDS: &str = "apiVersion kind metadata spec";
const SERVICE_MONITOR_SPEC: &str = "selector namespaceSelector endpoints jobLabel targetLabels \
    podTargetLabels sampleLimit attachMetadata";
// bearerTokenFile: Prometheus sends its own service-account token (deprecated in newer
// operators in favour of `authorization`, which needs a Secret; still served by the CRD).
const ENDPOINT_FIELDS: &str = "port targetPort path scheme params interval scrapeTimeout \
    tlsConfig authorization bearerTokenFile honorLabels honorTimestamps metricRelabelings relabelings \
    followRedirects enableHttp2 filterRunning";
const TLS_CONFIG_FIELDS: &str = "ca cert keySecret serverName insecureSkipVerify caFile certFile \
    keyFile minVersion maxVersion";
const RELABELING_FIELDS: &str =
    "sourceLabels separator targetLabel regex modulus replacement action";
const RULE_GROUP_FIELDS: &str = "name interval rules limit partial_response_strategy query_offset";
const RULE_FIELDS: &str = "alert record expr for keep_firing_for labels annotations";

/// The keys of `value` (an object) that `known` does not list, as paths under `at`.
fn unknown_fields(value: &Value, known: &str, at: &str) -> Vec<String> {
    let known: Vec<&str> = known.split_whitespace().collect();
    value
        .as_object()
        .into_iter()
        .flat_map(|map| map.keys())
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("{at}.{k}"))
        .collect()
}

fn items(value: &Value) -> impl Iterator<Item = (usize, &Value)> {
    value.as_array().into_iter().flatten().enumerate()
}

#[test]
fn the_prometheus_operator_resources_have_their_required_fields() {
    let m = load();
    let sm = &m.service_monitor;
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["kind"], "ServiceMonitor");
    let mut unknown = unknown_fields(sm, OBJECT_FIELDS, "");
    unknown.extend(unknown_fields(&sm["spec"], SERVICE_MONITOR_SPEC, ".spec"));
    let service_ports: Vec<String> = m
        .service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    let endpoints = &sm["spec"]["endpoints"];
    assert!(
        items(endpoints).count() > 0,
        "ServiceMonitor has no spec.endpoints"
    );
    for (i, endpoint) in items(endpoints) {
        let at = format!(".spec.endpoints[{i}]");
        unknown.extend(unknown_fields(endpoint, ENDPOINT_FIELDS, &at));
        unknown.extend(unknown_fields(
            &endpoint["tlsConfig"],
            TLS_CONFIG_FIELDS,
            &format!("{at}.tlsConfig"),
        ));
        for (j, relabeling) in items(&endpoint["relabelings"]) {
            let at = format!("{at}.relabelings[{j}]");
            unknown.extend(unknown_fields(relabeling, RELABELING_FIELDS, &at));
        }
        let port = endpoint["port"].as_str().expect("endpoint port name");
        assert!(
            service_ports.iter().any(|p| p == port),
            "ServiceMonitor endpoint port {port:?} is not a port of the Service ({service_ports:?})"
        );
        let path = endpoint["path"].as_str().unwrap_or("/metrics");
        assert!(
            nodeguard_api::paths().contains(&path),
            "ServiceMonitor scrapes {path}, which the agent does not serve"
        );
    }
    // The ServiceMonitor selects the Service by its labels, in the Service's namespace.
    let service_labels = m.service.metadata.labels.clone().unwrap_or_default();
    let selector = sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("ServiceMonitor spec.selector.matchLabels");
    for (key, want) in selector {
        assert_eq!(
            service_labels.get(key).map(String::as_str),
            want.as_str(),
            "the ServiceMonitor selects {key}={want}; the Service's labels: {service_labels:?}"
        );
    }
    let watched: Vec<&str> = items(&sm["spec"]["namespaceSelector"]["matchNames"])
        .filter_map(|(_, v)| v.as_str())
        .collect();
    assert!(
        watched.contains(&m.kustomize_namespace()),
        "the ServiceMonitor looks in {watched:?}, the Service is in {}",
        m.kustomize_namespace()
    );

    let rule = &m.prometheus_rule;
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    unknown.extend(unknown_fields(rule, OBJECT_FIELDS, ""));
    unknown.extend(unknown_fields(&rule["spec"], "groups", ".spec"));
    assert!(
        items(&rule["spec"]["groups"]).count() > 0,
        "PrometheusRule has no spec.groups"
    );
    for (i, group) in items(&rule["spec"]["groups"]) {
        let at = format!(".spec.groups[{i}]");
        unknown.extend(unknown_fields(group, RULE_GROUP_FIELDS, &at));
        assert!(group["name"].is_string(), "{at} has no name");
        assert!(items(&group["rules"]).count() > 0, "{at} has no rules");
        for (j, r) in items(&group["rules"]) {
            let at = format!("{at}.rules[{j}]");
            unknown.extend(unknown_fields(r, RULE_FIELDS, &at));
            assert!(
                r["alert"].is_string() != r["record"].is_string(),
                "{at} must be an alert or a recording rule"
            );
            assert!(r["expr"].is_string(), "{at} has no expr");
        }
    }
    assert!(unknown.is_empty(), "unknown fields: {unknown:?}");
}

// ---------------------------------------------------------------------------------------------
// Namespaces and names

#[test]
fn namespaced_objects_live_in_the_kustomization_namespace() {
    let m = load();
    let ns = m.kustomize_namespace();
    assert_eq!(m.namespace.metadata.name.as_deref(), Some(ns));
    assert!(!is_namespaced::<Namespace>() && !is_namespaced::<ClusterRole>());
    assert!(!is_namespaced::<ClusterRoleBinding>());
    let typed = [
        (
            "ServiceAccount",
            is_namespaced::<ServiceAccount>(),
            &m.service_account.metadata,
        ),
        (
            "ConfigMap",
            is_namespaced::<ConfigMap>(),
            &m.config_map.metadata,
        ),
        (
            "DaemonSet",
            is_namespaced::<DaemonSet>(),
            &m.daemon_set.metadata,
        ),
        ("Service", is_namespaced::<Service>(), &m.service.metadata),
    ];
    for (kind, namespaced, meta) in typed {
        assert!(namespaced, "{kind} is namespaced");
        assert_eq!(
            meta.namespace.as_deref(),
            Some(ns),
            "{kind} {:?} must say namespace {ns} (kubectl apply -f would otherwise use the \
             current context's namespace)",
            meta.name
        );
    }
    for cluster_scoped in [
        &m.namespace.metadata,
        &m.cluster_role.metadata,
        &m.binding.metadata,
    ] {
        assert_eq!(
            cluster_scoped.namespace, None,
            "{:?} is cluster-scoped",
            cluster_scoped.name
        );
    }
    assert_eq!(m.service_monitor["metadata"]["namespace"], ns);
    // The PrometheusRule says where it goes in its own comments (the namespace Prometheus
    // watches for rules); kustomize puts it in the kustomization namespace when applied with -k.
    let rule_ns = &m.prometheus_rule["metadata"]["namespace"];
    assert!(
        rule_ns.is_null() || rule_ns == ns,
        "PrometheusRule namespace {rule_ns}"
    );
}

// ---------------------------------------------------------------------------------------------
// RBAC

/// (apiGroup, resource, verb) triples a rule grants. Wildcards are kept as `*`.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

fn triple(group: &str, resource: &str, verb: &str) -> (String, String, String) {
    (group.into(), resource.into(), verb.into())
}

#[test]
fn the_cluster_role_grants_exactly_pod_reads_event_writes_and_report_writes() {
    let m = load();
    let role = &m.cluster_role;
    assert!(
        role.aggregation_rule.is_none(),
        "no aggregation into nodeguard's role"
    );
    let rules = role.rules.clone().unwrap_or_default();
    for rule in &rules {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "unexpected rule shape: {rule:?}"
        );
    }
    let expected: BTreeSet<_> = [
        triple("", "pods", "get"),
        triple("", "pods", "list"),
        triple("", "pods", "watch"),
        triple("", "events", "create"),
        // PolicyReports: one list by label at start, then writes of its own reports.
        triple("wgpolicyk8s.io", "policyreports", "list"),
        triple("wgpolicyk8s.io", "policyreports", "create"),
        triple("wgpolicyk8s.io", "policyreports", "update"),
        triple("wgpolicyk8s.io", "policyreports", "delete"),
        triple("wgpolicyk8s.io", "clusterpolicyreports", "list"),
        triple("wgpolicyk8s.io", "clusterpolicyreports", "create"),
        triple("wgpolicyk8s.io", "clusterpolicyreports", "update"),
        triple("wgpolicyk8s.io", "clusterpolicyreports", "delete"),
        // The API's bearer tokens: TokenReview, then SubjectAccessReview.
        triple("authentication.k8s.io", "tokenreviews", "create"),
        triple("authorization.k8s.io", "subjectaccessreviews", "create"),
    ]
    .into_iter()
    .collect();
    assert_eq!(grants(&rules), expected);
}

#[test]
fn the_binding_gives_the_role_to_the_service_account() {
    let m = load();
    let role_ref = &m.binding.role_ref;
    assert_eq!(
        role_ref.api_group.as_deref(),
        Some("rbac.authorization.k8s.io")
    );
    assert_eq!(role_ref.kind, "ClusterRole");
    assert_eq!(Some(&role_ref.name), m.cluster_role.metadata.name.as_ref());
    let subjects = m.binding.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    let subject = &subjects[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(
        Some(&subject.name),
        m.service_account.metadata.name.as_ref()
    );
    assert_eq!(subject.namespace.as_deref(), Some(m.kustomize_namespace()));
    assert_eq!(
        subject.namespace, m.service_account.metadata.namespace,
        "the binding names the ServiceAccount in its own namespace"
    );
    assert_eq!(
        m.pod_spec().service_account_name,
        m.service_account.metadata.name,
        "the DaemonSet runs as the bound ServiceAccount"
    );
    assert_ne!(
        m.service_account.automount_service_account_token,
        Some(false),
        "the agent needs its token to reach the API server"
    );
    assert_ne!(m.pod_spec().automount_service_account_token, Some(false));
}

/// The Role called `name` among the listed resources.
fn named_role(raw: &BTreeMap<String, Value>, name: &str) -> Role {
    let found: Vec<(&String, &Value)> = raw
        .iter()
        .filter(|(_, v)| v["kind"] == "Role" && v["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one Role {name:?}");
    typed_round_trip::<Role>(found[0].1)
        .unwrap_or_else(|d| panic!("{}: Role {name}: {}", found[0].0, d.join("; ")))
}

/// The heartbeat Lease (docs/fleet.md): the agent may get, create and update Leases in its
/// own namespace and nothing else there; the binding gives that to the DaemonSet's
/// ServiceAccount; the DaemonSet tells the agent its namespace and pod name through the
/// downward API, as `--lease-namespace` and `--lease-holder` read them.
#[test]
fn the_lease_role_grants_get_create_update_on_leases_in_the_agents_namespace_only() {
    let m = load();
    let ns = m.kustomize_namespace();
    let role = named_role(&m.raw, "nodeguard-lease");
    assert_eq!(role.metadata.namespace.as_deref(), Some(ns));
    let expected: BTreeSet<_> = ["get", "create", "update"]
        .into_iter()
        .map(|verb| triple("coordination.k8s.io", "leases", verb))
        .collect();
    assert_eq!(grants(&role.rules.clone().unwrap_or_default()), expected);

    let (file, value) = only_of_kind(&m.raw, "RoleBinding");
    let binding: RoleBinding =
        typed_round_trip(value).unwrap_or_else(|d| panic!("{file}: {}", d.join("; ")));
    assert_eq!(binding.metadata.namespace.as_deref(), Some(ns));
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, "nodeguard-lease");
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(
        Some(&subjects[0].name),
        m.service_account.metadata.name.as_ref()
    );
    assert_eq!(subjects[0].namespace.as_deref(), Some(ns));

    let env: BTreeMap<&str, &str> = m
        .container()
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let path = e
                .value_from
                .as_ref()?
                .field_ref
                .as_ref()?
                .field_path
                .as_str();
            Some((e.name.as_str(), path))
        })
        .collect();
    assert_eq!(env.get("POD_NAMESPACE"), Some(&"metadata.namespace"));
    assert_eq!(env.get("POD_NAME"), Some(&"metadata.name"));
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_nodeguard"))
        .args(["run", "--help"])
        .env_clear()
        .output()
        .expect("run nodeguard run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("POD_NAMESPACE") && help.contains("POD_NAME"),
        "{help}"
    );
}

/// The RBAC rules a ServiceAccount holds through ClusterRoleBindings (the whole authorizer for
/// the fake API server: RBAC is the only mode, as in a default cluster).
fn authorizer_for_service_account(
    account: &ServiceAccount,
    roles: &[&ClusterRole],
    bindings: &[&ClusterRoleBinding],
) -> Authorizer {
    let name = account.metadata.name.clone().unwrap_or_default();
    let namespace = account.metadata.namespace.clone().unwrap_or_default();
    let mut rules = Vec::new();
    for binding in bindings {
        let bound = binding.subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == name
                && s.namespace.as_deref() == Some(namespace.as_str())
        });
        if !bound || binding.role_ref.kind != "ClusterRole" {
            continue;
        }
        for role in roles {
            if role.metadata.name.as_deref() == Some(binding.role_ref.name.as_str()) {
                rules.extend(role.rules.clone().unwrap_or_default());
            }
        }
    }
    Authorizer {
        user: format!("system:serviceaccount:{namespace}:{name}"),
        rules,
    }
}

#[test]
fn requests_map_to_rbac_verbs_as_the_api_server_maps_them() {
    let cases = [
        (
            "GET /api/v1/pods?fieldSelector=spec.nodeName%3Dn",
            "list /pods -/-",
        ),
        (
            "GET /api/v1/pods?watch=true&resourceVersion=5",
            "watch /pods -/-",
        ),
        ("GET /api/v1/pods?watch=1", "watch /pods -/-"),
        ("GET /api/v1/watch/pods", "watch /pods -/-"),
        (
            "GET /api/v1/namespaces/shop/pods/web-0",
            "get /pods shop/web-0",
        ),
        (
            "GET /api/v1/namespaces/shop/pods/web-0/log",
            "get /pods/log shop/web-0",
        ),
        ("GET /api/v1/namespaces/shop", "get /namespaces -/shop"),
        ("GET /api/v1/nodes/node-a", "get /nodes -/node-a"),
        (
            "GET /apis/events.k8s.io/v1/events?limit=500",
            "list events.k8s.io/events -/-",
        ),
        (
            "POST /apis/events.k8s.io/v1/namespaces/shop/events",
            "create events.k8s.io/events shop/-",
        ),
        (
            "PATCH /apis/events.k8s.io/v1/namespaces/shop/events/e.1",
            "patch events.k8s.io/events shop/e.1",
        ),
        (
            "PUT /api/v1/namespaces/shop/configmaps/c",
            "update /configmaps shop/c",
        ),
        (
            "DELETE /api/v1/namespaces/shop/pods/web-0",
            "delete /pods shop/web-0",
        ),
        (
            "DELETE /api/v1/namespaces/shop/pods",
            "deletecollection /pods shop/-",
        ),
    ];
    for (request, want) in cases {
        let (method, target) = request.split_once(' ').unwrap();
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let got = attributes(method, path, &query_map(query))
            .unwrap_or_else(|| panic!("{request} is a resource request"));
        assert_eq!(got.to_string(), want, "{request}");
    }
    assert_eq!(attributes("GET", "/version", &BTreeMap::new()), None);
    assert_eq!(attributes("GET", "/apis", &BTreeMap::new()), None);
}

/// The authorizer of the manifests' ServiceAccount.
fn manifest_authorizer(m: &Manifests) -> Authorizer {
    let authorizer =
        authorizer_for_service_account(&m.service_account, &[&m.cluster_role], &[&m.binding]);
    assert!(
        !authorizer.rules.is_empty(),
        "the ServiceAccount is bound to no rules"
    );
    authorizer
}

const NODE: &str = "node-a";
const TOKEN: &str = "manifests-test-token";
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The fake API server (`nodeguard_testkit::fake`), started from inside the test's runtime, and a client
/// configured from its kubeconfig (the fake refuses requests without its bearer token).
async fn start_fake(m: &Manifests, pods: Vec<Value>) -> (FakeApi, kube::Client) {
    let api = FakeApi::start(NODE, TOKEN, manifest_authorizer(m));
    for pod in pods {
        api.put_pod(pod);
    }
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&api.kubeconfig())
        .expect("the fake's kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("the fake's kubeconfig is usable");
    let client = kube::Client::try_from(config).expect("a client of the fake API server");
    (api, client)
}

/// Requests the fake refused as the authorizer does (403).
fn forbidden_requests(api: &FakeApi) -> Vec<Request> {
    api.requests()
        .into_iter()
        .filter(|r| r.status == 403)
        .collect()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_api_server_refuses_what_the_cluster_role_does_not_grant() {
    // Without this, "no 403" below could mean the fake never refuses anything.
    use k8s_openapi::api::core::v1::{Node, Pod, Secret};
    use k8s_openapi::api::events::v1::Event;
    use kube::api::{Api, ListParams};
    let m = load();
    let (api, client) = start_fake(&m, vec![]).await;
    let forbidden = |e: kube::Error| matches!(e, kube::Error::Api(s) if s.code == 403);
    assert!(forbidden(
        Api::<Node>::all(client.clone())
            .get(NODE)
            .await
            .unwrap_err()
    ));
    assert!(forbidden(
        Api::<Event>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap_err()
    ));
    assert!(forbidden(
        Api::<Secret>::namespaced(client.clone(), "kube-system")
            .list(&ListParams::default())
            .await
            .unwrap_err()
    ));
    assert!(forbidden(
        Api::<Pod>::namespaced(client.clone(), "shop")
            .delete("web-0", &Default::default())
            .await
            .unwrap_err()
    ));
    let pods = Api::<Pod>::all(client)
        .list(&ListParams::default().fields(&format!("spec.nodeName={NODE}")))
        .await
        .expect("listing this node's pods is granted");
    assert!(pods.items.is_empty());
    assert_eq!(forbidden_requests(&api).len(), 4, "{}", api.dump(20));
}

fn pod_on(node: &str, namespace: &str, name: &str, uid: &str, container_id: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": "7"},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1.25"}]},
        "status": {"containerStatuses": [{
            "name": "app", "image": "docker.io/library/nginx:1.25",
            "imageID": "docker.io/library/nginx@sha256:aa", "ready": true, "restartCount": 0,
            "containerID": format!("containerd://{container_id}"),
        }]},
    })
}

/// The state after a scan that finished now: one container and these findings.
fn node_state(
    container: &nodeguard_model::Container,
    findings: &[nodeguard_model::Finding],
) -> std::sync::Arc<nodeguard_model::NodeState> {
    use nodeguard_model::{
        NodeState, Report, ScanKind, ScanRun, ScanStats, Timestamp, TrackedFinding,
    };
    let now = Timestamp::now();
    let report = Report {
        schema_version: 1,
        node: NODE.into(),
        scanned_at: now,
        duration_ms: 1,
        containers: vec![container.clone()],
        processes: vec![],
        files: vec![],
        findings: findings.to_vec(),
        stats: ScanStats::default(),
        warnings: vec![],
    };
    let last_scans = [ScanKind::Processes, ScanKind::Filesystems]
        .into_iter()
        .map(|kind| {
            (
                kind,
                ScanRun {
                    finished_at: now,
                    duration_ms: 1,
                },
            )
        })
        .collect();
    std::sync::Arc::new(NodeState {
        report: std::sync::Arc::new(report),
        findings: findings
            .iter()
            .map(|f| TrackedFinding {
                finding: f.clone(),
                first_seen: now,
                last_seen: now,
            })
            .collect(),
        last_scans,
        policy_loaded_at: now,
        policy_weakened: vec![],
        totals: Default::default(),
        exec_events: Default::default(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_watch_and_event_publisher_need_no_more_than_the_cluster_role() {
    use nodeguard_kube::{
        EventConfig, EventPublisher, PodWatch, PolicyReportConfig, PolicyReportPublisher,
    };
    use nodeguard_model::{Finding, FindingKind, Severity};
    let m = load();
    let container_id = "c0ffee00".repeat(8);
    let pod_uid = "5b1c2d3e-0000-4000-8000-000000000001";
    let pods = vec![
        pod_on(NODE, "shop", "web-0", pod_uid, &container_id),
        pod_on("node-b", "shop", "web-1", "other-uid", &"b".repeat(64)),
    ];
    let (api, client) = start_fake(&m, pods).await;

    // As `nodeguard run` wires them (agent/src/kube.rs): the pod watch, and the publisher with
    // the DaemonSet's hostPath state dir (empty: a node the agent has never run on).
    let state_dir = tempfile::tempdir().expect("state dir");
    let watch = PodWatch::start(client.clone(), NODE);
    let (tx, rx) = tokio::sync::watch::channel(None);
    let config = EventConfig {
        state_dir: Some(state_dir.path().to_path_buf()),
        ..EventConfig::new(NODE)
    };
    let publisher = EventPublisher::start(client.clone(), config.clone(), rx.clone());
    let reports = PolicyReportPublisher::start(client.clone(), PolicyReportConfig::new(NODE), rx);

    eventually("the pod store synced", || watch.is_synced()).await;
    assert_eq!(watch.pod_count(), 1, "only this node's pods");
    let pod = watch
        .lookup()
        .pod_for(Some(pod_uid), &container_id)
        .expect("the pod watch knows the container's pod");
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str()),
        ("shop", "web-0")
    );
    assert_eq!(pod.container_name.as_deref(), Some("app"));

    let container = nodeguard_testkit::model::container(&container_id)
        .in_pod(pod_uid, Some(pod))
        .pids(&[4242])
        .build();
    let in_pod = Finding::new(
        FindingKind::DangerousCapability,
        Severity::High,
        Some(&container_id),
        "CAP_SYS_ADMIN",
        "process holds CAP_SYS_ADMIN",
    )
    .with_pid(4242);
    let on_host = Finding::new(
        FindingKind::DeletedExecutable,
        Severity::Critical,
        None,
        "/usr/sbin/evil (deleted)",
        "host process runs a deleted executable",
    )
    .with_pid(77);

    // Announce both; resolve the pod's; bring it back (a new Event: core/v1 Events are
    // created anew, never patched).
    // Each next state waits until the publisher has counted the answers, not only until the
    // fake has sent them: a state that arrives while a write is in flight is diffed against
    // the announced set from before that write.
    tx.send_replace(Some(node_state(
        &container,
        &[in_pod.clone(), on_host.clone()],
    )));
    eventually("two Warnings created", || {
        api.accepted_event_writes().len() == 2
    })
    .await;
    eventually("the publisher counted 2 answers", || {
        publisher.stats().sent == 2
    })
    .await;
    tx.send_replace(Some(node_state(&container, std::slice::from_ref(&on_host))));
    eventually("the Resolved Event created", || {
        api.accepted_event_writes().len() == 3
    })
    .await;
    eventually("the publisher counted 3 answers", || {
        publisher.stats().sent == 3
    })
    .await;
    tx.send_replace(Some(node_state(
        &container,
        &[in_pod.clone(), on_host.clone()],
    )));
    eventually("the repeat created", || {
        api.accepted_event_writes().len() == 4
    })
    .await;
    eventually("the publisher counted 4 answers", || {
        publisher.stats().sent == 4
    })
    .await;
    // The reports end as the last state says (the pod's report may have been deleted and
    // written again meanwhile): one per namespace with findings, one for the host's.
    let in_shop = |api: &FakeApi| {
        api.reports().iter().any(|r| {
            r["metadata"]["namespace"] == "shop"
                && r["results"][0]["properties"]["finding_id"] == in_pod.id.as_str()
        })
    };
    eventually("the reports caught up", || {
        reports.stats().reports == 2 && in_shop(&api)
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    eventually("the reports stayed caught up", || {
        reports.stats().reports == 2 && in_shop(&api)
    })
    .await;
    let report_stats = reports.stats();
    let stats = publisher.stats();
    drop(tx);
    publisher.join().await;
    reports.join().await;
    assert_eq!(report_stats.failed, 0, "{report_stats:?}");
    let stored = api.reports();
    assert_eq!(stored.len(), 2, "{stored:#?}");

    let writes = api.accepted_event_writes();
    let summary: Vec<String> = writes
        .iter()
        .map(|w| {
            format!(
                "{} {} {}/{}",
                w.attributes
                    .as_ref()
                    .map_or(String::new(), |a| a.to_string()),
                w.reason(),
                w.regarding_kind(),
                w.regarding()["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    let verbs: Vec<&str> = writes
        .iter()
        .filter_map(|w| w.attributes.as_ref().map(|a| a.verb.as_str()))
        .collect();
    assert_eq!(
        verbs,
        ["create", "create", "create", "create"],
        "{summary:#?}"
    );
    let pod_warning = writes
        .iter()
        .find(|w| w.regarding_kind() == "Pod")
        .unwrap_or_else(|| panic!("no Event regards the pod: {summary:#?}"));
    assert_eq!(pod_warning.regarding()["name"], "web-0");
    assert_eq!(pod_warning.regarding()["namespace"], "shop");
    assert_eq!(pod_warning.regarding()["uid"], pod_uid);
    assert!(
        writes.iter().any(|w| w.regarding_kind() == "Node"
            && w.regarding()["name"] == NODE
            && w.namespace() == "default"),
        "no Event regards the node: {summary:#?}"
    );

    assert!(
        state_dir.path().read_dir().unwrap().next().is_some(),
        "the publisher kept its announced set in the state dir"
    );

    // A restart on the same node (the hostPath state dir survives the pod): nothing is
    // announced again, and only new findings are.
    let first_start = api.requests().len();
    let (tx, rx) = tokio::sync::watch::channel(None);
    let publisher = EventPublisher::start(client.clone(), config, rx);
    let marker = Finding::new(
        FindingKind::DeletedExecutable,
        Severity::Critical,
        None,
        "/tmp/marker (deleted)",
        "host process runs a deleted executable",
    );
    tx.send_replace(Some(node_state(
        &container,
        &[in_pod.clone(), on_host.clone(), marker.clone()],
    )));
    eventually("the restarted publisher announced the new finding", || {
        api.accepted_event_writes().len() == 5
    })
    .await;
    eventually("the restarted publisher counted it", || {
        publisher.stats().sent == 1
    })
    .await;
    let restart_stats = publisher.stats();
    drop(tx);
    publisher.join().await;
    watch.stop();
    let last = api.accepted_event_writes().pop().unwrap();
    assert_eq!(last.regarding_kind(), "Node");
    assert!(
        last.note().contains("/tmp/marker"),
        "after a restart only the new finding is announced: {}",
        last.body
    );

    let forbidden: Vec<String> = api
        .requests()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == 403)
        .map(|(i, r)| {
            let phase = if i < first_start {
                "first start on a fresh node"
            } else {
                "restart with the state dir"
            };
            format!("{phase}: {}", r.line())
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "the shipped ClusterRole does not grant what the code asked for: {forbidden:#?}\n\
         publisher counters: first start {stats:?}, restart {restart_stats:?}"
    );
    for counters in [stats, restart_stats] {
        assert_eq!(
            (counters.failed, counters.rate_limited),
            (0, 0),
            "the publisher counted failures: {counters:?}"
        );
    }
    // Anything but success and 403 (listed above): 401, 400, 404, 409, 422, 5xx.
    let refused: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.status >= 400 && r.status != 403)
        .map(Request::line)
        .collect();
    assert!(refused.is_empty(), "the fake refused: {refused:#?}");

    // What the code used, against what the role grants (for the record when this fails).
    let used: BTreeSet<(String, String, String)> = api
        .requests()
        .iter()
        .filter_map(|r| r.attributes.as_ref())
        .map(|a| triple(&a.group, &a.resource, &a.verb))
        .collect();
    let granted = grants(m.cluster_role.rules.as_deref().unwrap_or_default());
    assert!(
        used.is_subset(&granted),
        "used {used:?}, granted {granted:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The DaemonSet against everything it names

#[test]
fn the_metrics_port_agrees_across_daemonset_service_servicemonitor_and_code() {
    let m = load();
    let (port_name, port) = m.metrics_port();
    assert_eq!(port_name, "http-metrics");
    assert_eq!(
        port,
        i32::from(nodeguard_api::DEFAULT_PORT),
        "the container port is the agent's default port"
    );
    let listen = m.arg("--listen").expect("the DaemonSet passes --listen");
    let listen: std::net::SocketAddr = listen.parse().expect("--listen is an address");
    assert_eq!(
        i32::from(listen.port()),
        port,
        "--listen uses the container port"
    );
    assert!(
        listen.ip().is_unspecified(),
        "--listen must accept the kubelet's probes and Prometheus from outside the pod: {listen}"
    );

    let service = m.service.spec.as_ref().expect("Service spec");
    let ports = service.ports.clone().unwrap_or_default();
    assert_eq!(ports.len(), 1, "{ports:?}");
    let target = ports[0].target_port.clone().expect("Service targetPort");
    match target {
        IntOrString::String(name) => assert_eq!(name, port_name),
        IntOrString::Int(number) => assert_eq!(number, port),
    }
    assert_eq!(ports[0].name.as_deref(), Some(port_name.as_str()));
    assert_eq!(ports[0].port, port);
    let endpoint_ports: Vec<&str> = m.service_monitor["spec"]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["port"].as_str())
        .collect();
    assert_eq!(
        endpoint_ports,
        [port_name.as_str()],
        "ServiceMonitor endpoint ports"
    );

    // The Service and the DaemonSet select the agent pods by the template's labels.
    let template_labels = m
        .daemon_set
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    for (key, value) in service.selector.clone().unwrap_or_default() {
        assert_eq!(
            template_labels.get(&key),
            Some(&value),
            "Service selector {key}"
        );
    }
    let ds_selector = m
        .daemon_set
        .spec
        .selector
        .match_labels
        .clone()
        .unwrap_or_default();
    assert!(!ds_selector.is_empty());
    for (key, value) in ds_selector {
        assert_eq!(
            template_labels.get(&key),
            Some(&value),
            "DaemonSet selector {key}"
        );
    }
}

#[test]
fn the_probes_ask_paths_the_agent_serves() {
    let m = load();
    // The probes have a listener of their own (--probe-listen), so load on the API port
    // cannot starve them.
    let (port_name, port) = m.port_named("probes");
    let listen: std::net::SocketAddr = m
        .arg("--probe-listen")
        .expect("the DaemonSet passes --probe-listen")
        .parse()
        .expect("--probe-listen is an address");
    assert_eq!(
        i32::from(listen.port()),
        port,
        "--probe-listen uses the probes port"
    );
    assert_eq!(i32::from(nodeguard_api::DEFAULT_PROBE_PORT), port);
    assert!(
        listen.ip().is_unspecified(),
        "the kubelet probes from outside the pod"
    );
    let container = m.container();
    let served = nodeguard_api::paths();
    for (which, probe, want) in [
        ("liveness", &container.liveness_probe, "/healthz"),
        ("readiness", &container.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("the {which} probe is an HTTP GET"));
        assert_eq!(get.path.as_deref(), Some(want), "{which} probe path");
        assert!(served.contains(&want), "{want} is not served: {served:?}");
        assert_eq!(
            get.port,
            IntOrString::String(port_name.clone()),
            "{which} probe port"
        );
        assert_ne!(
            get.scheme.as_deref(),
            Some("HTTPS"),
            "the probe listener stays plain HTTP (only the API port serves TLS)"
        );
    }
}

#[test]
fn every_daemonset_flag_is_accepted_by_the_real_binary() {
    let m = load();
    let args = m
        .container()
        .args
        .clone()
        .expect("the DaemonSet passes args");
    assert_eq!(
        args.first().map(String::as_str),
        Some("run"),
        "the agent runs `nodeguard run`"
    );
    assert!(
        m.container().command.is_none(),
        "the image's ENTRYPOINT is the binary; the DaemonSet gives only args"
    );
    let bin = env!("CARGO_BIN_EXE_nodeguard");
    let help = std::process::Command::new(bin)
        .args(["run", "--help"])
        .env_clear()
        .output()
        .expect("run nodeguard run --help");
    assert!(help.status.success(), "nodeguard run --help: {help:?}");
    let help = String::from_utf8_lossy(&help.stdout);
    let listed: BTreeSet<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|t| t.starts_with("--"))
        .collect();
    for arg in &args[1..] {
        assert!(
            arg.starts_with("--"),
            "{arg:?}: every arg after `run` is a --flag"
        );
        let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
        assert!(
            listed.contains(flag),
            "`nodeguard run --help` does not list {flag}; it lists {listed:?}"
        );
    }
    // clap parses and checks every value before it acts on --help: with the DaemonSet's args
    // first, a successful --help means the binary takes them all, values included.
    let parsed = std::process::Command::new(bin)
        .args(&args)
        .arg("--help")
        .env_clear()
        .output()
        .expect("run nodeguard with the DaemonSet's args");
    assert!(
        parsed.status.success(),
        "nodeguard {} --help refused the DaemonSet's args: {}",
        args.join(" "),
        String::from_utf8_lossy(&parsed.stderr)
    );
    // The node name comes from the downward API, as --node-name's env fallback expects.
    assert!(help.contains("NODE_NAME"), "--node-name reads NODE_NAME");
    let node_name = m
        .container()
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .expect("the DaemonSet sets NODE_NAME");
    let field = node_name
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("NODE_NAME comes from a fieldRef");
    assert_eq!(field.field_path, "spec.nodeName");
}

#[test]
fn the_config_flag_points_at_the_configmap_policy_and_it_loads() {
    let m = load();
    let config = m.arg("--config").expect("the DaemonSet passes --config");
    let config = Path::new(&config);
    let dir = config
        .parent()
        .expect("--config is a file path")
        .to_str()
        .unwrap();
    let key = config.file_name().unwrap().to_str().unwrap();
    let mount = m.mount_at(dir);
    assert_eq!(mount.read_only, Some(true), "the policy mount is read-only");
    assert!(
        mount.sub_path.is_none(),
        "a subPath mount would not see ConfigMap updates (SIGHUP reload)"
    );
    let volume = m.volume(&mount.name);
    let source = volume
        .config_map
        .as_ref()
        .unwrap_or_else(|| panic!("volume {} is not a ConfigMap", volume.name));
    assert_eq!(
        source.name,
        m.config_map.metadata.name.clone().unwrap_or_default()
    );
    // Without `items` every key is a file of the same name.
    let file_key = match &source.items {
        Some(items) => items
            .iter()
            .find(|i| i.path == key)
            .map(|i| i.key.clone())
            .unwrap_or_else(|| panic!("the ConfigMap volume maps no item to {key}")),
        None => key.to_string(),
    };
    let data = m.config_map.data.clone().unwrap_or_default();
    let policy = data.get(&file_key).unwrap_or_else(|| {
        panic!(
            "the ConfigMap has no key {file_key:?} (keys: {:?})",
            data.keys().collect::<Vec<_>>()
        )
    });
    let loaded = nodeguard_policy::Policy::from_yaml_str(policy, "manifests/configmap.yaml")
        .unwrap_or_else(|e| panic!("the ConfigMap's policy does not load: {e}"));
    assert!(
        loaded.is_enabled(nodeguard_model::FindingKind::HostPidNamespace),
        "the shipped policy keeps the hostPID check on (and exempts only the agent)"
    );

    // What the DaemonSet grants the agent on purpose (hostPID, hostNetwork, root, SYS_PTRACE
    // and DAC_READ_SEARCH) must not make it report itself: an exemption covers its own pods.
    let spec: Value = serde_yaml::from_str(policy).expect("policy YAML");
    let pod_name = format!(
        "{}-x7k2p",
        m.daemon_set.metadata.name.as_deref().unwrap_or_default()
    );
    let glob_matches = |pattern: &str, name: &str| match pattern.strip_suffix('*') {
        Some(prefix) if !prefix.contains(['*', '?', '[']) => name.starts_with(prefix),
        _ => {
            assert!(
                !pattern.contains(['*', '?', '[']),
                "teach this test the glob {pattern}"
            );
            pattern == name
        }
    };
    let selects = |e: &Value, field: &str, name: &str| {
        e[field].is_null()
            || items(&e[field]).any(|(_, p)| glob_matches(p.as_str().unwrap_or(""), name))
    };
    let exempted: BTreeSet<&str> = items(&spec["exemptions"])
        .map(|(_, e)| e)
        .filter(|e| selects(e, "namespaces", m.kustomize_namespace()))
        .filter(|e| selects(e, "pods", &pod_name))
        .filter(|e| selects(e, "containers", &m.container().name))
        .flat_map(|e| items(&e["kinds"]).filter_map(|(_, k)| k.as_str()))
        .collect();
    for kind in [
        "host_pid_namespace",
        "host_network_namespace",
        "runs_as_root",
        "dangerous_capability",
    ] {
        assert!(
            exempted.contains(kind),
            "the agent's own pod {}/{pod_name} would report {kind} about itself; exempted: {exempted:?}",
            m.kustomize_namespace()
        );
    }
}

#[test]
fn the_host_paths_are_mounted_where_the_flags_point() {
    let m = load();
    let cgroup_root = m
        .arg("--cgroup-root")
        .expect("the DaemonSet passes --cgroup-root");
    let mount = m.mount_at(&cgroup_root);
    assert_eq!(
        mount.read_only,
        Some(true),
        "the host cgroup tree is mounted read-only"
    );
    let host = m
        .volume(&mount.name)
        .host_path
        .as_ref()
        .expect("--cgroup-root is a hostPath volume");
    assert_eq!(host.path, "/sys/fs/cgroup");

    let state_dir = m
        .arg("--state-dir")
        .expect("the DaemonSet passes --state-dir");
    let mount = m.mount_at(&state_dir);
    assert_ne!(
        mount.read_only,
        Some(true),
        "the agent writes its state dir"
    );
    let host = m
        .volume(&mount.name)
        .host_path
        .as_ref()
        .expect("--state-dir is a hostPath volume (it must outlive the pod)");
    assert_eq!(host.type_.as_deref(), Some("DirectoryOrCreate"));

    // The image stores, read-only, where --image-stores-at puts the default store roots,
    // each with a comment saying why (image verification reads them, never writes).
    let stores_at = m
        .arg("--image-stores-at")
        .expect("the DaemonSet passes --image-stores-at");
    let text = std::fs::read_to_string(manifests_dir().join("daemonset.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let stores = [
        "/var/lib/containerd",
        "/var/lib/containers/storage",
        "/var/lib/docker",
    ];
    for store in stores {
        let at = format!("{stores_at}{store}");
        let mount = m.mount_at(&at);
        assert_eq!(mount.read_only, Some(true), "{store} is mounted read-only");
        let host = m
            .volume(&mount.name)
            .host_path
            .as_ref()
            .unwrap_or_else(|| panic!("{at} is a hostPath volume"));
        assert_eq!(host.path, store);
        let first = lines
            .iter()
            .position(|l| l.trim() == format!("mountPath: {at}"))
            .expect("mountPath line");
        // The nearest comment block above the mount gives the reason.
        let comment: Vec<&str> = lines[..first]
            .iter()
            .rev()
            .skip_while(|l| !l.trim_start().starts_with('#'))
            .take_while(|l| l.trim_start().starts_with('#'))
            .copied()
            .collect();
        let comment = comment.join(" ");
        assert!(
            comment.contains("read-only") && comment.contains("image"),
            "the mount of {store} has no comment giving its reason: {comment:?}"
        );
    }

    // Nothing else of the host is mounted: /proc comes with hostPID.
    let host_paths: Vec<&str> = m
        .pod_spec()
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.as_str()))
        .collect();
    assert_eq!(
        host_paths.len(),
        2 + stores.len(),
        "hostPath volumes: {host_paths:?}"
    );
}

#[test]
fn the_daemonset_runs_with_least_privilege() {
    let m = load();
    let pod = m.pod_spec();
    assert_eq!(
        pod.host_pid,
        Some(true),
        "hostPID: the agent must see every process"
    );
    // hostNetwork for exec-time detection only: the process-events connector answers in the
    // node's network namespace alone. That makes loopback the node's and takes the pod out of
    // NetworkPolicy, so the API must keep checking tokens, and the agent must use what it is
    // given the namespace for.
    assert_eq!(
        pod.host_network,
        Some(true),
        "hostNetwork: the process-events connector needs the node's network namespace"
    );
    assert_eq!(
        pod.dns_policy.as_deref(),
        Some("ClusterFirstWithHostNet"),
        "a hostNetwork pod keeps cluster DNS only with ClusterFirstWithHostNet"
    );
    assert_ne!(
        m.arg("--exec-events").as_deref(),
        Some("off"),
        "hostNetwork without exec events grants the node's network for nothing"
    );
    assert_ne!(
        m.arg("--tls").as_deref(),
        Some("off"),
        "with hostNetwork the API is on the node's addresses: tokens must not cross the network in clear"
    );
    for insecure in ["--insecure-unauthenticated", "--unauthenticated-metrics"] {
        assert!(
            !m.container()
                .args
                .iter()
                .flatten()
                .any(|a| a.split('=').next() == Some(insecure)),
            "{insecure}: with hostNetwork the API is on the node's addresses, beyond any NetworkPolicy"
        );
    }
    assert!(
        matches!(m.arg("--auth").as_deref(), None | Some("auto") | Some("on")),
        "the API keeps its token check"
    );
    assert_ne!(pod.host_ipc, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "a toleration with operator Exists (and no key or effect) runs the agent on every node"
    );
    let container = m.container();
    let sc = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_ne!(sc.privileged, Some(true), "no privileged mode");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    // NET_ADMIN: only to join the process-events connector; the agent drops it right after
    // (tests/realnode_daemonset.rs reads the running agent's /proc/PID/status).
    assert_eq!(
        added,
        BTreeSet::from(["SYS_PTRACE", "DAC_READ_SEARCH", "NET_ADMIN"])
    );
    // Each grant says why, in a comment right above it.
    let text = std::fs::read_to_string(manifests_dir().join("daemonset.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for cap in &added {
        let at = lines
            .iter()
            .position(|l| l.trim() == format!("- {cap}"))
            .unwrap_or_else(|| panic!("{cap} is not listed as `- {cap}` in daemonset.yaml"));
        assert!(
            at > 0 && lines[at - 1].trim_start().starts_with('#'),
            "the capability {cap} in daemonset.yaml has no comment giving its reason"
        );
    }
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );

    let resources = container.resources.as_ref().expect("resources");
    for (which, set) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let set = set.clone().unwrap_or_default();
        for name in ["cpu", "memory"] {
            assert!(set.contains_key(name), "resources.{which}.{name} is set");
        }
    }
}

#[test]
fn the_api_serves_tls_and_kubectl_exec_queries_trust_exactly_its_certificate() {
    let m = load();
    // --listen is beyond loopback (another test), so `--tls auto` serves https.
    assert!(matches!(
        m.arg("--tls").as_deref(),
        None | Some("auto") | Some("on")
    ));
    let served = m
        .arg("--tls-served-cert-file")
        .expect("the DaemonSet writes the served certificate for local queries");
    let dir = Path::new(&served)
        .parent()
        .expect("a directory")
        .to_str()
        .unwrap();
    let mount = m.mount_at(dir);
    assert_ne!(mount.read_only, Some(true), "the agent writes {served}");
    let volume = m.volume(&mount.name);
    assert!(
        volume.empty_dir.is_some(),
        "{served} lives in an emptyDir private to the pod: {volume:?}"
    );
    // `kubectl exec ds/nodeguard -- /nodeguard query` asks this agent over TLS and trusts
    // that file: the container's environment says so.
    let env: BTreeMap<String, String> = m
        .container()
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    let (_, port) = m.metrics_port();
    assert_eq!(
        env.get("NODEGUARD_URL").map(String::as_str),
        Some(format!("https://127.0.0.1:{port}").as_str())
    );
    assert_eq!(env.get("NODEGUARD_CA_FILE"), Some(&served));
    // The query flags these variables set are the binary's.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_nodeguard"))
        .args(["query", "--help"])
        .env_clear()
        .output()
        .expect("nodeguard query --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for var in ["NODEGUARD_URL", "NODEGUARD_CA_FILE"] {
        assert!(
            help.contains(&format!("env: {var}=")),
            "query --help:\n{help}"
        );
    }
    // Prometheus scrapes over TLS too.
    for (i, endpoint) in items(&m.service_monitor["spec"]["endpoints"]) {
        assert_eq!(endpoint["scheme"], "https", "endpoint {i}");
        let tls = &endpoint["tlsConfig"];
        assert!(
            tls["insecureSkipVerify"] == true || tls["ca"].is_object(),
            "endpoint {i}: a self-signed agent needs insecureSkipVerify, a CA-issued one a ca: {tls}"
        );
    }
}

#[test]
fn the_image_tag_is_the_crate_version() {
    let m = load();
    let image = m.container().image.clone().expect("image");
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
    assert_eq!(
        tag,
        env!("CARGO_PKG_VERSION"),
        "the DaemonSet's image {image} should be this release"
    );
}

// ---------------------------------------------------------------------------------------------
// Who may read the agent

/// (non-resource URL, verb) pairs a role grants.
fn non_resource_grants(role: &ClusterRole) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(
            rule.api_groups.is_none() && rule.resources.is_none() && rule.resource_names.is_none(),
            "{:?}: a reader role grants nothing on the API server's resources: {rule:?}",
            role.metadata.name
        );
        for url in rule.non_resource_urls.iter().flatten() {
            for verb in &rule.verbs {
                out.insert((url.clone(), verb.clone()));
            }
        }
    }
    out
}

/// Whether an RBAC non-resource URL rule covers `path` (exact, or a `/prefix/*` wildcard), as
/// the API server's RBAC authorizer matches them.
fn url_rule_covers(rule: &str, path: &str) -> bool {
    match rule.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => rule == path,
    }
}

#[test]
fn the_reader_roles_grant_get_on_exactly_the_urls_the_agent_checks() {
    let m = load();
    let get = |url: &str| (url.to_string(), "get".to_string());
    let metrics = &m.readers["nodeguard-metrics-reader"];
    assert_eq!(
        non_resource_grants(metrics),
        BTreeSet::from([get("/metrics")])
    );
    let api = &m.readers["nodeguard-api-reader"];
    assert_eq!(
        non_resource_grants(api),
        BTreeSet::from([get("/v1/*"), get("/metrics")])
    );
    // Every served path under /v1/ is covered by the API reader, none by the metrics reader.
    for path in nodeguard_api::paths() {
        let by_api = non_resource_grants(api)
            .iter()
            .any(|(u, _)| url_rule_covers(u, path));
        let by_metrics = non_resource_grants(metrics)
            .iter()
            .any(|(u, _)| url_rule_covers(u, path));
        match path {
            "/healthz" | "/readyz" => {} // never authenticated
            "/metrics" => assert!(by_api && by_metrics, "{path}"),
            _ => {
                assert!(path.starts_with("/v1/"), "{path}");
                assert!(by_api && !by_metrics, "{path}");
            }
        }
    }
    // Reader roles are bound by the manifests only to the fleet responder (its own test):
    // operators bind them to their Prometheus and responders. The agent's binding gives the
    // agent its own role.
    assert_eq!(m.binding.role_ref.name, "nodeguard");
}

#[test]
fn fleet_responders_list_nodes_and_leases_and_mint_only_the_responders_narrow_token() {
    let m = load();
    let ns = m.kustomize_namespace();
    // Nothing runs as the responder: it has no mounted token of its own.
    let responder: ServiceAccount = named_of_kind(&m.raw, "nodeguard-responder");
    assert_eq!(responder.metadata.namespace.as_deref(), Some(ns));
    assert_eq!(responder.automount_service_account_token, Some(false));
    // Its tokens may read the agents' API (the reader role the agents' SubjectAccessReview
    // checks), nothing more.
    let binding: ClusterRoleBinding = named_of_kind(&m.raw, "nodeguard-responder");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, "nodeguard-api-reader");
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        ("ServiceAccount", "nodeguard-responder", Some(ns))
    );
    // Responders (fleet status and query) list the Nodes cluster-wide and the agents'
    // Leases in their namespace: lists only, nothing else.
    let nodes = named_cluster_role(&m.raw, "nodeguard-fleet-reader");
    assert_eq!(
        grants(nodes.rules.as_deref().unwrap_or_default()),
        BTreeSet::from([triple("", "nodes", "list")])
    );
    let leases = named_role(&m.raw, "nodeguard-fleet-reader");
    assert_eq!(leases.metadata.namespace.as_deref(), Some(ns));
    assert_eq!(
        grants(&leases.rules.unwrap_or_default()),
        BTreeSet::from([triple("coordination.k8s.io", "leases", "list")])
    );
    // A query also mints a token for that one ServiceAccount, in the agents' namespace
    // only; the Role grants nothing the reader roles already do.
    let role: Role = named_of_kind(&m.raw, "nodeguard-fleet-query");
    assert_eq!(role.metadata.namespace.as_deref(), Some(ns));
    let rules = role.rules.unwrap_or_default();
    assert_eq!(
        grants(&rules),
        BTreeSet::from([triple("", "serviceaccounts/token", "create")])
    );
    for rule in &rules {
        assert_eq!(
            rule.resource_names.as_deref(),
            Some(&["nodeguard-responder".to_string()][..]),
            "the token grant must name the responder only, never the agent's identity"
        );
    }
}

#[test]
fn the_service_monitor_sends_a_token() {
    let m = load();
    for endpoint in m.service_monitor["spec"]["endpoints"].as_array().unwrap() {
        let file = endpoint["bearerTokenFile"].as_str();
        let authorization = &endpoint["authorization"];
        assert!(
            file == Some("/var/run/secrets/kubernetes.io/serviceaccount/token")
                || authorization["credentials"].is_object(),
            "every scrape endpoint sends a bearer token: {endpoint}"
        );
    }
}

#[test]
fn the_network_policy_admits_prometheus_to_the_api_and_anyone_to_the_probes_only() {
    let m = load();
    let policy = &m.network_policy;
    assert_eq!(
        policy.metadata.namespace.as_deref(),
        Some("nodeguard"),
        "the NetworkPolicy lives with the agent"
    );
    let spec = policy.spec.as_ref().expect("NetworkPolicy spec");
    let template_labels = m
        .daemon_set
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    let selector = spec
        .pod_selector
        .clone()
        .unwrap_or_default()
        .match_labels
        .unwrap_or_default();
    assert!(
        !selector.is_empty(),
        "the policy selects the agent pods, not every pod"
    );
    for (key, value) in &selector {
        assert_eq!(template_labels.get(key), Some(value), "podSelector {key}");
    }
    assert_eq!(spec.policy_types.clone().unwrap_or_default(), ["Ingress"]);
    let (api_name, _) = m.metrics_port();
    let (probe_name, _) = m.port_named("probes");
    let rules = spec.ingress.clone().unwrap_or_default();
    let port_names = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
        rule.ports
            .iter()
            .flatten()
            .map(|p| match p.port.clone() {
                Some(IntOrString::String(name)) => name,
                other => panic!("ports are named, as in the DaemonSet: {other:?}"),
            })
            .collect::<Vec<_>>()
    };
    // Every rule names its ports (a rule without ports would open all of them).
    for rule in &rules {
        assert!(!port_names(rule).is_empty(), "{rule:?}");
    }
    let api_rules: Vec<_> = rules
        .iter()
        .filter(|r| port_names(r).contains(&api_name))
        .collect();
    assert_eq!(api_rules.len(), 1, "one rule admits to the API port");
    let from = api_rules[0].from.clone().unwrap_or_default();
    assert!(
        !from.is_empty()
            && from
                .iter()
                .all(|peer| peer.namespace_selector.is_some() && peer.pod_selector.is_some()),
        "only selected pods in selected namespaces reach the API port: {from:?}"
    );
    assert_eq!(port_names(api_rules[0]), [api_name]);
    let open: Vec<_> = rules.iter().filter(|r| r.from.is_none()).collect();
    assert!(
        open.iter().all(|r| port_names(r) == [probe_name.clone()]),
        "only the probe port is open to every peer: {open:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The opt-in writable-layer event source (manifests/optional/fs-events)

/// Applies JSON-patch `add` operations (the only kind the component uses) to `target`.
fn apply_adds(target: &mut Value, ops: &Value) {
    for op in ops.as_array().expect("a JSON 6902 patch is a list") {
        assert_eq!(op["op"], "add", "only add operations: {op}");
        let path = op["path"].as_str().expect("path");
        let (parent, last) = path.rsplit_once('/').expect("a path with a parent");
        let at = target
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("{parent} is not in the DaemonSet"));
        match (at, last) {
            (Value::Array(items), "-") => items.push(op["value"].clone()),
            (Value::Object(fields), key) => {
                fields.insert(key.to_string(), op["value"].clone());
            }
            (other, key) => panic!("cannot add {key} to {other}"),
        }
    }
}

#[test]
fn the_fs_events_component_adds_sys_admin_and_the_flag_and_nothing_else() {
    let m = load();
    let dir = manifests_dir().join("optional/fs-events");
    let kustomization = read_value(&dir.join("kustomization.yaml"));
    assert_eq!(kustomization["kind"], "Component", "{kustomization}");
    let patch = &kustomization["patches"][0];
    assert_eq!(patch["target"]["kind"], "DaemonSet");
    assert_eq!(
        patch["target"]["name"],
        m.daemon_set.metadata.name.clone().unwrap()
    );
    let ops = read_value(&dir.join(patch["path"].as_str().expect("patch path")));

    // The default DaemonSet asks for no CAP_SYS_ADMIN and runs with the source off.
    let caps = |c: &Container| -> Vec<String> {
        c.security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.clone())
            .unwrap_or_default()
    };
    let env = |c: &Container, name: &str| -> Option<String> {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert!(!caps(m.container()).contains(&"SYS_ADMIN".to_string()));
    assert_eq!(env(m.container(), "NODEGUARD_FS_EVENTS"), None);
    assert!(m.arg("--fs-events").is_none());

    let mut patched = serde_json::to_value(&m.daemon_set).expect("serialize");
    apply_adds(&mut patched, &ops);
    let patched: DaemonSet = serde_json::from_value(patched).expect("still a DaemonSet");
    let spec = patched.spec.template.spec.as_ref().expect("pod spec");
    let container = &spec.containers[0];
    let mut want = caps(m.container());
    want.push("SYS_ADMIN".into());
    assert_eq!(caps(container), want);
    assert_eq!(
        env(container, "NODEGUARD_FS_EVENTS").as_deref(),
        Some("fanotify")
    );

    // Nothing else moved: undo the two additions and compare.
    let mut back = patched.clone();
    let c = &mut back.spec.template.spec.as_mut().unwrap().containers[0];
    c.security_context
        .as_mut()
        .unwrap()
        .capabilities
        .as_mut()
        .unwrap()
        .add
        .as_mut()
        .unwrap()
        .pop();
    c.env.as_mut().unwrap().pop();
    assert_eq!(back, m.daemon_set);
}
