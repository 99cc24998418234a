//! Following tasks: one watch of the namespace's AgentTasks serves every request waiting for a
//! task, each of which follows only the names it asked for.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use cogo_api::AgentTask;
use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;
use tracing::warn;

/// Everyone following a task, by name.
type Followers = HashMap<String, (watch::Sender<Option<Arc<AgentTask>>>, usize)>;

/// The watch, and who follows what.
pub struct Hub {
    api: Api<AgentTask>,
    followers: Mutex<Followers>,
    /// Errors of the watch so far: each may have lost changes.
    errors: std::sync::atomic::AtomicU64,
}

/// A request following one task; it stops following when dropped.
pub struct Follow {
    hub: Arc<Hub>,
    name: String,
    rx: watch::Receiver<Option<Arc<AgentTask>>>,
    /// The resourceVersion [`Follow::next`] last returned.
    last: Option<String>,
    /// The hub's watch errors when the task was last read from the API server.
    errors_seen: u64,
    /// When the task was last read from the API server.
    read_at: tokio::time::Instant,
}

impl Hub {
    /// A hub of the tasks `api` reaches; call [`Hub::run`] to start its watch.
    pub fn new(api: Api<AgentTask>) -> Arc<Hub> {
        Arc::new(Hub {
            api,
            followers: Mutex::new(HashMap::new()),
            errors: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Follows the task `name` (which may not exist yet).
    pub fn follow(self: &Arc<Hub>, name: &str) -> Follow {
        let mut followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        let entry = followers
            .entry(name.to_string())
            .or_insert_with(|| (watch::channel(None).0, 0));
        entry.1 += 1;
        Follow {
            hub: self.clone(),
            name: name.to_string(),
            rx: entry.0.subscribe(),
            last: None,
            errors_seen: self.errors.load(std::sync::atomic::Ordering::Relaxed),
            read_at: tokio::time::Instant::now(),
        }
    }

    fn seen(&self, task: AgentTask) {
        let followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((tx, _)) = followers.get(&task.name_any()) {
            tx.send_replace(Some(Arc::new(task)));
        }
    }

    /// Names followed now.
    pub fn followed(&self) -> usize {
        self.followers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Watches the tasks until the process ends, resuming after errors.
    pub async fn run(self: Arc<Hub>) {
        let stream = watcher(self.api.clone(), crate::kube_io::watch_config())
            .default_backoff()
            .touched_objects();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(task) => self.seen(task),
                Err(e) => {
                    self.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(error = %e, "the gateway's watch of AgentTasks failed; it resumes");
                }
            }
        }
    }
}

impl Follow {
    /// Waits for a version of the task newer than the one last returned, at most `within`.
    /// Reads it from the API server when the watch failed since the last read (a watch that
    /// restarts may miss a change), and every 30 s as a safety net: followers of quiet tasks
    /// cost the API server next to nothing.
    pub async fn next(&mut self, within: Duration) -> Option<Arc<AgentTask>> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let seen = self.rx.borrow_and_update().clone();
            if let Some(task) = seen.filter(|t| t.resource_version() != self.last) {
                self.last = task.resource_version();
                return Some(task);
            }
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep(left.min(Duration::from_secs(2))) => {
                    let errors = self.hub.errors.load(std::sync::atomic::Ordering::Relaxed);
                    if errors == self.errors_seen && self.read_at.elapsed() < Duration::from_secs(30) {
                        continue;
                    }
                    (self.errors_seen, self.read_at) = (errors, tokio::time::Instant::now());
                    if let Ok(Some(task)) = self.hub.api.get_opt(&self.name).await
                        && task.resource_version() != self.last
                    {
                        self.last = task.resource_version();
                        // What the watch delivers later of an older version is not news.
                        self.rx.borrow_and_update();
                        return Some(Arc::new(task));
                    }
                }
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let mut followers = self.hub.followers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = followers.get_mut(&self.name) {
            entry.1 -= 1;
            if entry.1 == 0 {
                followers.remove(&self.name);
            }
        }
    }
}
