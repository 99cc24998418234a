//! An OTLP/HTTP trace receiver, in process: it takes `POST /v1/traces` as a collector does
//! (a protobuf `ExportTraceServiceRequest`, `Content-Type: application/x-protobuf`), keeps every
//! span, and refuses anything else with the status a collector gives.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, StatusCode, header},
    routing::post,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, any_value},
};
use prost::Message as _;

/// One received span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// `service.name` of the process that sent it.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// Trace id, hex.
    pub trace: String,
    /// Span id, hex.
    pub id: String,
    /// The parent's span id, hex; empty for a root.
    pub parent: String,
    /// Its attributes, as strings.
    pub attributes: BTreeMap<String, String>,
    /// Its status code (0 unset, 1 OK, 2 error).
    pub status: i32,
}

impl Span {
    /// The attribute `key`, or "".
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }
}

/// The receiver; serves until the runtime it was started on stops.
#[derive(Clone, Default)]
pub struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    refused: Arc<Mutex<Vec<String>>>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

impl Receiver {
    /// Starts a receiver on a free port of 127.0.0.1, on the current runtime.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let r = Receiver {
            port: listener.local_addr().expect("addr").port(),
            ..Receiver::default()
        };
        let state = r.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { state.take(&headers, &body) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    /// The endpoint to set as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn take(&self, headers: &HeaderMap, body: &[u8]) -> (StatusCode, Vec<u8>) {
        let kind = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if kind != "application/x-protobuf" {
            self.refuse(format!("content type {kind:?}"));
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
        }
        let req = match ExportTraceServiceRequest::decode(body) {
            Ok(r) => r,
            Err(e) => {
                self.refuse(format!("undecodable body: {e}"));
                return (StatusCode::BAD_REQUEST, Vec::new());
            }
        };
        let mut got = Vec::new();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(&kv.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    if s.trace_id.len() != 16 || s.span_id.len() != 8 {
                        self.refuse(format!("span {} with bad ids", s.name));
                        return (StatusCode::BAD_REQUEST, Vec::new());
                    }
                    got.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace: hex(&s.trace_id),
                        id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attributes: s
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(&kv.value)))
                            .collect(),
                        status: s.status.map(|st| st.code).unwrap_or(0),
                    });
                }
            }
        }
        if let Ok(mut spans) = self.spans.lock() {
            spans.extend(got);
        }
        (
            StatusCode::OK,
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
    }

    fn refuse(&self, why: String) {
        if let Ok(mut r) = self.refused.lock() {
            r.push(why);
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Why requests were refused, if any were.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
