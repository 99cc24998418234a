//! The whole path without a cluster: tasks in an in-memory broker, the Executor role leasing
//! them, and this worker's link running them in the real sandbox.

#[path = "../../agent-runtime/tests/common/executor.rs"]
mod harness;

mod common;

use std::{sync::Arc, time::Duration};

use cogo_api::broker::Outcome;
use cogo_worker::{
    link::{self, LinkConfig, LinkMetrics, TokenSource},
    python::PythonRunner,
};
use harness::*;
use serde_json::json;

fn link_config(port: u16, id: &str, capacity: u32, token: TokenSource) -> LinkConfig {
    LinkConfig {
        url: format!("ws://127.0.0.1:{port}/v1/workers"),
        token,
        worker_id: id.into(),
        capacity,
        heartbeat: Duration::from_millis(300),
        grace: Duration::from_secs(1),
    }
}

fn start(config: LinkConfig) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let runner = Arc::new(PythonRunner::new(common::test_config("https://pypi.org/simple")));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let metrics = LinkMetrics::register(&cogo_agent::pod::Metrics::new("worker", "kind", "python-sandbox"));
    (stop, tokio::spawn(link::run(config, runner, rx, metrics)))
}

#[tokio::test]
async fn tasks_run_in_the_sandbox_of_a_connected_worker() {
    let ex = executor().await;
    // The token comes from a file, read at every connect.
    let file = std::env::temp_dir().join(format!("cogo-link-token-{}", std::process::id()));
    std::fs::write(&file, format!("{}\n", good_token())).unwrap();
    let (_stop, _link) = start(link_config(ex.port, "py-1", 2, TokenSource::File(file)));
    for i in 0..4 {
        ex.broker.submit(
            &format!("sq-{i}"),
            "python.execute",
            json!({"code": format!("print({i} * {i})")}),
        );
    }
    for i in 0..4 {
        let done = ex
            .broker
            .outcome(&format!("sq-{i}"), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(done.outcome, Outcome::Succeeded, "{done:?}");
        let result = done.result.unwrap();
        assert_eq!(result["stdout"], format!("{}\n", i * i));
        assert_eq!(result["exitCode"], 0);
    }
    // The Executor reports the worker to the operator (a moment after it connects).
    let reported = || {
        ex.broker
            .reports()
            .iter()
            .any(|r| r.workers.iter().any(|w| w.id == "py-1" && w.capacity == 2))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !reported() {
        assert!(std::time::Instant::now() < deadline, "{:#?}", ex.broker.reports());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_worker_that_is_refused_keeps_trying_and_gets_in_with_a_good_token() {
    let ex = executor().await;
    let file = std::env::temp_dir().join(format!("cogo-link-token-bad-{}", std::process::id()));
    std::fs::write(&file, "not-a-token").unwrap();
    let (_stop, _link) = start(link_config(ex.port, "py-2", 1, TokenSource::File(file.clone())));
    ex.broker
        .submit("later", "python.execute", json!({"code": "print('in')"}));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ex.broker.queued(), ["later"], "no worker got in with a bad token");
    // The operator reissues the token: the next dial reads it.
    std::fs::write(&file, good_token()).unwrap();
    let done = ex.broker.outcome("later", Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.result.unwrap()["stdout"], "in\n");
}

#[tokio::test]
async fn on_shutdown_running_jobs_finish_or_are_handed_back() {
    let ex = executor().await;
    let (stop, link) = start(link_config(ex.port, "py-3", 2, TokenSource::Value(good_token())));
    ex.broker.submit(
        "quick",
        "python.execute",
        json!({"code": "import time\ntime.sleep(0.3)\nprint('done')"}),
    );
    ex.broker.submit(
        "slow",
        "python.execute",
        json!({"code": "import time\ntime.sleep(30)"}),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(ex.broker.queued().is_empty(), "both jobs run");
    stop.send(true).unwrap();
    let quick = ex.broker.outcome("quick", Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        quick.outcome,
        Outcome::Succeeded,
        "a job that ends within the grace period finishes"
    );
    let slow = ex.broker.outcome("slow", Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (slow.outcome, slow.error.as_deref(), slow.retryable),
        (Outcome::Failed, Some("the worker is shutting down"), true),
        "the rest is handed back, to be retried"
    );
    tokio::time::timeout(Duration::from_secs(5), link)
        .await
        .unwrap()
        .unwrap();
    // Gone from the Executor: once the lease request out for its slots has ended (a worker
    // lane's wait is short), a new job waits in the queue.
    tokio::time::sleep(Duration::from_secs(4)).await;
    ex.broker
        .submit("after", "python.execute", json!({"code": "pass"}));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(ex.broker.queued(), ["after"]);
}
