//! The Executor's worker endpoint, `GET /v1/workers` upgraded to a WebSocket. A worker is let in
//! only with a valid worker token for this Executor (refused with 401/403 and a JSON error
//! before the upgrade otherwise). Its first frame must be `status`; then the connection carries
//! jobs, results, pings and heartbeats until either side ends it or the worker falls silent for
//! three ping intervals. Every bad frame gets an `error` frame back (or, for an oversized one,
//! a close with code 1009); nothing a worker sends can take the Executor down.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{
        State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
};
use cogo_api::{
    broker::ErrorBody,
    worker::message::{
        ErrorData, FEATURES_HEADER, MAX_FRAME_BYTES, MessageType, Payload, StatusData, TRACEPARENT_FEATURE,
        WorkerClaims, WorkerMessage, decode, has_feature,
    },
};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    registry::{ConnId, FinishError, JobOutcome, Outbound, WorkerRegistry},
    tokens::{TokenError, WorkerTokens},
};

/// What the endpoint shares.
pub struct Endpoint {
    /// Connected workers and their jobs.
    pub registry: Arc<WorkerRegistry>,
    /// Token verification.
    pub tokens: Arc<WorkerTokens>,
    /// How often workers are pinged; a worker silent for three intervals is dropped.
    pub ping_every: Duration,
    /// This Executor pod, as named in the frames it sends.
    pub pod: String,
    ids: AtomicU64,
}

impl Endpoint {
    /// An endpoint over `registry`, verifying with `tokens`.
    pub fn new(
        registry: Arc<WorkerRegistry>,
        tokens: Arc<WorkerTokens>,
        ping_every: Duration,
        pod: &str,
    ) -> Self {
        Endpoint {
            registry,
            tokens,
            ping_every,
            pod: pod.into(),
            ids: AtomicU64::new(0),
        }
    }

    /// A fresh frame id.
    pub fn next_id(&self) -> String {
        format!("{}-{}", self.pod, self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// How long a new connection has to send its `status`.
const FIRST_FRAME_WITHIN: Duration = Duration::from_secs(10);
/// Bad frames in a row after which a connection is closed.
const MAX_BAD_FRAMES: u32 = 100;
/// Frame ids remembered per connection, to refuse repeats.
const REMEMBERED_IDS: usize = 512;
/// Close codes: policy violation, message too big, going away.
const POLICY: u16 = 1008;
const TOO_BIG: u16 = 1009;
const GOING_AWAY: u16 = 1001;

fn refuse(e: &TokenError) -> Response {
    let status = match e {
        TokenError::WrongNamespace(_) | TokenError::WrongExecutor(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    let body = ErrorBody {
        code: e.code().into(),
        message: e.to_string(),
    };
    (status, Json(body)).into_response()
}

/// `GET /v1/workers`: checks the worker's token, then upgrades.
pub async fn upgrade(
    State(ep): State<Arc<Endpoint>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let claims = match token {
        None => return refuse(&TokenError::Missing),
        Some(t) => match ep.tokens.verify(t).await {
            Ok(c) => c,
            Err(e) => {
                warn!(code = e.code(), error = %e, "refused a worker");
                return refuse(&e);
            }
        },
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let traces = headers
        .get(FEATURES_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| has_feature(v, TRACEPARENT_FEATURE));
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| serve(ep, socket, (claims, traces)))
}

fn error_frame(ep: &Endpoint, worker: &str, task: Option<String>, message: String) -> Outbound {
    let data = serde_json::to_value(ErrorData {
        message,
        retryable: false,
    })
    .ok();
    Outbound::frame(WorkerMessage::new(
        ep.next_id(),
        MessageType::Error,
        worker,
        task,
        data,
    ))
}

/// One worker connection, from its first frame to its end.
async fn serve(ep: Arc<Endpoint>, socket: WebSocket, (claims, traces): (WorkerClaims, bool)) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Outbound>();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Outbound::Frame(m) => {
                    if sink.send(Message::Text(m.encode().into())).await.is_err() {
                        break;
                    }
                }
                Outbound::Close(code, reason) => {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });
    let cogo_worker = claims.worker().map(|(_, w)| w.to_string()).unwrap_or_default();
    let close = |code: u16, reason: &str| {
        let _ = tx.send(Outbound::Close(code, reason.into()));
    };

    // The first frame: `status`, naming the worker.
    let first = tokio::time::timeout(FIRST_FRAME_WITHIN, stream.next()).await;
    let (worker_id, status) = match first {
        Ok(Some(Ok(Message::Text(text)))) => match decode(&text, MAX_FRAME_BYTES) {
            Ok((m, Payload::Status(s))) => (m.worker_id, s),
            Ok((m, _)) => {
                let _ = tx.send(error_frame(
                    &ep,
                    &m.worker_id,
                    None,
                    format!("the first frame must be status, not {}", m.message_type.as_str()),
                ));
                close(POLICY, "the first frame must be status");
                let _ = writer.await;
                return;
            }
            Err(e) => {
                let _ = tx.send(error_frame(&ep, "unknown", None, e.to_string()));
                close(POLICY, "the first frame must be a valid status frame");
                let _ = writer.await;
                return;
            }
        },
        Ok(Some(Ok(Message::Binary(_)))) => {
            let _ = tx.send(error_frame(
                &ep,
                "unknown",
                None,
                "frames are JSON text, not binary".into(),
            ));
            close(POLICY, "the first frame must be status");
            let _ = writer.await;
            return;
        }
        Ok(Some(Err(_))) => {
            close(TOO_BIG, "the frame is too large or malformed");
            let _ = writer.await;
            return;
        }
        Err(_) => {
            close(POLICY, "no status frame in time");
            let _ = writer.await;
            return;
        }
        _ => {
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let conn = ep.registry.connect(
        &worker_id,
        &cogo_worker,
        claims.kind,
        status.capacity,
        tx.clone(),
        Instant::now(),
    );
    ep.registry.set_traces(conn, traces);
    info!(worker = %worker_id, of = %cogo_worker, kind = %claims.kind, capacity = status.capacity, "worker connected");

    let mut ids = Ids::default();
    let mut bad = 0u32;
    let mut ticker = tokio::time::interval(ep.ping_every);
    ticker.tick().await;
    let reason = loop {
        tokio::select! {
            msg = stream.next() => match msg {
                None => break "the worker closed the connection",
                Some(Err(e)) => {
                    debug!(worker = %worker_id, error = %e, "the connection failed");
                    close(TOO_BIG, "the frame is too large or malformed");
                    break "the connection failed (a frame too large, or a protocol error)";
                }
                Some(Ok(Message::Close(_))) => break "the worker closed the connection",
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => ep.registry.seen(conn, Instant::now()),
                Some(Ok(Message::Binary(_))) => {
                    bad += 1;
                    let _ = tx.send(error_frame(&ep, &worker_id, None, "frames are JSON text, not binary".into()));
                }
                Some(Ok(Message::Text(text))) => {
                    ep.registry.seen(conn, Instant::now());
                    match handle(&ep, conn, &worker_id, &mut ids, &text) {
                        Ok(Some(reply)) => { bad = 0; let _ = tx.send(reply); }
                        Ok(None) => bad = 0,
                        Err(reply) => { bad += 1; let _ = tx.send(reply); }
                    }
                }
            },
            _ = ticker.tick() => {
                if ep.registry.is_silent(conn, Instant::now(), ep.ping_every * 3) {
                    close(GOING_AWAY, "no frame for three ping intervals");
                    break "the worker fell silent";
                }
                let ping = WorkerMessage::new(ep.next_id(), MessageType::Ping, worker_id.clone(), None, None);
                let _ = tx.send(Outbound::frame(ping));
            }
        }
        if bad >= MAX_BAD_FRAMES {
            close(POLICY, "too many bad frames");
            break "too many bad frames";
        }
    };
    ep.registry.disconnect(conn);
    drop(tx);
    let _ = writer.await;
    info!(worker = %worker_id, why = reason, "worker disconnected; its jobs run elsewhere");
}

/// The ids of the frames a connection sent lately.
#[derive(Default)]
struct Ids {
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl Ids {
    /// False when `id` was seen already.
    fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == REMEMBERED_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.order.push_back(id.to_string());
        self.seen.insert(id.to_string());
        true
    }
}

/// Handles one text frame from a registered worker: Ok with an optional reply, or Err with
/// the `error` frame that refuses it.
fn handle(
    ep: &Endpoint,
    conn: ConnId,
    worker_id: &str,
    ids: &mut Ids,
    text: &str,
) -> Result<Option<Outbound>, Outbound> {
    let (msg, payload) =
        decode(text, MAX_FRAME_BYTES).map_err(|e| error_frame(ep, worker_id, None, e.to_string()))?;
    let refuse = |message: String| error_frame(ep, worker_id, msg.task_id.clone(), message);
    if msg.worker_id != worker_id {
        return Err(refuse(format!(
            "this connection is worker {worker_id}, not {}",
            msg.worker_id
        )));
    }
    if !ids.first_time(&msg.id) {
        return Err(refuse(format!("duplicate frame id {}", msg.id)));
    }
    match payload {
        Payload::Status(StatusData { capacity, .. })
        | Payload::Heartbeat(Some(StatusData { capacity, .. })) => {
            ep.registry.set_capacity(conn, capacity);
            Ok(None)
        }
        Payload::Heartbeat(None) | Payload::Pong => Ok(None),
        Payload::Ping => Ok(Some(Outbound::frame(WorkerMessage {
            id: msg.id.clone(),
            ..WorkerMessage::new("", MessageType::Pong, worker_id, None, None)
        }))),
        Payload::Execute(_) => Err(refuse("workers do not send execute frames".into())),
        Payload::Result(result) => finish(ep, conn, &msg, JobOutcome::Result(result)),
        Payload::Error(e) => match &msg.task_id {
            Some(_) => finish(ep, conn, &msg, JobOutcome::Failed(e)),
            None => {
                warn!(worker = %worker_id, message = %e.message, "the worker refused a frame");
                Ok(None)
            }
        },
    }
}

fn finish(
    ep: &Endpoint,
    conn: ConnId,
    msg: &WorkerMessage,
    outcome: JobOutcome,
) -> Result<Option<Outbound>, Outbound> {
    let task = msg.task_id.clone().unwrap_or_default();
    match ep.registry.finish(conn, &task, outcome) {
        Ok(()) => Ok(None),
        Err(FinishError::UnknownJob) => Err(error_frame(
            ep,
            &msg.worker_id,
            Some(task.clone()),
            format!("no job {task} is running on this worker (finished already, cancelled, or never sent)"),
        )),
        Err(FinishError::NotYours) => Err(error_frame(
            ep,
            &msg.worker_id,
            Some(task.clone()),
            format!("job {task} runs on another worker"),
        )),
    }
}
