//! The operator's task broker, as the agent sees it: [`BrokerApi`], with [`HttpBroker`] (the
//! real one, over HTTP with the agent's token) and [`memory::MemoryBroker`] (in memory, for
//! tests and for running a role without an operator). Nothing here knows how tasks are run.

pub mod memory;

use std::{
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use cogo_api::broker::{
    CancelSubtaskRequest, CompleteRequest, ErrorBody, HeartbeatRequest, HeartbeatResponse, LeaseRequest,
    LeaseResponse, LeasedTask, SubtaskRequest, TaskView, WorkerKeySet, WorkerReport,
};
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use tracing::{info, warn};

/// A failed broker call.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The broker answered with an error body.
    Refused(u16, ErrorBody),
    /// No answer (connection, timeout, unreadable body).
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused(status, body) => write!(f, "{status} {}: {}", body.code, body.message),
            CallError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CallError {}

/// The calls an agent pod makes to the broker.
pub trait BrokerApi: Send + Sync + 'static {
    /// The pod this client speaks for.
    fn pod(&self) -> &str;
    /// Leases tasks as `req` asks (its `pod` is filled in), waiting up to `req.waitSeconds`.
    fn lease(&self, req: LeaseRequest) -> BoxFuture<'_, Result<Vec<LeasedTask>, CallError>>;
    /// Heartbeats a leased task, with how far it has come when that changed; true when it was
    /// cancelled.
    fn heartbeat<'a>(
        &'a self,
        task: &'a LeasedTask,
        progress: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, CallError>>;
    /// Reports an attempt's outcome.
    fn complete<'a>(
        &'a self,
        task: &'a LeasedTask,
        req: &'a CompleteRequest,
    ) -> BoxFuture<'a, Result<(), CallError>>;
    /// Creates a sub-task of `parent`, which this pod runs.
    fn create_subtask<'a>(
        &'a self,
        parent: &'a LeasedTask,
        req: &'a SubtaskRequest,
    ) -> BoxFuture<'a, Result<TaskView, CallError>>;
    /// Cancels the sub-task `name` of `parent`, which this pod runs.
    fn cancel_subtask<'a>(
        &'a self,
        parent: &'a LeasedTask,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), CallError>>;
    /// Reads a task of the agent's namespace.
    fn get_task<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<TaskView, CallError>>;
    /// Reports the workers connected to this (Executor) pod.
    fn report_workers<'a>(&'a self, report: &'a WorkerReport) -> BoxFuture<'a, Result<(), CallError>>;
    /// The public keys worker tokens are signed with.
    fn worker_keys(&self) -> BoxFuture<'_, Result<WorkerKeySet, CallError>>;
}

/// A shared broker client.
pub type SharedBroker = Arc<dyn BrokerApi>;

/// Where the agent's broker token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A token given once (a flag or an environment variable; for running outside a cluster).
    Fixed(String),
    /// A file, the key `token` of the agent's `<name>-broker-token` Secret mounted into the
    /// pod. The operator renews the short-lived token there; the agent reads it again whenever
    /// the broker refuses the one it has.
    File(PathBuf),
}

impl TokenSource {
    /// The token, read now.
    pub fn read(&self) -> std::io::Result<String> {
        match self {
            TokenSource::Fixed(t) => Ok(t.clone()),
            TokenSource::File(path) => std::fs::read_to_string(path).map(|t| t.trim().to_string()),
        }
    }
}

/// The broker over HTTP: `POST`/`GET` under `/v1` with the agent's bearer token.
#[derive(Clone)]
pub struct HttpBroker {
    http: reqwest::Client,
    base: String,
    source: TokenSource,
    token: Arc<RwLock<String>>,
    /// False while the broker refuses this pod's token; shown in readiness.
    authenticated: Arc<AtomicBool>,
    ready: Option<crate::pod::Ready>,
    namespace: String,
    agent: String,
    pod: String,
}

impl HttpBroker {
    /// A client of the broker at `base` (for example `http://cogo-operator.cogo-system.svc:8080`)
    /// acting for pod `pod` of the agent `agent` in `namespace`, with the token from `source`
    /// (a file that cannot be read yet is read again before each call until it can).
    pub fn new(base: &str, source: TokenSource, namespace: String, agent: String, pod: String) -> Self {
        let mut http = reqwest::Client::builder();
        // An https broker URL (a broker behind a TLS proxy) is verified with the system's roots.
        if let Ok(tls) = crate::tls::client_config() {
            http = http.tls_backend_preconfigured(tls.clone());
        }
        let http = http
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("cogo-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with a preconfigured TLS backend builds");
        let token = source.read().unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the broker token yet");
            String::new()
        });
        HttpBroker {
            http,
            base: base.trim_end_matches('/').to_string(),
            source,
            token: Arc::new(RwLock::new(token)),
            authenticated: Arc::new(AtomicBool::new(true)),
            ready: None,
            namespace,
            agent,
            pod,
        }
    }

    /// Makes `ready` (the pod's readiness) false while the broker refuses this pod's token.
    pub fn with_readiness(mut self, ready: crate::pod::Ready) -> Self {
        self.ready = Some(ready);
        self
    }

    /// Whether the broker took this pod's token on the last call that reached it.
    pub fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::SeqCst)
    }

    fn token(&self) -> String {
        let current = self.token.read().map(|t| t.clone()).unwrap_or_default();
        if current.is_empty() {
            self.reload();
            return self.token.read().map(|t| t.clone()).unwrap_or_default();
        }
        current
    }

    /// Reads the token again; true when it changed.
    fn reload(&self) -> bool {
        match self.source.read() {
            Ok(fresh) if !fresh.is_empty() => {
                let Ok(mut t) = self.token.write() else {
                    return false;
                };
                let changed = *t != fresh;
                *t = fresh;
                changed
            }
            Ok(_) => false,
            Err(e) => {
                warn!(error = %e, "cannot read the broker token");
                false
            }
        }
    }

    /// Sends the request `build` makes with the current token; when the broker refuses the
    /// token (401), reads it again and, if it changed, sends once more. Tracks whether this
    /// pod can authenticate, and says so in the log and in readiness when that changes.
    async fn send(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        let mut res = build(&self.token())
            .send()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        if res.status() == reqwest::StatusCode::UNAUTHORIZED && self.reload() {
            res = build(&self.token())
                .send()
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?;
        }
        let refused = res.status() == reqwest::StatusCode::UNAUTHORIZED;
        let was = self.authenticated.swap(!refused, Ordering::SeqCst);
        if let Some(ready) = &self.ready {
            if refused {
                ready.unset();
            } else {
                ready.set();
            }
        }
        match (was, refused) {
            (true, true) => {
                let err = refusal(res).await;
                tracing::error!(
                    error = %err, agent = %self.agent, namespace = %self.namespace,
                    "the broker refuses this pod's token: check that the Secret {}-broker-token is mounted \
                     and current (the operator renews it); not ready until it is",
                    self.agent
                );
                return Err(err);
            }
            (false, false) => info!("the broker takes this pod's token again; ready"),
            _ => {}
        }
        Ok(res)
    }

    async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let url = format!("{}{}", self.base, path);
        // Called inside a traced task, the call names its span: a sub-task made by it is
        // traced as that span's child.
        let traceparent = cogo_telemetry::traceparent(&tracing::Span::current());
        let res = self
            .send(|token| {
                let req = self
                    .http
                    .post(&url)
                    .bearer_auth(token)
                    .json(body)
                    .timeout(timeout);
                match &traceparent {
                    Some(tp) => req.header("traceparent", tp),
                    None => req,
                }
            })
            .await?;
        answer(res).await
    }

    async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, CallError> {
        let url = format!("{}{}", self.base, path);
        let res = self
            .send(|token| {
                self.http
                    .get(&url)
                    .bearer_auth(token)
                    .timeout(Duration::from_secs(15))
            })
            .await?;
        answer(res).await
    }
}

impl BrokerApi for HttpBroker {
    fn pod(&self) -> &str {
        &self.pod
    }

    fn lease(&self, mut req: LeaseRequest) -> BoxFuture<'_, Result<Vec<LeasedTask>, CallError>> {
        Box::pin(async move {
            req.pod = self.pod.clone();
            let path = format!("/v1/namespaces/{}/agents/{}/lease", self.namespace, self.agent);
            let timeout = Duration::from_secs(u64::from(req.wait_seconds) + 15);
            let res: LeaseResponse = self.post(&path, &req, timeout).await?;
            Ok(res.tasks)
        })
    }

    fn heartbeat<'a>(
        &'a self,
        task: &'a LeasedTask,
        progress: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, CallError>> {
        Box::pin(async move {
            let path = format!("/v1/namespaces/{}/tasks/{}/heartbeat", task.namespace, task.name);
            let req = HeartbeatRequest {
                pod: self.pod.clone(),
                attempt: task.attempt,
                progress: progress.map(str::to_string),
                item: task.item,
            };
            let res: HeartbeatResponse = self.post(&path, &req, Duration::from_secs(10)).await?;
            Ok(res.cancelled)
        })
    }

    fn complete<'a>(
        &'a self,
        task: &'a LeasedTask,
        req: &'a CompleteRequest,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let path = format!("/v1/namespaces/{}/tasks/{}/complete", task.namespace, task.name);
            let _: serde_json::Value = self.post(&path, req, Duration::from_secs(15)).await?;
            Ok(())
        })
    }

    fn create_subtask<'a>(
        &'a self,
        parent: &'a LeasedTask,
        req: &'a SubtaskRequest,
    ) -> BoxFuture<'a, Result<TaskView, CallError>> {
        Box::pin(async move {
            let path = format!(
                "/v1/namespaces/{}/tasks/{}/subtasks",
                parent.namespace, parent.name
            );
            self.post(&path, req, Duration::from_secs(15)).await
        })
    }

    fn cancel_subtask<'a>(
        &'a self,
        parent: &'a LeasedTask,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let path = format!(
                "/v1/namespaces/{}/tasks/{}/subtasks/{name}/cancel",
                parent.namespace, parent.name
            );
            let req = CancelSubtaskRequest {
                pod: self.pod.clone(),
                attempt: parent.attempt,
            };
            let _: serde_json::Value = self.post(&path, &req, Duration::from_secs(15)).await?;
            Ok(())
        })
    }

    fn get_task<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<TaskView, CallError>> {
        Box::pin(async move {
            self.get(&format!("/v1/namespaces/{}/tasks/{name}", self.namespace))
                .await
        })
    }

    fn report_workers<'a>(&'a self, report: &'a WorkerReport) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let path = format!("/v1/namespaces/{}/agents/{}/workers", self.namespace, self.agent);
            let url = format!("{}{path}", self.base);
            let res = self
                .send(|token| {
                    self.http
                        .post(&url)
                        .bearer_auth(token)
                        .json(report)
                        .timeout(Duration::from_secs(10))
                })
                .await?;
            if res.status().is_success() {
                return Ok(());
            }
            Err(refusal(res).await)
        })
    }

    fn worker_keys(&self) -> BoxFuture<'_, Result<WorkerKeySet, CallError>> {
        Box::pin(async move { self.get("/v1/worker-keys").await })
    }
}

/// The body of a successful answer, or the broker's error.
async fn answer<R: DeserializeOwned>(res: reqwest::Response) -> Result<R, CallError> {
    if res.status().is_success() {
        return res
            .json()
            .await
            .map_err(|e| CallError::Transport(format!("unreadable answer: {e}")));
    }
    Err(refusal(res).await)
}

async fn refusal(res: reqwest::Response) -> CallError {
    let status = res.status().as_u16();
    let body = res.json::<ErrorBody>().await.unwrap_or_else(|e| ErrorBody {
        code: "Unknown".into(),
        message: format!("an error without a readable body ({e})"),
    });
    CallError::Refused(status, body)
}

/// The `host:port` of an `http://` or `https://` URL, with the scheme's default port.
pub fn host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if has_port {
        return Some(authority.to_string());
    }
    let port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    Some(format!("{authority}:{port}"))
}

/// Resolves the broker's address (its Service name, through cluster DNS), retrying with
/// backoff until it succeeds, and logs what it found.
pub async fn resolve(url: String) {
    let Some(target) = host_port(&url) else {
        warn!(%url, "the broker URL is not an http(s) URL with a host; not resolving it");
        return;
    };
    let mut delay = Duration::from_millis(500);
    loop {
        match tokio::net::lookup_host(target.as_str()).await {
            Ok(addrs) => {
                let addrs: Vec<String> = addrs.map(|a| a.to_string()).collect();
                info!(broker = %target, addresses = ?addrs, "resolved the broker's address");
                return;
            }
            Err(e) => {
                warn!(broker = %target, error = %e, retry_in = ?delay, "cannot resolve the broker's address");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_and_port_of_broker_urls() {
        let cases = [
            (
                "http://cogo-operator.cogo-system.svc:8080",
                Some("cogo-operator.cogo-system.svc:8080"),
            ),
            ("http://broker/v1/lease", Some("broker:80")),
            ("https://broker.example", Some("broker.example:443")),
            ("http://10.96.0.7:8080/", Some("10.96.0.7:8080")),
            ("ftp://broker", None),
            ("broker:8080", None),
            ("http://", None),
            ("http://user@broker", None),
        ];
        for (url, expected) in cases {
            assert_eq!(host_port(url).as_deref(), expected, "{url}");
        }
    }
}
