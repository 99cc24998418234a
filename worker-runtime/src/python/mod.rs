//! The PythonSandbox worker's job: `python.execute`. Real CPython runs the code in a fresh
//! workspace per job, in a sandbox of its own ([`sandbox`]: namespaces with bubblewrap, rlimits
//! and seccomp filters set by [`shim`], limits watched by the worker), with the packages it
//! asked for installed first, as wheels only, from the CogoWorker's package index into the
//! job's own directory.

pub mod sandbox;
pub mod seccomp;
pub mod shim;
pub mod workspace;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use cogo_api::{
    catalogue::python::{EXECUTE, ExecuteInput, ExecuteResult},
    common::quantity_bytes,
};
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, warn};

use self::{
    sandbox::{Mount, Run, Spec},
    shim::ShimLimits,
    workspace::Workspace,
};
use crate::jobs::{Job, JobError, JobRunner, env_or, fatal};

/// The limits of each job, from the CogoWorker's `sandbox`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall time (and CPU time).
    pub timeout: Duration,
    /// Address space, bytes.
    pub memory: u64,
    /// Processes and threads.
    pub processes: u64,
    /// Largest file, bytes.
    pub file_size: u64,
    /// Workspace, bytes.
    pub workspace: u64,
    /// Output kept, bytes.
    pub output: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(60),
            memory: 256 << 20,
            processes: 32,
            file_size: 64 << 20,
            workspace: 256 << 20,
            output: 1 << 20,
        }
    }
}

/// How the worker runs Python jobs.
#[derive(Clone, Debug)]
pub struct PythonConfig {
    /// CPython.
    pub python: PathBuf,
    /// bubblewrap.
    pub bwrap: PathBuf,
    /// pip, as a wheel CPython runs.
    pub pip: Option<PathBuf>,
    /// The worker's own binary (the sandbox shim).
    pub shim: PathBuf,
    /// Where jobs' directories are made.
    pub jobs_dir: PathBuf,
    /// pip's download cache, shared by jobs.
    pub pip_cache: PathBuf,
    /// Each job's limits.
    pub limits: Limits,
    /// Whether jobs may use the network.
    pub allow_egress: bool,
    /// Packages jobs may ask for, normalized (PEP 503).
    pub allowed_packages: BTreeSet<String>,
    /// The package index.
    pub package_index: String,
    /// When the worker runs as root, the sandbox runs as this UID and GID.
    pub run_as: Option<u32>,
    /// Site-packages directories of the system, hidden from jobs.
    pub hidden: Vec<String>,
}

/// UID and GID of sandboxes started by a worker running as root (the image's non-root user).
pub const SANDBOX_ID: u32 = 65532;

/// A package name as pip compares them (PEP 503).
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
        } else {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn first_pip_wheel() -> Option<PathBuf> {
    let own = PathBuf::from("/usr/lib/cogo/pip.whl");
    if own.exists() {
        return Some(own);
    }
    let mut wheels: Vec<PathBuf> = std::fs::read_dir("/usr/share/python-wheels")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pip-"))
        })
        .collect();
    wheels.sort();
    wheels.pop()
}

impl PythonConfig {
    /// The configuration from the environment the operator sets (`COGO_JOB_*`,
    /// `COGO_ALLOWED_PACKAGES`, `COGO_PACKAGE_INDEX_URL`, `COGO_ALLOW_EGRESS`), with the tools'
    /// paths overridable by `COGO_PYTHON`, `COGO_BWRAP`, `COGO_PIP_WHEEL` and `COGO_JOBS_DIR`.
    pub fn from_env() -> Result<Self, String> {
        let quantity = |v: &str| quantity_bytes(v).filter(|b| *b > 0);
        let defaults = Limits::default();
        let limits = Limits {
            timeout: Duration::from_secs(env_or(
                "COGO_JOB_TIMEOUT_SECONDS",
                |v| v.parse().ok().filter(|s: &u64| *s > 0),
                60,
            )?),
            memory: env_or("COGO_JOB_MEMORY_LIMIT", quantity, defaults.memory)?,
            processes: env_or(
                "COGO_JOB_MAX_PROCESSES",
                |v| v.parse().ok().filter(|n: &u64| *n > 0),
                defaults.processes,
            )?,
            file_size: env_or("COGO_JOB_MAX_FILE_SIZE", quantity, defaults.file_size)?,
            workspace: env_or("COGO_JOB_WORKSPACE_SIZE", quantity, defaults.workspace)?,
            output: env_or("COGO_JOB_MAX_OUTPUT_SIZE", quantity, defaults.output)?,
        };
        let allowed_packages = std::env::var("COGO_ALLOWED_PACKAGES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(normalize)
            .collect();
        let jobs_dir =
            PathBuf::from(std::env::var("COGO_JOBS_DIR").unwrap_or_else(|_| "/tmp/cogo-jobs".into()));
        let mut hidden = vec![];
        for candidate in ["/usr/lib/python3/dist-packages"]
            .into_iter()
            .map(PathBuf::from)
            .chain(
                std::fs::read_dir("/usr/local/lib")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path().join("dist-packages")),
            )
        {
            if candidate.is_dir() {
                hidden.push(candidate.display().to_string());
            }
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        Ok(PythonConfig {
            python: env_or(
                "COGO_PYTHON",
                |v| Some(PathBuf::from(v)),
                "/usr/bin/python3".into(),
            )?,
            bwrap: env_or("COGO_BWRAP", |v| Some(PathBuf::from(v)), "/usr/bin/bwrap".into())?,
            pip: std::env::var("COGO_PIP_WHEEL")
                .ok()
                .map(PathBuf::from)
                .or_else(first_pip_wheel),
            shim: std::env::current_exe().map_err(|e| format!("cannot find the worker's binary: {e}"))?,
            pip_cache: jobs_dir.with_file_name("cogo-pip-cache"),
            jobs_dir,
            limits,
            allow_egress: env_or("COGO_ALLOW_EGRESS", |v| v.parse().ok(), false)?,
            allowed_packages,
            package_index: std::env::var("COGO_PACKAGE_INDEX_URL")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "https://pypi.org/simple".into()),
            run_as: root.then_some(SANDBOX_ID),
            hidden,
        })
    }
}

/// Runs `python.execute` jobs.
pub struct PythonRunner {
    config: PythonConfig,
}

/// Numbers the jobs of this process, so no two share a directory.
static NEXT_JOB: AtomicU64 = AtomicU64::new(0);

/// The longest code, and the most stdin, a job takes.
const MAX_CODE_BYTES: usize = 1024 * 1024;
/// Environment variables a job may set, at most.
const MAX_ENV: usize = 64;
/// Packages a job may ask for, at most.
const MAX_PACKAGES: usize = 32;
/// Time pip may take.
const PIP_TIMEOUT: Duration = Duration::from_secs(180);

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

impl PythonRunner {
    /// A runner with `config`.
    pub fn new(config: PythonConfig) -> Self {
        PythonRunner { config }
    }

    /// Removes what jobs of an earlier run of this worker left behind (a crash, say).
    pub fn clear_leftovers(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.config.jobs_dir) {
            for e in entries.flatten() {
                // A Workspace removes itself, fixing permissions on the way.
                drop(Workspace::adopt(e.path(), self.config.run_as));
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PythonConfig {
        &self.config
    }

    /// Checks a job's input against the worker's limits; returns the requirements to install.
    pub fn validate(&self, input: &ExecuteInput) -> Result<Vec<String>, JobError> {
        let c = &self.config;
        if input.code.len() > MAX_CODE_BYTES || input.stdin.as_ref().is_some_and(|s| s.len() > MAX_CODE_BYTES)
        {
            return Err(fatal("code and stdin are at most 1 MiB each"));
        }
        if let Some(t) = input.timeout_seconds
            && (t == 0 || u64::from(t) > c.limits.timeout.as_secs())
        {
            return Err(fatal(format!(
                "timeoutSeconds must be 1 to {}, this worker's sandbox.timeoutSeconds; it is {t}",
                c.limits.timeout.as_secs()
            )));
        }
        if input.files.len() > workspace::MAX_INPUT_FILES {
            return Err(fatal(format!(
                "at most {} files may be given; there are {}",
                workspace::MAX_INPUT_FILES,
                input.files.len()
            )));
        }
        if input.env.len() > MAX_ENV {
            return Err(fatal(format!("at most {MAX_ENV} env variables may be set")));
        }
        for (k, v) in &input.env {
            let name_ok = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && k.len() <= 128;
            if !name_ok || v.len() > 32 * 1024 || v.contains('\0') {
                return Err(fatal(format!(
                    "env {k:?}: names are letters, digits and _ (not starting with a digit), values at most 32 KiB"
                )));
            }
        }
        if input.packages.len() > MAX_PACKAGES {
            return Err(fatal(format!("at most {MAX_PACKAGES} packages may be asked for")));
        }
        let mut reqs = Vec::new();
        for p in &input.packages {
            let (name, version) = match p.split_once("==") {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (p.trim(), None),
            };
            let version_ok = version.is_none_or(|v| {
                !v.is_empty()
                    && v.len() <= 64
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+!._-".contains(c))
            });
            if !valid_name(name) || !version_ok {
                return Err(fatal(format!(
                    "package {p:?} is not a package name, or a name==version"
                )));
            }
            if !c.allowed_packages.contains(&normalize(name)) {
                let allowed: Vec<&str> = c.allowed_packages.iter().map(String::as_str).collect();
                return Err(fatal(format!(
                    "package {name:?} is not in this worker's sandbox.allowedPackages ({})",
                    if allowed.is_empty() {
                        "none".into()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
            reqs.push(match version {
                Some(v) => format!("{name}=={v}"),
                None => name.to_string(),
            });
        }
        Ok(reqs)
    }

    fn spec(&self, command: Vec<String>, mounts: Vec<Mount>, env: Vec<(String, String)>) -> Spec {
        let c = &self.config;
        Spec {
            bwrap: c.bwrap.clone(),
            shim: c.shim.clone(),
            command,
            workdir: "/work".into(),
            mounts,
            hidden: c.hidden.clone(),
            env,
            network: c.allow_egress,
            limits: ShimLimits {
                memory: c.limits.memory,
                processes: c.limits.processes,
                file_size: c.limits.file_size,
                cpu_seconds: c.limits.timeout.as_secs().max(1),
            },
            timeout: c.limits.timeout,
            max_output: c.limits.output,
            workspace: None,
            stdin: vec![],
            run_as: c.run_as,
        }
    }

    /// Installs `reqs` into `target` with pip (wheels only, from the package index).
    async fn install(
        &self,
        ws: &Workspace,
        target: &Path,
        reqs: &[String],
        cancel: watch::Receiver<bool>,
    ) -> Result<(), JobError> {
        let c = &self.config;
        let pip = c
            .pip
            .clone()
            .ok_or_else(|| fatal("this worker image has no pip, so it installs no packages"))?;
        std::fs::create_dir_all(&c.pip_cache)
            .and_then(|_| match c.run_as {
                Some(id) => std::os::unix::fs::chown(&c.pip_cache, Some(id), Some(id)),
                None => Ok(()),
            })
            .map_err(|e| JobError::retryable(format!("cannot make pip's cache: {e}")))?;
        let mut command: Vec<String> = [
            c.python.display().to_string(),
            "/.cogo/pip.whl/pip".into(),
            "install".into(),
            "--no-input".into(),
            "--disable-pip-version-check".into(),
            "--no-warn-script-location".into(),
            "--only-binary=:all:".into(),
            "--target".into(),
            "/.cogo/packages".into(),
            "--cache-dir".into(),
            "/.cogo/pip-cache".into(),
            "--index-url".into(),
            c.package_index.clone(),
        ]
        .into();
        if let Some(host) = c
            .package_index
            .strip_prefix("http://")
            .and_then(|r| r.split(['/', ':']).next())
        {
            command.extend(["--trusted-host".into(), host.to_string()]);
        }
        command.extend(reqs.iter().cloned());
        let mounts = vec![
            Mount {
                host: pip,
                sandbox: "/.cogo/pip.whl".into(),
                writable: false,
            },
            Mount {
                host: target.to_path_buf(),
                sandbox: "/.cogo/packages".into(),
                writable: true,
            },
            Mount {
                host: c.pip_cache.clone(),
                sandbox: "/.cogo/pip-cache".into(),
                writable: true,
            },
            Mount {
                host: ws.work(),
                sandbox: "/work".into(),
                writable: false,
            },
        ];
        let env = vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/tmp".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        let mut spec = self.spec(command, mounts, env);
        // pip needs the index, its own time, and room for wheels.
        spec.network = true;
        spec.hidden.clear();
        spec.timeout = PIP_TIMEOUT;
        spec.limits = ShimLimits {
            memory: 1 << 30,
            processes: 64,
            file_size: 512 << 20,
            cpu_seconds: PIP_TIMEOUT.as_secs(),
        };
        let run = sandbox::run(&spec, cancel)
            .await
            .map_err(|e| JobError::retryable(e.to_string()))?;
        if run.exit_code != 0 || run.killed.is_some() {
            let out =
                String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
            let tail: Vec<&str> = out.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(fatal(format!(
                "pip could not install {}: {}",
                reqs.join(", "),
                tail.join("\n")
            )));
        }
        Ok(())
    }

    async fn execute(&self, job: &Job, mut cancel: watch::Receiver<bool>) -> Result<ExecuteResult, JobError> {
        if job.task_type != EXECUTE {
            return Err(fatal(format!(
                "a PythonSandbox worker runs {EXECUTE}, not {}",
                job.task_type
            )));
        }
        let input: ExecuteInput = serde_json::from_value(job.input.clone())
            .map_err(|e| fatal(format!("invalid {EXECUTE} input: {e}")))?;
        let reqs = self.validate(&input)?;
        let mut files = Vec::new();
        let mut size = 0u64;
        for f in &input.files {
            let path = workspace::check_path(&f.path).map_err(fatal)?;
            let bytes = workspace::decode(f).map_err(fatal)?;
            size += bytes.len() as u64;
            files.push((path, bytes));
        }
        if size > self.config.limits.workspace {
            return Err(fatal(format!(
                "the input files hold {size} bytes, more than the workspace's {}",
                self.config.limits.workspace
            )));
        }
        let id = format!(
            "{}-{}-{}",
            job.id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(64)
                .collect::<String>(),
            std::process::id(),
            NEXT_JOB.fetch_add(1, Ordering::Relaxed)
        );
        let io = |e: std::io::Error| JobError::retryable(format!("cannot prepare the job's workspace: {e}"));
        let ws = Workspace::create(&self.config.jobs_dir, &id, self.config.run_as).map_err(io)?;
        let inputs = ws.write_inputs(&files).map_err(io)?;
        let main = ws.write_private("main.py", input.code.as_bytes()).map_err(io)?;
        let mut mounts = vec![
            Mount {
                host: ws.work(),
                sandbox: "/work".into(),
                writable: true,
            },
            Mount {
                host: main,
                sandbox: "/.cogo/main.py".into(),
                writable: false,
            },
        ];
        let mut python_path = "/work".to_string();
        if !reqs.is_empty() {
            let target = ws.dir("packages").map_err(io)?;
            self.install(&ws, &target, &reqs, cancel.clone()).await?;
            mounts.push(Mount {
                host: target,
                sandbox: "/.cogo/packages".into(),
                writable: false,
            });
            python_path.push_str(":/.cogo/packages");
        }
        let mut env: Vec<(String, String)> = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HOME", "/work"),
            ("TMPDIR", "/tmp"),
            ("LANG", "C.UTF-8"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONUNBUFFERED", "1"),
            ("MALLOC_ARENA_MAX", "2"),
            ("OPENBLAS_NUM_THREADS", "1"),
            ("OMP_NUM_THREADS", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.push(("PYTHONPATH".into(), python_path));
        env.extend(input.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let command = vec![
            self.config.python.display().to_string(),
            "-B".into(),
            "/.cogo/main.py".into(),
        ];
        let mut spec = self.spec(command, mounts, env);
        let left = job.time_left();
        spec.timeout = spec
            .timeout
            .min(
                input
                    .timeout_seconds
                    .map_or(Duration::MAX, |s| Duration::from_secs(s.into())),
            )
            .min(left.max(Duration::from_secs(1)));
        spec.limits.cpu_seconds = spec.timeout.as_secs().max(1);
        spec.workspace = Some((ws.work(), self.config.limits.workspace));
        spec.stdin = input.stdin.clone().unwrap_or_default().into_bytes();
        let run: Run = sandbox::run(&spec, cancel.clone()).await.map_err(|e| {
            if *cancel.borrow_and_update() {
                fatal("cancelled")
            } else {
                warn!(job = %job.id, error = %e, "the sandbox failed");
                JobError::retryable(e.to_string())
            }
        })?;
        debug!(job = %job.id, exit = run.exit_code, ms = run.duration.as_millis() as u64, killed = ?run.killed, "job ended");
        Ok(ExecuteResult {
            exit_code: run.exit_code,
            stdout: String::from_utf8_lossy(&run.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&run.stderr).into_owned(),
            truncated: run.truncated,
            files: ws.outputs(&inputs),
            duration_ms: run.duration.as_millis() as u64,
            killed: run.killed,
        })
    }
}

impl JobRunner for PythonRunner {
    fn run<'a>(&'a self, job: Job, cancel: watch::Receiver<bool>) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(async move {
            let result = self.execute(&job, cancel).await?;
            serde_json::to_value(result).map_err(|e| fatal(format!("cannot encode the result: {e}")))
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let job = Job::new(
                "self-check",
                EXECUTE,
                serde_json::json!({"code": "print(6 * 7)"}),
                std::time::Duration::from_secs(30),
            );
            let (_tx, rx) = watch::channel(false);
            let run = self.execute(&job, rx).await.map_err(|e| e.message)?;
            if run.exit_code != 0 || run.stdout.trim() != "42" {
                return Err(format!(
                    "a trivial program did not run (exit {}): {}",
                    run.exit_code,
                    run.stderr.trim()
                ));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(allowed: &[&str]) -> PythonRunner {
        PythonRunner::new(PythonConfig {
            python: "/usr/bin/python3".into(),
            bwrap: "/usr/bin/bwrap".into(),
            pip: None,
            shim: "/bin/true".into(),
            jobs_dir: "/tmp/x".into(),
            pip_cache: "/tmp/y".into(),
            limits: Limits::default(),
            allow_egress: false,
            allowed_packages: allowed.iter().map(|p| normalize(p)).collect(),
            package_index: "https://pypi.org/simple".into(),
            run_as: None,
            hidden: vec![],
        })
    }

    fn input(v: Value) -> ExecuteInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn package_names_normalize_as_pip_does() {
        for (a, b) in [
            ("Python_Dateutil", "python-dateutil"),
            ("zope.interface", "zope-interface"),
            ("six", "six"),
        ] {
            assert_eq!(normalize(a), b);
        }
    }

    /// Every bad input is refused before anything runs, naming what is wrong.
    #[test]
    fn bad_inputs() {
        let r = runner(&["python-dateutil", "six"]);
        let cases = [
            (
                serde_json::json!({"code": "x", "timeoutSeconds": 3600}),
                "timeoutSeconds must be 1 to 60",
            ),
            (
                serde_json::json!({"code": "x", "packages": ["numpy"]}),
                "\"numpy\" is not in this worker's sandbox.allowedPackages (python-dateutil, six)",
            ),
            (
                serde_json::json!({"code": "x", "packages": ["six; os_name=='nt'"]}),
                "is not a package name",
            ),
            (
                serde_json::json!({"code": "x", "packages": ["six>=1"]}),
                "is not a package name",
            ),
            (
                serde_json::json!({"code": "x", "env": {"1BAD": "v"}}),
                "env \"1BAD\"",
            ),
            (serde_json::json!({"code": "x".repeat(2 << 20)}), "at most 1 MiB"),
        ];
        for (v, fragment) in cases {
            let err = r.validate(&input(v.clone())).unwrap_err();
            assert!(!err.retryable);
            assert!(err.message.contains(fragment), "{v:.60}: {}", err.message);
        }
        assert_eq!(
            r.validate(&input(
                serde_json::json!({"code": "x", "packages": ["Python_Dateutil==2.9.0", "six"]})
            ))
            .unwrap(),
            ["Python_Dateutil==2.9.0", "six"]
        );
        let none = runner(&[]);
        let err = none
            .validate(&input(serde_json::json!({"code": "x", "packages": ["six"]})))
            .unwrap_err();
        assert!(err.message.contains("(none)"), "{}", err.message);
    }
}
