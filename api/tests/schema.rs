//! Checks of the generated CRDs: they are current on disk, every schema node is described, the
//! examples are valid, and every bad input the schema's CEL rules reject is rejected with a
//! message naming the field.

use std::path::PathBuf;

use cogo_api::{AgentTask, CogoAgent, CogoWorker, crdgen};
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn generated_crds_are_current() {
    for dir in ["crds", "charts/cogo-operator/crds"] {
        for (file, crd) in crdgen::all() {
            let path = repo().join(dir).join(file);
            let on_disk = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
            assert!(
                on_disk == crdgen::render(&crd).unwrap(),
                "{} is stale; run `make crds` and commit the result",
                path.display()
            );
        }
    }
}

#[test]
fn the_broker_openapi_document_is_current_and_complete() {
    let path = repo().join(cogo_api::openapi::FILE);
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
    assert!(
        on_disk == cogo_api::openapi::render(),
        "{} is stale; run `make crds` and commit the result",
        path.display()
    );
    let doc = cogo_api::openapi::broker();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "LeaseRequest",
        "LeasedTask",
        "CompleteRequest",
        "SubtaskRequest",
        "TaskView",
        "ErrorBody",
        "WorkerReport",
        "WorkerKeySet",
    ] {
        assert!(schemas.contains_key(name), "{name} is not in the document");
    }
    // Every $ref resolves, and requests refuse unknown fields as the broker does.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
    assert_eq!(schemas["LeaseRequest"]["additionalProperties"], false);
    let ops: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        ops, 8,
        "lease, heartbeat, complete, subtasks, cancelSubtask, get, reportWorkers, workerKeys"
    );
    assert_eq!(
        doc["paths"]["/v1/worker-keys"]["get"]["security"],
        serde_json::json!([]),
        "the public keys need no token"
    );
}

#[test]
fn the_gateway_openapi_document_is_current_and_complete() {
    let path = repo().join(cogo_api::openapi::GATEWAY_FILE);
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
    assert!(
        on_disk == cogo_api::openapi::render_gateway(),
        "{} is stale; run `make crds` and commit the result",
        path.display()
    );
    let doc = cogo_api::openapi::gateway();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/functions/v1/chat-gateway", "post"),
        ("/v1/status", "get"),
        ("/v1/languages", "get"),
        ("/v1/greeting", "post"),
        ("/v1/messages", "post"),
        ("/v1/tasks", "post"),
    ] {
        let op = &paths[path][method];
        for code in ["401", "403", "429"] {
            assert!(op["responses"].get(code).is_some(), "{path} documents no {code}");
        }
    }
    // The Edge Function's body names its action, one of the seed's five.
    let edge = serde_json::to_string(&schemas["EdgeRequest"]).unwrap();
    for action in ["status", "languages", "ai_greeting", "send_message", "agent_task"] {
        assert!(
            edge.contains(&format!("\"{action}\"")),
            "{action} is not an action"
        );
    }
    assert_eq!(schemas["TaskRequest"]["additionalProperties"], false);
}

fn schema_of(file: &str) -> Value {
    let (_, crd) = crdgen::all().into_iter().find(|(f, _)| *f == file).unwrap();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// Walks every property of a schema and collects the paths that have no description.
fn undescribed(schema: &Value, path: &str, out: &mut Vec<String>) {
    let described = schema
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| !d.trim().is_empty());
    if !described {
        out.push(if path.is_empty() {
            "<root>".into()
        } else {
            path.into()
        });
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            undescribed(sub, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.get("properties").is_some()) {
        // List items are described by their list; descend for their properties only.
        if let Some(props) = items.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                undescribed(sub, &format!("{path}[].{name}"), out);
            }
        }
    }
    if let Some(extra) = schema
        .get("additionalProperties")
        .filter(|a| a.get("properties").is_some())
    {
        undescribed(extra, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_schema_node_has_a_description() {
    for (file, _) in crdgen::all() {
        let schema = schema_of(file);
        let root = schema["description"].as_str().unwrap_or_default();
        assert!(
            !root.contains("Auto-generated"),
            "{file}: root description is the derive's placeholder"
        );
        let mut missing = Vec::new();
        undescribed(&schema, "", &mut missing);
        // metadata is Kubernetes' own ObjectMeta, described by the API server.
        missing.retain(|p| p != ".metadata");
        assert!(
            missing.is_empty(),
            "{file}: properties without description: {missing:#?}"
        );
    }
}

#[test]
fn crds_have_names_columns_and_subresources() {
    for (file, crd) in crdgen::all() {
        assert_eq!(crd.spec.group, "cogo.xyz");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["cogo".to_string()][..]),
            "{file}"
        );
        assert_eq!(
            crd.spec.names.short_names.as_ref().map(Vec::len),
            Some(1),
            "{file}"
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        let sub = v.subresources.as_ref().unwrap();
        assert!(sub.status.is_some(), "{file}: status subresource");
        let scale = sub.scale.is_some();
        assert_eq!(
            scale,
            file != "cogo.xyz_agenttasks.yaml",
            "{file}: scale subresource only on pools"
        );
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert!(cols.contains(&"Age"), "{file}: {cols:?}");
    }
}

/// Every Cogo object in examples/, parsed as YAML documents.
fn examples() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs
            .into_iter()
            .filter(|d| d["apiVersion"] == "cogo.xyz/v1alpha1")
        {
            out.push((
                format!(
                    "{}:{}",
                    path.file_name().unwrap().to_string_lossy(),
                    doc["metadata"]["name"]
                ),
                doc,
            ));
        }
    }
    out
}

fn file_for(kind: &str) -> &'static str {
    match kind {
        "CogoAgent" => "cogo.xyz_cogoagents.yaml",
        "CogoWorker" => "cogo.xyz_cogoworkers.yaml",
        "AgentTask" => "cogo.xyz_agenttasks.yaml",
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn examples_parse_and_pass_every_rule() {
    let all = examples();
    for kind in ["CogoAgent", "CogoWorker", "AgentTask"] {
        assert!(
            all.iter().any(|(_, d)| d["kind"] == kind),
            "examples/ has no {kind}"
        );
    }
    for (name, doc) in all {
        let kind = doc["kind"].as_str().unwrap();
        match kind {
            "CogoAgent" => drop(serde_json::from_value::<CogoAgent>(doc.clone()).expect(&name)),
            "CogoWorker" => drop(serde_json::from_value::<CogoWorker>(doc.clone()).expect(&name)),
            "AgentTask" => drop(serde_json::from_value::<AgentTask>(doc.clone()).expect(&name)),
            _ => unreachable!(),
        }
        if let Err(e) = Validator::new().validate(&schema_of(file_for(kind)), &doc, None) {
            panic!("{name}: {e}");
        }
    }
}

fn agent(spec: Value) -> Value {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": "a"}, "spec": spec})
}
fn worker(spec: Value) -> Value {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "w"}, "spec": spec})
}
fn task(spec: Value) -> Value {
    json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask", "metadata": {"name": "t"}, "spec": spec})
}
fn named(mut obj: Value, name: &str) -> Value {
    obj["metadata"]["name"] = json!(name);
    obj
}

/// Bad inputs that the CRDs' CEL rules reject on create, with the text the error must contain.
#[test]
fn cel_rules_reject_bad_objects_naming_the_field() {
    let model = json!({"apiKeySecretRef": {"name": "k", "key": "api-key"}});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "autoscaling min above max",
            agent(json!({"role": "Research", "autoscaling": {"minReplicas": 5, "maxReplicas": 2}})),
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        (
            "replicas outside the autoscaling bounds",
            agent(
                json!({"role": "Research", "replicas": 9, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}),
            ),
            "spec.replicas must lie within",
        ),
        (
            "OpenAI-compatible model without endpoint",
            agent(
                json!({"role": "Research", "model": {"provider": "OpenAICompatible", "apiKeySecretRef": model["apiKeySecretRef"]}}),
            ),
            "model.endpoint is required",
        ),
        (
            "retry backoff initial above max",
            agent(
                json!({"role": "Research", "taskDefaults": {"retry": {"backoff": {"initialSeconds": 60, "maxSeconds": 5}}}}),
            ),
            "backoff.initialSeconds must not exceed backoff.maxSeconds",
        ),
        (
            "agent name that cannot name a Service",
            named(agent(json!({"role": "Research"})), "9research"),
            "metadata.name must be a DNS-1035 label",
        ),
        (
            "agent name longer than 63",
            named(agent(json!({"role": "Research"})), &"a".repeat(64)),
            "metadata.name must be a DNS-1035 label",
        ),
        (
            "Figma worker without token",
            worker(json!({"kind": "FigmaMCP"})),
            "spec.figmaTokenSecretRef is required when spec.kind is FigmaMCP",
        ),
        (
            "token on a non-Figma worker",
            worker(json!({"kind": "Browser", "figmaTokenSecretRef": {"name": "f", "key": "t"}})),
            "spec.figmaTokenSecretRef is only valid when spec.kind is FigmaMCP",
        ),
        (
            "allowed packages on a browser",
            worker(json!({"kind": "Browser", "sandbox": {"allowedPackages": ["numpy"]}})),
            "spec.sandbox.allowedPackages is only valid when spec.kind is PythonSandbox",
        ),
        (
            "a package index on a browser",
            worker(json!({"kind": "Browser", "sandbox": {"packageIndexUrl": "http://index.local/simple"}})),
            "spec.sandbox.packageIndexUrl is only valid when spec.kind is PythonSandbox",
        ),
        (
            "a file size above the workspace",
            worker(
                json!({"kind": "PythonSandbox", "sandbox": {"maxFileSize": "1Gi", "workspaceSize": "256Mi"}}),
            ),
            "sandbox.maxFileSize must not exceed sandbox.workspaceSize",
        ),
        (
            "worker name with upper case",
            named(worker(json!({"kind": "Browser"})), "Browser"),
            "metadata.name must be a DNS-1035 label",
        ),
        (
            "task with both agent and role",
            task(json!({"agent": "research", "role": "Research", "type": "research.query"})),
            "exactly one of spec.agent and spec.role must be set",
        ),
        (
            "task with neither agent nor role",
            task(json!({"type": "research.query"})),
            "exactly one of spec.agent and spec.role must be set",
        ),
        (
            "task retry backoff initial above max",
            task(
                json!({"role": "Research", "type": "research.query", "retry": {"backoff": {"initialSeconds": 10, "maxSeconds": 1}}}),
            ),
            "backoff.initialSeconds must not exceed backoff.maxSeconds",
        ),
    ];
    for (what, obj, expected) in cases {
        let schema = schema_of(file_for(obj["kind"].as_str().unwrap()));
        match Validator::new().validate(&schema, &obj, None) {
            Ok(()) => panic!("{what}: accepted, expected an error containing {expected:?}"),
            Err(errs) => assert!(
                errs.iter().any(|e| e.message.contains(expected)),
                "{what}: expected {expected:?}, got: {errs}"
            ),
        }
    }
}

/// Changes that the CRDs' transition rules reject on update.
#[test]
fn cel_rules_reject_bad_updates() {
    let t = |spec: Value| task(spec);
    let base = json!({"agent": "research", "type": "research.query", "input": {"q": 1}});
    let cases: Vec<(&str, Value, Value, &str)> = vec![
        (
            "agent role changed",
            agent(json!({"role": "Research"})),
            agent(json!({"role": "Indexing"})),
            "spec.role is immutable",
        ),
        (
            "worker kind changed",
            worker(json!({"kind": "Browser"})),
            worker(json!({"kind": "PythonSandbox"})),
            "spec.kind is immutable",
        ),
        (
            "task type changed",
            t(base.clone()),
            t(json!({"agent": "research", "type": "research.other"})),
            "spec.type is immutable",
        ),
        (
            "task target changed",
            t(base.clone()),
            t(json!({"agent": "indexing", "type": "research.query"})),
            "is immutable",
        ),
        (
            "task target switched to a role",
            t(base.clone()),
            t(json!({"role": "Research", "type": "research.query"})),
            "is immutable",
        ),
        (
            "cancel withdrawn",
            t(json!({"agent": "research", "type": "research.query", "cancelRequested": true})),
            t(json!({"agent": "research", "type": "research.query", "cancelRequested": false})),
            "spec.cancelRequested cannot be set back to false",
        ),
        (
            "parent changed",
            t(json!({"agent": "research", "type": "research.query", "parent": "p1"})),
            t(json!({"agent": "research", "type": "research.query", "parent": "p2"})),
            "spec.parent is immutable",
        ),
    ];
    for (what, old, new, expected) in cases {
        let schema = schema_of(file_for(new["kind"].as_str().unwrap()));
        match Validator::new().validate(&schema, &new, Some(&old)) {
            Ok(()) => panic!("{what}: accepted, expected {expected:?}"),
            Err(errs) => assert!(
                errs.iter().any(|e| e.message.contains(expected)),
                "{what}: got {errs}"
            ),
        }
    }
    // The allowed change: cancelling a task.
    let old = t(base.clone());
    let mut new = old.clone();
    new["spec"]["cancelRequested"] = json!(true);
    let schema = schema_of("cogo.xyz_agenttasks.yaml");
    Validator::new()
        .validate(&schema, &new, Some(&old))
        .expect("cancelling is allowed");
}

#[test]
fn defaults_come_from_the_schema() {
    let schema = schema_of("cogo.xyz_cogoagents.yaml");
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["replicas"]["default"], json!(1));
    assert_eq!(spec["concurrency"]["default"], json!(4));
    let model = &spec["model"]["properties"];
    assert_eq!(model["name"]["default"], json!("gemini-2.5-flash-lite"));
    assert_eq!(model["provider"]["default"], json!("Gemini"));
    let task = schema_of("cogo.xyz_agenttasks.yaml");
    let retry = &task["properties"]["spec"]["properties"]["retry"]["properties"];
    assert_eq!(retry["limit"]["default"], json!(3));
    assert_eq!(retry["limit"]["maximum"].as_f64(), Some(20.0));
    assert_eq!(retry["limit"]["minimum"].as_f64(), Some(0.0));
}
