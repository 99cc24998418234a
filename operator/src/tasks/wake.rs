//! Wake-ups of waiting lease requests, per agent: a task queued for an agent wakes only that
//! agent's long polls, one queued for a role only those of the namespace's agents of that role,
//! and a freed slot only the agent whose slot it was. A burst of tasks for one agent no longer
//! wakes every poll of every agent.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use cogo_api::CogoAgent;
use kube::{ResourceExt, runtime::reflector::Store};
use tokio::sync::Notify;

use super::accept::Target;

/// Wake-ups by namespace and agent name.
#[derive(Default, Debug)]
pub struct Wakeups {
    by_agent: Mutex<HashMap<(String, String), Arc<Notify>>>,
}

impl Wakeups {
    /// What the lease requests of `agent` in `ns` wait on.
    pub fn of(&self, ns: &str, agent: &str) -> Arc<Notify> {
        let Ok(mut m) = self.by_agent.lock() else {
            return Arc::new(Notify::new());
        };
        m.entry((ns.to_string(), agent.to_string()))
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Wakes the lease requests of `agent` in `ns`.
    pub fn agent(&self, ns: &str, agent: &str) {
        let n = self
            .by_agent
            .lock()
            .ok()
            .and_then(|m| m.get(&(ns.to_string(), agent.to_string())).cloned());
        if let Some(n) = n {
            n.notify_waiters();
        }
    }

    /// Wakes the lease requests that may take a task queued for `target` in `ns`: those of the
    /// named agent, or of every agent of the role there (per `agents`).
    pub fn target(&self, ns: &str, target: &Target, agents: &Store<CogoAgent>) {
        match target {
            Target::Agent(name) => self.agent(ns, name),
            Target::Role(role) => {
                for a in agents.state() {
                    if a.namespace().as_deref() == Some(ns) && a.spec.role == *role {
                        self.agent(ns, &a.name_any());
                    }
                }
            }
        }
    }

    /// Wakes the lease requests of every agent of `ns` (a slot of the namespace's running
    /// limit was freed).
    pub fn namespace(&self, ns: &str) {
        let waiting: Vec<Arc<Notify>> = self
            .by_agent
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| n == ns)
                    .map(|(_, w)| w.clone())
                    .collect()
            })
            .unwrap_or_default();
        for n in waiting {
            n.notify_waiters();
        }
    }

    /// Wakes every waiting lease request, and forgets agents nobody waits for.
    pub fn all(&self) {
        if let Ok(mut m) = self.by_agent.lock() {
            m.retain(|_, n| Arc::strong_count(n) > 1);
            for n in m.values() {
                n.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cogo_api::AgentRole;
    use kube::runtime::{reflector, watcher};

    use super::*;

    fn agent(ns: &str, name: &str, role: &str) -> CogoAgent {
        let mut a = CogoAgent::new(
            name,
            serde_json::from_value(serde_json::json!({"role": role})).unwrap(),
        );
        a.metadata.namespace = Some(ns.into());
        a
    }

    /// Whether a waiter registered on `n` is woken within a short while after `wake` runs.
    async fn woken(n: Arc<Notify>, wake: impl FnOnce()) -> bool {
        let waiting = n.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        wake();
        tokio::time::timeout(Duration::from_millis(50), waiting)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn only_the_agents_that_can_take_the_work_are_woken() {
        let (store, mut writer) = reflector::store();
        for a in [
            agent("ns", "r1", "Research"),
            agent("ns", "r2", "Research"),
            agent("ns", "o1", "Orchestrator"),
            agent("other", "r3", "Research"),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(a));
        }
        let w = Wakeups::default();
        let by_role = Target::Role(AgentRole::Research);
        assert!(woken(w.of("ns", "r1"), || w.target("ns", &by_role, &store)).await);
        assert!(woken(w.of("ns", "r2"), || w.target("ns", &by_role, &store)).await);
        assert!(
            !woken(w.of("ns", "o1"), || w.target("ns", &by_role, &store)).await,
            "another role"
        );
        assert!(
            !woken(w.of("other", "r3"), || w.target("ns", &by_role, &store)).await,
            "another namespace"
        );
        let named = Target::Agent("r1".into());
        assert!(woken(w.of("ns", "r1"), || w.target("ns", &named, &store)).await);
        assert!(!woken(w.of("ns", "r2"), || w.target("ns", &named, &store)).await);
        assert!(
            woken(w.of("ns", "o1"), || w.agent("ns", "o1")).await,
            "a freed slot"
        );
        assert!(woken(w.of("other", "r3"), || w.all()).await);
    }
}
