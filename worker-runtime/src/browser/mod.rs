//! The Browser worker's jobs: `browser.screenshot` and `browser.run`. One headless Chromium
//! ([`process`]) per pod, spoken to over its debugging pipe ([`cdp`]); each job gets a fresh
//! browser context and tab ([`page`]) whose requests pass the [`policy`]. A browser that
//! stops answering, exits or breaks its pipe is killed with its processes and started again
//! for the next job; the job it failed is retried.

pub mod cdp;
pub mod page;
pub mod policy;
pub mod process;

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use cogo_api::catalogue::browser::{
    Action, MAX_STEPS, RUN, RunInput, RunResult, SCREENSHOT, ScreenshotInput, Step, Viewport,
};
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

use self::{
    cdp::Cdp,
    page::{Page, PageError},
    policy::UrlPolicy,
    process::{Browser, LaunchOptions},
};
use crate::jobs::{Job, JobError, JobRunner, env_or, fatal};

/// How the worker runs browser jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserConfig {
    /// How Chromium starts.
    pub launch: LaunchOptions,
    /// What pages may load.
    pub policy: UrlPolicy,
    /// How long a page may take to load.
    pub page_timeout: Duration,
    /// How long one step may take.
    pub step_timeout: Duration,
    /// How long one job may take in all.
    pub job_timeout: Duration,
}

impl BrowserConfig {
    /// Reads the configuration the operator gives the pod: `COGO_BROWSER_PATH`,
    /// `COGO_BROWSER_ALLOW_FILE_URLS`, `COGO_BROWSER_ALLOW_POD_ADDRESSES`, `COGO_POD_IP`,
    /// `COGO_BROWSER_PAGE_TIMEOUT_SECONDS`, `COGO_BROWSER_STEP_TIMEOUT_SECONDS`,
    /// `COGO_JOB_TIMEOUT_SECONDS`, `COGO_BROWSER_SANDBOX` and `COGO_BROWSER_PROFILES_DIR`.
    pub fn from_env() -> Result<Self, String> {
        let seconds = |v: &str| v.parse().ok().filter(|s: &u64| *s > 0).map(Duration::from_secs);
        let flag = |v: &str| v.parse::<bool>().ok();
        let binary = match std::env::var("COGO_BROWSER_PATH") {
            Ok(p) if !p.is_empty() => PathBuf::from(p),
            _ => process::find_chromium().unwrap_or_else(|| PathBuf::from("/usr/lib/chromium/chromium")),
        };
        // Chromium's sandbox cannot run as root; a root worker (a developer's machine) runs
        // without it, and says so.
        let root = unsafe { libc::geteuid() } == 0;
        let sandbox = env_or("COGO_BROWSER_SANDBOX", flag, !root)?;
        if root && sandbox {
            return Err("COGO_BROWSER_SANDBOX=true, but Chromium's sandbox cannot run as root".into());
        }
        if !sandbox {
            warn!("Chromium runs without its own sandbox (as root, or COGO_BROWSER_SANDBOX=false)");
        }
        let pod_ips = std::env::var("COGO_POD_IP")
            .unwrap_or_default()
            .split(',')
            .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .collect();
        Ok(BrowserConfig {
            launch: LaunchOptions {
                binary,
                profiles_dir: PathBuf::from(
                    std::env::var("COGO_BROWSER_PROFILES_DIR").unwrap_or_else(|_| "/tmp/cogo-browser".into()),
                ),
                sandbox,
                js_heap_mib: env_or(
                    "COGO_BROWSER_JS_HEAP_MIB",
                    |v| v.parse().ok().filter(|m| *m >= 16),
                    512,
                )?,
            },
            policy: UrlPolicy {
                allow_file: env_or("COGO_BROWSER_ALLOW_FILE_URLS", flag, false)?,
                allow_pod_addresses: env_or("COGO_BROWSER_ALLOW_POD_ADDRESSES", flag, false)?,
                pod_ips,
            },
            page_timeout: env_or(
                "COGO_BROWSER_PAGE_TIMEOUT_SECONDS",
                seconds,
                Duration::from_secs(30),
            )?,
            step_timeout: env_or(
                "COGO_BROWSER_STEP_TIMEOUT_SECONDS",
                seconds,
                Duration::from_secs(10),
            )?,
            job_timeout: env_or("COGO_JOB_TIMEOUT_SECONDS", seconds, Duration::from_secs(60))?,
        })
    }
}

/// The running browser and how many times one was started.
struct Current {
    browser: Option<Browser>,
    generation: u64,
}

/// Runs browser jobs in one shared browser.
pub struct BrowserRunner {
    config: BrowserConfig,
    policy: Arc<UrlPolicy>,
    current: Mutex<Current>,
    starts: AtomicU64,
}

impl BrowserRunner {
    /// A runner; the browser starts with the first job (or [`JobRunner::check`]).
    pub fn new(config: BrowserConfig) -> Self {
        BrowserRunner {
            policy: Arc::new(config.policy.clone()),
            config,
            current: Mutex::new(Current {
                browser: None,
                generation: 0,
            }),
            starts: AtomicU64::new(0),
        }
    }

    /// How many browsers this runner has started.
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }

    /// The running browser's process id, if one runs.
    pub async fn browser_pid(&self) -> Option<u32> {
        self.current.lock().await.browser.as_ref().and_then(Browser::pid)
    }

    /// The running browser, started (again) when there is none or it died.
    async fn browser(&self) -> Result<(Cdp, u64), String> {
        let mut current = self.current.lock().await;
        if let Some(b) = current.browser.as_mut() {
            if b.alive() {
                return Ok((b.cdp.clone(), current.generation));
            }
            warn!(said = b.last_words(), "the browser died; starting another");
            if let Some(b) = current.browser.take() {
                b.kill().await;
            }
        }
        let browser = Browser::launch(&self.config.launch).await?;
        self.starts.fetch_add(1, Ordering::Relaxed);
        current.generation += 1;
        let cdp = browser.cdp.clone();
        current.browser = Some(browser);
        Ok((cdp, current.generation))
    }

    /// Kills the browser of `generation`, if it still runs, so the next job starts another.
    async fn restart(&self, generation: u64, why: &str) {
        let mut current = self.current.lock().await;
        if current.generation == generation
            && let Some(b) = current.browser.take()
        {
            warn!(why, "the browser misbehaved; killing it");
            b.kill().await;
        }
    }

    async fn execute(&self, job: &Job, mut cancel: watch::Receiver<bool>) -> Result<Value, JobError> {
        let work = Work::read(job)?;
        let viewport = work.viewport();
        viewport.check().map_err(fatal)?;
        self.policy.check_page(work.url()).map_err(fatal)?;
        let left = job.time_left();
        let limit = self.config.job_timeout.min(left);
        let (cdp, generation) = self
            .browser()
            .await
            .map_err(|e| JobError::retryable(format!("the browser cannot start: {e}")))?;
        let opened = tokio::time::timeout(
            page::COMMAND_TIMEOUT * 2,
            Page::open(&cdp, self.policy.clone(), viewport),
        )
        .await;
        let page = match opened {
            Ok(Ok(page)) => page,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "it did not open a page in time".to_string(),
                };
                self.restart(generation, &why).await;
                return Err(JobError::retryable(format!(
                    "the browser cannot open a page: {why}"
                )));
            }
        };
        let outcome = tokio::select! {
            r = work.run(&page, &self.config) => r,
            _ = cancel.wait_for(|c| *c) => Err(PageError::Page("cancelled".into())),
            _ = tokio::time::sleep(limit) => Err(PageError::Page(format!(
                "the job did not finish within {} s", limit.as_secs()
            ))),
        };
        let closed = tokio::time::timeout(page::COMMAND_TIMEOUT, page.close()).await;
        if let Err(PageError::Browser(why)) = &outcome {
            self.restart(generation, why).await;
        } else if !matches!(closed, Ok(Ok(()))) {
            self.restart(generation, "it did not close a page").await;
        }
        outcome.map_err(|e| match e {
            PageError::Page(m) => fatal(m),
            PageError::Browser(m) => JobError::retryable(format!("the browser failed: {m}")),
        })
    }
}

/// A job's work, read from its input.
enum Work {
    Screenshot(ScreenshotInput),
    Run(RunInput),
}

impl Work {
    fn read(job: &Job) -> Result<Work, JobError> {
        match job.task_type.as_str() {
            SCREENSHOT => Ok(Work::Screenshot(job.read_input()?)),
            RUN => {
                let run: RunInput = job.read_input()?;
                if run.steps.len() > MAX_STEPS {
                    return Err(fatal(format!(
                        "steps: at most {MAX_STEPS}, not {}",
                        run.steps.len()
                    )));
                }
                for (i, step) in run.steps.iter().enumerate() {
                    step.check().map_err(|e| fatal(format!("steps[{i}]: {e}")))?;
                }
                Ok(Work::Run(run))
            }
            other => Err(fatal(format!("a Browser worker does not run {other}"))),
        }
    }

    fn url(&self) -> &str {
        match self {
            Work::Screenshot(s) => &s.url,
            Work::Run(r) => &r.url,
        }
    }

    fn viewport(&self) -> Viewport {
        match self {
            Work::Screenshot(s) => s.viewport,
            Work::Run(r) => r.viewport,
        }
        .unwrap_or_default()
    }

    async fn run(&self, page: &Page, config: &BrowserConfig) -> Result<Value, PageError> {
        page.navigate(self.url(), config.page_timeout).await?;
        match self {
            Work::Screenshot(s) => {
                if let Some(selector) = &s.wait_for {
                    page.wait_for(selector, config.step_timeout).await?;
                }
                let shot = page.screenshot(s.full_page, config.page_timeout).await?;
                Ok(serde_json::to_value(shot).unwrap_or_default())
            }
            Work::Run(r) => {
                let mut results = Vec::with_capacity(r.steps.len());
                for (i, step) in r.steps.iter().enumerate() {
                    let value = run_step(page, step, config).await.map_err(|e| match e {
                        PageError::Page(m) => {
                            PageError::Page(format!("steps[{i}] ({}): {m}", step.action.as_str()))
                        }
                        e => e,
                    })?;
                    results.push(value);
                }
                let (title, final_url) = page.location().await?;
                Ok(serde_json::to_value(RunResult {
                    results,
                    title,
                    final_url,
                })
                .unwrap_or_default())
            }
        }
    }
}

async fn run_step(page: &Page, step: &Step, config: &BrowserConfig) -> Result<Value, PageError> {
    let timeout = step
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(config.step_timeout)
        .min(config.step_timeout);
    let selector = step.selector.as_deref().unwrap_or_default();
    let text = step.text.as_deref().unwrap_or_default();
    match step.action {
        Action::Click => {
            page.click(selector, timeout).await?;
            page.settle(config.page_timeout).await?;
            Ok(Value::Null)
        }
        Action::Type => {
            page.focus(selector, timeout).await?;
            page.insert_text(text, timeout).await?;
            Ok(Value::Null)
        }
        Action::Press => {
            if step.selector.is_some() {
                page.focus(selector, timeout).await?;
            }
            page.press(text, timeout).await?;
            page.settle(config.page_timeout).await?;
            Ok(Value::Null)
        }
        Action::WaitFor => {
            match &step.selector {
                Some(s) => page.wait_for(s, timeout).await?,
                None => tokio::time::sleep(timeout).await,
            }
            Ok(Value::Null)
        }
        Action::Evaluate => {
            page.evaluate(step.script.as_deref().unwrap_or_default(), timeout)
                .await
        }
        Action::Extract => {
            page.extract(selector, step.attribute.as_deref(), step.html, step.all, timeout)
                .await
        }
        Action::Screenshot => Ok(serde_json::to_value(
            page.screenshot(step.full_page, config.page_timeout).await?,
        )
        .unwrap_or_default()),
    }
}

impl JobRunner for BrowserRunner {
    fn run<'a>(&'a self, job: Job, cancel: watch::Receiver<bool>) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(async move { self.execute(&job, cancel).await })
    }

    /// Starts the browser and opens and closes a page in it.
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let (cdp, generation) = self.browser().await?;
            let page = Page::open(&cdp, self.policy.clone(), Viewport::default()).await;
            match page {
                Ok(page) => page.close().await.map_err(|e| e.to_string()),
                Err(e) => {
                    self.restart(generation, &e.to_string()).await;
                    Err(format!("the browser cannot open a page: {e}"))
                }
            }?;
            info!(starts = self.starts(), "the browser works");
            Ok(())
        })
    }
}
