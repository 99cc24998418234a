//! The Executor role in a process of its own (no cluster): its worker endpoint on a local port,
//! its lanes pulling from an in-memory broker, and workers played by WebSocket clients. Tokens
//! are signed here with Ed25519 keys the in-memory broker publishes, as the operator's are.

#[path = "common/executor.rs"]
mod harness;

use std::time::Duration;

use cogo_api::{
    broker::{Outcome, WorkerKeySet},
    worker::message::{ExecuteData, MessageType, Payload, TOKEN_AUDIENCE},
};
use futures::SinkExt;
use harness::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};

/// Every bad token is refused before the upgrade, with a status and a stable code.
#[tokio::test]
async fn bad_tokens_are_refused_before_the_upgrade() {
    let ex = executor().await;
    let agent_token = {
        let claims =
            json!({"sub": "agent:memory/executor", "aud": "cogo-broker", "iat": now(), "exp": now() + 60});
        let header = Header {
            kid: Some("k1".into()),
            ..Header::new(Algorithm::HS256)
        };
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&[1; 32])).unwrap()
    };
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("no token", None, 401, "MissingToken"),
        ("not a JWT", Some("hello".into()), 401, "MalformedToken"),
        (
            "an agent's broker token",
            Some(agent_token),
            401,
            "MalformedToken",
        ),
        (
            "expired",
            Some(token(
                "w1",
                [1; 32],
                "memory",
                "executor",
                now() - 3600,
                TOKEN_AUDIENCE,
            )),
            401,
            "TokenExpired",
        ),
        (
            "forged: a known key id, another key",
            Some(token(
                "w1",
                [9; 32],
                "memory",
                "executor",
                now() + 60,
                TOKEN_AUDIENCE,
            )),
            401,
            "InvalidSignature",
        ),
        (
            "a key the operator never published",
            Some(token(
                "w9",
                [9; 32],
                "memory",
                "executor",
                now() + 60,
                TOKEN_AUDIENCE,
            )),
            401,
            "UnknownSigningKey",
        ),
        (
            "another audience",
            Some(token(
                "w1",
                [1; 32],
                "memory",
                "executor",
                now() + 60,
                "cogo-broker",
            )),
            401,
            "WrongAudience",
        ),
        (
            "another namespace's worker",
            Some(token(
                "w1",
                [1; 32],
                "elsewhere",
                "executor",
                now() + 60,
                TOKEN_AUDIENCE,
            )),
            403,
            "WrongNamespace",
        ),
        (
            "another Executor's worker",
            Some(token(
                "w1",
                [1; 32],
                "memory",
                "other",
                now() + 60,
                TOKEN_AUDIENCE,
            )),
            403,
            "WrongExecutor",
        ),
    ];
    for (what, token, status, code) in cases {
        match dial(ex.port, token.as_deref()).await {
            Err(tungstenite::Error::Http(res)) => {
                assert_eq!(res.status().as_u16(), status, "{what}");
                let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["code"], code, "{what}: {body}");
            }
            other => panic!(
                "{what}: expected a refusal, got {:?}",
                other.map(|_| "a connection")
            ),
        }
    }
    // A good token still gets in.
    let mut w = worker(ex.port, "w-ok", 1).await;
    assert!(next_of(&mut w, MessageType::Ping, "w-ok").await.is_some());
}

/// A key rotated in at the operator is picked up when a token names it.
#[tokio::test]
async fn a_rotated_key_is_fetched_when_a_token_names_it() {
    let ex = executor().await;
    let fresh = token("w2", [2; 32], "memory", "executor", now() + 60, TOKEN_AUDIENCE);
    assert!(matches!(
        dial(ex.port, Some(&fresh)).await,
        Err(tungstenite::Error::Http(_))
    ));
    ex.broker.set_worker_keys(WorkerKeySet {
        keys: vec![key_of("w1", [1; 32]), key_of("w2", [2; 32])],
    });
    // Fetches are at least 5 s apart; the first try above fetched a moment ago.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(dial(ex.port, Some(&fresh)).await.is_ok(), "the new key verifies");
    assert!(
        dial(ex.port, Some(&good_token())).await.is_ok(),
        "the old key still does"
    );
}

/// Every bad frame gets an error frame back (or a clean close), and the Executor keeps
/// serving: afterwards a worker connects and runs a job.
#[tokio::test]
async fn bad_frames_get_an_error_frame_and_never_take_the_executor_down() {
    let ex = executor().await;
    // Out of order: the first frame is not status.
    let mut ws = dial(ex.port, Some(&good_token())).await.unwrap();
    ws.send(frame("1", "heartbeat", "w", None, None)).await.unwrap();
    let (_, p) = next_of(&mut ws, MessageType::Error, "w").await.unwrap();
    assert!(
        matches!(&p, Payload::Error(e) if e.message.contains("first frame must be status")),
        "{p:?}"
    );
    assert_eq!(close_code(&mut ws).await, Some(1008));

    let mut ws = worker(ex.port, "w", 1).await;
    let cases: Vec<(&str, Message, &str)> = vec![
        ("not JSON", Message::Text("hello".into()), "MalformedFrame"),
        (
            "unknown type",
            Message::Text(
                json!({"id": "a", "type": "launch", "workerId": "w", "timestamp": "2026-01-01T00:00:00Z"})
                    .to_string()
                    .into(),
            ),
            "unknown variant `launch`",
        ),
        ("binary", Message::Binary(vec![1, 2, 3].into()), "not binary"),
        (
            "another worker's id",
            frame("b", "heartbeat", "intruder", None, None),
            "not intruder",
        ),
        (
            "a result for a job never sent",
            frame("c", "result", "w", Some("nobody"), Some(json!({"exitCode": 0}))),
            "no job nobody is running",
        ),
        (
            "execute from a worker",
            frame(
                "d",
                "execute",
                "w",
                Some("t"),
                Some(json!({"type": "python.execute", "input": {}, "deadline": "2026-01-01T00:00:00Z"})),
            ),
            "do not send execute",
        ),
        (
            "a status without data",
            frame("e", "status", "w", None, None),
            "needs data",
        ),
    ];
    for (what, msg, fragment) in cases {
        ws.send(msg).await.unwrap();
        let (_, p) = next_of(&mut ws, MessageType::Error, "w")
            .await
            .unwrap_or_else(|| panic!("{what}: no error frame"));
        let Payload::Error(e) = p else { unreachable!() };
        assert!(e.message.contains(fragment), "{what}: {}", e.message);
    }
    // A repeated frame id.
    ws.send(frame("same", "heartbeat", "w", None, None))
        .await
        .unwrap();
    ws.send(frame("same", "heartbeat", "w", None, None))
        .await
        .unwrap();
    let (_, p) = next_of(&mut ws, MessageType::Error, "w").await.unwrap();
    assert!(
        matches!(&p, Payload::Error(e) if e.message.contains("duplicate frame id same")),
        "{p:?}"
    );
    // Oversized: a clean close with 1009.
    let huge = "x".repeat(17 * 1024 * 1024);
    let _ = ws.send(Message::Text(huge.into())).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));

    // The Executor is fine: a worker connects and runs a job.
    let mut w = worker(ex.port, "w2", 1).await;
    ex.broker
        .submit("after", "python.execute", json!({"code": "print(1)"}));
    let (m, _) = next_of(&mut w, MessageType::Execute, "w2").await.unwrap();
    w.send(frame(
        "r",
        "result",
        "w2",
        m.task_id.as_deref(),
        Some(json!({"exitCode": 0})),
    ))
    .await
    .unwrap();
    let done = ex.broker.outcome("after", Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.outcome, Outcome::Succeeded);
}

/// Worker tasks are leased only while a worker of their kind has a free slot; the job runs on
/// a worker and its result completes the task.
#[tokio::test]
async fn jobs_wait_for_a_free_worker_and_complete_with_its_result() {
    let ex = executor().await;
    ex.broker.submit("own", "cogo.echo", json!({"own": true}));
    ex.broker
        .submit("job", "python.execute", json!({"code": "print(2)"}));
    let own = ex.broker.outcome("own", Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        own.result,
        Some(json!({"own": true})),
        "the own lane runs the built-ins"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ex.broker.queued(), ["job"], "no worker, so the job stays queued");
    assert!(
        ex.broker
            .lease_requests()
            .iter()
            .all(|r| !r.type_prefixes.contains(&"python.".to_string())),
        "no lease was even asked for python tasks without a worker"
    );
    assert!(
        ex.broker
            .lease_requests()
            .iter()
            .any(|r| r.exclude_type_prefixes.contains(&"python.".to_string())),
        "the own lane leaves python tasks to the workers' lane"
    );
    let mut w = worker(ex.port, "py-1", 1).await;
    let (m, p) = next_of(&mut w, MessageType::Execute, "py-1").await.unwrap();
    assert_eq!(m.task_id.as_deref(), Some("job"));
    let Payload::Execute(e) = p else { unreachable!() };
    assert_eq!(
        (e.task_type.as_str(), e.input),
        ("python.execute", json!({"code": "print(2)"}))
    );
    // A second job waits: the only slot is taken.
    ex.broker
        .submit("job2", "python.execute", json!({"code": "print(3)"}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ex.broker.queued(), ["job2"]);
    w.send(frame(
        "r1",
        "result",
        "py-1",
        Some("job"),
        Some(json!({"exitCode": 0, "stdout": "2\n"})),
    ))
    .await
    .unwrap();
    let done = ex.broker.outcome("job", Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (done.outcome, done.result),
        (Outcome::Succeeded, Some(json!({"exitCode": 0, "stdout": "2\n"})))
    );
    let (m, _) = next_of(&mut w, MessageType::Execute, "py-1").await.unwrap();
    assert_eq!(
        m.task_id.as_deref(),
        Some("job2"),
        "the freed slot takes the next job"
    );
    w.send(frame(
        "r2",
        "error",
        "py-1",
        Some("job2"),
        Some(json!({"message": "the worker is shutting down", "retryable": true})),
    ))
    .await
    .unwrap();
    let failed = ex.broker.outcome("job2", Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (failed.outcome, failed.error.as_deref(), failed.retryable),
        (Outcome::Failed, Some("the worker is shutting down"), true),
        "a worker's retryable error goes back to the broker's retry policy"
    );
    // The report names the worker and counts its jobs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = ex.broker.reports().pop().unwrap();
    assert_eq!(report.workers[0].id, "py-1");
    assert_eq!(report.workers[0].worker, "python");
    assert_eq!((report.jobs[0].succeeded, report.jobs[0].failed), (1, 1));
    // And so do the metrics.
    let metrics = reqwest_metrics(ex.port).await;
    assert!(
        metrics.contains("cogo_total_workers{kind=\"PythonSandbox\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cogo_success_rate{kind=\"PythonSandbox\"} 50"),
        "{metrics}"
    );
}

async fn reqwest_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// A worker that disconnects, or falls silent, mid-job loses it to another worker of its kind,
/// in the same attempt.
#[tokio::test]
async fn a_lost_worker_s_job_runs_on_another() {
    let ex = executor().await;
    let mut first = worker(ex.port, "a", 1).await;
    ex.broker
        .submit("moved", "python.execute", json!({"code": "pass"}));
    next_of(&mut first, MessageType::Execute, "a").await.unwrap();
    let mut second = worker(ex.port, "b", 1).await;
    drop(first);
    let (m, _) = next_of(&mut second, MessageType::Execute, "b").await.unwrap();
    assert_eq!(m.task_id.as_deref(), Some("moved"));
    second
        .send(frame("r", "result", "b", Some("moved"), Some(json!({"on": "b"}))))
        .await
        .unwrap();
    let done = ex.broker.outcome("moved", Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.result, Some(json!({"on": "b"})));
    assert_eq!(done.attempt, 1, "the same attempt");

    // Silent: connected, but it answers no ping. Three intervals (0.9 s) later it is dropped.
    ex.broker
        .submit("silent", "python.execute", json!({"code": "pass"}));
    let _mute = worker(ex.port, "mute", 1).await;
    // `second` is free too; whichever gets the job, the mute one cannot keep it.
    let (m, _) = next_of(&mut second, MessageType::Execute, "b").await.unwrap();
    assert_eq!(m.task_id.as_deref(), Some("silent"));
    second
        .send(frame(
            "r2",
            "result",
            "b",
            Some("silent"),
            Some(json!({"on": "b"})),
        ))
        .await
        .unwrap();
    assert!(
        ex.broker
            .outcome("silent", Duration::from_secs(10))
            .await
            .is_some()
    );
}

/// Cancelling a task takes the job back from its worker.
#[tokio::test]
async fn a_cancelled_job_is_taken_back() {
    let ex = executor().await;
    let mut w = worker(ex.port, "c", 1).await;
    ex.broker
        .submit("stop-me", "python.execute", json!({"code": "while True: pass"}));
    next_of(&mut w, MessageType::Execute, "c").await.unwrap();
    ex.broker.cancel("stop-me");
    let (m, p) = next_of(&mut w, MessageType::Error, "c").await.unwrap();
    assert_eq!(m.task_id.as_deref(), Some("stop-me"));
    assert!(matches!(p, Payload::Error(e) if e.message.contains("cancelled")));
    let done = ex
        .broker
        .outcome("stop-me", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(done.outcome, Outcome::Cancelled);
}

/// A worker silent for three ping intervals is dropped, and its job runs elsewhere.
#[tokio::test]
async fn a_silent_worker_is_dropped() {
    let ex = executor().await;
    let mut mute = worker(ex.port, "mute", 1).await;
    ex.broker
        .submit("held", "python.execute", json!({"code": "pass"}));
    // Read (without answering) until the Executor closes: it saw no frame for 0.9 s.
    let started = std::time::Instant::now();
    assert_eq!(close_code(&mut mute).await, Some(1001));
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut w = worker(ex.port, "alive", 1).await;
    let (m, _) = next_of(&mut w, MessageType::Execute, "alive").await.unwrap();
    assert_eq!(m.task_id.as_deref(), Some("held"));
}

/// A job leased when its worker has just left waits for another one a while, then goes back
/// to the broker as a retryable failure, naming the kind.
#[tokio::test]
async fn a_job_with_no_worker_left_goes_back_to_the_queue() {
    let ex = executor().await;
    let mut w = worker(ex.port, "leaving", 1).await;
    ex.broker
        .submit("orphan", "python.execute", json!({"code": "pass"}));
    next_of(&mut w, MessageType::Execute, "leaving").await.unwrap();
    drop(w);
    let done = ex
        .broker
        .outcome("orphan", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((done.outcome, done.retryable), (Outcome::Failed, true));
    assert!(
        done.error
            .unwrap()
            .contains("no PythonSandbox worker has been connected"),
        "the message names the kind"
    );
}

/// Submits the python job `task`, takes its `execute` frame on the worker `ws` (named `id`),
/// answers it, and returns what the frame carried.
async fn run_job(ex: &Executor, ws: &mut Ws, id: &str, task: &str) -> ExecuteData {
    ex.broker
        .submit(task, "python.execute", json!({"code": "print(1)"}));
    let (_, p) = next_of(ws, MessageType::Execute, id).await.unwrap();
    let Payload::Execute(e) = p else { unreachable!() };
    ws.send(frame(
        &format!("{task}-result"),
        "result",
        id,
        Some(task),
        Some(json!({"exitCode": 0})),
    ))
    .await
    .unwrap();
    ex.broker.outcome(task, Duration::from_secs(10)).await.unwrap();
    e
}

#[tokio::test]
async fn only_workers_that_take_it_are_sent_the_trace_context() {
    use cogo_api::worker::message::{FEATURES_HEADER, TRACEPARENT_FEATURE};
    let capture = cogo_telemetry::testing::Capture::start();
    let ex = executor().await;
    // An older worker names no features: its jobs carry no trace context, which it would refuse.
    let mut old = worker(ex.port, "old", 1).await;
    assert_eq!(run_job(&ex, &mut old, "old", "to-old").await.traceparent, None);
    drop(old);

    let mut new = worker_with(
        ex.port,
        "new",
        1,
        &[(FEATURES_HEADER, &format!("other, {TRACEPARENT_FEATURE}"))],
    )
    .await;
    let tp = run_job(&ex, &mut new, "new", "to-new")
        .await
        .traceparent
        .expect("a worker that takes it gets the trace context");
    // It names the Executor's span for the task.
    let handled = capture
        .spans()
        .into_iter()
        .find(|s| {
            s.name == "cogo.task.handle"
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "cogo.task.name" && kv.value.as_str() == "to-new")
        })
        .expect("the Executor's span for the task");
    assert_eq!(
        tp,
        format!(
            "00-{}-{}-01",
            handled.span_context.trace_id(),
            handled.span_context.span_id()
        )
    );
}
