//! Verification of Supabase Auth user tokens.
//!
//! A user token is a JWT issued by Supabase Auth. Projects sign it either with a shared secret
//! (legacy HS256) or with an asymmetric key (RS256 or ES256) whose public half is published in
//! the project's JWKS. [`Verifier`] checks the signature and the claims of such a token and
//! returns the [`UserClaims`] the gateway needs.
//!
//! The algorithm is pinned by configuration, not by the token:
//!
//! - HS256 is accepted only when a secret is configured, and is checked only with that secret.
//! - RS256 and ES256 are accepted only when a JWKS URL is configured, and are checked only with
//!   the JWKS key named by the token's `kid`, and only if that key is pinned to the same
//!   algorithm.
//! - Every other algorithm, `none` included, is refused.
//!
//! This defeats algorithm confusion: a token that claims HS256 and is signed with the RSA public
//! key as its secret is never checked against that key.
//!
//! Supabase's `anon` and `service_role` API keys are JWTs too. They have no `sub` and no
//! `authenticated` audience, so they are refused.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

/// How long one JWKS fetch may take, body included.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest JWKS body that is read. A larger body fails the fetch.
const JWKS_MAX_BODY_BYTES: usize = 64 * 1024;

/// The age after which cached keys are refreshed on their next use.
const JWKS_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// How user tokens are checked.
#[derive(Clone)]
pub struct VerifierConfig {
    /// The project's JWT secret. HS256 tokens are accepted only when it is set.
    pub hs256_secret: Option<Vec<u8>>,
    /// The project's JWKS URL, for example `https://<project>.supabase.co/auth/v1/.well-known/jwks.json`.
    /// RS256 and ES256 tokens are accepted only when it is set.
    pub jwks_url: Option<String>,
    /// The expected `iss` claim, for example `https://<project>.supabase.co/auth/v1`.
    pub issuer: String,
    /// The expected `aud` claim. Supabase uses `authenticated` for signed-in users.
    pub audience: String,
    /// The clock skew allowed when checking `exp` and `nbf`, in seconds. Default 30.
    pub leeway_seconds: u64,
    /// The longest token accepted, in bytes. Longer tokens are refused before any parsing.
    /// Default 8192.
    pub max_token_bytes: usize,
    /// The minimum time between two JWKS fetches. It bounds the fetches that tokens with unknown
    /// `kid`s can cause. Default 30 s.
    pub jwks_refresh_interval: Duration,
    /// The most keys kept from one JWKS. Further keys in the set are ignored. Default 16.
    pub jwks_max_keys: usize,
}

impl VerifierConfig {
    /// Returns a configuration for `issuer` with the defaults: audience `authenticated`,
    /// 30 s leeway, 8192-byte tokens, a 30 s JWKS refresh interval and 16 JWKS keys.
    /// No secret and no JWKS URL are set, so no token is accepted until one of them is.
    pub fn new(issuer: impl Into<String>) -> VerifierConfig {
        VerifierConfig {
            hs256_secret: None,
            jwks_url: None,
            issuer: issuer.into(),
            audience: "authenticated".to_owned(),
            leeway_seconds: 30,
            max_token_bytes: 8192,
            jwks_refresh_interval: Duration::from_secs(30),
            jwks_max_keys: 16,
        }
    }
}

impl fmt::Debug for VerifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierConfig")
            .field("hs256_secret", &self.hs256_secret.as_ref().map(|_| "[redacted]"))
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("jwks_refresh_interval", &self.jwks_refresh_interval)
            .field("jwks_max_keys", &self.jwks_max_keys)
            .finish()
    }
}

/// The claims of a verified user token.
#[derive(Debug, Clone, Deserialize)]
pub struct UserClaims {
    /// The user's id. Always a UUID.
    pub sub: String,
    /// The user's email address, if the token carries one.
    #[serde(default)]
    pub email: Option<String>,
    /// Supabase's Postgres role, usually `authenticated`.
    #[serde(default)]
    pub role: Option<String>,
    /// The expiry time, in seconds since the Unix epoch.
    pub exp: i64,
    /// The `app_metadata` claim. Only Supabase Auth and the project's server can write it.
    /// `Null` when the token has none.
    #[serde(default)]
    pub app_metadata: Value,
    /// Permissions granted by the token: the strings in `app_metadata.permissions` and in a
    /// top-level `permissions` claim, merged, without duplicates, in the order first seen.
    /// Never taken from `user_metadata`, which users can write themselves.
    #[serde(skip)]
    pub permissions: Vec<String>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum JwtError {
    /// No bearer token was given.
    #[error("no bearer token")]
    Missing,
    /// The token is longer than the configured limit.
    #[error("token is too large")]
    TooLarge,
    /// The token is not a well-formed JWT, or a claim has the wrong type.
    #[error("token is malformed")]
    Malformed,
    /// The token's algorithm is not accepted, or does not match its key.
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// No usable key matches the token's `kid`.
    #[error("token key is unknown")]
    UnknownKey,
    /// The signature does not match the token.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token has expired.
    #[error("token has expired")]
    Expired,
    /// The token's `nbf` is in the future.
    #[error("token is not yet valid")]
    NotYetValid,
    /// The token's `aud` is missing or does not contain the expected audience.
    #[error("token audience is wrong")]
    WrongAudience,
    /// The token's `iss` is missing or is not the expected issuer.
    #[error("token issuer is wrong")]
    WrongIssuer,
    /// The token's `sub` is missing or is not a UUID.
    #[error("token subject is invalid")]
    BadSubject,
    /// The JWKS could not be fetched and no keys are cached.
    #[error("token keys are unavailable")]
    KeysUnavailable,
}

impl JwtError {
    /// Returns a stable PascalCase code for the error, for API responses and logs.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::Missing => "MissingToken",
            JwtError::TooLarge => "TokenTooLarge",
            JwtError::Malformed => "MalformedToken",
            JwtError::AlgorithmNotAllowed => "AlgorithmNotAllowed",
            JwtError::UnknownKey => "UnknownKey",
            JwtError::BadSignature => "InvalidSignature",
            JwtError::Expired => "TokenExpired",
            JwtError::NotYetValid => "TokenNotYetValid",
            JwtError::WrongAudience => "WrongAudience",
            JwtError::WrongIssuer => "WrongIssuer",
            JwtError::BadSubject => "InvalidSubject",
            JwtError::KeysUnavailable => "KeysUnavailable",
        }
    }

    /// Returns the HTTP status for the error: 503 for [`JwtError::KeysUnavailable`], 401 for all
    /// others.
    pub fn status(&self) -> u16 {
        match self {
            JwtError::KeysUnavailable => 503,
            _ => 401,
        }
    }
}

/// Returns the token from an `Authorization` header value of the form `Bearer <token>`.
///
/// The scheme is matched without regard to case. An absent or empty header, another scheme, or
/// an empty token gives [`JwtError::Missing`].
pub fn bearer(header: Option<&str>) -> Result<&str, JwtError> {
    let value = header.ok_or(JwtError::Missing)?.trim();
    let (scheme, token) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or(JwtError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(JwtError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(JwtError::Missing);
    }
    Ok(token)
}

/// Verifies user tokens.
///
/// Cloning is cheap: clones share the configuration and the cached JWKS keys.
///
/// JWKS keys are fetched on first need and cached. They are fetched again when a token names an
/// unknown `kid`, or on use once they are older than 10 minutes, but never twice within
/// [`VerifierConfig::jwks_refresh_interval`]. A failed fetch keeps the cached keys. If no fetch
/// has ever succeeded, tokens that need a JWKS key get [`JwtError::KeysUnavailable`].
///
/// An RS256 or ES256 token without a `kid` is checked with the only cached key pinned to its
/// algorithm. If there is no such key, or more than one, the token gets [`JwtError::UnknownKey`].
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: VerifierConfig,
    http: reqwest::Client,
    hs256_key: Option<Arc<DecodingKey>>,
    fetch_timeout: Duration,
    max_key_age: Duration,
    /// The cached keys. Held only briefly, never across a fetch.
    cache: RwLock<KeyCache>,
    /// Held across a fetch, so at most one fetch runs at a time.
    fetch_lock: Mutex<()>,
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<CachedKey>,
    /// When the keys were last fetched with success.
    fetched_at: Option<Instant>,
    /// When a fetch last ended, with success or not.
    attempted_at: Option<Instant>,
}

struct CachedKey {
    kid: Option<String>,
    alg: Algorithm,
    key: Arc<DecodingKey>,
}

enum Lookup {
    Found(Arc<DecodingKey>),
    WrongAlgorithm,
    NotFound,
}

impl KeyCache {
    /// Finds the key for a token. With a `kid`, the key with that `kid`, which must be pinned to
    /// `alg`. Without one, the only key pinned to `alg`, if there is exactly one.
    fn lookup(&self, alg: Algorithm, kid: Option<&str>) -> Lookup {
        match kid {
            Some(kid) => match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(k) if k.alg == alg => Lookup::Found(k.key.clone()),
                Some(_) => Lookup::WrongAlgorithm,
                None => Lookup::NotFound,
            },
            None => {
                let mut matching = self.keys.iter().filter(|k| k.alg == alg);
                match (matching.next(), matching.next()) {
                    (Some(k), None) => Lookup::Found(k.key.clone()),
                    _ => Lookup::NotFound,
                }
            }
        }
    }

    /// Turns a lookup into the key or the error to return.
    fn resolve(&self, alg: Algorithm, kid: Option<&str>) -> Result<Arc<DecodingKey>, JwtError> {
        match self.lookup(alg, kid) {
            Lookup::Found(key) => Ok(key),
            Lookup::WrongAlgorithm => Err(JwtError::AlgorithmNotAllowed),
            Lookup::NotFound if self.keys.is_empty() => Err(JwtError::KeysUnavailable),
            Lookup::NotFound => Err(JwtError::UnknownKey),
        }
    }
}

/// The header fields the verifier reads before choosing a key.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

impl Verifier {
    /// Returns a verifier for `config` that fetches the JWKS with `http`.
    ///
    /// Nothing is fetched until a token needs a JWKS key.
    pub fn new(config: VerifierConfig, http: reqwest::Client) -> Verifier {
        Verifier::with_timing(config, http, JWKS_FETCH_TIMEOUT, JWKS_MAX_AGE)
    }

    fn with_timing(
        config: VerifierConfig,
        http: reqwest::Client,
        fetch_timeout: Duration,
        max_key_age: Duration,
    ) -> Verifier {
        let hs256_key = config
            .hs256_secret
            .as_deref()
            .map(|s| Arc::new(DecodingKey::from_secret(s)));
        Verifier {
            inner: Arc::new(Inner {
                config,
                http,
                hs256_key,
                fetch_timeout,
                max_key_age,
                cache: RwLock::new(KeyCache::default()),
                fetch_lock: Mutex::new(()),
            }),
        }
    }

    /// Verifies a bearer token (without the "Bearer " prefix).
    ///
    /// Checks, in order: the size, the header and its algorithm, the key, the signature, and then
    /// the claims (`exp` and `nbf` with the leeway, `iss`, `aud`, `sub`). Returns the claims on
    /// success.
    pub async fn verify(&self, token: &str) -> Result<UserClaims, JwtError> {
        let config = &self.inner.config;
        if token.is_empty() {
            return Err(JwtError::Missing);
        }
        if token.len() > config.max_token_bytes {
            return Err(JwtError::TooLarge);
        }
        let header = parse_header(token)?;
        let (alg, key) = match header.alg.as_str() {
            "HS256" => match &self.inner.hs256_key {
                Some(key) => (Algorithm::HS256, key.clone()),
                None => return Err(JwtError::AlgorithmNotAllowed),
            },
            "RS256" => (
                Algorithm::RS256,
                self.jwks_key(Algorithm::RS256, header.kid.as_deref()).await?,
            ),
            "ES256" => (
                Algorithm::ES256,
                self.jwks_key(Algorithm::ES256, header.kid.as_deref()).await?,
            ),
            _ => return Err(JwtError::AlgorithmNotAllowed),
        };

        let mut validation = Validation::new(alg);
        validation.leeway = config.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[&config.audience]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);

        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(map_error)?;
        self.user_claims(data.claims)
    }

    /// Checks the claims that jsonwebtoken does not check strictly enough, and builds the result.
    fn user_claims(&self, claims: Map<String, Value>) -> Result<UserClaims, JwtError> {
        // jsonwebtoken also accepts an array of issuers; a Supabase token has exactly one.
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.inner.config.issuer => {}
            _ => return Err(JwtError::WrongIssuer),
        }
        match claims.get("sub") {
            Some(Value::String(sub)) if is_uuid(sub) => {}
            _ => return Err(JwtError::BadSubject),
        }
        let permissions = permissions(&claims);
        let mut user: UserClaims =
            serde_json::from_value(Value::Object(claims)).map_err(|_| JwtError::Malformed)?;
        user.permissions = permissions;
        Ok(user)
    }

    /// Returns the JWKS key for a token with algorithm `alg` and key id `kid`, fetching the JWKS
    /// when needed and allowed.
    async fn jwks_key(&self, alg: Algorithm, kid: Option<&str>) -> Result<Arc<DecodingKey>, JwtError> {
        let inner = &self.inner;
        let Some(url) = inner.config.jwks_url.as_deref() else {
            return Err(JwtError::AlgorithmNotAllowed);
        };

        let seen_attempt = {
            let cache = inner.cache.read().await;
            if !self.should_fetch(&cache, alg, kid) {
                return cache.resolve(alg, kid);
            }
            cache.attempted_at
        };

        let _fetching = inner.fetch_lock.lock().await;
        // Another task may have fetched while this one waited for the lock.
        if inner.cache.read().await.attempted_at == seen_attempt {
            let result = fetch_jwks(&inner.http, url, inner.fetch_timeout, inner.config.jwks_max_keys).await;
            let mut cache = inner.cache.write().await;
            let now = Instant::now();
            cache.attempted_at = Some(now);
            match result {
                Ok(keys) => {
                    tracing::debug!(keys = keys.len(), "fetched JWKS");
                    cache.keys = keys;
                    cache.fetched_at = Some(now);
                }
                Err(reason) => {
                    tracing::warn!(%reason, cached_keys = cache.keys.len(), "JWKS fetch failed");
                }
            }
        }
        inner.cache.read().await.resolve(alg, kid)
    }

    /// Whether the JWKS should be fetched before looking up this key.
    fn should_fetch(&self, cache: &KeyCache, alg: Algorithm, kid: Option<&str>) -> bool {
        let now = Instant::now();
        let allowed = match cache.attempted_at {
            None => true,
            Some(at) => now.duration_since(at) >= self.inner.config.jwks_refresh_interval,
        };
        if !allowed {
            return false;
        }
        let stale = match cache.fetched_at {
            None => true,
            Some(at) => now.duration_since(at) >= self.inner.max_key_age,
        };
        stale || matches!(cache.lookup(alg, kid), Lookup::NotFound)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Parses the token's header. The token must have three dot-separated parts.
fn parse_header(token: &str) -> Result<TokenHeader, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| JwtError::Malformed)?;
    let header: TokenHeader = serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
    // No header extension is understood, so a token that marks one as critical is refused.
    if header.crit.is_some() {
        return Err(JwtError::Malformed);
    }
    Ok(header)
}

/// Maps a jsonwebtoken error to the verifier's error.
fn map_error(err: jsonwebtoken::errors::Error) -> JwtError {
    match err.kind() {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidSubject => JwtError::BadSubject,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => JwtError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "aud" => JwtError::WrongAudience,
            "iss" => JwtError::WrongIssuer,
            "sub" => JwtError::BadSubject,
            _ => JwtError::Malformed,
        },
        // The key could not be used. The token cannot be verified with it.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Provider(_) => {
            tracing::warn!(error = %err, "token key could not be used");
            JwtError::BadSignature
        }
        // InvalidToken, InvalidClaimFormat, Base64, Json, Utf8, and kinds added later.
        _ => JwtError::Malformed,
    }
}

/// Whether `s` is a UUID in the 8-4-4-4-12 hexadecimal form.
fn is_uuid(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Collects the permissions from `app_metadata.permissions` and the top-level `permissions`.
/// Entries that are not strings are ignored.
fn permissions(claims: &Map<String, Value>) -> Vec<String> {
    let sources = [
        claims.get("app_metadata").and_then(|m| m.get("permissions")),
        claims.get("permissions"),
    ];
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for source in sources.into_iter().flatten() {
        let Value::Array(items) = source else { continue };
        for item in items {
            if let Value::String(p) = item
                && seen.insert(p.as_str())
            {
                out.push(p.clone());
            }
        }
    }
    out
}

/// Fetches the JWKS at `url` and returns its usable keys.
async fn fetch_jwks(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
    max_keys: usize,
) -> Result<Vec<CachedKey>, String> {
    let body = async {
        let mut response = http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > JWKS_MAX_BODY_BYTES as u64)
        {
            return Err("body is too large".to_owned());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading body failed: {e}"))?
        {
            if body.len() + chunk.len() > JWKS_MAX_BODY_BYTES {
                return Err("body is too large".to_owned());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(timeout, body)
        .await
        .map_err(|_| "timed out".to_owned())??;
    parse_jwks(&body, max_keys)
}

/// Parses a JWKS and returns at most `max_keys` usable keys, in the set's order.
///
/// A set without a usable key is an error, so that a broken JWKS never replaces good keys.
fn parse_jwks(body: &[u8], max_keys: usize) -> Result<Vec<CachedKey>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let set: RawSet = serde_json::from_slice(body).map_err(|e| format!("invalid JWKS: {e}"))?;
    let total = set.keys.len();
    let keys: Vec<CachedKey> = set
        .keys
        .into_iter()
        .filter_map(usable_key)
        .take(max_keys)
        .collect();
    if keys.is_empty() {
        return Err(format!("no usable key among {total}"));
    }
    Ok(keys)
}

/// Returns the key if it is a signing key that can be pinned to RS256 or ES256.
///
/// The algorithm is the JWK's `alg` if present, which must be RS256 or ES256 and fit the key
/// type. Otherwise it is derived: an RSA key is RS256, an EC key on P-256 is ES256. Keys with a
/// `use` other than `sig`, or `key_ops` without `verify`, are skipped. Symmetric keys are skipped:
/// HS256 is checked only with the configured secret.
fn usable_key(raw: Value) -> Option<CachedKey> {
    let jwk: Jwk = serde_json::from_value(raw).ok()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let derived = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    let declared = match jwk.common.key_algorithm {
        None => derived,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(_) => return None,
    };
    if declared != derived {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    // An EC key is parsed when a verifier is made; a bad point fails here, not on each token.
    if derived == Algorithm::ES256 && jsonwebtoken::crypto::verify("AA", b"probe", &key, derived).is_err() {
        return None;
    }
    Some(CachedKey {
        kid: jwk.common.key_id,
        alg: derived,
        key: Arc::new(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const RSA_PEM: &str = include_str!("../../tests/data/gateway/rsa.pem");
    const RSA_PUB_PEM: &str = include_str!("../../tests/data/gateway/rsa.pub.pem");
    const EC_PEM: &str = include_str!("../../tests/data/gateway/ec.pem");
    const JWKS: &str = include_str!("../../tests/data/gateway/jwks.json");

    const ISSUER: &str = "https://project.supabase.co/auth/v1";
    const AUDIENCE: &str = "authenticated";
    const SECRET: &[u8] = b"super-secret-jwt-token-with-at-least-32-characters";
    const SUB: &str = "6f1c3c4e-2b1a-4c1e-9a57-0d3e2f8b9c10";

    // ---- helpers ----

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn claims() -> Value {
        json!({
            "sub": SUB,
            "aud": AUDIENCE,
            "iss": ISSUER,
            "exp": now() + 3600,
            "iat": now(),
            "role": "authenticated",
            "email": "user@example.com",
        })
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).expect("valid PEM")
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).expect("signing works")
    }

    fn hs(claims: &Value) -> String {
        sign(Algorithm::HS256, None, claims, &EncodingKey::from_secret(SECRET))
    }

    fn rs(kid: Option<&str>, claims: &Value) -> String {
        sign(
            Algorithm::RS256,
            kid,
            claims,
            &EncodingKey::from_rsa_der(&pem_to_der(RSA_PEM)),
        )
    }

    fn es(kid: Option<&str>, claims: &Value) -> String {
        sign(
            Algorithm::ES256,
            kid,
            claims,
            &EncodingKey::from_ec_der(&pem_to_der(EC_PEM)),
        )
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    fn http() -> reqwest::Client {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .build()
            .unwrap()
    }

    fn config(secret: bool, jwks_url: Option<String>) -> VerifierConfig {
        let mut config = VerifierConfig::new(ISSUER);
        config.hs256_secret = secret.then(|| SECRET.to_vec());
        config.jwks_url = jwks_url;
        config
    }

    fn hs_verifier() -> Verifier {
        Verifier::new(config(true, None), http())
    }

    /// Why a verifier with only the JWKS `set`, served here, refuses an RS256 token of `rsa-1`.
    async fn jwks_refusal(set: &Value) -> JwtError {
        let server = JwksServer::start(set.to_string()).await;
        let verifier = Verifier::new(config(false, Some(server.url.clone())), http());
        verifier.verify(&rs(Some("rsa-1"), &claims())).await.unwrap_err()
    }

    /// Why a verifier with only the secret refuses `claims` signed with it.
    async fn hs_refusal(claims: &Value) -> JwtError {
        hs_verifier().verify(&hs(claims)).await.unwrap_err()
    }

    /// A JWKS server on loopback that counts its fetches and serves a replaceable response.
    struct JwksServer {
        url: String,
        state: Arc<ServerState>,
    }

    struct ServerState {
        fetches: AtomicUsize,
        response: StdMutex<(StatusCode, String)>,
        delay: StdMutex<Duration>,
    }

    async fn serve_jwks(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
        state.fetches.fetch_add(1, Ordering::SeqCst);
        let delay = *state.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (status, body) = state.response.lock().unwrap().clone();
        (status, [("content-type", "application/json")], body)
    }

    impl JwksServer {
        async fn start(body: String) -> JwksServer {
            let state = Arc::new(ServerState {
                fetches: AtomicUsize::new(0),
                response: StdMutex::new((StatusCode::OK, body)),
                delay: StdMutex::new(Duration::ZERO),
            });
            let app = axum::Router::new()
                .route("/jwks", axum::routing::get(serve_jwks))
                .with_state(state.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks", listener.local_addr().unwrap());
            tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            JwksServer { url, state }
        }

        fn fetches(&self) -> usize {
            self.state.fetches.load(Ordering::SeqCst)
        }

        fn set(&self, status: StatusCode, body: String) {
            *self.state.response.lock().unwrap() = (status, body);
        }
    }

    fn jwks_value() -> Value {
        serde_json::from_str(JWKS).unwrap()
    }

    /// The test JWKS with the RSA key also listed under `extra_kid` (a rotated-in key).
    fn jwks_with_rsa_kid(extra_kid: &str) -> String {
        let mut set = jwks_value();
        let mut key = set["keys"][0].clone();
        key["kid"] = json!(extra_kid);
        set["keys"].as_array_mut().unwrap().push(key);
        set.to_string()
    }

    async fn jwks_verifier(interval: Duration) -> (Verifier, JwksServer) {
        let server = JwksServer::start(JWKS.to_owned()).await;
        let mut config = config(false, Some(server.url.clone()));
        config.jwks_refresh_interval = interval;
        (Verifier::new(config, http()), server)
    }

    // ---- success ----

    #[tokio::test]
    async fn hs256_success() {
        let mut c = claims();
        c["app_metadata"] = json!({"provider": "email"});
        let user = hs_verifier().verify(&hs(&c)).await.unwrap();
        assert_eq!(user.sub, SUB);
        assert_eq!(user.email.as_deref(), Some("user@example.com"));
        assert_eq!(user.role.as_deref(), Some("authenticated"));
        assert_eq!(user.exp, c["exp"].as_i64().unwrap());
        assert_eq!(user.app_metadata, json!({"provider": "email"}));
        assert!(user.permissions.is_empty());
    }

    #[tokio::test]
    async fn hs256_success_without_optional_claims() {
        let c = json!({"sub": SUB, "aud": AUDIENCE, "iss": ISSUER, "exp": now() + 60});
        let user = hs_verifier().verify(&hs(&c)).await.unwrap();
        assert_eq!(user.email, None);
        assert_eq!(user.role, None);
        assert_eq!(user.app_metadata, Value::Null);
    }

    #[tokio::test]
    async fn rs256_success_via_jwks() {
        let (verifier, server) = jwks_verifier(Duration::from_secs(30)).await;
        assert_eq!(server.fetches(), 0, "the JWKS is fetched lazily");
        let user = verifier.verify(&rs(Some("rsa-1"), &claims())).await.unwrap();
        assert_eq!(user.sub, SUB);
        // A second token uses the cache.
        verifier.verify(&rs(Some("rsa-1"), &claims())).await.unwrap();
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn es256_success_via_jwks_with_derived_alg() {
        // The EC key in the test JWKS has no "alg": ES256 is derived from kty EC and crv P-256.
        let (verifier, _server) = jwks_verifier(Duration::from_secs(30)).await;
        let user = verifier.verify(&es(Some("ec-1"), &claims())).await.unwrap();
        assert_eq!(user.sub, SUB);
    }

    #[tokio::test]
    async fn audience_array_containing_audience_is_accepted() {
        let mut c = claims();
        c["aud"] = json!(["other", AUDIENCE]);
        assert!(hs_verifier().verify(&hs(&c)).await.is_ok());
    }

    #[tokio::test]
    async fn clones_share_the_key_cache() {
        let (verifier, server) = jwks_verifier(Duration::from_secs(30)).await;
        let clone = verifier.clone();
        verifier.verify(&rs(Some("rsa-1"), &claims())).await.unwrap();
        clone.verify(&es(Some("ec-1"), &claims())).await.unwrap();
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn concurrent_first_use_fetches_once() {
        let (verifier, server) = jwks_verifier(Duration::from_secs(30)).await;
        let token = rs(Some("rsa-1"), &claims());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (v, t) = (verifier.clone(), token.clone());
                tokio::spawn(async move { v.verify(&t).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(server.fetches(), 1);
    }

    // ---- bearer header ----

    #[test]
    fn bearer_extracts_the_token() {
        assert_eq!(bearer(Some("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("BEARER   abc  ")), Ok("abc"));
    }

    #[test]
    fn bearer_missing() {
        assert_eq!(bearer(None), Err(JwtError::Missing));
        assert_eq!(bearer(Some("")), Err(JwtError::Missing));
        assert_eq!(bearer(Some("   ")), Err(JwtError::Missing));
        assert_eq!(bearer(Some("Basic x")), Err(JwtError::Missing));
        assert_eq!(bearer(Some("Bearer")), Err(JwtError::Missing));
        assert_eq!(bearer(Some("Bearer   ")), Err(JwtError::Missing));
        assert_eq!(bearer(Some("Bearerabc")), Err(JwtError::Missing));
    }

    #[tokio::test]
    async fn empty_token_is_missing() {
        assert_eq!(hs_verifier().verify("").await.unwrap_err(), JwtError::Missing);
    }

    // ---- algorithms ----

    #[tokio::test]
    async fn alg_none_is_refused() {
        let header = b64(&json!({"alg": "none", "typ": "JWT"}));
        let token = format!("{header}.{}.", b64(&claims()));
        assert_eq!(
            hs_verifier().verify(&token).await.unwrap_err(),
            JwtError::AlgorithmNotAllowed
        );
        let header = b64(&json!({"alg": "None"}));
        let token = format!("{header}.{}.", b64(&claims()));
        assert_eq!(
            hs_verifier().verify(&token).await.unwrap_err(),
            JwtError::AlgorithmNotAllowed
        );
    }

    #[tokio::test]
    async fn other_algorithms_are_refused() {
        let key = EncodingKey::from_secret(SECRET);
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = sign(alg, None, &claims(), &key);
            assert_eq!(
                hs_verifier().verify(&token).await.unwrap_err(),
                JwtError::AlgorithmNotAllowed
            );
        }
        let (verifier, server) = jwks_verifier(Duration::from_secs(30)).await;
        let rsa = EncodingKey::from_rsa_der(&pem_to_der(RSA_PEM));
        for alg in [Algorithm::RS384, Algorithm::PS256] {
            let token = sign(alg, Some("rsa-1"), &claims(), &rsa);
            assert_eq!(
                verifier.verify(&token).await.unwrap_err(),
                JwtError::AlgorithmNotAllowed
            );
        }
        assert_eq!(server.fetches(), 0, "refused before any key lookup");
    }

    #[tokio::test]
    async fn hs256_without_secret_is_refused() {
        let (verifier, _server) = jwks_verifier(Duration::from_secs(30)).await;
        assert_eq!(
            verifier.verify(&hs(&claims())).await.unwrap_err(),
            JwtError::AlgorithmNotAllowed
        );
    }

    #[tokio::test]
    async fn asymmetric_without_jwks_is_refused() {
        let token = rs(Some("rsa-1"), &claims());
        assert_eq!(
            hs_verifier().verify(&token).await.unwrap_err(),
            JwtError::AlgorithmNotAllowed
        );
    }

    #[tokio::test]
    async fn hs_rs_confusion_is_refused() {
        // An attacker signs HS256 with the published RSA public key as the HMAC secret.
        let key = EncodingKey::from_secret(RSA_PUB_PEM.as_bytes());
        let token = sign(Algorithm::HS256, Some("rsa-1"), &claims(), &key);
        let (verifier, server) = jwks_verifier(Duration::from_secs(30)).await;
        // Prime the cache so the RSA key is known.
        verifier.verify(&rs(Some("rsa-1"), &claims())).await.unwrap();
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            JwtError::AlgorithmNotAllowed
        );

        // With a secret configured as well, HS256 is checked only with that secret.
        let mut both = config(true, Some(server.url.clone()));
        both.jwks_refresh_interval = Duration::from_secs(30);
        let verifier = Verifier::new(both, http());
        assert_eq!(verifier.verify(&token).await.unwrap_err(), JwtError::BadSignature);
    }

    #[tokio::test]
    async fn key_pinned_to_another_algorithm_is_refused() {
        let (verifier, _server) = jwks_verifier(Duration::from_secs(30)).await;
        // An ES256 token naming the RSA key, and an RS256 token naming the EC key.
        let es_on_rsa = es(Some("rsa-1"), &claims());
        assert_eq!(
            verifier.verify(&es_on_rsa).await.unwrap_err(),
            JwtError::AlgorithmNotAllowed
        );
        let rs_on_ec = rs(Some("ec-1"), &claims());
        assert_eq!(
            verifier.verify(&rs_on_ec).await.unwrap_err(),
            JwtError::AlgorithmNotAllowed
        );
    }

    // ---- signatures ----

    #[tokio::test]
    async fn wrong_secret_is_bad_signature() {
        let token = sign(
            Algorithm::HS256,
            None,
            &claims(),
            &EncodingKey::from_secret(b"another-secret"),
        );
        assert_eq!(
            hs_verifier().verify(&token).await.unwrap_err(),
            JwtError::BadSignature
        );
    }

    fn tamper(token: &str) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = json!("00000000-0000-4000-8000-000000000000");
        format!("{}.{}.{}", parts[0], b64(&payload), parts[2])
    }

    #[tokio::test]
    async fn tampered_payload_is_bad_signature() {
        assert_eq!(
            hs_verifier().verify(&tamper(&hs(&claims()))).await.unwrap_err(),
            JwtError::BadSignature
        );
        let (verifier, _server) = jwks_verifier(Duration::from_secs(30)).await;
        let token = tamper(&rs(Some("rsa-1"), &claims()));
        assert_eq!(verifier.verify(&token).await.unwrap_err(), JwtError::BadSignature);
        let token = tamper(&es(Some("ec-1"), &claims()));
        assert_eq!(verifier.verify(&token).await.unwrap_err(), JwtError::BadSignature);
    }

    #[tokio::test]
    async fn signature_from_another_key_is_bad_signature() {
        // A valid ES256 signature by the EC key, relabelled as the RSA-signed token's signature.
        let (verifier, _server) = jwks_verifier(Duration::from_secs(30)).await;
        let rs_token = rs(Some("rsa-1"), &claims());
        let mut es_sig = es(Some("ec-1"), &claims());
        es_sig = es_sig.rsplit('.').next().unwrap().to_owned();
        let (message, _) = rs_token.rsplit_once('.').unwrap();
        let forged = format!("{message}.{es_sig}");
        assert_eq!(
            verifier.verify(&forged).await.unwrap_err(),
            JwtError::BadSignature
        );
    }

    // ---- time claims ----

    #[tokio::test]
    async fn expired_beyond_leeway() {
        let mut c = claims();
        c["exp"] = json!(now() - 31 - 5);
        assert_eq!(hs_refusal(&c).await, JwtError::Expired);
    }

    #[tokio::test]
    async fn expired_within_leeway_is_accepted() {
        let mut c = claims();
        c["exp"] = json!(now() - 10);
        assert!(hs_verifier().verify(&hs(&c)).await.is_ok());
    }

    #[tokio::test]
    async fn not_yet_valid() {
        let mut c = claims();
        c["nbf"] = json!(now() + 120);
        assert_eq!(hs_refusal(&c).await, JwtError::NotYetValid);
        // Within the leeway it is accepted.
        c["nbf"] = json!(now() + 10);
        assert!(hs_verifier().verify(&hs(&c)).await.is_ok());
    }

    #[tokio::test]
    async fn missing_exp_is_malformed() {
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(hs_refusal(&c).await, JwtError::Malformed);
        c["exp"] = json!("tomorrow");
        assert_eq!(hs_refusal(&c).await, JwtError::Malformed);
    }

    // ---- audience, issuer, subject ----

    #[tokio::test]
    async fn wrong_audience() {
        let mut c = claims();
        c["aud"] = json!("anon");
        assert_eq!(hs_refusal(&c).await, JwtError::WrongAudience);
        c["aud"] = json!(["anon", "service"]);
        assert_eq!(hs_refusal(&c).await, JwtError::WrongAudience);
        c.as_object_mut().unwrap().remove("aud");
        assert_eq!(hs_refusal(&c).await, JwtError::WrongAudience);
    }

    #[tokio::test]
    async fn wrong_issuer() {
        let mut c = claims();
        c["iss"] = json!("https://other.supabase.co/auth/v1");
        assert_eq!(hs_refusal(&c).await, JwtError::WrongIssuer);
        c["iss"] = json!([ISSUER, "https://other.supabase.co/auth/v1"]);
        assert_eq!(hs_refusal(&c).await, JwtError::WrongIssuer);
        c.as_object_mut().unwrap().remove("iss");
        assert_eq!(hs_refusal(&c).await, JwtError::WrongIssuer);
    }

    #[tokio::test]
    async fn non_uuid_subject() {
        for sub in [
            json!("not-a-uuid"),
            json!("6f1c3c4e2b1a4c1e9a570d3e2f8b9c10"),
            json!(42),
            json!(""),
        ] {
            let mut c = claims();
            c["sub"] = sub;
            assert_eq!(hs_refusal(&c).await, JwtError::BadSubject);
        }
        let mut c = claims();
        c.as_object_mut().unwrap().remove("sub");
        assert_eq!(hs_refusal(&c).await, JwtError::BadSubject);
    }

    #[test]
    fn uuid_check() {
        assert!(is_uuid(SUB));
        assert!(is_uuid("6F1C3C4E-2B1A-4C1E-9A57-0D3E2F8B9C10"));
        assert!(!is_uuid("6f1c3c4e-2b1a-4c1e-9a57-0d3e2f8b9c1"));
        assert!(!is_uuid("6f1c3c4e-2b1a-4c1e-9a57-0d3e2f8b9c1g"));
        assert!(!is_uuid("6f1c3c4e-2b1a-4c1e-9a570-d3e2f8b9c10"));
    }

    // ---- shape and size ----

    #[tokio::test]
    async fn oversized_token_is_too_large() {
        let mut c = claims();
        c["padding"] = json!("x".repeat(9000));
        let token = hs(&c);
        assert_eq!(
            hs_verifier().verify(&token).await.unwrap_err(),
            JwtError::TooLarge
        );
        // Size comes before parsing: garbage that is too long is TooLarge, not Malformed.
        assert_eq!(
            hs_verifier().verify(&"!".repeat(8193)).await.unwrap_err(),
            JwtError::TooLarge
        );
        assert_eq!(
            hs_verifier().verify(&"!".repeat(8192)).await.unwrap_err(),
            JwtError::Malformed
        );
    }

    #[tokio::test]
    async fn garbage_is_malformed() {
        let token = hs(&claims());
        let (header, rest) = token.split_once('.').unwrap();
        let cases = [
            "garbage".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            format!("{token}.extra"),
            format!("!!!.{rest}"),
            format!("{}.{rest}", URL_SAFE_NO_PAD.encode("not json")),
            format!("{}.{rest}", b64(&json!({"typ": "JWT"}))),
            // Garbage payload without a valid signature: the signature is checked first.
        ];
        for case in cases {
            assert_eq!(
                hs_verifier().verify(&case).await.unwrap_err(),
                JwtError::Malformed,
                "{case}"
            );
        }
        assert_eq!(
            hs_verifier()
                .verify(&format!("{header}.!!!.sig"))
                .await
                .unwrap_err(),
            JwtError::BadSignature
        );
    }

    /// Signs `header.payload` with the test secret, whatever the parts contain.
    fn sign_raw(header: &str, payload: &str) -> String {
        let message = format!("{header}.{payload}");
        let key = EncodingKey::from_secret(SECRET);
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{message}.{signature}")
    }

    #[tokio::test]
    async fn signed_garbage_payload_is_malformed() {
        let header = b64(&json!({"alg": "HS256", "typ": "JWT"}));
        let cases = [
            sign_raw(&header, "!!!"),
            sign_raw(&header, &URL_SAFE_NO_PAD.encode("not json")),
            sign_raw(&header, &URL_SAFE_NO_PAD.encode("[1, 2]")),
        ];
        for case in cases {
            assert_eq!(
                hs_verifier().verify(&case).await.unwrap_err(),
                JwtError::Malformed,
                "{case}"
            );
        }
    }

    #[tokio::test]
    async fn critical_header_is_malformed() {
        let token = sign_raw(&b64(&json!({"alg": "HS256", "crit": ["exp"]})), &b64(&claims()));
        assert_eq!(
            hs_verifier().verify(&token).await.unwrap_err(),
            JwtError::Malformed
        );
    }

    #[tokio::test]
    async fn wrongly_typed_optional_claim_is_malformed() {
        let mut c = claims();
        c["email"] = json!(7);
        assert_eq!(hs_refusal(&c).await, JwtError::Malformed);
    }

    // ---- permissions ----

    #[tokio::test]
    async fn permissions_merged_but_not_from_user_metadata() {
        let mut c = claims();
        c["app_metadata"] = json!({"provider": "email", "permissions": ["agents:read", "agents:write", 5]});
        c["permissions"] = json!(["agents:write", "tasks:run"]);
        c["user_metadata"] = json!({"permissions": ["admin"]});
        let user = hs_verifier().verify(&hs(&c)).await.unwrap();
        assert_eq!(user.permissions, vec!["agents:read", "agents:write", "tasks:run"]);
        assert!(!user.permissions.iter().any(|p| p == "admin"));
    }

    #[tokio::test]
    async fn permissions_of_wrong_shape_are_ignored() {
        let mut c = claims();
        c["app_metadata"] = json!({"permissions": "admin"});
        c["permissions"] = json!({"admin": true});
        let user = hs_verifier().verify(&hs(&c)).await.unwrap();
        assert!(user.permissions.is_empty());
    }

    // ---- JWKS handling ----

    #[tokio::test]
    async fn unknown_kid_is_rate_limited() {
        let (verifier, server) = jwks_verifier(Duration::from_secs(30)).await;
        let token = rs(Some("nope-1"), &claims());
        assert_eq!(verifier.verify(&token).await.unwrap_err(), JwtError::UnknownKey);
        assert_eq!(server.fetches(), 1);
        let token = rs(Some("nope-2"), &claims());
        assert_eq!(verifier.verify(&token).await.unwrap_err(), JwtError::UnknownKey);
        assert_eq!(server.fetches(), 1, "no second fetch within the refresh interval");
        // Known keys still work without a fetch.
        verifier.verify(&rs(Some("rsa-1"), &claims())).await.unwrap();
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn rotated_key_is_picked_up_after_the_interval() {
        // Tokens are signed up front, so slow signing cannot stretch the timed steps.
        let old = rs(Some("rsa-1"), &claims());
        let rotated = rs(Some("rsa-2"), &claims());
        let (verifier, server) = jwks_verifier(Duration::from_millis(300)).await;
        verifier.verify(&old).await.unwrap();
        assert_eq!(server.fetches(), 1);

        server.set(StatusCode::OK, jwks_with_rsa_kid("rsa-2"));
        // Within the interval: unknown at once, without a fetch.
        assert_eq!(verifier.verify(&rotated).await.unwrap_err(), JwtError::UnknownKey);
        assert_eq!(server.fetches(), 1);

        tokio::time::sleep(Duration::from_millis(350)).await;
        verifier.verify(&rotated).await.unwrap();
        assert_eq!(server.fetches(), 2);
        verifier.verify(&old).await.unwrap();
        assert_eq!(server.fetches(), 2);
    }

    #[tokio::test]
    async fn removed_key_is_dropped_after_refetch() {
        let old = rs(Some("rsa-1"), &claims());
        let other = rs(Some("other"), &claims());
        let (verifier, server) = jwks_verifier(Duration::from_millis(50)).await;
        verifier.verify(&old).await.unwrap();
        // The RSA key is retired; only the EC key remains.
        let mut set = jwks_value();
        set["keys"].as_array_mut().unwrap().remove(0);
        server.set(StatusCode::OK, set.to_string());
        tokio::time::sleep(Duration::from_millis(80)).await;
        // An unknown kid triggers the refetch that drops the old key.
        assert_eq!(verifier.verify(&other).await.unwrap_err(), JwtError::UnknownKey);
        assert_eq!(server.fetches(), 2);
        assert_eq!(verifier.verify(&old).await.unwrap_err(), JwtError::UnknownKey);
    }

    #[tokio::test]
    async fn jwks_server_down_with_nothing_cached() {
        // A port that was just free: nothing listens there.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        drop(listener);
        let verifier = Verifier::new(config(false, Some(url)), http());
        let token = rs(Some("rsa-1"), &claims());
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            JwtError::KeysUnavailable
        );
        // Still unavailable within the interval, without a new attempt.
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            JwtError::KeysUnavailable
        );
        assert_eq!(JwtError::KeysUnavailable.status(), 503);
    }

    #[tokio::test]
    async fn jwks_error_status_with_nothing_cached() {
        let server = JwksServer::start(String::new()).await;
        server.set(StatusCode::INTERNAL_SERVER_ERROR, "oops".to_owned());
        let verifier = Verifier::new(config(false, Some(server.url.clone())), http());
        let token = rs(Some("rsa-1"), &claims());
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            JwtError::KeysUnavailable
        );
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn failed_refetch_keeps_cached_keys() {
        let old = rs(Some("rsa-1"), &claims());
        let unknown = rs(Some("rsa-9"), &claims());
        let (verifier, server) = jwks_verifier(Duration::from_millis(50)).await;
        verifier.verify(&old).await.unwrap();
        server.set(StatusCode::SERVICE_UNAVAILABLE, String::new());
        tokio::time::sleep(Duration::from_millis(80)).await;
        // The refetch fails; the kid is unknown, not the keys unavailable.
        assert_eq!(verifier.verify(&unknown).await.unwrap_err(), JwtError::UnknownKey);
        assert_eq!(server.fetches(), 2);
        verifier.verify(&old).await.unwrap();
        verifier.verify(&es(Some("ec-1"), &claims())).await.unwrap();
    }

    #[tokio::test]
    async fn stale_keys_are_refreshed_and_kept_if_refresh_fails() {
        let token = rs(Some("rsa-1"), &claims());
        let server = JwksServer::start(JWKS.to_owned()).await;
        let mut config = config(false, Some(server.url.clone()));
        config.jwks_refresh_interval = Duration::from_millis(10);
        let max_age = Duration::from_millis(300);
        let verifier = Verifier::with_timing(config, http(), Duration::from_secs(5), max_age);
        verifier.verify(&token).await.unwrap();
        verifier.verify(&token).await.unwrap();
        assert_eq!(server.fetches(), 1, "fresh keys are not refetched");

        tokio::time::sleep(Duration::from_millis(350)).await;
        verifier.verify(&token).await.unwrap();
        assert_eq!(
            server.fetches(),
            2,
            "keys older than the maximum age are refreshed on use"
        );

        server.set(StatusCode::INTERNAL_SERVER_ERROR, String::new());
        tokio::time::sleep(Duration::from_millis(350)).await;
        verifier.verify(&token).await.unwrap();
        assert_eq!(server.fetches(), 3, "the failed refresh keeps the stale keys");
    }

    #[tokio::test]
    async fn jwks_fetch_times_out() {
        let server = JwksServer::start(JWKS.to_owned()).await;
        *server.state.delay.lock().unwrap() = Duration::from_secs(2);
        let verifier = Verifier::with_timing(
            config(false, Some(server.url.clone())),
            http(),
            Duration::from_millis(100),
            JWKS_MAX_AGE,
        );
        let started = Instant::now();
        let token = rs(Some("rsa-1"), &claims());
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            JwtError::KeysUnavailable
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn oversized_jwks_body_is_refused() {
        // A valid JWKS padded past 64 KiB.
        let mut set = jwks_value();
        set["padding"] = json!("x".repeat(JWKS_MAX_BODY_BYTES));
        assert_eq!(jwks_refusal(&set).await, JwtError::KeysUnavailable);
    }

    #[tokio::test]
    async fn jwks_without_usable_keys_is_unavailable() {
        // Keys for encryption only, and a symmetric key, are never used to verify.
        let mut set = jwks_value();
        set["keys"][0]["use"] = json!("enc");
        set["keys"][1]["key_ops"] = json!(["encrypt"]);
        set["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kty": "oct", "kid": "hs", "k": "c2VjcmV0"}));
        assert_eq!(jwks_refusal(&set).await, JwtError::KeysUnavailable);
    }

    #[tokio::test]
    async fn keys_that_cannot_be_pinned_are_skipped() {
        let mut set = jwks_value();
        let rsa = set["keys"][0].clone();
        let keys = set["keys"].as_array_mut().unwrap();
        // An RSA key declared for RS384, an RSA key declared as ES256, a P-384 key, garbage.
        let mut rs384 = rsa.clone();
        rs384["kid"] = json!("rsa-384");
        rs384["alg"] = json!("RS384");
        let mut mislabelled = rsa.clone();
        mislabelled["kid"] = json!("rsa-es");
        mislabelled["alg"] = json!("ES256");
        keys.push(rs384);
        keys.push(mislabelled);
        keys.push(json!({"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"}));
        keys.push(json!({"kty": "EC", "kid": "bad-point", "crv": "P-256", "x": "AA", "y": "AA"}));
        keys.push(json!("not a key"));
        let server = JwksServer::start(set.to_string()).await;
        let verifier = Verifier::new(config(false, Some(server.url.clone())), http());
        verifier.verify(&rs(Some("rsa-1"), &claims())).await.unwrap();
        for kid in ["rsa-384", "rsa-es"] {
            assert_eq!(
                verifier.verify(&rs(Some(kid), &claims())).await.unwrap_err(),
                JwtError::UnknownKey
            );
        }
        assert_eq!(
            verifier
                .verify(&es(Some("bad-point"), &claims()))
                .await
                .unwrap_err(),
            JwtError::UnknownKey
        );
    }

    #[tokio::test]
    async fn extra_keys_beyond_the_limit_are_ignored() {
        let server = JwksServer::start(JWKS.to_owned()).await;
        let mut config = config(false, Some(server.url.clone()));
        config.jwks_max_keys = 1;
        let verifier = Verifier::new(config, http());
        verifier.verify(&rs(Some("rsa-1"), &claims())).await.unwrap();
        assert_eq!(
            verifier.verify(&es(Some("ec-1"), &claims())).await.unwrap_err(),
            JwtError::UnknownKey
        );
    }

    #[tokio::test]
    async fn token_without_kid() {
        let (verifier, _server) = jwks_verifier(Duration::from_secs(30)).await;
        // Exactly one ES256 key: it is used.
        verifier.verify(&es(None, &claims())).await.unwrap();
        verifier.verify(&rs(None, &claims())).await.unwrap();

        // Two RS256 keys: ambiguous, so the key is unknown.
        let server = JwksServer::start(jwks_with_rsa_kid("rsa-2")).await;
        let verifier = Verifier::new(config(false, Some(server.url.clone())), http());
        assert_eq!(
            verifier.verify(&rs(None, &claims())).await.unwrap_err(),
            JwtError::UnknownKey
        );
    }

    #[test]
    fn verifier_and_its_future_are_send() {
        fn assert_send_sync<T: Send + Sync>() {}
        fn assert_send<T: Send>(_: &T) {}
        assert_send_sync::<Verifier>();
        let verifier = hs_verifier();
        assert_send(&verifier.verify("token"));
    }

    // ---- error codes ----

    #[test]
    fn codes_and_statuses() {
        let all = [
            (JwtError::Missing, "MissingToken"),
            (JwtError::TooLarge, "TokenTooLarge"),
            (JwtError::Malformed, "MalformedToken"),
            (JwtError::AlgorithmNotAllowed, "AlgorithmNotAllowed"),
            (JwtError::UnknownKey, "UnknownKey"),
            (JwtError::BadSignature, "InvalidSignature"),
            (JwtError::Expired, "TokenExpired"),
            (JwtError::NotYetValid, "TokenNotYetValid"),
            (JwtError::WrongAudience, "WrongAudience"),
            (JwtError::WrongIssuer, "WrongIssuer"),
            (JwtError::BadSubject, "InvalidSubject"),
            (JwtError::KeysUnavailable, "KeysUnavailable"),
        ];
        for (err, code) in all {
            assert_eq!(err.code(), code);
            let status = if err == JwtError::KeysUnavailable {
                503
            } else {
                401
            };
            assert_eq!(err.status(), status, "{code}");
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let text = format!("{:?}", config(true, None));
        assert!(!text.contains("super-secret"));
        assert!(text.contains("[redacted]"));
    }
}
