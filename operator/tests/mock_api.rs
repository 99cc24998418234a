//! Controller tests against a mocked API server: each test lists the exact requests a reconcile
//! must make (method, path, field manager) and checks the bodies it sends.

use std::sync::Arc;

use cogo_api::{CogoAgent, CogoWorker};
use cogo_operator::controller::{agent, worker};
use http::Method;
use serde_json::{Value, json};

mod support;
use support::{Reply, Seen, run, step};

const NS: &str = "team";
const UID: &str = "5b0c3f8e-0000-4000-8000-000000000001";

fn new_agent(spec: Value, status: Option<Value>) -> CogoAgent {
    let mut obj = json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent",
        "metadata": {"name": "research", "namespace": NS, "uid": UID, "generation": 2},
        "spec": spec,
    });
    if let Some(s) = status {
        obj["status"] = s;
    }
    serde_json::from_value(obj).unwrap()
}

/// What the server answers to a status write of a CogoAgent (its content is not read).
fn agent_reply() -> Reply {
    Reply::Json(
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": "research", "namespace": NS}, "spec": {"role": "Research"}}),
    )
}

/// What the server answers to a status write of a CogoWorker.
fn worker_reply() -> Reply {
    Reply::Json(
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "python", "namespace": NS}, "spec": {"kind": "PythonSandbox"}}),
    )
}

fn apps(kind: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/{kind}/{name}")
}
fn core(kind: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/{kind}/{name}")
}
fn pdb(name: &str) -> String {
    format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{name}")
}
fn agent_status_path(name: &str) -> String {
    format!("/apis/cogo.xyz/v1alpha1/namespaces/{NS}/cogoagents/{name}/status")
}

fn ready_deployment_status(n: i32) -> Value {
    json!({"observedGeneration": 1, "replicas": n, "readyReplicas": n, "updatedReplicas": n, "availableReplicas": n})
}

/// The one request with this method whose path ends with `suffix`.
fn req<'a>(seen: &'a [Seen], method: Method, suffix: &str) -> &'a Seen {
    let found: Vec<_> = seen
        .iter()
        .filter(|s| s.method == method && s.path.ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "expected one {method} of *{suffix} in {seen:?}");
    found[0]
}

fn assert_ssa(seen: &Seen) {
    assert_eq!(seen.method, Method::PATCH);
    assert!(
        seen.query.contains("fieldManager=cogo-operator"),
        "{} {}",
        seen.path,
        seen.query
    );
    assert!(seen.query.contains("force=true"), "{}", seen.query);
}

fn assert_owned_by_agent(body: &Value) {
    let owners = body["metadata"]["ownerReferences"]
        .as_array()
        .expect("ownerReferences");
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0]["uid"], UID);
    assert_eq!(owners[0]["kind"], "CogoAgent");
    assert_eq!(owners[0]["controller"], true);
    assert_eq!(owners[0]["blockOwnerDeletion"], true);
}

#[tokio::test]
async fn new_agent_gets_its_children_applied_and_a_ready_status() {
    let a = new_agent(json!({"role": "Research", "replicas": 2, "concurrency": 4}), None);
    let steps = vec![
        step(Method::GET, apps("deployments", "research"), Reply::NotFound),
        step(Method::GET, core("services", "research"), Reply::NotFound),
        step(Method::GET, pdb("research"), Reply::NotFound),
        step(
            Method::PATCH,
            apps("deployments", "research"),
            Reply::Echo(ready_deployment_status(2)),
        ),
        step(
            Method::PATCH,
            core("services", "research"),
            Reply::Echo(json!({})),
        ),
        step(Method::PATCH, pdb("research"), Reply::Echo(json!({}))),
        step(Method::PATCH, agent_status_path("research"), agent_reply()),
    ];
    let seen = run(steps, |ctx| agent::reconcile(Arc::new(a), ctx)).await;

    let deploy = req(&seen, Method::PATCH, "/deployments/research");
    assert_ssa(deploy);
    assert_eq!(deploy.body["kind"], "Deployment");
    assert_owned_by_agent(&deploy.body);
    assert_eq!(deploy.body["spec"]["replicas"], 2);
    let pod = &deploy.body["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 6003);

    let svc = req(&seen, Method::PATCH, "/services/research");
    assert_ssa(svc);
    assert_owned_by_agent(&svc.body);
    assert_eq!(svc.body["spec"]["ports"][0]["port"], 6003);

    assert_ssa(req(&seen, Method::PATCH, "/poddisruptionbudgets/research"));
    assert_eq!(
        req(&seen, Method::PATCH, "/poddisruptionbudgets/research").body["spec"]["maxUnavailable"],
        1
    );
    assert_owned_by_agent(&req(&seen, Method::PATCH, "/poddisruptionbudgets/research").body);

    let status = req(&seen, Method::PATCH, "/status");
    assert_ssa(status);
    assert_eq!(status.body["kind"], "CogoAgent");
    assert!(
        status.body.get("spec").is_none(),
        "the operator never writes spec"
    );
    let st = &status.body["status"];
    assert_eq!(st["observedGeneration"], 2);
    assert_eq!(st["readyReplicas"], 2);
    assert_eq!(
        st["selector"],
        "app.kubernetes.io/instance=research,app.kubernetes.io/name=cogo-agent"
    );
    let ready = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("Available"))
    );
}

#[tokio::test]
async fn an_unchanged_world_costs_no_write() {
    // First reconcile: capture what it applies and the status it writes.
    let spec = json!({"role": "Research", "replicas": 1, "concurrency": 4});
    let first = vec![
        step(Method::GET, apps("deployments", "research"), Reply::NotFound),
        step(Method::GET, core("services", "research"), Reply::NotFound),
        step(Method::GET, pdb("research"), Reply::NotFound),
        step(
            Method::PATCH,
            apps("deployments", "research"),
            Reply::Echo(ready_deployment_status(1)),
        ),
        step(
            Method::PATCH,
            core("services", "research"),
            Reply::Echo(json!({})),
        ),
        step(Method::PATCH, agent_status_path("research"), agent_reply()),
    ];
    let a = new_agent(spec.clone(), None);
    let seen = run(first, |ctx| agent::reconcile(Arc::new(a), ctx)).await;
    let written = req(&seen, Method::PATCH, "/status").body["status"].clone();

    // The live objects as the API server would return them: what was applied, plus defaults
    // and status the server adds.
    let mut deployment = req(&seen, Method::PATCH, "/deployments/research").body.clone();
    deployment["metadata"]["generation"] = json!(1);
    deployment["metadata"]["resourceVersion"] = json!("7");
    deployment["spec"]["strategy"] = json!({"type": "RollingUpdate"});
    deployment["status"] = ready_deployment_status(1);
    let mut service = req(&seen, Method::PATCH, "/services/research").body.clone();
    service["spec"]["clusterIP"] = json!("10.96.0.20");

    // Second reconcile of the same world, with that status in place: reads only.
    let again = vec![
        step(
            Method::GET,
            apps("deployments", "research"),
            Reply::Json(deployment),
        ),
        step(Method::GET, core("services", "research"), Reply::Json(service)),
        step(Method::GET, pdb("research"), Reply::NotFound),
    ];
    let a = new_agent(spec, Some(written));
    let seen = run(again, |ctx| agent::reconcile(Arc::new(a), ctx)).await;
    assert!(
        seen.iter().all(|s| s.method == Method::GET),
        "no write expected: {seen:?}"
    );
}

#[tokio::test]
async fn a_changed_spec_is_applied_even_when_the_children_exist() {
    let owned = json!({"metadata": {"ownerReferences": [{"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "name": "research", "uid": UID, "controller": true}]}});
    let steps = vec![
        step(
            Method::GET,
            apps("deployments", "research"),
            Reply::Json(owned.clone()),
        ),
        step(Method::GET, core("services", "research"), Reply::Json(owned)),
        step(Method::GET, pdb("research"), Reply::NotFound),
        step(
            Method::PATCH,
            apps("deployments", "research"),
            Reply::Echo(ready_deployment_status(1)),
        ),
        step(
            Method::PATCH,
            core("services", "research"),
            Reply::Echo(json!({})),
        ),
        step(Method::PATCH, agent_status_path("research"), agent_reply()),
    ];
    let a = new_agent(json!({"role": "Research", "replicas": 1, "concurrency": 4}), None);
    run(steps, |ctx| agent::reconcile(Arc::new(a), ctx)).await;
}

#[tokio::test]
async fn scaling_down_to_one_deletes_the_pdb_it_owns() {
    let owned = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "research", "namespace": NS, "ownerReferences": [{"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "name": "research", "uid": UID, "controller": true}]}});
    let steps = vec![
        step(Method::GET, apps("deployments", "research"), Reply::NotFound),
        step(Method::GET, core("services", "research"), Reply::NotFound),
        step(Method::GET, pdb("research"), Reply::Json(owned.clone())),
        step(
            Method::PATCH,
            apps("deployments", "research"),
            Reply::Echo(ready_deployment_status(1)),
        ),
        step(
            Method::PATCH,
            core("services", "research"),
            Reply::Echo(json!({})),
        ),
        step(Method::DELETE, pdb("research"), Reply::Json(owned)),
        step(Method::PATCH, agent_status_path("research"), agent_reply()),
    ];
    let a = new_agent(json!({"role": "Research", "replicas": 1, "concurrency": 4}), None);
    run(steps, |ctx| agent::reconcile(Arc::new(a), ctx)).await;
}

#[tokio::test]
async fn missing_model_secret_sets_ready_false_with_an_event_and_applies_nothing() {
    let a = new_agent(
        json!({"role": "Research", "replicas": 1, "concurrency": 4,
               "model": {"provider": "Gemini", "name": "gemini-2.5-flash-lite", "apiKeySecretRef": {"name": "gemini", "key": "api-key"}}}),
        None,
    );
    let steps = vec![
        step(Method::GET, apps("deployments", "research"), Reply::NotFound),
        step(Method::GET, core("services", "research"), Reply::NotFound),
        step(Method::GET, pdb("research"), Reply::NotFound),
        step(Method::GET, core("secrets", "gemini"), Reply::NotFound),
        step(Method::PATCH, agent_status_path("research"), agent_reply()),
        step(
            Method::POST,
            format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            Reply::Echo(Value::Null),
        ),
    ];
    let seen = run(steps, |ctx| agent::reconcile(Arc::new(a), ctx)).await;
    let st = &req(&seen, Method::PATCH, "/status").body["status"];
    let ready = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ModelSecretNotFound");
    assert!(
        ready["message"].as_str().unwrap().contains("Secret \"gemini\""),
        "{ready}"
    );
    let event = &req(&seen, Method::POST, "/events").body;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "ModelSecretNotFound");
    assert_eq!(event["regarding"]["name"], "research");
}

#[tokio::test]
async fn an_existing_deployment_of_someone_else_is_not_taken_over() {
    let foreign = json!({"metadata": {"name": "research", "namespace": NS}});
    let steps = vec![
        step(Method::GET, apps("deployments", "research"), Reply::Json(foreign)),
        step(Method::GET, core("services", "research"), Reply::NotFound),
        step(Method::GET, pdb("research"), Reply::NotFound),
        step(Method::PATCH, agent_status_path("research"), agent_reply()),
        step(
            Method::POST,
            format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            Reply::Echo(Value::Null),
        ),
    ];
    let a = new_agent(json!({"role": "Research", "replicas": 1, "concurrency": 4}), None);
    let seen = run(steps, |ctx| agent::reconcile(Arc::new(a), ctx)).await;
    let ready = req(&seen, Method::PATCH, "/status").body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["reason"], "NameConflict");
    assert_eq!(
        req(&seen, Method::PATCH, "/status").body["status"]["replicas"],
        0,
        "a foreign Deployment's pods are not counted"
    );
}

fn new_worker(spec: Value) -> CogoWorker {
    serde_json::from_value(json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker",
        "metadata": {"name": "python", "namespace": NS, "uid": UID, "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

fn agent_list(items: Value) -> Reply {
    Reply::Json(
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgentList", "metadata": {}, "items": items}),
    )
}

#[tokio::test]
async fn sandbox_worker_gets_a_deny_egress_policy_towards_its_executor() {
    let executor = json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": "exec", "namespace": NS}, "spec": {"role": "Executor"}});
    let steps = vec![
        step(Method::GET, apps("deployments", "python"), Reply::NotFound),
        step(Method::GET, core("services", "python"), Reply::NotFound),
        step(
            Method::GET,
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/python"),
            Reply::NotFound,
        ),
        step(
            Method::GET,
            format!("/apis/cogo.xyz/v1alpha1/namespaces/{NS}/cogoagents"),
            agent_list(json!([executor])),
        ),
        step(
            Method::PATCH,
            apps("deployments", "python"),
            Reply::Echo(ready_deployment_status(1)),
        ),
        step(Method::PATCH, core("services", "python"), Reply::Echo(json!({}))),
        step(
            Method::PATCH,
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/python"),
            Reply::Echo(Value::Null),
        ),
        step(
            Method::PATCH,
            format!("/apis/cogo.xyz/v1alpha1/namespaces/{NS}/cogoworkers/python/status"),
            worker_reply(),
        ),
    ];
    let w = new_worker(json!({"kind": "PythonSandbox", "replicas": 1, "capacity": 2}));
    let seen = run(steps, |ctx| worker::reconcile(Arc::new(w), ctx)).await;
    let env = req(&seen, Method::PATCH, "/deployments/python").body["spec"]["template"]["spec"]["containers"]
        [0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let url = env.iter().find(|e| e["name"] == "COGO_EXECUTOR_URL").unwrap();
    assert_eq!(url["value"], format!("ws://exec.{NS}.svc:6005/v1/workers"));
    let policy = &req(&seen, Method::PATCH, "/networkpolicies/python").body;
    assert_ssa(req(&seen, Method::PATCH, "/networkpolicies/python"));
    let egress = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 2, "DNS and the Executor only: {egress:?}");
    assert_eq!(
        egress[1]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "exec"
    );
    assert_eq!(
        req(&seen, Method::PATCH, "/status").body["status"]["executor"],
        "exec"
    );
}

#[tokio::test]
async fn worker_without_an_executor_waits_with_a_clear_reason() {
    let steps = vec![
        step(Method::GET, apps("deployments", "python"), Reply::NotFound),
        step(Method::GET, core("services", "python"), Reply::NotFound),
        step(
            Method::GET,
            format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/python"),
            Reply::NotFound,
        ),
        step(
            Method::GET,
            format!("/apis/cogo.xyz/v1alpha1/namespaces/{NS}/cogoagents"),
            agent_list(json!([])),
        ),
        step(
            Method::PATCH,
            format!("/apis/cogo.xyz/v1alpha1/namespaces/{NS}/cogoworkers/python/status"),
            worker_reply(),
        ),
        step(
            Method::POST,
            format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            Reply::Echo(Value::Null),
        ),
    ];
    let w = new_worker(json!({"kind": "PythonSandbox", "replicas": 1, "capacity": 2}));
    let seen = run(steps, |ctx| worker::reconcile(Arc::new(w), ctx)).await;
    let ready = req(&seen, Method::PATCH, "/status").body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["reason"], "ExecutorNotFound");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("no CogoAgent with role Executor")
    );
}
