//! The in-memory queue of accepted, not yet leased tasks: one queue per target (a named agent,
//! or a role) in each namespace, ordered by priority (higher first), then creation time, then
//! name. It holds no state of its own worth keeping: it is rebuilt from the watch cache on start.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use std::sync::Arc;

use cogo_api::{AgentRole, AgentTask};

use super::accept::Target;

/// A queued task's place in its queue.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    priority: Reverse<i32>,
    created: i64,
    name: String,
    /// The task's type, for leases that take only some types (an Executor's worker kinds).
    task_type: String,
    /// Not a sub-task: held back while its namespace runs its limit of tasks.
    top_level: bool,
    /// When it joined the queue (kept when its entry is updated in place).
    queued: Instant,
}

type QueueKey = (String, Target);

/// Tasks waiting: how many, and when the oldest was created (Unix seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waiting {
    /// How many.
    pub count: usize,
    /// The creation time of the oldest, if any waits.
    pub oldest: Option<i64>,
}

impl<'a> FromIterator<&'a Entry> for Waiting {
    fn from_iter<I: IntoIterator<Item = &'a Entry>>(entries: I) -> Self {
        entries.into_iter().fold(Waiting::default(), |w, e| Waiting {
            count: w.count + 1,
            oldest: Some(w.oldest.map_or(e.created, |o| o.min(e.created))),
        })
    }
}

/// When `task` was created, in Unix seconds (0 when the API server has not said).
pub fn created_second(task: &AgentTask) -> i64 {
    task.metadata
        .creation_timestamp
        .as_ref()
        .map(|c| c.0.as_second())
        .unwrap_or_default()
}

/// Queued tasks of every namespace and target.
#[derive(Debug, Default)]
pub struct TaskQueue {
    queues: HashMap<QueueKey, BTreeSet<Entry>>,
    index: HashMap<(String, String), (QueueKey, Entry)>,
    /// The task as last seen by the controller, so the broker can lease it without a read.
    objects: HashMap<(String, String), Arc<AgentTask>>,
    /// Queued tasks per namespace.
    per_namespace: HashMap<String, usize>,
    /// Tasks admitted under a namespace's queue limit and not queued yet (their acceptance is
    /// being written): they count against the limit, so tasks admitted together cannot pass it.
    admitting: std::collections::HashSet<(String, String)>,
    /// Tasks refused for a full queue, per namespace, by creation time then name: room goes to
    /// the oldest first, so newer tasks cannot keep taking it.
    refused: HashMap<String, BTreeSet<(i64, String)>>,
    /// When each task just popped had joined the queue, until [`TaskQueue::take_object`].
    popped: HashMap<(String, String), Instant>,
}

impl TaskQueue {
    /// Queues (or re-queues, after a change) the task `name` of type `task_type` in namespace
    /// `ns`. `created` orders equal priorities: older first. A `top_level` task (not a
    /// sub-task) waits while its namespace runs its limit of tasks.
    #[allow(clippy::too_many_arguments)]
    pub fn upsert(
        &mut self,
        ns: &str,
        name: &str,
        target: Target,
        task_type: &str,
        priority: i32,
        created: i64,
        top_level: bool,
    ) {
        let queued = self
            .index
            .get(&(ns.to_string(), name.to_string()))
            .map_or_else(Instant::now, |(_, e)| e.queued);
        self.unlink(ns, name);
        self.admitting.remove(&(ns.to_string(), name.to_string()));
        *self.per_namespace.entry(ns.to_string()).or_default() += 1;
        let key = (ns.to_string(), target);
        let entry = Entry {
            priority: Reverse(priority),
            created,
            name: name.to_string(),
            task_type: task_type.to_string(),
            top_level,
            queued,
        };
        self.queues.entry(key.clone()).or_default().insert(entry.clone());
        self.index
            .insert((ns.to_string(), name.to_string()), (key, entry));
    }

    /// Queues `task` for `target` by its priority and creation time, keeping the object for
    /// the lease; a `limited` task waits while its namespace runs its limit of tasks.
    pub fn upsert_task(&mut self, target: Target, task: Arc<AgentTask>, limited: bool) {
        let (Some(ns), Some(name)) = (task.metadata.namespace.clone(), task.metadata.name.clone()) else {
            return;
        };
        let created = created_second(&task);
        self.upsert(
            &ns,
            &name,
            target,
            &task.spec.task_type,
            task.spec.priority,
            created,
            limited,
        );
        self.attach(&ns, &name, task);
    }

    /// Keeps `task` (as the controller last saw it) with its queue entry, for the lease.
    pub fn attach(&mut self, ns: &str, name: &str, task: Arc<AgentTask>) {
        self.objects.insert((ns.to_string(), name.to_string()), task);
    }

    /// Replaces the object kept for `ns/name` with `task` when both are the same
    /// resourceVersion (one copy shared with the cache instead of two).
    pub fn share(&mut self, ns: &str, name: &str, task: &Arc<AgentTask>) {
        if let Some(kept) = self.objects.get_mut(&(ns.to_string(), name.to_string()))
            && !Arc::ptr_eq(kept, task)
            && kept.metadata.resource_version.is_some()
            && kept.metadata.resource_version == task.metadata.resource_version
        {
            *kept = task.clone();
        }
    }

    /// The task kept with a popped entry, if any, and how long the entry had been queued.
    pub fn take_object(&mut self, ns: &str, name: &str) -> (Option<Arc<AgentTask>>, Option<Duration>) {
        let key = (ns.to_string(), name.to_string());
        let waited = self.popped.remove(&key).map(|at| at.elapsed());
        (self.objects.remove(&key), waited)
    }

    /// Removes a task; true when it was queued.
    pub fn remove(&mut self, ns: &str, name: &str) -> bool {
        let key = (ns.to_string(), name.to_string());
        self.objects.remove(&key);
        self.popped.remove(&key);
        self.admitting.remove(&key);
        self.unrefuse(ns, name);
        self.unlink(ns, name)
    }

    fn unrefuse(&mut self, ns: &str, name: &str) {
        if let Some(r) = self.refused.get_mut(ns) {
            r.retain(|(_, n)| n != name);
            if r.is_empty() {
                self.refused.remove(ns);
            }
        }
    }

    /// Whether the task `ns/name`, created at `created` (Unix seconds), may join the queue of a
    /// namespace that holds at most `limit` tasks: it is queued or admitted already, or there is
    /// room and no older refused task waits for it. An admitted task holds its room until it
    /// is queued or removed; a refused one keeps its place in line.
    pub fn admit(&mut self, ns: &str, name: &str, created: i64, limit: usize) -> bool {
        let key = (ns.to_string(), name.to_string());
        if self.index.contains_key(&key) || self.admitting.contains(&key) {
            return true;
        }
        let admitting = self.admitting.iter().filter(|(n, _)| n == ns).count();
        let place = (created, name.to_string());
        let older_waits = self
            .refused
            .get(ns)
            .and_then(|r| r.first())
            .is_some_and(|first| *first < place);
        if self.queued_in(ns) + admitting >= limit || older_waits {
            self.refused.entry(ns.to_string()).or_default().insert(place);
            return false;
        }
        self.unrefuse(ns, name);
        self.admitting.insert(key);
        true
    }

    /// Removes every queued task that `keep` (given namespace and name) refuses; returns
    /// them.
    pub fn retain(&mut self, keep: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        self.admitting.retain(|(ns, name)| keep(ns, name));
        for (ns, r) in self.refused.iter_mut() {
            r.retain(|(_, name)| keep(ns, name));
        }
        self.refused.retain(|_, r| !r.is_empty());
        let gone: Vec<(String, String)> = self
            .index
            .keys()
            .filter(|(ns, name)| !keep(ns, name))
            .cloned()
            .collect();
        for (ns, name) in &gone {
            self.remove(ns, name);
        }
        gone
    }

    /// Removes a task's entry, keeping its object for [`TaskQueue::take_object`].
    fn unlink(&mut self, ns: &str, name: &str) -> bool {
        let Some((key, entry)) = self.index.remove(&(ns.to_string(), name.to_string())) else {
            return false;
        };
        if let Some(n) = self.per_namespace.get_mut(ns) {
            *n -= 1;
            if *n == 0 {
                self.per_namespace.remove(ns);
            }
        }
        if let Some(q) = self.queues.get_mut(&key) {
            q.remove(&entry);
            if q.is_empty() {
                self.queues.remove(&key);
            }
        }
        true
    }

    /// Takes up to `n` tasks for the agent `agent` of role `role` in `ns` whose type `wants`
    /// accepts: those sent to it by name and those sent to its role, merged in queue order,
    /// and of them at most `top_level_room` that are not sub-tasks. Tasks of other types, and
    /// top-level tasks past the room, keep their place.
    pub fn pop_for(
        &mut self,
        ns: &str,
        agent: &str,
        role: AgentRole,
        (n, mut top_level_room): (usize, usize),
        wants: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let taken = {
            let empty = BTreeSet::new();
            let queue = |t: Target| self.queues.get(&(ns.to_string(), t)).unwrap_or(&empty);
            let mut by_name = queue(Target::Agent(agent.to_string()))
                .iter()
                .filter(|e| wants(&e.task_type))
                .peekable();
            let mut by_role = queue(Target::Role(role))
                .iter()
                .filter(|e| wants(&e.task_type))
                .peekable();
            let mut taken = Vec::with_capacity(n);
            while taken.len() < n {
                let entry = match (by_name.peek(), by_role.peek()) {
                    (Some(a), Some(r)) if a <= r => by_name.next(),
                    (Some(_), Some(_)) => by_role.next(),
                    (Some(_), None) => by_name.next(),
                    (None, _) => by_role.next(),
                };
                match entry {
                    Some(e) if e.top_level && top_level_room == 0 => {}
                    Some(e) => {
                        top_level_room -= usize::from(e.top_level);
                        taken.push((e.name.clone(), e.queued));
                    }
                    None => break,
                }
            }
            taken
        };
        taken
            .into_iter()
            .map(|(name, queued)| {
                self.unlink(ns, &name);
                self.popped.insert((ns.to_string(), name.clone()), queued);
                name
            })
            .collect()
    }

    /// Tasks queued in `ns`, for any target.
    pub fn queued_in(&self, ns: &str) -> usize {
        self.per_namespace.get(ns).copied().unwrap_or(0)
    }

    /// Tasks waiting for the agent `agent` of role `role` in `ns` (by name or by role).
    pub fn pending_for(&self, ns: &str, agent: &str, role: AgentRole) -> Waiting {
        [Target::Agent(agent.to_string()), Target::Role(role)]
            .into_iter()
            .filter_map(|t| self.queues.get(&(ns.to_string(), t)))
            .flatten()
            .collect()
    }

    /// Tasks waiting in `ns`, for any target, whose type is run by workers of `kind`.
    pub fn pending_of_kind(&self, ns: &str, kind: cogo_api::WorkerKind) -> Waiting {
        self.queues
            .iter()
            .filter(|((n, _), _)| n == ns)
            .flat_map(|(_, entries)| entries.iter())
            .filter(|e| cogo_api::WorkerKind::for_task_type(&e.task_type) == Some(kind))
            .collect()
    }

    /// Whether `ns/name` is queued.
    pub fn contains(&self, ns: &str, name: &str) -> bool {
        self.index.contains_key(&(ns.to_string(), name.to_string()))
    }

    /// Every queued task.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> Target {
        Target::Agent(name.into())
    }

    #[test]
    fn jobs_of_a_kind_are_counted_across_targets_in_their_namespace() {
        use cogo_api::WorkerKind;
        let mut q = TaskQueue::default();
        q.upsert("ns", "p1", agent("executor"), "python.execute", 0, 1, true);
        q.upsert(
            "ns",
            "p2",
            Target::Role(AgentRole::Executor),
            "python.execute",
            0,
            2,
            true,
        );
        q.upsert("ns", "b1", agent("executor"), "browser.run", 0, 3, true);
        q.upsert("ns", "echo", agent("executor"), "cogo.echo", 0, 4, true);
        q.upsert("other", "p3", agent("executor"), "python.execute", 0, 5, true);
        let waiting = |count, oldest| Waiting { count, oldest };
        assert_eq!(
            q.pending_of_kind("ns", WorkerKind::PythonSandbox),
            waiting(2, Some(1))
        );
        assert_eq!(q.pending_of_kind("ns", WorkerKind::Browser), waiting(1, Some(3)));
        assert_eq!(q.pending_of_kind("ns", WorkerKind::FigmaMcp), waiting(0, None));
        let gone = q.retain(|_, name| name != "p1");
        assert_eq!(gone, [("ns".to_string(), "p1".to_string())]);
        assert_eq!(
            q.pending_of_kind("ns", WorkerKind::PythonSandbox),
            waiting(1, Some(2))
        );
    }

    #[test]
    fn the_cache_copy_of_the_same_version_replaces_the_queued_one() {
        let obj = |rv: &str| {
            let t: AgentTask = serde_json::from_value(serde_json::json!({
                "apiVersion": "cogo.xyz/v1alpha1", "kind": "AgentTask",
                "metadata": {"name": "t", "namespace": "ns", "resourceVersion": rv},
                "spec": {"type": "cogo.echo", "agent": "a"}}))
            .unwrap();
            Arc::new(t)
        };
        let mut q = TaskQueue::default();
        let written = obj("7");
        q.upsert_task(agent("a"), written.clone(), false);
        let older = obj("6");
        q.share("ns", "t", &older);
        assert!(
            Arc::ptr_eq(&q.objects[&("ns".into(), "t".into())], &written),
            "another version is not taken"
        );
        let cached = obj("7");
        q.share("ns", "t", &cached);
        q.share("ns", "missing", &cached);
        assert_eq!(q.objects.len(), 1, "nothing is kept for a task not queued");
        let kept = q.take_object("ns", "t").0.unwrap();
        assert!(Arc::ptr_eq(&kept, &cached) && !Arc::ptr_eq(&kept, &written));
    }

    #[test]
    fn a_popped_task_says_how_long_it_was_queued_from_when_it_first_joined() {
        let mut q = TaskQueue::default();
        q.upsert("ns", "t", agent("a"), "cogo.echo", 0, 1, false);
        std::thread::sleep(Duration::from_millis(30));
        // A change to the queued task keeps its place in time.
        q.upsert("ns", "t", agent("a"), "cogo.echo", 5, 1, false);
        assert_eq!(q.take_object("ns", "t").1, None, "not popped yet");
        assert_eq!(
            q.pop_for("ns", "a", AgentRole::Research, (1, usize::MAX), |_| true),
            ["t"]
        );
        let waited = q.take_object("ns", "t").1.expect("popped");
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert_eq!(q.take_object("ns", "t").1, None, "told once");

        q.upsert("ns", "u", agent("a"), "cogo.echo", 0, 1, false);
        q.pop_for("ns", "a", AgentRole::Research, (1, usize::MAX), |_| true);
        q.remove("ns", "u");
        assert!(q.popped.is_empty(), "a removed task leaves nothing behind");
    }

    #[test]
    fn priority_then_age_then_name() {
        let mut q = TaskQueue::default();
        q.upsert("ns", "old-low", agent("a"), "cogo.echo", 0, 1, true);
        q.upsert("ns", "new-high", agent("a"), "cogo.echo", 10, 5, true);
        q.upsert("ns", "old-high", agent("a"), "cogo.echo", 10, 2, true);
        q.upsert("ns", "b-tie", agent("a"), "cogo.echo", 0, 7, true);
        q.upsert("ns", "a-tie", agent("a"), "cogo.echo", 0, 7, true);
        assert_eq!(
            q.pop_for("ns", "a", AgentRole::Research, (10, usize::MAX), |_| true),
            ["old-high", "new-high", "old-low", "a-tie", "b-tie"]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn named_and_role_queues_merge_in_order_and_stay_apart_across_namespaces() {
        let mut q = TaskQueue::default();
        q.upsert(
            "ns",
            "by-role",
            Target::Role(AgentRole::Research),
            "cogo.echo",
            5,
            1,
            true,
        );
        q.upsert("ns", "by-name", agent("r1"), "cogo.echo", 5, 2, true);
        q.upsert("ns", "other-agent", agent("r2"), "cogo.echo", 100, 0, true);
        q.upsert(
            "ns",
            "other-role",
            Target::Role(AgentRole::Indexing),
            "cogo.echo",
            100,
            0,
            true,
        );
        q.upsert(
            "other",
            "elsewhere",
            Target::Role(AgentRole::Research),
            "cogo.echo",
            100,
            0,
            true,
        );
        assert_eq!(q.pending_for("ns", "r1", AgentRole::Research).count, 2);
        assert_eq!(
            q.pop_for("ns", "r1", AgentRole::Research, (1, usize::MAX), |_| true),
            ["by-role"]
        );
        assert_eq!(
            q.pop_for("ns", "r1", AgentRole::Research, (5, usize::MAX), |_| true),
            ["by-name"]
        );
        assert_eq!(
            q.pop_for("ns", "r1", AgentRole::Research, (5, usize::MAX), |_| true),
            Vec::<String>::new()
        );
        assert_eq!(
            q.len(),
            3,
            "other agents', roles' and namespaces' tasks stay queued"
        );
    }

    #[test]
    fn upsert_replaces_and_remove_forgets() {
        let mut q = TaskQueue::default();
        q.upsert("ns", "t", agent("a"), "cogo.echo", 0, 1, true);
        q.upsert("ns", "t", agent("a"), "cogo.echo", 9, 1, true);
        assert_eq!(q.len(), 1);
        q.upsert("ns", "u", agent("a"), "cogo.echo", 5, 0, true);
        assert_eq!(
            q.pop_for("ns", "a", AgentRole::Research, (1, usize::MAX), |_| true),
            ["t"],
            "the new priority counts"
        );
        assert!(q.remove("ns", "u"));
        assert!(!q.remove("ns", "u"));
        assert!(q.is_empty());
    }

    #[test]
    fn a_typed_pop_takes_only_its_types_and_leaves_the_rest_in_place() {
        let mut q = TaskQueue::default();
        q.upsert("ns", "echo-old", agent("x"), "cogo.echo", 0, 1, true);
        q.upsert("ns", "py-1", agent("x"), "python.execute", 0, 2, true);
        q.upsert(
            "ns",
            "py-role",
            Target::Role(AgentRole::Executor),
            "python.execute",
            5,
            9,
            true,
        );
        q.upsert("ns", "browser", agent("x"), "browser.run", 9, 0, true);
        let python = |t: &str| t.starts_with("python.");
        assert_eq!(
            q.pop_for("ns", "x", AgentRole::Executor, (5, usize::MAX), python),
            ["py-role", "py-1"]
        );
        assert_eq!(
            q.pop_for("ns", "x", AgentRole::Executor, (5, usize::MAX), python),
            Vec::<String>::new()
        );
        assert_eq!(
            q.pop_for("ns", "x", AgentRole::Executor, (5, usize::MAX), |t| !t
                .starts_with("browser.")),
            ["echo-old"]
        );
        assert_eq!(q.len(), 1, "the browser task waits for its own lease");
    }

    #[test]
    fn top_level_tasks_past_the_room_keep_their_place_and_sub_tasks_pass() {
        let mut q = TaskQueue::default();
        q.upsert("ns", "t1", agent("a"), "cogo.echo", 0, 1, true);
        q.upsert("ns", "t2", agent("a"), "cogo.echo", 0, 2, true);
        q.upsert("ns", "sub", agent("a"), "cogo.echo", 0, 3, false);
        q.upsert("ns", "t3", agent("a"), "cogo.echo", 0, 4, true);
        q.upsert("other", "o1", agent("a"), "cogo.echo", 0, 1, true);
        assert_eq!(
            (q.queued_in("ns"), q.queued_in("other"), q.queued_in("none")),
            (4, 1, 0)
        );
        assert_eq!(
            q.pop_for("ns", "a", AgentRole::Research, (10, 1), |_| true),
            ["t1", "sub"],
            "one top-level task fits; the sub-task is never held back"
        );
        assert_eq!(q.queued_in("ns"), 2);
        assert_eq!(
            q.pop_for("ns", "a", AgentRole::Research, (10, 0), |_| true),
            Vec::<String>::new()
        );
        assert_eq!(
            q.pop_for("ns", "a", AgentRole::Research, (10, 5), |_| true),
            ["t2", "t3"]
        );
        q.upsert("ns", "again", agent("a"), "cogo.echo", 0, 1, true);
        q.upsert("ns", "again", agent("a"), "cogo.echo", 5, 1, true);
        assert_eq!(q.queued_in("ns"), 1, "a task queued twice counts once");
        q.remove("ns", "again");
        assert_eq!(q.queued_in("ns"), 0);
    }

    #[test]
    fn admissions_hold_their_room_until_queued_or_removed() {
        let mut q = TaskQueue::default();
        q.upsert("ns", "queued", agent("a"), "cogo.echo", 0, 1, true);
        assert!(q.admit("ns", "queued", 1, 1), "a queued task is in already");
        assert!(q.admit("ns", "new", 2, 3));
        assert!(q.admit("ns", "new", 2, 3), "admitted twice holds one place");
        assert!(q.admit("ns", "second", 3, 3));
        assert!(
            !q.admit("ns", "third", 4, 3),
            "two admitted and one queued fill 3"
        );
        assert!(
            q.admit("other", "elsewhere", 9, 1),
            "other namespaces have their own room"
        );
        q.upsert("ns", "new", agent("a"), "cogo.echo", 0, 2, true);
        assert!(
            !q.admit("ns", "third", 4, 3),
            "queued now, it still holds its place"
        );
        q.remove("ns", "second");
        assert!(q.admit("ns", "third", 4, 3));
        q.remove("ns", "third");
        assert!(
            q.admit("ns", "fourth", 5, 3),
            "a task gone gives its admission back"
        );
    }

    #[test]
    fn refused_tasks_get_room_oldest_first() {
        let mut q = TaskQueue::default();
        q.upsert("ns", "queued", agent("a"), "cogo.echo", 0, 1, true);
        assert!(!q.admit("ns", "old", 2, 1));
        assert!(!q.admit("ns", "older", 1, 1));
        q.remove("ns", "queued");
        assert!(
            !q.admit("ns", "newest", 9, 1),
            "a new task waits behind the refused ones"
        );
        assert!(
            !q.admit("ns", "old", 2, 1),
            "room goes to the oldest refused task"
        );
        assert!(q.admit("ns", "older", 1, 1));
        q.upsert("ns", "older", agent("a"), "cogo.echo", 0, 1, true);
        q.remove("ns", "older");
        assert!(q.admit("ns", "old", 2, 1));
        q.remove("ns", "old");
        q.retain(|_, name| name != "newest");
        assert!(
            q.admit("ns", "later", 10, 1),
            "a refused task that is gone holds no place"
        );
    }
}
