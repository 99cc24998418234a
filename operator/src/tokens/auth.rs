//! Broker tokens: HS256 JWTs the operator issues per CogoAgent (`sub: agent:<ns>/<name>`,
//! `aud: cogo-broker`), signed with keys it keeps in a Secret. Keys carry an id (`kid`); a
//! rotated-out key keeps verifying until it is dropped, so rotation does not cut off running pods.

use cogo_api::broker::{Claims, TOKEN_AUDIENCE};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};

/// A signing key and its id.
#[derive(Clone)]
pub struct Key {
    /// Key id, written into each token's header.
    pub id: String,
    /// The HMAC secret (at least 32 bytes).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The keys tokens are signed and verified with.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Signs new tokens, and verifies.
    pub current: Key,
    /// Only verify: keys rotated out but not yet dropped.
    pub previous: Vec<Key>,
}

/// Why a token was refused. Each maps to a stable code in the broker's error answers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// Not a JWT, or not one signed with HS256.
    #[error("the token is malformed or not signed with HS256")]
    Malformed,
    /// Signed with an unknown key id.
    #[error("the token names a signing key the broker does not have")]
    UnknownKey,
    /// The signature does not match.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// Past its expiry.
    #[error("the token has expired")]
    Expired,
    /// Issued for another audience.
    #[error("the token is not for the broker")]
    WrongAudience,
    /// For another agent than the one the request acts for.
    #[error("the token is for another agent")]
    WrongAgent,
}

impl AuthError {
    /// The code in the broker's error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingToken",
            AuthError::Malformed => "MalformedToken",
            AuthError::UnknownKey => "UnknownSigningKey",
            AuthError::BadSignature => "InvalidSignature",
            AuthError::Expired => "TokenExpired",
            AuthError::WrongAudience => "WrongAudience",
            AuthError::WrongAgent => "WrongAgent",
        }
    }
}

impl Keys {
    /// Issues a token for the agent `agent` of namespace `ns`, valid from `now` (seconds since
    /// the epoch) for `ttl_seconds`.
    pub fn issue(
        &self,
        ns: &str,
        agent: &str,
        now: i64,
        ttl_seconds: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: Claims::subject(ns, agent),
            aud: TOKEN_AUDIENCE.to_string(),
            iat: now,
            exp: now + ttl_seconds,
        };
        let header = Header {
            kid: Some(self.current.id.clone()),
            ..Header::new(Algorithm::HS256)
        };
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&self.current.secret))
    }

    /// Verifies a token and that it acts for the agent `agent` of namespace `ns`.
    pub fn verify(&self, token: &str, ns: &str, agent: &str) -> Result<Claims, AuthError> {
        let claims = self.verify_signature(token)?;
        if claims.sub != Claims::subject(ns, agent) {
            return Err(AuthError::WrongAgent);
        }
        Ok(claims)
    }

    /// Verifies a token's signature, expiry and audience, whoever it names.
    pub fn verify_signature(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::Malformed);
        }
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == kid)
            .ok_or(AuthError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[TOKEN_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&key.secret), &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed,
            })?;
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> Key {
        Key {
            id: id.into(),
            secret: vec![byte; 32],
        }
    }

    fn keys() -> Keys {
        Keys {
            current: key("k2", 2),
            previous: vec![key("k1", 1)],
        }
    }

    fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    #[test]
    fn a_token_verifies_for_its_agent_only() {
        let t = keys().issue("team", "research", now(), 3600).unwrap();
        let claims = keys().verify(&t, "team", "research").unwrap();
        assert_eq!(claims.sub, "agent:team/research");
        assert_eq!(keys().verify(&t, "team", "indexing"), Err(AuthError::WrongAgent));
        assert_eq!(keys().verify(&t, "other", "research"), Err(AuthError::WrongAgent));
    }

    /// Every bad token the broker refuses, with the code its answer carries.
    #[test]
    fn bad_tokens() {
        let old = Keys {
            current: key("k1", 1),
            previous: vec![],
        };
        let stranger = Keys {
            current: key("k9", 9),
            previous: vec![],
        };
        let forged = Keys {
            current: key("k2", 7),
            previous: vec![],
        };
        let wrong_aud = {
            let claims = Claims {
                sub: "agent:team/research".into(),
                aud: "someone-else".into(),
                iat: now(),
                exp: now() + 60,
            };
            let header = Header {
                kid: Some("k2".into()),
                ..Header::new(Algorithm::HS256)
            };
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&[2; 32])).unwrap()
        };
        // {"alg":"none"} . {claims} . (no signature)
        let unsigned = "eyJhbGciOiJub25lIiwia2lkIjoiazIifQ.eyJzdWIiOiJhZ2VudDp0ZWFtL3Jlc2VhcmNoIiwiYXVkIjoiY29nby1icm9rZXIiLCJpYXQiOjAsImV4cCI6OTk5OTk5OTk5OX0.";
        let cases: Vec<(&str, String, AuthError)> = vec![
            (
                "expired",
                keys().issue("team", "research", now() - 7200, 60).unwrap(),
                AuthError::Expired,
            ),
            ("wrong audience", wrong_aud, AuthError::WrongAudience),
            ("unsigned (alg none)", unsigned.into(), AuthError::Malformed),
            ("not a JWT", "hello".into(), AuthError::Malformed),
            (
                "unknown key id",
                stranger.issue("team", "research", now(), 60).unwrap(),
                AuthError::UnknownKey,
            ),
            (
                "forged with a known key id",
                forged.issue("team", "research", now(), 60).unwrap(),
                AuthError::BadSignature,
            ),
        ];
        for (what, token, expected) in cases {
            assert_eq!(keys().verify(&token, "team", "research"), Err(expected), "{what}");
        }
        // A token signed with a rotated-out key still verifies while that key is kept.
        let t = old.issue("team", "research", now(), 60).unwrap();
        assert!(keys().verify(&t, "team", "research").is_ok());
        let dropped = Keys {
            current: key("k2", 2),
            previous: vec![],
        };
        assert_eq!(dropped.verify(&t, "team", "research"), Err(AuthError::UnknownKey));
    }

    #[test]
    fn codes_are_stable_and_keys_never_print_their_secret() {
        assert_eq!(AuthError::Expired.code(), "TokenExpired");
        assert_eq!(AuthError::WrongAudience.code(), "WrongAudience");
        let printed = format!("{:?}", keys());
        assert!(printed.contains("k2") && !printed.contains("[2, 2"), "{printed}");
    }
}
