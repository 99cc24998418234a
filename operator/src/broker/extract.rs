//! What handlers take from a request before its body: the bearer's verified claims, and a
//! completion's share of the memory budget.

use super::*;

/// Memory completions may hold at once while their bodies are read and parsed: each is
/// charged [`PARSE_FACTOR`] times its declared length (16 MiB without one), so large results
/// arriving together wait for each other instead of exhausting the operator's memory.
pub const COMPLETE_BUDGET_BYTES: usize = 96 * 1024 * 1024;

/// How much more memory a parsed JSON body may take than its text.
pub const PARSE_FACTOR: usize = 4;

/// The memory budget of completions being read (see [`COMPLETE_BUDGET_BYTES`]), in KiB.
#[derive(Debug)]
pub struct CompleteBudget {
    free: Arc<tokio::sync::Semaphore>,
    total_kib: usize,
}

impl Default for CompleteBudget {
    fn default() -> Self {
        CompleteBudget::with_bytes(COMPLETE_BUDGET_BYTES)
    }
}

impl CompleteBudget {
    /// A budget of `bytes`.
    pub fn with_bytes(bytes: usize) -> Self {
        let total_kib = (bytes / 1024).max(1);
        CompleteBudget {
            free: Arc::new(tokio::sync::Semaphore::new(total_kib)),
            total_kib,
        }
    }
}

/// A completion's share of [`CompleteBudget`], taken (from its `Content-Length`) after the
/// token is checked and before the body is read; given back when the call ends.
pub struct BodyShare(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl FromRequestParts<Arc<Broker>> for BodyShare {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, b: &Arc<Broker>) -> Result<Self, ApiError> {
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_COMPLETE_BYTES) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLarge",
                format!("the body is over {} MiB", MAX_COMPLETE_BYTES >> 20),
            ));
        }
        let kib = (declared.unwrap_or(MAX_COMPLETE_BYTES) * PARSE_FACTOR)
            .div_ceil(1024)
            .max(1);
        // One body never waits for more than the whole budget.
        let kib = kib.min(b.complete_budget.total_kib) as u32;
        let free = b.complete_budget.free.clone();
        match tokio::time::timeout(Duration::from_secs(10), free.acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Ok(BodyShare(permit)),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "too many large outcomes are being read; offer this one again",
            )),
        }
    }
}

/// The verified claims of the request's bearer token. As an extractor it runs before the body
/// is read: a request without a valid token is refused without reading a byte of its body.
pub struct Bearer(pub Claims);

impl FromRequestParts<Arc<Broker>> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, b: &Arc<Broker>) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        Ok(Bearer(b.keys.verify_signature(token)?))
    }
}

/// The verified claims of a token that acts for the agent the path names
/// (`.../namespaces/{ns}/agents/{agent}/...`), checked, like [`Bearer`], before the body.
pub struct AgentBearer(pub Claims);

impl FromRequestParts<Arc<Broker>> for AgentBearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut http::request::Parts, b: &Arc<Broker>) -> Result<Self, ApiError> {
        let Bearer(claims) = Bearer::from_request_parts(parts, b).await?;
        let Path((ns, agent)) = Path::<(String, String)>::from_request_parts(parts, b)
            .await
            .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "NotFound", e.body_text()))?;
        if claims.sub != Claims::subject(&ns, &agent) {
            return Err(AuthError::WrongAgent.into());
        }
        Ok(AgentBearer(claims))
    }
}
