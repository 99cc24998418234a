//! Verifying worker tokens: EdDSA JWTs signed by the operator, checked against the public keys
//! the broker publishes (fetched at start, again when a token names a key not seen yet, and
//! every few minutes so keys dropped from rotation stop verifying). A token must be for this
//! Executor's namespace and for this Executor.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use cogo_api::worker::message::{TOKEN_AUDIENCE, WorkerClaims};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::broker::SharedBroker;

/// Why a worker was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// Not a JWT, or not an EdDSA one (an agent's broker token, say).
    #[error("the token is malformed or not an EdDSA worker token")]
    Malformed,
    /// Signed with a key the operator does not publish.
    #[error("the token names a signing key the operator does not publish")]
    UnknownKey,
    /// The signature does not match.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// Past its expiry.
    #[error("the token has expired")]
    Expired,
    /// Issued for another audience.
    #[error("the token is not a worker token")]
    WrongAudience,
    /// For a worker of another namespace.
    #[error("the token is for a worker of namespace {0}, not this Executor's")]
    WrongNamespace(String),
    /// For a worker of another Executor.
    #[error("the token is for a worker of Executor {0}, not this one")]
    WrongExecutor(String),
}

impl TokenError {
    /// The stable code in the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "MissingToken",
            TokenError::Malformed => "MalformedToken",
            TokenError::UnknownKey => "UnknownSigningKey",
            TokenError::BadSignature => "InvalidSignature",
            TokenError::Expired => "TokenExpired",
            TokenError::WrongAudience => "WrongAudience",
            TokenError::WrongNamespace(_) => "WrongNamespace",
            TokenError::WrongExecutor(_) => "WrongExecutor",
        }
    }
}

/// Fetches of the key set are at least this far apart.
const MIN_REFRESH: Duration = Duration::from_secs(5);
/// The key set is fetched again this often.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);

/// The published keys, and what a worker token must say.
pub struct WorkerTokens {
    broker: Option<SharedBroker>,
    namespace: String,
    executor: String,
    keys: RwLock<HashMap<String, DecodingKey>>,
    fetched: Mutex<Option<Instant>>,
}

impl WorkerTokens {
    /// Verifies tokens for the Executor `executor` of `namespace` with keys from `broker`.
    pub fn new(broker: Option<SharedBroker>, namespace: &str, executor: &str) -> Self {
        WorkerTokens {
            broker,
            namespace: namespace.into(),
            executor: executor.into(),
            keys: RwLock::default(),
            fetched: Mutex::new(None),
        }
    }

    /// Fetches the key set now (unless it was fetched a moment ago); returns how many keys it
    /// holds.
    pub async fn refresh(&self) -> Result<usize, crate::broker::CallError> {
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return Ok(self.keys.read().map(|k| k.len()).unwrap_or_default());
        }
        let Some(broker) = &self.broker else {
            return Ok(0);
        };
        let set = broker.worker_keys().await?;
        *fetched = Some(Instant::now());
        let mut keys = HashMap::new();
        for k in set.keys.iter().filter(|k| k.kty == "OKP" && k.crv == "Ed25519") {
            match DecodingKey::from_ed_components(&k.x) {
                Ok(d) => {
                    keys.insert(k.kid.clone(), d);
                }
                Err(e) => warn!(kid = %k.kid, error = %e, "ignoring an unusable worker key"),
            }
        }
        let n = keys.len();
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        Ok(n)
    }

    /// Keeps the key set fresh: fetches it until it succeeds, then every [`REFRESH_EVERY`].
    pub async fn keep_fresh(&self) {
        let mut delay = Duration::from_millis(500);
        loop {
            match self.refresh().await {
                Ok(n) => {
                    info!(keys = n, "worker-token keys fetched from the broker");
                    tokio::time::sleep(REFRESH_EVERY).await;
                    delay = Duration::from_millis(500);
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?delay, "cannot fetch the worker-token keys");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    /// The claims of a worker token for this Executor, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<WorkerClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = match self.key(&kid) {
            Some(k) => k,
            None => {
                // A key rotated in since the last fetch.
                let _ = self.refresh().await;
                self.key(&kid).ok_or(TokenError::UnknownKey)?
            }
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[TOKEN_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = 30;
        let claims = jsonwebtoken::decode::<WorkerClaims>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            })?
            .claims;
        let (ns, _) = claims.worker().ok_or(TokenError::Malformed)?;
        if ns != self.namespace {
            return Err(TokenError::WrongNamespace(ns.to_string()));
        }
        if claims.executor != self.executor {
            return Err(TokenError::WrongExecutor(claims.executor.clone()));
        }
        Ok(claims)
    }
}
