//! The Chromium process: started headless with a fresh profile directory, spoken to over its
//! debugging pipe ([`Cdp`]), killed with every process it started.

use std::{
    collections::VecDeque,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::{io::AsyncBufReadExt, net::unix::pipe};
use tracing::{info, warn};

use super::cdp::Cdp;
use crate::python::sandbox;

/// How long the browser may take to start and answer its first command.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How Chromium is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchOptions {
    /// The Chromium binary (Debian's is `/usr/lib/chromium/chromium`).
    pub binary: PathBuf,
    /// Where profile directories are made.
    pub profiles_dir: PathBuf,
    /// Whether Chromium's own sandbox runs (it cannot as root).
    pub sandbox: bool,
    /// The JavaScript heap of one page, MiB.
    pub js_heap_mib: u32,
}

/// A running browser.
pub struct Browser {
    /// Its protocol connection.
    pub cdp: Cdp,
    /// Its version, as it says.
    pub version: String,
    /// How long it took to start.
    pub started_in: Duration,
    child: tokio::process::Child,
    profile: PathBuf,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// The flags every browser gets: headless, quiet, no background traffic, no GPU, no crash
/// reporter, no shared memory files, downloads kept away.
fn flags(options: &LaunchOptions, profile: &Path) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--headless",
        "--remote-debugging-pipe",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--disable-breakpad",
        "--disable-crash-reporter",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication,CertificateTransparencyComponentUpdater,DialMediaRouteProvider",
        "--metrics-recording-only",
        "--no-pings",
        "--password-store=basic",
        "--use-mock-keychain",
        "--mute-audio",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        "--font-render-hinting=none",
    ]
    .map(String::from)
    .to_vec();
    flags.push(format!("--user-data-dir={}", profile.display()));
    flags.push(format!("--js-flags=--max-old-space-size={}", options.js_heap_mib));
    if !options.sandbox {
        flags.push("--no-sandbox".into());
    }
    flags.push("about:blank".into());
    flags
}

impl Browser {
    /// Starts a browser and waits for its first answer.
    pub async fn launch(options: &LaunchOptions) -> Result<Browser, String> {
        let started = Instant::now();
        std::fs::create_dir_all(&options.profiles_dir)
            .map_err(|e| format!("cannot make {}: {e}", options.profiles_dir.display()))?;
        let profile = tempdir_in(&options.profiles_dir)?;
        let (commands_read, commands_write) =
            sandbox::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
        let (answers_read, answers_write) =
            sandbox::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
        let mut cmd = tokio::process::Command::new(&options.binary);
        cmd.args(flags(options, &profile))
            .env_clear()
            .env("HOME", &profile)
            .env("XDG_CONFIG_HOME", profile.join(".config"))
            .env("XDG_CACHE_HOME", profile.join(".cache"))
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let (cr, aw) = (commands_read.as_raw_fd(), answers_write.as_raw_fd());
        // SAFETY: between fork and exec only async-signal-safe calls: fcntl and dup2 on
        // descriptors the child inherited. Chromium reads commands on fd 3 and writes on fd 4.
        unsafe {
            cmd.pre_exec(move || {
                let a = libc::fcntl(cr, libc::F_DUPFD_CLOEXEC, 10);
                let b = libc::fcntl(aw, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", options.binary.display()))?;
        drop((commands_read, answers_write));
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(err) = child.stderr.take() {
            let lines = stderr.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(err).lines();
                let mut said = 0;
                while let Ok(Some(line)) = reader.next_line().await {
                    // Chromium's own errors, the first 50 of each browser, go to the worker's log
                    // (not those of D-Bus, which a pod does not have, nor the crash handler's,
                    // which the image leaves out).
                    let error = line.contains(":ERROR:") || line.contains(":FATAL:");
                    if said < 50 && error && !line.contains(":ERROR:dbus/") && !line.contains("crashpad") {
                        said += 1;
                        warn!(line = %line.chars().take(500).collect::<String>(), "chromium");
                    }
                    let mut kept = lines.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() == 20 {
                        kept.pop_front();
                    }
                    kept.push_back(line.chars().take(300).collect());
                }
            });
        }
        let cdp = Cdp::start(receiver(answers_read)?, sender(commands_write)?);
        let mut browser = Browser {
            cdp,
            version: String::new(),
            started_in: Duration::ZERO,
            child,
            profile,
            stderr,
        };
        match browser
            .cdp
            .call(None, "Browser.getVersion", json!({}), START_TIMEOUT)
            .await
        {
            Ok(v) => {
                browser.version = v["product"].as_str().unwrap_or("Chromium").to_string();
                browser.started_in = started.elapsed();
                info!(
                    version = browser.version,
                    ms = browser.started_in.as_millis() as u64,
                    "browser started"
                );
                Ok(browser)
            }
            Err(e) => {
                // Give its last words a moment to arrive.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let said = browser.last_words();
                browser.kill().await;
                Err(format!("the browser did not start: {e}{said}"))
            }
        }
    }

    /// The last lines the browser wrote on standard error, for error messages.
    pub fn last_words(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        if kept.is_empty() {
            String::new()
        } else {
            format!(
                "; it said: {}",
                kept.iter().cloned().collect::<Vec<_>>().join(" | ")
            )
        }
    }

    /// The browser's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process still runs and its pipe is open.
    pub fn alive(&mut self) -> bool {
        self.cdp.closed().is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the browser and every process it started, and removes its profile.
    pub async fn kill(mut self) {
        if let Some(pid) = self.child.id().filter(|p| *p > 1) {
            // SAFETY: signals the process group the browser leads (started with
            // process_group(0), so its group id is its pid).
            unsafe {
                if libc::getpgid(pid as i32) == pid as i32 {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
        }
        let _ = self.child.kill().await;
        if let Err(e) = std::fs::remove_dir_all(&self.profile) {
            warn!(error = %e, dir = %self.profile.display(), "cannot remove the browser's profile");
        }
    }
}

fn receiver(fd: OwnedFd) -> Result<pipe::Receiver, String> {
    pipe::Receiver::from_owned_fd(fd).map_err(|e| format!("cannot read the browser's pipe: {e}"))
}

fn sender(fd: OwnedFd) -> Result<pipe::Sender, String> {
    pipe::Sender::from_owned_fd(fd).map_err(|e| format!("cannot write the browser's pipe: {e}"))
}

/// A new directory of its own under `dir`.
fn tempdir_in(dir: &Path) -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "profile-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir(&path).map_err(|e| format!("cannot make {}: {e}", path.display()))?;
    Ok(path)
}

/// Where Chromium is, when `COGO_BROWSER_PATH` does not say: Debian's binary, or the first
/// `chromium` or `chromium-browser` on the path.
pub fn find_chromium() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/lib/chromium/chromium");
    if debian.is_file() {
        return Some(debian);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}
