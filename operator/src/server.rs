//! The operator's HTTP endpoints for probes and Prometheus: `/livez`, `/readyz`, `/metrics`.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::metrics::Metrics;

/// Shared state of the endpoints.
#[derive(Clone)]
pub struct Health {
    /// Metrics to serve.
    pub metrics: Arc<Metrics>,
    /// Set once the operator has connected to the API server and started.
    pub ready: Arc<AtomicBool>,
}

/// The router of the probe and metrics endpoints.
pub fn router(state: Health) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        h.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get(h: &Health, path: &str) -> (StatusCode, String) {
        let res = router(h.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_only_after_start_and_metrics_are_served() {
        let h = Health {
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(false)),
        };
        assert_eq!(get(&h, "/livez").await.0, StatusCode::OK);
        assert_eq!(get(&h, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        h.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(&h, "/readyz").await.0, StatusCode::OK);
        h.metrics.status_written("CogoAgent");
        let (code, text) = get(&h, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            text.contains("cogo_operator_status_writes_total{kind=\"CogoAgent\"} 1"),
            "{text}"
        );
        h.metrics.set_tasks(7, 3);
        let text = get(&h, "/metrics").await.1;
        assert!(
            text.contains("cogo_operator_tasks_queued 7") && text.contains("cogo_operator_tasks_running 3"),
            "{text}"
        );
    }
}
