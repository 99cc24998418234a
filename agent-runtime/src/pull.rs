//! The pull loop. A pod leases work in *lanes*: each lane asks the broker for the task types it
//! takes (its type prefixes) and only as many as it has free [`Slots`]. Every agent has its
//! own lane (its `concurrency`); the Executor adds one per worker kind, sized by its connected
//! workers. Each leased task runs with its handler while a heartbeat keeps the lease, and its
//! outcome is reported. The broker being unreachable only delays work (backoff). On shutdown
//! the lanes stop leasing and the tasks held finish within the grace period.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cogo_api::broker::{CompleteRequest, LeaseRequest, LeasedTask, Outcome};
use futures::{FutureExt, future::BoxFuture};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tracing::{Instrument as _, debug, error, info, warn};

use crate::{
    broker::{CallError, SharedBroker},
    handler::{Registry, TaskContext},
};

/// A held slot, released when dropped.
pub type Slot = Box<dyn Send + Sync>;

/// How many tasks a lane may take.
pub trait Slots: Send + Sync + 'static {
    /// Slots free now.
    fn free(&self) -> u32;
    /// Resolves when `free` may have grown.
    fn changed(&self) -> BoxFuture<'_, ()>;
    /// Takes one slot until the returned guard is dropped.
    fn hold(&self) -> Slot;
}

/// A fixed number of slots: an agent's `concurrency`.
pub struct FixedSlots(Arc<Semaphore>);

impl FixedSlots {
    /// `n` slots.
    pub fn new(n: u32) -> Self {
        FixedSlots(Arc::new(Semaphore::new(n as usize)))
    }
}

impl Slots for FixedSlots {
    fn free(&self) -> u32 {
        self.0.available_permits() as u32
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Ok(p) = self.0.acquire().await {
                drop(p);
            }
        })
    }

    fn hold(&self) -> Slot {
        let permit: Option<OwnedSemaphorePermit> = self.0.clone().try_acquire_owned().ok();
        Box::new(permit)
    }
}

/// One lane: which task types it leases and how many at once.
pub struct Lane {
    /// Name, for logs.
    pub name: String,
    /// Lease only these type prefixes (empty: any type).
    pub type_prefixes: Vec<String>,
    /// Never lease these type prefixes.
    pub exclude_type_prefixes: Vec<String>,
    /// Its slots.
    pub slots: Arc<dyn Slots>,
    /// How long one lease request waits for work. Lanes whose slots can shrink (workers
    /// leave) ask often, so a request never takes more than the slots that are still there
    /// for long.
    pub wait_seconds: u32,
}

/// How long a lease request of an agent's own lane waits for work.
pub const OWN_LANE_WAIT_SECONDS: u32 = 20;

/// Counts the tasks a pod runs, to wait for them on shutdown.
#[derive(Clone, Default)]
pub struct InFlight(Arc<(AtomicUsize, Notify)>);

struct Running(InFlight);

impl Drop for Running {
    fn drop(&mut self) {
        let (n, idle) = &*(self.0).0;
        if n.fetch_sub(1, Ordering::SeqCst) == 1 {
            idle.notify_waiters();
        }
    }
}

impl InFlight {
    fn start(&self) -> Running {
        self.0.0.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    /// Tasks running now.
    pub fn count(&self) -> usize {
        self.0.0.load(Ordering::SeqCst)
    }

    /// Resolves when no task runs.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.1.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Runs every lane until `shutdown` turns true, then waits up to `grace` for held tasks.
pub async fn run(
    broker: SharedBroker,
    registry: Arc<Registry>,
    lanes: Vec<Lane>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let running = InFlight::default();
    let loops: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            tokio::spawn(run_lane(
                broker.clone(),
                registry.clone(),
                lane,
                shutdown.clone(),
                running.clone(),
            ))
        })
        .collect();
    for l in loops {
        let _ = l.await;
    }
    info!(
        tasks = running.count(),
        "stopped leasing; finishing the tasks held"
    );
    if tokio::time::timeout(grace, running.idle()).await.is_err() {
        warn!(
            tasks = running.count(),
            "tasks were still running when the grace period ended"
        );
    }
}

async fn run_lane(
    broker: SharedBroker,
    registry: Arc<Registry>,
    lane: Lane,
    mut shutdown: watch::Receiver<bool>,
    running: InFlight,
) {
    let mut backoff = Duration::from_millis(500);
    info!(lane = %lane.name, types = ?lane.type_prefixes, "pulling tasks from the broker");
    while !*shutdown.borrow() {
        let free = lane.slots.free();
        if free == 0 {
            tokio::select! {
                _ = lane.slots.changed() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let req = LeaseRequest {
            pod: String::new(),
            slots: free.min(256),
            wait_seconds: lane.wait_seconds,
            type_prefixes: lane.type_prefixes.clone(),
            exclude_type_prefixes: lane.exclude_type_prefixes.clone(),
        };
        let leased = tokio::select! {
            r = broker.lease(req) => r,
            _ = shutdown.changed() => break,
        };
        match leased {
            Ok(tasks) => {
                backoff = Duration::from_millis(500);
                for task in tasks {
                    let slot = lane.slots.hold();
                    let run = running.start();
                    let (broker, registry) = (broker.clone(), registry.clone());
                    tokio::spawn(async move {
                        run_task(broker, &registry, task).await;
                        drop(slot);
                        drop(run);
                    });
                }
            }
            Err(e) => {
                warn!(lane = %lane.name, error = %e, retry_in = ?backoff, "cannot lease tasks");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Runs one leased task: heartbeats while the handler works, then reports the outcome. The
/// attempt is traced as `cogo.task.handle`, a child of the span the lease names; an item of an
/// indexed task carries its index as `cogo.task.item`.
pub async fn run_task(broker: SharedBroker, registry: &Registry, task: LeasedTask) {
    let span = tracing::info_span!(
        target: "cogo::trace",
        "cogo.task.handle",
        cogo.task.namespace = %task.namespace,
        cogo.task.name = %task.name,
        cogo.task.type = %task.task_type,
        cogo.task.attempt = task.attempt,
        cogo.task.item = tracing::field::Empty,
        cogo.task.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    if let Some(i) = task.item {
        span.record("cogo.task.item", i);
    }
    cogo_telemetry::follow(&span, task.traceparent.as_deref());
    handle(broker, registry, task).instrument(span).await
}

async fn handle(broker: SharedBroker, registry: &Registry, task: LeasedTask) {
    // The specification's levels: INFO for a task's start and end, WARN for an attempt that
    // failed (the operator decides whether it is retried), ERROR for a handler that crashed.
    info!(task = %task.name, namespace = %task.namespace, attempt = task.attempt, r#type = %task.task_type, "task started");
    let started = std::time::Instant::now();
    let task = Arc::new(task);
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let (progress_tx, progress_rx) = watch::channel(None::<String>);
    let _beat = {
        let (broker, task) = (broker.clone(), task.clone());
        AbortOnDrop(tokio::spawn(async move {
            let every = Duration::from_secs(task.heartbeat_seconds.max(1).into());
            loop {
                tokio::time::sleep(every).await;
                // The latest progress goes with every heartbeat: the operator writes it only when
                // the status shows another, so a write that failed is made at the next one.
                let progress = progress_rx.borrow().clone();
                match broker.heartbeat(&task, progress.as_deref()).await {
                    Ok(true) => {
                        let _ = cancel_tx.send(true);
                        return;
                    }
                    Ok(false) => {}
                    Err(CallError::Refused(409 | 404, body)) => {
                        warn!(task = %task.name, code = %body.code, "the lease was lost or the task deleted; stopping the task");
                        let _ = cancel_tx.send(true);
                        return;
                    }
                    Err(e) => warn!(task = %task.name, error = %e, "heartbeat failed"),
                }
            }
        }))
    };
    let ctx = TaskContext {
        cancelled: cancel_rx.clone(),
        task: task.clone(),
        broker: Some(broker.clone()),
        progress: Arc::new(progress_tx),
    };
    let outcome = match registry.get(&task.task_type) {
        None => Err((
            format!(
                "this agent has no handler for task type {:?}; it handles {}",
                task.task_type,
                registry.types().join(", ")
            ),
            false,
        )),
        // A handler that panics fails its task, saying so, rather than leaving it held by a
        // heartbeat that outlives it.
        Some(handler) => match std::panic::AssertUnwindSafe(handler.run(&task.input, ctx))
            .catch_unwind()
            .await
        {
            Ok(done) => done.map_err(|e| (e.message, e.retryable)),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                error!(task = %task.name, r#type = %task.task_type, panic = %why, "the handler panicked");
                Err((
                    format!("the {} handler failed unexpectedly: {why}", task.task_type),
                    false,
                ))
            }
        },
    };
    let cancelled = *cancel_rx.borrow();
    let ms = started.elapsed().as_millis() as u64;
    let span = tracing::Span::current();
    match &outcome {
        Ok(_) => {
            span.record("cogo.task.outcome", "Succeeded");
            span.record("otel.status_code", "OK");
        }
        Err(_) if cancelled => {
            span.record("cogo.task.outcome", "Cancelled");
        }
        Err((message, _)) => {
            span.record("cogo.task.outcome", "Failed");
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", message.as_str());
        }
    }
    match &outcome {
        Ok(_) => info!(task = %task.name, attempt = task.attempt, ms, "task succeeded"),
        Err(_) if cancelled => info!(task = %task.name, attempt = task.attempt, ms, "task cancelled"),
        Err((message, retryable)) => {
            warn!(task = %task.name, attempt = task.attempt, ms, error = %message, retryable, "task attempt failed")
        }
    }
    let pod = broker.pod().to_string();
    let req = match outcome {
        Ok(result) => CompleteRequest {
            pod,
            attempt: task.attempt,
            outcome: Outcome::Succeeded,
            result: Some(result),
            error: None,
            retryable: false,
            item: task.item,
        },
        Err(_) if cancelled => CompleteRequest {
            pod,
            attempt: task.attempt,
            outcome: Outcome::Cancelled,
            result: None,
            error: None,
            retryable: false,
            item: task.item,
        },
        Err((message, retryable)) => CompleteRequest {
            pod,
            attempt: task.attempt,
            outcome: Outcome::Failed,
            result: None,
            error: Some(message),
            retryable,
            item: task.item,
        },
    };
    // The outcome is offered until the broker takes it or says the attempt is no longer this
    // pod's (409/404): a broker that is away for a while (an operator restart, a failover)
    // finds it when it is back. The heartbeats go on meanwhile, so the lease holds.
    let mut req = req;
    let mut delay = Duration::from_millis(200);
    loop {
        match broker.complete(&task, &req).await {
            Ok(()) => break,
            Err(CallError::Refused(409 | 404, body)) => {
                debug!(task = %task.name, code = %body.code, "the broker has this attempt's outcome, or the task is gone");
                break;
            }
            Err(CallError::Refused(413, body)) if req.outcome == Outcome::Succeeded => {
                warn!(task = %task.name, message = %body.message, "the result is too large for the broker; reporting that instead");
                req = CompleteRequest {
                    outcome: Outcome::Failed,
                    result: None,
                    error: Some(format!(
                        "the result is too large for the broker: {}",
                        body.message
                    )),
                    retryable: false,
                    ..req
                };
            }
            Err(CallError::Refused(status @ (400 | 413 | 422), body)) => {
                error!(task = %task.name, status, code = %body.code, message = %body.message, "the broker cannot take this outcome; the attempt ends when its lease runs out");
                break;
            }
            Err(e) => {
                warn!(task = %task.name, error = %e, retry_in = ?delay, "cannot report the outcome; offering it again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_COMPLETE_BACKOFF);
            }
        }
    }
}

/// Stops a background task when dropped (the heartbeat of a task, however its run ends).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The longest wait between two offers of an outcome.
const MAX_COMPLETE_BACKOFF: Duration = Duration::from_secs(5);

/// A pull loop in the background, for tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// One lane of `n` slots taking every type.
    pub(crate) fn own_lane(n: u32) -> Lane {
        Lane {
            name: "own".into(),
            type_prefixes: vec![],
            exclude_type_prefixes: vec![],
            slots: Arc::new(FixedSlots::new(n)),
            wait_seconds: OWN_LANE_WAIT_SECONDS,
        }
    }

    /// A pull loop running until [`Pulling::stop`].
    pub(crate) struct Pulling {
        stop: watch::Sender<bool>,
        handle: tokio::task::JoinHandle<()>,
    }

    impl Pulling {
        /// Pulls from `broker` in `lanes`, with a grace of 5 s.
        pub(crate) fn start(broker: SharedBroker, registry: Arc<Registry>, lanes: Vec<Lane>) -> Self {
            let (stop, rx) = watch::channel(false);
            let handle = tokio::spawn(run(broker, registry, lanes, rx, Duration::from_secs(5)));
            Pulling { stop, handle }
        }

        /// Stops leasing and waits for the tasks held.
        pub(crate) async fn stop(self) {
            let _ = self.stop.send(true);
            let _ = self.handle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{testing::*, *};
    use crate::{
        broker::memory::MemoryBroker,
        handler::{HandlerError, HandlerFuture, TaskHandler},
        roles::builtin,
    };

    struct Wait;

    impl TaskHandler for Wait {
        fn run<'a>(&'a self, _: &'a serde_json::Value, ctx: TaskContext) -> HandlerFuture<'a> {
            Box::pin(async move {
                ctx.until_cancelled().await;
                Err(HandlerError::cancelled())
            })
        }
    }

    fn registry() -> Arc<Registry> {
        let mut r = Registry::default();
        builtin::register(&mut r);
        r.register("test.wait", Wait);
        Arc::new(r)
    }

    struct Panics;

    impl TaskHandler for Panics {
        fn run<'a>(&'a self, _: &'a serde_json::Value, _: TaskContext) -> HandlerFuture<'a> {
            Box::pin(async move { panic!("index out of bounds") })
        }
    }

    /// A handler that panics fails its task, saying so, and its heartbeats stop.
    #[tokio::test]
    async fn a_panicking_handler_fails_its_task() {
        let broker = Arc::new(MemoryBroker::new("pod-1", 1));
        let mut r = Registry::default();
        r.register("test.panic", Panics);
        broker.submit("boom", "test.panic", json!({}));
        let pull = Pulling::start(broker.clone(), Arc::new(r), vec![own_lane(1)]);
        let done = broker.outcome("boom", Duration::from_secs(10)).await.unwrap();
        assert_eq!((done.outcome, done.retryable), (Outcome::Failed, false));
        assert_eq!(
            done.error.as_deref(),
            Some("the test.panic handler failed unexpectedly: index out of bounds")
        );
        let beats = broker.heartbeats("boom");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(broker.heartbeats("boom"), beats, "no heartbeat after the outcome");
        pull.stop().await;
    }

    #[tokio::test]
    async fn tasks_run_and_report_their_outcomes() {
        let broker = Arc::new(MemoryBroker::new("pod-1", 1));
        broker.submit("echo", "cogo.echo", json!({"hi": 1}));
        broker.submit("unknown", "research.query", json!({}));
        broker.submit("fails", "cogo.fail", json!({"message": "no", "retryable": true}));
        let pull = Pulling::start(broker.clone(), registry(), vec![own_lane(4)]);
        let t = Duration::from_secs(10);
        let echo = broker.outcome("echo", t).await.unwrap();
        assert_eq!(
            (echo.outcome, echo.result),
            (Outcome::Succeeded, Some(json!({"hi": 1})))
        );
        assert_eq!(echo.pod, "pod-1");
        let unknown = broker.outcome("unknown", t).await.unwrap();
        assert_eq!(unknown.outcome, Outcome::Failed);
        assert!(
            unknown
                .error
                .unwrap()
                .contains("no handler for task type \"research.query\""),
            "the message names the type"
        );
        assert!(!unknown.retryable);
        let fails = broker.outcome("fails", t).await.unwrap();
        assert_eq!((fails.error.as_deref(), fails.retryable), (Some("no"), true));
        pull.stop().await;
    }

    #[tokio::test]
    async fn a_lane_leases_only_its_types_and_only_its_free_slots() {
        let broker = Arc::new(MemoryBroker::new("pod-1", 1));
        for i in 0..3 {
            broker.submit(&format!("w{i}"), "test.wait", json!({}));
        }
        broker.submit("py", "python.execute", json!({}));
        let lane = Lane {
            name: "own".into(),
            type_prefixes: vec![],
            exclude_type_prefixes: vec!["python.".into()],
            slots: Arc::new(FixedSlots::new(2)),
            wait_seconds: OWN_LANE_WAIT_SECONDS,
        };
        let pull = Pulling::start(broker.clone(), registry(), vec![lane]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reqs = broker.lease_requests();
        assert_eq!(reqs[0].slots, 2, "as many as the lane has free");
        assert_eq!(reqs[0].exclude_type_prefixes, ["python."]);
        assert_eq!(
            broker.queued().len(),
            2,
            "one wait task and the python task stay queued"
        );
        assert!(broker.queued().contains(&"py".to_string()));
        // Cancelling a running task frees its slot; the next one is leased.
        broker.cancel("w0");
        broker.cancel("w1");
        let first = broker.outcome("w0", Duration::from_secs(10)).await.unwrap();
        assert_eq!(first.outcome, Outcome::Cancelled);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(broker.queued(), ["py"]);
        broker.cancel("w2");
        broker.outcome("w2", Duration::from_secs(10)).await.unwrap();
        pull.stop().await;
    }

    /// An outcome is offered for as long as the broker is away (here a minute and more, longer
    /// than a failover), not given up after a while.
    #[tokio::test(start_paused = true)]
    async fn outcomes_are_offered_until_the_broker_takes_them() {
        let broker = Arc::new(MemoryBroker::new("pod-1", 1));
        broker.fail_completes(40);
        broker.submit("late", "cogo.echo", json!({"at": "last"}));
        let pull = Pulling::start(broker.clone(), registry(), vec![own_lane(1)]);
        let done = broker.outcome("late", Duration::from_secs(600)).await.unwrap();
        assert_eq!(done.result, Some(json!({"at": "last"})));
        pull.stop().await;
    }

    /// A result the broker cannot take is reported as a failure that says so, not offered
    /// forever and not dropped.
    #[tokio::test]
    async fn a_result_too_large_for_the_broker_fails_the_task_saying_so() {
        let broker = Arc::new(MemoryBroker::new("pod-1", 1));
        broker.refuse_results_over(1000);
        broker.submit("big", "cogo.echo", json!({"blob": "x".repeat(2000)}));
        let pull = Pulling::start(broker.clone(), registry(), vec![own_lane(1)]);
        let done = broker.outcome("big", Duration::from_secs(10)).await.unwrap();
        assert_eq!((done.outcome, done.retryable), (Outcome::Failed, false));
        assert!(
            done.error
                .unwrap()
                .contains("the result is too large for the broker: the body is over 1000 bytes")
        );
        pull.stop().await;
    }

    #[tokio::test]
    async fn shutdown_stops_leasing_and_waits_for_the_tasks_held() {
        let broker = Arc::new(MemoryBroker::new("pod-1", 1));
        broker.submit("s", "cogo.sleep", json!({"seconds": 0.5}));
        // The stop is sent, and a task submitted, before the loop is awaited.
        let (stop, rx) = watch::channel(false);
        let pull = tokio::spawn(run(
            broker.clone(),
            registry(),
            vec![own_lane(1)],
            rx,
            Duration::from_secs(5),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(true).unwrap();
        broker.submit("late", "cogo.echo", json!({}));
        pull.await.unwrap();
        let s = broker.outcome("s", Duration::from_millis(10)).await.unwrap();
        assert_eq!(s.outcome, Outcome::Succeeded, "the task held was finished");
        assert_eq!(broker.queued(), ["late"], "nothing was leased after the stop");
    }
}
