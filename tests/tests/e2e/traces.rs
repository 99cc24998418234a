//! Traces over OTLP/HTTP, received in process: a task asked of the chat gateway is one trace
//! from the caller's span through the gateway, the operator's attempts, the Orchestrator, the
//! Executor and the worker that ran its step; a task made without a trace (or with a malformed
//! one) starts a trace per attempt.

use std::time::Duration;

use cogo_e2e::{
    cluster::{
        AgentProcess, Cluster, Namespace, Operator, ProcessEnv, WorkerProcess, free_port, kwok_pod_template,
        wait_until,
    },
    gateway::{GatewayProcess, Signer, serve_jwks, token},
    otlp::{Receiver, Span},
    postgres::Postgres,
};
use serde_json::{Value, json};

use super::cluster;

const NS: &str = "e2e-traces";
const USER: &str = "00000000-0000-4000-8000-0000000007ac";
/// The caller's own span: the gateway's request span is its child.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The one span of `spans` named `name`, sent by `service`, of a task of type `task_type` (any
/// type when empty).
fn one<'a>(spans: &'a [Span], (service, name): (&str, &str), task_type: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .filter(|s| task_type.is_empty() || s.attr("cogo.task.type") == task_type)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {service} {name} span of {task_type:?}; all spans: {spans:#?}"
    );
    found[0]
}

fn child_of(child: &Span, parent: &Span) {
    assert_eq!(
        (child.trace.as_str(), child.parent.as_str()),
        (parent.trace.as_str(), parent.id.as_str()),
        "{} ({}) is a child of {} ({})",
        child.name,
        child.service,
        parent.name,
        parent.service
    );
}

#[test]
fn a_task_through_the_gateway_is_one_trace_from_the_caller_to_the_worker() {
    let c: &'static Cluster = Box::leak(Box::new(cluster()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(Receiver::start());
    let jwks_url = rt.block_on(serve_jwks());
    // Every process started below sends its spans to the receiver, in batches 100 ms apart.
    let _env = ProcessEnv::set(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);

    let pg = Postgres::start(NS);
    let secret = format!("cogo-supabase-{NS}");
    c.url_secret("default", &secret, &pg.url());
    let ns = Namespace::create(c, NS);
    let broker = free_port();
    let _operator = Operator::start_with(
        c,
        &format!("{NS}-operator"),
        broker,
        &["--supabase-secret", &secret, "--intake-namespace", NS],
    );
    for obj in [
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": "orchestrator"},
               "spec": {"role": "Orchestrator", "podTemplate": kwok_pod_template()}}),
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": "executor"},
               "spec": {"role": "Executor", "podTemplate": kwok_pod_template()}}),
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "python"},
               "spec": {"kind": "PythonSandbox", "replicas": 1, "capacity": 2, "podTemplate": kwok_pod_template()}}),
    ] {
        ns.apply_ok(&obj.to_string());
    }
    let _orchestrator = AgentProcess::start(c, NS, "orchestrator", "Orchestrator", "orchestrator-0", broker);
    let executor = AgentProcess::start(c, NS, "executor", "Executor", "executor-0", broker);
    let _worker = WorkerProcess::start(c, NS, ("python", "python-0"), executor.port, 2, &[]);
    wait_until(Duration::from_secs(60), "the operator's schema", || {
        pg.query("select count(*) from pg_tables where tablename = 'user_roles'") == "1"
    });
    pg.query(&format!(
        "insert into auth.users (id) values ('{USER}');
         insert into public.user_roles (user_id, role, permissions, domain, is_active)
         values ('{USER}', 'cogo_agent', '{{task:*}}', 'cogo.xyz', true)"
    ));
    let gw = GatewayProcess::start(c, NS, &pg.url(), &jwks_url, &[]);
    ns.kubectl_ok(&[
        "wait",
        "cogoworker/python",
        "--for=jsonpath={.status.connectedWorkers}=1",
        "--timeout=60s",
    ]);

    // The caller traces its own request: the gateway's span is a child of the caller's.
    let workflow = json!({"steps": [{"id": "py", "type": "python.execute", "role": "Executor",
                                     "input": {"code": "print(6 * 7)"}}]});
    let answer = cogo_e2e::http_client(Duration::from_secs(150))
        .post(format!("http://127.0.0.1:{}/v1/tasks", gw.port))
        .bearer_auth(token(USER, json!({}), Signer::Secret))
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(
            &json!({"role": "orchestrator", "type": "workflow.run", "input": workflow,
                      "wait": true, "waitSeconds": 120}),
        )
        .send()
        .expect("the gateway answers");
    let status = answer.status().as_u16();
    let body: Value = answer.json().expect("a JSON answer");
    assert_eq!((status, &body["phase"]), (200, &json!("Succeeded")), "{body:#}");
    let workflow_task = body["name"].as_str().unwrap().to_string();

    // Every span of the trace arrives (each process sends its own batches).
    let count = |spans: &[Span], name: &str| spans.iter().filter(|s| s.name == name).count();
    wait_until(Duration::from_secs(30), "every span of the trace", || {
        let spans = receiver.spans();
        count(&spans, "cogo.gateway.request") >= 1
            && count(&spans, "cogo.task.attempt") >= 2
            && count(&spans, "cogo.task.handle") >= 2
            && count(&spans, "cogo.worker.job") >= 1
    });
    let spans: Vec<Span> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace == CALLER_TRACE)
        .collect();
    let request = one(&spans, ("cogo-gateway", "cogo.gateway.request"), "");
    assert_eq!(request.parent, CALLER_SPAN);
    assert_eq!(request.attr("cogo.gateway.action"), "agent_task");
    assert_eq!(request.attr("enduser.id"), USER);
    assert_eq!(request.attr("http.response.status_code"), "200");

    let attempt = one(&spans, ("cogo-operator", "cogo.task.attempt"), "workflow.run");
    child_of(attempt, request);
    assert_eq!(attempt.attr("cogo.task.name"), workflow_task);
    assert_eq!(attempt.attr("cogo.task.namespace"), NS);
    assert_eq!(attempt.attr("cogo.task.attempt"), "1");
    assert_eq!(attempt.attr("cogo.agent"), "orchestrator");
    assert_eq!(attempt.attr("cogo.task.outcome"), "Succeeded");
    assert_eq!(attempt.status, 1, "OK");

    let orchestrated = one(&spans, ("cogo-agent", "cogo.task.handle"), "workflow.run");
    child_of(orchestrated, attempt);
    assert_eq!(orchestrated.attr("cogo.task.name"), workflow_task);
    assert_eq!(orchestrated.attr("cogo.task.outcome"), "Succeeded");

    let step = format!("{workflow_task}-py");
    let step_attempt = one(&spans, ("cogo-operator", "cogo.task.attempt"), "python.execute");
    child_of(step_attempt, orchestrated);
    assert_eq!(step_attempt.attr("cogo.task.name"), step);
    assert_eq!(step_attempt.attr("cogo.agent"), "executor");

    let executed = one(&spans, ("cogo-agent", "cogo.task.handle"), "python.execute");
    child_of(executed, step_attempt);
    let job = one(&spans, ("cogo-worker", "cogo.worker.job"), "python.execute");
    child_of(job, executed);
    assert_eq!(job.attr("cogo.task.name"), step);
    assert_eq!(job.attr("cogo.worker.id"), "python-0");
    assert_eq!(job.status, 1, "OK");

    // The task's annotation names the gateway's span; the row keeps it too.
    let annotation = ns.kubectl_ok(&[
        "get",
        "agenttask",
        &workflow_task,
        "-o",
        "jsonpath={.metadata.annotations.cogo\\.xyz/traceparent}",
    ]);
    assert_eq!(annotation, format!("00-{CALLER_TRACE}-{}-01", request.id));

    // A task made without a trace, or with a malformed one, starts a trace of its own.
    let before = receiver.spans().len();
    ns.apply_ok(
        &json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                "metadata": {"name": "untraced", "annotations": {"cogo.xyz/traceparent": "00-garbage"}},
                "spec": {"agent": "executor", "type": "python.execute", "input": {"code": "print(1)"}}})
        .to_string(),
    );
    ns.wait("agenttask/untraced", "jsonpath={.status.phase}=Succeeded", 60);
    wait_until(Duration::from_secs(30), "the untraced task's spans", || {
        let spans: Vec<Span> = receiver.spans()[before..]
            .iter()
            .filter(|s| s.attr("cogo.task.name") == "untraced")
            .cloned()
            .collect();
        ["cogo.task.attempt", "cogo.task.handle", "cogo.worker.job"]
            .iter()
            .all(|n| count(&spans, n) >= 1)
    });
    let spans = receiver.spans();
    let own: Vec<Span> = spans[before..]
        .iter()
        .filter(|s| s.attr("cogo.task.name") == "untraced")
        .cloned()
        .collect();
    let root = one(&own, ("cogo-operator", "cogo.task.attempt"), "python.execute");
    assert_eq!(root.parent, "", "the attempt is the root of its trace");
    assert_ne!(root.trace, CALLER_TRACE);
    let handled = one(&own, ("cogo-agent", "cogo.task.handle"), "python.execute");
    child_of(handled, root);
    child_of(one(&own, ("cogo-worker", "cogo.worker.job"), ""), handled);
    assert!(
        receiver.refused().is_empty(),
        "every export was well formed: {:?}",
        receiver.refused()
    );
}
