//! The items of indexed tasks (`spec.items`), after Kubernetes' Indexed Jobs: each item is
//! leased, heartbeated, retried and timed out like a task, but in memory only. What status
//! shows (counts, and the finished items as index ranges) is written at most about once a
//! second per task, so an item costs the API server almost nothing. The [`Board`] of a task is
//! rebuilt from its status on start: items that had finished stay finished, the rest run
//! (again).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use cogo_api::{AgentTask, AgentTaskStatus, ItemsStatus, TaskPhase, broker::Outcome};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{accept::Target, transition::Policy};

/// Where one item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting to be leased (new, or its retry's backoff passed).
    Ready,
    /// Leased to a pod.
    Running,
    /// Failed, waiting for its backoff before it is ready again.
    BackingOff,
    /// Succeeded.
    Succeeded,
    /// Failed for good.
    Failed,
}

/// The lease of one running item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemLease {
    /// The CogoAgent whose pod runs it.
    pub agent: String,
    /// The pod running it.
    pub pod: String,
    /// The item's attempt.
    pub attempt: i32,
    /// When the lease runs out unless renewed.
    pub expires: Instant,
}

/// Why a call about an item was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemFence {
    /// There is no such item.
    NoSuchItem,
    /// The item is not leased by this pod for this attempt (any more).
    LeaseLost,
    /// The item's outcome is recorded already.
    AlreadyRecorded,
}

/// An item just leased (see [`Board::take`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The item's index.
    pub index: u32,
    /// The attempt leased.
    pub attempt: i32,
    /// How long it waited, ready.
    pub waited: Duration,
    /// Time left until its deadline (`timeoutSeconds` from its first start).
    pub left: Duration,
}

/// What became of an item whose attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemEnd {
    /// It succeeded.
    Succeeded,
    /// It failed and is retried after its backoff.
    Retrying,
    /// It failed for good.
    Failed,
}

/// The items of one indexed task, and the task as it was when its items were laid out.
pub struct Board {
    /// The task, for its type, input template and inputs.
    pub task: Arc<AgentTask>,
    /// Where its items are queued.
    pub target: Target,
    policy: Policy,
    parallelism: usize,
    max_failed: u64,
    state: Vec<State>,
    attempts: Vec<u16>,
    first_start: Vec<Option<Instant>>,
    ready_since: Vec<Instant>,
    ready: VecDeque<u32>,
    backing_off: BinaryHeap<Reverse<(Instant, u32)>>,
    running: HashMap<u32, ItemLease>,
    succeeded: u64,
    failed: u64,
    last_failure: Option<(u32, String)>,
    started: bool,
    stopped: bool,
    /// Whether a status write of this board is under way.
    pub writing: bool,
    /// Whether status no longer shows where the items are.
    pub changed: bool,
    /// When status was last written from this board.
    pub written: Option<Instant>,
}

impl Board {
    /// The board of `task` (whose items are checked: see
    /// [`validate`](super::accept::validate)), queued for `target` under `policy`, with the items
    /// its status lists as finished (`succeeded`, `failed`) finished already.
    pub fn new(
        task: Arc<AgentTask>,
        target: Target,
        policy: Policy,
        (succeeded, failed): (&[u32], &[u32]),
    ) -> Board {
        let now = Instant::now();
        let total = item_count(&task) as usize;
        let mut state = vec![State::Ready; total];
        for &i in succeeded.iter().filter(|&&i| (i as usize) < total) {
            state[i as usize] = State::Succeeded;
        }
        for &i in failed.iter().filter(|&&i| (i as usize) < total) {
            state[i as usize] = State::Failed;
        }
        let ready = (0..total as u32)
            .filter(|&i| state[i as usize] == State::Ready)
            .collect();
        let count = |s| state.iter().filter(|&&x| x == s).count() as u64;
        let (succeeded, failed) = (count(State::Succeeded), count(State::Failed));
        let started = task.status.as_ref().and_then(|s| s.start_time.as_ref()).is_some();
        Board {
            parallelism: task.spec.parallelism.map_or(usize::MAX, |p| p.max(1) as usize),
            max_failed: task.spec.max_failed_items.unwrap_or(0).max(0) as u64,
            task,
            target,
            policy,
            attempts: vec![0; total],
            first_start: vec![None; total],
            ready_since: vec![now; total],
            state,
            ready,
            backing_off: BinaryHeap::new(),
            running: HashMap::new(),
            succeeded,
            failed,
            last_failure: None,
            started,
            stopped: false,
            writing: false,
            changed: true,
            written: None,
        }
    }

    /// Items in all.
    pub fn total(&self) -> usize {
        self.state.len()
    }

    /// Whether an item waits to be leased (and the task may start more).
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
            && !self.stopped
            && self.outcome().is_none()
            && self.running.len() < self.parallelism
    }

    /// Items not started, or waiting to be retried.
    pub fn pending(&self) -> usize {
        (self.total() as u64).saturating_sub(self.succeeded + self.failed + self.running.len() as u64)
            as usize
    }

    /// Starts no more items (the task is being cancelled).
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Items running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Items `agent` runs now.
    pub fn running_for(&self, agent: &str) -> usize {
        self.running.values().filter(|l| l.agent == agent).count()
    }

    /// Whether any item was ever leased (the task is Running).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Leases up to `n` ready items to `pod` of `agent` at `now`, within `parallelism`; each
    /// lease lasts `ttl` unless renewed.
    pub fn take(&mut self, n: usize, (agent, pod): (&str, &str), now: Instant, ttl: Duration) -> Vec<Taken> {
        if self.outcome().is_some() || self.stopped {
            return Vec::new();
        }
        let room = self.parallelism.saturating_sub(self.running.len()).min(n);
        let mut out = Vec::with_capacity(room.min(self.ready.len()));
        while out.len() < room {
            let Some(i) = self.ready.pop_front() else { break };
            let k = i as usize;
            if self.state[k] != State::Ready {
                continue;
            }
            self.state[k] = State::Running;
            self.attempts[k] = self.attempts[k].saturating_add(1);
            self.first_start[k].get_or_insert(now);
            let attempt = i32::from(self.attempts[k]);
            self.running.insert(
                i,
                ItemLease {
                    agent: agent.to_string(),
                    pod: pod.to_string(),
                    attempt,
                    expires: now + ttl,
                },
            );
            let limit = Duration::from_secs(self.policy.timeout_seconds.max(1) as u64);
            let started = self.first_start[k].unwrap_or(now);
            out.push(Taken {
                index: i,
                attempt,
                waited: now.saturating_duration_since(self.ready_since[k]),
                left: limit.saturating_sub(now.saturating_duration_since(started)),
            });
        }
        if !out.is_empty() {
            self.started = true;
            self.changed = true;
        }
        out
    }

    /// The lease of item `i`, if it runs.
    pub fn lease(&self, i: u32) -> Option<&ItemLease> {
        self.running.get(&i)
    }

    /// Checks that `pod` holds attempt `attempt` of item `i`.
    pub fn check(&self, i: u32, pod: &str, attempt: i32) -> Result<&ItemLease, ItemFence> {
        let state = *self.state.get(i as usize).ok_or(ItemFence::NoSuchItem)?;
        match self.running.get(&i) {
            Some(l) if l.pod == pod && l.attempt == attempt => Ok(l),
            _ if matches!(state, State::Succeeded | State::Failed)
                && i32::from(self.attempts[i as usize]) == attempt =>
            {
                Err(ItemFence::AlreadyRecorded)
            }
            _ => Err(ItemFence::LeaseLost),
        }
    }

    /// Extends the lease of `pod` on attempt `attempt` of item `i` to `ttl` from `now`.
    pub fn renew(
        &mut self,
        i: u32,
        pod: &str,
        attempt: i32,
        now: Instant,
        ttl: Duration,
    ) -> Result<(), ItemFence> {
        self.check(i, pod, attempt)?;
        if let Some(l) = self.running.get_mut(&i) {
            l.expires = now + ttl;
        }
        Ok(())
    }

    /// Records how attempt `attempt` of item `i`, run by `pod`, ended: a failure that may be
    /// retried (`retryable`) backs off while the retry policy allows, others are final.
    pub fn complete(
        &mut self,
        i: u32,
        (pod, attempt): (&str, i32),
        (outcome, retryable, error): (Outcome, bool, Option<&str>),
        now: Instant,
    ) -> Result<ItemEnd, ItemFence> {
        self.check(i, pod, attempt)?;
        self.running.remove(&i);
        self.changed = true;
        Ok(match outcome {
            Outcome::Succeeded => {
                self.state[i as usize] = State::Succeeded;
                self.succeeded += 1;
                ItemEnd::Succeeded
            }
            Outcome::Failed | Outcome::Cancelled => {
                let why = error.unwrap_or("the handler failed");
                self.fail(i, why, retryable && outcome == Outcome::Failed, now)
            }
        })
    }

    /// Ends the running attempt of item `i`, which failed with `why`.
    fn fail(&mut self, i: u32, why: &str, retry: bool, now: Instant) -> ItemEnd {
        let k = i as usize;
        let attempt = i32::from(self.attempts[k]);
        if retry && attempt <= self.policy.retry.limit && !self.out_of_time(k, now) {
            let delay = Duration::from_secs(self.policy.backoff_seconds(attempt).max(0) as u64);
            self.state[k] = State::BackingOff;
            self.backing_off.push(Reverse((now + delay, i)));
            ItemEnd::Retrying
        } else {
            self.state[k] = State::Failed;
            self.failed += 1;
            // Status names the last item that failed for good, and why.
            self.last_failure = Some((i, super::transition::cap_message(why)));
            ItemEnd::Failed
        }
    }

    fn out_of_time(&self, k: usize, now: Instant) -> bool {
        let limit = Duration::from_secs(self.policy.timeout_seconds.max(1) as u64);
        self.first_start[k].is_some_and(|s| now.duration_since(s) >= limit)
    }

    /// Moves time on to `now`: items whose lease ran out (their pod stopped heartbeating) or
    /// whose time is up end their attempt, and items whose backoff passed are ready again.
    /// Returns the agents whose items ended (their slots are free) and whether items became
    /// ready.
    pub fn tick(&mut self, now: Instant) -> (Vec<String>, bool) {
        let mut freed = Vec::new();
        let ended: Vec<(u32, ItemLease)> = self
            .running
            .iter()
            .filter(|(i, l)| l.expires <= now || self.out_of_time(**i as usize, now))
            .map(|(i, l)| (*i, l.clone()))
            .collect();
        for (i, lease) in ended {
            self.running.remove(&i);
            self.changed = true;
            let why = if self.out_of_time(i as usize, now) {
                format!(
                    "{}: item {i} ran past its timeout of {}s",
                    super::transition::reason::DEADLINE_EXCEEDED,
                    self.policy.timeout_seconds
                )
            } else {
                format!(
                    "{}: pod {} stopped heartbeating on item {i}",
                    super::transition::reason::HEARTBEAT_LOST,
                    lease.pod
                )
            };
            self.fail(i, &why, true, now);
            freed.push(lease.agent);
        }
        let mut woke = false;
        while let Some(Reverse((at, i))) = self.backing_off.peek().copied() {
            if at > now {
                break;
            }
            self.backing_off.pop();
            if self.state[i as usize] == State::BackingOff {
                self.state[i as usize] = State::Ready;
                self.ready_since[i as usize] = now;
                self.ready.push_back(i);
                woke = true;
            }
        }
        (freed, woke)
    }

    /// The final phase and message once the task is decided: every item finished (Succeeded
    /// when at most `maxFailedItems` failed), or more than `maxFailedItems` failed (Failed at
    /// once). None while it runs.
    pub fn outcome(&self) -> Option<(TaskPhase, String)> {
        let total = self.total() as u64;
        let failure = || {
            self.last_failure
                .as_ref()
                .map(|(i, why)| format!("; item {i}: {why}"))
                .unwrap_or_default()
        };
        if self.failed > self.max_failed {
            return Some((
                TaskPhase::Failed,
                format!(
                    "{} of {total} items failed, more than the {} spec.maxFailedItems allows{}",
                    self.failed,
                    self.max_failed,
                    failure()
                ),
            ));
        }
        if self.succeeded + self.failed < total {
            return None;
        }
        let text = match self.failed {
            0 => format!("all {total} items succeeded"),
            n => format!(
                "{} of {total} items succeeded, {n} failed{}",
                self.succeeded,
                failure()
            ),
        };
        Some((TaskPhase::Succeeded, text))
    }

    /// What status says of the items.
    pub fn status(&self) -> ItemsStatus {
        let listed = |s: State| {
            cogo_api::task::index_ranges((0..self.total() as u32).filter(|&i| self.state[i as usize] == s))
        };
        ItemsStatus {
            total: self.total() as i64,
            pending: self
                .state
                .iter()
                .filter(|&&s| matches!(s, State::Ready | State::BackingOff))
                .count() as i64,
            running: self.running.len() as i64,
            succeeded: self.succeeded as i64,
            failed: self.failed as i64,
            succeeded_indexes: listed(State::Succeeded),
            failed_indexes: listed(State::Failed),
        }
    }

    /// The message status shows while the items run.
    pub fn progress(&self) -> String {
        let s = self.status();
        let mut text = format!(
            "{} of {} items succeeded, {} running, {} failed",
            s.succeeded, s.total, s.running, s.failed
        );
        if let Some((i, why)) = &self.last_failure {
            text.push_str(&format!("; item {i}: {why}"));
        }
        text
    }
}

/// Reason of the `Succeeded` condition of an indexed task that failed: more items failed than
/// `spec.maxFailedItems` allows.
pub const ITEMS_FAILED: &str = "ItemsFailed";

/// The status of the indexed task `task` once its items are as `due` says: Pending until an
/// item was leased, then Running with the progress as its message, then its final phase.
pub fn status_of(task: &AgentTask, due: &super::BoardStatus, now: &Time) -> AgentTaskStatus {
    use cogo_api::conditions::{self, SUCCEEDED, status as cs};
    let mut s = task.status.clone().unwrap_or_default();
    let gen_ = task.metadata.generation;
    s.items = Some(due.items.clone());
    s.observed_generation = gen_.or(s.observed_generation);
    let (phase, status, reason, text) = match &due.outcome {
        Some((TaskPhase::Succeeded, text)) => (
            TaskPhase::Succeeded,
            cs::TRUE,
            super::transition::reason::SUCCEEDED,
            text,
        ),
        Some((phase, text)) => (*phase, cs::FALSE, ITEMS_FAILED, text),
        None if due.started => (
            TaskPhase::Running,
            cs::UNKNOWN,
            super::transition::reason::RUNNING,
            &due.progress,
        ),
        None => (
            TaskPhase::Pending,
            cs::UNKNOWN,
            super::accept::reason::PENDING,
            &due.progress,
        ),
    };
    if due.started {
        s.start_time.get_or_insert_with(|| now.clone());
    }
    // Written over the controller's own accepting write if it ran first.
    if conditions::find(&s.conditions, conditions::ACCEPTED).is_none_or(|c| c.status != cs::TRUE) {
        conditions::set_condition(
            &mut s.conditions,
            conditions::condition(
                conditions::ACCEPTED,
                cs::TRUE,
                super::accept::reason::QUEUED,
                format!("{} items laid out", due.items.total),
                gen_,
                now,
            ),
        );
    }
    if phase.is_terminal() {
        s.completion_time = Some(now.clone());
    }
    s.phase = Some(phase);
    s.message = Some(text.clone());
    conditions::set_condition(
        &mut s.conditions,
        conditions::condition(SUCCEEDED, status, reason, text.clone(), gen_, now),
    );
    s
}

/// The status of the indexed task `task`, cancelled at `now` with its items as `items` (None
/// when they were not laid out here).
pub fn cancelled(task: &AgentTask, items: Option<ItemsStatus>, now: &Time) -> AgentTaskStatus {
    let mut due = super::BoardStatus {
        namespace: String::new(),
        name: String::new(),
        items: items
            .or_else(|| task.status.as_ref().and_then(|s| s.items.clone()))
            .unwrap_or_default(),
        progress: String::new(),
        started: task.status.as_ref().is_some_and(|s| s.start_time.is_some()),
        outcome: None,
    };
    let text = format!(
        "the task was cancelled; {} of {} items succeeded",
        due.items.succeeded, due.items.total
    );
    due.outcome = Some((TaskPhase::Cancelled, text));
    let mut s = status_of(task, &due, now);
    if let Some(c) = s
        .conditions
        .iter_mut()
        .find(|c| c.type_ == cogo_api::conditions::SUCCEEDED)
    {
        c.reason = super::transition::reason::CANCELLED.into();
    }
    s
}

/// The number of items of `task`: `spec.items.count`, or the length of `spec.items.inputs`.
pub fn item_count(task: &AgentTask) -> u32 {
    task.spec.items.as_ref().map_or(0, |items| {
        let n = match (&items.inputs, items.count) {
            (Some(inputs), _) => inputs.len() as i64,
            (None, Some(count)) => count,
            (None, None) => 0,
        };
        n.clamp(0, cogo_api::task::MAX_ITEMS) as u32
    })
}

/// The input of item `i` of `task`: its entry of `spec.items.inputs`, or `spec.input` with
/// `{{index}}` replaced by `i` (see [`cogo_api::TaskItems::count`]).
pub fn item_input(task: &AgentTask, i: u32) -> serde_json::Value {
    let items = task.spec.items.as_ref();
    if let Some(inputs) = items.and_then(|s| s.inputs.as_ref()) {
        return inputs.get(i as usize).cloned().unwrap_or_default();
    }
    let mut input = task.spec.input.clone().unwrap_or_default();
    fill(&mut input, i);
    input
}

/// Replaces `{{index}}` in `value` by `i`: a string that is just the placeholder becomes the
/// number, one that holds it elsewhere gets the digits.
fn fill(value: &mut serde_json::Value, i: u32) {
    use serde_json::Value;
    match value {
        Value::String(s) if s == INDEX => *value = Value::from(i),
        Value::String(s) if s.contains(INDEX) => *s = s.replace(INDEX, &i.to_string()),
        Value::Array(list) => list.iter_mut().for_each(|v| fill(v, i)),
        Value::Object(map) => map.values_mut().for_each(|v| fill(v, i)),
        _ => {}
    }
}

/// The placeholder of an item's index in `spec.input`.
pub const INDEX: &str = "{{index}}";

#[cfg(test)]
mod tests {
    use cogo_api::RetryPolicy;
    use serde_json::json;

    use super::*;

    fn task(items: serde_json::Value, extra: serde_json::Value) -> Arc<AgentTask> {
        let mut spec = json!({"agent": "a", "type": "cogo.echo", "items": items});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let mut t: AgentTask = serde_json::from_value(json!({
            "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "t", "namespace": "ns"}, "spec": spec,
        }))
        .unwrap();
        t.metadata.generation = Some(1);
        Arc::new(t)
    }

    fn policy(retries: i32, timeout: i64) -> Policy {
        Policy {
            retry: RetryPolicy {
                limit: retries,
                ..Default::default()
            },
            timeout_seconds: timeout,
        }
    }

    const TTL: Duration = Duration::from_secs(15);

    /// The index and attempt of each item taken.
    fn taken(items: Vec<Taken>) -> Vec<(u32, i32)> {
        items.into_iter().map(|t| (t.index, t.attempt)).collect()
    }

    #[test]
    fn items_are_leased_within_parallelism_and_finished_ones_listed_as_ranges() {
        let t = task(json!({"count": 10}), json!({"parallelism": 4}));
        let mut b = Board::new(t, Target::Agent("a".into()), policy(0, 60), (&[], &[]));
        let now = Instant::now();
        let first = taken(b.take(100, ("a", "p"), now, TTL));
        assert_eq!(first, [(0, 1), (1, 1), (2, 1), (3, 1)], "four at once");
        assert!(b.take(1, ("a", "q"), now, TTL).is_empty());
        assert_eq!(b.running_for("a"), 4);
        for i in [0, 1, 3] {
            let end = b.complete(i, ("p", 1), (Outcome::Succeeded, false, None), now);
            assert_eq!(end, Ok(ItemEnd::Succeeded));
        }
        assert_eq!(
            b.complete(0, ("p", 1), (Outcome::Succeeded, false, None), now),
            Err(ItemFence::AlreadyRecorded)
        );
        assert_eq!(
            b.complete(2, ("q", 1), (Outcome::Succeeded, false, None), now),
            Err(ItemFence::LeaseLost),
            "another pod's report is fenced"
        );
        assert_eq!(
            b.complete(99, ("p", 1), (Outcome::Succeeded, false, None), now),
            Err(ItemFence::NoSuchItem)
        );
        let next = taken(b.take(100, ("a", "p"), now, TTL));
        assert_eq!(next, [(4, 1), (5, 1), (6, 1)]);
        let s = b.status();
        assert_eq!(
            (s.total, s.pending, s.running, s.succeeded, s.failed),
            (10, 3, 4, 3, 0)
        );
        assert_eq!(s.succeeded_indexes, "0-1,3");
        assert!(b.outcome().is_none());
    }

    #[test]
    fn a_failed_item_is_retried_by_policy_and_max_failed_items_decides_the_task() {
        let t = task(json!({"count": 3}), json!({"maxFailedItems": 1}));
        let mut b = Board::new(t, Target::Agent("a".into()), policy(1, 600), (&[], &[]));
        let now = Instant::now();
        assert_eq!(b.take(3, ("a", "p"), now, TTL).len(), 3);
        let end = b.complete(0, ("p", 1), (Outcome::Failed, true, Some("flaky")), now);
        assert_eq!(end, Ok(ItemEnd::Retrying));
        assert_eq!(b.status().pending, 1, "backing off counts as pending");
        assert!(!b.has_ready(), "not before its backoff");
        let (_, woke) = b.tick(now + Duration::from_secs(2));
        assert!(woke && b.has_ready());
        let retried = b.take(3, ("a", "p"), now + Duration::from_secs(3), TTL);
        assert_eq!(
            retried,
            [Taken {
                index: 0,
                attempt: 2,
                waited: Duration::from_secs(1),
                left: Duration::from_secs(597)
            }],
            "its second attempt, ready since its backoff ended, due 600 s after its first start"
        );
        let end = b.complete(0, ("p", 2), (Outcome::Failed, true, Some("flaky")), now);
        assert_eq!(end, Ok(ItemEnd::Failed), "its one retry is used");
        assert!(b.outcome().is_none(), "one failure is allowed");
        b.complete(1, ("p", 1), (Outcome::Succeeded, false, None), now)
            .unwrap();
        b.complete(2, ("p", 1), (Outcome::Succeeded, false, None), now)
            .unwrap();
        let (phase, message) = b.outcome().unwrap();
        assert_eq!(phase, TaskPhase::Succeeded);
        assert!(
            message.contains("2 of 3 items succeeded, 1 failed") && message.contains("item 0: flaky"),
            "{message}"
        );
        assert_eq!(b.status().failed_indexes, "0");

        let t = task(json!({"count": 5}), json!({}));
        let mut b = Board::new(t, Target::Agent("a".into()), policy(3, 600), (&[], &[]));
        b.take(5, ("a", "p"), now, TTL);
        b.complete(3, ("p", 1), (Outcome::Failed, false, Some("bad input")), now)
            .unwrap();
        let (phase, message) = b.outcome().unwrap();
        assert_eq!(
            phase,
            TaskPhase::Failed,
            "the first failure past maxFailedItems (0) ends it"
        );
        assert!(
            message.contains("more than the 0 spec.maxFailedItems allows"),
            "{message}"
        );
        assert!(b.take(5, ("a", "p"), now, TTL).is_empty() && !b.has_ready());
    }

    #[test]
    fn a_silent_pod_or_the_deadline_ends_an_item_s_attempt() {
        let t = task(json!({"count": 2}), json!({}));
        let mut b = Board::new(t, Target::Agent("a".into()), policy(1, 60), (&[], &[]));
        let now = Instant::now();
        b.take(2, ("a", "p"), now, TTL);
        b.renew(1, "p", 1, now + Duration::from_secs(10), TTL).unwrap();
        assert_eq!(b.renew(1, "q", 1, now, TTL), Err(ItemFence::LeaseLost));
        let (freed, _) = b.tick(now + Duration::from_secs(16));
        assert_eq!(freed, ["a"], "item 0's lease ran out; item 1 was renewed");
        assert_eq!(b.lease(0), None);
        assert_eq!(b.status().pending, 1, "retried");
        assert!(
            !b.progress().contains("item 0"),
            "a retried item is no failure yet: {}",
            b.progress()
        );
        let (freed, _) = b.tick(now + Duration::from_secs(61));
        assert_eq!(freed, ["a"]);
        let s = b.status();
        assert_eq!((s.failed, s.pending), (1, 1), "out of time: failed, not retried");
        assert!(
            b.progress()
                .contains("item 1: DeadlineExceeded: item 1 ran past its timeout of 60s"),
            "{}",
            b.progress()
        );
    }

    #[test]
    fn a_board_rebuilt_from_status_runs_only_the_unfinished_items() {
        let t = task(json!({"count": 6}), json!({"maxFailedItems": 2}));
        let done = cogo_api::task::parse_index_ranges("0-2,4", 6).unwrap();
        let mut b = Board::new(t, Target::Agent("a".into()), policy(0, 60), (&done, &[5]));
        let now = Instant::now();
        assert_eq!(taken(b.take(10, ("a", "p"), now, TTL)), [(3, 1)]);
        b.complete(3, ("p", 1), (Outcome::Succeeded, false, None), now)
            .unwrap();
        let s = b.status();
        assert_eq!(
            (s.succeeded_indexes.as_str(), s.failed_indexes.as_str()),
            ("0-4", "5")
        );
        assert_eq!(b.outcome().map(|o| o.0), Some(TaskPhase::Succeeded));
    }

    #[test]
    fn each_item_gets_its_input() {
        let t = task(json!({"inputs": [{"path": "a.rs"}, "b", 3]}), json!({}));
        assert_eq!(item_count(&t), 3);
        assert_eq!(item_input(&t, 0), json!({"path": "a.rs"}));
        assert_eq!(item_input(&t, 2), json!(3));
        let t = task(
            json!({"count": 5000}),
            json!({"input": {"n": "{{index}}", "url": "https://example.com/page/{{index}}.html", "keep": ["{{index}}", 7]}}),
        );
        assert_eq!(item_count(&t), 5000);
        assert_eq!(
            item_input(&t, 42),
            json!({"n": 42, "url": "https://example.com/page/42.html", "keep": [42, 7]})
        );
    }

    #[test]
    fn index_ranges_round_trip() {
        use cogo_api::task::{index_ranges, parse_index_ranges};
        assert_eq!(index_ranges([0, 1, 2, 3, 5, 7, 8, 9]), "0-3,5,7-9");
        assert_eq!(index_ranges([]), "");
        assert_eq!(index_ranges([4]), "4");
        assert_eq!(
            parse_index_ranges("0-3,5,7-9", 10),
            Some(vec![0, 1, 2, 3, 5, 7, 8, 9])
        );
        assert_eq!(parse_index_ranges("", 10), Some(vec![]));
        for bad in ["3-1", "x", "1-", "0-10", "1,,2"] {
            assert_eq!(parse_index_ranges(bad, 10), None, "{bad}");
        }
    }
}
