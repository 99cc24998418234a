//! Seals: what the operator vouches for in an AgentTask it creates itself.
//!
//! Anyone allowed to create AgentTasks can write `spec.requester` and any annotation, so
//! neither may decide whose Supabase row a task is, or which row it writes. The operator seals
//! the tasks it makes from a trusted source (the intake, from a row a signed-in user inserted;
//! the broker, for a sub-task of a sealed task): an HMAC-SHA256, with the broker's signing keys,
//! of the task's namespace, name, row and requester, in the annotation [`SEAL_ANNOTATION`]. The
//! mirror takes a row id from `cogo.xyz/supabase-row` and the owner from `spec.requester` only
//! when the seal verifies; a task without one gets its own row (by UID) and no owner, which
//! only the service role reads.

use cogo_api::{AgentTask, task::Requester};
use hmac::{Hmac, Mac};
use kube::ResourceExt;
use sha2::Sha256;

use crate::{supabase::row::ROW_ANNOTATION, tokens::auth::Keys};

/// The annotation holding a task's seal: `<key id>:<hex HMAC>`.
pub const SEAL_ANNOTATION: &str = "cogo.xyz/requester-seal";

/// What a seal covers: the task's namespace, name, row annotation and requester.
fn message(task: &AgentTask) -> String {
    let (user, session) = task
        .spec
        .requester
        .as_ref()
        .map(|r: &Requester| (r.user_id.as_deref(), r.session_id.as_deref()))
        .unwrap_or_default();
    format!(
        "cogo-seal/v1\n{}\n{}\n{}\n{}\n{}",
        task.namespace().unwrap_or_default(),
        task.metadata.name.as_deref().unwrap_or(""),
        task.annotations().get(ROW_ANNOTATION).map_or("", String::as_str),
        user.unwrap_or(""),
        session.unwrap_or("")
    )
}

fn mac(secret: &[u8], message: &str) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key");
    m.update(message.as_bytes());
    m
}

/// The annotation holding the broker's mark on a sub-task it created for a running task:
/// `<key id>:<hex HMAC>` of the task's namespace, name and parent. Only such sub-tasks pass
/// their namespace's task limits (a user can write `spec.parent` on any task).
pub const SUBTASK_SEAL_ANNOTATION: &str = "cogo.xyz/subtask-seal";

fn subtask_message(task: &AgentTask) -> String {
    format!(
        "cogo-subtask/v1\n{}\n{}\n{}",
        task.namespace().unwrap_or_default(),
        task.metadata.name.as_deref().unwrap_or(""),
        task.spec.parent.as_deref().unwrap_or("")
    )
}

/// Marks `task`, a sub-task the broker creates, as the broker's (its namespace, name and
/// parent must be final).
pub fn seal_subtask(keys: &Keys, task: &mut AgentTask) {
    let m = mac(&keys.current.secret, &subtask_message(task))
        .finalize()
        .into_bytes();
    task.annotations_mut().insert(
        SUBTASK_SEAL_ANNOTATION.into(),
        format!("{}:{}", keys.current.id, hex(&m)),
    );
}

/// Whether `task` is a sub-task the broker created: it names a parent and carries the
/// broker's mark of exactly its namespace, name and parent.
pub fn is_broker_subtask(keys: &Keys, task: &AgentTask) -> bool {
    task.spec.parent.is_some() && holds(keys, task, SUBTASK_SEAL_ANNOTATION, &subtask_message(task))
}

/// Whether the annotation `annotation` of `task` is an HMAC of `message` by one of `keys`.
fn holds(keys: &Keys, task: &AgentTask, annotation: &str, message: &str) -> bool {
    let Some((kid, given)) = task.annotations().get(annotation).and_then(|s| s.split_once(':')) else {
        return false;
    };
    let key = std::iter::once(&keys.current)
        .chain(&keys.previous)
        .find(|k| k.id == kid);
    match (key, unhex(given)) {
        // Compared in constant time.
        (Some(key), Some(given)) => mac(&key.secret, message).verify_slice(&given).is_ok(),
        _ => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seals `task` (its namespace, name, row annotation and requester) with the current key.
/// Call it once these are final: any change breaks the seal.
pub fn seal(keys: &Keys, task: &mut AgentTask) {
    let m = mac(&keys.current.secret, &message(task)).finalize().into_bytes();
    task.annotations_mut()
        .insert(SEAL_ANNOTATION.into(), format!("{}:{}", keys.current.id, hex(&m)));
}

/// Whether `task` carries a seal, made by one of `keys`, of exactly its namespace, name, row
/// annotation and requester.
pub fn verify(keys: &Keys, task: &AgentTask) -> bool {
    holds(keys, task, SEAL_ANNOTATION, &message(task))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::tokens::auth::Key;

    fn keys(id: &str, byte: u8) -> Keys {
        Keys {
            current: Key {
                id: id.into(),
                secret: vec![byte; 32],
            },
            previous: vec![],
        }
    }

    #[test]
    fn only_the_broker_s_sub_tasks_carry_its_mark() {
        let k = keys("k1", 7);
        let mut child = task("wf-1", None, "00000000-0000-0000-0000-000000000001");
        child.spec.parent = Some("wf".into());
        assert!(!is_broker_subtask(&k, &child), "spec.parent alone is not enough");
        seal_subtask(&k, &mut child);
        assert!(is_broker_subtask(&k, &child));
        let mut moved = child.clone();
        moved.spec.parent = Some("other".into());
        assert!(!is_broker_subtask(&k, &moved), "the mark covers the parent");
        let mut renamed = child.clone();
        renamed.metadata.name = Some("wf-2".into());
        assert!(!is_broker_subtask(&k, &renamed), "and the name");
        assert!(
            !is_broker_subtask(&keys("k1", 8), &child),
            "another key's mark is not the broker's"
        );
        let rotated = Keys {
            current: keys("k2", 9).current,
            previous: vec![k.current.clone()],
        };
        assert!(is_broker_subtask(&rotated, &child), "a rotated key still vouches");
        assert!(!verify(&k, &child), "a sub-task mark is not a requester seal");
    }

    fn task(name: &str, row: Option<&str>, user: &str) -> AgentTask {
        let mut t: AgentTask = serde_json::from_value(json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"role": "Research", "type": "cogo.echo", "requester": {"userId": user}},
        }))
        .unwrap();
        if let Some(row) = row {
            t.annotations_mut().insert(ROW_ANNOTATION.into(), row.into());
        }
        t
    }

    #[test]
    fn a_seal_holds_only_for_what_it_sealed() {
        let k = keys("k1", 1);
        let mut t = task("row-1", Some("r1"), "alice");
        assert!(!verify(&k, &t), "no seal");
        seal(&k, &mut t);
        assert!(verify(&k, &t));

        // Copied onto another task, or with anything it covers changed, it no longer holds.
        let seal_text = t.annotations()[SEAL_ANNOTATION].clone();
        for mut other in [
            task("row-2", Some("r1"), "alice"),
            task("row-1", Some("r2"), "alice"),
            task("row-1", Some("r1"), "mallory"),
            task("row-1", None, "alice"),
        ] {
            other
                .annotations_mut()
                .insert(SEAL_ANNOTATION.into(), seal_text.clone());
            assert!(!verify(&k, &other), "{:?}", other.metadata);
        }
        let mut moved = t.clone();
        moved.metadata.namespace = Some("other".into());
        assert!(!verify(&k, &moved));

        // Another operator's keys, an unknown key id, garbage: refused.
        assert!(!verify(&keys("k1", 2), &t));
        assert!(!verify(&keys("k2", 1), &t));
        for bad in ["", "k1", "k1:zz", "k1:abc", ":"] {
            let mut b = t.clone();
            b.annotations_mut().insert(SEAL_ANNOTATION.into(), bad.into());
            assert!(!verify(&k, &b), "{bad:?}");
        }

        // A rotated-out key still verifies.
        let mut rotated = keys("k2", 2);
        rotated.previous.push(k.current.clone());
        assert!(verify(&rotated, &t));
    }
}
