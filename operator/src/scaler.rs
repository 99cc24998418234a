//! The queue-depth scaler. Every [`PERIOD`] the leader looks at each CogoAgent's queue (tasks
//! waiting for it, by name or role, and tasks its pods hold) and:
//!
//! - writes `status.queue` and `status.tasks` when they changed, at most every
//!   [`QUEUE_WRITE_EVERY`] per agent;
//! - with `spec.autoscaling`, sizes the pool: `ceil((pending + running) / target)` pods within
//!   `minReplicas` and `maxReplicas`, recorded in `status.autoscaling.desiredReplicas`, which
//!   the agent controller gives its Deployment. More pods come at once; fewer only once every
//!   count wanted within the scale-down window was lower ([`Stabilizer`]), so a queue that
//!   comes and goes does not make pods come and go. With `minReplicas: 0` an idle pool goes to
//!   zero pods and the first queued task brings one back.
//!
//! `status.tasks` counts the agent's tasks as this replica wrote their final status
//! ([`Tally`]), added to what the status held when it began to lead; tasks that finished in
//! the last seconds before a failover, before their count was written, are not counted.
//!
//! The scaler owns these fields under its own field manager ([`FIELD_MANAGER`]); the
//! agent controller writes the rest of the status and never sends them, so neither undoes the
//! other's writes.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use std::fmt::Debug;

use cogo_api::{
    AutoscalingSpec, AutoscalingStatus, CogoAgent, CogoWorker,
    agent::{QueueStatus, TaskTotals},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType},
};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::{
    controller::Context,
    metrics::PoolFigures,
    tasks::{queue::Waiting, scheduler::Finished},
};

/// How often the scaler looks at the queues.
pub const PERIOD: Duration = Duration::from_secs(5);

/// The least time between two writes of one agent's `status.queue`.
pub const QUEUE_WRITE_EVERY: Duration = Duration::from_secs(10);

/// How long the scaler trusts its own last decision over a watch cache that does not show it
/// yet.
pub const CACHE_LAG: Duration = Duration::from_secs(30);

/// The field manager of `status.queue`, `status.tasks` and `status.autoscaling`.
pub const FIELD_MANAGER: &str = "cogo-operator-scaler";

/// Pods `bounds` want for `load` tasks queued or running: one per `targetQueuedTasksPerPod`,
/// rounded up, within `minReplicas` and `maxReplicas`; never zero while a task waits.
pub fn wanted(load: usize, bounds: &AutoscalingSpec) -> i32 {
    let per_pod = usize::try_from(bounds.target_queued_tasks_per_pod.max(1)).unwrap_or(1);
    let pods = i32::try_from(load.div_ceil(per_pod)).unwrap_or(i32::MAX);
    let least = if load > 0 {
        bounds.min_replicas.max(1)
    } else {
        bounds.min_replicas
    };
    pods.clamp(least, bounds.max_replicas.max(least))
}

/// An agent, by namespace and name.
type Key = (String, String);

/// Keeps the counts the scaler wanted for each agent within the scale-down window, so a pool
/// shrinks only to the highest of them.
pub struct Stabilizer {
    window: Duration,
    seen: HashMap<Key, VecDeque<(Instant, i32)>>,
}

impl Stabilizer {
    /// A stabilizer that remembers `window` of wanted counts.
    pub fn new(window: Duration) -> Self {
        Stabilizer {
            window,
            seen: HashMap::new(),
        }
    }

    /// The pods `key` should run, now that it runs `current` and `wanted` are wanted: more at
    /// once, fewer only down to the most wanted within the window. An agent seen for the first
    /// time (a new leader, say) counts its `current` as wanted now, so it does not shrink
    /// before a whole window has passed.
    pub fn decide(&mut self, key: &Key, current: i32, wanted: i32, now: Instant) -> i32 {
        let seen = self
            .seen
            .entry(key.clone())
            .or_insert_with(|| VecDeque::from([(now, current)]));
        seen.push_back((now, wanted));
        while seen
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.window)
        {
            seen.pop_front();
        }
        if wanted >= current {
            return wanted;
        }
        let highest = seen.iter().map(|(_, w)| *w).max().unwrap_or(wanted);
        highest.min(current)
    }

    /// Forgets the agents not in `live`.
    pub fn retain(&mut self, live: &HashSet<Key>) {
        self.seen.retain(|k, _| live.contains(k));
    }
}

/// Each agent's finished tasks: what its status held when this replica first saw it, plus
/// what this replica counted since, where it wrote each final status
/// ([`Scheduler::count_finished`](crate::tasks::Scheduler::count_finished)).
#[derive(Default)]
pub struct Tally {
    /// What each agent's status held when first seen.
    base: HashMap<Key, Option<TaskTotals>>,
}

impl Tally {
    /// The totals of `agent`, given what this replica `counted`; None while there is nothing
    /// to say.
    pub fn totals(&mut self, agent: &CogoAgent, counted: Finished) -> Option<TaskTotals> {
        let key = (agent.namespace().unwrap_or_default(), agent.name_any());
        let base = self
            .base
            .entry(key)
            .or_insert_with(|| agent.status.as_ref().and_then(|s| s.tasks.clone()))
            .clone();
        if base.is_none() && counted == Finished::default() {
            return None;
        }
        let base = base.unwrap_or_default();
        // The earlier mean stands for the earlier finished tasks.
        let before = base.succeeded + base.failed;
        let (sum, n) = match base.average_duration_ms {
            Some(avg) => (
                avg.saturating_mul(before) + counted.duration_ms,
                before + counted.timed,
            ),
            None => (counted.duration_ms, counted.timed),
        };
        Some(TaskTotals {
            succeeded: base.succeeded + counted.succeeded,
            failed: base.failed + counted.failed,
            average_duration_ms: (n > 0).then(|| sum / n),
        })
    }

    /// Forgets the agents not in `live`.
    fn retain(&mut self, live: &HashSet<Key>) {
        self.base.retain(|k, _| live.contains(k));
    }
}

/// A resource whose pool the scaler sizes: a CogoAgent or a CogoWorker.
pub trait Scaled:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// What its queue holds, in messages: "tasks" or "jobs".
    const UNITS: &'static str;
    /// Its `spec.autoscaling`.
    fn bounds(&self) -> Option<&AutoscalingSpec>;
    /// The pods it should run now.
    fn desired(&self) -> i32;
    /// The queue, the finished tasks and the decision its status holds.
    fn recorded(&self) -> (Option<QueueStatus>, Option<TaskTotals>, Option<AutoscalingStatus>);
}

impl Scaled for CogoAgent {
    const UNITS: &'static str = "tasks";
    fn bounds(&self) -> Option<&AutoscalingSpec> {
        self.spec.autoscaling.as_ref()
    }
    fn desired(&self) -> i32 {
        self.desired_replicas()
    }
    fn recorded(&self) -> (Option<QueueStatus>, Option<TaskTotals>, Option<AutoscalingStatus>) {
        self.status
            .as_ref()
            .map(|s| (s.queue.clone(), s.tasks.clone(), s.autoscaling.clone()))
            .unwrap_or_default()
    }
}

impl Scaled for CogoWorker {
    const UNITS: &'static str = "jobs";
    fn bounds(&self) -> Option<&AutoscalingSpec> {
        self.spec.autoscaling.as_ref()
    }
    fn desired(&self) -> i32 {
        self.desired_replicas()
    }
    fn recorded(&self) -> (Option<QueueStatus>, Option<TaskTotals>, Option<AutoscalingStatus>) {
        self.status
            .as_ref()
            .map(|s| (s.queue.clone(), None, s.autoscaling.clone()))
            .unwrap_or_default()
    }
}

/// The scaler's state across rounds, for one kind of pool.
pub struct Scaler {
    stabilizer: Stabilizer,
    /// When the scaler last wrote each pool's status.
    written: HashMap<Key, Instant>,
    /// The decision last written for each autoscaling pool, and when: the watch cache may not
    /// show it yet at the next round.
    decided: HashMap<Key, (AutoscalingStatus, Instant)>,
    /// The pools whose figures are exported as metrics.
    exported: HashSet<Key>,
}

/// What one round decided for one pool: the fields to write, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The queue to record.
    pub queue: QueueStatus,
    /// The finished tasks to record (agents), once there are any.
    pub tasks: Option<TaskTotals>,
    /// The pods to run, with the time of the last change, when the pool autoscales.
    pub autoscaling: Option<AutoscalingStatus>,
    /// The pods it ran before, when this round changes them.
    pub scaled_from: Option<i32>,
}

impl Scaler {
    /// A scaler whose pools shrink after `scale_down_window`.
    pub fn new(scale_down_window: Duration) -> Self {
        Scaler {
            stabilizer: Stabilizer::new(scale_down_window),
            written: HashMap::new(),
            decided: HashMap::new(),
            exported: HashSet::new(),
        }
    }

    /// Decides for `pool`, whose queue is `(pending, running)` and finished tasks `tasks` at
    /// `now` (`at` as wall-clock time); None when nothing needs writing.
    pub fn decide<K: Scaled>(
        &mut self,
        pool: &K,
        (pending, running): (usize, usize),
        tasks: Option<TaskTotals>,
        (now, at): (Instant, &Time),
    ) -> Option<Decision> {
        let key = (pool.namespace().unwrap_or_default(), pool.name_any());
        let (recorded_queue, recorded_tasks, recorded) = pool.recorded();
        let queue = QueueStatus {
            pending: i64::try_from(pending).unwrap_or(i64::MAX),
            running: i64::try_from(running).unwrap_or(i64::MAX),
        };
        // A decision written moments ago stands for what the cache shows until it shows it,
        // so one change is made (and announced) once.
        let (recorded, current) = match (self.decided.get(&key), pool.bounds()) {
            (Some((mine, when)), Some(bounds))
                if now.duration_since(*when) < CACHE_LAG && recorded.as_ref() != Some(mine) =>
            {
                let current =
                    cogo_api::agent::scaled_replicas(mine.desired_replicas, Some(bounds), Some(mine));
                (Some(mine.clone()), current)
            }
            _ => (recorded, pool.desired()),
        };
        let (autoscaling, scaled_from) = match pool.bounds() {
            Some(bounds) => {
                let decided = self
                    .stabilizer
                    .decide(&key, current, wanted(pending + running, bounds), now);
                let changed = decided != current;
                let last_scale_time = if changed {
                    Some(at.clone())
                } else {
                    recorded.as_ref().and_then(|r| r.last_scale_time.clone())
                };
                let next = AutoscalingStatus {
                    desired_replicas: decided,
                    last_scale_time,
                };
                (Some(next), changed.then_some(current))
            }
            None => (None, None),
        };
        // No queue recorded reads as an empty one, and no decision recorded as
        // `spec.replicas`: an idle pool the scaler never changed needs no write.
        let queue_stale = recorded_queue.unwrap_or_default() != queue || recorded_tasks != tasks;
        let queue_due = self
            .written
            .get(&key)
            .is_none_or(|at| now.duration_since(*at) >= QUEUE_WRITE_EVERY);
        let scaling_stale = scaled_from.is_some() || recorded.is_some() && autoscaling != recorded;
        let write = scaling_stale || (queue_stale && queue_due);
        if !write {
            return None;
        }
        if let Some(a) = &autoscaling {
            self.decided.insert(key.clone(), (a.clone(), now));
        }
        self.written.insert(key, now);
        Some(Decision {
            queue,
            tasks,
            autoscaling,
            scaled_from,
        })
    }

    /// Forgets the pools not in `live`.
    pub fn retain(&mut self, live: &HashSet<Key>) {
        self.stabilizer.retain(live);
        self.written.retain(|k, _| live.contains(k));
        self.decided.retain(|k, _| live.contains(k));
    }
}

/// Writes `decision` into the pool's status under [`FIELD_MANAGER`]: every field the scaler
/// owns, so one it no longer sends (`autoscaling` once the spec drops it) is removed.
async fn write<K: Scaled>(ctx: &Context, pool: &K, decision: &Decision) -> kube::Result<()> {
    let mut status = serde_json::json!({ "queue": decision.queue });
    if let Some(t) = &decision.tasks {
        status["tasks"] = serde_json::to_value(t).unwrap_or_default();
    }
    if let Some(a) = &decision.autoscaling {
        status["autoscaling"] = serde_json::to_value(a).unwrap_or_default();
    }
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    api.patch_status(
        &pool.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    ctx.metrics.status_written(&K::kind(&()));
    Ok(())
}

/// Publishes a Normal Event `ScaledUp` or `ScaledDown` on the pool, saying from how many pods
/// to how many, and why. (A repeat within minutes folds into the first as a series with a
/// count, as Kubernetes does with Events.)
async fn announce<K: Scaled>(ctx: &Context, pool: &K, decision: &Decision, from: i32) {
    let (Some(to), Some(bounds)) = (&decision.autoscaling, pool.bounds()) else {
        return;
    };
    let units = K::UNITS;
    let note = format!(
        "scaled from {from} to {} pods: {} {units} pending and {} running, {} per pod wanted",
        to.desired_replicas,
        decision.queue.pending,
        decision.queue.running,
        bounds.target_queued_tasks_per_pod
    );
    info!(
        kind = %K::kind(&()),
        namespace = pool.namespace().unwrap_or_default(),
        name = pool.name_any(),
        from,
        to = to.desired_replicas,
        pending = decision.queue.pending,
        running = decision.queue.running,
        "scaled"
    );
    let up = to.desired_replicas > from;
    let event = Event {
        type_: EventType::Normal,
        reason: if up { "ScaledUp" } else { "ScaledDown" }.into(),
        note: Some(note),
        action: if up { "ScaleUp" } else { "ScaleDown" }.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &pool.object_ref(&())).await {
        warn!(error = %e, "cannot publish the scaling Event");
    }
}

/// One round for the pools of one kind: decides for each, with `load` giving its queue and
/// `totals` its finished tasks, and writes what changed.
async fn round<K: Scaled>(
    ctx: &Context,
    scaler: &mut Scaler,
    pools: &[Arc<K>],
    load: impl Fn(&K) -> (Waiting, usize),
    mut totals: impl FnMut(&K) -> Option<TaskTotals>,
) {
    let (now, at) = (Instant::now(), Time(jiff::Timestamp::now()));
    let mut live = HashSet::new();
    for pool in pools {
        if pool.meta().deletion_timestamp.is_some() {
            continue;
        }
        let key = (pool.namespace().unwrap_or_default(), pool.name_any());
        live.insert(key.clone());
        let (waiting, running) = load(pool);
        let pending = waiting.count;
        let decision = scaler.decide(pool.as_ref(), (pending, running), totals(pool), (now, &at));
        let desired = decision
            .as_ref()
            .and_then(|d| d.autoscaling.as_ref())
            .map_or_else(|| pool.desired(), |a| a.desired_replicas);
        let figures = PoolFigures {
            pending,
            running,
            desired,
            oldest_pending_seconds: waiting.oldest.map(|created| (at.0.as_second() - created).max(0)),
        };
        ctx.metrics.set_pool((&K::kind(&()), &key.0, &key.1), figures);
        scaler.exported.insert(key.clone());
        let Some(decision) = decision else {
            continue;
        };
        match write(ctx, pool.as_ref(), &decision).await {
            Ok(()) => {
                if let Some(from) = decision.scaled_from {
                    announce(ctx, pool.as_ref(), &decision, from).await;
                }
            }
            Err(e) => {
                warn!(kind = %K::kind(&()), name = %key.1, error = %e, "cannot write the queue and scale");
                // Written again next round.
                scaler.written.remove(&key);
                scaler.decided.remove(&key);
            }
        }
    }
    for (ns, name) in scaler.exported.iter().filter(|k| !live.contains(*k)) {
        ctx.metrics.forget_pool((&K::kind(&()), ns, name));
    }
    scaler.exported.retain(|k| live.contains(k));
    scaler.retain(&live);
}

/// Runs the scaler until `stop` resolves: agents from the context's store, workers from the
/// CogoWorker controller's cache.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + 'static) {
    let (mut agent_scaler, mut worker_scaler) = (
        Scaler::new(ctx.config.scale_down_window),
        Scaler::new(ctx.config.scale_down_window),
    );
    let mut tally = Tally::default();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        // The task controller's cache, once it has listed every task.
        let Some(tasks) = ctx.tasks.get() else { continue };
        if tokio::time::timeout(PERIOD, crate::kube_io::listed(tasks))
            .await
            .is_err()
        {
            continue;
        }
        let agents = ctx.agents.state();
        let scheduler = &ctx.scheduler;
        round(
            &ctx,
            &mut agent_scaler,
            &agents,
            |a: &CogoAgent| {
                scheduler.queue_of(&a.namespace().unwrap_or_default(), &a.name_any(), a.spec.role)
            },
            |a| {
                let counted = scheduler.finished_of(&a.namespace().unwrap_or_default(), &a.name_any());
                tally.totals(a, counted)
            },
        )
        .await;
        tally.retain(
            &agents
                .iter()
                .map(|a| (a.namespace().unwrap_or_default(), a.name_any()))
                .collect(),
        );
        // The CogoWorker controller's cache, once it has listed every worker.
        let Some(workers) = ctx.workers.get() else {
            continue;
        };
        if tokio::time::timeout(Duration::ZERO, crate::kube_io::listed(workers))
            .await
            .is_ok()
        {
            let workers = workers.state();
            round(
                &ctx,
                &mut worker_scaler,
                &workers,
                |w: &CogoWorker| {
                    scheduler.jobs_of(&w.namespace().unwrap_or_default(), &w.name_any(), w.spec.kind)
                },
                |_| None,
            )
            .await;
            for w in workers.iter().filter(|w| w.metadata.deletion_timestamp.is_none()) {
                let (ns, name) = (w.namespace().unwrap_or_default(), w.name_any());
                let stats = scheduler.worker_stats(&ns, &name);
                ctx.metrics
                    .set_worker((&ns, &name), stats.connected_workers, stats.success_rate_percent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cogo_api::CogoAgentStatus;

    use super::*;
    use crate::testing::agent;

    fn bounds(min: i32, max: i32, target: i32) -> AutoscalingSpec {
        AutoscalingSpec {
            min_replicas: min,
            max_replicas: max,
            target_queued_tasks_per_pod: target,
        }
    }

    fn at(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000 + s).unwrap())
    }

    #[test]
    fn one_pod_per_target_tasks_within_the_bounds_and_never_none_while_a_task_waits() {
        let b = bounds(0, 5, 10);
        for (load, pods) in [
            (0, 0),
            (1, 1),
            (10, 1),
            (11, 2),
            (25, 3),
            (50, 5),
            (51, 5),
            (10_000, 5),
        ] {
            assert_eq!(wanted(load, &b), pods, "{load} tasks");
        }
        assert_eq!(wanted(0, &bounds(2, 5, 10)), 2, "the minimum holds when idle");
        assert_eq!(wanted(3, &bounds(1, 4, 1)), 3);
        assert_eq!(wanted(usize::MAX, &bounds(1, 4, 1)), 4, "no overflow");
    }

    #[test]
    fn pools_grow_at_once_and_shrink_only_after_the_window() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let key = ("team".to_string(), "a".to_string());
        let mut st = Stabilizer::new(Duration::from_secs(60));
        assert_eq!(st.decide(&key, 1, 4, s(0)), 4, "up at once");
        assert_eq!(st.decide(&key, 4, 1, s(10)), 4, "4 was wanted 10 s ago");
        assert_eq!(st.decide(&key, 4, 2, s(50)), 4);
        assert_eq!(st.decide(&key, 4, 1, s(65)), 2, "2 was wanted within the window");
        assert_eq!(
            st.decide(&key, 2, 0, s(111)),
            1,
            "1 at 65 s is still in the window"
        );
        assert_eq!(st.decide(&key, 1, 0, s(180)), 0, "only zeros within the window");
        // A new stabilizer (a new leader) does not shrink what runs before a whole window.
        let mut fresh = Stabilizer::new(Duration::from_secs(60));
        assert_eq!(fresh.decide(&key, 3, 0, s(0)), 3);
        assert_eq!(fresh.decide(&key, 3, 0, s(61)), 0);
        // Forgotten agents start over.
        fresh.retain(&HashSet::new());
        assert_eq!(fresh.decide(&key, 3, 0, s(62)), 3);
    }

    #[test]
    fn the_queue_is_written_when_it_changed_at_most_every_ten_seconds() {
        let mut a = agent("a", "role: Research");
        let mut sc = Scaler::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(
            sc.decide(&a, (0, 0), None, (s(0), &at(0))),
            None,
            "idle, never written: nothing to say"
        );
        let idle = agent(
            "b",
            "role: Research\nreplicas: 1\nautoscaling: {minReplicas: 1, maxReplicas: 3}",
        );
        assert_eq!(
            sc.decide(&idle, (0, 0), None, (s(0), &at(0))),
            None,
            "at spec.replicas, never scaled"
        );
        let d = sc
            .decide(&a, (3, 1), None, (s(0), &at(0)))
            .expect("a queue to show");
        assert_eq!(
            d.queue,
            QueueStatus {
                pending: 3,
                running: 1
            }
        );
        assert_eq!(
            (d.autoscaling, d.scaled_from),
            (None, None),
            "no autoscaling asked"
        );
        a.status = Some(CogoAgentStatus {
            queue: Some(d.queue),
            ..Default::default()
        });
        assert_eq!(sc.decide(&a, (3, 1), None, (s(5), &at(5))), None, "unchanged");
        assert_eq!(
            sc.decide(&a, (0, 4), None, (s(6), &at(6))),
            None,
            "changed, but written 6 s ago"
        );
        let d = sc.decide(&a, (0, 4), None, (s(10), &at(10))).expect("due again");
        assert_eq!(
            d.queue,
            QueueStatus {
                pending: 0,
                running: 4
            }
        );
        assert_eq!(
            sc.decide(&a, (0, 4), None, (s(100), &at(100))),
            Some(d.clone()),
            "until the status shows it"
        );
        a.status.as_mut().unwrap().queue = Some(d.queue);
        assert_eq!(sc.decide(&a, (0, 4), None, (s(200), &at(200))), None);
        let t = TaskTotals {
            succeeded: 1,
            failed: 0,
            average_duration_ms: None,
        };
        let d = sc
            .decide(&a, (0, 4), Some(t.clone()), (s(210), &at(210)))
            .expect("new totals");
        assert_eq!(d.tasks, Some(t), "written with the queue");
    }

    #[test]
    fn autoscaling_agents_get_their_pods_decided_and_recorded() {
        let mut a = agent(
            "a",
            "role: Research\nreplicas: 1\nautoscaling: {minReplicas: 0, maxReplicas: 4, targetQueuedTasksPerPod: 5}",
        );
        let mut sc = Scaler::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        // 12 tasks: 3 pods, at once, from spec.replicas.
        let d = sc.decide(&a, (12, 0), None, (s(0), &at(0))).unwrap();
        assert_eq!(
            d.autoscaling,
            Some(AutoscalingStatus {
                desired_replicas: 3,
                last_scale_time: Some(at(0))
            })
        );
        assert_eq!(d.scaled_from, Some(1));
        a.status = Some(CogoAgentStatus {
            queue: Some(d.queue.clone()),
            autoscaling: d.autoscaling.clone(),
            ..Default::default()
        });
        assert_eq!(a.desired_replicas(), 3);
        // Idle: nothing changes within the window, then the pool goes to zero.
        let quiet = sc.decide(&a, (0, 0), None, (s(20), &at(20))).unwrap();
        assert_eq!(
            quiet.autoscaling,
            a.status.as_ref().unwrap().autoscaling,
            "only the queue changed"
        );
        assert_eq!(quiet.scaled_from, None);
        a.status.as_mut().unwrap().queue = Some(quiet.queue);
        assert_eq!(sc.decide(&a, (0, 0), None, (s(25), &at(25))), None);
        let d = sc.decide(&a, (0, 0), None, (s(40), &at(40))).unwrap();
        assert_eq!(d.autoscaling.as_ref().unwrap().desired_replicas, 0);
        assert_eq!(d.autoscaling.as_ref().unwrap().last_scale_time, Some(at(40)));
        assert_eq!(d.scaled_from, Some(3));
        a.status.as_mut().unwrap().autoscaling = d.autoscaling;
        assert_eq!(a.desired_replicas(), 0);
        // The first task brings a pod back.
        let d = sc.decide(&a, (1, 0), None, (s(45), &at(45))).unwrap();
        assert_eq!(d.autoscaling.as_ref().unwrap().desired_replicas, 1);
        // A spec without autoscaling drops the scaler's record.
        a.spec.autoscaling = None;
        a.status.as_mut().unwrap().queue = Some(d.queue);
        let d = sc.decide(&a, (1, 0), None, (s(46), &at(46))).unwrap();
        assert_eq!((d.autoscaling, d.scaled_from), (None, None));
    }

    #[test]
    fn totals_add_what_this_replica_counted_to_what_the_status_held() {
        let mut a = agent("a", "role: Research");
        let mut tally = Tally::default();
        assert_eq!(tally.totals(&a, Finished::default()), None, "nothing to say yet");
        let counted = Finished {
            succeeded: 1,
            failed: 2,
            duration_ms: 6000,
            timed: 2,
        };
        let totals = TaskTotals {
            succeeded: 1,
            failed: 2,
            average_duration_ms: Some(3000),
        };
        assert_eq!(tally.totals(&a, counted), Some(totals));

        // A new leader adds to what the status holds, keeping the mean over all of them.
        a.status = Some(CogoAgentStatus {
            tasks: Some(TaskTotals {
                succeeded: 9,
                failed: 1,
                average_duration_ms: Some(1000),
            }),
            ..Default::default()
        });
        let mut next = Tally::default();
        assert_eq!(
            next.totals(&a, Finished::default()),
            a.status.as_ref().unwrap().tasks
        );
        let one = Finished {
            succeeded: 1,
            failed: 0,
            duration_ms: 12_000,
            timed: 1,
        };
        let expected = TaskTotals {
            succeeded: 10,
            failed: 1,
            average_duration_ms: Some(2000),
        };
        assert_eq!(next.totals(&a, one), Some(expected.clone()));
        // Its own later writes do not move the base it started from.
        a.status.as_mut().unwrap().tasks = Some(expected.clone());
        assert_eq!(next.totals(&a, one), Some(expected));
    }

    #[test]
    fn worker_pools_scale_on_their_jobs_and_record_no_task_totals() {
        use cogo_api::CogoWorkerStatus;
        let mut w = crate::testing::worker(
            "python",
            "kind: PythonSandbox\nreplicas: 1\nautoscaling: {minReplicas: 1, maxReplicas: 5, targetQueuedTasksPerPod: 4}",
        );
        let mut sc = Scaler::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let d = sc.decide(&w, (9, 4), None, (t0, &at(0))).unwrap();
        assert_eq!(
            d.autoscaling.as_ref().unwrap().desired_replicas,
            4,
            "13 jobs, 4 per pod"
        );
        assert_eq!((d.scaled_from, d.tasks.clone()), (Some(1), None));
        w.status = Some(CogoWorkerStatus {
            queue: Some(d.queue.clone()),
            autoscaling: d.autoscaling.clone(),
            ..Default::default()
        });
        assert_eq!(w.desired_replicas(), 4);
        assert_eq!(
            sc.decide(&w, (9, 4), None, (t0 + Duration::from_secs(5), &at(5))),
            None
        );
    }

    #[test]
    fn a_decision_the_cache_does_not_show_yet_is_made_once() {
        let a = agent(
            "a",
            "role: Research\nreplicas: 1\nautoscaling: {minReplicas: 1, maxReplicas: 4, targetQueuedTasksPerPod: 2}",
        );
        let mut sc = Scaler::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let d = sc.decide(&a, (6, 0), None, (s(0), &at(0))).unwrap();
        assert_eq!(
            (d.autoscaling.unwrap().desired_replicas, d.scaled_from),
            (3, Some(1))
        );
        // The cache still shows no decision 5 s later: nothing to change, nothing to say.
        assert_eq!(sc.decide(&a, (6, 0), None, (s(5), &at(5))), None);
        // Past the cache's allowance the status is believed again (a lost write is made again).
        let again = sc.decide(&a, (6, 0), None, (s(40), &at(40))).unwrap();
        assert_eq!(again.autoscaling.unwrap().desired_replicas, 3);
    }

    #[test]
    fn the_recorded_count_is_kept_within_the_current_bounds() {
        let mut a = agent(
            "a",
            "role: Research\nreplicas: 2\nautoscaling: {minReplicas: 2, maxReplicas: 6}",
        );
        a.status = Some(CogoAgentStatus {
            autoscaling: Some(AutoscalingStatus {
                desired_replicas: 9,
                last_scale_time: None,
            }),
            ..Default::default()
        });
        assert_eq!(
            a.desired_replicas(),
            6,
            "a lowered maximum caps the recorded count"
        );
        a.spec.autoscaling = None;
        assert_eq!(a.desired_replicas(), 2, "without autoscaling, spec.replicas");
    }
}
