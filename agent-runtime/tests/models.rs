//! The real model clients against local stand-ins of the Gemini and OpenAI APIs that check
//! every request as the services document them (paths, key placement, unknown fields, tool
//! call pairing) and answer in their formats, faults included.

use std::time::{Duration, Instant};

use cogo_agent::llm::{
    Backoff, ChatMessage, ChatRequest, Model, ModelConfig, ModelError, ModelMetrics, ToolSpec,
};
use cogo_api::agent::ModelProvider;
use cogo_e2e::standin::{Reply, StandIn};
use serde_json::{Value, json};

const KEY: &str = "test-key-0123";

/// Both stand-ins, each with the provider its client speaks.
async fn both() -> Vec<(ModelProvider, StandIn)> {
    vec![
        (ModelProvider::Gemini, StandIn::gemini(KEY).await),
        (ModelProvider::OpenAICompatible, StandIn::openai(KEY).await),
    ]
}

fn model_with(provider: ModelProvider, s: &StandIn, key: &str, timeout: Duration) -> Model {
    let config = ModelConfig {
        provider,
        name: "test-model".into(),
        endpoint: Some(s.endpoint()),
        api_key: key.into(),
        timeout,
        attempts: 3,
    };
    Model::new(config.client().unwrap(), config.attempts, ModelMetrics::default()).with_backoff(Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(50),
    })
}

fn model(provider: ModelProvider, s: &StandIn) -> Model {
    model_with(provider, s, KEY, Duration::from_secs(10))
}

fn statuses(s: &StandIn) -> Vec<u16> {
    s.requests().iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn answers_with_usage_and_the_key_only_in_a_header() {
    for (provider, s) in both().await {
        let m = model(provider, &s);
        let r = m.chat(&ChatRequest::user("hello there")).await.unwrap();
        assert_eq!(r.text, "stand-in answer: hello there", "{provider:?}");
        assert!(
            r.usage.input_tokens > 0 && r.usage.output_tokens > 0,
            "{provider:?}: {r:?}"
        );
        assert_eq!(r.usage.model, "test-model");
        let req = &s.requests()[0];
        assert_eq!(req.status, 200);
        assert!(req.query.as_deref().is_none_or(|q| !q.contains(KEY)), "{req:?}");
        assert!(!req.path.contains(KEY));
        let header = |n: &str| req.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        match provider {
            ModelProvider::Gemini => {
                assert_eq!(req.path, "/v1beta/models/test-model:generateContent");
                assert_eq!(header("x-goog-api-key").as_deref(), Some(KEY));
                assert_eq!(header("authorization"), None);
            }
            ModelProvider::OpenAICompatible => {
                assert_eq!(req.path, "/v1/chat/completions");
                assert_eq!(header("authorization"), Some(format!("Bearer {KEY}")));
            }
        }
    }
}

#[tokio::test]
async fn rate_limits_are_waited_out_as_the_provider_asks() {
    for (provider, s) in both().await {
        s.script([
            Reply::Status {
                code: 429,
                retry_after: Some(1),
            },
            Reply::Text("after the wait".into()),
        ]);
        let started = Instant::now();
        let r = model(provider, &s).chat(&ChatRequest::user("hi")).await.unwrap();
        assert_eq!(r.text, "after the wait");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{provider:?}: Retry-After honoured"
        );
        assert_eq!(statuses(&s), [429, 200]);
    }
}

#[tokio::test]
async fn server_errors_and_broken_answers_are_retried_client_errors_are_not() {
    for (provider, s) in both().await {
        let m = model(provider, &s);
        s.script([
            Reply::Status {
                code: 503,
                retry_after: None,
            },
            Reply::Malformed,
            Reply::Text("third time".into()),
        ]);
        assert_eq!(m.chat(&ChatRequest::user("hi")).await.unwrap().text, "third time");
        assert_eq!(statuses(&s), [503, 200, 200], "{provider:?}");

        s.script([Reply::Status {
            code: 400,
            retry_after: None,
        }]);
        let e = m.chat(&ChatRequest::user("hi")).await.unwrap_err();
        assert!(matches!(e, ModelError::BadRequest(_)), "{provider:?}: {e}");
        assert_eq!(s.requests().len(), 4, "{provider:?}: a 400 is not retried");

        // Every call fails: the last error after the attempts.
        s.script((0..3).map(|_| Reply::Status {
            code: 500,
            retry_after: None,
        }));
        let e = m.chat(&ChatRequest::user("hi")).await.unwrap_err();
        assert!(matches!(e, ModelError::Unavailable { status: 500, .. }), "{e}");
        assert!(e.retryable());
        assert_eq!(s.requests().len(), 7);
    }
}

#[tokio::test]
async fn a_bad_key_and_a_safety_block_fail_at_once_saying_which() {
    for (provider, s) in both().await {
        let e = model_with(provider, &s, "wrong", Duration::from_secs(5))
            .chat(&ChatRequest::user("hi"))
            .await
            .unwrap_err();
        assert!(matches!(e, ModelError::BadKey(_)), "{provider:?}: {e}");
        assert!(e.to_string().contains("spec.model.apiKeySecretRef"), "{e}");
        assert!(!e.to_string().contains("wrong"), "the key is not echoed: {e}");
        assert_eq!(s.requests().len(), 1);

        s.script([Reply::SafetyBlock]);
        let e = model(provider, &s)
            .chat(&ChatRequest::user("hi"))
            .await
            .unwrap_err();
        assert!(matches!(e, ModelError::Blocked(_)), "{provider:?}: {e}");
        assert!(!e.retryable());
        assert_eq!(s.requests().len(), 2);
    }
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_tried_again() {
    for (provider, s) in both().await {
        let slow = |text: &str| Reply::Slow(Duration::from_secs(3), Box::new(Reply::Text(text.into())));
        s.script([slow("late"), Reply::Text("in time".into())]);
        let m = model_with(provider, &s, KEY, Duration::from_millis(400));
        assert_eq!(m.chat(&ChatRequest::user("hi")).await.unwrap().text, "in time");
        s.script([slow("a"), slow("b"), slow("c")]);
        let e = m.chat(&ChatRequest::user("hi")).await.unwrap_err();
        assert_eq!(e, ModelError::Timeout(Duration::from_millis(400)), "{provider:?}");
    }
}

#[tokio::test]
async fn streams_arrive_in_pieces_and_a_cut_stream_is_called_again() {
    for (provider, s) in both().await {
        let m = model(provider, &s);
        let mut pieces = Vec::new();
        let r = m
            .chat_stream(&ChatRequest::user("tell me a long story"), &mut |p: &str| {
                pieces.push(p.to_string())
            })
            .await
            .unwrap();
        assert!(pieces.len() > 1, "{provider:?}: {pieces:?}");
        assert_eq!(pieces.concat(), r.text);
        assert_eq!(r.text, "stand-in answer: tell me a long story");
        assert!(
            r.usage.output_tokens > 0,
            "{provider:?}: usage at the end of the stream"
        );

        s.script([
            Reply::CutStream("half an ans".into()),
            Reply::Text("whole answer".into()),
        ]);
        let mut seen = String::new();
        let r = m
            .chat_stream(&ChatRequest::user("hi"), &mut |p: &str| seen.push_str(p))
            .await
            .unwrap();
        assert_eq!(r.text, "whole answer", "{provider:?}");
        assert!(
            seen.ends_with("whole answer") && seen.len() > r.text.len(),
            "{seen}"
        );

        s.script((0..3).map(|_| Reply::CutStream("cut".into())));
        let e = m
            .chat_stream(&ChatRequest::user("hi"), &mut |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(e, ModelError::Transport(ref m) if m.contains("ended before the answer was complete")),
            "{provider:?}: {e}"
        );
    }
}

fn lookup_tool() -> ToolSpec {
    ToolSpec {
        name: "weather_lookup".into(),
        description: "The weather of a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"], "additionalProperties": false}),
    }
}

#[tokio::test]
async fn function_calls_round_trip() {
    for (provider, s) in both().await {
        let m = model(provider, &s);
        s.script([Reply::Calls(vec![
            ("weather_lookup".into(), json!({"city": "Seoul"})),
            ("weather_lookup".into(), json!({"city": "Busan"})),
        ])]);
        let mut req = ChatRequest {
            tools: vec![lookup_tool()],
            ..ChatRequest::user("weather in Seoul and Busan?")
        };
        let first = m.chat(&req).await.unwrap();
        assert_eq!(first.calls.len(), 2, "{provider:?}: {first:?}");
        assert_eq!(first.calls[1].arguments, json!({"city": "Busan"}));
        req.messages.push(ChatMessage::Assistant {
            text: first.text.clone(),
            calls: first.calls.clone(),
        });
        for (c, answer) in first.calls.iter().zip([json!({"celsius": 3}), json!("rain")]) {
            req.messages.push(ChatMessage::ToolResult {
                call_id: c.id.clone(),
                name: c.name.clone(),
                result: answer,
            });
        }
        s.script([Reply::Text("cold in Seoul, rain in Busan".into())]);
        let second = m.chat(&req).await.unwrap();
        assert_eq!(second.text, "cold in Seoul, rain in Busan");
        assert_eq!(
            statuses(&s),
            [200, 200],
            "{provider:?}: the stand-in took the tool results"
        );
        let body = &s.requests()[1].body;
        match provider {
            ModelProvider::Gemini => {
                let parts = &body["contents"][2]["parts"];
                assert_eq!(parts[0]["functionResponse"]["response"], json!({"celsius": 3}));
                assert_eq!(
                    parts[1]["functionResponse"]["response"],
                    json!({"result": "rain"})
                );
            }
            ModelProvider::OpenAICompatible => {
                assert_eq!(body["messages"][2]["tool_call_id"], json!(first.calls[0].id));
                assert_eq!(body["messages"][3]["content"], "\"rain\"");
            }
        }
        // Streamed calls come together from their pieces.
        s.script([Reply::Calls(vec![(
            "weather_lookup".into(),
            json!({"city": "Jeju"}),
        )])]);
        let req = ChatRequest {
            tools: vec![lookup_tool()],
            ..ChatRequest::user("Jeju?")
        };
        let streamed = m.chat_stream(&req, &mut |_| {}).await.unwrap();
        assert_eq!(streamed.calls.len(), 1, "{provider:?}");
        assert_eq!(streamed.calls[0].arguments, json!({"city": "Jeju"}));
    }
}

#[tokio::test]
async fn answers_follow_a_json_schema() {
    for (provider, s) in both().await {
        let schema = json!({"type": "object", "properties": {"title": {"type": "string"}, "score": {"type": "integer"}},
                            "required": ["title", "score"]});
        let req = ChatRequest {
            response_schema: Some(schema),
            ..ChatRequest::user("rate it")
        };
        let r = model(provider, &s).chat(&req).await.unwrap();
        let v: Value =
            serde_json::from_str(&r.text).unwrap_or_else(|e| panic!("{provider:?}: {e}: {}", r.text));
        assert!(
            v["title"].is_string() && v["score"].is_number(),
            "{provider:?}: {v}"
        );
    }
}

#[tokio::test]
async fn gemini_grounds_answers_in_google_search() {
    let s = StandIn::gemini(KEY).await;
    s.script([Reply::Grounded {
        text: "Seoul is the capital.".into(),
        sources: vec![("https://example.org/seoul".into(), "Seoul - Example".into())],
    }]);
    let req = ChatRequest {
        search: true,
        ..ChatRequest::user("capital of Korea?")
    };
    let r = model(ModelProvider::Gemini, &s).chat(&req).await.unwrap();
    assert_eq!(r.grounding.len(), 1);
    assert_eq!(r.grounding[0].uri, "https://example.org/seoul");
    assert_eq!(s.requests()[0].body["tools"], json!([{"googleSearch": {}}]));
}

#[tokio::test]
async fn an_answer_past_the_size_limit_is_refused_not_held() {
    let huge = "x".repeat(cogo_agent::llm::MAX_ANSWER_BYTES + 1024);
    for (provider, s) in both().await {
        let m = model(provider, &s);
        s.script((0..3).map(|_| Reply::Text(huge.clone())));
        let e = m.chat(&ChatRequest::user("hi")).await.unwrap_err();
        assert!(
            matches!(e, ModelError::Malformed(ref m) if m.contains("over")),
            "{provider:?}: {e}"
        );
        s.script((0..3).map(|_| Reply::Text(huge.clone())));
        let e = m
            .chat_stream(&ChatRequest::user("hi"), &mut |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(e, ModelError::Malformed(ref m) if m.contains("over")),
            "{provider:?}: {e}"
        );
    }
}

/// A scripted `/v1/embeddings` server: each request gets the next (status, body) and is
/// recorded.
async fn embeddings_server(
    script: Vec<(u16, Value)>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::{Json, Router, http::StatusCode, routing::post};
    let script = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(script)));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let app = Router::new().route(
        "/v1/embeddings",
        post(move |headers: axum::http::HeaderMap, Json(body): Json<Value>| {
            let (script, seen) = (script.clone(), seen2.clone());
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                seen.lock().unwrap().push(json!({"auth": auth, "body": body}));
                let (status, answer) = script.lock().unwrap().pop_front().unwrap_or((500, json!({})));
                let mut res = (StatusCode::from_u16(status).unwrap(), Json(answer)).into_response();
                if status == 429 {
                    res.headers_mut().insert("retry-after", "0".parse().unwrap());
                }
                res
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), seen)
}

use axum::response::IntoResponse;

fn embedder(endpoint: &str, attempts: u32) -> Model {
    let config = ModelConfig {
        provider: ModelProvider::OpenAICompatible,
        name: "embed-small".into(),
        endpoint: Some(endpoint.into()),
        api_key: KEY.into(),
        timeout: Duration::from_secs(5),
        attempts,
    };
    Model::new(config.client().unwrap(), attempts, ModelMetrics::default()).with_backoff(Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
    })
}

#[tokio::test]
async fn embeddings_come_back_in_the_texts_order_and_bad_answers_are_refused() {
    let texts = vec!["first".to_string(), "second".to_string()];
    let data = |items: Value| {
        json!({"object": "list", "data": items, "model": "embed-small",
                                     "usage": {"prompt_tokens": 4, "total_tokens": 4}})
    };
    let (url, seen) = embeddings_server(vec![
        (
            429,
            json!({"error": {"message": "slow down", "type": "rate_limit"}}),
        ),
        // Out of order: `index` says which text each is.
        (
            200,
            data(json!([{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}])),
        ),
        (200, json!({"object": "list"})),
        (200, data(json!([{"index": 0, "embedding": [1.0, 0.0]}]))),
        (
            200,
            data(json!([{"index": 0, "embedding": [1.0, 0.0]}, {"index": 1, "embedding": [1.0]}])),
        ),
        (
            200,
            data(json!([{"index": 0, "embedding": ["x"]}, {"index": 1, "embedding": [1.0]}])),
        ),
        (
            401,
            json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
        ),
    ])
    .await;
    let m = embedder(&url, 3);
    let e = m.embed(&texts).await.unwrap();
    assert_eq!(e.vectors, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    assert_eq!((e.usage.model.as_str(), e.usage.input_tokens), ("embed-small", 4));
    let sent = seen.lock().unwrap()[0].clone();
    assert_eq!(sent["auth"], format!("Bearer {KEY}"));
    assert_eq!(
        sent["body"],
        json!({"model": "embed-small", "input": ["first", "second"], "encoding_format": "float"})
    );
    // Unreadable answers are retryable; one attempt each here, to see every one.
    let once = embedder(&url, 1);
    for want in [
        "without data",
        "no embedding for text 1",
        "different dimensions",
        "not a list of numbers",
    ] {
        let err = once.embed(&texts).await.unwrap_err();
        assert!(
            matches!(err, ModelError::Malformed(_)) && err.to_string().contains(want),
            "{want}: {err}"
        );
    }
    let calls = seen.lock().unwrap().len();
    let err = m.embed(&texts).await.unwrap_err();
    assert!(matches!(err, ModelError::BadKey(_)), "{err}");
    assert_eq!(
        seen.lock().unwrap().len(),
        calls + 1,
        "a refused key is not tried again"
    );

    // Gemini's client offers none, and says so.
    let g = StandIn::gemini(KEY).await;
    let err = model(ModelProvider::Gemini, &g).embed(&texts).await.unwrap_err();
    assert!(err.to_string().contains("gives no embeddings here"), "{err}");
    assert!(g.requests().is_empty());
}
