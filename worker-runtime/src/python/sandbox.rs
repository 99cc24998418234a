//! Running one program in a sandbox: bubblewrap gives it new user, mount, PID, IPC, UTS and
//! (unless egress is allowed) network namespaces, a root of read-only system directories, a
//! workspace and nothing else (no `/proc`, none of the worker's files or environment); the
//! worker's own binary, as `sandbox-exec`, then sets the resource limits from inside the user
//! namespace and installs the seccomp filters before it executes the program. The worker
//! watches the run: wall time, output size, processes and workspace size, and kills the whole
//! sandbox when one is exceeded.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use cogo_api::catalogue::python::KillReason;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    sync::watch,
};

use super::shim::ShimLimits;

/// Where a path of the host appears in the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Host path.
    pub host: PathBuf,
    /// Path in the sandbox.
    pub sandbox: String,
    /// Whether the sandbox may write to it.
    pub writable: bool,
}

/// One program to run in a sandbox.
#[derive(Clone, Debug)]
pub struct Spec {
    /// bubblewrap.
    pub bwrap: PathBuf,
    /// The worker's binary, run as `sandbox-exec` inside.
    pub shim: PathBuf,
    /// The program and its arguments, as seen inside.
    pub command: Vec<String>,
    /// The working directory inside.
    pub workdir: String,
    /// Mounts besides the system directories.
    pub mounts: Vec<Mount>,
    /// Empty directories laid over system paths (to hide them).
    pub hidden: Vec<String>,
    /// The environment, and nothing else.
    pub env: Vec<(String, String)>,
    /// Whether it shares the worker's network.
    pub network: bool,
    /// Limits the shim sets.
    pub limits: ShimLimits,
    /// Wall time.
    pub timeout: Duration,
    /// Bytes of stdout and stderr kept.
    pub max_output: u64,
    /// Bytes its workspace may hold, and where it is (on the host).
    pub workspace: Option<(PathBuf, u64)>,
    /// Fed to its standard input.
    pub stdin: Vec<u8>,
    /// Drop to this UID and GID before starting bubblewrap (when the worker runs as root).
    pub run_as: Option<u32>,
}

/// System directories the sandbox sees, read-only, where they exist.
const SYSTEM_DIRS: [&str; 6] = ["/usr", "/lib", "/lib64", "/bin", "/etc/ssl", "/etc/alternatives"];

impl Spec {
    /// bubblewrap's arguments, with `status_fd` for its JSON status.
    pub fn bwrap_args(&self, status_fd: i32) -> Vec<String> {
        let mut a: Vec<String> = [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "sandbox",
            "--clearenv",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !self.network {
            a.push("--unshare-net".into());
        }
        for dir in SYSTEM_DIRS {
            a.extend(["--ro-bind-try".into(), dir.into(), dir.into()]);
        }
        for dir in &self.hidden {
            a.extend(["--tmpfs".into(), dir.clone()]);
        }
        for m in &self.mounts {
            let flag = if m.writable { "--bind" } else { "--ro-bind" };
            a.extend([flag.into(), m.host.display().to_string(), m.sandbox.clone()]);
        }
        a.extend([
            "--ro-bind".into(),
            self.shim.display().to_string(),
            "/.cogo/shim".into(),
        ]);
        for (k, v) in &self.env {
            a.extend(["--setenv".into(), k.clone(), v.clone()]);
        }
        a.extend([
            "--chdir".into(),
            self.workdir.clone(),
            "--json-status-fd".into(),
            status_fd.to_string(),
            "--".into(),
            "/.cogo/shim".into(),
            "sandbox-exec".into(),
        ]);
        a.extend(self.limits.args());
        a.push("--".into());
        a.extend(self.command.iter().cloned());
        a
    }
}

/// How a sandboxed run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Exit code; 128 + N for a signal N.
    pub exit_code: i32,
    /// Standard output, up to the limit.
    pub stdout: Vec<u8>,
    /// Standard error, up to the limit.
    pub stderr: Vec<u8>,
    /// Whether output was cut.
    pub truncated: bool,
    /// Why the worker stopped it.
    pub killed: Option<KillReason>,
    /// From start to end.
    pub duration: Duration,
}

/// Why a sandbox could not run the program at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the sandbox could not start: {0}")]
pub struct SandboxError(pub String);

/// How often the worker looks at a run's output.
const WATCH_EVERY: Duration = Duration::from_millis(20);
/// How often it counts a run's processes (a scan of /proc, so not for the many runs that end
/// within this time): a fork bomb sits at its limit, so a sample finds it.
const COUNT_EVERY: Duration = Duration::from_millis(100);
/// How often it measures the workspace.
const MEASURE_EVERY: Duration = Duration::from_millis(200);
/// Exit code of the shim when it cannot set the job up.
const SHIM_FAILED: i32 = 125;

/// A pipe whose two ends close on exec: (read, write).
pub(crate) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and are owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads `from` into a buffer, counting every byte in `total`; past `max` total bytes, stops
/// keeping bytes, sets `over` and keeps draining.
async fn collect(
    mut from: impl AsyncRead + Unpin,
    total: Arc<AtomicU64>,
    max: u64,
    over: Arc<AtomicBool>,
) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => n,
        };
        let before = total.fetch_add(n as u64, Ordering::SeqCst);
        let room = max.saturating_sub(before) as usize;
        kept.extend_from_slice(&buf[..n.min(room)]);
        if before + n as u64 > max {
            over.store(true, Ordering::SeqCst);
        }
    }
}

/// The pid of the program bubblewrap started, from its JSON status lines.
fn child_pid(status: &str) -> Option<u32> {
    status.lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        v.get("child-pid")?.as_u64().map(|p| p as u32)
    })
}

/// Tasks (processes and threads) of `root` and every process below it, from /proc.
pub fn tasks_under(root: u32) -> u32 {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut threads: HashMap<u32, u32> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces: fields start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(ppid), Some(n)) = (
            fields.get(1).and_then(|p| p.parse().ok()),
            fields.get(17).and_then(|t| t.parse().ok()),
        ) else {
            continue;
        };
        parent.insert(pid, ppid);
        threads.insert(pid, n);
    }
    threads
        .iter()
        .filter(|(pid, _)| {
            let mut p = **pid;
            for _ in 0..64 {
                if p == root {
                    return true;
                }
                match parent.get(&p) {
                    Some(&pp) if pp != 0 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .map(|(_, n)| *n)
        .sum()
}

/// Bytes under `dir` (regular files, not following links), at most `limit` + 1 counted.
pub fn bytes_under(dir: &Path, limit: u64) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    let mut entries = 0;
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else { continue };
        for e in read.flatten() {
            entries += 1;
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
            if total > limit || entries > 100_000 {
                return total.max(limit + 1);
            }
        }
    }
    total
}

/// Runs `spec` until it ends, breaks a limit, or `cancel` turns true.
pub async fn run(spec: &Spec, mut cancel: watch::Receiver<bool>) -> Result<Run, SandboxError> {
    let (status_read, status_write) = pipe().map_err(|e| SandboxError(format!("cannot make a pipe: {e}")))?;
    let status_fd = status_write.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&spec.bwrap);
    cmd.args(spec.bwrap_args(status_fd))
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(id) = spec.run_as {
        cmd.uid(id).gid(id);
    }
    // SAFETY: between fork and exec only async-signal-safe calls: fcntl on a descriptor the
    // child inherited, so bubblewrap keeps its status descriptor open.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(status_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| SandboxError(format!("cannot start {}: {e}", spec.bwrap.display())))?;
    drop(status_write);
    let status = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut text = String::new();
        let _ = std::fs::File::from(status_read).read_to_string(&mut text);
        text
    });
    if let Some(mut stdin) = child.stdin.take() {
        let input = spec.stdin.clone();
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    let total = Arc::new(AtomicU64::new(0));
    let over = Arc::new(AtomicBool::new(false));
    let out = tokio::spawn(collect(
        child.stdout.take().expect("piped"),
        total.clone(),
        spec.max_output,
        over.clone(),
    ));
    let err = tokio::spawn(collect(
        child.stderr.take().expect("piped"),
        total.clone(),
        spec.max_output,
        over.clone(),
    ));
    let root = child.id().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut watch = tokio::time::interval(WATCH_EVERY);
    let (mut counted, mut measured) = (Instant::now(), Instant::now());
    let mut killed = None;
    let exit = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = tokio::time::sleep_until(deadline) => killed = Some(KillReason::Timeout),
            _ = cancel.changed() => {
                if *cancel.borrow() {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Err(SandboxError("cancelled".into()));
                }
            }
            _ = watch.tick() => {
                if over.load(Ordering::SeqCst) {
                    killed = Some(KillReason::Output);
                } else if root != 0 && counted.elapsed() >= COUNT_EVERY {
                    counted = Instant::now();
                    // bubblewrap's outer process is not in the job; everything below it is.
                    if u64::from(tasks_under(root).saturating_sub(1)) >= spec.limits.processes {
                        killed = Some(KillReason::Processes);
                    }
                } else if let Some((dir, max)) = &spec.workspace
                    && measured.elapsed() >= MEASURE_EVERY
                {
                    measured = Instant::now();
                    if bytes_under(dir, *max) > *max {
                        killed = Some(KillReason::Output);
                    }
                }
            }
        }
        if killed.is_some() {
            let _ = child.start_kill();
            break child.wait().await;
        }
    };
    let duration = started.elapsed();
    let exit = exit.map_err(|e| SandboxError(format!("cannot wait for the sandbox: {e}")))?;
    let stdout = out.await.unwrap_or_default();
    let stderr = err.await.unwrap_or_default();
    let status = status.await.unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let exit_code = exit
        .code()
        .or_else(|| exit.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    if killed.is_none() {
        if child_pid(&status).is_none() {
            return Err(SandboxError(format!(
                "bubblewrap failed (exit {exit_code}): {}",
                String::from_utf8_lossy(&stderr).trim()
            )));
        }
        if exit_code == SHIM_FAILED && stderr.starts_with(b"cogo sandbox: ") {
            return Err(SandboxError(String::from_utf8_lossy(&stderr).trim().to_string()));
        }
    }
    let killed = killed
        .or_else(|| ran_out_of_memory(exit_code, &stderr))
        .or_else(|| out_of_cpu(exit_code).then_some(KillReason::Timeout));
    Ok(Run {
        exit_code,
        truncated: over.load(Ordering::SeqCst),
        stdout,
        stderr,
        killed,
        duration,
    })
}

/// A program that died of its memory limit: Python's uncaught `MemoryError`, or killed by the
/// kernel (SIGKILL that the worker did not send: the pod's memory cgroup).
fn ran_out_of_memory(exit_code: i32, stderr: &[u8]) -> Option<KillReason> {
    let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(4096)..]);
    let last = tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let memory_error = exit_code == 1 && last.starts_with("MemoryError");
    (memory_error || exit_code == 128 + libc::SIGKILL).then_some(KillReason::Memory)
}

/// Whether a run ended with SIGXCPU: its CPU time was up.
fn out_of_cpu(exit_code: i32) -> bool {
    exit_code == 128 + libc::SIGXCPU
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            bwrap: "/usr/bin/bwrap".into(),
            shim: "/usr/local/bin/cogo-worker".into(),
            command: vec!["/usr/bin/python3".into(), "/.cogo/main.py".into()],
            workdir: "/work".into(),
            mounts: vec![Mount {
                host: "/tmp/job/work".into(),
                sandbox: "/work".into(),
                writable: true,
            }],
            hidden: vec!["/usr/lib/python3/dist-packages".into()],
            env: vec![("HOME".into(), "/work".into())],
            network: false,
            limits: ShimLimits {
                memory: 1,
                processes: 2,
                file_size: 3,
                cpu_seconds: 4,
            },
            timeout: Duration::from_secs(5),
            max_output: 10,
            workspace: None,
            stdin: vec![],
            run_as: None,
        }
    }

    #[test]
    fn the_sandbox_gets_its_namespaces_mounts_and_limits() {
        let args = spec().bwrap_args(7).join(" ");
        for part in [
            "--unshare-user --unshare-pid --unshare-ipc --unshare-uts",
            "--die-with-parent --new-session",
            "--clearenv",
            "--unshare-net",
            "--ro-bind-try /usr /usr",
            "--tmpfs /usr/lib/python3/dist-packages",
            "--bind /tmp/job/work /work",
            "--ro-bind /usr/local/bin/cogo-worker /.cogo/shim",
            "--setenv HOME /work",
            "--chdir /work --json-status-fd 7 -- /.cogo/shim sandbox-exec --memory=1 --processes=2 --file-size=3 --cpu=4 -- /usr/bin/python3 /.cogo/main.py",
        ] {
            assert!(args.contains(part), "{part}\n{args}");
        }
        assert!(
            !args.split(' ').any(|a| a == "--proc"),
            "no /proc: the job sees no process of the pod"
        );
        let with_net = Spec {
            network: true,
            ..spec()
        }
        .bwrap_args(7)
        .join(" ");
        assert!(!with_net.contains("--unshare-net"));
    }

    #[test]
    fn memory_deaths_are_told_apart() {
        let traceback =
            b"Traceback (most recent call last):\n  File \"/.cogo/main.py\", line 1\nMemoryError\n";
        assert_eq!(ran_out_of_memory(1, traceback), Some(KillReason::Memory));
        assert_eq!(ran_out_of_memory(137, b""), Some(KillReason::Memory));
        assert_eq!(ran_out_of_memory(1, b"ValueError: x\n"), None);
        assert_eq!(ran_out_of_memory(0, b"MemoryError\n"), None);
    }

    #[test]
    fn status_lines_name_the_child() {
        assert_eq!(
            child_pid("{ \"child-pid\": 4242 }\n{ \"exit-code\": 0 }\n"),
            Some(4242)
        );
        assert_eq!(child_pid(""), None);
    }

    #[test]
    fn this_process_has_at_least_one_task() {
        assert!(tasks_under(std::process::id()) >= 1);
        assert_eq!(tasks_under(u32::MAX), 0);
    }
}
