//! A client of the Figma REST API (`https://api.figma.com/v1`): files (with their components,
//! component sets and styles), nodes and image fills, with the personal access token in `X-Figma-Token`.
//! A 429 is waited out as its `Retry-After` asks (up to a minute, and within the job's time);
//! 5xx answers and broken connections are tried again with backoff.

use std::time::Duration;

use cogo_agent::llm::{MAX_RETRY_AFTER, retry_after};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, warn};

/// The Figma REST API.
pub const DEFAULT_API_URL: &str = "https://api.figma.com";
/// The most bytes of one answer read (large files are large).
pub const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Calls of one request at most (the first and the retries).
pub const ATTEMPTS: u32 = 5;

/// Why a Figma call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The token was refused (403) or is missing.
    #[error("Figma refused the token{0} (spec.figmaTokenSecretRef)")]
    Token(String),
    /// The file or node does not exist, or the token cannot see it.
    #[error("Figma has no {0}")]
    NotFound(String),
    /// Figma kept answering 429.
    #[error("Figma's rate limit: {0}")]
    RateLimited(String),
    /// Figma or the way to it failed; later may work.
    #[error("Figma is unavailable: {0}")]
    Unavailable(String),
    /// The request or the answer is wrong (a 400, or an answer that is not the API's).
    #[error("{0}")]
    Bad(String),
}

impl ApiError {
    /// Whether the task may succeed when tried again later.
    pub fn retryable(&self) -> bool {
        matches!(self, ApiError::RateLimited(_) | ApiError::Unavailable(_))
    }
}

/// A Figma API client.
#[derive(Clone)]
pub struct Figma {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for Figma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Figma")
            .field("base", &self.base)
            .field("token", &"<hidden>")
            .finish()
    }
}

impl Figma {
    /// A client of the API at `base` (without `/v1`) with `token`.
    pub fn new(base: &str, token: &str) -> Result<Figma, String> {
        Ok(Figma {
            http: cogo_agent::llm::http_client()?,
            base: base.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
        })
    }

    /// `GET /v1/files/:key`, to `depth` when given.
    pub async fn file(&self, key: &str, depth: Option<u32>, until: Instant) -> Result<Value, ApiError> {
        let mut query = vec![];
        if let Some(d) = depth {
            query.push(("depth", d.to_string()));
        }
        self.get(
            &format!("/v1/files/{key}"),
            &query,
            &format!("file {key:?}"),
            until,
        )
        .await
    }

    /// `GET /v1/files/:key/nodes?ids=...`: the nodes with their subtrees and the components
    /// and styles they use.
    pub async fn nodes(&self, key: &str, ids: &[&str], until: Instant) -> Result<Value, ApiError> {
        let answer = self
            .get(
                &format!("/v1/files/{key}/nodes"),
                &[("ids", ids.join(","))],
                &format!("file {key:?}"),
                until,
            )
            .await?;
        for id in ids {
            if answer["nodes"].get(*id).is_none_or(Value::is_null) {
                return Err(ApiError::NotFound(format!("node {id:?} in file {key:?}")));
            }
        }
        Ok(answer)
    }

    /// `GET /v1/files/:key/images`: the download address of every image fill, by `imageRef`.
    pub async fn image_fills(&self, key: &str, until: Instant) -> Result<Value, ApiError> {
        let answer = self
            .get(
                &format!("/v1/files/{key}/images"),
                &[],
                &format!("file {key:?}"),
                until,
            )
            .await?;
        Ok(answer["meta"]["images"].clone())
    }

    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        what: &str,
        until: Instant,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut wait = Duration::from_millis(500);
        let mut last = ApiError::Unavailable("no answer".into());
        for attempt in 1..=ATTEMPTS {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let sent = self
                .http
                .get(&url)
                .query(query)
                .header("X-Figma-Token", &self.token)
                .timeout(left)
                .send()
                .await;
            let pause = match sent {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let asked = retry_after(res.headers());
                    let body = read(res, left).await;
                    match (status, body) {
                        (200, Ok(body)) => {
                            return serde_json::from_slice(&body).map_err(|e| {
                                ApiError::Bad(format!("Figma's answer for {what} is not JSON: {e}"))
                            });
                        }
                        (429, _) => {
                            let Some(asked) = asked.filter(|a| *a <= MAX_RETRY_AFTER) else {
                                return Err(ApiError::RateLimited(format!(
                                    "asked to wait {}; more than the {} s this job waits",
                                    asked.map_or("an unknown time".into(), |a| format!("{} s", a.as_secs())),
                                    MAX_RETRY_AFTER.as_secs()
                                )));
                            };
                            last = ApiError::RateLimited(format!("still limited after {attempt} calls"));
                            warn!(
                                path,
                                seconds = asked.as_secs_f64(),
                                "Figma's rate limit; waiting as asked"
                            );
                            asked
                        }
                        (200, Err(e)) => {
                            last = ApiError::Unavailable(e);
                            wait
                        }
                        (500..=599, _) => {
                            last = ApiError::Unavailable(format!("HTTP {status}"));
                            wait
                        }
                        (s, body) => {
                            let said = body.ok().and_then(|b| message(&b)).unwrap_or_default();
                            return Err(match s {
                                401 | 403 => ApiError::Token(if said.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {said}")
                                }),
                                404 => ApiError::NotFound(what.into()),
                                _ => ApiError::Bad(format!(
                                    "Figma refused the request for {what} (HTTP {s}): {said}"
                                )),
                            });
                        }
                    }
                }
                Err(e) => {
                    last = ApiError::Unavailable(format!("cannot reach {}: {}", self.base, cause(&e)));
                    wait
                }
            };
            if attempt == ATTEMPTS || Instant::now() + pause >= until {
                break;
            }
            debug!(
                path,
                attempt,
                ms = pause.as_millis() as u64,
                "calling Figma again"
            );
            tokio::time::sleep(pause).await;
            wait = (wait * 2).min(Duration::from_secs(20));
        }
        Err(last)
    }
}

/// The body, or why it could not be read (too large, broken, or late), as a message.
async fn read(mut res: reqwest::Response, left: Duration) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let until = Instant::now() + left;
    loop {
        match tokio::time::timeout_at(until, res.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(format!("an answer over {} MiB", MAX_ANSWER_BYTES >> 20));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => return Ok(body),
            Ok(Err(e)) => return Err(format!("the answer broke off: {}", cause(&e))),
            Err(_) => return Err("the answer did not arrive in time".into()),
        }
    }
}

/// Figma's error message in a body (`{"status": 403, "err": "Invalid token"}`).
fn message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let m = v.get("err").or(v.get("message"))?.as_str()?;
    Some(m.chars().take(300).collect())
}

/// The innermost cause of a transport error.
fn cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(s) = source.source() {
        source = s;
    }
    source.to_string()
}
