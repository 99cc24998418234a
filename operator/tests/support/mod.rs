//! A scripted mock of the Kubernetes API server for controller tests.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::sync::Arc;

use cogo_operator::{config::Config, controller::Context, metrics::Metrics};
use http::{Method, Request, Response};
use kube::{Client, client::Body};
use serde_json::{Value, json};

/// One request the mock API server expects, and its answer.
pub struct Step {
    pub method: Method,
    pub path: String,
    pub reply: Reply,
}

pub enum Reply {
    NotFound,
    /// Echo the request body back, as an apply does, with this status merged in.
    Echo(Value),
    Json(Value),
    /// Answer with this HTTP status and body.
    Status(u16, Value),
}

pub fn step(method: Method, path: impl Into<String>, reply: Reply) -> Step {
    Step {
        method,
        path: path.into(),
        reply,
    }
}

/// A request the server saw.
#[derive(Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
}

/// Runs `reconcile` against a server that expects exactly `steps`, in order, and returns what
/// it saw. Fails on any request outside the script and on script steps left unserved.
pub async fn run<F, Fut, T>(steps: Vec<Step>, reconcile: F) -> Vec<Seen>
where
    F: FnOnce(Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = cogo_operator::Result<T>>,
{
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut steps = steps.into_iter();
        while let Some((req, send)) = handle.next_request().await {
            let (method, path, query) = (
                req.method().clone(),
                req.uri().path().to_string(),
                req.uri().query().unwrap_or("").to_string(),
            );
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            let Some(expected) = steps.next() else {
                panic!("unexpected request {method} {path}?{query} with body {body}");
            };
            assert_eq!(
                (&method, path.as_str()),
                (&expected.method, expected.path.as_str()),
                "request #{}",
                seen.len() + 1
            );
            let (code, reply) = match expected.reply {
                Reply::NotFound => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
                Reply::Echo(status) => {
                    let mut obj = body.clone();
                    obj["metadata"]["uid"] = json!("child-uid");
                    obj["metadata"]["generation"] = json!(1);
                    if !status.is_null() {
                        obj["status"] = status;
                    }
                    (200, obj)
                }
                Reply::Json(v) => (200, v),
                Reply::Status(code, v) => (code, v),
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
            seen.push(Seen {
                method,
                path,
                query,
                body,
            });
        }
        let left: Vec<_> = steps.map(|s| format!("{} {}", s.method, s.path)).collect();
        assert!(left.is_empty(), "expected requests never came: {left:?}");
        seen
    });
    let client = Client::new(svc, "default");
    let ctx = Arc::new(Context::new(
        client,
        Config::default(),
        Arc::new(Metrics::default()),
        Some("test".into()),
    ));
    let result = reconcile(ctx).await;
    result.expect("the call under test succeeds");
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("server finishes")
        .unwrap()
}
