//! The broker's error answers: a stable code and a message, as JSON.

use super::*;

/// An error answer: HTTP status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn task_not_found(ns: &str, name: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "TaskNotFound",
            format!("no AgentTask {ns}/{name}"),
        )
    }

    pub(super) fn agent_not_found(ns: &str, agent: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "AgentNotFound",
            format!("no CogoAgent {ns}/{agent}"),
        )
    }

    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(code = self.code, message = %self.message, "broker request failed");
        }
        let mut response = (
            self.status,
            Json(ErrorBody {
                code: self.code.into(),
                message: self.message,
            }),
        )
            .into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// The code of an error answer, carried to [`count_server_errors`].
#[derive(Clone, Copy, Debug)]
struct ErrorCode(&'static str);

/// Counts the server errors (5xx) the broker answers, by code.
pub(super) async fn count_server_errors(
    State(metrics): State<Arc<crate::metrics::Metrics>>,
    response: Response,
) -> Response {
    if response.status().is_server_error() {
        let code = response
            .extensions()
            .get::<ErrorCode>()
            .map_or("Internal", |c| c.0);
        metrics.broker_error(code);
    }
    response
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = if e == AuthError::WrongAgent {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "RequestTooLarge"
        } else {
            "MalformedRequest"
        };
        ApiError::new(e.status(), code, e.body_text())
    }
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "KubernetesUnavailable",
            e.to_string(),
        )
    }
}

pub(super) fn fence_error(f: Fence) -> ApiError {
    match f {
        Fence::LeaseLost { current } => ApiError::new(
            StatusCode::CONFLICT,
            "LeaseLost",
            format!("this pod does not hold the lease of that attempt (the task's attempt is {current})"),
        ),
        Fence::AlreadyRecorded(phase) => ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyRecorded",
            format!("the attempt already ended as {}", phase.as_str()),
        ),
    }
}
