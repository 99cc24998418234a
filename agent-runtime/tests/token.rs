//! The broker token: read from its mounted file, read again when the broker refuses it, and
//! an agent the broker refuses says so in its readiness until a renewed token works.

use std::sync::{Arc, Mutex};

use axum::{Json, Router, http::HeaderMap, http::StatusCode, routing::get};
use cogo_agent::{
    broker::{BrokerApi, CallError, HttpBroker, TokenSource},
    pod::Ready,
};
use cogo_api::broker::{ErrorBody, WorkerKeySet};

/// A broker that takes only the token in `accepted`, and counts the calls.
async fn broker(accepted: Arc<Mutex<String>>, calls: Arc<Mutex<Vec<String>>>) -> String {
    let app = Router::new().route(
        "/v1/worker-keys",
        get(move |headers: HeaderMap| {
            let (accepted, calls) = (accepted.clone(), calls.clone());
            async move {
                let token = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default()
                    .to_string();
                calls.lock().unwrap().push(token.clone());
                if token == *accepted.lock().unwrap() {
                    Ok(Json(WorkerKeySet { keys: vec![] }))
                } else {
                    Err((
                        StatusCode::UNAUTHORIZED,
                        Json(ErrorBody {
                            code: "TokenExpired".into(),
                            message: "the token has expired".into(),
                        }),
                    ))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_refused_token_is_read_again_and_readiness_says_when_none_works() {
    let dir = std::env::temp_dir().join(format!("cogo-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "first\n").unwrap();
    let accepted = Arc::new(Mutex::new("first".to_string()));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let url = broker(accepted.clone(), calls.clone()).await;
    let ready = Ready::now();
    let b = HttpBroker::new(
        &url,
        TokenSource::File(file.clone()),
        "team".into(),
        "research".into(),
        "research-0".into(),
    )
    .with_readiness(ready.clone());

    b.worker_keys().await.expect("the mounted token works");
    assert_eq!(
        calls.lock().unwrap().as_slice(),
        ["first"],
        "read from the file, trimmed"
    );

    // The operator renewed the token: the file changed, the broker refuses the old one. The
    // agent reads the file again and carries on, without a restart and still ready.
    *accepted.lock().unwrap() = "second".into();
    std::fs::write(&file, "second").unwrap();
    b.worker_keys()
        .await
        .expect("the renewed token is read on refusal");
    assert_eq!(calls.lock().unwrap()[1..], ["first", "second"]);
    assert!(ready.is_ready() && b.authenticated());

    // No token in the file works: the call fails with the broker's reason, and the pod is not
    // ready, until the file holds one that works.
    *accepted.lock().unwrap() = "third".into();
    match b.worker_keys().await {
        Err(CallError::Refused(401, body)) => assert_eq!(body.code, "TokenExpired"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!ready.is_ready() && !b.authenticated());
    std::fs::write(&file, "third").unwrap();
    b.worker_keys().await.expect("works again");
    assert!(ready.is_ready() && b.authenticated());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_fixed_token_is_not_read_again() {
    let accepted = Arc::new(Mutex::new("right".to_string()));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let url = broker(accepted, calls.clone()).await;
    let b = HttpBroker::new(
        &url,
        TokenSource::Fixed("wrong".into()),
        "team".into(),
        "research".into(),
        "p".into(),
    );
    assert!(b.worker_keys().await.is_err());
    assert_eq!(calls.lock().unwrap().len(), 1, "nothing new to try");
    assert!(!b.authenticated());
}
