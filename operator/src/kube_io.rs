//! How the operator writes to the API server, the same way from every controller and from the
//! broker: server-side apply under [`FIELD_MANAGER`] for objects and for the status of agents
//! and workers; a task's status, which the operator owns whole, replaced by a JSON patch fenced
//! by its resourceVersion, so a stale view never wins; a status written only when it changed;
//! and Events. Everything here is I/O; what to write is decided by the pure modules.

use std::{fmt::Debug, time::Duration};

use cogo_api::{AgentTask, AgentTaskStatus, conditions};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        events::{Event, EventType, Recorder},
        reflector::{Store, store::WriterDropped},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tracing::{info, warn};

use crate::{Error, Result, metrics::Metrics, validate::Invalid};

/// The field manager of every server-side apply the operator makes, and the controller name
/// of its Events.
pub const FIELD_MANAGER: &str = "cogo-operator";

/// Server-side applies `obj` with the operator's field manager, taking over conflicting fields.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    Ok(apply_fields(api, &name, obj).await?)
}

/// Server-side applies `body` (the fields the operator owns of the object `name`, such as its
/// owner references) with the operator's field manager, taking over conflicting fields.
pub async fn apply_fields<K>(api: &Api<K>, name: &str, body: &(impl Serialize + Debug)) -> kube::Result<K>
where
    K: Resource + DeserializeOwned + Clone + Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(yaml_safe(body)?),
    )
    .await
}

/// `body` as JSON that the API server's YAML reader takes: a server-side apply's body is read
/// as YAML, which refuses some characters JSON allows unescaped (DEL, the C1 controls but NEL,
/// U+FFFE and U+FFFF), so a task result holding one could never be written. They are written
/// as `\uXXXX` escapes, which mean the same character in both.
pub fn yaml_safe(body: &impl Serialize) -> kube::Result<Box<serde_json::value::RawValue>> {
    let text = serde_json::to_string(body).map_err(kube::Error::SerdeError)?;
    let printable =
        |c: char| !matches!(c, '\u{7f}'..='\u{84}' | '\u{86}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}');
    let text = if text.chars().all(printable) {
        text
    } else {
        text.chars()
            .fold(String::with_capacity(text.len() + 16), |mut out, c| {
                if printable(c) {
                    out.push(c);
                } else {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                }
                out
            })
    };
    serde_json::value::RawValue::from_string(text).map_err(kube::Error::SerdeError)
}

/// Whether every field of `desired` is present in `live` with the same value: objects by key
/// (extra keys in `live`, such as defaults the API server filled in, are fine), lists by
/// position with the same length, scalars by equality.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            d.iter().all(|(k, v)| l.get(k).is_some_and(|lv| is_subset(v, lv)))
        }
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (d, l) => d == l,
    }
}

/// Applies `desired` unless `live` (the object as last read) already holds all of it, so an
/// unchanged world costs no write. Returns the object as it now is and the number of writes
/// made (0 or 1).
pub async fn apply_if_changed<K>(api: &Api<K>, desired: &K, live: Option<K>) -> Result<(K, u64)>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    if let Some(live) = live {
        let d = serde_json::to_value(desired).map_err(|source| Error::Serialize {
            what: "desired object",
            source,
        })?;
        let l = serde_json::to_value(&live).map_err(|source| Error::Serialize {
            what: "live object",
            source,
        })?;
        if is_subset(&d, &l) {
            return Ok((live, 0));
        }
    }
    Ok((apply(api, desired).await?, 1))
}

/// Deletes the object `name`; one that is already gone is fine.
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + DeserializeOwned + Clone + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `status` into the object's status subresource with server-side apply; with a
/// `resource_version`, only if the object is still at that version (409 otherwise).
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl Serialize,
    resource_version: Option<&str>,
) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    let mut body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(rv) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(yaml_safe(&body)?),
    )
    .await
}

/// Writes a task's status, with its kstatus standing settled (see
/// [`settle_standing`](crate::tasks::settle_standing)), only if the task is still at
/// `resource_version` (409 otherwise), so a stale view never overwrites a newer state.
pub async fn write_task_status(
    api: &Api<AgentTask>,
    name: &str,
    resource_version: Option<&str>,
    status: &AgentTaskStatus,
) -> kube::Result<AgentTask> {
    let mut status = status.clone();
    crate::tasks::settle_standing(&mut status, &Time(jiff::Timestamp::now()));
    replace_status(api, name, &status, resource_version).await
}

/// Replaces the object's whole status with `status` by a JSON patch (RFC 6902) that, given a
/// `resource_version`, first sets it, so the write succeeds only if the object is still at
/// that version (409 otherwise). It costs the API server as much as a server-side apply of the
/// same status (measured: see the README's Performance section), needs no YAML-safe escaping,
/// and keeps `status` as it is, nulls inside a result included.
pub async fn replace_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl Serialize,
    resource_version: Option<&str>,
) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    let patch = status_patch(status, resource_version).map_err(kube::Error::SerdeError)?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch_status(name, &params, &Patch::<()>::Json(patch)).await
}

/// The JSON patch [`replace_status`] sends.
pub fn status_patch(
    status: &impl Serialize,
    resource_version: Option<&str>,
) -> serde_json::Result<json_patch::Patch> {
    let mut ops = Vec::new();
    if let Some(rv) = resource_version {
        ops.push(serde_json::json!({"op": "replace", "path": "/metadata/resourceVersion", "value": rv}));
    }
    ops.push(serde_json::json!({"op": "add", "path": "/status", "value": status}));
    serde_json::from_value(Value::Array(ops))
}

/// Writes `next` as the object's status when it differs from `previous`, counting the write:
/// with a `resource_version`, replaced whole and fenced by it ([`replace_status`]), otherwise
/// applied ([`apply_status`]);
/// when the spec is invalid and the `watched` condition's reason or message changed, also
/// publishes a Warning Event (once per cause, not once per reconcile). Returns the object as
/// written, or None when nothing needed writing.
pub async fn update_status<K, S>(
    (client, recorder, metrics): (&Client, &Recorder, &Metrics),
    obj: &K,
    watched: &str,
    (previous, previous_conditions): (&S, &[Condition]),
    (next, next_conditions): (&S, &[Condition]),
    invalid: Option<&Invalid>,
    resource_version: Option<&str>,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + Debug,
    S: Serialize + PartialEq,
{
    if next == previous {
        return Ok(None);
    }
    let kind = K::kind(&());
    let ns = obj.meta().namespace.as_deref().unwrap_or_default();
    let name = obj.meta().name.as_deref().unwrap_or_default();
    let api = Api::<K>::namespaced(client.clone(), ns);
    // A fenced write is of a status the operator owns whole (a task's): replaced, the cheaper
    // write. Others may share their status with the scaler's fields: applied.
    let written = match resource_version {
        Some(rv) => replace_status(&api, name, next, Some(rv)).await?,
        None => apply_status(&api, name, next, None).await?,
    };
    metrics.status_written(&kind);
    let ready = conditions::find(next_conditions, watched);
    info!(
        condition = watched,
        reason = ready.map(|c| c.reason.as_str()),
        "status updated"
    );
    if let Some(invalid) = invalid {
        let before = conditions::find(previous_conditions, watched);
        if before.map(|c| (&c.reason, &c.message)) != ready.map(|c| (&c.reason, &c.message)) {
            warn_invalid(recorder, obj, invalid).await?;
        }
    }
    Ok(Some(written))
}

/// Publishes a Warning Event saying why the object's spec cannot be carried out.
pub async fn warn_invalid<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    invalid: &Invalid,
) -> Result<()> {
    let event = Event {
        type_: EventType::Warning,
        reason: invalid.reason.to_string(),
        note: Some(invalid.message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &obj.object_ref(&()))
        .await
        .map_err(Error::Event)
}

/// Publishes an Event about a task's transition; a failure to publish is logged, never fatal
/// (the transition is in status already).
pub async fn publish_task_event(
    recorder: &Recorder,
    task: &AgentTask,
    (type_, reason): (EventType, &str),
    note: Option<&str>,
    action: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: note.map(|m| m.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &task.object_ref(&())).await {
        warn!(error = %e, "cannot publish the task's Event");
    }
}

/// How long one watch request lasts before the API server ends it and the watcher resumes from
/// the last resourceVersion. Kept short so a watch whose connection died without a word (an API
/// server killed mid-stream, a dropped network path) is noticed within about a minute by the
/// watcher's idle timeout (this plus a few seconds) instead of five.
pub const WATCH_TIMEOUT_SECS: u32 = 60;

/// The watcher settings every watch of the operator uses (see [`WATCH_TIMEOUT_SECS`]).
pub fn watch_config() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default().timeout(WATCH_TIMEOUT_SECS)
}

/// Resolves once `store`'s watch has listed everything, however many tasks wait for it at
/// once. (`Store::wait_until_ready` wakes only the waiter that polled it last, so one of two
/// waiters, say a controller's runner and anything sharing its store, would wait forever:
/// each waiter here polls again every 100 ms.)
pub async fn listed<K>(store: &Store<K>) -> std::result::Result<(), WriterDropped>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(ready) = tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
            return ready;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::is_subset;

    #[test]
    fn a_status_patch_sets_the_version_first_and_keeps_the_status_as_it_is() {
        let status = json!({"phase": "Succeeded", "result": {"kept": null, "list": [null, 1]}, "pod": "p"});
        let patch = serde_json::to_value(super::status_patch(&status, Some("41")).unwrap()).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "replace", "path": "/metadata/resourceVersion", "value": "41"},
                {"op": "add", "path": "/status", "value": status},
            ])
        );
        // Applied to a task with a status the new one no longer has parts of, it leaves exactly
        // the new status, nulls inside the result included.
        let mut task = json!({"metadata": {"name": "t", "resourceVersion": "41"},
                              "status": {"phase": "Running", "retryAfter": "2026-01-01T00:00:00Z", "pod": "q"}});
        json_patch::patch(&mut task, &super::status_patch(&status, Some("41")).unwrap().0).unwrap();
        assert_eq!(task["status"], status);
        let unfenced = serde_json::to_value(super::status_patch(&status, None).unwrap()).unwrap();
        assert_eq!(unfenced.as_array().map(Vec::len), Some(1), "{unfenced}");
    }

    #[tokio::test]
    async fn every_waiter_learns_that_a_store_is_listed() {
        use kube::runtime::{reflector, watcher};
        let (store, mut writer) = reflector::store::<k8s_openapi::api::core::v1::ConfigMap>();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { super::listed(&store).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for w in waiters {
            let done = tokio::time::timeout(std::time::Duration::from_secs(5), w).await;
            assert!(matches!(done, Ok(Ok(Ok(())))), "a waiter was left waiting");
        }
    }

    #[test]
    fn bodies_escape_what_yaml_refuses_and_keep_their_meaning() {
        let value = serde_json::json!({"text": "a\u{7f}b\u{85}c\u{9f}d\u{fffe}é한\n"});
        let raw = super::yaml_safe(&value).unwrap();
        let text = raw.get();
        assert!(
            text.contains("\\u007f") && text.contains("\\u009f") && text.contains("\\ufffe"),
            "{text}"
        );
        assert!(
            text.contains('\u{85}') && text.contains("é한"),
            "NEL and printable text stay as they are"
        );
        assert!(
            !text
                .chars()
                .any(|c| matches!(c, '\u{7f}' | '\u{9f}' | '\u{fffe}'))
        );
        let back: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, value, "the same value");
    }

    #[test]
    fn subset_ignores_server_defaults_but_not_changes() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 6003, "name": "http"}]}});
        let live = json!({"spec": {"replicas": 2, "ports": [{"port": 6003, "name": "http", "protocol": "TCP"}], "sessionAffinity": "None"}, "status": {}});
        assert!(is_subset(&desired, &live));
        let scaled = json!({"spec": {"replicas": 3, "ports": [{"port": 6003, "name": "http"}]}});
        assert!(!is_subset(&scaled, &live), "a changed value");
        let extra_port =
            json!({"spec": {"replicas": 2, "ports": [{"port": 6003, "name": "http"}, {"port": 1}]}});
        assert!(!is_subset(&extra_port, &live), "a longer list");
        assert!(
            !is_subset(&json!({"spec": {"new": true}}), &live),
            "a missing key"
        );
    }
}
