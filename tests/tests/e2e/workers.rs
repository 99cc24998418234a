//! Workers' tokens: issued per CogoWorker, signed with keys only the operator holds, and
//! rotated without a restart.

use std::time::Duration;

use base64::Engine;
use cogo_e2e::cluster::{Namespace, Operator, http_get, kwok_pod_template, token_of, wait_until};
use serde_json::{Value, json};

use super::cluster;

/// The key id in a JWT's header.
fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("a base64url JWT header");
    let header: Value = serde_json::from_slice(&bytes).expect("a JSON header");
    header["kid"].as_str().unwrap_or_default().to_string()
}

/// Merge-patches the worker keys' Secret (the local operator's namespace is `default`).
fn patch_keys(c: &cogo_e2e::cluster::Cluster, patch: &Value) {
    let patch = patch.to_string();
    c.kubectl_ok(
        &[
            "patch",
            "secret",
            "cogo-worker-keys",
            "-n",
            "default",
            "--type",
            "merge",
            "-p",
            &patch,
        ],
        None,
    );
}

/// The key ids the broker publishes.
fn published(op: &Operator) -> Vec<String> {
    let answer = http_get(op.broker_port, "/v1/worker-keys").unwrap_or_default();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let set: Value = serde_json::from_str(body).unwrap_or_default();
    let mut ids: Vec<String> = set["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k["kid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// A worker gets its token in a Secret it owns; rotating the keys in their Secret takes effect
/// in the running operator: the new key is published at once and signs from then on, the old
/// one verifies until it is removed, and then the worker's token is reissued.
#[test]
fn worker_tokens_follow_a_key_rotation() {
    let c = cluster();
    let ns = Namespace::create(&c, "e2e-worker-tokens");
    let op = Operator::start(&c, "worker-tokens");
    for obj in [
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoAgent", "metadata": {"name": "executor"},
               "spec": {"role": "Executor", "podTemplate": kwok_pod_template()}}),
        json!({"apiVersion": "cogo.xyz/v1alpha1", "kind": "CogoWorker", "metadata": {"name": "python"},
               "spec": {"kind": "PythonSandbox", "podTemplate": kwok_pod_template()}}),
    ] {
        ns.apply_ok(&obj.to_string());
    }
    let first = token_of(&c, &ns.name, "python-executor-token");
    let owner = c.kubectl_ok(
        &[
            "get",
            "secret",
            "python-executor-token",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.metadata.ownerReferences[0].name}",
        ],
        None,
    );
    assert_eq!(owner, "python", "the worker owns its token");
    let old = kid(&first);
    assert_eq!(published(&op), std::slice::from_ref(&old));

    // Rotate: a new key becomes current; the old one stays, so running workers keep working.
    let fresh = format!("{old}-next");
    let seed = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let patch = json!({"data": {fresh.clone(): seed, "current": base64::engine::general_purpose::STANDARD.encode(&fresh)}});
    patch_keys(&c, &patch);
    wait_until(Duration::from_secs(30), "the new key to be published", || {
        published(&op).contains(&fresh)
    });
    assert!(published(&op).contains(&old), "the old key is still published");
    assert_eq!(
        kid(&token_of(&c, &ns.name, "python-executor-token")),
        old,
        "a valid token is kept"
    );

    // Drop the old key: the worker's token no longer verifies, and is reissued with the new one.
    let patch = json!({"data": {old.clone(): null}});
    patch_keys(&c, &patch);
    wait_until(Duration::from_secs(30), "the old key to be withdrawn", || {
        published(&op) == [fresh.clone()]
    });
    c.kubectl_ok(
        &[
            "annotate",
            "cogoworker",
            "python",
            "-n",
            &ns.name,
            "cogo.xyz/poke=1",
            "--overwrite",
        ],
        None,
    );
    wait_until(
        Duration::from_secs(60),
        "the worker's token to be reissued",
        || kid(&token_of(&c, &ns.name, "python-executor-token")) == fresh,
    );
}
