//! One span per task attempt, `cogo.task.attempt`: it starts when the broker leases the task to
//! a pod and ends when the attempt does: the pod's outcome recorded by the broker, or the
//! controller ending it (a lost lease, the deadline, a cancellation), or its lease released for
//! any other reason (the task deleted or found finished). The pod is handed its `traceparent` with the lease, so the spans of
//! the agent, the Executor and the worker that run the attempt are its children. A task created
//! inside a trace (its annotation [`TRACEPARENT_ANNOTATION`]) has its attempts traced in that
//! trace; any other attempt starts a trace of its own.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use cogo_api::task::{AgentTask, TRACEPARENT_ANNOTATION, TaskPhase, is_traceparent};
use kube::ResourceExt;
use tracing::{Span, field::Empty};

/// Attempt spans not yet ended, by namespace and task name.
#[derive(Default)]
pub struct AttemptSpans {
    open: Mutex<HashMap<(String, String), (i32, Span)>>,
    /// The table's size after its last pruning: it is pruned again once it has doubled.
    pruned_len: AtomicUsize,
}

/// The `traceparent` a task was created with, when well formed.
pub fn creator_traceparent(task: &AgentTask) -> Option<&str> {
    task.metadata
        .annotations
        .as_ref()?
        .get(TRACEPARENT_ANNOTATION)
        .map(String::as_str)
        .filter(|t| is_traceparent(t))
}

impl AttemptSpans {
    /// Starts the span of attempt `attempt` of `task`, leased to `pod` of `agent`, and returns
    /// the `traceparent` to hand the pod: the span's own, or, when spans are not exported
    /// here, the one the task was created with, so the trace still reaches the pod. A span left
    /// open by an earlier attempt of the task ends as `LeaseLost`. `held` says whether a task
    /// still holds a lease; spans of tasks that hold none are ended as the table grows.
    pub fn start(
        &self,
        task: &AgentTask,
        (agent, pod): (&str, &str),
        attempt: i32,
        held: impl Fn(&str, &str) -> bool,
    ) -> Option<String> {
        let ns = task.namespace().unwrap_or_default();
        let name = task.name_any();
        let span = tracing::info_span!(
            target: "cogo::trace",
            "cogo.task.attempt",
            otel.kind = "server",
            cogo.task.namespace = %ns,
            cogo.task.name = %name,
            cogo.task.type = %task.spec.task_type,
            cogo.task.attempt = attempt,
            cogo.agent = %agent,
            k8s.pod.name = %pod,
            cogo.task.outcome = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let creator = creator_traceparent(task);
        cogo_telemetry::follow(&span, creator);
        let Some(own) = cogo_telemetry::traceparent(&span) else {
            return creator.map(str::to_string);
        };
        let Ok(mut open) = self.open.lock() else {
            return Some(own);
        };
        if let Some((_, old)) = open.insert((ns, name), (attempt, span)) {
            old.record("cogo.task.outcome", "LeaseLost");
        }
        if open.len() > 2 * self.pruned_len.load(Ordering::Relaxed) + 64 {
            open.retain(|(ns, name), (_, span)| {
                let keep = held(ns, name);
                if !keep {
                    span.record("cogo.task.outcome", "LeaseLost");
                }
                keep
            });
            self.pruned_len.store(open.len(), Ordering::Relaxed);
        }
        Some(own)
    }

    /// Ends the span of attempt `attempt` of `ns/name` with the phase its outcome left the
    /// task in (Pending: it will be retried) and the status message.
    pub fn end(&self, (ns, name): (&str, &str), attempt: i32, phase: TaskPhase, message: Option<&str>) {
        let Ok(mut open) = self.open.lock() else { return };
        let key = (ns.to_string(), name.to_string());
        if open.get(&key).is_none_or(|(a, _)| *a != attempt) {
            return;
        }
        let Some((_, span)) = open.remove(&key) else {
            return;
        };
        drop(open);
        let outcome = match phase {
            TaskPhase::Pending => "Retrying",
            p => p.as_str(),
        };
        span.record("cogo.task.outcome", outcome);
        if phase == TaskPhase::Succeeded {
            span.record("otel.status_code", "OK");
        } else if phase != TaskPhase::Cancelled {
            span.record("otel.status_code", "ERROR");
            if let Some(m) = message {
                span.record("otel.status_description", m);
            }
        }
    }

    /// Ends the span of `ns/name`, if one is open, as `Ended`: its lease was released without
    /// an outcome recorded here (the task was deleted, or found finished).
    pub fn close(&self, ns: &str, name: &str) {
        let span = self
            .open
            .lock()
            .ok()
            .and_then(|mut open| open.remove(&(ns.to_string(), name.to_string())));
        if let Some((_, span)) = span {
            span.record("cogo.task.outcome", "Ended");
        }
    }

    /// Spans not yet ended.
    pub fn len(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Whether every span has ended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cogo_telemetry::testing::{SpanData, SpanId, Status, Value, with_exporter};

    const CREATOR: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn task(name: &str, traceparent: Option<&str>) -> AgentTask {
        let mut t = AgentTask::new(
            name,
            serde_json::from_value(serde_json::json!({"agent": "a", "type": "cogo.echo"})).unwrap(),
        );
        t.metadata.namespace = Some("ns".into());
        if let Some(tp) = traceparent {
            t.metadata.annotations = Some([(TRACEPARENT_ANNOTATION.to_string(), tp.to_string())].into());
        }
        t
    }

    fn attr(s: &SpanData, key: &str) -> Option<Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    }

    #[test]
    fn an_attempt_is_a_child_of_its_creator_and_ends_with_its_outcome() {
        let spans = AttemptSpans::default();
        let (handed, done) = with_exporter(|| {
            let handed = spans.start(&task("t", Some(CREATOR)), ("a", "a-0"), 1, |_, _| true);
            assert_eq!(spans.len(), 1);
            spans.end(("ns", "t"), 2, TaskPhase::Succeeded, None);
            assert_eq!(spans.len(), 1, "another attempt's outcome ends nothing");
            spans.end(("ns", "t"), 1, TaskPhase::Failed, Some("boom"));
            handed
        });
        assert!(spans.is_empty());
        assert_eq!(done.len(), 1);
        let s = &done[0];
        assert_eq!(s.name, "cogo.task.attempt");
        assert_eq!(
            s.span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(s.parent_span_id.to_string(), "b7ad6b7169203331");
        assert_eq!(attr(s, "cogo.task.name"), Some("t".into()));
        assert_eq!(attr(s, "cogo.task.type"), Some("cogo.echo".into()));
        assert_eq!(attr(s, "cogo.task.attempt"), Some(1i64.into()));
        assert_eq!(attr(s, "cogo.task.outcome"), Some("Failed".into()));
        assert_eq!(s.status, Status::error("boom"));
        // The pod is handed the attempt's own span.
        assert_eq!(
            handed,
            Some(format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                s.span_context.span_id()
            ))
        );
    }

    #[test]
    fn an_attempt_without_a_creator_starts_its_own_trace_and_a_new_attempt_ends_the_old() {
        let spans = AttemptSpans::default();
        let ((), done) = with_exporter(|| {
            spans.start(&task("t", Some("00-garbage")), ("a", "a-0"), 1, |_, _| true);
            spans.start(&task("t", None), ("a", "a-1"), 2, |_, _| true);
            spans.end(("ns", "t"), 2, TaskPhase::Pending, Some("retrying"));
        });
        assert_eq!(done.len(), 2);
        assert_eq!(attr(&done[0], "cogo.task.outcome"), Some("LeaseLost".into()));
        assert_eq!(attr(&done[1], "cogo.task.outcome"), Some("Retrying".into()));
        for s in &done {
            assert_eq!(s.parent_span_id, SpanId::INVALID);
        }
        assert_ne!(
            done[0].span_context.trace_id(),
            done[1].span_context.trace_id(),
            "one trace per attempt"
        );
    }

    #[test]
    fn spans_of_tasks_no_longer_held_end_as_the_table_grows() {
        let spans = AttemptSpans::default();
        let ((), done) = with_exporter(|| {
            for i in 0..64 {
                spans.start(&task(&format!("t{i}"), None), ("a", "a-0"), 1, |_, _| false);
            }
            assert_eq!(spans.len(), 64, "a small table is not pruned");
            // The 65th start prunes: only t0 and the new one are still held.
            spans.start(&task("t64", None), ("a", "a-0"), 1, |_, name| {
                name == "t0" || name == "t64"
            });
        });
        assert_eq!(spans.len(), 2);
        assert_eq!(done.len(), 63);
        assert!(
            done.iter()
                .all(|s| attr(s, "cogo.task.outcome") == Some("LeaseLost".into()))
        );
    }

    #[test]
    fn a_lease_released_without_an_outcome_ends_its_span() {
        let scheduler = crate::tasks::scheduler::Scheduler::new(
            std::time::Duration::from_secs(15),
            std::sync::Arc::new(crate::metrics::Metrics::default()),
        );
        let ((), done) = with_exporter(|| {
            scheduler
                .attempts
                .start(&task("t", None), ("a", "a-0"), 1, |_, _| true);
            scheduler
                .attempts
                .start(&task("u", None), ("a", "a-0"), 1, |_, _| true);
            scheduler.release("ns", "t");
            assert_eq!(scheduler.attempts.len(), 1);
        });
        assert_eq!(done.len(), 1);
        assert_eq!(attr(&done[0], "cogo.task.name"), Some("t".into()));
        assert_eq!(attr(&done[0], "cogo.task.outcome"), Some("Ended".into()));
    }

    #[test]
    fn without_export_the_creator_s_traceparent_is_passed_on() {
        let spans = AttemptSpans::default();
        assert_eq!(
            spans.start(&task("t", Some(CREATOR)), ("a", "a-0"), 1, |_, _| true),
            Some(CREATOR.to_string())
        );
        assert_eq!(
            spans.start(&task("u", Some("00-bad")), ("a", "a-0"), 1, |_, _| true),
            None
        );
        assert!(spans.is_empty(), "nothing is kept when nothing is exported");
    }
}
