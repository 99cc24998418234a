//! What every Cogo pod runtime does, the agent's and the worker's alike: log to stdout with a
//! `RUST_LOG` filter, serve `/livez`, `/readyz` and `/metrics` (Prometheus, prefix `cogo_`) on
//! its port next to any routes of its own, and stop cleanly on SIGTERM or SIGINT.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::watch;

/// Sets up logging (text lines on stdout, filtered by `RUST_LOG`, default `info`) and, when an
/// OTLP endpoint is configured, traces (see [`cogo_telemetry`]) as the service `service`, with
/// the pod's name and namespace (`COGO_POD_NAME`, `COGO_NAMESPACE`) and `attributes` naming it.
/// Keep what it returns until the process ends.
pub fn init_tracing(service: &str, attributes: &[(&str, String)]) -> cogo_telemetry::Telemetry {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let mut resource = vec![
        ("service.instance.id", var("COGO_POD_NAME")),
        ("k8s.pod.name", var("COGO_POD_NAME")),
        ("k8s.namespace.name", var("COGO_NAMESPACE")),
    ];
    resource.extend(attributes.iter().cloned());
    cogo_telemetry::init(service, &resource, cogo_telemetry::LogFormat::Text, "info")
}

/// The pod's Prometheus registry (prefix `cogo`), shared by whatever registers metrics.
#[derive(Clone)]
pub struct Metrics(Arc<Mutex<Registry>>);

impl Metrics {
    /// A registry whose `cogo_<component>_info{<component>="<name>"}` gauge names the pod, such as
    /// `cogo_agent_info{role="research"}`.
    pub fn new(component: &str, label: &str, value: &str) -> Self {
        let mut registry = Registry::with_prefix("cogo");
        let info = Family::<Vec<(String, String)>, Gauge>::default();
        info.get_or_create(&vec![(label.to_string(), value.to_string())])
            .set(1);
        registry.register(
            format!("{component}_info"),
            format!("Static information about this {component}"),
            info,
        );
        Metrics(Arc::new(Mutex::new(registry)))
    }

    /// Registers a metric.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        if let Ok(mut r) = self.0.lock() {
            r.register(name, help, metric);
        }
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.0.lock() {
            let _ = encode(&mut out, &r);
        }
        out
    }
}

/// Whether the pod is ready for work; `/readyz` answers 503 until it is.
#[derive(Clone)]
pub struct Ready(Arc<AtomicBool>);

impl Ready {
    /// Ready from the start.
    pub fn now() -> Self {
        Ready(Arc::new(AtomicBool::new(true)))
    }

    /// Not ready until [`Ready::set`].
    pub fn later() -> Self {
        Ready(Arc::new(AtomicBool::new(false)))
    }

    /// Marks the pod ready.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Marks the pod not ready.
    pub fn unset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Whether it is.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `/livez`, `/readyz` (per `ready`) and `/metrics`, merged with `routes`.
pub fn router(metrics: Metrics, ready: Ready, routes: Router) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ok = ready.is_ready();
                async move {
                    if ok {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        text,
                    )
                        .into_response()
                }
            }),
        )
        .merge(routes)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    tracing::info!("termination signal received");
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Binds `addr`, serves `router` until SIGTERM, SIGINT or `stop`, then sets `stop` so every
/// other part of the pod winds down too.
pub async fn serve(addr: SocketAddr, router: Router, stop: watch::Sender<bool>) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let rx = stop.subscribe();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = termination() => {}
                _ = stopped(rx) => {}
            }
        })
        .await
        .context("server failed")?;
    let _ = stop.send(true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn probes_answer_metrics_name_the_pod_and_routes_are_merged() {
        let metrics = Metrics::new("agent", "role", "graphrag");
        let extra = Router::new().route("/v1/extra", get(|| async { "extra" }));
        let ready = Ready::later();
        let app = router(metrics, ready.clone(), extra);
        let res = app
            .clone()
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "not ready yet");
        ready.set();
        for path in ["/livez", "/readyz", "/v1/extra"] {
            let res = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
        }
        let res = app
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("cogo_agent_info{role=\"graphrag\"} 1"), "{text}");
    }
}
