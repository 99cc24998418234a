//! The agent's probe and metrics endpoints, and the shutdown signal.

use axum::{Router, routing::get};
use cogo_api::AgentRole;

/// Routes `/livez`, `/readyz` and `/metrics`.
pub fn router(role: AgentRole) -> Router {
    let info = format!(
        "# HELP cogo_agent_info Static information about this agent.\n# TYPE cogo_agent_info gauge\ncogo_agent_info{{role=\"{}\"}} 1\n",
        role.slug()
    );
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { info }))
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn probes_answer_and_metrics_name_the_role() {
        for path in ["/livez", "/readyz"] {
            let res = router(AgentRole::GraphRag)
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
        }
        let res = router(AgentRole::GraphRag)
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("role=\"graphrag\""));
    }
}
