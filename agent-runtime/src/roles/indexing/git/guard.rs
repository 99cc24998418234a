//! The guard of a fetch: a thread that trips the interrupt flag when the time runs out or the
//! download grows past the size limit, and that says which limit it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::{
    GitError, Limits,
    remote::{FetchFailure, classify},
};

/// How often the guard thread checks the clock and the size of the download.
const GUARD_TICK: Duration = Duration::from_millis(50);

/// The limit that made the guard interrupt the fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Tripped {
    Timeout = 1,
    TooLarge = 2,
}

/// A thread that trips the interrupt flag when time runs out or the download grows too big.
pub(super) struct Guard {
    /// Set to stop the fetch; shared with gitoxide.
    pub(super) interrupt: Arc<AtomicBool>,
    reason: Arc<AtomicU8>,
    done: Arc<AtomicBool>,
    timeout: Duration,
    started: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Guard {
    /// Starts watching the clock and the size of `pack_dir` against `limits`.
    pub(super) fn start(limits: &Limits, pack_dir: PathBuf, interrupt: Arc<AtomicBool>) -> Guard {
        let reason = Arc::new(AtomicU8::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let (timeout, max_bytes) = (limits.timeout, limits.max_bytes);
        let thread = {
            let (interrupt, reason, done) = (interrupt.clone(), reason.clone(), done.clone());
            std::thread::Builder::new()
                .name("git-fetch-guard".into())
                .spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        let tripped = if started.elapsed() >= timeout {
                            Some(Tripped::Timeout)
                        } else if dir_size(&pack_dir) > max_bytes {
                            Some(Tripped::TooLarge)
                        } else {
                            None
                        };
                        if let Some(tripped) = tripped {
                            reason.store(tripped as u8, Ordering::SeqCst);
                            interrupt.store(true, Ordering::SeqCst);
                            return;
                        }
                        std::thread::sleep(GUARD_TICK);
                    }
                })
                .ok()
        };
        Guard {
            interrupt,
            reason,
            done,
            timeout,
            started,
            thread,
        }
    }

    /// Which limit tripped the interrupt, if any.
    fn tripped(&self) -> Option<Tripped> {
        match self.reason.load(Ordering::SeqCst) {
            1 => Some(Tripped::Timeout),
            2 => Some(Tripped::TooLarge),
            _ => None,
        }
    }

    /// Whether the fetch should stop: interrupted, or out of time.
    pub(super) fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed) || self.started.elapsed() >= self.timeout
    }

    /// Stops the guard thread at its next tick.
    fn stop(&self) {
        self.done.store(true, Ordering::Relaxed);
    }

    /// Turns a fetch failure into the error the user should see.
    pub(super) fn explain(
        &self,
        failure: FetchFailure,
        url: &str,
        reference: Option<&str>,
        limits: &Limits,
    ) -> GitError {
        match self.tripped() {
            Some(Tripped::Timeout) => {
                return GitError::Timeout {
                    url: url.to_owned(),
                    limit: limits.timeout,
                };
            }
            Some(Tripped::TooLarge) => {
                return GitError::TooLarge {
                    limit: limits.max_bytes,
                };
            }
            None => {}
        }
        let ref_not_found = || GitError::RefNotFound {
            reference: reference.unwrap_or("HEAD").to_owned(),
            url: url.to_owned(),
        };
        match failure {
            FetchFailure::BadRef => ref_not_found(),
            FetchFailure::Gix(err) => classify(&err, url, ref_not_found),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Total size of the files directly in `dir` (the pack directory has no subdirectories).
pub(super) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
