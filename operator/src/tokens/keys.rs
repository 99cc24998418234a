//! The broker's signing keys, kept in a Secret the operator creates in its own namespace.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{Api, api::PostParams};

use super::auth::{Key, Keys};
use crate::{Error, Result};

/// Name of the Secret that holds the signing keys.
pub const KEYS_SECRET: &str = "cogo-broker-keys";
/// The data key naming the current key.
const CURRENT: &str = "current";

fn random_bytes() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Reads a set of keys from the Secret `name`, creating it with one fresh key of 32 random
/// bytes under the id `first` when it does not exist, and reads it with `parse`.
pub async fn load_or_create_set<T>(
    api: &Api<Secret>,
    name: &str,
    first: &str,
    parse: impl Fn(&Secret) -> Result<T>,
) -> Result<T> {
    for _ in 0..3 {
        if let Some(secret) = api.get_opt(name).await? {
            return parse(&secret);
        }
        let key = random_bytes().map_err(|e| Error::Broker(format!("cannot read random bytes: {e}")))?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "cogo-operator".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (CURRENT.to_string(), ByteString(first.as_bytes().to_vec())),
                (first.to_string(), ByteString(key)),
            ])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(s) => return parse(&s),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Broker(format!("cannot read or create the Secret {name}")))
}

/// The entries of a key set: each key's id and bytes.
pub type KeyEntries = Vec<(String, Vec<u8>)>;

/// The keys of a set kept in the Secret `name`: the id `current` names, and every entry but
/// `current` as an id and its bytes.
pub fn split_set(secret: &Secret, name: &str) -> Result<(String, KeyEntries)> {
    let data = secret.data.clone().unwrap_or_default();
    let bad = |why: &str| Error::Broker(format!("the Secret {name} is unusable: {why}"));
    let current = data.get(CURRENT).ok_or_else(|| bad("it has no `current` key"))?;
    let current = String::from_utf8(current.0.clone()).map_err(|_| bad("`current` is not text"))?;
    let keys: KeyEntries = data
        .into_iter()
        .filter(|(k, _)| k.as_str() != CURRENT)
        .map(|(k, v)| (k, v.0))
        .collect();
    if !keys.iter().any(|(id, _)| *id == current) {
        return Err(bad("`current` names no key"));
    }
    Ok((current, keys))
}

/// Reads the keys from the Secret, creating it with a fresh key when it does not exist.
/// Every key in it verifies; the one named by `current` signs.
pub async fn load_or_create(api: &Api<Secret>) -> Result<Keys> {
    load_or_create_set(api, KEYS_SECRET, "k1", parse).await
}

/// The keys held in a Secret's data.
pub fn parse(secret: &Secret) -> Result<Keys> {
    let (current, keys) = split_set(secret, KEYS_SECRET)?;
    if keys.iter().any(|(_, k)| k.len() < 32) {
        return Err(Error::Broker(format!(
            "the Secret {KEYS_SECRET} is unusable: a key is shorter than 32 bytes"
        )));
    }
    let (mine, previous): (Vec<Key>, Vec<Key>) = keys
        .into_iter()
        .map(|(id, secret)| Key { id, secret })
        .partition(|k| k.id == current);
    Ok(Keys {
        current: mine.into_iter().next().expect("split_set found the current key"),
        previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn current_signs_and_the_rest_verify() {
        let keys = parse(&secret(&[("current", b"k2"), ("k1", &[1; 32]), ("k2", &[2; 32])])).unwrap();
        assert_eq!(keys.current.id, "k2");
        assert_eq!(keys.previous.len(), 1);
        assert_eq!(keys.previous[0].id, "k1");
    }

    #[test]
    fn unusable_secrets_say_why() {
        for (pairs, why) in [
            (vec![("k1", &[1u8; 32][..])], "no `current`"),
            (
                vec![("current", &b"k9"[..]), ("k1", &[1; 32][..])],
                "names no key",
            ),
            (
                vec![("current", &b"k1"[..]), ("k1", &[1; 8][..])],
                "shorter than 32 bytes",
            ),
        ] {
            let err = parse(&secret(&pairs)).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }
}
