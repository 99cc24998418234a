//! The worker's link to its Executor: dial its WebSocket with the worker's token (read from its
//! file at every connect, so a reissued token is picked up), announce capacity, run the jobs it
//! sends, answer pings, heartbeat, and dial again with backoff and jitter when the link breaks
//! (the jobs of a broken link are stopped: the Executor runs them elsewhere). On shutdown the
//! worker takes no new job, finishes what it runs within the grace period and hands the rest
//! back as retryable errors.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use cogo_api::worker::message::{
    ErrorData, FEATURES_HEADER, MAX_FRAME_BYTES, MessageType, Payload, StatusData, TRACEPARENT_FEATURE,
    WorkerMessage, decode,
};
use futures::{SinkExt, StreamExt};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, protocol::WebSocketConfig};
use tracing::{Instrument as _, debug, info, warn};

use crate::jobs::{Job, JobError, JobRunner};

/// Where the worker's token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A file (the mounted Secret), read at every connect.
    File(PathBuf),
    /// A fixed value.
    Value(String),
}

impl TokenSource {
    fn read(&self) -> Result<String, String> {
        match self {
            TokenSource::Value(v) => Ok(v.clone()),
            TokenSource::File(p) => std::fs::read_to_string(p)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("cannot read the token from {}: {e}", p.display())),
        }
    }
}

/// How the worker reaches its Executor.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// The Executor's worker endpoint, `ws://<executor>.<ns>.svc:6005/v1/workers`.
    pub url: String,
    /// The worker's token.
    pub token: TokenSource,
    /// This worker's id (its pod name).
    pub worker_id: String,
    /// Jobs it runs at once.
    pub capacity: u32,
    /// How often it heartbeats; an Executor silent for three of these (and a second) is left.
    pub heartbeat: Duration,
    /// Time to finish jobs after SIGTERM.
    pub grace: Duration,
}

/// The worker's metrics: `cogo_worker_jobs_total{outcome}`, `cogo_worker_active_jobs`,
/// `cogo_worker_connected`.
#[derive(Clone, Default)]
pub struct LinkMetrics {
    jobs: Family<Vec<(String, String)>, Counter>,
    active: Gauge,
    connected: Gauge,
}

impl LinkMetrics {
    /// Registers them with the pod's metrics.
    pub fn register(metrics: &cogo_agent::pod::Metrics) -> Self {
        let m = LinkMetrics::default();
        metrics.register("worker_jobs", "Jobs finished, by outcome", m.jobs.clone());
        metrics.register("worker_active_jobs", "Jobs running now", m.active.clone());
        metrics.register(
            "worker_connected",
            "1 while connected to the Executor",
            m.connected.clone(),
        );
        m
    }

    fn finished(&self, outcome: &str) {
        self.jobs
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc();
    }
}

/// How a session with the Executor ended.
enum Ended {
    /// The worker is stopping.
    Shutdown,
    /// The link broke; dial again.
    Lost(String),
}

fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or_default();
    // Between half and one and a half of `d`.
    d.mul_f64(0.5 + f64::from(nanos % 1000) / 1000.0)
}

/// Runs the link until `shutdown` turns true and the jobs are done or handed back.
pub async fn run(
    config: LinkConfig,
    runner: Arc<dyn JobRunner>,
    mut shutdown: watch::Receiver<bool>,
    metrics: LinkMetrics,
) {
    let mut backoff = Duration::from_millis(500);
    let ids = Arc::new(AtomicU64::new(0));
    loop {
        if *shutdown.borrow() {
            return;
        }
        let attempt = async {
            let token = config.token.read()?;
            connect(&config.url, &token).await
        };
        let ws = tokio::select! {
            ws = attempt => ws,
            _ = shutdown.changed() => return,
        };
        match ws {
            Ok(ws) => {
                info!(executor = %config.url, "connected to the Executor");
                metrics.connected.set(1);
                backoff = Duration::from_millis(500);
                let ended = session(&config, ws, &runner, &mut shutdown, &metrics, &ids).await;
                metrics.connected.set(0);
                metrics.active.set(0);
                match ended {
                    Ended::Shutdown => return,
                    Ended::Lost(why) => warn!(why = %why, "the link to the Executor broke; dialing again"),
                }
            }
            Err(e) => {
                warn!(executor = %config.url, error = %e, retry_in = ?backoff, "cannot connect to the Executor")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(jitter(backoff)) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, token: &str) -> Result<Ws, String> {
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("bad Executor URL {url:?}: {e}"))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token is not a valid header value".to_string())?;
    req.headers_mut().insert("authorization", bearer);
    req.headers_mut().insert(
        FEATURES_HEADER,
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static(TRACEPARENT_FEATURE),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connecting = tokio_tungstenite::connect_async_with_config(req, Some(config), false);
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Err(_) => Err("no answer within 10 s".into()),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(res))) => {
            let body = res
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            Err(format!("refused with {}: {body}", res.status()))
        }
        Ok(Err(e)) => Err(e.to_string()),
    }
}

/// One connection, from the first frame to its end.
async fn session(
    config: &LinkConfig,
    ws: Ws,
    runner: &Arc<dyn JobRunner>,
    shutdown: &mut watch::Receiver<bool>,
    metrics: &LinkMetrics,
    ids: &AtomicU64,
) -> Ended {
    let (mut sink, mut stream) = ws.split();
    let me = config.worker_id.clone();
    let frame = |t: MessageType, task: Option<String>, data: Option<Value>| {
        let id = format!("{me}-{}", ids.fetch_add(1, Ordering::Relaxed) + 1);
        Message::Text(WorkerMessage::new(id, t, me.clone(), task, data).encode().into())
    };
    let status = |capacity: u32, active: usize| {
        serde_json::to_value(StatusData {
            capacity,
            active: active as u32,
        })
        .ok()
    };
    let error =
        |message: String, retryable: bool| serde_json::to_value(ErrorData { message, retryable }).ok();
    if let Err(e) = sink
        .send(frame(MessageType::Status, None, status(config.capacity, 0)))
        .await
    {
        return Ended::Lost(format!("cannot send status: {e}"));
    }
    let mut jobs: HashMap<String, watch::Sender<bool>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Result<Value, JobError>)>();
    let mut draining = shutdown.borrow().to_owned();
    let mut grace: Option<tokio::time::Instant> = None;
    let mut heard = Instant::now();
    let silence = config.heartbeat * 3 + Duration::from_secs(1);
    let mut beat = tokio::time::interval(config.heartbeat);
    beat.tick().await;
    let ended = loop {
        tokio::select! {
            msg = stream.next() => {
                let text = match msg {
                    None => break Ended::Lost("the Executor closed the connection".into()),
                    Some(Err(e)) => break Ended::Lost(e.to_string()),
                    Some(Ok(Message::Close(f))) => {
                        break Ended::Lost(format!("the Executor closed the connection: {}", f.map(|f| f.reason.to_string()).unwrap_or_default()));
                    }
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                };
                heard = Instant::now();
                let (msg, payload) = match decode(&text, MAX_FRAME_BYTES) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "the Executor sent a bad frame");
                        let _ = sink.send(frame(MessageType::Error, None, error(e.to_string(), false))).await;
                        continue;
                    }
                };
                match payload {
                    Payload::Ping => {
                        let pong = WorkerMessage { id: msg.id.clone(), ..WorkerMessage::new("", MessageType::Pong, me.clone(), None, None) };
                        let _ = sink.send(Message::Text(pong.encode().into())).await;
                    }
                    Payload::Execute(e) => {
                        let task = msg.task_id.clone().unwrap_or_default();
                        let refusal = if draining {
                            Some("the worker is shutting down")
                        } else if jobs.contains_key(&task) {
                            Some("the worker runs that job already")
                        } else if jobs.len() as u32 >= config.capacity {
                            Some("the worker has no free slot")
                        } else {
                            None
                        };
                        if let Some(why) = refusal {
                            let _ = sink.send(frame(MessageType::Error, Some(task), error(why.into(), true))).await;
                            continue;
                        }
                        let deadline = e.deadline.parse().unwrap_or_else(|_| jiff::Timestamp::now());
                        let job = Job { id: task.clone(), task_type: e.task_type, input: e.input, deadline };
                        let (cancel_tx, cancel_rx) = watch::channel(false);
                        jobs.insert(task.clone(), cancel_tx);
                        metrics.active.set(jobs.len() as i64);
                        let (runner, done) = (runner.clone(), done_tx.clone());
                        debug!(task = %task, "job started");
                        let span = tracing::info_span!(
                            target: "cogo::trace",
                            "cogo.worker.job",
                            cogo.task.name = %task,
                            cogo.task.type = %job.task_type,
                            cogo.worker.id = %me,
                            otel.status_code = tracing::field::Empty,
                        );
                        cogo_telemetry::follow(&span, e.traceparent.as_deref());
                        tokio::spawn(async move {
                            let result = runner.run(job, cancel_rx).instrument(span.clone()).await;
                            span.record("otel.status_code", if result.is_ok() { "OK" } else { "ERROR" });
                            let _ = done.send((task, result));
                        });
                    }
                    Payload::Error(e) => match &msg.task_id {
                        Some(task) => {
                            if let Some(cancel) = jobs.remove(task) {
                                info!(task = %task, why = %e.message, "the Executor took the job back; stopping it");
                                let _ = cancel.send(true);
                                metrics.active.set(jobs.len() as i64);
                            }
                        }
                        None => warn!(message = %e.message, "the Executor refused a frame"),
                    },
                    other => debug!(frame = ?other, "ignored a frame"),
                }
            }
            Some((task, result)) = done_rx.recv() => {
                // A job the Executor took back has no one to report to.
                if jobs.remove(&task).is_none() {
                    continue;
                }
                metrics.active.set(jobs.len() as i64);
                let reply = match result {
                    Ok(v) if v.to_string().len() + 1024 > MAX_FRAME_BYTES => {
                        metrics.finished("failed");
                        frame(MessageType::Error, Some(task), error(format!("the result is larger than {MAX_FRAME_BYTES} bytes"), false))
                    }
                    Ok(v) => {
                        metrics.finished("succeeded");
                        frame(MessageType::Result, Some(task), Some(v))
                    }
                    Err(e) => {
                        metrics.finished("failed");
                        frame(MessageType::Error, Some(task), error(e.message, e.retryable))
                    }
                };
                if let Err(e) = sink.send(reply).await {
                    break Ended::Lost(format!("cannot send a job's outcome: {e}"));
                }
                if draining && jobs.is_empty() {
                    break Ended::Shutdown;
                }
            }
            _ = beat.tick() => {
                if heard.elapsed() > silence {
                    break Ended::Lost(format!("no frame from the Executor for {}s", silence.as_secs()));
                }
                let capacity = if draining { 0 } else { config.capacity };
                if let Err(e) = sink.send(frame(MessageType::Heartbeat, None, status(capacity, jobs.len()))).await {
                    break Ended::Lost(format!("cannot heartbeat: {e}"));
                }
            }
            changed = shutdown.changed(), if !draining => {
                if changed.is_err() || *shutdown.borrow() {
                    draining = true;
                    info!(jobs = jobs.len(), grace = ?config.grace, "stopping: taking no new job, finishing the jobs held");
                    let _ = sink.send(frame(MessageType::Status, None, status(0, jobs.len()))).await;
                    if jobs.is_empty() {
                        break Ended::Shutdown;
                    }
                    grace = Some(tokio::time::Instant::now() + config.grace);
                }
            }
            _ = tokio::time::sleep_until(grace.unwrap_or_else(tokio::time::Instant::now)), if grace.is_some() => {
                for (task, cancel) in jobs.drain() {
                    let _ = cancel.send(true);
                    let _ = sink.send(frame(MessageType::Error, Some(task), error("the worker is shutting down".into(), true))).await;
                    metrics.finished("handed_back");
                }
                break Ended::Shutdown;
            }
        }
    };
    // The jobs of a broken link are run elsewhere: stop them here.
    for (_, cancel) in jobs.drain() {
        let _ = cancel.send(true);
    }
    let _ = sink.close().await;
    ended
}
