//! Worker tokens: EdDSA (Ed25519) JWTs the operator issues per CogoWorker
//! (`sub: worker:<ns>/<name>`, `aud: cogo-executor`, with the worker's kind and Executor).
//! Only the operator holds the private keys (Secret `cogo-worker-keys` of its namespace);
//! Executors verify with the public keys the broker publishes at `GET /v1/worker-keys`, so no
//! agent pod can mint a worker token. Keys carry an id (`kid`); rotated-out keys stay published
//! until they are removed from the Secret, so rotation does not cut off running workers.

use base64::Engine;
use cogo_api::{
    WorkerKind,
    broker::{WorkerKey, WorkerKeySet},
    worker::message::{TOKEN_AUDIENCE, WorkerClaims},
};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::{Error, Result};

/// Name of the Secret that holds the worker-token signing keys.
pub const KEYS_SECRET: &str = "cogo-worker-keys";
/// The PKCS #8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// One signing key: its id and its 32-byte Ed25519 seed.
#[derive(Clone)]
pub struct SigningSeed {
    /// Key id, written into each token's header.
    pub id: String,
    seed: [u8; 32],
}

impl std::fmt::Debug for SigningSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed.
        f.debug_struct("SigningSeed")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SigningSeed {
    /// A key from its id and seed.
    pub fn new(id: impl Into<String>, seed: [u8; 32]) -> Self {
        SigningSeed { id: id.into(), seed }
    }

    /// The public half, as published.
    pub fn public(&self) -> [u8; 32] {
        SigningKey::from_bytes(&self.seed).verifying_key().to_bytes()
    }

    fn encoding_key(&self) -> EncodingKey {
        let mut der = PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&self.seed);
        EncodingKey::from_ed_der(&der)
    }
}

/// The keys worker tokens are signed with: the current one signs, every one is published.
#[derive(Clone, Debug)]
pub struct WorkerKeys {
    /// Signs new tokens.
    pub current: SigningSeed,
    /// Rotated out, still published until removed.
    pub previous: Vec<SigningSeed>,
}

/// What a worker token is issued for.
#[derive(Clone, Copy, Debug)]
pub struct WorkerIdentity<'a> {
    /// Namespace of the CogoWorker.
    pub namespace: &'a str,
    /// Name of the CogoWorker.
    pub worker: &'a str,
    /// Its kind.
    pub kind: WorkerKind,
    /// The Executor agent it serves.
    pub executor: &'a str,
}

impl WorkerKeys {
    /// Issues a token for `who`, valid from `now` (seconds since the epoch) for `ttl_seconds`.
    pub fn issue(&self, who: WorkerIdentity, now: i64, ttl_seconds: i64) -> Result<String> {
        let claims = WorkerClaims {
            sub: WorkerClaims::subject(who.namespace, who.worker),
            aud: TOKEN_AUDIENCE.into(),
            kind: who.kind,
            executor: who.executor.into(),
            iat: now,
            exp: now + ttl_seconds,
        };
        let header = Header {
            kid: Some(self.current.id.clone()),
            ..Header::new(Algorithm::EdDSA)
        };
        jsonwebtoken::encode(&header, &claims, &self.current.encoding_key())
            .map_err(|e| Error::Broker(format!("cannot sign a worker token: {e}")))
    }

    /// The claims of `token` when one of these keys signed it and it has not expired.
    pub fn verify(&self, token: &str) -> Option<WorkerClaims> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        let key = self.all().find(|k| k.id == kid)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[TOKEN_AUDIENCE]);
        let decoding = DecodingKey::from_ed_der(&key.public());
        jsonwebtoken::decode::<WorkerClaims>(token, &decoding, &validation)
            .ok()
            .map(|d| d.claims)
    }

    fn all(&self) -> impl Iterator<Item = &SigningSeed> {
        std::iter::once(&self.current).chain(&self.previous)
    }

    /// Every public key, as a JSON Web Key Set.
    pub fn key_set(&self) -> WorkerKeySet {
        WorkerKeySet {
            keys: self
                .all()
                .map(|k| WorkerKey {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    alg: "EdDSA".into(),
                    use_: "sig".into(),
                    kid: k.id.clone(),
                    x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.public()),
                })
                .collect(),
        }
    }
}

/// Reads the keys from the Secret, creating it with a fresh key when it does not exist.
pub async fn load_or_create(api: &Api<Secret>) -> Result<WorkerKeys> {
    super::keys::load_or_create_set(api, KEYS_SECRET, "w1", parse).await
}

/// The keys held in a Secret's data: `current` names the signing key, every other entry is a
/// key id with its 32-byte Ed25519 seed.
pub fn parse(secret: &Secret) -> Result<WorkerKeys> {
    let (current, keys) = super::keys::split_set(secret, KEYS_SECRET)?;
    let mut seeds = Vec::new();
    for (id, bytes) in keys {
        let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            Error::Broker(format!(
                "the Secret {KEYS_SECRET} is unusable: key {id} is not a 32-byte Ed25519 seed"
            ))
        })?;
        seeds.push(SigningSeed::new(id, seed));
    }
    let (mine, previous): (Vec<SigningSeed>, Vec<SigningSeed>) =
        seeds.into_iter().partition(|k| k.id == current);
    Ok(WorkerKeys {
        current: mine.into_iter().next().expect("split_set found the current key"),
        previous,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn keys() -> WorkerKeys {
        WorkerKeys {
            current: SigningSeed::new("w2", [2; 32]),
            previous: vec![SigningSeed::new("w1", [1; 32])],
        }
    }

    fn who() -> WorkerIdentity<'static> {
        WorkerIdentity {
            namespace: "team",
            worker: "python",
            kind: WorkerKind::PythonSandbox,
            executor: "executor",
        }
    }

    fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    #[test]
    fn tokens_carry_the_worker_and_verify_with_the_published_key() {
        let token = keys().issue(who(), now(), 3600).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            (header.alg, header.kid.as_deref()),
            (Algorithm::EdDSA, Some("w2"))
        );
        let claims = keys().verify(&token).unwrap();
        assert_eq!(claims.worker(), Some(("team", "python")));
        assert_eq!(
            (claims.kind, claims.executor.as_str()),
            (WorkerKind::PythonSandbox, "executor")
        );

        // The published key is the one that verifies: a verifier with only the JWK Set.
        let set = keys().key_set();
        let jwk = set.keys.iter().find(|k| k.kid == "w2").unwrap();
        let decoding = DecodingKey::from_ed_components(&jwk.x).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[TOKEN_AUDIENCE]);
        assert!(jsonwebtoken::decode::<WorkerClaims>(&token, &decoding, &v).is_ok());
        let other = set.keys.iter().find(|k| k.kid == "w1").unwrap();
        let wrong = DecodingKey::from_ed_components(&other.x).unwrap();
        assert!(jsonwebtoken::decode::<WorkerClaims>(&token, &wrong, &v).is_err());
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_their_key_is_dropped() {
        let old = WorkerKeys {
            current: SigningSeed::new("w1", [1; 32]),
            previous: vec![],
        };
        let token = old.issue(who(), now(), 3600).unwrap();
        assert!(keys().verify(&token).is_some(), "w1 is still published");
        assert_eq!(keys().key_set().keys.len(), 2);
        let dropped = WorkerKeys {
            current: SigningSeed::new("w2", [2; 32]),
            previous: vec![],
        };
        assert!(dropped.verify(&token).is_none());
        assert!(
            keys()
                .verify(&keys().issue(who(), now() - 7200, 60).unwrap())
                .is_none(),
            "expired"
        );
    }

    #[test]
    fn secrets_parse_or_say_why_and_seeds_never_print() {
        let secret = |pairs: &[(&str, &[u8])]| Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        let parsed = parse(&secret(&[("current", b"w2"), ("w1", &[1; 32]), ("w2", &[2; 32])])).unwrap();
        assert_eq!(parsed.current.id, "w2");
        assert_eq!(parsed.previous.len(), 1);
        for (pairs, why) in [
            (vec![("w1", &[1u8; 32][..])], "no `current`"),
            (
                vec![("current", &b"w9"[..]), ("w1", &[1; 32][..])],
                "names no key",
            ),
            (
                vec![("current", &b"w1"[..]), ("w1", &[1; 8][..])],
                "not a 32-byte",
            ),
        ] {
            let err = parse(&secret(&pairs)).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        let printed = format!("{:?}", keys());
        assert!(printed.contains("w2") && !printed.contains("[2, 2"), "{printed}");
    }
}
