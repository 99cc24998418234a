//! The Helm chart: it lints, renders deterministically into objects that kubeconform accepts
//! strictly, rejects bad values with a message naming the value, and asks for no more RBAC
//! than the operator needs.

use std::{collections::BTreeSet, path::PathBuf};

use cogo_e2e::{KUBERNETES_VERSION, repo, run, run_ok, schemas, tool};
use serde_json::Value;

fn chart() -> String {
    repo().join("charts/cogo-operator").to_string_lossy().into_owned()
}

fn render(extra: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "cogo",
        chart.as_str(),
        "--namespace",
        "cogo-system",
        "--kube-version",
        KUBERNETES_VERSION,
    ];
    args.extend_from_slice(extra);
    run_ok(&tool("helm"), &args, None)
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// The OpenAPI document of the Kubernetes release the project targets.
fn swagger() -> PathBuf {
    if let Some(p) = std::env::var_os("COGO_K8S_SWAGGER") {
        return p.into();
    }
    let out = std::process::Command::new("go")
        .args(["env", "GOMODCACHE"])
        .output();
    let modcache = out
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let p = PathBuf::from(modcache).join(format!(
        "k8s.io/kubernetes@v{KUBERNETES_VERSION}/api/openapi-spec/swagger.json"
    ));
    assert!(
        p.is_file(),
        "Kubernetes' OpenAPI document is missing ({}): run `make tools`, which downloads the k8s.io/kubernetes \
         module, or set COGO_K8S_SWAGGER",
        p.display()
    );
    p
}

/// A directory with strict schemas for every kind in `objects` and for Cogo's CRDs.
fn schema_dir(objects: &[Value]) -> tempdir::Dir {
    let dir = tempdir::Dir::new("schemas");
    let kinds: BTreeSet<(String, String)> = objects
        .iter()
        .filter(|d| d["apiVersion"] != "cogo.xyz/v1alpha1")
        .map(|d| {
            (
                d["apiVersion"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let missing = schemas::write_builtin(&swagger(), &kinds, dir.path());
    assert!(missing.is_empty(), "no schema for {missing:?}");
    assert_eq!(schemas::write_crds(&repo().join("crds"), dir.path()), 3);
    dir
}

fn kubeconform(dir: &tempdir::Dir, input: &str) -> std::process::Output {
    let location = format!(
        "{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        dir.path().display()
    );
    run(
        &tool("kubeconform"),
        &["-strict", "-summary", "-schema-location", &location, "-"],
        Some(input.as_bytes()),
    )
}

mod tempdir {
    //! A directory removed when dropped.
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> Self {
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p = std::env::temp_dir().join(format!("cogo-{prefix}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn chart_lints() {
    run_ok(
        &tool("helm"),
        &["lint", "--strict", &chart(), "--kube-version", KUBERNETES_VERSION],
        None,
    );
}

#[test]
fn rendered_chart_passes_strict_kubeconform() {
    let yaml = render(&[]);
    let objects = docs(&yaml);
    let kinds: BTreeSet<_> = objects
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    for k in [
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
    ] {
        assert!(kinds.contains(k), "chart renders no {k}: {kinds:?}");
    }
    let dir = schema_dir(&objects);
    let out = kubeconform(&dir, &yaml);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains(&format!("Valid: {}", objects.len())), "{report}");
}

#[test]
fn kubeconform_with_these_schemas_catches_unknown_fields() {
    // Without this, a schema that accepts anything would let the test above pass.
    let yaml = render(&[]).replace(
        "revisionHistoryLimit: 3",
        "revisionHistoryLimit: 3\n  replicaz: 2",
    );
    let objects = docs(&yaml);
    let out = kubeconform(&schema_dir(&objects), &yaml);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replicaz"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn examples_pass_strict_kubeconform() {
    let mut all = String::new();
    for f in ["secrets.yaml", "agents.yaml", "workers.yaml", "tasks.yaml"] {
        all.push_str(&std::fs::read_to_string(repo().join("examples").join(f)).unwrap());
        all.push_str("\n---\n");
    }
    let objects = docs(&all);
    let out = kubeconform(&schema_dir(&objects), &all);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains(&format!("Valid: {}", objects.len())), "{report}");
}

#[test]
fn rendering_is_deterministic() {
    assert_eq!(
        render(&[]),
        render(&[]),
        "two renders differ: Argo CD would re-sync forever"
    );
}

#[test]
fn bad_values_are_rejected_naming_the_value() {
    let cases = [
        ("replicaCount=-1", "/replicaCount"),
        ("logging.format=xml", "/logging/format"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("service.brokerPort=70000", "/service/brokerPort"),
        ("resyncSeconds=1", "/resyncSeconds"),
        ("coalesceMillis=20000", "/coalesceMillis"),
        (
            "runtimeImages.agent.repository=",
            "/runtimeImages/agent/repository",
        ),
        ("replicas=3", "'replicas' not allowed"),
        ("supabase.secretName=Not_A_Name", "/supabase/secretName"),
        (
            "limits.runningTasksPerNamespace=-1",
            "/limits/runningTasksPerNamespace",
        ),
        ("limits.queuedPerNamespace=5", "'queuedPerNamespace' not allowed"),
        ("tracing.otlpEndpoint=collector:4318", "/tracing/otlpEndpoint"),
        ("tracing.sampler=sometimes", "/tracing/sampler"),
    ];
    let chart = chart();
    for (set, expected) in cases {
        let out = run(
            &tool("helm"),
            &[
                "template",
                "cogo",
                &chart,
                "--kube-version",
                KUBERNETES_VERSION,
                "--set",
                set,
            ],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(
            err.contains(expected),
            "{set}: error does not name {expected}: {err}"
        );
    }
}

#[test]
fn rbac_is_least_privilege() {
    let objects = docs(&render(&[]));
    let by_kind = |k: &str| {
        objects
            .iter()
            .filter(|d| d["kind"] == k)
            .cloned()
            .collect::<Vec<_>>()
    };
    let cluster = by_kind("ClusterRole");
    assert_eq!(cluster.len(), 1);
    let mut granted = BTreeSet::new();
    for rule in cluster[0]["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for res in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let (g, r, v) = (
                        group.as_str().unwrap(),
                        res.as_str().unwrap(),
                        verb.as_str().unwrap(),
                    );
                    assert!(
                        g != "*" && r != "*" && v != "*",
                        "wildcard in the ClusterRole: {rule}"
                    );
                    granted.insert(format!("{g}/{r}:{v}"));
                }
            }
        }
    }
    for forbidden in [
        "/secrets:update",
        "/secrets:delete",
        "apps/deployments:delete",
        "coordination.k8s.io/leases:get",
        "cogo.xyz/cogoagents:update",
        "cogo.xyz/cogoagents:patch",
        "cogo.xyz/cogoworkers:patch",
        "cogo.xyz/cogoagents:delete",
        "/pods:delete",
    ] {
        assert!(!granted.contains(forbidden), "the ClusterRole grants {forbidden}");
    }
    for needed in [
        "cogo.xyz/cogoagents:watch",
        "cogo.xyz/cogoagents/status:patch",
        "apps/deployments:patch",
        "policy/poddisruptionbudgets:delete",
        "networking.k8s.io/networkpolicies:patch",
        "events.k8s.io/events:create",
        "cogo.xyz/agenttasks:create",
        "cogo.xyz/agenttasks:delete",
    ] {
        assert!(granted.contains(needed), "the ClusterRole lacks {needed}");
    }
    let namespaces: Vec<&serde_json::Value> = cluster[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "namespaces")
        })
        .collect();
    assert_eq!(
        namespaces,
        [
            &serde_json::json!({"apiGroups": [""], "resources": ["namespaces"], "resourceNames": ["kube-system"], "verbs": ["get"]})
        ],
        "namespaces: only kube-system, only read (it names the cluster)"
    );
    let roles = by_kind("Role");
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0]["metadata"]["namespace"], "cogo-system");
    assert_eq!(roles[0]["rules"][0]["resources"][0], "leases");
    assert_eq!(
        roles[0]["rules"][1],
        serde_json::json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]}),
        "pods, for the leader label (its own, and stale ones of others), in its namespace only"
    );
}

/// Only the leader receives broker traffic; every replica's metrics are reachable.
#[test]
fn the_broker_service_reaches_only_the_leader() {
    let objects = docs(&render(&["--set", "replicaCount=2"]));
    let service = |name: &str| {
        objects
            .iter()
            .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Service {name}"))
            .clone()
    };
    let broker = service("cogo-cogo-operator");
    assert_eq!(broker["spec"]["selector"]["cogo.xyz/leader"], "true");
    assert_eq!(broker["spec"]["ports"].as_array().unwrap().len(), 1);
    assert_eq!(broker["spec"]["ports"][0]["name"], "broker");
    let metrics = service("cogo-cogo-operator-metrics");
    assert!(metrics["spec"]["selector"].get("cogo.xyz/leader").is_none());
    assert_eq!(metrics["spec"]["ports"][0]["name"], "metrics");
    let d = objects.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "COGO_LABEL_LEADER_POD" && e["value"] == "true"),
        "{env}"
    );
}

#[test]
fn only_agent_pods_reach_the_broker_and_only_monitoring_the_metrics() {
    let objects = docs(&render(&[]));
    let policy = objects
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("a NetworkPolicy by default");
    let d = objects.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"], d["spec"]["selector"]["matchLabels"],
        "it selects the operator's pods"
    );
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "nothing else may connect: {rules:?}");
    assert_eq!(
        rules[0]["ports"],
        serde_json::json!([{"port": "broker", "protocol": "TCP"}])
    );
    assert_eq!(
        rules[0]["from"],
        serde_json::json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "cogo-agent", "app.kubernetes.io/managed-by": "cogo-operator"}}}])
    );
    assert_eq!(
        rules[1]["ports"],
        serde_json::json!([{"port": "metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        rules[1]["from"],
        serde_json::json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
    );
    let named: BTreeSet<String> = d["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert!(named.contains("broker") && named.contains("metrics"), "{named:?}");

    let other = docs(&render(&[
        "--set",
        "networkPolicy.metricsNamespaceSelector.matchLabels.team=observability",
    ]));
    let policy = other.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    assert_eq!(
        policy["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]["team"],
        "observability"
    );
    let off = docs(&render(&["--set", "networkPolicy.enabled=false"]));
    assert!(off.iter().all(|d| d["kind"] != "NetworkPolicy"));
}

#[test]
fn operator_pod_is_locked_down_and_wired() {
    let objects = docs(&render(&["--set", "runtimeImages.pullPolicy=Never"]));
    let d = objects.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let env: Vec<_> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].clone()))
        .collect();
    let get = |n: &str| {
        env.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        get("COGO_BROKER_URL"),
        "http://cogo-cogo-operator.cogo-system.svc:8080"
    );
    assert_eq!(get("COGO_AGENT_IMAGE"), "cogo-agent:0.1.0");
    assert_eq!(get("COGO_IMAGE_PULL_POLICY"), "Never");
    assert_eq!(get("COGO_SUPABASE_SECRET"), Value::Null, "no mirror unless asked");
    assert_eq!(
        get("COGO_MAX_QUEUED_TASKS_PER_NAMESPACE"),
        "0",
        "no task limit unless asked"
    );
    assert_eq!(get("COGO_MAX_RUNNING_TASKS_PER_NAMESPACE"), "0");
    assert_eq!(get("COGO_MAX_SUBTASKS_PER_TASK"), "100");
    assert_eq!(pod["serviceAccountName"], "cogo-cogo-operator");

    let objects = docs(&render(&[
        "--set",
        "supabase.secretName=supabase-db",
        "--set",
        "supabase.intakeNamespace=chat",
        "--set",
        "limits.runningTasksPerNamespace=20",
    ]));
    let d = objects.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "COGO_SUPABASE_SECRET" && e["value"] == "supabase-db"),
        "{env}"
    );
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "COGO_INTAKE_NAMESPACE" && e["value"] == "chat"),
        "{env}"
    );
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "COGO_MAX_RUNNING_TASKS_PER_NAMESPACE" && e["value"] == "20"),
        "{env}"
    );
}

/// The values that turn the gateway on.
const GATEWAY_ON: [&str; 10] = [
    "--set",
    "gateway.enabled=true",
    "--set",
    "supabase.secretName=supabase-db",
    "--set",
    "supabase.intakeNamespace=chat",
    "--set",
    "gateway.jwtSecretName=supabase-jwt",
    "--set",
    "gateway.issuer=https://example.supabase.co/auth/v1",
];

#[test]
fn traces_are_off_by_default_and_sent_by_the_operator_and_the_gateway_when_on() {
    let gateway = GATEWAY_ON;
    let otel = |objects: &[Value]| -> Vec<(String, String, String)> {
        objects
            .iter()
            .filter(|d| d["kind"] == "Deployment")
            .flat_map(|d| {
                let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
                d["spec"]["template"]["spec"]["containers"][0]["env"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| e["name"].as_str().is_some_and(|n| n.starts_with("OTEL_")))
                    .map(move |e| {
                        (
                            name.clone(),
                            e["name"].as_str().unwrap().to_string(),
                            e["value"].as_str().unwrap_or("").to_string(),
                        )
                    })
            })
            .collect()
    };
    assert_eq!(
        otel(&docs(&render(&gateway))),
        vec![],
        "no traces unless an endpoint is set"
    );
    let mut on = gateway.to_vec();
    on.extend([
        "--set",
        "tracing.otlpEndpoint=http://otel-collector.monitoring:4318",
        "--set",
        "tracing.sampler=parentbased_traceidratio",
        "--set",
        "tracing.samplerArg=0.25",
    ]);
    let got = otel(&docs(&render(&on)));
    for deployment in ["cogo-cogo-operator", "cogo-cogo-operator-gateway"] {
        for (var, value) in [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://otel-collector.monitoring:4318",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ] {
            assert!(
                got.contains(&(deployment.to_string(), var.to_string(), value.to_string())),
                "{deployment} {var}={value}: {got:?}"
            );
        }
    }
    assert_eq!(got.len(), 6, "{got:?}");
}

/// The gateway is off unless asked for; on, it has its own least-privilege identity, pods the
/// operator's Services do not select, and refuses settings it cannot run with.
#[test]
fn the_gateway_is_off_by_default_and_runs_apart_when_on() {
    let off = docs(&render(&[]));
    assert!(
        !off.iter().any(|d| d["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-gateway"))),
        "no gateway unless gateway.enabled"
    );
    let on = GATEWAY_ON;
    let yaml = render(&on);
    let objects = docs(&yaml);
    let named = |kind: &str| {
        objects
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == "cogo-cogo-operator-gateway")
            .unwrap_or_else(|| panic!("no gateway {kind}"))
            .clone()
    };
    let deployment = named("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "cogo-cogo-operator-gateway");
    assert_eq!(pod["containers"][0]["args"], serde_json::json!(["gateway"]));
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let by_name = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(by_name("COGO_GATEWAY_NAMESPACE")["value"], "chat");
    assert_eq!(
        by_name("COGO_GATEWAY_DATABASE_URL")["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "supabase-db", "key": "url"}),
        "secrets come from Secrets, never from values"
    );
    assert_eq!(
        by_name("COGO_GATEWAY_JWT_SECRET")["valueFrom"]["secretKeyRef"]["name"],
        "supabase-jwt"
    );
    // The database Secret's CA, as the operator reads it, when the Secret has one.
    let ca = by_name("COGO_GATEWAY_DATABASE_CA_FILE")["value"]
        .as_str()
        .unwrap()
        .to_string();
    let volume = &pod["volumes"][0]["secret"];
    assert_eq!(volume["secretName"], "supabase-db");
    assert_eq!(volume["optional"], true);
    assert_eq!(volume["items"][0]["key"], "ca.crt");
    assert_eq!(
        format!(
            "{}/{}",
            pod["containers"][0]["volumeMounts"][0]["mountPath"]
                .as_str()
                .unwrap(),
            volume["items"][0]["path"].as_str().unwrap()
        ),
        ca
    );
    // The operator's Services never select gateway pods.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for s in objects.iter().filter(|d| d["kind"] == "Service") {
        let selector = s["spec"]["selector"].as_object().unwrap();
        let selects = selector.iter().all(|(k, v)| labels[k] == *v);
        let is_gateway = s["metadata"]["name"] == "cogo-cogo-operator-gateway";
        assert_eq!(selects, is_gateway, "{}", s["metadata"]["name"]);
    }
    // Read-only on the cogo.xyz kinds, Events, and only in the namespace it serves.
    let role = named("Role");
    assert_eq!(role["metadata"]["namespace"], "chat");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": ["cogo.xyz"], "resources": ["cogoagents", "cogoworkers", "agenttasks"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
        ])
    );
    assert_eq!(
        named("RoleBinding")["subjects"][0]["name"],
        "cogo-cogo-operator-gateway"
    );
    let dir = schema_dir(&objects);
    let out = kubeconform(&dir, &yaml);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // Each missing setting is refused, naming it.
    for (drop, expected) in [
        ("supabase.intakeNamespace=", "supabase.intakeNamespace"),
        ("supabase.secretName=", "gateway.databaseSecretName"),
        ("gateway.jwtSecretName=", "gateway.jwksUrl"),
        ("gateway.issuer=", "gateway.issuer"),
        ("gateway.userRate=fast", "/gateway/userRate"),
    ] {
        let mut args: Vec<&str> = on.to_vec();
        args.extend(["--set", drop]);
        let mut cmd = vec!["template", "cogo"];
        let chart = chart();
        cmd.extend([chart.as_str(), "--kube-version", KUBERNETES_VERSION]);
        cmd.extend(args);
        let out = run(&tool("helm"), &cmd, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{drop} was accepted");
        assert!(err.contains(expected), "{drop}: {err}");
    }
}

/// The intake serves more namespaces than its first, one per tenant's gateway; a gateway whose
/// namespace the intake does not serve is refused, as its tasks would never be taken in.
#[test]
fn the_intake_serves_each_tenant_s_gateway_namespace() {
    let mut args: Vec<&str> = GATEWAY_ON.to_vec();
    args.extend([
        "--set",
        "supabase.intakeNamespaces={tenant-b,chat}",
        "--set",
        "gateway.namespace=tenant-b",
    ]);
    let objects = docs(&render(&args));
    // The env of the Deployment `name`'s first container.
    let env_of = |name: &str| -> Vec<Value> {
        let d = objects
            .iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Deployment {name}"));
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .clone()
    };
    let env = env_of("cogo-cogo-operator");
    let intake = env.iter().find(|e| e["name"] == "COGO_INTAKE_NAMESPACE").unwrap();
    assert_eq!(
        intake["value"], "chat,tenant-b",
        "the first, then the others, once each"
    );
    let env = env_of("cogo-cogo-operator-gateway");
    assert!(
        env.iter()
            .any(|e| e["name"] == "COGO_GATEWAY_NAMESPACE" && e["value"] == "tenant-b"),
        "the gateway serves tenant-b: {env:?}"
    );

    let gateway_on = |set: &'static str| [&GATEWAY_ON[..], &["--set", set]].concat();
    for (args, expected) in [
        (
            gateway_on("gateway.namespace=elsewhere"),
            "gateway.namespace elsewhere is not one the intake serves",
        ),
        (
            gateway_on("supabase.intakeNamespaces={Tenant_B}"),
            "/supabase/intakeNamespaces/0",
        ),
        (
            vec![
                "--set",
                "supabase.secretName=db",
                "--set",
                "supabase.intakeNamespaces={tenant-b}",
            ],
            "supabase.intakeNamespaces needs supabase.intakeNamespace",
        ),
    ] {
        let set = args.join(" ");
        let chart = chart();
        let mut cmd = vec![
            "template",
            "cogo",
            chart.as_str(),
            "--kube-version",
            KUBERNETES_VERSION,
        ];
        cmd.extend(args);
        let out = run(&tool("helm"), &cmd, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(err.contains(expected), "{set}: {err}");
    }
}

/// ServiceMonitor, PrometheusRule and dashboard are off by default; each comes alone when
/// asked, and the ServiceMonitor scrapes the metrics Service of every replica, not the broker.
#[test]
fn monitoring_is_off_by_default_and_each_part_comes_alone() {
    let kinds = |extra: &[&str]| -> Vec<String> {
        docs(&render(extra))
            .iter()
            .filter(|d| {
                matches!(d["kind"].as_str(), Some("ServiceMonitor" | "PrometheusRule"))
                    || d["metadata"]["name"] == "cogo-cogo-operator-dashboard"
            })
            .map(|d| d["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(kinds(&[]).is_empty());
    for (value, kind) in [
        ("monitoring.serviceMonitor.enabled=true", "ServiceMonitor"),
        ("monitoring.prometheusRule.enabled=true", "PrometheusRule"),
        ("monitoring.grafanaDashboard.enabled=true", "ConfigMap"),
    ] {
        assert_eq!(kinds(&["--set", value]), [kind], "{value}");
    }

    let objects = docs(&render(&[
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "monitoring.serviceMonitor.labels.release=prom",
    ]));
    let monitor = objects.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    let wanted = monitor["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let selected: Vec<_> = objects
        .iter()
        .filter(|d| d["kind"] == "Service")
        .filter(|s| wanted.iter().all(|(k, v)| &s["metadata"]["labels"][k] == v))
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(selected, ["cogo-cogo-operator-metrics"]);

    let objects = docs(&render(&["--set", "monitoring.grafanaDashboard.enabled=true"]));
    let dashboard = objects
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the dashboard's ConfigMap, labelled for Grafana's sidecar");
    let json: Value = serde_json::from_str(dashboard["data"]["cogo.json"].as_str().unwrap()).expect("JSON");
    assert_eq!(json["uid"], "cogo-operator");
}

/// The alerts pass `promtool check rules`, and each fires when it should and not before, by
/// the unit tests in tests/monitoring/alerts-test.yaml (`promtool test rules`).
#[test]
fn the_alerts_pass_promtool_and_their_unit_tests() {
    let promtool = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .expect("promtool is missing: install Debian's prometheus package (apt-get install prometheus)");
    let objects = docs(&render(&["--set", "monitoring.prometheusRule.enabled=true"]));
    let rule = objects.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
    let dir = std::env::temp_dir().join(format!("cogo-alerts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // JSON is YAML: the rule file is the PrometheusRule's spec.
    std::fs::write(dir.join("rules.yaml"), rule["spec"].to_string()).unwrap();
    std::fs::copy(
        repo().join("tests/monitoring/alerts-test.yaml"),
        dir.join("alerts-test.yaml"),
    )
    .unwrap();
    let alerts: Vec<_> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect();
    let tests = std::fs::read_to_string(dir.join("alerts-test.yaml")).unwrap();
    for alert in &alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has a unit test"
        );
    }
    let checked = run(
        &promtool,
        &["check", "rules", dir.join("rules.yaml").to_str().unwrap()],
        None,
    );
    let tested = std::process::Command::new(&promtool)
        .args(["test", "rules", "alerts-test.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let says = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(checked.status.success(), "{}", says(&checked));
    assert!(says(&checked).contains(&format!("{} rules found", alerts.len())));
    assert!(tested.status.success(), "{}", says(&tested));
}
