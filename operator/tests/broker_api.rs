//! The broker refuses bad requests with a JSON error and a stable code, before it touches the
//! API server: missing, malformed, expired, unsigned or foreign tokens, malformed and oversized
//! bodies, out-of-range requests, unknown agents and endpoints.

use std::sync::Arc;

use axum::body::Body;
use cogo_api::broker::ErrorBody;
use cogo_operator::{
    broker::{Broker, MAX_BODY_BYTES, router},
    tasks::{Scheduler, Target, leases::LeaseState},
    tokens::{
        auth::{Key, Keys},
        worker_keys::{SigningSeed, WorkerKeys},
    },
};
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use kube::{
    Client,
    runtime::{
        events::{Recorder, Reporter},
        reflector,
    },
};
use tower::ServiceExt;

fn keys() -> Keys {
    Keys {
        current: Key {
            id: "k1".into(),
            secret: vec![1; 32],
        },
        previous: vec![],
    }
}

fn broker() -> Broker {
    broker_with_agents(&[])
}

/// A CogoAgent of namespace `team`, for the broker's agent store.
fn agent(name: &str, role: &str) -> cogo_api::CogoAgent {
    let mut a = cogo_api::CogoAgent::new(
        name,
        serde_json::from_value(serde_json::json!({"role": role})).unwrap(),
    );
    a.metadata.namespace = Some("team".into());
    a
}

fn broker_with_agents(agents: &[cogo_api::CogoAgent]) -> Broker {
    // A client whose every request fails at once (its server side is gone): none of these
    // calls may reach the API, and one that did would answer 503, failing the assertion.
    let (svc, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<kube::client::Body>>();
    drop(handle);
    let client = Client::new(svc, "default");
    let (store, mut writer) = reflector::store();
    for a in agents {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(a.clone()));
    }
    Broker {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        ),
        client,
        keys: keys(),
        scheduler: Arc::new(Scheduler::new(
            std::time::Duration::from_secs(15),
            Default::default(),
        )),
        agents: store,
        heartbeat_seconds: 5,
        max_result_bytes: 1024,
        tasks: Default::default(),
        results: None,
        worker_keys: Some(Arc::new(std::sync::RwLock::new(WorkerKeys {
            current: SigningSeed::new("w1", [7; 32]),
            previous: vec![],
        }))),
        subtask_limits: Default::default(),
        complete_budget: Default::default(),
        coalesce_window: std::time::Duration::ZERO,
        metrics: Default::default(),
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

async fn post(path: &str, token: Option<&str>, body: String) -> (StatusCode, ErrorBody) {
    send(Request::post(path), token, body).await
}

async fn send(req: http::request::Builder, token: Option<&str>, body: String) -> (StatusCode, ErrorBody) {
    let (status, bytes) = send_to(broker(), req, token, body).await;
    let err: ErrorBody = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, err)
}

async fn send_to(
    broker: Broker,
    req: http::request::Builder,
    token: Option<&str>,
    body: String,
) -> (StatusCode, Vec<u8>) {
    let mut req = req.header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = router(broker)
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, bytes.to_vec())
}

const LEASE: &str = "/v1/namespaces/team/agents/research/lease";

#[tokio::test]
async fn bad_requests_get_a_clear_error() {
    let good = keys().issue("team", "research", now(), 3600).unwrap();
    let expired = keys().issue("team", "research", now() - 7200, 60).unwrap();
    let other_agent = keys().issue("team", "indexing", now(), 3600).unwrap();
    let stranger = Keys {
        current: Key {
            id: "k1".into(),
            secret: vec![9; 32],
        },
        previous: vec![],
    }
    .issue("team", "research", now(), 3600)
    .unwrap();
    let ok_body = r#"{"pod": "p", "slots": 1}"#.to_string();
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, String, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no token",
            LEASE,
            None,
            ok_body.clone(),
            StatusCode::UNAUTHORIZED,
            "MissingToken",
        ),
        (
            "not a JWT",
            LEASE,
            Some("nonsense"),
            ok_body.clone(),
            StatusCode::UNAUTHORIZED,
            "MalformedToken",
        ),
        (
            "expired",
            LEASE,
            Some(&expired),
            ok_body.clone(),
            StatusCode::UNAUTHORIZED,
            "TokenExpired",
        ),
        (
            "forged",
            LEASE,
            Some(&stranger),
            ok_body.clone(),
            StatusCode::UNAUTHORIZED,
            "InvalidSignature",
        ),
        (
            "another agent's token",
            LEASE,
            Some(&other_agent),
            ok_body.clone(),
            StatusCode::FORBIDDEN,
            "WrongAgent",
        ),
        (
            "malformed JSON",
            LEASE,
            Some(&good),
            "{\"pod\": ".into(),
            StatusCode::BAD_REQUEST,
            "MalformedRequest",
        ),
        (
            "unknown field",
            LEASE,
            Some(&good),
            r#"{"pod": "p", "slots": 1, "priority": 9}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "MalformedRequest",
        ),
        (
            "zero slots",
            LEASE,
            Some(&good),
            r#"{"pod": "p", "slots": 0}"#.into(),
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
        ),
        (
            "too long a wait",
            LEASE,
            Some(&good),
            r#"{"pod": "p", "slots": 1, "waitSeconds": 600}"#.into(),
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
        ),
        (
            "oversized body",
            LEASE,
            Some(&good),
            format!(r#"{{"pod": "{}", "slots": 1}}"#, "p".repeat(MAX_BODY_BYTES)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
        ),
        (
            "unknown agent",
            LEASE,
            Some(&good),
            ok_body.clone(),
            StatusCode::NOT_FOUND,
            "AgentNotFound",
        ),
        (
            "unknown endpoint",
            "/v2/whatever",
            Some(&good),
            ok_body,
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
    ];
    for (what, path, token, body, status, code) in cases {
        let (got, err) = post(path, token, body).await;
        assert_eq!(
            (got, err.code.as_str()),
            (status, code),
            "{what}: {}",
            err.message
        );
        assert!(!err.message.is_empty(), "{what}: the message says why");
    }
}

#[tokio::test]
async fn task_endpoints_refuse_bad_tokens_before_reading_the_task() {
    let expired = keys().issue("team", "research", now() - 7200, 60).unwrap();
    for path in [
        "/v1/namespaces/team/tasks/t/heartbeat",
        "/v1/namespaces/team/tasks/t/complete",
        "/v1/namespaces/team/tasks/t/subtasks",
    ] {
        let (status, err) = post(path, None, "{}".into()).await;
        assert_eq!(
            (status, err.code.as_str()),
            (StatusCode::UNAUTHORIZED, "MissingToken"),
            "{path}"
        );
        let (status, err) = post(path, Some(&expired), "{}".into()).await;
        assert_eq!(
            (status, err.code.as_str()),
            (StatusCode::UNAUTHORIZED, "TokenExpired"),
            "{path}"
        );
    }
}

/// Server errors are counted by code for the alerts; refusals of the caller are not.
#[tokio::test]
async fn server_errors_are_counted_by_code() {
    let b = broker();
    let metrics = b.metrics.clone();
    let app = router(b);
    let good = keys().issue("team", "research", now(), 3600).unwrap();
    for token in [None, Some(good.as_str()), Some(good.as_str())] {
        let mut req = Request::get("/v1/namespaces/team/tasks/t");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        app.clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
    }
    let text = metrics.encode();
    assert!(
        text.contains(r#"cogo_operator_broker_errors_total{code="KubernetesUnavailable"} 2"#),
        "{text}"
    );
    assert!(!text.contains("MissingToken"), "a 401 is not a server error");
}

#[tokio::test]
async fn reading_a_task_needs_a_token_of_its_namespace() {
    let path = "/v1/namespaces/team/tasks/t";
    let other_ns = keys().issue("elsewhere", "research", now(), 3600).unwrap();
    let expired = keys().issue("team", "research", now() - 7200, 60).unwrap();
    let cases = [
        (None, StatusCode::UNAUTHORIZED, "MissingToken"),
        (Some(expired.as_str()), StatusCode::UNAUTHORIZED, "TokenExpired"),
        (Some(other_ns.as_str()), StatusCode::FORBIDDEN, "WrongAgent"),
    ];
    for (token, status, code) in cases {
        let (got, err) = send(Request::get(path), token, String::new()).await;
        assert_eq!((got, err.code.as_str()), (status, code), "{}", err.message);
    }
    // A token of the namespace passes the check and reaches the API, which this client cannot.
    let good = keys().issue("team", "indexing", now(), 3600).unwrap();
    let (got, err) = send(Request::get(path), Some(&good), String::new()).await;
    assert_eq!(
        (got, err.code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "KubernetesUnavailable")
    );
}

/// Every operation of the published OpenAPI document is served (the route exists and asks for
/// a token), so the document cannot drift from the router.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let doc = cogo_api::openapi::broker();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{namespace}", "team")
            .replace("{agent}", "research")
            .replace("{task}", "t")
            .replace("{subtask}", "t-a");
        for (method, op) in item.as_object().unwrap() {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete);
            let (status, bytes) = send_to(broker(), req, None, "{}".into()).await;
            if op["security"] == serde_json::json!([]) {
                assert_eq!(status, StatusCode::OK, "{method} {path} is public");
            } else {
                let err: ErrorBody = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(
                    (status, err.code.as_str()),
                    (StatusCode::UNAUTHORIZED, "MissingToken"),
                    "{method} {path}"
                );
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 8);
}

/// The public halves of the worker-token keys are served as a JSON Web Key Set that verifies
/// the tokens the operator issues.
#[tokio::test]
async fn worker_keys_are_published_as_a_key_set() {
    let b = broker();
    let keys = b.worker_keys.clone().unwrap().read().unwrap().clone();
    let (status, bytes) = send_to(b, Request::get("/v1/worker-keys"), None, String::new()).await;
    assert_eq!(status, StatusCode::OK);
    let set: cogo_api::broker::WorkerKeySet = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(set.keys.len(), 1);
    let key = &set.keys[0];
    assert_eq!(
        (key.kty.as_str(), key.crv.as_str(), key.kid.as_str()),
        ("OKP", "Ed25519", "w1")
    );
    let who = cogo_operator::tokens::worker_keys::WorkerIdentity {
        namespace: "team",
        worker: "python",
        kind: cogo_api::WorkerKind::PythonSandbox,
        executor: "executor",
    };
    let token = keys.issue(who, now(), 60).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_ed_components(&key.x).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&[cogo_api::worker::message::TOKEN_AUDIENCE]);
    assert!(jsonwebtoken::decode::<cogo_api::worker::message::WorkerClaims>(&token, &decoding, &v).is_ok());
}

/// Only an Executor reports workers, with its own token and a well-formed report; a good
/// report is recorded.
#[tokio::test]
async fn worker_reports_come_from_executors() {
    let path = "/v1/namespaces/team/agents/executor/workers";
    let exec_token = keys().issue("team", "executor", now(), 3600).unwrap();
    let research_token = keys().issue("team", "research", now(), 3600).unwrap();
    let report = serde_json::json!({"pod": "executor-0", "workers": [
        {"id": "python-1", "worker": "python", "kind": "PythonSandbox", "capacity": 2, "active": 1}],
        "jobs": [{"worker": "python", "succeeded": 9, "failed": 1}]});
    let agents = [agent("executor", "Executor"), agent("research", "Research")];
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, String, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no token",
            path,
            None,
            report.to_string(),
            StatusCode::UNAUTHORIZED,
            "MissingToken",
        ),
        (
            "another agent's token",
            path,
            Some(&research_token),
            report.to_string(),
            StatusCode::FORBIDDEN,
            "WrongAgent",
        ),
        (
            "not an Executor",
            "/v1/namespaces/team/agents/research/workers",
            Some(&research_token),
            report.to_string(),
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
        ),
        (
            "an unknown kind",
            path,
            Some(&exec_token),
            report.to_string().replace("PythonSandbox", "Janitor"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "MalformedRequest",
        ),
        (
            "no pod",
            path,
            Some(&exec_token),
            report.to_string().replace("executor-0", ""),
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
        ),
    ];
    for (what, path, token, body, status, code) in cases {
        let (got, bytes) = send_to(broker_with_agents(&agents), Request::post(path), token, body).await;
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (got, err.code.as_str()),
            (status, code),
            "{what}: {}",
            err.message
        );
    }
    let b = broker_with_agents(&agents);
    let scheduler = b.scheduler.clone();
    let (status, _) = send_to(b, Request::post(path), Some(&exec_token), report.to_string()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let stats = scheduler.worker_stats("team", "python");
    assert_eq!(
        (
            stats.connected_workers,
            stats.active_jobs,
            stats.success_rate_percent
        ),
        (1, 1, Some(90))
    );
}

/// Lease requests may filter task types, within bounds.
#[tokio::test]
async fn lease_type_filters_are_bounded() {
    let good = keys().issue("team", "research", now(), 3600).unwrap();
    let many: Vec<String> = (0..17).map(|i| format!("t{i}.")).collect();
    for body in [
        serde_json::json!({"pod": "p", "slots": 1, "typePrefixes": many}),
        serde_json::json!({"pod": "p", "slots": 1, "excludeTypePrefixes": [""]}),
    ] {
        let (status, err) = post(LEASE, Some(&good), body.to_string()).await;
        assert_eq!(
            (status, err.code.as_str()),
            (StatusCode::BAD_REQUEST, "InvalidRequest"),
            "{body}"
        );
    }
}

/// The token is checked before a byte of the body is read: a request without one is refused
/// at once, even when its body would never end (or be 16 MiB), so unauthenticated requests
/// cannot make the operator hold bodies in memory.
#[tokio::test]
async fn tokens_are_checked_before_the_body_is_read() {
    let good = keys().issue("team", "research", now(), 3600).unwrap();
    let other = keys().issue("team", "indexing", now(), 3600).unwrap();
    for (path, token, code) in [
        ("/v1/namespaces/team/tasks/t/complete", None, "MissingToken"),
        (
            "/v1/namespaces/team/tasks/t/complete",
            Some("nonsense"),
            "MalformedToken",
        ),
        ("/v1/namespaces/team/tasks/t/heartbeat", None, "MissingToken"),
        ("/v1/namespaces/team/tasks/t/subtasks", None, "MissingToken"),
        (LEASE, Some(other.as_str()), "WrongAgent"),
        (
            "/v1/namespaces/team/agents/research/workers",
            None,
            "MissingToken",
        ),
    ] {
        // A body that sends one chunk and then nothing, forever.
        let endless = futures::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"pod\": "))
        })
        .chain(futures::stream::pending());
        let mut req = Request::post(path).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Body::from_stream(endless)).unwrap();
        let res = tokio::time::timeout(std::time::Duration::from_secs(5), router(broker()).oneshot(req))
            .await
            .unwrap_or_else(|_| {
                panic!("{path}: the broker waited for the body of an unauthenticated request")
            })
            .unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(err.code, code, "{path}: {status}");
    }
    // With a good token the body is read as before.
    let (status, err) = post(LEASE, Some(&good), "{\"pod\": ".into()).await;
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::BAD_REQUEST, "MalformedRequest")
    );
}

/// A lease request dropped while its lease writes are in flight (the pod went away) gives its
/// reservations back and queues the tasks again: nothing stays reserved forever, and the
/// agent's slots are not lost.
#[tokio::test]
async fn a_dropped_lease_request_gives_its_tasks_back() {
    // An API server that takes every request and never answers.
    let (svc, mut handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<kube::client::Body>>();
    handle.allow(u64::MAX);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((_, send)) = handle.next_request().await {
            held.push(send);
        }
    });
    let mut b = broker_with_agents(&[agent("research", "Research")]);
    b.client = Client::new(svc, "default");
    let task: cogo_api::AgentTask = serde_json::from_value(serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "t", "namespace": "team", "resourceVersion": "7",
                     "creationTimestamp": "2026-11-29T10:00:00Z"},
        "spec": {"agent": "research", "type": "cogo.echo"},
    }))
    .unwrap();
    b.scheduler.enqueue(
        "team",
        "t",
        Target::Agent("research".into()),
        Arc::new(task),
        &b.agents,
    );
    let scheduler = b.scheduler.clone();
    let token = keys().issue("team", "research", now(), 3600).unwrap();
    let req = Request::post(LEASE)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(r#"{"pod": "p", "slots": 1}"#))
        .unwrap();
    let leasing = router(b).oneshot(req);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), leasing)
            .await
            .is_err(),
        "the lease write hangs"
    );
    assert!(
        !scheduler.is_leased("team", "t"),
        "the reservation was given back"
    );
    assert!(scheduler.is_queued("team", "t"), "the task is queued again");
}

/// A queued task deleted before its lease is written (the API server answers 404) is dropped:
/// the request leases the other tasks, and the deleted one is not queued again to stand before
/// them on every later request.
#[tokio::test]
async fn a_task_deleted_before_its_lease_is_dropped_not_queued_again() {
    // An API server on which task `gone` no longer exists and every other status write works.
    let (svc, mut handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<kube::client::Body>>();
    handle.allow(u64::MAX);
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_string();
            let body = req.into_body().collect_bytes().await.unwrap();
            let (code, answer) = if path.ends_with("/agenttasks/gone/status") {
                (
                    404,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "agenttasks.cogo.xyz \"gone\" not found", "reason": "NotFound", "code": 404}),
                )
            } else {
                // The status replaced by the JSON patch (`add /status`), on the task as it is now.
                let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let status = sent
                    .as_array()
                    .and_then(|ops| ops.iter().find(|op| op["path"] == "/status"))
                    .map(|op| op["value"].clone())
                    .expect("a JSON patch of the status");
                let written = serde_json::json!({
                    "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                    "metadata": {"name": "kept", "namespace": "team", "resourceVersion": "8", "uid": "u-kept"},
                    "spec": {"agent": "research", "type": "cogo.echo"}, "status": status});
                (200, written)
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(kube::client::Body::from(answer.to_string().into_bytes()))
                    .unwrap(),
            );
        }
    });
    let mut b = broker_with_agents(&[agent("research", "Research")]);
    b.client = Client::new(svc, "default");
    for name in ["gone", "kept"] {
        let task: cogo_api::AgentTask = serde_json::from_value(serde_json::json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "namespace": "team", "resourceVersion": "7",
                         "creationTimestamp": "2026-11-29T10:00:00Z"},
            "spec": {"agent": "research", "type": "cogo.echo"},
        }))
        .unwrap();
        b.scheduler.enqueue(
            "team",
            name,
            Target::Agent("research".into()),
            Arc::new(task),
            &b.agents,
        );
    }
    let scheduler = b.scheduler.clone();
    let token = keys().issue("team", "research", now(), 3600).unwrap();
    let (status, body) = send_to(
        b,
        Request::post(LEASE),
        Some(&token),
        r#"{"pod": "p", "slots": 2}"#.into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let leased: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(leased["tasks"].as_array().map(Vec::len), Some(1), "{leased}");
    assert!(scheduler.is_leased("team", "kept"), "the other task is leased");
    assert!(
        !scheduler.is_leased("team", "gone") && !scheduler.is_queued("team", "gone"),
        "the deleted task is neither leased nor queued again"
    );
}

/// The sub-task endpoint keeps to the limits, naming the one a request would pass, before it
/// touches the API server; asking again for a sub-task that exists is not refused by them.
#[tokio::test]
async fn subtasks_are_limited() {
    let (store, mut writer) = kube::runtime::reflector::store::<cogo_api::AgentTask>();
    for t in [
        serde_json::json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "root", "namespace": "team", "uid": "u-root"},
            "spec": {"agent": "research", "type": "cogo.fanout"},
            "status": {"phase": "Running", "agent": "research", "pod": "p", "attempt": 1}}),
        serde_json::json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "root-0", "namespace": "team", "uid": "u-0"},
            "spec": {"agent": "research", "type": "cogo.echo", "parent": "root"}}),
    ] {
        let t: cogo_api::AgentTask = serde_json::from_value(t).unwrap();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(t));
    }
    let token = keys().issue("team", "research", now(), 3600).unwrap();
    let subtask = |name: &str| {
        serde_json::json!({"pod": "p", "attempt": 1, "name": name, "role": "Research", "type": "cogo.echo"})
            .to_string()
    };
    let limited = |store: kube::runtime::reflector::Store<cogo_api::AgentTask>| {
        let mut b = broker_with_agents(&[agent("research", "Research")]);
        b.subtask_limits.per_task = 1;
        let _ = b.tasks.set(store);
        b
    };
    let path = "/v1/namespaces/team/tasks/root/subtasks";
    let (status, bytes) = send_to(
        limited(store.clone()),
        Request::post(path),
        Some(&token),
        subtask("root-1"),
    )
    .await;
    let err: ErrorBody = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "TooManySubtasks"),
        "{}",
        err.message
    );
    assert!(err.message.contains("--max-subtasks-per-task"), "{}", err.message);
    // The one that exists is looked up (at the API server, which this client cannot reach).
    let (status, bytes) = send_to(
        limited(store),
        Request::post(path),
        Some(&token),
        subtask("root-0"),
    )
    .await;
    let err: ErrorBody = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "KubernetesUnavailable")
    );
}

#[tokio::test]
async fn a_subtask_input_nested_too_deep_is_refused_at_the_door() {
    let (store, mut writer) = kube::runtime::reflector::store::<cogo_api::AgentTask>();
    let root: cogo_api::AgentTask = serde_json::from_value(serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "root", "namespace": "team", "uid": "u-root"},
        "spec": {"agent": "research", "type": "cogo.fanout"},
        "status": {"phase": "Running", "agent": "research", "pod": "p", "attempt": 1}}))
    .unwrap();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(root));
    let token = keys().issue("team", "research", now(), 3600).unwrap();
    // 70 levels is over the limit of 64; 500 is past what serde_json parses at all.
    for levels in [70, 500] {
        let input = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        let body = format!(
            r#"{{"pod": "p", "attempt": 1, "role": "Research", "type": "cogo.echo", "input": {input}}}"#
        );
        let b = broker_with_agents(&[agent("research", "Research")]);
        let _ = b.tasks.set(store.clone());
        let (status, bytes) = send_to(
            b,
            Request::post("/v1/namespaces/team/tasks/root/subtasks"),
            Some(&token),
            body,
        )
        .await;
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (status, err.code.as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, "InputTooDeep"),
            "{levels}: {}",
            err.message
        );
        assert!(err.message.contains("more than 64 levels"), "{}", err.message);
    }
}

#[tokio::test]
async fn a_heartbeat_renews_only_a_lease_the_table_holds() {
    let (store, mut writer) = kube::runtime::reflector::store::<cogo_api::AgentTask>();
    // The cache still shows the task Running on pod p (the view before its completion).
    let t: cogo_api::AgentTask = serde_json::from_value(serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "t", "namespace": "team", "uid": "u-t"},
        "spec": {"agent": "research", "type": "cogo.echo"},
        "status": {"phase": "Running", "agent": "research", "pod": "p", "attempt": 1}}))
    .unwrap();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(t));
    let token = keys().issue("team", "research", now(), 3600).unwrap();
    let beat = || serde_json::json!({"pod": "p", "attempt": 1}).to_string();
    let path = "/v1/namespaces/team/tasks/t/heartbeat";

    // Held: renewed from memory, no API call.
    let b = broker_with_agents(&[agent("research", "Research")]);
    let _ = b.tasks.set(store.clone());
    let t0 = std::time::Instant::now();
    b.scheduler.hold("team", "t", "research", "p", 1, t0);
    let scheduler = b.scheduler.clone();
    let (status, _) = send_to(b, Request::post(path), Some(&token), beat()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(matches!(
        scheduler.lease_state("team", "t", 1, t0 + std::time::Duration::from_secs(14)),
        LeaseState::Held(_)
    ));

    // Released (the outcome was recorded): the stale cache is not believed; the task is read
    // at the API server (which this client cannot reach) and no lease is made.
    let b = broker_with_agents(&[agent("research", "Research")]);
    let _ = b.tasks.set(store);
    let scheduler = b.scheduler.clone();
    let (status, bytes) = send_to(b, Request::post(path), Some(&token), beat()).await;
    let err: ErrorBody = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "KubernetesUnavailable")
    );
    assert!(!scheduler.is_leased("team", "t"), "no lease from a stale view");
}

/// Items of an indexed task are leased, heartbeated and completed in memory, without a call
/// to the API server: each call is checked against the item's lease (pod, attempt, the token's
/// agent), and a report for an item already recorded changes nothing.
#[tokio::test]
async fn items_are_leased_heartbeated_and_completed_in_memory_against_their_leases() {
    use cogo_operator::tasks::{items::Board, transition::Policy};
    let (store, mut writer) = kube::runtime::reflector::store::<cogo_api::AgentTask>();
    let t: cogo_api::AgentTask = serde_json::from_value(serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "many", "namespace": "team", "uid": "u-many"},
        "spec": {"agent": "research", "type": "cogo.echo", "items": {"count": 3}, "input": {"n": "{{index}}"}}}))
    .unwrap();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(t.clone()));
    let b = broker_with_agents(&[agent("research", "Research")]);
    let _ = b.tasks.set(store);
    let board = Board::new(
        Arc::new(t.clone()),
        Target::Agent("research".into()),
        Policy::of(&t, None),
        (&[], &[]),
    );
    b.scheduler.lay_out("team", "many", board, &b.agents);
    let token = keys().issue("team", "research", now(), 3600).unwrap();
    let other = keys().issue("team", "indexing", now(), 3600).unwrap();
    async fn call(b: &Broker, path: &str, token: &str, body: serde_json::Value) -> (StatusCode, Vec<u8>) {
        send_to(b.clone(), Request::post(path), Some(token), body.to_string()).await
    }

    let (status, bytes) = call(&b, LEASE, &token, serde_json::json!({"pod": "p", "slots": 2})).await;
    assert_eq!(status, StatusCode::OK);
    let leased: cogo_api::broker::LeaseResponse = serde_json::from_slice(&bytes).unwrap();
    let got: Vec<_> = leased
        .tasks
        .iter()
        .map(|t| (t.item, t.attempt, t.input.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (Some(0), 1, serde_json::json!({"n": 0})),
            (Some(1), 1, serde_json::json!({"n": 1}))
        ]
    );

    let beat = "/v1/namespaces/team/tasks/many/heartbeat";
    let (status, bytes) = call(
        &b,
        beat,
        &token,
        serde_json::json!({"pod": "p", "attempt": 1, "item": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    for (body, token, code) in [
        (
            serde_json::json!({"pod": "q", "attempt": 1, "item": 0}),
            &token,
            "LeaseLost",
        ),
        (
            serde_json::json!({"pod": "p", "attempt": 2, "item": 0}),
            &token,
            "LeaseLost",
        ),
        (
            serde_json::json!({"pod": "p", "attempt": 1, "item": 2}),
            &token,
            "LeaseLost",
        ),
        (
            serde_json::json!({"pod": "p", "attempt": 1, "item": 9}),
            &token,
            "ItemNotFound",
        ),
        (
            serde_json::json!({"pod": "p", "attempt": 1, "item": 0}),
            &other,
            "LeaseLost",
        ),
    ] {
        let (status, bytes) = call(&b, beat, token, body.clone()).await;
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(err.code, code, "{body}: {status}");
    }

    let done = "/v1/namespaces/team/tasks/many/complete";
    let report =
        serde_json::json!({"pod": "p", "attempt": 1, "item": 0, "outcome": "Succeeded", "result": {"n": 0}});
    let (status, bytes) = call(&b, done, &token, report.clone()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let answer: cogo_api::broker::CompleteResponse = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (answer.phase, answer.applied),
        (cogo_api::TaskPhase::Succeeded, true)
    );
    let (_, bytes) = call(&b, done, &token, report).await;
    let again: cogo_api::broker::CompleteResponse = serde_json::from_slice(&bytes).unwrap();
    assert!(!again.applied, "the first report stands");
    let status = b.scheduler.board_status("team", "many").unwrap();
    assert_eq!((status.succeeded, status.running, status.pending), (1, 1, 1));

    // A task without items laid out here: the pod is told to stop.
    let (status, bytes) = call(
        &b,
        "/v1/namespaces/team/tasks/plain/heartbeat",
        &token,
        serde_json::json!({"pod": "p", "attempt": 1, "item": 0}),
    )
    .await;
    let err: ErrorBody = serde_json::from_slice(&bytes).unwrap();
    assert_eq!((status, err.code.as_str()), (StatusCode::CONFLICT, "LeaseLost"));
}

#[tokio::test(start_paused = true)]
async fn completion_bodies_share_a_memory_budget() {
    let token = keys().issue("team", "research", now(), 3600).unwrap();
    let path = "/v1/namespaces/team/tasks/t/complete";
    // Declared over the limit: refused before a byte of the body is read.
    let (status, bytes) = send_to(
        broker(),
        Request::post(path).header("content-length", (17usize << 20).to_string()),
        Some(&token),
        String::new(),
    )
    .await;
    let err: ErrorBody = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLarge")
    );

    // One body that has not arrived yet holds the whole budget: the next one waits, then is
    // told to come back, rather than being read into memory too.
    let mut b = broker();
    b.complete_budget = Arc::new(cogo_operator::broker::CompleteBudget::with_bytes(1 << 20));
    let app = router(b);
    let stalled = Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("content-length", "300000")
        .body(Body::from_stream(futures::stream::pending::<
            Result<bytes::Bytes, std::io::Error>,
        >()))
        .unwrap();
    let first = tokio::spawn(app.clone().oneshot(stalled));
    tokio::task::yield_now().await;
    let second = Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(
            r#"{"pod": "p", "attempt": 1, "outcome": "Succeeded"}"#,
        ))
        .unwrap();
    let res = app.oneshot(second).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    let err: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(err.code, "Busy", "{}", err.message);
    first.abort();
}

/// A task that finishes while its outcome's write is held up by a busy API server, past the
/// coalescing window: its lease is not written beside the outcome (both are fenced on the same
/// resourceVersion; one of the two would fail), only the outcome is.
#[tokio::test]
async fn a_lease_waits_while_its_outcome_is_being_written() {
    use std::time::Duration;
    let (svc, mut api) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<kube::client::Body>>();
    let (store, mut writer) = kube::runtime::reflector::store::<cogo_api::AgentTask>();
    let t: cogo_api::AgentTask = serde_json::from_value(serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "t", "namespace": "team", "uid": "u-t", "resourceVersion": "7"},
        "spec": {"agent": "research", "type": "cogo.echo", "input": {"n": 1}},
        "status": {"phase": "Pending", "attempt": 0}}))
    .unwrap();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(t.clone()));
    let b = Broker {
        client: Client::new(svc, "default"),
        coalesce_window: Duration::from_millis(100),
        ..broker_with_agents(&[agent("research", "Research")])
    };
    let _ = b.tasks.set(store);
    b.scheduler.enqueue(
        "team",
        "t",
        Target::Agent("research".into()),
        Arc::new(t),
        &b.agents,
    );
    let token = keys().issue("team", "research", now(), 3600).unwrap();

    let (status, bytes) = send_to(
        b.clone(),
        Request::post(LEASE),
        Some(&token),
        serde_json::json!({"pod": "p", "slots": 1}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let leased: cogo_api::broker::LeaseResponse = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(leased.tasks.len(), 1);

    let complete = tokio::spawn({
        let (b, token) = (b.clone(), token.clone());
        async move {
            send_to(
                b,
                Request::post("/v1/namespaces/team/tasks/t/complete"),
                Some(&token),
                serde_json::json!({"pod": "p", "attempt": 1, "outcome": "Succeeded", "result": {"n": 1}})
                    .to_string(),
            )
            .await
        }
    });
    let (req, reply) = api.next_request().await.expect("the outcome's write");
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(
        req.uri().path(),
        "/apis/cogo.xyz/v1alpha1/namespaces/team/agenttasks/t/status"
    );
    let body = req.into_body().collect_bytes().await.unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let written = &patch[1]["value"];
    assert_eq!(written["phase"], "Succeeded", "{patch}");
    // The API server holds the write for three coalescing windows: no lease is written meanwhile.
    let during = tokio::time::timeout(Duration::from_millis(300), api.next_request()).await;
    assert!(
        during.is_err(),
        "a second write beside the outcome: {:?}",
        during.map(|r| r.map(|(q, _)| q.uri().to_string()))
    );
    let answer = serde_json::json!({
        "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "t", "namespace": "team", "uid": "u-t", "resourceVersion": "8"},
        "spec": {"agent": "research", "type": "cogo.echo", "input": {"n": 1}},
        "status": written,
    });
    reply.send_response(
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(kube::client::Body::from(answer.to_string().into_bytes()))
            .unwrap(),
    );
    let (status, bytes) = complete.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    // Nor after: the outcome took the lease's place.
    let after = tokio::time::timeout(Duration::from_millis(300), api.next_request()).await;
    assert!(
        after.is_err(),
        "a write after the outcome: {:?}",
        after.map(|r| r.map(|(q, _)| q.uri().to_string()))
    );
}
